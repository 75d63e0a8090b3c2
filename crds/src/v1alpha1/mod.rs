//! Version `v1alpha1` of the `agora.dev` API.

mod computejob;
mod gpunode;

pub use computejob::*;
pub use gpunode::*;
