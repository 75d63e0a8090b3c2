//! Communication cost models.
//!
//! [`dtfm`] is the data-parallel / pipeline-parallel model of Yuan et al., "Decentralized Training
//! of Foundation Models in Heterogeneous Environments" (NeurIPS 2022), which gang placement
//! minimizes.

pub mod dtfm;
