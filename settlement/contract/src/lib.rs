//! Agora's CosmWasm settlement contract: provider stakes with unbonding, payer escrow, settlement
//! batches posted by the hub's settler and finalized after a challenge window, challenges, slashes
//! and jailing. Built for `wasm32-unknown-unknown` on its own (it must not pull in tokio or cosmrs):
//! `scripts/contract-check` builds, lowers and validates the wasm. With the `library` feature there
//! are no entry points, and [`contract::instantiate`], [`contract::execute`] and [`contract::query`]
//! can be wrapped natively (the hub's embedded devnet runs them in cw-multi-test).
//!
//! Messages are in [`msg`]; docs/settlement.md ("The contract") explains the rules: fee and slash
//! rounding, challenge semantics, and the invariant that the contract's bank balance always equals
//! what its ledger says it holds.
#![forbid(unsafe_code)]

pub mod contract;
pub mod error;
pub mod evidence;
pub mod execute;
pub mod msg;
pub mod query;
pub mod state;

pub use crate::error::ContractError;
