//! The scheduler's inputs and outputs. They are its own types, not the API's, so the engine can be
//! driven from the hub, from simulations and from tests alike.

use std::{collections::BTreeMap, fmt};

/// What one job asks for.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Request {
    pub workers: u32,
    pub gpus_per_worker: u32,
    /// Acceptable GPU models; empty means any.
    pub models: Vec<String>,
    pub min_memory_gib: u32,
    /// Minimum compute capability as (major, minor).
    pub min_compute_capability: Option<(u32, u32)>,
    /// Acceptable regions; empty means any.
    pub regions: Vec<String>,
    /// The most the job pays per GPU-hour, in micro-units.
    pub max_price_micros: u64,
    /// The executor capability the workload needs (`builtin:sleep`, `container`, …).
    pub capability: String,
    /// Where the job's users are; latency is scored (and bounded by `max_latency_ms`) to this region.
    pub user_region: Option<String>,
    /// Largest acceptable RTT to `user_region` (single workers) and between workers (gangs).
    pub max_latency_ms: Option<u32>,
    /// Smallest acceptable bandwidth between workers of a gang.
    pub min_bandwidth_mbps: Option<u32>,
    /// Smallest stake, in micro-units of the staking denomination, the node's operator must hold.
    pub min_stake_micros: u64,
    /// Nodes this job already failed on: never again.
    pub excluded_nodes: Vec<String>,
    /// Pipeline stages of a gang (D_PP); the workers split into stages of equal data-parallel
    /// groups. 1 (or 0) means pure data parallelism.
    pub pipeline_stages: u32,
    /// Communication volumes of one training step, when the job states them.
    pub sizes: Option<crate::cost::dtfm::Sizes>,
    /// Federated jobs: the nodes holding the data, one worker on each (rank = position); the data
    /// never moves, so no other node is considered.
    pub data_nodes: Vec<String>,
}

/// One node as the scheduler sees it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeView {
    pub name: String,
    pub region: String,
    /// Asking price per GPU-hour in micro-units.
    pub price_micros: u64,
    /// Whether heartbeats arrive.
    pub ready: bool,
    pub capabilities: Vec<String>,
    pub gpus: Vec<GpuView>,
    /// The operator's bonded stake, in micro-units of the staking denomination.
    pub stake_micros: u64,
    /// Reputation in basis points (10,000 = spotless).
    pub reputation_bps: u16,
    /// A jailed operator's nodes get no work.
    pub jailed: bool,
}

/// One GPU of a node.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GpuView {
    pub uuid: String,
    pub model: String,
    pub memory_gib: u32,
    pub compute_capability: (u32, u32),
    pub healthy: bool,
    /// Held by a live assignment.
    pub allocated: bool,
}

/// Why a node was not used, in the order the filters run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rejection {
    NotReady,
    Jailed,
    InsufficientStake,
    FailedBefore,
    Incapable,
    WrongRegion,
    TooExpensive,
    NoMatchingGpu,
    TooFewFreeGpus,
    TooFar,
    DataSiteUnavailable,
}

impl Rejection {
    /// How the reason reads after a count: "3 not ready".
    pub fn describe(self, capability: &str) -> String {
        match self {
            Rejection::NotReady => "not ready".into(),
            Rejection::Jailed => "jailed".into(),
            Rejection::InsufficientStake => "with too little stake".into(),
            Rejection::FailedBefore => "where this job failed before".into(),
            Rejection::Incapable => format!("cannot run {capability} workloads"),
            Rejection::WrongRegion => "in other regions".into(),
            Rejection::TooExpensive => "too expensive".into(),
            Rejection::NoMatchingGpu => "without a matching GPU".into(),
            Rejection::TooFewFreeGpus => "with too few free GPUs".into(),
            Rejection::TooFar => "too far from the users".into(),
            Rejection::DataSiteUnavailable => "data sites that cannot take their worker".into(),
        }
    }

    /// A stable machine-readable name (`TooExpensive`), for metrics and API fields.
    pub fn name(self) -> &'static str {
        match self {
            Rejection::NotReady => "NotReady",
            Rejection::Jailed => "Jailed",
            Rejection::InsufficientStake => "InsufficientStake",
            Rejection::FailedBefore => "FailedBefore",
            Rejection::Incapable => "Incapable",
            Rejection::WrongRegion => "WrongRegion",
            Rejection::TooExpensive => "TooExpensive",
            Rejection::NoMatchingGpu => "NoMatchingGpu",
            Rejection::TooFewFreeGpus => "TooFewFreeGpus",
            Rejection::TooFar => "TooFar",
            Rejection::DataSiteUnavailable => "DataSiteUnavailable",
        }
    }
}

/// Why a job could not be placed: every node's first failed filter, counted by reason.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Unschedulable {
    pub nodes: u32,
    pub rejections: BTreeMap<Rejection, u32>,
    /// Workers that would have fit on the nodes that passed every filter.
    pub workers_that_fit: u32,
    pub workers: u32,
    pub capability: String,
    /// A gang whose workers would fit, but whose best layout found puts a pair of them beyond the
    /// job's own link bounds: those bounds as the spec names them (`maxLatencyMs 50`).
    pub unmet_link_bounds: Option<String>,
}

impl fmt::Display for Unschedulable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nodes == 0 {
            return f.write_str("no nodes are registered");
        }
        let reasons: Vec<String> = self
            .rejections
            .iter()
            .map(|(reason, n)| format!("{n} {}", reason.describe(&self.capability)))
            .collect();
        write!(
            f,
            "no placement on {} node{}",
            self.nodes,
            if self.nodes == 1 { "" } else { "s" }
        )?;
        if !reasons.is_empty() {
            write!(f, ": {}", reasons.join(", "))?;
        }
        if let Some(bounds) = &self.unmet_link_bounds {
            write!(
                f,
                "; no layout of the {} workers found keeps every pair of them within {bounds}",
                self.workers
            )?;
        } else if self.workers > 1 && self.workers_that_fit > 0 {
            write!(
                f,
                "; only {} of {} workers fit",
                self.workers_that_fit, self.workers
            )?;
        }
        Ok(())
    }
}
