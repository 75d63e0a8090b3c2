//! Agora's Kubernetes controllers: the ComputeJob controller (CR ⇄ hub), the GpuNode mirror of the
//! hub's node registry, and leader election through a `coordination.k8s.io/v1` Lease, so that of
//! several hub replicas only one runs the controllers and writes to the cluster.
//!
//! The controllers reach the hub only through [`Hub`], which the `agora` binary implements over
//! the hub's service in-process: this crate never touches the database.
#![forbid(unsafe_code)]

pub mod computejob;
pub mod error;
#[cfg(test)]
mod fixtures;
pub mod gpunode;
pub mod hub;
pub mod leader;
pub mod metrics;
pub mod rbac;
mod run;

pub use error::{Error, Result};
pub use hub::{Hub, HubError, Submission};
pub use run::{Config, run};

/// The field manager of every server-side apply the operator makes, and the reporting controller
/// of its Events.
pub const FIELD_MANAGER: &str = "agora-operator";
