//! Agora's placement engine: pure, deterministic functions over an in-memory view of the nodes.
//! It does no I/O, so every decision can be replayed in a test and explained to the user.
//!
//! The pieces: an [`Index`] of the fleet kept up to date incrementally; exact single-worker placement
//! ([`place_single`]) scoring effective price, latency to the users, reputation and packing behind
//! hard filters, every rejection counted by reason; gang placement ([`place`]); the network model
//! (latency coordinates and bandwidth); the DT-FM communication cost model; and EIP-1559-style base
//! prices per GPU class.
#![forbid(unsafe_code)]

pub mod bench;
pub mod cost;
pub mod federated;
#[cfg(test)]
mod fixtures;
pub mod gang;
pub mod index;
pub mod inputs;
pub mod latency;
mod model;
pub mod network;
pub mod place;
pub mod place_gang;
pub mod pricing;
pub mod single;

pub use index::{Index, NodeKey};
pub use inputs::{AskOnly, BasePrices, Network, Unmeasured};
pub use latency::LatencyTable;
pub use model::{GpuView, NodeView, Rejection, Request, Unschedulable};
pub use place::{Slot, place, release};
pub use single::{Choice, Weights, place_single};
