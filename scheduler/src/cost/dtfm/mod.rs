//! The communication cost model of Yuan et al., "Decentralized Training of Foundation Models in
//! Heterogeneous Environments" (NeurIPS 2022, "DT-FM"), §3 "Scheduling in heterogeneous
//! environments".
//!
//! A training step splits N devices into `D_PP` pipeline stages, each a data-parallel group of
//! `D_DP` devices (N = D_PP · D_DP). With α_{d,d'} the delay and β_{d,d'} the bandwidth from device
//! d to d', c_dp the gradient bytes a stage synchronizes and c_pp the activation bytes a stage hands
//! to the next, the paper models one step's communication as
//!
//! ```text
//! DataPCost(C_1..C_{D_PP}) = max_j max_{d ∈ C_j} Σ_{d' ∈ C_j − {d}} 2 (α_{d,d'} + c_dp / (D_DP β_{d,d'}))   (1)
//! edge(C_j, C_j')          = min_M max_{(d,d') ∈ M} 2 (α_{d,d'} + c_pp / β_{d,d'})                         (2)
//! PipelinePCost(C_1..)     = OpenLoopTSP over the coarsened graph whose edge weights are (2)               (3)
//! CommCost                 = DataPCost + PipelinePCost                                                     (4)
//! ```
//!
//! (1) is a gradient all-reduce in which every member exchanges a 1/D_DP shard with every peer, once
//! to reduce and once to gather (the factor 2); the slowest member of the slowest group bounds the
//! step because all groups synchronize in parallel. (2) is the forward activation and the backward
//! gradient (the factor 2) between paired devices of consecutive stages, whose slowest pair bounds
//! the stage boundary; the stages run one after another, so (3) adds the boundaries along the
//! pipeline. The reference implementation (github.com/DS3Lab/DT-FM,
//! `scheduler/heuristic_evolutionary_solver`) computes the same total, with the pipeline factor 2
//! applied after the TSP.
//!
//! [`dtfm`] evaluates a concrete [`Layout`]: the layout already fixes the pipeline order and the
//! pairing `stages[s][i] → stages[s+1][i]`, so the `min_M` of (2) and the TSP of (3) are what the
//! layout chose. A layout that realizes the optimal matchings and the optimal tour (what
//! [`crate::gang::solve`] returns) costs exactly the paper's `CommCost` of its partition.
//!
//! Sizes are in gigabytes and bandwidths in Gbps, so `c / β` is `c_gb · 8 / β_gbps` seconds.

mod topology;

#[cfg(test)]
mod tests;

pub use topology::{Link, Topology, TopologyError};

use serde::{Deserialize, Serialize};
use std::fmt;

/// Communication volumes of one training step, in gigabytes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sizes {
    /// c_pp: activations sent forward (and activation gradients sent back) across each stage
    /// boundary by each pipeline.
    pub c_pp_gb: f64,
    /// c_dp: gradients each data-parallel group all-reduces (the stage's parameter gradients).
    pub c_dp_gb: f64,
}

/// Devices by pipeline stage: `stages[s]` is stage s's data-parallel group, stages in pipeline
/// order, and `stages[s][i]` sends its activations to `stages[s + 1][i]` (pipeline i).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    pub stages: Vec<Vec<usize>>,
}

impl Layout {
    /// Number of pipeline stages (`D_PP`).
    pub fn d_pp(&self) -> usize {
        self.stages.len()
    }

    /// Devices per stage (`D_DP`), taken from the first stage; 0 for an empty layout.
    pub fn d_dp(&self) -> usize {
        self.stages.first().map_or(0, Vec::len)
    }

    /// Checks that the layout is a rectangle of distinct devices below `n`: the shape the model is
    /// defined on. [`dtfm`] does not check, so untrusted layouts should pass through here first.
    pub fn validate(&self, n: usize) -> Result<(), LayoutError> {
        let d_dp = self.d_dp();
        if self.stages.is_empty() || d_dp == 0 {
            return Err(LayoutError::Empty);
        }
        let mut seen = vec![false; n];
        for (stage, group) in self.stages.iter().enumerate() {
            if group.len() != d_dp {
                return Err(LayoutError::Ragged {
                    stage,
                    len: group.len(),
                    expected: d_dp,
                });
            }
            for &device in group {
                match seen.get_mut(device) {
                    None => return Err(LayoutError::UnknownDevice { device, n }),
                    Some(true) => return Err(LayoutError::Duplicate { device }),
                    Some(slot) => *slot = true,
                }
            }
        }
        Ok(())
    }
}

/// Why a layout is not a valid D_PP × D_DP arrangement of distinct devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayoutError {
    Empty,
    Ragged {
        stage: usize,
        len: usize,
        expected: usize,
    },
    UnknownDevice {
        device: usize,
        n: usize,
    },
    Duplicate {
        device: usize,
    },
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => write!(f, "layout has no stage or an empty stage"),
            Self::Ragged {
                stage,
                len,
                expected,
            } => write!(f, "stage {stage} has {len} devices, expected {expected}"),
            Self::UnknownDevice { device, n } => {
                write!(f, "device {device} is not among the {n} devices")
            }
            Self::Duplicate { device } => write!(f, "device {device} appears more than once"),
        }
    }
}

impl std::error::Error for LayoutError {}

/// Seconds of communication per training step under the DT-FM model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Cost {
    /// Equation (4): `data_parallel_s + pipeline_s`.
    pub total_s: f64,
    /// Equation (1): the slowest member of the slowest data-parallel group.
    pub data_parallel_s: f64,
    /// Equations (2)–(3) for the layout's own order and pairing: the sum over stage boundaries of
    /// the slowest pair.
    pub pipeline_s: f64,
}

/// Equation (1)'s term for one ordered pair: `2 (α + c_dp / (D_DP β))`, with `d_dp` the size of the
/// sender's group.
pub fn dp_pair_s(link: Link, sizes: &Sizes, d_dp: usize) -> f64 {
    2.0 * link.transfer_s(sizes.c_dp_gb / d_dp as f64)
}

/// Equation (2)'s term for one ordered pair: `2 (α + c_pp / β)` (activations forward, their
/// gradients back).
pub fn pp_pair_s(link: Link, sizes: &Sizes) -> f64 {
    2.0 * link.transfer_s(sizes.c_pp_gb)
}

/// The DT-FM communication cost (equations (1)–(4)) of `layout` on `topology`.
///
/// The layout should be valid ([`Layout::validate`]); a ragged layout is costed over the pairs that
/// exist (each group's own size is its D_DP, boundaries pair up to the shorter stage).
///
/// # Panics
/// If the layout names a device `≥ topology.len()`.
pub fn dtfm(topology: &Topology, sizes: &Sizes, layout: &Layout) -> Cost {
    let data_parallel_s = layout
        .stages
        .iter()
        .map(|group| group_dp_s(topology, sizes, group))
        .fold(0.0, f64::max);
    let pipeline_s = layout
        .stages
        .windows(2)
        .map(|pair| boundary_s(topology, sizes, &pair[0], &pair[1]))
        .sum();
    Cost {
        total_s: data_parallel_s + pipeline_s,
        data_parallel_s,
        pipeline_s,
    }
}

/// Equation (1) for one group: the largest per-member sum over its peers.
fn group_dp_s(topology: &Topology, sizes: &Sizes, group: &[usize]) -> f64 {
    group
        .iter()
        .map(|&d| {
            group
                .iter()
                .filter(|&&peer| peer != d)
                .map(|&peer| dp_pair_s(topology.link(d, peer), sizes, group.len()))
                .sum::<f64>()
        })
        .fold(0.0, f64::max)
}

/// Equation (2) for the pairing the layout chose: its slowest pair.
fn boundary_s(topology: &Topology, sizes: &Sizes, from: &[usize], to: &[usize]) -> f64 {
    from.iter()
        .zip(to)
        .map(|(&d, &next)| pp_pair_s(topology.link(d, next), sizes))
        .fold(0.0, f64::max)
}
