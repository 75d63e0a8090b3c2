//! Agora settlement: canonical usage receipts ([`receipt`]), RFC 6962 Merkle trees with inclusion
//! proofs ([`merkle`]), per-epoch batches of receipts ([`batch`]) and, behind the `chain` feature,
//! the Cosmos chain client ([`chain`]) and, behind `devnet`, the embedded devnet ([`devnet`]). The hub's relayer (`api::relayer`) posts batches exactly
//! once; the node agent uses only [`receipt`], so this crate stays light without features.
#![forbid(unsafe_code)]

pub mod batch;
#[cfg(feature = "chain")]
pub mod chain;
#[cfg(feature = "devnet")]
pub mod devnet;
pub mod merkle;
pub mod receipt;
