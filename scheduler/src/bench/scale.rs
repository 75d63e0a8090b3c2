//! The scale scenario: 10,000 residential GPU nodes over the eight regions of DT-FM's case 5
//! (`network::synthetic`), a mix of GPU models and prices, and a stream of single-GPU inference
//! jobs from users in every region. Our placement (network model fitted from ≤ 32 RTT probes per
//! node) runs beside a network-oblivious filter-and-score baseline (resource fit, price and packing —
//! what kube-scheduler's scoring amounts to) and random placement, each on its own copy of the
//! fleet. User latency is scored against the *true* RTT of the synthetic world, not the estimate.

use serde::Serialize;

use super::{Clock, quantile};
use crate::{
    AskOnly, GpuView, Index, LatencyTable, NodeView, Request, Unmeasured, Weights,
    network::{
        NetworkModel,
        synthetic::{REGION_RTT_MS, REGIONS, SplitMix64, World},
    },
    place_single,
};

/// One GPU model of the fleet.
struct Model {
    name: &'static str,
    memory_gib: u32,
    compute_capability: (u32, u32),
    /// Share of the fleet's nodes, in percent.
    share: u64,
    /// Range of asks per GPU-hour, in micro-units: what public GPU marketplaces list for the model.
    asks: (u64, u64),
}

const MODELS: [Model; 4] = [
    Model {
        name: "H100-80GB",
        memory_gib: 80,
        compute_capability: (9, 0),
        share: 30,
        asks: (1_800_000, 3_000_000),
    },
    Model {
        name: "A100-80GB",
        memory_gib: 80,
        compute_capability: (8, 0),
        share: 25,
        asks: (1_100_000, 1_900_000),
    },
    Model {
        name: "L40S-48GB",
        memory_gib: 48,
        compute_capability: (8, 9),
        share: 15,
        asks: (700_000, 1_200_000),
    },
    Model {
        name: "RTX4090-24GB",
        memory_gib: 24,
        compute_capability: (8, 9),
        share: 30,
        asks: (250_000, 600_000),
    },
];

/// RTT probes per node before the run (the bound for the fitted model).
const PROBES_PER_NODE: u32 = 32;

/// What the scenario measured, for our scheduler and beside each baseline.
#[derive(Clone, Debug, Serialize)]
pub struct SingleReport {
    pub nodes: usize,
    pub gpus: usize,
    pub jobs: usize,
    pub placements_per_s: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub mean_user_latency_ms: f64,
    pub mean_price: f64,
    pub placed: usize,
    pub baselines: Vec<Baseline>,
}

/// One baseline's figures on the same jobs and fleet.
#[derive(Clone, Debug, Serialize)]
pub struct Baseline {
    pub name: &'static str,
    pub placements_per_s: f64,
    pub mean_user_latency_ms: f64,
    pub mean_price: f64,
    pub placed: usize,
}

/// A job of the stream: where its users are and what it needs.
struct Job {
    user_region: usize,
    request: Request,
}

/// The fleet and its fitted network.
pub struct Scenario {
    pub world: World,
    pub fleet: Vec<NodeView>,
    pub network: NetworkModel,
}

impl Scenario {
    /// Builds the world, the fleet and a network model fitted from the fleet's probes.
    pub fn generate(nodes: usize, seed: u64) -> Self {
        let world = World::generate(nodes, seed);
        let mut rng = SplitMix64::new(seed ^ 0xF1EE7);
        let fleet = (0..nodes).map(|i| node(i, &world, &mut rng)).collect();
        let mut network = NetworkModel::new(seed);
        world.populate(&mut network);
        world.probe(&mut network, PROBES_PER_NODE, seed ^ 0x9E0);
        network.refit(crate::network::REFIT_PASSES);
        Self {
            world,
            fleet,
            network,
        }
    }

    /// True RTT from a node to users in `region`: the region pair's RTT plus the node's last mile.
    pub fn user_latency_ms(&self, node: usize, region: usize) -> f64 {
        let n = &self.world.nodes[node];
        REGION_RTT_MS[n.region][region] + n.last_mile_ms
    }
}

fn node(i: usize, world: &World, rng: &mut SplitMix64) -> NodeView {
    let roll = rng.below(100);
    let mut share = 0;
    let model = MODELS
        .iter()
        .find(|m| {
            share += m.share;
            roll < share
        })
        .unwrap_or(&MODELS[0]);
    let count = 1 + rng.below(8) as usize;
    let name = format!("gn-{i:05}");
    NodeView {
        gpus: (0..count)
            .map(|g| GpuView {
                uuid: format!("{name}-{g}"),
                model: model.name.to_string(),
                memory_gib: model.memory_gib,
                compute_capability: model.compute_capability,
                healthy: true,
                allocated: false,
            })
            .collect(),
        name,
        region: REGIONS[world.nodes[i].region].to_string(),
        price_micros: model.asks.0 + rng.below(model.asks.1 - model.asks.0 + 1),
        ready: true,
        capabilities: vec!["container".into()],
        stake_micros: 1_000_000_000,
        reputation_bps: 9_000 + rng.below(1_001) as u16,
        jailed: false,
    }
}

fn jobs(count: usize, seed: u64) -> Vec<Job> {
    let mut rng = SplitMix64::new(seed ^ 0x10B5);
    (0..count)
        .map(|_| {
            let user_region = rng.below(REGIONS.len() as u64) as usize;
            // Half the jobs want a particular class; the rest run on anything with ≥ 24 GiB.
            let models = match rng.below(4) {
                0 => vec!["H100-80GB".to_string()],
                1 => vec!["A100-80GB".to_string(), "H100-80GB".to_string()],
                _ => Vec::new(),
            };
            Job {
                user_region,
                request: Request {
                    workers: 1,
                    gpus_per_worker: 1,
                    models,
                    min_memory_gib: 24,
                    max_price_micros: 5_000_000,
                    capability: "container".into(),
                    user_region: Some(REGIONS[user_region].to_string()),
                    ..Request::default()
                },
            }
        })
        .collect()
}

/// Runs the single-GPU stream: `jobs` placements, ours then each baseline on fresh copies of the
/// scenario's fleet.
pub fn single(scenario: &Scenario, jobs_count: usize, seed: u64, clock: Clock<'_>) -> SingleReport {
    let nodes = scenario.fleet.len();
    let jobs = jobs(jobs_count, seed);
    let gpus = scenario.fleet.iter().map(|n| n.gpus.len()).sum();
    let weights = Weights::default();

    // Ours: the fitted network model.
    let mut index = Index::new();
    index.reset(scenario.fleet.iter().cloned());
    let mut times = Vec::with_capacity(jobs.len());
    let mut tally = Tally::default();
    let started = clock();
    // The hub tabulates latencies once per scheduling cycle; here, once for the run (the network
    // does not change during it). Its cost is in the throughput figure.
    let latencies = LatencyTable::build(&index, &scenario.network);
    for job in &jobs {
        let t0 = clock();
        let result = place_single(&index, &latencies, &AskOnly, &job.request, &weights);
        times.push(clock().saturating_sub(t0));
        if let Ok(choice) = result {
            index.set_allocated(choice.node, &choice.gpus, true);
            tally.add(
                scenario.user_latency_ms(choice.node as usize, job.user_region),
                choice.price_micros,
            );
        }
    }
    let elapsed = clock().saturating_sub(started).max(1);
    times.sort_unstable();

    let oblivious = baseline(
        "network-oblivious filter and score",
        scenario,
        &jobs,
        clock,
        |index, job| {
            place_single(index, &Unmeasured, &AskOnly, &job.request, &weights)
                .ok()
                .map(|c| (c.node, c.gpus, c.price_micros))
        },
    );
    let mut rng = SplitMix64::new(seed ^ 0x5A4D);
    let random = baseline(
        "random feasible node",
        scenario,
        &jobs,
        clock,
        |index, job| random_choice(index, job, &mut rng),
    );

    SingleReport {
        nodes,
        gpus,
        jobs: jobs.len(),
        placements_per_s: jobs.len() as f64 * 1e9 / elapsed as f64,
        p50_us: quantile(&times, 0.5) as f64 / 1e3,
        p99_us: quantile(&times, 0.99) as f64 / 1e3,
        mean_user_latency_ms: tally.mean_latency(),
        mean_price: tally.mean_price(),
        placed: tally.placed,
        baselines: vec![oblivious, random],
    }
}

#[derive(Default)]
struct Tally {
    placed: usize,
    latency_ms: f64,
    price_micros: u128,
}

impl Tally {
    fn add(&mut self, latency_ms: f64, price_micros: u64) {
        self.placed += 1;
        self.latency_ms += latency_ms;
        self.price_micros += u128::from(price_micros);
    }

    fn mean_latency(&self) -> f64 {
        if self.placed == 0 {
            0.0
        } else {
            self.latency_ms / self.placed as f64
        }
    }

    /// Mean price per GPU-hour in display units (for the report only; placements use integers).
    fn mean_price(&self) -> f64 {
        if self.placed == 0 {
            0.0
        } else {
            self.price_micros as f64 / self.placed as f64 / 1e6
        }
    }
}

fn baseline(
    name: &'static str,
    scenario: &Scenario,
    jobs: &[Job],
    clock: Clock<'_>,
    mut choose: impl FnMut(&Index, &Job) -> Option<(u32, Vec<String>, u64)>,
) -> Baseline {
    let mut index = Index::new();
    index.reset(scenario.fleet.iter().cloned());
    let mut tally = Tally::default();
    let started = clock();
    for job in jobs {
        if let Some((node, gpus, price)) = choose(&index, job) {
            index.set_allocated(node, &gpus, true);
            tally.add(
                scenario.user_latency_ms(node as usize, job.user_region),
                price,
            );
        }
    }
    let elapsed = clock().saturating_sub(started).max(1);
    Baseline {
        name,
        placements_per_s: jobs.len() as f64 * 1e9 / elapsed as f64,
        mean_user_latency_ms: tally.mean_latency(),
        mean_price: tally.mean_price(),
        placed: tally.placed,
    }
}

/// A uniformly random node among those that fit (a full scan: this baseline is about placement
/// quality, not speed).
fn random_choice(
    index: &Index,
    job: &Job,
    rng: &mut SplitMix64,
) -> Option<(u32, Vec<String>, u64)> {
    let request = &job.request;
    let fits: Vec<(u32, String)> = index
        .iter()
        .filter(|(_, e)| e.node.price_micros <= request.max_price_micros)
        .filter_map(|(key, e)| {
            e.node
                .gpus
                .iter()
                .find(|g| {
                    g.healthy
                        && !g.allocated
                        && g.memory_gib >= request.min_memory_gib
                        && (request.models.is_empty() || request.models.contains(&g.model))
                })
                .map(|g| (key, g.uuid.clone()))
        })
        .collect();
    if fits.is_empty() {
        return None;
    }
    let (key, gpu) = fits[rng.below(fits.len() as u64) as usize].clone();
    let price = index.entry(key)?.node.price_micros;
    Some((key, vec![gpu], price))
}

/// The gang part of the scenario: `decisions` 64-GPU training gangs (16 workers × 4 GPUs, 4
/// pipeline stages of 4 data-parallel workers) placed one after another on the same fleet.
#[derive(Clone, Debug, Serialize)]
pub struct GangReport {
    pub nodes: usize,
    pub gpus: u32,
    pub workers: u32,
    pub decisions: usize,
    pub placed: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Mean DT-FM communication time per training step of our placements, on the true network.
    pub mean_step_s: f64,
    /// The same for the cheapest slots placed without network knowledge.
    pub oblivious_mean_step_s: f64,
}

/// Workers, GPUs per worker and pipeline stages of the benchmark's gang.
const GANG: (u32, u32, u32) = (16, 4, 4);

/// Places `decisions` gangs with our scheduler (timed) and, on a fresh copy, without network
/// knowledge; prices both by the DT-FM model over the world's true latencies and bandwidths.
pub fn gang(scenario: &Scenario, decisions: usize, clock: Clock<'_>) -> GangReport {
    let (workers, per_worker, stages) = GANG;
    let request = Request {
        workers,
        gpus_per_worker: per_worker,
        max_price_micros: 5_000_000,
        capability: "container".into(),
        pipeline_stages: stages,
        ..Request::default()
    };
    let mut ours = Index::new();
    ours.reset(scenario.fleet.iter().cloned());
    let mut times = Vec::with_capacity(decisions);
    let mut steps = Vec::new();
    for _ in 0..decisions {
        let t0 = clock();
        let placed = crate::place(
            &mut ours,
            &scenario.network,
            &AskOnly,
            &request,
            &Weights::default(),
        );
        times.push(clock().saturating_sub(t0));
        if let Ok(slots) = placed {
            steps.push(step_time(scenario, &slots, stages));
        }
    }
    let mut blind = Index::new();
    blind.reset(scenario.fleet.iter().cloned());
    let mut blind_steps = Vec::new();
    for _ in 0..decisions {
        if let Ok(slots) = crate::place(
            &mut blind,
            &Unmeasured,
            &AskOnly,
            &request,
            &Weights::default(),
        ) {
            blind_steps.push(step_time(scenario, &slots, stages));
        }
    }
    times.sort_unstable();
    let mean = |v: &[f64]| {
        if v.is_empty() {
            0.0
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    GangReport {
        nodes: scenario.fleet.len(),
        gpus: workers * per_worker,
        workers,
        decisions,
        placed: steps.len(),
        p50_ms: quantile(&times, 0.5) as f64 / 1e6,
        p99_ms: quantile(&times, 0.99) as f64 / 1e6,
        mean_step_s: mean(&steps),
        oblivious_mean_step_s: mean(&blind_steps),
    }
}

/// DT-FM time per step of a placed gang on the world's true network (rank r is stage r / D_DP).
fn step_time(scenario: &Scenario, slots: &[crate::Slot], stages: u32) -> f64 {
    use crate::cost::dtfm::{Layout, Link, Topology, dtfm};
    let stages = stages.max(1) as usize;
    let d_dp = slots.len() / stages;
    let nodes: Vec<usize> = slots.iter().map(|s| s.node as usize).collect();
    let n = nodes.len();
    let mut delay = vec![vec![0.0; n]; n];
    let mut bandwidth = vec![vec![crate::place_gang::SAME_NODE.bandwidth_gbps; n]; n];
    for i in 0..n {
        for j in 0..n {
            let link = if nodes[i] == nodes[j] {
                crate::place_gang::SAME_NODE
            } else {
                Link {
                    delay_ms: scenario.world.true_rtt(nodes[i], nodes[j]) / 2.0,
                    bandwidth_gbps: scenario.world.true_bandwidth(nodes[i], nodes[j]) / 1000.0,
                }
            };
            delay[i][j] = link.delay_ms;
            bandwidth[i][j] = link.bandwidth_gbps;
        }
    }
    let Ok(topology) = Topology::from_matrices(&delay, &bandwidth) else {
        return f64::NAN;
    };
    let layout = Layout {
        stages: (0..stages)
            .map(|s| (s * d_dp..(s + 1) * d_dp).collect())
            .collect(),
    };
    dtfm(&topology, &crate::place_gang::DEFAULT_SIZES, &layout).total_s
}
