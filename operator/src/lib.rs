//! Agora's Kubernetes controllers: the ComputeJob controller (CR ⇄ hub), the GpuNode mirror of the
//! hub's node registry, and leader election through a Lease. The controllers reach the hub only
//! through a small trait that the `agora` binary implements in-process, so this crate never touches
//! the database. (The controllers arrive with the operator issue; this crate fixes the boundary.)
#![forbid(unsafe_code)]
