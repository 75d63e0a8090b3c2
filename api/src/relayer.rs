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

use std::{future::Future, pin::Pin, time::Duration};

use crate::store::{
    Store, StoreError,
    settlement::{BatchRow, BatchState},
};

/// A transaction the chain included.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Included {
    /// The transaction hash (hex).
    pub tx: String,
    /// The block it is in.
    pub height: u64,
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
}

/// The settlement contract on a chain reached through `settlement::chain` (a real Cosmos chain
/// or the embedded devnet): batches go out as the contract's `PostBatch` and `FinalizeBatch`.
pub struct ContractChain {
    chain: std::sync::Arc<dyn settlement::chain::Chain>,
    window: Duration,
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
    }
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
            self.chain
                .execute(
                    serde_json::json!({"finalize_batch": {"id": id}}),
                    Vec::new(),
                )
                .await
                .map(included)
                .map_err(failure)
        })
    }

    fn challenge_window(&self) -> Duration {
        self.window
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
        match chain.finalize_batch(&batch.id).await {
            Ok(included) => {
                store
                    .advance_batch(&batch.id, BatchState::Confirmed, BatchState::Final, None)
                    .await?;
                tracing::info!(batch = %batch.id, tx = %included.tx, "batch final: providers paid");
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
}
