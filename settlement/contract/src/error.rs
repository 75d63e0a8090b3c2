//! Why the contract refuses a message. Each error names the field or party at fault so that the
//! hub, a provider or a payer can tell what to fix from the transaction's log alone.

use cosmwasm_std::{OverflowError, StdError, Uint128};
use thiserror::Error;

#[derive(Error, Debug)]
pub enum ContractError {
    #[error("{0}")]
    Std(#[from] StdError),

    #[error("arithmetic overflow: {0}")]
    Overflow(#[from] OverflowError),

    #[error("unauthorized: only the {role} may {action}")]
    Unauthorized {
        role: &'static str,
        action: &'static str,
    },

    #[error("invalid {field}: {reason}")]
    Invalid { field: String, reason: String },

    #[error("funds: send exactly one coin of {denom}, got {got}")]
    Funds { denom: String, got: String },

    #[error("funds: this message takes no funds, got {got} (only Bond and Deposit do)")]
    Unexpected { got: String },

    #[error("amount must be more than zero")]
    ZeroAmount,

    #[error("bond: {operator} would have {bonded} bonded, below the minimum stake {min_stake}")]
    BelowMinStake {
        operator: String,
        bonded: Uint128,
        min_stake: Uint128,
    },

    #[error("unbond: {requested} requested but only {bonded} is bonded")]
    UnbondTooMuch { requested: Uint128, bonded: Uint128 },

    #[error("claim: nothing has matured yet (next release at {next})")]
    NothingToClaim { next: String },

    #[error(
        "withdraw: {requested} requested but only {free} of the escrow is free ({reserved} reserved by posted batches)"
    )]
    WithdrawTooMuch {
        requested: Uint128,
        free: Uint128,
        reserved: Uint128,
    },

    #[error("register node: node {node} is registered to another operator ({operator})")]
    NodeTaken { node: String, operator: String },

    #[error("{operator} is jailed until {until} (block time, seconds)")]
    Jailed { operator: String, until: u64 },

    #[error("post batch: batch {id} was already posted with different content")]
    BatchConflict { id: String },

    #[error("post batch: payer {payer} has {free} free in escrow, less than its total {total}")]
    EscrowShort {
        payer: String,
        free: Uint128,
        total: Uint128,
    },

    #[error(
        "post batch: provider totals sum to {providers} but payer totals to {payers}; they must be equal"
    )]
    Unbalanced { providers: Uint128, payers: Uint128 },

    #[error("batch {id} not found")]
    BatchNotFound { id: String },

    #[error("batch {id} is {state}, not posted")]
    BatchClosed { id: String, state: String },

    #[error("finalize: batch {id}'s challenge window ends at {ends_at}, {remaining} s from now")]
    WindowOpen {
        id: String,
        ends_at: u64,
        remaining: u64,
    },

    #[error("challenge: batch {id}'s challenge window ended at {ended_at}")]
    WindowClosed { id: String, ended_at: u64 },

    #[error("challenge: the receipt is not in batch {id}: {reason}")]
    NotIncluded { id: String, reason: String },

    #[error("challenge: the evidence does not contradict batch {id}: {reason}")]
    NoContradiction { id: String, reason: String },

    #[error("update params: the denom cannot change from {from} (balances are held in it)")]
    DenomChange { from: String },
}

impl ContractError {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}
