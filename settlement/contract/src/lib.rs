//! Agora's CosmWasm settlement contract: provider stakes with unbonding, payer escrow, settlement
//! batches posted by the hub's settler and finalized after a challenge window, challenges, slashes
//! and jailing. Built for `wasm32-unknown-unknown` on its own (it must not pull in tokio or cosmrs).
//! (Filled by the settlement issue.)
#![forbid(unsafe_code)]
