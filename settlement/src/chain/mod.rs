//! The settlement contract as the hub's relayer sees it: execute a message, query a message.
//!
//! [`Chain`] is implemented by [`cosmos::CosmosChain`] (a real Cosmos chain over CometBFT RPC) and by
//! the in-process devnet; the relayer holds an `Arc<dyn Chain>` and never knows which. Messages are
//! JSON values shaped like the contract's `ExecuteMsg` / `QueryMsg`, so this crate does not depend on
//! the contract crate (which builds for wasm). Errors say whether retrying can help
//! ([`ChainError::is_retryable`]): the relayer's outbox retries those with backoff and parks the rest.

pub mod cosmos;
mod key;

pub use key::{DERIVATION_PATH, SettlerKey};

use serde::Serialize;
use serde::de::DeserializeOwned;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// An amount of one denom, in the chain's smallest unit (e.g. `uagora`): integers only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coin {
    pub denom: String,
    pub amount: u128,
}

impl Coin {
    pub fn new(denom: impl Into<String>, amount: u128) -> Self {
        Self {
            denom: denom.into(),
            amount,
        }
    }
}

/// One event a transaction emitted (`wasm`, `transfer`, `tx`, …) with its attributes in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxEvent {
    /// The event type (`wasm` for the contract's own attributes).
    pub kind: String,
    /// `(key, value)` pairs, in the order the chain reported them.
    pub attributes: Vec<(String, String)>,
}

/// A transaction the chain included and executed successfully.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxOutcome {
    /// The transaction hash, uppercase hex (what block explorers and `wasmd q tx` take).
    pub hash: String,
    /// The block height it was included at.
    pub height: u64,
    pub gas_wanted: u64,
    pub gas_used: u64,
    pub events: Vec<TxEvent>,
}

impl TxOutcome {
    /// The first value of `key` in an event of type `kind` (e.g. `("wasm", "action")`).
    pub fn attribute(&self, kind: &str, key: &str) -> Option<&str> {
        self.events
            .iter()
            .filter(|event| event.kind == kind)
            .flat_map(|event| event.attributes.iter())
            .find(|(k, _)| k == key)
            .map(|(_, value)| value.as_str())
    }
}

/// Why a transaction or query did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// The RPC endpoint could not be reached or did not answer in time (retryable).
    #[error("chain RPC {url} unreachable during {method}: {reason}")]
    Unreachable {
        url: String,
        method: &'static str,
        reason: String,
    },
    /// The RPC endpoint answered something this client cannot read (retryable: a node
    /// restarting or a proxy in between can produce this).
    #[error("unexpected answer from chain RPC {url} to {method}: {reason}")]
    BadResponse {
        url: String,
        method: &'static str,
        reason: String,
    },
    /// The transaction was accepted into the mempool but not seen in a block in time
    /// (retryable). It may still be included later: posting the same batch again is safe
    /// because the contract's `PostBatch` is idempotent by id.
    #[error("transaction {hash} not included within {waited:?}")]
    InclusionTimeout { hash: String, waited: Duration },
    /// The account's sequence kept changing under us (another sender uses the same key);
    /// retryable, but a key should have one sender.
    #[error("account sequence mismatch persisted after {attempts} attempts: {log}")]
    SequenceMismatch { attempts: u32, log: String },
    /// The sender account does not exist on the chain yet: it has never received funds.
    /// Retryable: funding the key fixes it without a restart.
    #[error("account {address} does not exist on the chain: fund it first")]
    AccountMissing { address: String },
    /// The chain or the contract refused: CheckTx failed (`tx` is `None`), the transaction was
    /// included but failed (`tx` is its hash; the fee is spent), or a query failed. `log` carries
    /// the contract's own error message. Not retryable: the same message fails the same way.
    #[error(
        "refused by the chain (code {code}{}{}): {log}",
        codespace_note(codespace),
        tx_note(tx)
    )]
    Refused {
        code: u32,
        codespace: String,
        log: String,
        tx: Option<String>,
    },
    /// The client itself is misconfigured or was given something it cannot send (not retryable).
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

fn codespace_note(codespace: &str) -> String {
    if codespace.is_empty() {
        String::new()
    } else {
        format!(", codespace {codespace}")
    }
}

fn tx_note(tx: &Option<String>) -> String {
    tx.as_ref()
        .map(|hash| format!(", tx {hash}"))
        .unwrap_or_default()
}

impl ChainError {
    /// Whether the same call may succeed later unchanged.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Unreachable { .. }
            | Self::BadResponse { .. }
            | Self::InclusionTimeout { .. }
            | Self::SequenceMismatch { .. }
            | Self::AccountMissing { .. } => true,
            Self::Refused { .. } | Self::Invalid { .. } => false,
        }
    }
}

/// A boxed future, so that [`Chain`] stays object-safe (`Arc<dyn Chain>`).
pub type ChainFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, ChainError>> + Send + 'a>>;

/// The settlement contract on some chain.
pub trait Chain: Send + Sync {
    /// Where this chain is, for logs and status pages: a devnet says it is one.
    fn label(&self) -> String;
    /// Executes the contract's `ExecuteMsg` (as JSON) with `funds` attached, waits until it is in
    /// a block and returns the outcome.
    fn execute(&self, msg: serde_json::Value, funds: Vec<Coin>) -> ChainFuture<'_, TxOutcome>;
    /// Runs the contract's `QueryMsg` (as JSON) and returns its JSON answer.
    fn query(&self, msg: serde_json::Value) -> ChainFuture<'_, serde_json::Value>;
    /// The bank balance of `address` in `denom` (the bank module, not the contract), so a
    /// provider can see its pay arrive. Clients that cannot read it say so.
    fn balance(&self, address: &str, denom: &str) -> ChainFuture<'_, u128> {
        let _ = (address, denom);
        Box::pin(async {
            Err(ChainError::Invalid {
                field: "balance",
                reason: "this chain client does not read bank balances".into(),
            })
        })
    }
}

impl dyn Chain + '_ {
    /// [`Chain::execute`] with a typed message (e.g. the contract crate's `ExecuteMsg`).
    pub async fn execute_typed<M: Serialize>(
        &self,
        msg: &M,
        funds: Vec<Coin>,
    ) -> Result<TxOutcome, ChainError> {
        self.execute(to_json(msg)?, funds).await
    }

    /// [`Chain::query`] with a typed message and answer.
    pub async fn query_typed<M: Serialize, R: DeserializeOwned>(
        &self,
        msg: &M,
    ) -> Result<R, ChainError> {
        let answer = self.query(to_json(msg)?).await?;
        serde_json::from_value(answer).map_err(|error| ChainError::Invalid {
            field: "query answer",
            reason: error.to_string(),
        })
    }
}

fn to_json<M: Serialize>(msg: &M) -> Result<serde_json::Value, ChainError> {
    serde_json::to_value(msg).map_err(|error| ChainError::Invalid {
        field: "contract message",
        reason: error.to_string(),
    })
}
