//! The five simulated environments of the DT-FM evaluation (Yuan et al., NeurIPS 2022, §4 and the
//! reference implementation's `scheduler/heuristic_evolutionary_solver/config.py`): 64 GPUs run
//! GPT-3 XL as `D_PP = 8` stages × `D_DP = 8` replicas, with per-pair delays (ms) and bandwidths
//! (Gbps) that model a data center, spot instances, two data centers, and regional and world-wide
//! geo-distribution.
//!
//! Each scenario also has a hand-made *structured* layout to compare against. Two layouts follow
//! from the rank numbering, in which ranks of one block (machine, instance, region) are
//! consecutive: [`stage_per_block`] (stage s = ranks `8s..8s+8`, the rank order of Megatron-LM
//! without tensor parallelism, where a data-parallel group is a block) and [`pipeline_per_block`] (pipeline i = ranks
//! `8i..8i+8`, so each data-parallel group spans the blocks). Which of them is better depends on
//! the network (in case 1, for instance, a group spanning the eight machines wins, because
//! activations cross a boundary seven times while each group's all-reduce is paid once), so
//! [`Scenario::structured`] takes the better of the two under the model: the stronger comparison.

use super::{DEFAULT_BUDGET, random_baseline, solve};
use crate::cost::dtfm::{Layout, Link, Sizes, Topology, dtfm};
use serde::Serialize;

/// Pipeline stages in every scenario (GPT-3 XL's 24 layers, 3 per stage).
pub const D_PP: usize = 8;
/// Data-parallel width of every scenario (a 0.5 M-token batch in micro-batches of 62.5 K tokens).
pub const D_DP: usize = 8;
/// GPUs in every scenario.
pub const DEVICES: usize = D_PP * D_DP;
/// Random draws in the baseline, as in the reference implementation's `random_scheduler.py`.
pub const RANDOM_SAMPLES: usize = 5_000;

/// One simulated environment.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// 1-based, in the paper's order.
    pub case: u8,
    pub name: &'static str,
    pub topology: Topology,
    pub sizes: Sizes,
    pub d_pp: usize,
    pub d_dp: usize,
}

impl Scenario {
    /// The better of [`stage_per_block`] and [`pipeline_per_block`] under the model.
    pub fn structured(&self) -> Layout {
        let by_stage = stage_per_block(self.d_pp, self.d_dp);
        let by_pipeline = pipeline_per_block(self.d_pp, self.d_dp);
        let cost = |layout: &Layout| dtfm(&self.topology, &self.sizes, layout).total_s;
        if cost(&by_pipeline) < cost(&by_stage) {
            by_pipeline
        } else {
            by_stage
        }
    }
}

/// Stage s = ranks `s·d_dp .. (s+1)·d_dp`, pipeline i = the i-th rank of every stage.
pub fn stage_per_block(d_pp: usize, d_dp: usize) -> Layout {
    Layout {
        stages: (0..d_pp)
            .map(|s| (s * d_dp..(s + 1) * d_dp).collect())
            .collect(),
    }
}

/// Pipeline i = ranks `i·d_pp .. (i+1)·d_pp` in order: `stages[s][i] = i·d_pp + s`.
pub fn pipeline_per_block(d_pp: usize, d_dp: usize) -> Layout {
    Layout {
        stages: (0..d_pp)
            .map(|s| (0..d_dp).map(|i| i * d_pp + s).collect())
            .collect(),
    }
}

/// GPT-3 XL activations per micro-batch boundary and gradients per stage in cases 1–3.
const GPT3_XL: Sizes = Sizes {
    c_pp_gb: 0.28125,
    c_dp_gb: 1.0,
};

fn link(delay_ms: f64, bandwidth_gbps: f64) -> Link {
    Link {
        delay_ms,
        bandwidth_gbps,
    }
}

/// A dense topology where `block[r]` names rank r's block, links inside a block are `inside`,
/// and links between blocks a and b are `across(a, b)`.
fn blocks(block: &[usize], inside: Link, across: impl Fn(usize, usize) -> Link) -> Topology {
    let n = block.len();
    let mut delay = vec![vec![0.0; n]; n];
    let mut bandwidth = vec![vec![1.0; n]; n];
    for i in 0..n {
        for j in (0..n).filter(|&j| j != i) {
            let l = if block[i] == block[j] {
                inside
            } else {
                across(block[i], block[j])
            };
            delay[i][j] = l.delay_ms;
            bandwidth[i][j] = l.bandwidth_gbps;
        }
    }
    // The tables below are fixed and every entry is finite and positive.
    Topology::from_matrices(&delay, &bandwidth).expect("scenario tables are valid")
}

/// Looks up a symmetric region pair in a table of `(a, b, delay_ms, gbps)`.
fn table(pairs: &[(usize, usize, f64, f64)], a: usize, b: usize) -> Link {
    pairs
        .iter()
        .find(|&&(x, y, _, _)| (x, y) == (a, b) || (x, y) == (b, a))
        .map(|&(_, _, d, g)| link(d, g))
        // Every table lists every pair of its regions.
        .expect("region pair in table")
}

/// Case 1, data center on demand: 8 machines of 8 GPUs, 100 Gbps inside a machine, 3.125 Gbps
/// (25 Gb/s shared by 8 GPUs) between machines, no delay.
pub fn datacenter() -> Scenario {
    let block: Vec<usize> = (0..DEVICES).map(|r| r / 8).collect();
    Scenario {
        case: 1,
        name: "data center on demand",
        topology: blocks(&block, link(0.0, 100.0), |_, _| link(0.0, 3.125)),
        sizes: GPT3_XL,
        d_pp: D_PP,
        d_dp: D_DP,
    }
}

/// Case 2, data center spot instances: ranks 0–31 are 8 instances of 4 GPUs (100 Gbps inside),
/// ranks 32–63 single-GPU instances; everything else 1.25 Gbps, no delay.
pub fn spot_instances() -> Scenario {
    let block: Vec<usize> = (0..DEVICES)
        .map(|r| if r < 32 { r / 4 } else { r })
        .collect();
    Scenario {
        case: 2,
        name: "data center spot instances",
        topology: blocks(&block, link(0.0, 100.0), |_, _| link(0.0, 1.25)),
        sizes: GPT3_XL,
        d_pp: D_PP,
        d_dp: D_DP,
    }
}

/// Case 3, multiple data centers: two sites of 32 GPUs (1 ms, 5 Gbps inside), 11 ms and 1.12 Gbps
/// between them.
pub fn multiple_datacenters() -> Scenario {
    let block: Vec<usize> = (0..DEVICES).map(|r| r / 32).collect();
    Scenario {
        case: 3,
        name: "multiple data centers",
        topology: blocks(&block, link(1.0, 5.0), |_, _| link(11.0, 1.12)),
        sizes: GPT3_XL,
        d_pp: D_PP,
        d_dp: D_DP,
    }
}

/// Case 4, regional geo-distributed: 16 GPUs in each of Virginia, Oregon, California and Ohio
/// (5 ms, 2 Gbps inside a region), measured inter-region links; c_pp = 0.4 GB, c_dp = 0.7 GB.
pub fn regional() -> Scenario {
    const VA: usize = 0;
    const OR: usize = 1;
    const CA: usize = 2;
    const OH: usize = 3;
    let pairs = [
        (VA, OR, 67.0, 1.15),
        (VA, CA, 59.0, 1.05),
        (VA, OH, 11.0, 1.12),
        (OR, CA, 12.0, 1.25),
        (OR, OH, 49.0, 1.10),
        (CA, OH, 52.0, 1.02),
    ];
    let block: Vec<usize> = (0..DEVICES).map(|r| r / 16).collect();
    Scenario {
        case: 4,
        name: "regional geo-distributed",
        topology: blocks(&block, link(5.0, 2.0), |a, b| table(&pairs, a, b)),
        sizes: Sizes {
            c_pp_gb: 0.4,
            c_dp_gb: 0.7,
        },
        d_pp: D_PP,
        d_dp: D_DP,
    }
}

/// Case 5, world-wide geo-distributed: 8 GPUs in each of Oregon, Virginia, Ohio, Tokyo, Seoul,
/// London, Frankfurt and Ireland (5 ms, 2 Gbps inside a region), measured inter-region links;
/// c_pp = 0.5 GB, c_dp = 0.9 GB.
pub fn worldwide() -> Scenario {
    const OR: usize = 0;
    const VA: usize = 1;
    const OH: usize = 2;
    const TK: usize = 3;
    const SE: usize = 4;
    const LN: usize = 5;
    const FR: usize = 6;
    const IE: usize = 7;
    let pairs = [
        (OR, VA, 67.0, 0.79),
        (OR, OH, 49.0, 1.10),
        (OR, TK, 96.0, 0.523),
        (OR, SE, 124.0, 0.46),
        (OR, LN, 136.0, 0.42),
        (OR, FR, 143.0, 0.404),
        (OR, IE, 124.0, 0.482),
        (VA, OH, 11.0, 1.12),
        (VA, TK, 143.0, 0.524),
        (VA, SE, 172.0, 0.500),
        (VA, LN, 76.0, 1.16),
        (VA, FR, 90.0, 1.02),
        (VA, IE, 67.0, 1.05),
        (OH, TK, 130.0, 0.694),
        (OH, SE, 159.0, 0.529),
        (OH, LN, 86.0, 1.05),
        (OH, FR, 99.0, 0.799),
        (OH, IE, 77.0, 1.14),
        (TK, SE, 34.0, 1.10),
        (TK, LN, 210.0, 0.366),
        (TK, FR, 223.0, 0.36),
        (TK, IE, 199.0, 0.465),
        (SE, LN, 238.0, 0.342),
        (SE, FR, 235.0, 0.358),
        (SE, IE, 228.0, 0.335),
        (LN, FR, 14.0, 1.14),
        (LN, IE, 12.0, 1.09),
        (FR, IE, 24.0, 1.08),
    ];
    let block: Vec<usize> = (0..DEVICES).map(|r| r / 8).collect();
    Scenario {
        case: 5,
        name: "world-wide geo-distributed",
        topology: blocks(&block, link(5.0, 2.0), |a, b| table(&pairs, a, b)),
        sizes: Sizes {
            c_pp_gb: 0.5,
            c_dp_gb: 0.9,
        },
        d_pp: D_PP,
        d_dp: D_DP,
    }
}

/// All five, in the paper's order.
pub fn all() -> Vec<Scenario> {
    vec![
        datacenter(),
        spot_instances(),
        multiple_datacenters(),
        regional(),
        worldwide(),
    ]
}

/// One row of the benchmark.
#[derive(Debug, Clone, Serialize)]
pub struct DtfmCase {
    pub case: u8,
    pub name: &'static str,
    /// Cost of [`solve`]'s layout (seconds per step).
    pub cost_s: f64,
    /// Mean and best of [`RANDOM_SAMPLES`] random layouts.
    pub random_mean_s: f64,
    pub random_best_s: f64,
    /// Cost of [`Scenario::structured`].
    pub structured_s: f64,
    /// Wall time of [`solve`] as measured by the caller's clock.
    pub solve_ms: f64,
    /// The layout found: `placement[s][i]` is the rank at stage s of pipeline i.
    pub placement: Vec<Vec<usize>>,
}

/// Solves every scenario with [`DEFAULT_BUDGET`] and compares it with the random baseline and the
/// structured layout. The library has no clock: `clock_ms` (any monotonic milliseconds, e.g. from
/// `std::time::Instant`) is read just before and after each [`solve`].
pub fn run_dtfm_benchmark(seed: u64, clock_ms: &dyn Fn() -> f64) -> Vec<DtfmCase> {
    all()
        .into_iter()
        .map(|s| {
            let start = clock_ms();
            // The scenarios are valid 64-device topologies for an 8 × 8 gang.
            let layout = solve(&s.topology, &s.sizes, s.d_pp, s.d_dp, seed, DEFAULT_BUDGET)
                .expect("scenario is solvable");
            let solve_ms = clock_ms() - start;
            let random = random_baseline(
                &s.topology,
                &s.sizes,
                s.d_pp,
                s.d_dp,
                seed ^ u64::from(s.case),
                RANDOM_SAMPLES,
            )
            .expect("scenario is solvable");
            DtfmCase {
                case: s.case,
                name: s.name,
                cost_s: dtfm(&s.topology, &s.sizes, &layout).total_s,
                random_mean_s: random.mean_s,
                random_best_s: random.best_s,
                structured_s: dtfm(&s.topology, &s.sizes, &s.structured()).total_s,
                solve_ms,
                placement: layout.stages,
            }
        })
        .collect()
}
