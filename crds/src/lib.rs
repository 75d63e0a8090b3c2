//! Agora's API types, shared by every other crate: the `ComputeJob` and `GpuNode` custom resources
//! (API group `agora.dev`, version `v1alpha1`), the wire types of the hub's REST API and of the
//! agent protocol, and the money and validation helpers that keep both schemas one.
//!
//! This crate does no I/O. The REST body of `POST /v1/jobs` *is* [`v1alpha1::ComputeJobSpec`], so a
//! manifest that `kubectl apply` accepts is a body the hub accepts, and [`validate`] (behind the
//! `validate` feature) checks bodies against the very schema the CRD carries, CEL rules included.
#![forbid(unsafe_code)]

pub mod agent;
pub mod gpu_models;
pub mod manifests;
pub mod money;
pub mod rest;
pub mod v1alpha1;
#[cfg(feature = "validate")]
pub mod validate;

/// The API group of every Agora custom resource.
pub const GROUP: &str = "agora.dev";
