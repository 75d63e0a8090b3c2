//! Agora settlement: canonical usage receipts, Merkle batches with inclusion proofs, the relayer that
//! posts batches to the chain exactly once, the chain client and the embedded devnet.
//! Today: the canonical receipt ([`receipt`]). The rest comes with the settlement issue; the hub
//! already records the usage it will settle.
#![forbid(unsafe_code)]

pub mod receipt;
