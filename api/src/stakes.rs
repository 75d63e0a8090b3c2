//! Operators' stakes as the settlement contract holds them, for the scheduler: a node whose
//! operator is jailed, or has less bonded than the contract's `min_stake`, gets no new work.
//!
//! The book is read from the chain by the settlement loop ([`crate::settling`]) every few seconds
//! and swapped in whole; the scheduler and quotes read the latest copy without waiting on the
//! chain. Without a chain (`--chain none`) there is no book and stake gates nothing. With one,
//! a node with no operator address has no stake: it cannot be paid, nor slashed.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use serde_json::{Value, json};
use settlement::chain::{Chain, ChainError};

/// What the chain says of one operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Standing {
    /// Bonded stake, in the smallest unit of the contract's denom.
    pub bonded: u128,
    /// Jailed now (by a slash), so its nodes get no work until `jailed_until`.
    pub jailed: bool,
    /// Block time (Unix seconds) the jail ends; 0 if never jailed.
    pub jailed_until: u64,
}

/// Every operator's standing, as read at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StakeBook {
    /// The contract's `min_stake`.
    pub min_stake: u128,
    pub operators: HashMap<String, Standing>,
}

/// Most operators one query returns (the contract's own page limit).
const PAGE: u32 = 100;

impl StakeBook {
    /// Reads the contract's `min_stake` and every operator, page by page.
    pub async fn read(chain: &dyn Chain) -> Result<Self, ChainError> {
        let params = chain.query(json!({"params": {}})).await?;
        let min_stake = amount(&params["min_stake"], "params.min_stake")?;
        let mut operators = HashMap::new();
        let mut start_after: Option<String> = None;
        loop {
            let page = chain
                .query(json!({"operators": {"start_after": start_after, "limit": PAGE}}))
                .await?;
            let listed = page["operators"].as_array().cloned().unwrap_or_default();
            for operator in &listed {
                let address = operator["address"]
                    .as_str()
                    .ok_or_else(|| bad("operators[].address", operator))?
                    .to_string();
                let standing = Standing {
                    bonded: amount(&operator["bonded"], "operators[].bonded")?,
                    jailed: operator["jailed"].as_bool().unwrap_or(false),
                    jailed_until: operator["jailed_until"].as_u64().unwrap_or(0),
                };
                start_after = Some(address.clone());
                operators.insert(address, standing);
            }
            if listed.len() < PAGE as usize {
                break;
            }
        }
        Ok(Self {
            min_stake,
            operators,
        })
    }

    /// The stake the scheduler sees for a node of `operator` (micro-units, saturating) and
    /// whether it is jailed.
    pub fn node_standing(&self, operator: Option<&str>) -> (u64, bool) {
        match operator.and_then(|address| self.operators.get(address)) {
            Some(standing) => (
                u64::try_from(standing.bonded).unwrap_or(u64::MAX),
                standing.jailed,
            ),
            None => (0, false),
        }
    }

    /// The least stake a node's operator needs for new work (micro-units, saturating).
    pub fn min_stake_micros(&self) -> u64 {
        u64::try_from(self.min_stake).unwrap_or(u64::MAX)
    }
}

/// The hub's current book: `None` while no chain is configured or none was read yet.
#[derive(Default)]
pub struct Stakes {
    book: RwLock<Option<Arc<StakeBook>>>,
}

impl Stakes {
    /// The latest book.
    pub fn snapshot(&self) -> Option<Arc<StakeBook>> {
        self.book
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Swaps `book` in; true if it differs from the one before (the fleet then changed).
    pub fn replace(&self, book: StakeBook) -> bool {
        let mut current = self
            .book
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let changed = current.as_deref() != Some(&book);
        if changed {
            *current = Some(Arc::new(book));
        }
        changed
    }
}

/// A contract amount: a `Uint128` is a decimal string in JSON.
fn amount(value: &Value, field: &'static str) -> Result<u128, ChainError> {
    value
        .as_str()
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| bad(field, value))
}

fn bad(field: &'static str, value: &Value) -> ChainError {
    ChainError::Invalid {
        field,
        reason: format!("the contract answered {value}"),
    }
}
