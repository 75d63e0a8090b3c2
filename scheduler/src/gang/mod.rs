//! Gang placement under the DT-FM cost model ([`crate::cost::dtfm`]).
//!
//! [`solve`] arranges `D_PP × D_DP` of the topology's devices into pipeline stages so as to
//! minimize the paper's communication cost, following the paper's decomposition (Yuan et al.,
//! NeurIPS 2022, §3):
//!
//! 1. **Balanced partition** into `D_PP` data-parallel groups of `D_DP`. Greedy constructions give
//!    the starting partitions: groups grown around tight clusters (what equation (1) wants) and
//!    pipelines grown as chains of fast links (what equation (2) wants).
//! 2. **Coarsening**: each ordered pair of groups is weighted by its bottleneck perfect matching
//!    (equation (2); binary search over thresholds with augmenting paths, ties broken by the
//!    Hungarian method); the stage order is the open-loop TSP path over those weights (equation
//!    (3); Held–Karp, exact up to 12 stages); the matchings along the path fix the pairing. This
//!    realizes the paper's `CommCost` of a partition exactly.
//! 3. **Search**: a memetic loop in the spirit of the paper's evolutionary scheduler: crossover
//!    of partitions, local search by simulated annealing on the layout, exact realization of every
//!    result. Its length is a budget of move evaluations, so the result depends only on the inputs
//!    and the seed, never on the clock.
//!
//! [`random_baseline`] is the paper's ablation: devices dealt to stages at random, pipeline order
//! as drawn, device i of each stage paired with device i of the next.

mod construct;
mod costs;
mod evolve;
mod matching;
mod realize;
pub mod scenarios;
mod search;
mod tsp;

pub(crate) mod rng;

#[cfg(test)]
mod tests;

use crate::cost::dtfm::{Layout, Link, Sizes, Topology};
use costs::PairCosts;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A budget (move evaluations) that solves each 64-GPU DT-FM scenario in about 25 ms of one core
/// in a release build (`cargo bench -p scheduler --bench dtfm`), with the results in
/// [`scenarios::run_dtfm_benchmark`]. On those scenarios the constructed starts are already the
/// best layouts known; the budget pays for the search on networks that are less regular.
pub const DEFAULT_BUDGET: usize = 100_000;

/// Arranges `d_pp · d_dp` of `topology`'s devices into `d_pp` stages of `d_dp` minimizing
/// [`crate::cost::dtfm::dtfm`]. Devices beyond `d_pp · d_dp` are candidates the search may leave
/// out. `budget` bounds the work in move evaluations (see [`DEFAULT_BUDGET`]); a budget of 0 still
/// returns the best of the constructed starting points, realized exactly.
///
/// Besides the budget, the work is O(n² log n) in the number n of candidate devices (every link is
/// read once, and the constructions rank neighbours), so callers should pass a shortlist rather
/// than the whole fleet.
///
/// Deterministic: the same inputs and `seed` give the same layout.
pub fn solve(
    topology: &Topology,
    sizes: &Sizes,
    d_pp: usize,
    d_dp: usize,
    seed: u64,
    budget: usize,
) -> Result<Layout, GangError> {
    check(topology, sizes, d_pp, d_dp)?;
    let costs = PairCosts::new(topology, sizes, d_dp)?;
    let stages = evolve::Solver::new(&costs, d_pp, d_dp, seed, budget).run();
    Ok(Layout { stages })
}

/// Cost of random placement over `samples` draws: the ablation baseline of the paper ("w/o
/// scheduler"), whose reference implementation draws 5,000.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// Mean total cost (seconds).
    pub mean_s: f64,
    /// Lowest total cost among the draws (seconds).
    pub best_s: f64,
}

/// Draws `samples` random layouts: a uniformly random choice and order of `d_pp · d_dp` devices,
/// dealt into stages in order, pipeline order as drawn and `stages[s][i] → stages[s+1][i]`, with no
/// ordering or matching optimization. Deterministic in `seed`.
pub fn random_baseline(
    topology: &Topology,
    sizes: &Sizes,
    d_pp: usize,
    d_dp: usize,
    seed: u64,
    samples: usize,
) -> Result<Baseline, GangError> {
    check(topology, sizes, d_pp, d_dp)?;
    if samples == 0 {
        return Err(GangError::NoSamples);
    }
    let costs = PairCosts::new(topology, sizes, d_dp)?;
    let mut rng = rng::Rng::new(seed);
    let (mut sum, mut best) = (0.0, f64::INFINITY);
    for _ in 0..samples {
        let stages = construct::random_stages(topology.len(), d_pp, d_dp, &mut rng);
        let total = costs.total(&stages);
        sum += total;
        best = best.min(total);
    }
    Ok(Baseline {
        mean_s: sum / samples as f64,
        best_s: best,
    })
}

fn check(topology: &Topology, sizes: &Sizes, d_pp: usize, d_dp: usize) -> Result<(), GangError> {
    let valid = |gb: f64| gb.is_finite() && gb >= 0.0;
    if !(valid(sizes.c_pp_gb) && valid(sizes.c_dp_gb)) {
        return Err(GangError::InvalidSizes(*sizes));
    }
    if d_pp == 0 || d_dp == 0 {
        return Err(GangError::EmptyShape { d_pp, d_dp });
    }
    let needed = d_pp.saturating_mul(d_dp);
    if needed > topology.len() {
        return Err(GangError::TooFewDevices {
            needed,
            available: topology.len(),
        });
    }
    Ok(())
}

/// Why a gang cannot be placed.
#[derive(Debug, Clone, PartialEq)]
pub enum GangError {
    /// No stages, or stages of no devices.
    EmptyShape { d_pp: usize, d_dp: usize },
    /// The gang needs more devices than the topology has.
    TooFewDevices { needed: usize, available: usize },
    /// A link whose cost is not a finite, non-negative number of seconds.
    InvalidLink { from: usize, to: usize, link: Link },
    /// Communication volumes that are negative or not finite.
    InvalidSizes(Sizes),
    /// A baseline over zero samples has no mean.
    NoSamples,
}

impl fmt::Display for GangError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::EmptyShape { d_pp, d_dp } => {
                write!(f, "a gang of {d_pp} stages × {d_dp} devices is empty")
            }
            Self::TooFewDevices { needed, available } => {
                write!(
                    f,
                    "the gang needs {needed} devices, {available} are available"
                )
            }
            Self::InvalidLink { from, to, link } => write!(
                f,
                "link {from}→{to} ({} ms, {} Gbps) does not give a finite cost",
                link.delay_ms, link.bandwidth_gbps
            ),
            Self::InvalidSizes(sizes) => write!(
                f,
                "communication volumes must be finite and non-negative, got c_pp = {} GB, \
                 c_dp = {} GB",
                sizes.c_pp_gb, sizes.c_dp_gb
            ),
            Self::NoSamples => write!(f, "a random baseline needs at least one sample"),
        }
    }
}

impl std::error::Error for GangError {}
