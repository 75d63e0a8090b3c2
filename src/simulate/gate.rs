//! A cheap necessary condition for a job to fit, checked before the scheduler is asked.
//!
//! The hub asks the scheduler about every waiting job each cycle, and a decision that fails pays
//! for a scan of the whole fleet to explain why (`scheduler::single::explain`): fine for a hub
//! whose queue is short, too slow for a simulation that retries a long queue a hundred thousand
//! times. So, like the scheduler's own index, the gate keeps per (region, GPU model) the asks of
//! the nodes by how many GPUs of that model they have free, split by bandwidth tier. A job passes
//! when, among the regions and models it accepts (within its latency bound's region floor, its
//! price cap over the model's base price, its memory minimum), there are enough worker-sized
//! slots on nodes asking at most its cap: one for a single worker; for a gang, `workers` slots on
//! nodes fast enough for `minBandwidthMbps`, or all of them on one node. Every test is implied by a scheduler filter, so a job the gate refuses would have
//! been refused by the scheduler too: the gate changes how long a run takes, never its outcome.

use std::collections::BTreeMap;

use scheduler::{Index, Network, NodeKey, Request, index::Name, pricing::PriceBook};

use super::fleet::SimNetwork;

/// Bandwidth tiers (Mbps) of the counts: a node is counted in every tier up to the smaller of its
/// uplink and downlink.
const TIERS: [f64; 4] = [0.0, 100.0, 1_000.0, 10_000.0];

#[derive(Clone, Debug)]
struct NodeState {
    region: Name,
    tier: usize,
    ask: u64,
    held: Vec<(Name, usize)>,
}

pub struct Gate {
    regions: usize,
    models: usize,
    /// Largest GPU count of a node, plus one: the width of a count row.
    width: usize,
    /// `asks[((region · models + model) · TIERS + tier) · width + free]`: ask → number of nodes
    /// asking it with `free` free GPUs of `model`, whose bandwidth reaches the tier.
    asks: Vec<BTreeMap<u64, u32>>,
    /// Largest memory of a GPU of each model.
    memory: Vec<u32>,
    /// Per node key: its region, tier, ask and (model, free GPUs) for each model it has.
    nodes: Vec<Option<NodeState>>,
}

impl Gate {
    pub fn new(index: &Index, network: &SimNetwork) -> Self {
        let regions = index.region_ids().count();
        let models = index.model_ids().count();
        let width = index
            .iter()
            .map(|(_, e)| e.node.gpus.len())
            .max()
            .unwrap_or(0)
            + 1;
        let mut gate = Self {
            regions,
            models,
            width,
            asks: vec![BTreeMap::new(); regions * models * TIERS.len() * width],
            memory: vec![0; models],
            nodes: Vec::new(),
        };
        for (key, entry) in index.iter() {
            let bandwidth = network
                .link(key)
                .map_or(0.0, |l| l.uplink_mbps.min(l.downlink_mbps));
            let tier = TIERS.iter().rposition(|t| bandwidth >= *t).unwrap_or(0);
            let mut held: Vec<(Name, usize)> = Vec::new();
            for (model, gpu) in entry.models.iter().zip(&entry.node.gpus) {
                let m = *model as usize;
                gate.memory[m] = gate.memory[m].max(gpu.memory_gib);
                if !held.iter().any(|(h, _)| h == model) {
                    held.push((*model, entry.free_of(*model)));
                }
            }
            let ask = entry.node.price_micros;
            for &(model, free) in &held {
                gate.count(entry.region, model, tier, ask, free, true);
            }
            let slot = key as usize;
            if slot >= gate.nodes.len() {
                gate.nodes.resize(slot + 1, None);
            }
            gate.nodes[slot] = Some(NodeState {
                region: entry.region,
                tier,
                ask,
                held,
            });
        }
        gate
    }

    /// Adds (or removes) a node asking `ask` with `free` free GPUs of `model`.
    fn count(&mut self, region: Name, model: Name, tier: usize, ask: u64, free: usize, add: bool) {
        for t in 0..=tier {
            let i = self.cell(region as usize, model as usize, t) + free.min(self.width - 1);
            let asks = &mut self.asks[i];
            if add {
                *asks.entry(ask).or_default() += 1;
            } else if let Some(n) = asks.get_mut(&ask) {
                *n -= 1;
                if *n == 0 {
                    asks.remove(&ask);
                }
            }
        }
    }

    fn cell(&self, region: usize, model: usize, tier: usize) -> usize {
        ((region * self.models + model) * TIERS.len() + tier) * self.width
    }

    /// Reads a node's free GPUs again after the scheduler allocated or released some, or the node
    /// failed or came back (a node that is not ready offers nothing).
    pub fn refresh(&mut self, index: &Index, key: NodeKey) {
        let (Some(entry), Some(Some(mut state))) =
            (index.entry(key), self.nodes.get(key as usize).cloned())
        else {
            return;
        };
        for (model, free) in &mut state.held {
            let fresh = if entry.node.ready {
                entry.free_of(*model)
            } else {
                0
            };
            if fresh != *free {
                self.count(state.region, *model, state.tier, state.ask, *free, false);
                self.count(state.region, *model, state.tier, state.ask, fresh, true);
                *free = fresh;
            }
        }
        self.nodes[key as usize] = Some(state);
    }

    /// Whether `request` may fit now (see the module documentation); `false` means it cannot.
    pub fn admits(
        &self,
        index: &Index,
        network: &SimNetwork,
        book: &PriceBook,
        request: &Request,
    ) -> bool {
        let per = request.gpus_per_worker.max(1) as usize;
        let workers = request.workers.max(1) as usize;
        let tier = match (workers, request.min_bandwidth_mbps) {
            (1, _) | (_, None) => 0,
            (_, Some(min)) => TIERS
                .iter()
                .rposition(|t| f64::from(min) >= *t)
                .unwrap_or(0),
        };
        let regions = scheduler::single::wanted_regions(index, request);
        let models = scheduler::single::wanted_models(index, request);
        let (mut slots, mut largest) = (0usize, 0usize);
        for &region in &regions {
            if workers == 1
                && let (Some(max), Some(user)) = (request.max_latency_ms, &request.user_region)
                && network.region_floor_ms(index.region_name(region), user) > f64::from(max)
            {
                continue;
            }
            for &model in &models {
                let (r, m) = (region as usize, model as usize);
                let cap = request.max_price_micros;
                if r >= self.regions
                    || m >= self.models
                    || self.memory[m] < request.min_memory_gib
                    || book.base_price(index.model_name(model)) > cap
                {
                    continue;
                }
                let fast = self.cell(r, m, tier);
                let any = self.cell(r, m, 0);
                for free in per..self.width {
                    fn affordable(
                        asks: &BTreeMap<u64, u32>,
                        cap: u64,
                    ) -> std::collections::btree_map::Range<'_, u64, u32> {
                        asks.range(..=cap)
                    }
                    if workers == 1 {
                        if affordable(&self.asks[any + free], cap).next().is_some() {
                            return true;
                        }
                        continue;
                    }
                    let nodes: usize = affordable(&self.asks[fast + free], cap)
                        .map(|(_, n)| *n as usize)
                        .sum();
                    slots += nodes * (free / per);
                    if affordable(&self.asks[any + free], cap).next().is_some() {
                        largest = largest.max(free / per);
                    }
                }
                if slots >= workers || largest >= workers {
                    return true;
                }
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulate::fleet::Fleet;

    #[test]
    fn the_gate_never_refuses_what_the_scheduler_places() {
        let fleet = Fleet::generate(300, 2);
        let (mut index, network) = fleet.index();
        let mut gate = Gate::new(&index, &network);
        let book = PriceBook::new(Default::default()).unwrap();
        let jobs = crate::simulate::workload::generate(3_000, fleet.gpus(), 1.0, 2);
        let (mut refused, mut placed) = (0, 0);
        for job in &jobs {
            let request = api::scheduling::request_for(&job.spec());
            let admitted = gate.admits(&index, &network, &book, &request);
            match scheduler::place(&mut index, &network, &book, &request, &Default::default()) {
                Ok(slots) => {
                    assert!(admitted, "refused a job the scheduler placed: {request:?}");
                    placed += 1;
                    for slot in &slots {
                        gate.refresh(&index, slot.node);
                    }
                }
                Err(_) => refused += usize::from(!admitted),
            }
        }
        // The fleet fills up (nothing finishes here), so the gate gets to refuse many.
        assert!(
            placed > 100 && refused > 100,
            "placed {placed}, refused {refused}"
        );
    }
}
