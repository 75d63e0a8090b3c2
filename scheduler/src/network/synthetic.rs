//! A synthetic world with known true RTTs, for tests and benchmarks of the network model and of
//! network-aware placement.
//!
//! Nodes are spread uniformly over 8 cloud regions whose RTT matrix is case 5 of DT-FM ("Decentralized
//! Training of Foundation Models in Heterogeneous Environments", Yuan et al., NeurIPS 2022): Oregon,
//! Virginia, Ohio, Tokyo, Seoul, London, Frankfurt, Ireland, with 5 ms inside a region. Each node
//! adds a residential last mile (uniform 5–40 ms) once per endpoint, so the true RTT is
//! `region_rtt(r_a, r_b) + last_mile(a) + last_mile(b)`. The matrix is measured, not geometric:
//! it violates the triangle inequality through Ohio (Oregon–Virginia is 67 ms but Oregon–Ohio–
//! Virginia 49 + 11 = 60; Virginia–Tokyo 143 but via Ohio 141; also Oregon–London, Virginia–Seoul),
//! which no Euclidean embedding reproduces exactly, and the last miles make every node look far
//! from everyone in every direction at once — the case heights exist for.
//!
//! Everything is a pure function of the seed: `sample_rtt` hashes its inputs instead of drawing
//! from a stream, so the same probe gives the same sample whatever was sampled before it.

pub use super::rng::SplitMix64;
use super::{NetworkModel, NodeKey, rng::mix};

/// The regions, in the order of [`REGION_RTT_MS`].
pub const REGIONS: [&str; 8] = [
    "oregon",
    "virginia",
    "ohio",
    "tokyo",
    "seoul",
    "london",
    "frankfurt",
    "ireland",
];

/// RTT between two nodes of the same region, before last miles (ms).
pub const INTRA_REGION_RTT_MS: f64 = 5.0;

/// DT-FM case 5 inter-region RTTs (ms); the diagonal is [`INTRA_REGION_RTT_MS`].
pub const REGION_RTT_MS: [[f64; 8]; 8] = [
    //  OR     VA     OH     TK     SE     LN     FR     IE
    [5.0, 67.0, 49.0, 96.0, 124.0, 136.0, 143.0, 124.0], // Oregon
    [67.0, 5.0, 11.0, 143.0, 172.0, 76.0, 90.0, 67.0],   // Virginia
    [49.0, 11.0, 5.0, 130.0, 159.0, 86.0, 99.0, 77.0],   // Ohio
    [96.0, 143.0, 130.0, 5.0, 34.0, 210.0, 223.0, 199.0], // Tokyo
    [124.0, 172.0, 159.0, 34.0, 5.0, 238.0, 235.0, 228.0], // Seoul
    [136.0, 76.0, 86.0, 210.0, 238.0, 5.0, 14.0, 12.0],  // London
    [143.0, 90.0, 99.0, 223.0, 235.0, 14.0, 5.0, 24.0],  // Frankfurt
    [124.0, 67.0, 77.0, 199.0, 228.0, 12.0, 24.0, 5.0],  // Ireland
];

/// Last-mile delay range per endpoint (ms), residential.
pub const LAST_MILE_MS: (f64, f64) = (5.0, 40.0);
/// Access-link capacity range (Mbps): downlink uniform in it, uplink uniform between its low end
/// and the node's downlink (residential links upload slower).
pub const BANDWIDTH_MBPS: (f64, f64) = (50.0, 1000.0);
/// Each RTT sample is the true RTT times a uniform factor in `1 ± JITTER`.
pub const JITTER: f64 = 0.05;

/// One synthetic node; its [`NodeKey`] is its index in [`World::nodes`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SyntheticNode {
    /// Index into [`REGIONS`].
    pub region: usize,
    pub last_mile_ms: f64,
    pub uplink_mbps: f64,
    pub downlink_mbps: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct World {
    pub nodes: Vec<SyntheticNode>,
    seed: u64,
}

impl World {
    /// `nodes` nodes, each in a uniformly random region with a random last mile and bandwidth.
    pub fn generate(nodes: usize, seed: u64) -> Self {
        let mut rng = SplitMix64::new(seed);
        let nodes = (0..nodes)
            .map(|_| {
                let region = rng.below(REGIONS.len() as u64) as usize;
                let last_mile_ms = rng.range_f64(LAST_MILE_MS.0, LAST_MILE_MS.1);
                let downlink_mbps = rng.range_f64(BANDWIDTH_MBPS.0, BANDWIDTH_MBPS.1);
                let uplink_mbps = rng.range_f64(BANDWIDTH_MBPS.0, downlink_mbps);
                SyntheticNode {
                    region,
                    last_mile_ms,
                    uplink_mbps,
                    downlink_mbps,
                }
            })
            .collect();
        Self { nodes, seed }
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The region name of node `a`.
    pub fn region_name(&self, a: usize) -> &'static str {
        REGIONS[self.nodes[a].region]
    }

    /// The true RTT between two nodes (ms); 0 to itself.
    pub fn true_rtt(&self, a: usize, b: usize) -> f64 {
        if a == b {
            return 0.0;
        }
        let (x, y) = (&self.nodes[a], &self.nodes[b]);
        REGION_RTT_MS[x.region][y.region] + x.last_mile_ms + y.last_mile_ms
    }

    /// The true bandwidth from `a` to `b`: `min(uplink(a), downlink(b))`.
    pub fn true_bandwidth(&self, a: usize, b: usize) -> f64 {
        self.nodes[a].uplink_mbps.min(self.nodes[b].downlink_mbps)
    }

    /// A noisy RTT sample of `a` probing `b`: the true RTT times `1 ± JITTER`. A pure function
    /// of the world's seed, `a`, `b` and `nonce` (use a different nonce for each probe).
    pub fn sample_rtt(&self, a: usize, b: usize, nonce: u64) -> f64 {
        let h = mix(self.seed ^ mix((a as u64) ^ mix((b as u64).wrapping_add(mix(nonce)))));
        let u = (h >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
        self.true_rtt(a, b) * (1.0 + JITTER * (2.0 * u - 1.0))
    }

    /// Adds every node to `model` (key = index) with its region and bandwidth.
    pub fn populate(&self, model: &mut NetworkModel) {
        for (i, node) in self.nodes.iter().enumerate() {
            let key = i as NodeKey;
            model.add_node(key, REGIONS[node.region]);
            model.set_bandwidth(key, node.uplink_mbps, node.downlink_mbps);
        }
    }

    /// Probes as a fleet would: `samples_per_node` rounds, in each of which every node (in key
    /// order) measures one uniformly random other node and feeds the sample to `model`. Returns
    /// the number of samples fed.
    pub fn probe(&self, model: &mut NetworkModel, samples_per_node: u32, seed: u64) -> u64 {
        let n = self.len();
        if n < 2 {
            return 0;
        }
        let mut rng = SplitMix64::new(seed);
        let mut fed = 0;
        for round in 0..u64::from(samples_per_node) {
            for a in 0..n {
                let mut b = rng.below(n as u64 - 1) as usize;
                if b >= a {
                    b += 1;
                }
                let rtt = self.sample_rtt(a, b, round);
                model.observe_rtt(a as NodeKey, b as NodeKey, rtt);
                fed += 1;
            }
        }
        fed
    }
}
