//! What the contract stores. Every amount the contract holds is in exactly one of: an escrow
//! balance, an operator's bonded stake, or an operator's unbonding claims; [`Ledger`] keeps the
//! running totals that let anyone check that against the bank balance (the invariant).

use cosmwasm_schema::cw_serde;
use cosmwasm_std::{Addr, Empty, Uint128};
use cw_storage_plus::{Item, Map};

use crate::msg::{BatchState, Claim, Params, Period, Total};

#[cw_serde]
pub struct Config {
    pub settler: Addr,
    pub admin: Addr,
    pub treasury: Addr,
}

/// One operator's collateral. Absent until its first bond, claim or node.
#[cw_serde]
#[derive(Default)]
pub struct OperatorState {
    pub bonded: Uint128,
    /// Pending claims, in the order they were made (so by `release_at` as long as
    /// `unbonding_seconds` does not shrink; `Claim` scans them all anyway).
    pub claims: Vec<Claim>,
    pub jailed_until: u64,
    pub slashed: Uint128,
}

impl OperatorState {
    pub fn unbonding(&self) -> Uint128 {
        self.claims.iter().map(|c| c.amount).sum()
    }
}

#[cw_serde]
pub struct Node {
    pub operator: Addr,
    pub pubkey: String,
}

#[cw_serde]
#[derive(Default)]
pub struct Escrow {
    pub balance: Uint128,
    /// Part of `balance` held for posted, not yet final batches; `reserved ≤ balance` always.
    pub reserved: Uint128,
}

#[cw_serde]
pub struct Batch {
    pub root: String,
    pub period: Period,
    pub receipts: u64,
    pub provider_totals: Vec<Total>,
    pub payer_totals: Vec<Total>,
    pub posted_at: u64,
    pub challenge_ends_at: u64,
    pub state: BatchState,
    pub closed_at: Option<u64>,
    pub fee: Option<Uint128>,
    pub challenge: Option<String>,
}

/// Running totals since instantiation (flows in, flows out) and the current sums of liabilities.
#[cw_serde]
#[derive(Default)]
pub struct Ledger {
    pub deposits: Uint128,
    pub stakes: Uint128,
    pub payouts: Uint128,
    pub withdrawals: Uint128,
    pub claims_paid: Uint128,
    pub slashes: Uint128,
    pub fees: Uint128,
    pub escrow: Uint128,
    pub reserved: Uint128,
    pub bonded: Uint128,
    pub unbonding: Uint128,
}

pub const CONFIG: Item<Config> = Item::new("config");
pub const PARAMS: Item<Params> = Item::new("params");
pub const LEDGER: Item<Ledger> = Item::new("ledger");
pub const OPERATORS: Map<&Addr, OperatorState> = Map::new("operators");
pub const NODES: Map<&str, Node> = Map::new("nodes");
/// (operator, node) → Empty: the nodes of an operator, for the `Operator` query.
pub const OPERATOR_NODES: Map<(&Addr, &str), Empty> = Map::new("operator_nodes");
pub const ESCROWS: Map<&Addr, Escrow> = Map::new("escrows");
pub const BATCHES: Map<&str, Batch> = Map::new("batches");
