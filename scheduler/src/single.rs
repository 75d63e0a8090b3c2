//! Single-worker placement: hard filters, then the cheapest score.
//!
//! A node's score is an integer in price units (micro-units per GPU-hour), so its terms trade off
//! in money: the effective price, plus a charge per millisecond of RTT to the job's users, plus a
//! charge for low reputation, plus a small charge per GPU a placement leaves free on the node (which
//! packs small jobs together and keeps whole nodes for gangs). Every term but the price is ≥ 0, so
//! walking a (region, model) list in price order can stop at the first node whose price alone is no
//! better than the best score found: the result is the exact optimum without looking at the rest.

use crate::{
    index::{Entry, Index, Name, NodeKey},
    inputs::{BasePrices, Network},
    model::{Rejection, Request, Unschedulable},
};

/// How the score's terms weigh against the price, all in micro-units per GPU-hour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Weights {
    /// Charge per millisecond of RTT to the job's user region.
    pub latency_per_ms: u64,
    /// Charge for a reputation of zero (scaled linearly; none at a spotless 10,000 bps).
    pub reputation: u64,
    /// Charge per GPU the placement leaves free on the node.
    pub packing_per_free_gpu: u64,
}

impl Default for Weights {
    /// 0.005 per GPU-hour per ms: 100 ms closer to the users is worth 0.50 per GPU-hour, about a
    /// fifth of a data-centre H100's price. Reputation up to 0.50; packing 0.001 per free GPU, a
    /// tie-breaker.
    fn default() -> Self {
        Self {
            latency_per_ms: 5_000,
            reputation: 500_000,
            packing_per_free_gpu: 1_000,
        }
    }
}

/// The chosen node for one worker.
#[derive(Clone, Debug, PartialEq)]
pub struct Choice {
    pub node: NodeKey,
    pub gpus: Vec<String>,
    /// Effective price per GPU-hour (max of the node's ask and the class's base price).
    pub price_micros: u64,
    /// Estimated RTT to the user region, when the job has one the network knows.
    pub latency_ms: Option<f64>,
    pub score: u64,
}

/// Places one worker of `request` (its `gpus_per_worker` GPUs on one node, of one model).
pub fn place_single(
    index: &Index,
    network: &impl Network,
    prices: &impl BasePrices,
    request: &Request,
    weights: &Weights,
) -> Result<Choice, Unschedulable> {
    let regions = wanted(
        request.regions.iter().map(|r| index.region_id(r)),
        index.region_ids(),
        !request.regions.is_empty(),
    );
    let models = wanted(
        request.models.iter().map(|m| index.model_id(m)),
        index.model_ids(),
        !request.models.is_empty(),
    );
    let mut best: Option<Choice> = None;
    for &model in &models {
        let base = prices.base_price_micros(index.model_name(model));
        for &region in &regions {
            for (ask, key) in index.candidates(region, model) {
                let price = ask.max(base);
                if price > request.max_price_micros
                    || best.as_ref().is_some_and(|b| price >= b.score)
                {
                    break;
                }
                let Some(entry) = index.entry(key) else {
                    continue;
                };
                if node_filter(entry, request).is_err() {
                    continue;
                }
                let Some(choice) = evaluate(key, entry, model, price, network, request, weights)
                else {
                    continue;
                };
                if best
                    .as_ref()
                    .is_none_or(|b| (choice.score, choice.node) < (b.score, b.node))
                {
                    best = Some(choice);
                }
            }
        }
    }
    best.ok_or_else(|| explain(index, network, prices, request))
}

/// The ids a request names, or every id when it names none. Unknown names match nothing.
fn wanted(
    named: impl Iterator<Item = Option<Name>>,
    all: impl Iterator<Item = Name>,
    restricted: bool,
) -> Vec<Name> {
    if restricted {
        named.flatten().collect()
    } else {
        all.collect()
    }
}

/// The GPU- and latency-level checks for one node and model, and the score if it passes.
fn evaluate(
    key: NodeKey,
    entry: &Entry,
    model: Name,
    price: u64,
    network: &impl Network,
    request: &Request,
    weights: &Weights,
) -> Option<Choice> {
    let per_worker = request.gpus_per_worker.max(1) as usize;
    let gpus: Vec<String> = entry
        .free_indices(model)
        .map(|i| &entry.node.gpus[i])
        .filter(|g| g.memory_gib >= request.min_memory_gib)
        .filter(|g| {
            request
                .min_compute_capability
                .is_none_or(|min| g.compute_capability >= min)
        })
        .take(per_worker)
        .map(|g| g.uuid.clone())
        .collect();
    if gpus.len() < per_worker {
        return None;
    }
    let latency_ms = request
        .user_region
        .as_deref()
        .and_then(|r| network.rtt_to_region_ms(key, r));
    if let Some(max) = request.max_latency_ms
        && latency_ms.is_none_or(|l| l > f64::from(max))
    {
        return None;
    }
    let latency_charge =
        latency_ms.map_or(0, |l| (l.max(0.0) * weights.latency_per_ms as f64) as u64);
    let reputation_charge = weights.reputation
        * u64::from(10_000u16.saturating_sub(entry.node.reputation_bps))
        / 10_000;
    let left_free = entry.free_total().saturating_sub(per_worker) as u64;
    let score = price
        .saturating_add(latency_charge)
        .saturating_add(reputation_charge)
        .saturating_add(left_free * weights.packing_per_free_gpu);
    Some(Choice {
        node: key,
        gpus,
        price_micros: price,
        latency_ms,
        score,
    })
}

/// Node-level filters that do not depend on the GPU model, in the order rejections are reported.
fn node_filter(entry: &Entry, request: &Request) -> Result<(), Rejection> {
    let node = &entry.node;
    if !node.ready {
        return Err(Rejection::NotReady);
    }
    if node.jailed {
        return Err(Rejection::Jailed);
    }
    if node.stake_micros < request.min_stake_micros {
        return Err(Rejection::InsufficientStake);
    }
    if request.excluded_nodes.contains(&node.name) {
        return Err(Rejection::FailedBefore);
    }
    if !node.capabilities.contains(&request.capability) {
        return Err(Rejection::Incapable);
    }
    if !request.regions.is_empty() && !request.regions.contains(&node.region) {
        return Err(Rejection::WrongRegion);
    }
    Ok(())
}

/// Why nothing fits: every node's first failing filter, counted by reason. Only failed decisions
/// pay for this full scan.
pub fn explain(
    index: &Index,
    network: &impl Network,
    prices: &impl BasePrices,
    request: &Request,
) -> Unschedulable {
    let mut why = Unschedulable {
        nodes: index.len() as u32,
        workers: request.workers,
        capability: request.capability.clone(),
        ..Unschedulable::default()
    };
    let per_worker = request.gpus_per_worker.max(1) as usize;
    for (key, entry) in index.iter() {
        let reason = node_filter(entry, request).err().or_else(|| {
            let node = &entry.node;
            let matching: Vec<(usize, bool)> = node
                .gpus
                .iter()
                .enumerate()
                .filter(|(_, g)| g.healthy)
                .filter(|(_, g)| request.models.is_empty() || request.models.contains(&g.model))
                .filter(|(_, g)| g.memory_gib >= request.min_memory_gib)
                .filter(|(_, g)| {
                    request
                        .min_compute_capability
                        .is_none_or(|min| g.compute_capability >= min)
                })
                .map(|(i, g)| (i, g.allocated))
                .collect();
            if matching.len() < per_worker {
                return Some(Rejection::NoMatchingGpu);
            }
            let cheapest = matching
                .iter()
                .map(|(i, _)| {
                    node.price_micros
                        .max(prices.base_price_micros(&node.gpus[*i].model))
                })
                .min()
                .unwrap_or(u64::MAX);
            if cheapest > request.max_price_micros {
                return Some(Rejection::TooExpensive);
            }
            if matching.iter().filter(|(_, allocated)| !allocated).count() < per_worker {
                return Some(Rejection::TooFewFreeGpus);
            }
            if let Some(max) = request.max_latency_ms {
                let latency = request
                    .user_region
                    .as_deref()
                    .and_then(|r| network.rtt_to_region_ms(key, r));
                if latency.is_none_or(|l| l > f64::from(max)) {
                    return Some(Rejection::TooFar);
                }
            }
            None
        });
        if let Some(reason) = reason {
            *why.rejections.entry(reason).or_default() += 1;
        } else {
            // Feasible per node but GPUs of one model do not suffice for one worker.
            *why.rejections.entry(Rejection::NoMatchingGpu).or_default() += 1;
        }
    }
    why
}
