//! The Agora node agent: the process that runs on a GPU machine, offers its GPUs to the hub and runs
//! the work the hub assigns to it.
//!
//! The agent only ever connects out to the hub (it runs on other people's machines, often behind
//! NAT), so everything here is a client: it registers, heartbeats, long-polls for assignments and
//! reports how they end. The pieces:
//!
//! - [`identity`]: the node's secp256k1 key, which proves to the hub that a registration comes from
//!   the node that first took its name (and, with settlement, signs usage receipts);
//! - [`inventory`]: simulated GPU inventories, from a spec like `8xH100-80GB`;
//! - [`gpus`]: the node's GPUs (NVML or simulated), their telemetry, health and `/metrics`;
//! - [`executor`]: how an assignment's workload is run (for now the builtin workloads of simulated
//!   nodes);
//! - [`client`]: a typed HTTP client of the agent protocol (`/v1/agent/...`, wire types in
//!   [`crds::agent`]);
//! - [`agent`]: the loop that ties them together and survives hub restarts and network failures;
//! - [`cheat`]: simulated cheaters (`--cheat MODE`), for testing the hub's verification.
//!
//! NVML inventory and telemetry, cudarc workloads, network probes and signed receipts arrive with
//! later issues. This crate never depends on the hub (`api`), a database or a chain client, so the
//! agent can ship as a small binary of its own.
// `deny`, not `forbid`: the CUDA path (`workloads::cuda`, feature `cuda`) must call cudarc's
// unsafe kernel launches, and allows it there alone.
#![deny(unsafe_code)]

pub mod agent;
mod backoff;
pub mod benchmark;
pub mod cheat;
pub mod client;
pub mod executor;
pub mod gpus;
pub mod identity;
pub mod inventory;
pub mod outbox;
pub mod probes;
pub mod receipts;
pub mod workloads;
