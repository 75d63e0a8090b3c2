//! The relayer: posts the batches recorded in the store to the settlement contract and finalizes
//! them after their challenge window, exactly once each (docs/settlement.md).
//!
//! The store is the outbox: a batch exists there (state `built`) before anything is sent, and each
//! step is recorded only after the chain did it, by compare-and-set:
//!
//! ```text
//! built ──PostBatch──▶ posted ──in a block──▶ confirmed ──window over, FinalizeBatch──▶ final
//! ```
//!
//! A crash between the chain and the record repeats the step on the next pass; the contract takes
//! a batch id once (the same content again is a no-op) and finalizes a batch once, so a repeat
//! neither pays twice nor skips. A step that fails stays where it was, counted in the batch's
//! `attempts` with its `last_error`, and is tried again on a later pass, each batch backing off
//! on its own.
//!
//! Finalizing records what each provider was paid (the contract's `agora_payout` events) in the
//! same database transaction that marks the batch final, so every final batch has its payouts for
//! the providers' earnings statements ([`crate::statement`]). When the chain reports the
//! finalization as a repeat (the hub crashed after the chain paid and before it recorded), the
//! contract emits no payout events; the payouts are then computed from the batch's provider totals
//! and the contract's fee exactly as the contract computes them.

use std::{future::Future, pin::Pin, time::Duration};

use crate::store::{
    Store, StoreError,
    settlement::{BatchRow, BatchState, Payout},
};

/// A transaction the chain included.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Included {
    /// The transaction hash (hex).
    pub tx: String,
    /// The block it is in.
    pub height: u64,
    /// For `FinalizeBatch`: what it paid each provider, as its events report. Empty for
    /// `PostBatch`, and for a `FinalizeBatch` of a batch the contract had already finalized (a
    /// repeat pays nothing and reports nothing).
    pub payouts: Vec<Payout>,
}

/// Why the chain did not do a step.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChainFailure {
    /// Unreachable, timed out, out of sequence: the same step may work later.
    #[error("the chain is unavailable: {0}")]
    Unavailable(String),
    /// The contract refused the step (its message says why): retrying the same step cannot help
    /// until something changes (an escrow is topped up, a window ends).
    #[error("the contract refused: {0}")]
    Refused(String),
}

/// A boxed future, so that [`SettlementChain`] can be used as a trait object.
pub type ChainFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, ChainFailure>> + Send + 'a>>;

/// What the relayer needs of the chain: the embedded devnet and a real Cosmos chain both provide it.
pub trait SettlementChain: Send + Sync {
    /// Posts `batch` (`PostBatch`) and waits until the transaction is in a block.
    fn post_batch<'a>(&'a self, batch: &'a BatchRow) -> ChainFuture<'a, Included>;

    /// Finalizes batch `id` (`FinalizeBatch`) and waits until the transaction is in a block.
    fn finalize_batch<'a>(&'a self, id: &'a str) -> ChainFuture<'a, Included>;

    /// How long after posting a batch can be challenged, and so not finalized.
    fn challenge_window(&self) -> Duration;

    /// The contract's protocol fee in basis points, read when asked (governance may change it),
    /// to compute the payouts of a finalization the chain reports as a repeat.
    fn protocol_fee_bps(&self) -> ChainFuture<'_, u16>;

    /// The denom the contract pays in, if this chain knows it (recorded with the payouts).
    fn denom(&self) -> Option<String> {
        None
    }
}

/// The settlement contract on a chain reached through `settlement::chain` (a real Cosmos chain
/// or the embedded devnet): batches go out as the contract's `PostBatch` and `FinalizeBatch`.
pub struct ContractChain {
    chain: std::sync::Arc<dyn settlement::chain::Chain>,
    window: Duration,
    denom: Option<String>,
}

impl ContractChain {
    /// The contract behind `chain`, whose challenge window is read from its params.
    pub async fn connect(
        chain: std::sync::Arc<dyn settlement::chain::Chain>,
    ) -> Result<Self, ChainFailure> {
        let params = chain
            .query(serde_json::json!({"params": {}}))
            .await
            .map_err(failure)?;
        let seconds = params["challenge_window_seconds"].as_u64().ok_or_else(|| {
            ChainFailure::Refused(format!(
                "the contract's params have no challenge_window_seconds: {params}"
            ))
        })?;
        Ok(Self {
            chain,
            window: Duration::from_secs(seconds),
            denom: params["denom"].as_str().map(str::to_string),
        })
    }

    /// `PostBatch` of `batch`, as the contract's `ExecuteMsg` spells it.
    pub fn post_batch_msg(batch: &BatchRow) -> serde_json::Value {
        serde_json::json!({"post_batch": {
            "id": batch.id,
            "root": batch.root,
            "period": {"from_ms": batch.period_from_ms.max(0), "to_ms": batch.period_to_ms.max(0)},
            "receipts": batch.receipts.max(0),
            "provider_totals": batch.provider_totals,
            "payer_totals": batch.payer_totals,
        }})
    }
}

/// A chain client error as the relayer sorts it.
fn failure(error: settlement::chain::ChainError) -> ChainFailure {
    if error.is_retryable() {
        ChainFailure::Unavailable(error.to_string())
    } else {
        ChainFailure::Refused(error.to_string())
    }
}

fn included(outcome: settlement::chain::TxOutcome) -> Included {
    Included {
        tx: outcome.hash,
        height: outcome.height,
        payouts: Vec::new(),
    }
}

/// The type of the contract's payout events: `wasm-` and the contract's event name, on a real
/// chain as in cw-multi-test.
pub const PAYOUT_EVENT: &str = "wasm-agora_payout";

/// The payouts of batch `batch` that `outcome`'s `agora_payout` events report. An event that does
/// not read is an error rather than skipped, so a partial list is never recorded (the relayer
/// tries again, and the repeat computes the payouts from the batch).
pub fn payouts_from_events(
    outcome: &settlement::chain::TxOutcome,
    batch: &str,
) -> Result<Vec<Payout>, String> {
    outcome
        .events
        .iter()
        .filter(|event| event.kind == PAYOUT_EVENT)
        .filter(|event| {
            event
                .attributes
                .iter()
                .any(|(key, value)| key == "batch" && value == batch)
        })
        .map(|event| {
            let get = |key: &str| {
                event
                    .attributes
                    .iter()
                    .find(|(k, _)| k == key)
                    .map(|(_, value)| value.as_str())
                    .ok_or_else(|| format!("a {PAYOUT_EVENT} event of batch {batch} has no {key}"))
            };
            let amount = |key: &str| -> Result<u64, String> {
                let text = get(key)?;
                text.parse::<u64>().map_err(|_| {
                    format!("the {key} {text:?} of a {PAYOUT_EVENT} event is not a 64-bit amount")
                })
            };
            Ok(Payout {
                provider: get("provider")?.to_string(),
                gross: amount("gross")?,
                fee: amount("fee")?,
                net: amount("net")?,
            })
        })
        .collect()
}

/// The payouts of `batch` as the contract's `FinalizeBatch` computes them: for each provider total,
/// `fee = floor(total × fee_bps / 10000)` and `net = total − fee`.
pub fn computed_payouts(batch: &BatchRow, fee_bps: u16) -> Result<Vec<Payout>, String> {
    let totals = batch
        .provider_totals
        .as_array()
        .ok_or_else(|| format!("batch {}: provider_totals is not a list", batch.id))?;
    totals
        .iter()
        .map(|total| {
            let provider = total["address"]
                .as_str()
                .ok_or_else(|| format!("batch {}: a provider total has no address", batch.id))?;
            let gross = total["amount"]
                .as_str()
                .and_then(|a| a.parse::<u64>().ok())
                .ok_or_else(|| {
                    format!(
                        "batch {}: the total of {provider} is not a 64-bit amount",
                        batch.id
                    )
                })?;
            // The contract keeps the fee at most 100 %; so does this, whatever it is told.
            let fee = (u128::from(gross) * u128::from(fee_bps) / 10_000).min(u128::from(gross));
            let fee = u64::try_from(fee).unwrap_or(gross);
            Ok(Payout {
                provider: provider.to_string(),
                gross,
                fee,
                net: gross.saturating_sub(fee),
            })
        })
        .collect()
}

impl SettlementChain for ContractChain {
    fn post_batch<'a>(&'a self, batch: &'a BatchRow) -> ChainFuture<'a, Included> {
        Box::pin(async move {
            self.chain
                .execute(Self::post_batch_msg(batch), Vec::new())
                .await
                .map(included)
                .map_err(failure)
        })
    }

    fn finalize_batch<'a>(&'a self, id: &'a str) -> ChainFuture<'a, Included> {
        Box::pin(async move {
            let outcome = self
                .chain
                .execute(
                    serde_json::json!({"finalize_batch": {"id": id}}),
                    Vec::new(),
                )
                .await
                .map_err(failure)?;
            let payouts = payouts_from_events(&outcome, id).map_err(ChainFailure::Unavailable)?;
            Ok(Included {
                payouts,
                ..included(outcome)
            })
        })
    }

    fn challenge_window(&self) -> Duration {
        self.window
    }

    fn protocol_fee_bps(&self) -> ChainFuture<'_, u16> {
        Box::pin(async move {
            let params = self
                .chain
                .query(serde_json::json!({"params": {}}))
                .await
                .map_err(failure)?;
            params["protocol_fee_bps"]
                .as_u64()
                .and_then(|bps| u16::try_from(bps).ok())
                .ok_or_else(|| {
                    ChainFailure::Refused(format!(
                        "the contract's params have no protocol_fee_bps: {params}"
                    ))
                })
        })
    }

    fn denom(&self) -> Option<String> {
        self.denom.clone()
    }
}

/// What one pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pass {
    /// Batches the chain accepted.
    pub posted: usize,
    /// Batches finalized.
    pub finalized: usize,
    /// Steps that failed (tried again later).
    pub failed: usize,
}

/// Most batches one pass moves in each state.
const PASS_LIMIT: u32 = 100;

/// The longest a batch waits between two tries of a failed step.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// How long a batch that failed `attempts` times waits before its next try: 1 s doubling, at
/// most [`MAX_BACKOFF`].
pub fn backoff(attempts: i64) -> Duration {
    let exponent = u32::try_from(attempts.saturating_sub(1).clamp(0, 16)).unwrap_or(16);
    Duration::from_secs(1u64 << exponent).min(MAX_BACKOFF)
}

/// One pass at `now_ms`: posts the built batches and finalizes the confirmed ones whose window
/// is over, each when its backoff allows. `last_try_ms` says when a batch was last tried (the
/// relayer keeps it in memory; after a restart every batch is tried at once).
pub async fn relay_once(
    store: &Store,
    chain: &dyn SettlementChain,
    now_ms: i64,
    last_try_ms: &mut std::collections::HashMap<String, i64>,
) -> Result<Pass, StoreError> {
    let mut pass = Pass::default();
    let due = |batch: &BatchRow, last_try_ms: &std::collections::HashMap<String, i64>| {
        let wait = backoff(batch.attempts).as_millis() as i64;
        batch.attempts == 0
            || last_try_ms
                .get(&batch.id)
                .is_none_or(|at| now_ms.saturating_sub(*at) >= wait)
    };
    let (built, _) = store
        .list_batches(Some(BatchState::Built), None, PASS_LIMIT)
        .await?;
    for batch in built {
        if !due(&batch, last_try_ms) {
            continue;
        }
        last_try_ms.insert(batch.id.clone(), now_ms);
        match chain.post_batch(&batch).await {
            Ok(included) => {
                let tx = Some((included.tx.as_str(), included.height));
                store
                    .advance_batch(&batch.id, BatchState::Built, BatchState::Posted, tx)
                    .await?;
                store
                    .advance_batch(&batch.id, BatchState::Posted, BatchState::Confirmed, None)
                    .await?;
                tracing::info!(batch = %batch.id, tx = %included.tx, height = included.height, receipts = batch.receipts, "batch posted");
                pass.posted += 1;
            }
            Err(e) => {
                tracing::warn!(batch = %batch.id, error = %e, attempts = batch.attempts + 1, "posting the batch failed; trying again later");
                store
                    .batch_attempt_failed(&batch.id, &e.to_string())
                    .await?;
                pass.failed += 1;
            }
        }
    }
    let window = chain.challenge_window().as_millis() as i64;
    let (confirmed, _) = store
        .list_batches(Some(BatchState::Confirmed), None, PASS_LIMIT)
        .await?;
    for batch in confirmed {
        let posted_at = batch.posted_at.unwrap_or(batch.built_at);
        if now_ms < posted_at.saturating_add(window) || !due(&batch, last_try_ms) {
            continue;
        }
        last_try_ms.insert(batch.id.clone(), now_ms);
        let finalized = match chain.finalize_batch(&batch.id).await {
            Ok(included) if included.payouts.is_empty() => {
                // A repeat (or a batch paying no one): the payouts as the contract computed them.
                match chain.protocol_fee_bps().await {
                    Ok(bps) => computed_payouts(&batch, bps)
                        .map(|payouts| (included, payouts))
                        .map_err(ChainFailure::Refused),
                    Err(e) => Err(e),
                }
            }
            Ok(mut included) => {
                let payouts = std::mem::take(&mut included.payouts);
                Ok((included, payouts))
            }
            Err(e) => Err(e),
        };
        match finalized {
            Ok((included, payouts)) => {
                let denom = chain.denom();
                store
                    .finalize_batch(
                        &batch.id,
                        (&included.tx, included.height),
                        &payouts,
                        denom.as_deref(),
                    )
                    .await?;
                tracing::info!(batch = %batch.id, tx = %included.tx, providers = payouts.len(), "batch final: providers paid");
                pass.finalized += 1;
            }
            Err(e) => {
                tracing::warn!(batch = %batch.id, error = %e, "finalizing the batch failed; trying again later");
                store
                    .batch_attempt_failed(&batch.id, &e.to_string())
                    .await?;
                pass.failed += 1;
            }
        }
    }
    Ok(pass)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_steps_back_off_to_five_minutes() {
        let delays: Vec<u64> = (1..=4).map(|a| backoff(a).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8]);
        assert_eq!(backoff(40), MAX_BACKOFF);
        assert_eq!(backoff(0), Duration::from_secs(1));
    }

    fn payout_event(batch: &str, gross: &str) -> settlement::chain::TxEvent {
        settlement::chain::TxEvent {
            kind: PAYOUT_EVENT.into(),
            attributes: [
                ("_contract_address", "wasm1contract"),
                ("batch", batch),
                ("provider", "wasm1provider"),
                ("gross", gross),
                ("fee", "277"),
                ("net", "10834"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        }
    }

    #[test]
    fn payouts_are_read_from_the_batchs_events_or_not_at_all() {
        let mut outcome = settlement::chain::TxOutcome {
            hash: "AB".into(),
            height: 1,
            gas_wanted: 0,
            gas_used: 0,
            events: vec![
                payout_event("epoch-1", "11111"),
                payout_event("epoch-2", "5"),
            ],
        };
        assert_eq!(
            payouts_from_events(&outcome, "epoch-1").unwrap(),
            [Payout {
                provider: "wasm1provider".into(),
                gross: 11_111,
                fee: 277,
                net: 10_834
            }]
        );
        outcome.events.push(payout_event("epoch-1", "lots"));
        let error = payouts_from_events(&outcome, "epoch-1").unwrap_err();
        assert!(error.contains("gross"), "{error}");
    }

    #[test]
    fn computed_payouts_floor_the_fee_as_the_contract_does() {
        let batch = BatchRow {
            id: "epoch-1".into(),
            period_from_ms: 0,
            period_to_ms: 1,
            root: String::new(),
            receipts: 2,
            provider_totals: serde_json::json!([
                {"address": "wasm1a", "amount": "11111"},
                {"address": "wasm1b", "amount": "39"}
            ]),
            payer_totals: serde_json::json!([]),
            state: BatchState::Confirmed,
            tx: None,
            height: None,
            built_at: 0,
            posted_at: None,
            final_at: None,
            attempts: 0,
            last_error: None,
        };
        let payouts = computed_payouts(&batch, 250).unwrap();
        let fees: Vec<(u64, u64)> = payouts.iter().map(|p| (p.fee, p.net)).collect();
        assert_eq!(fees, [(277, 10_834), (0, 39)]);
    }
}
