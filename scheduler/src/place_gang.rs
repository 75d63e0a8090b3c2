//! Gang placement (several workers, all or nothing) under the DT-FM communication cost model.
//!
//! 1. **Shortlist.** Worker-sized slots (`gpus_per_worker` free GPUs of one model on one node; a
//!    node with room for k workers gives k slots) that pass every filter, the cheapest
//!    [`SLOTS_PER_REGION`]·W of each region — so price is bounded before communication is optimized,
//!    and the solver sees every region that could host the gang.
//! 2. **Topology.** Between two slots on one node: the node's interconnect ([`SAME_NODE`]);
//!    otherwise half the estimated RTT as one-way delay and the estimated bandwidth. Links that
//!    break the job's `maxLatencyMs` / `minBandwidthMbps` are made prohibitively slow, so the solver
//!    avoids them; what it still picks is checked afterwards and refused if it breaks a bound.
//! 3. **Solve.** [`crate::gang::solve`] picks W of the shortlisted slots and arranges them into
//!    `pipeline_stages` stages of W / stages data-parallel workers, minimizing the estimated time
//!    per training step (Yuan et al., NeurIPS 2022).
//!
//! Worker rank r runs pipeline stage r / D_DP of data-parallel replica r % D_DP.

use crate::{
    cost::dtfm::{Link, Sizes, Topology},
    gang,
    index::{Index, Name, NodeKey},
    inputs::{BasePrices, Network},
    model::{Request, Unschedulable},
    place::Slot,
    single::{explain, fitting, node_filter, wanted_models, wanted_regions},
};

/// Shortlisted slots per region, as a multiple of the gang's size.
pub const SLOTS_PER_REGION: usize = 2;

/// Upper bound on the shortlist, to keep the solver's O(n² log n) set-up within a few milliseconds.
pub const MAX_SHORTLIST: usize = 384;

/// The link between two workers on one node (PCIe/NVLink inside a server).
pub const SAME_NODE: Link = Link {
    delay_ms: 0.005,
    bandwidth_gbps: 200.0,
};

/// What an unmeasured pair is assumed to be: slow enough that the solver prefers measured links.
const UNKNOWN: Link = Link {
    delay_ms: 100.0,
    bandwidth_gbps: 0.1,
};

/// A link that breaks the job's bounds: avoided by the solver unless nothing else fits.
const FORBIDDEN: Link = Link {
    delay_ms: 100_000.0,
    bandwidth_gbps: 0.000_1,
};

/// Communication volumes assumed when a job does not say (a ~1B-parameter model in fp16).
pub const DEFAULT_SIZES: Sizes = Sizes {
    c_pp_gb: 0.25,
    c_dp_gb: 2.0,
};

/// One shortlisted slot.
#[derive(Clone, Copy, Debug)]
struct Candidate {
    node: NodeKey,
    model: Name,
    price: u64,
}

/// Places a gang; see the module documentation. Marks the chosen GPUs allocated in `index`.
pub fn place_gang(
    index: &mut Index,
    network: &impl Network,
    prices: &impl BasePrices,
    request: &Request,
    seed: u64,
    budget: usize,
) -> Result<Vec<Slot>, Unschedulable> {
    let workers = request.workers.max(1) as usize;
    let stages = (request.pipeline_stages.max(1) as usize).min(workers);
    let (d_pp, d_dp) = if workers.is_multiple_of(stages) {
        (stages, workers / stages)
    } else {
        (1, workers)
    };
    let shortlist = shortlist(index, prices, request, workers);
    if shortlist.len() < workers {
        let mut why = explain(index, network, prices, request);
        why.workers_that_fit = shortlist.len() as u32;
        return Err(why);
    }
    let topology = topology(&shortlist, network, request);
    let sizes = request.sizes.unwrap_or(DEFAULT_SIZES);
    let layout = gang::solve(&topology, &sizes, d_pp, d_dp, seed, budget)
        .map_err(|_| explain(index, network, prices, request))?;
    let chosen: Vec<usize> = layout.stages.iter().flatten().copied().collect();
    if violates_bounds(&chosen, &shortlist, network, request) {
        // Enough nodes fit on their own; only the links between them fail the job's bounds.
        return Err(Unschedulable {
            nodes: index.len() as u32,
            workers: request.workers,
            workers_that_fit: shortlist.len() as u32,
            capability: request.capability.clone(),
            unmet_link_bounds: Some(link_bounds(request)),
            ..Unschedulable::default()
        });
    }
    let mut slots = Vec::with_capacity(workers);
    for (rank, &device) in chosen.iter().enumerate() {
        let candidate = shortlist[device];
        let Some(entry) = index.entry(candidate.node) else {
            continue;
        };
        let gpus: Vec<String> = fitting(entry, candidate.model, request)
            .take(request.gpus_per_worker.max(1) as usize)
            .map(|i| entry.node.gpus[i].uuid.clone())
            .collect();
        index.set_allocated(candidate.node, &gpus, true);
        slots.push(Slot {
            rank: rank as u32,
            node: candidate.node,
            gpus,
            price_micros: candidate.price,
        });
    }
    Ok(slots)
}

/// The cheapest feasible slots of every wanted region and model.
fn shortlist(
    index: &Index,
    prices: &impl BasePrices,
    request: &Request,
    workers: usize,
) -> Vec<Candidate> {
    let per_worker = request.gpus_per_worker.max(1) as usize;
    let per_region = (SLOTS_PER_REGION * workers).max(workers);
    let regions = wanted_regions(index, request);
    let models = wanted_models(index, request);
    let mut all = Vec::new();
    for &region in &regions {
        let mut found: Vec<Candidate> = Vec::new();
        for &model in &models {
            let base = prices.base_price_micros(index.model_name(model));
            let mut taken = 0;
            for (ask, key) in index.candidates(region, model) {
                let price = ask.max(base);
                if price > request.max_price_micros || taken >= per_region {
                    break;
                }
                let Some(entry) = index.entry(key) else {
                    continue;
                };
                if node_filter(entry, request).is_err() {
                    continue;
                }
                let room = fitting(entry, model, request).count() / per_worker;
                for _ in 0..room.min(per_region - taken) {
                    found.push(Candidate {
                        node: key,
                        model,
                        price,
                    });
                    taken += 1;
                }
            }
        }
        found.sort_by_key(|c| (c.price, c.node));
        found.truncate(per_region);
        all.extend(found);
    }
    all.sort_by_key(|c| (c.price, c.node));
    all.truncate(MAX_SHORTLIST.max(workers));
    all
}

fn topology(shortlist: &[Candidate], network: &impl Network, request: &Request) -> Topology {
    let n = shortlist.len();
    let mut delay = vec![vec![0.0; n]; n];
    let mut bandwidth = vec![vec![SAME_NODE.bandwidth_gbps; n]; n];
    for (i, a) in shortlist.iter().enumerate() {
        for (j, b) in shortlist.iter().enumerate() {
            let link = if i == j || a.node == b.node {
                SAME_NODE
            } else {
                link(a.node, b.node, network, request)
            };
            delay[i][j] = link.delay_ms;
            bandwidth[i][j] = link.bandwidth_gbps;
        }
    }
    // Every link built above is finite and positive.
    Topology::from_matrices(&delay, &bandwidth)
        .unwrap_or_else(|_| Topology::from_fn(n, |_, _| UNKNOWN))
}

fn link(a: NodeKey, b: NodeKey, network: &impl Network, request: &Request) -> Link {
    let rtt = network.rtt_ms(a, b);
    let mbps = network.bandwidth_mbps(a, b);
    let known_rtt = rtt.is_finite() && rtt >= 0.0;
    let known_bw = mbps.is_finite() && mbps > 0.0;
    if (known_rtt
        && request
            .max_latency_ms
            .is_some_and(|max| rtt > f64::from(max)))
        || (known_bw
            && request
                .min_bandwidth_mbps
                .is_some_and(|min| mbps < f64::from(min)))
    {
        return FORBIDDEN;
    }
    Link {
        delay_ms: if known_rtt {
            rtt / 2.0
        } else {
            UNKNOWN.delay_ms
        },
        bandwidth_gbps: if known_bw {
            mbps / 1000.0
        } else {
            UNKNOWN.bandwidth_gbps
        },
    }
}

/// Whether two chosen workers on different nodes break the job's latency or bandwidth bound (an
/// unknown pair breaks a bound it is subject to: it cannot be shown to meet it).
fn violates_bounds(
    chosen: &[usize],
    shortlist: &[Candidate],
    network: &impl Network,
    request: &Request,
) -> bool {
    if request.max_latency_ms.is_none() && request.min_bandwidth_mbps.is_none() {
        return false;
    }
    chosen.iter().enumerate().any(|(x, &i)| {
        chosen[x + 1..].iter().any(|&j| {
            let (a, b) = (shortlist[i].node, shortlist[j].node);
            if a == b {
                return false;
            }
            let rtt = network.rtt_ms(a, b);
            let mbps = network
                .bandwidth_mbps(a, b)
                .min(network.bandwidth_mbps(b, a));
            request
                .max_latency_ms
                .is_some_and(|max| !at_most(rtt, f64::from(max)))
                || request
                    .min_bandwidth_mbps
                    .is_some_and(|min| !at_most(f64::from(min), mbps))
        })
    })
}

/// The request's bounds on the links between its workers, as the spec names them.
fn link_bounds(request: &Request) -> String {
    let latency = request
        .max_latency_ms
        .map(|ms| format!("maxLatencyMs {ms}"));
    let bandwidth = request
        .min_bandwidth_mbps
        .map(|mbps| format!("minBandwidthMbps {mbps}"));
    [latency, bandwidth]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" and ")
}

/// `value ≤ bound`, false when either is NaN (an unknown estimate cannot be shown to meet a bound).
fn at_most(value: f64, bound: f64) -> bool {
    value <= bound
}
