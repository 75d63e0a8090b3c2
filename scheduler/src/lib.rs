//! Agora's placement engine: pure, deterministic functions over an in-memory view of the nodes.
//! It does no I/O, so every decision can be replayed in a test and explained to the user.
//!
//! This first version places by first fit over nodes ordered by price: it applies the hard filters
//! (readiness, executor capability, region, price, GPU model/memory/capability, free GPUs) and
//! counts every rejection by reason, so a waiting job can say why it waits.
#![forbid(unsafe_code)]

pub mod cost;
mod first_fit;
pub mod gang;
pub mod index;
pub mod inputs;
mod model;
pub mod network;
pub mod pricing;
pub mod single;

pub use first_fit::first_fit;
pub use index::{Index, NodeKey};
pub use inputs::{AskOnly, BasePrices, Network, Unmeasured};
pub use model::{GpuView, NodeView, Placement, Rejection, Request, Unschedulable, WorkerSlot};
pub use single::{Choice, Weights, place_single};
