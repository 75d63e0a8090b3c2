//! Slashes: the hub asks the settlement contract to take part of an operator's stake (and jail
//! it) for fraud, cheating or downtime (docs/settlement.md, "Slashes").
//!
//! Like batches, slashes go through an outbox: [`request_slash`] (`agora admin slash`, or the hub
//! itself) writes a `pending` row; [`post_slashes`], called by the leader's settlement loop, sends
//! each as the contract's `Slash` and records what the contract took (`posted`) or why it refused
//! (`failed`). Unlike `PostBatch`, the contract's `Slash` is not idempotent: sending one twice
//! slashes twice. So a slash is sent again only after errors that mean the transaction did not go
//! out or was refused before execution; one sent but not seen in a block in time is marked
//! `failed` with its hash, for a person to check, rather than sent again.

use rand::RngCore;
use serde_json::json;
use settlement::chain::{Chain, ChainError, TxOutcome};

use crate::store::{
    Store, StoreError,
    settlement::{NewSlash, SlashDone, SlashRow, SlashState},
};

/// The reasons the contract knows, each with its own slash ratio in its params.
pub const REASONS: [&str; 3] = ["fraud", "cheating", "downtime"];

/// The most evidence the contract takes, in bytes.
pub const MAX_EVIDENCE_BYTES: usize = 1024;

/// Most slashes one pass sends.
const PASS_LIMIT: u32 = 100;

/// Why a slash was not queued.
#[derive(Debug, thiserror::Error)]
pub enum SlashRequestError {
    /// A field is invalid (named, with what is expected).
    #[error("invalid {field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Whether `address` is a chain account address as operators register it
/// (`crds::agent::OPERATOR_ADDRESS_PATTERN`: a lowercase prefix, `1`, and 6 to 90 bech32
/// characters).
pub fn is_operator_address(address: &str) -> bool {
    let Some((prefix, data)) = address.split_once('1') else {
        return false;
    };
    (1..=16).contains(&prefix.len())
        && prefix.bytes().all(|b| b.is_ascii_lowercase())
        && (6..=90).contains(&data.len())
        && data
            .bytes()
            .all(|b| b"qpzry9x8gf2tvdw0s3jn54khce6mua7l".contains(&b))
}

/// Checks a slash request as the contract would (so a mistake is refused here, naming the field,
/// rather than after a round trip to the chain); the evidence is taken trimmed.
pub fn check_request(
    operator: &str,
    reason: &str,
    evidence: &str,
) -> Result<(), SlashRequestError> {
    if !is_operator_address(operator) {
        return Err(SlashRequestError::Invalid {
            field: "operator",
            message: format!(
                "{operator:?} is not a chain account address (bech32, such as wasm1…): the \
                 operatorAddress the operator's nodes registered with"
            ),
        });
    }
    if !REASONS.contains(&reason) {
        return Err(SlashRequestError::Invalid {
            field: "reason",
            message: format!("{reason:?} is not one of {}", REASONS.join(", ")),
        });
    }
    let evidence = evidence.trim();
    if evidence.is_empty() || evidence.len() > MAX_EVIDENCE_BYTES {
        return Err(SlashRequestError::Invalid {
            field: "evidence",
            message: format!(
                "say why in 1 to {MAX_EVIDENCE_BYTES} bytes (a reference anyone can check); got {}",
                evidence.len()
            ),
        });
    }
    Ok(())
}

/// Queues a slash of `operator` for `reason` (`fraud`, `cheating` or `downtime`), with `evidence`
/// anyone can check (a batch and receipt, an incident link), as `pending`.
pub async fn request_slash(
    store: &Store,
    operator: &str,
    reason: &str,
    evidence: &str,
) -> Result<SlashRow, SlashRequestError> {
    check_request(operator, reason, evidence)?;
    let evidence = evidence.trim();
    let id = format!(
        "slash-{:011x}{:08x}",
        crate::store::now_ms(),
        rand::rng().next_u32()
    );
    let row = store
        .insert_slash(&NewSlash {
            id,
            operator: operator.to_string(),
            reason: reason.to_string(),
            evidence: evidence.to_string(),
        })
        .await?;
    tracing::info!(slash = %row.id, operator = %row.operator, reason = %row.reason, "slash requested");
    Ok(row)
}

/// What one pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SlashPass {
    /// Slashes the contract took.
    pub posted: usize,
    /// Slashes refused (or of unknown outcome): `failed`, not sent again.
    pub failed: usize,
    /// Slashes that stay `pending` after an error that may pass (tried on the next pass).
    pub retrying: usize,
}

/// Sends the pending slashes to the contract on `chain` as its `Slash`, oldest first, recording
/// each outcome. Errors are the store's only; the chain's are recorded on the slash.
pub async fn post_slashes(store: &Store, chain: &dyn Chain) -> Result<SlashPass, StoreError> {
    let mut pass = SlashPass::default();
    let (pending, _) = store
        .list_slashes(None, Some(SlashState::Pending), None, PASS_LIMIT)
        .await?;
    for slash in pending {
        let msg = json!({"slash": {
            "operator": slash.operator,
            "reason": slash.reason,
            "evidence": slash.evidence,
        }});
        match chain.execute(msg, Vec::new()).await {
            Ok(outcome) => {
                let done = slash_done(&outcome);
                tracing::info!(slash = %slash.id, operator = %slash.operator, amount = ?done.amount, tx = %done.tx, "operator slashed");
                store.slash_posted(&slash.id, &done).await?;
                pass.posted += 1;
            }
            Err(ChainError::InclusionTimeout { hash, waited }) => {
                let error = format!(
                    "sent as transaction {hash} but not seen in a block within {waited:?}; it may \
                     still be included, so it is not sent again (a slash is not idempotent): check \
                     the transaction on chain and request the slash again only if it failed"
                );
                tracing::warn!(slash = %slash.id, %error, "slash outcome unknown");
                store.slash_attempt_failed(&slash.id, &error, true).await?;
                pass.failed += 1;
            }
            Err(e) if e.is_retryable() => {
                tracing::warn!(slash = %slash.id, error = %e, attempts = slash.attempts + 1, "posting the slash failed; trying again on the next pass");
                store
                    .slash_attempt_failed(&slash.id, &e.to_string(), false)
                    .await?;
                pass.retrying += 1;
            }
            Err(e) => {
                tracing::warn!(slash = %slash.id, error = %e, "the contract refused the slash");
                store
                    .slash_attempt_failed(&slash.id, &e.to_string(), true)
                    .await?;
                pass.failed += 1;
            }
        }
    }
    Ok(pass)
}

/// What the contract's `slash` attributes say it did.
fn slash_done(outcome: &TxOutcome) -> SlashDone {
    let amount = outcome
        .attribute("wasm", "amount")
        .filter(|a| a.parse::<u128>().is_ok())
        .map(str::to_string);
    if amount.is_none() {
        tracing::warn!(tx = %outcome.hash, "a slash transaction without a readable amount: recorded without one");
    }
    SlashDone {
        amount,
        jailed_until: outcome
            .attribute("wasm", "jailed_until")
            .and_then(|t| t.parse::<i64>().ok()),
        tx: outcome.hash.clone(),
        height: outcome.height,
    }
}

/// A slash as `GET /v1/settlement/slashes` shows it.
#[derive(serde::Serialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SlashView {
    pub id: String,
    pub operator: String,
    /// `fraud`, `cheating` or `downtime`.
    pub reason: String,
    pub evidence: String,
    /// `pending`, `posted` or `failed`.
    pub state: String,
    /// What the contract took, in micro-units (decimal string), once posted.
    pub amount: Option<String>,
    /// Until when the operator is jailed (RFC 3339, chain time), once posted.
    pub jailed_until: Option<String>,
    pub tx: Option<String>,
    pub height: Option<u64>,
    pub requested_at: String,
    pub posted_at: Option<String>,
    pub attempts: u64,
    /// Why the last try failed (the contract's message when it refused).
    pub last_error: Option<String>,
}

impl From<SlashRow> for SlashView {
    fn from(row: SlashRow) -> Self {
        let time = |ms: i64| {
            jiff::Timestamp::from_millisecond(ms)
                .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
                .to_string()
        };
        SlashView {
            id: row.id,
            operator: row.operator,
            reason: row.reason,
            evidence: row.evidence,
            state: row.state.as_str().to_string(),
            amount: row.amount,
            jailed_until: row.jailed_until.map(|s| time(s.saturating_mul(1_000))),
            tx: row.tx,
            height: row.height.map(|h| h.max(0) as u64),
            requested_at: time(row.requested_at),
            posted_at: row.posted_at.map(time),
            attempts: row.attempts.max(0) as u64,
            last_error: row.last_error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operator_addresses_follow_the_registration_pattern() {
        for good in ["wasm1qypqxpq9qcrsszg2pvxq6rs0zqg3yyc5", "agora1zqqqqqqqqq"] {
            assert!(is_operator_address(good), "{good}");
        }
        for bad in [
            "",
            "wasm",
            "wasm1",
            "Wasm1qqqqqqqq",
            "wasm1qqqqqqqb",
            "1qqqqqqqqq",
            "wasm1qqqqq",
            &format!("{}1qqqqqqqq", "a".repeat(17)),
        ] {
            assert!(!is_operator_address(bad), "{bad}");
        }
    }
}
