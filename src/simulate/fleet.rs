//! The simulated fleet and its network.
//!
//! Nodes sit in the eight regions of the scheduler's synthetic world (DT-FM case 5: Oregon,
//! Virginia, Ohio, Tokyo, Seoul, London, Frankfurt, Ireland), whose measured inter-region RTT
//! matrix (`scheduler::network::synthetic::REGION_RTT_MS`) is the simulation's region-RTT table.
//! Three kinds of node make the fleet heterogeneous: data-center servers (8 large GPUs, a fast
//! uplink, ~1 ms last mile), colocated workstations (2 or 4 mid-range GPUs) and residential
//! machines (1 or 2 consumer GPUs behind a 5–40 ms last mile and an asymmetric link). Asks are
//! drawn from ranges like those public GPU marketplaces list per model.
//!
//! The network the scheduler sees is the true one: RTT between two nodes is the region pair's RTT
//! plus both last miles, to a region's users the region pair's RTT plus the node's last mile, and
//! bandwidth from `a` to `b` is `min(uplink(a), downlink(b))`. The hub estimates these from the
//! agents' probes (docs/scheduling.md); the simulation assumes the estimate is exact.

use scheduler::{
    GpuView, Index, Network, NodeKey, NodeView,
    network::synthetic::{REGION_RTT_MS, SplitMix64},
};

/// The regions, in the order of the RTT table.
pub const REGIONS: [&str; 8] = scheduler::network::synthetic::REGIONS;

/// Share of the fleet's nodes in each region, in percent (the big cloud regions hold more).
const REGION_SHARE: [u64; 8] = [15, 20, 10, 12, 8, 12, 15, 8];

/// One GPU model of the simulated fleet.
pub struct GpuModel {
    pub name: &'static str,
    pub memory_gib: u32,
    pub compute_capability: (u32, u32),
    /// Range of asks per GPU-hour in micro-units: roughly what public GPU marketplaces listed for
    /// the model on demand in 2024–2025 (the scheduler's scale benchmark uses the same ranges for
    /// the four models it shares).
    pub asks: (u64, u64),
}

pub const MODELS: [GpuModel; 9] = [
    model("H200-141GB", 141, (9, 0), (2_500_000, 4_000_000)),
    model("H100-80GB", 80, (9, 0), (1_800_000, 3_000_000)),
    model("A100-80GB", 80, (8, 0), (1_100_000, 1_900_000)),
    model("L40S-48GB", 48, (8, 9), (700_000, 1_200_000)),
    model("L4-24GB", 24, (8, 9), (350_000, 700_000)),
    model("A10-24GB", 24, (8, 6), (500_000, 900_000)),
    model("RTX5090-32GB", 32, (12, 0), (500_000, 900_000)),
    model("RTX4090-24GB", 24, (8, 9), (250_000, 600_000)),
    model("RTX3090-24GB", 24, (8, 6), (150_000, 350_000)),
];

const fn model(
    name: &'static str,
    memory_gib: u32,
    compute_capability: (u32, u32),
    asks: (u64, u64),
) -> GpuModel {
    GpuModel {
        name,
        memory_gib,
        compute_capability,
        asks,
    }
}

/// A kind of node: how common it is, its GPUs and its network.
struct NodeKind {
    /// Share of the fleet's nodes, in percent.
    share: u64,
    /// GPU counts to pick from, uniformly.
    gpu_counts: &'static [usize],
    /// (model index, weight) to pick the node's model from.
    models: &'static [(usize, u64)],
    /// Last mile per endpoint, ms.
    last_mile_ms: (f64, f64),
    /// Downlink range, Mbps; the uplink is drawn between the low end and the downlink.
    downlink_mbps: (f64, f64),
    /// Reputation range, basis points.
    reputation_bps: (u64, u64),
}

const KINDS: [NodeKind; 3] = [
    // Data-center servers: HGX-class boxes on 10–100 Gb/s.
    NodeKind {
        share: 20,
        gpu_counts: &[8],
        models: &[(0, 20), (1, 50), (2, 30)],
        last_mile_ms: (0.5, 2.0),
        downlink_mbps: (10_000.0, 100_000.0),
        reputation_bps: (9_800, 10_000),
    },
    // Colocated workstations: 2 or 4 mid-range GPUs on 1–10 Gb/s.
    NodeKind {
        share: 35,
        gpu_counts: &[2, 4],
        models: &[(2, 20), (3, 35), (4, 25), (5, 20)],
        last_mile_ms: (1.0, 5.0),
        downlink_mbps: (1_000.0, 10_000.0),
        reputation_bps: (9_500, 10_000),
    },
    // Residential machines: consumer cards behind a home connection.
    NodeKind {
        share: 45,
        gpu_counts: &[1, 1, 2],
        models: &[(6, 20), (7, 50), (8, 30)],
        last_mile_ms: (5.0, 40.0),
        downlink_mbps: (50.0, 1_000.0),
        reputation_bps: (9_000, 10_000),
    },
];

/// What the network model needs to know of one node, by index key.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Link {
    pub region: usize,
    pub last_mile_ms: f64,
    pub uplink_mbps: f64,
    pub downlink_mbps: f64,
}

/// A simulated fleet: the nodes as the scheduler sees them (all ready, all GPUs free and healthy)
/// and their network.
#[derive(Clone, Debug)]
pub struct Fleet {
    pub nodes: Vec<NodeView>,
    pub links: Vec<Link>,
}

impl Fleet {
    /// `nodes` nodes drawn from `seed`: the same seed gives the same fleet.
    pub fn generate(nodes: usize, seed: u64) -> Self {
        let mut rng = SplitMix64::new(seed ^ 0xF1EE_7000);
        let mut fleet = Fleet {
            nodes: Vec::with_capacity(nodes),
            links: Vec::with_capacity(nodes),
        };
        for i in 0..nodes {
            let region = pick(&mut rng, REGION_SHARE.iter().copied().enumerate());
            let kind = &KINDS[pick(&mut rng, KINDS.iter().map(|k| k.share).enumerate())];
            let model = &MODELS[pick(&mut rng, kind.models.iter().copied())];
            let count = kind.gpu_counts[rng.below(kind.gpu_counts.len() as u64) as usize];
            let name = format!("sim-{i:05}");
            let downlink_mbps = rng.range_f64(kind.downlink_mbps.0, kind.downlink_mbps.1);
            fleet.links.push(Link {
                region,
                last_mile_ms: rng.range_f64(kind.last_mile_ms.0, kind.last_mile_ms.1),
                uplink_mbps: rng.range_f64(kind.downlink_mbps.0, downlink_mbps),
                downlink_mbps,
            });
            let ask = model.asks.0 + rng.below(model.asks.1 - model.asks.0 + 1);
            let reputation = kind.reputation_bps.0
                + rng.below(kind.reputation_bps.1 - kind.reputation_bps.0 + 1);
            fleet.nodes.push(NodeView {
                gpus: (0..count)
                    .map(|g| GpuView {
                        uuid: format!("{name}-gpu{g}"),
                        model: model.name.to_string(),
                        memory_gib: model.memory_gib,
                        compute_capability: model.compute_capability,
                        healthy: true,
                        allocated: false,
                    })
                    .collect(),
                name,
                region: REGIONS[region].to_string(),
                // Asks move with nothing but the node's own choice; rounded to a cent as people
                // write them.
                price_micros: ask / 10_000 * 10_000,
                ready: true,
                capabilities: vec!["container".into(), "process".into()],
                stake_micros: 0,
                reputation_bps: reputation as u16,
                jailed: false,
            });
        }
        fleet
    }

    /// GPUs in the fleet.
    pub fn gpus(&self) -> usize {
        self.nodes.iter().map(|n| n.gpus.len()).sum()
    }

    /// The scheduler's index of the fleet and the network under the index's keys.
    pub fn index(&self) -> (Index, SimNetwork) {
        let mut index = Index::new();
        let mut links = vec![None; self.nodes.len()];
        for (node, link) in self.nodes.iter().zip(&self.links) {
            let key = index.apply(node.clone()) as usize;
            if key >= links.len() {
                links.resize(key + 1, None);
            }
            links[key] = Some(*link);
        }
        (index, SimNetwork::new(links))
    }
}

/// An index into `weights` (pairs of index and weight), with probability proportional to weight.
fn pick(rng: &mut SplitMix64, weights: impl Iterator<Item = (usize, u64)> + Clone) -> usize {
    let total: u64 = weights.clone().map(|(_, w)| w).sum();
    let mut roll = rng.below(total.max(1));
    let mut last = 0;
    for (i, w) in weights {
        if roll < w {
            return i;
        }
        roll -= w;
        last = i;
    }
    last
}

/// The index of a region name in [`REGIONS`].
pub fn region_index(name: &str) -> Option<usize> {
    REGIONS.iter().position(|r| *r == name)
}

/// The simulated network, exact: see the module documentation.
#[derive(Clone, Debug)]
pub struct SimNetwork {
    /// By index key.
    links: Vec<Option<Link>>,
    /// `floor[from][to]`: the smallest RTT from a node of region `from` to users in `to`.
    floor: [[f64; 8]; 8],
}

impl SimNetwork {
    fn new(links: Vec<Option<Link>>) -> Self {
        let mut nearest = [f64::INFINITY; 8];
        for link in links.iter().flatten() {
            nearest[link.region] = nearest[link.region].min(link.last_mile_ms);
        }
        let mut floor = [[0.0; 8]; 8];
        for (from, row) in floor.iter_mut().enumerate() {
            for (to, cell) in row.iter_mut().enumerate() {
                if nearest[from].is_finite() {
                    *cell = REGION_RTT_MS[from][to] + nearest[from];
                }
            }
        }
        Self { links, floor }
    }

    /// The node under `key`.
    pub fn link(&self, key: NodeKey) -> Option<&Link> {
        self.links.get(key as usize).and_then(Option::as_ref)
    }
}

impl Network for SimNetwork {
    fn rtt_to_region_ms(&self, node: NodeKey, region: &str) -> Option<f64> {
        let link = self.link(node)?;
        Some(REGION_RTT_MS[link.region][region_index(region)?] + link.last_mile_ms)
    }

    fn rtt_ms(&self, a: NodeKey, b: NodeKey) -> f64 {
        if a == b {
            return 0.0;
        }
        match (self.link(a), self.link(b)) {
            (Some(x), Some(y)) => {
                REGION_RTT_MS[x.region][y.region] + x.last_mile_ms + y.last_mile_ms
            }
            _ => f64::INFINITY,
        }
    }

    fn bandwidth_mbps(&self, a: NodeKey, b: NodeKey) -> f64 {
        match (self.link(a), self.link(b)) {
            (Some(x), Some(y)) => x.uplink_mbps.min(y.downlink_mbps),
            _ => 0.0,
        }
    }

    fn region_floor_ms(&self, from_region: &str, to_region: &str) -> f64 {
        match (region_index(from_region), region_index(to_region)) {
            (Some(from), Some(to)) => self.floor[from][to],
            _ => 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_fleet_and_every_kind_appears() {
        let a = Fleet::generate(500, 7);
        assert_eq!(a.nodes, Fleet::generate(500, 7).nodes);
        assert_ne!(a.nodes, Fleet::generate(500, 8).nodes);
        let sizes: std::collections::BTreeSet<usize> =
            a.nodes.iter().map(|n| n.gpus.len()).collect();
        assert_eq!(sizes.into_iter().collect::<Vec<_>>(), [1, 2, 4, 8]);
        let regions: std::collections::BTreeSet<&str> =
            a.nodes.iter().map(|n| n.region.as_str()).collect();
        assert_eq!(regions.len(), REGIONS.len());
        for node in &a.nodes {
            let model = MODELS
                .iter()
                .find(|m| m.name == node.gpus[0].model)
                .unwrap();
            assert!((model.asks.0..=model.asks.1).contains(&node.price_micros));
        }
    }

    #[test]
    fn the_network_adds_last_miles_to_the_region_table() {
        let fleet = Fleet::generate(50, 1);
        let (index, network) = fleet.index();
        let (a, b) = (
            index.key("sim-00000").unwrap(),
            index.key("sim-00001").unwrap(),
        );
        let (x, y) = (fleet.links[0], fleet.links[1]);
        let expected = REGION_RTT_MS[x.region][y.region] + x.last_mile_ms + y.last_mile_ms;
        assert_eq!(network.rtt_ms(a, b), expected);
        assert_eq!(
            network.rtt_to_region_ms(a, "tokyo"),
            Some(REGION_RTT_MS[x.region][3] + x.last_mile_ms)
        );
        assert_eq!(
            network.bandwidth_mbps(a, b),
            x.uplink_mbps.min(y.downlink_mbps)
        );
        assert!(
            network.region_floor_ms(REGIONS[x.region], "tokyo")
                <= network.rtt_to_region_ms(a, "tokyo").unwrap()
        );
    }
}
