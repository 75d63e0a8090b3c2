//! The network model: latency coordinates fitted from RTT samples, per-node bandwidth, regions.
//!
//! The scheduler places on *measured* latency and bandwidth, but nodes only ever probe a few
//! peers. [`NetworkModel`] turns those sparse probes into an RTT and a bandwidth for any pair of
//! nodes, from any node to any region, and between regions. It is pure: no I/O, no clock, and
//! randomness only from the seed given to [`NetworkModel::new`], so the same seed and the same
//! calls give bit-identical answers (a decision can be replayed).
//!
//! # Coordinates
//!
//! Every node has a Vivaldi [`Coordinate`] (Dabek et al., SIGCOMM 2004): a point in 2-D plus a
//! *height*, and the estimated RTT of a pair is `‖a.v − b.v‖ + a.height + b.height`. The plane
//! models the Internet core (delay ≈ geography), the height a node's last mile, which every packet
//! crosses whatever the destination. Residential GPU hosts have 5–40 ms last miles; without
//! heights such a node would have to be far from everyone in every direction at once, which no
//! Euclidean space can express, and real region matrices violate the triangle inequality anyway.
//! See `network/vivaldi.rs` for the update rule (the paper's Figure 3, `c_c = c_e = 0.25`)
//! and why 2 dimensions.
//!
//! Samples arrive through [`NetworkModel::observe_rtt`]: the prober makes one Vivaldi step against
//! the target's current coordinate, with the pair's filtered RTT (below). From a cold start this
//! online rule alone is slow: with 32 samples per node it leaves a median error around 30 %
//! (measured on [`synthetic`], 1,000 and 10,000 nodes). The hub holds every measurement, though,
//! so [`NetworkModel::refit`] replays them: each node steps against each of its measured peers,
//! `passes` times (the paper's own simulations keep sampling a fixed neighbour set the same way).
//! [`REFIT_PASSES`] passes bring the same samples to a median error of 2.1 % (p90 9.4 %) at 1,000
//! nodes and 2.4 % (p90 10.2 %) at 10,000, on pairs that were never measured. A node that joins
//! an established fleet starts at its region's summary (center and median height) instead of the
//! origin, so its first few samples already place it well (≈ 3 % after 4 samples, no refit).
//!
//! # Measured pairs
//!
//! Each measured pair keeps the median of its last 5 samples (`network/pairs.rs`), which
//! ignores a spike and follows a route change after 3 samples. [`NetworkModel::rtt_ms`] answers
//! with that median when the pair was measured and with the coordinate distance otherwise; RTT
//! pairs are symmetric. Bandwidth pairs ([`NetworkModel::observe_bandwidth`]) are directional
//! (residential links are asymmetric); unmeasured directions use `min(uplink(a), downlink(b))` of
//! the reported capacities ([`NetworkModel::set_bandwidth`]), with [`DEFAULT_BANDWIDTH_MBPS`] for
//! anything unknown. Each node remembers its [`MAX_MEASURED_PEERS`] most recently measured peers,
//! which bounds memory and refit time however long the fleet runs.
//!
//! # Regions
//!
//! A region is the named set of nodes added with that name. Region queries must be O(1) (the
//! scheduler asks per candidate per decision), so they read a per-region summary: the median
//! member position, the median distance of members from it (spread) and the median member height
//! (see `network/region.rs` for the estimator and why it is not 0 for a node inside the
//! region). Summaries are recomputed by [`NetworkModel::refresh`] (and at the end of `refit`);
//! between refreshes queries answer from the last summaries, and a region with no placed member
//! at the last refresh answers None.
//!
//! # How the hub drives it
//!
//! `add_node`/`remove_node` as nodes come and go; `observe_rtt`/`observe_bandwidth` for every
//! probe result in a heartbeat; `refresh` once per scheduling cycle; `refit(REFIT_PASSES)` every
//! few tens of seconds (on a clone, swapped in, if its latency matters: ~20 ms per pass at
//! 10,000 nodes with 32 probes each, release build); `coordinate`/`set_coordinate` to persist
//! coordinates across restarts.
//!
//! # Cost of each call
//!
//! n = nodes, P = a node's measured peers (≤ [`MAX_MEASURED_PEERS`]), `DIMS` = 2. Times are
//! release-build figures at 10,000 nodes on one core of the development machine, for scale only.
//!
//! | call | cost |
//! |---|---|
//! | `new`, `len`, `contains`, `coordinate`, `set_coordinate`, `set_bandwidth` | O(1) |
//! | `add_node` | O(1) amortized + one hash of the region name (~20 ns) |
//! | `remove_node` | O(P²): its pairs and their peers' entries (~25–80 µs) |
//! | `observe_rtt`, `observe_bandwidth` | O(P): one scan of both ends' peer lists, one hash update, O(`DIMS`) step (~1 µs) |
//! | `rtt_ms`, `measured_rtt_ms`, `bandwidth_mbps`, `measured_bandwidth_mbps` | O(1): one hash lookup (~5–35 ns) |
//! | `estimated_rtt_ms` | O(`DIMS`) (~5 ns) |
//! | `rtt_to_region_ms`, `region_rtt_ms` | O(1): name hash(es) + O(`DIMS`) (~30–60 ns) |
//! | `rtt_to_region_id_ms`, `region_id_rtt_ms` | O(`DIMS`) (~5 ns) |
//! | `refresh` | O(n) expected, median selection (~0.2 ms) |
//! | `refit(passes)` | O(passes × n × P) (~20 ms per pass) |
//!
//! # Trust
//!
//! RTT samples come from the nodes themselves. A node can only move its own coordinate with its
//! samples (the probed node does not move online); in a refit its peers move against it too, but
//! each only by its share of one spring among ~64, and region summaries use medians, so a few
//! lying nodes shift them little. Measured pairs a node reports about itself are believed: the
//! hub should probe suspicious nodes from nodes it trusts.

mod pairs;
mod region;
mod rng;
pub mod synthetic;
mod vivaldi;

pub use region::{RegionId, RegionSummary};
pub use vivaldi::{
    C_C, C_E, Coordinate, DIMS, INITIAL_ERROR, MAX_COORD_MS, MAX_ERROR, MAX_RTT_MS, MIN_ERROR,
    MIN_HEIGHT_MS,
};

use pairs::{PairMap, directed_key, pair_key, record};
use region::Regions;
use rng::SplitMix64;
use vivaldi::usable_rtt;

/// A node's dense index, assigned by the scheduler's node index. The model stores nodes in a
/// vector indexed by key, so memory is O(largest key): keep keys dense.
pub type NodeKey = u32;

/// The bandwidth assumed for a direction nobody reported or measured (Mbps). Deliberately low
/// (a slow residential uplink): a gang must not be planned over a link as if it were fast just
/// because nothing is known about it, and a node that reports its bandwidth should beat one that
/// does not.
pub const DEFAULT_BANDWIDTH_MBPS: f64 = 10.0;

/// Reported or measured bandwidths above this (Mbps, 10 Tb/s) are ignored as garbage.
pub const MAX_BANDWIDTH_MBPS: f64 = 1e7;

/// The most measured peers a node remembers. When a new pair would exceed it, the node's least
/// recently measured pair is forgotten (at both ends), which bounds memory to O(n × this) and
/// `refit` to O(passes × n × this) however long the fleet keeps probing. Twice the 32 probes per
/// node the accuracy target assumes, since a node is probed about as often as it probes.
pub const MAX_MEASURED_PEERS: usize = 128;

/// Passes of [`NetworkModel::refit`] that bring a fleet where every node took 32 samples from
/// a cold start to a median error of 2.1–2.4 % (p90 ≈ 10 %) on the synthetic world at 1,000 and
/// 10,000 nodes. With fewer samples per node more passes are needed (16 samples: ~3 % after 10
/// passes; 8 samples: ~5 % after 20); more passes keep shaving the tail (the ignored
/// `error_by_samples_and_passes` test in `tests/network.rs` prints the table).
pub const REFIT_PASSES: u32 = 10;

#[derive(Clone, Debug)]
struct Node {
    coord: Coordinate,
    region: RegionId,
    uplink_mbps: Option<f64>,
    downlink_mbps: Option<f64>,
    /// Whether the coordinate means anything: it took at least one RTT sample or was restored.
    /// Only placed nodes go into region summaries.
    placed: bool,
    /// The nodes this one has any measurement with, least recently measured first, each once.
    peers: Vec<Peer>,
}

/// One measured peer, with a copy of the pair's current RTT estimate so that `refit` walks
/// memory in order instead of looking every pair up.
#[derive(Clone, Copy, Debug)]
struct Peer {
    key: NodeKey,
    /// The pair's RTT estimate; 0 when only bandwidth was measured (a real RTT is > 0).
    rtt_ms: f64,
}

/// Estimated RTT and bandwidth between any two nodes, and from any node to any region.
///
/// Deterministic: the same seed and the same sequence of calls give bit-identical coordinates and
/// answers.
#[derive(Clone, Debug)]
pub struct NetworkModel {
    nodes: Vec<Option<Node>>,
    live: usize,
    regions: Regions,
    /// RTT windows by unordered pair.
    rtts: PairMap,
    /// Bandwidth windows by direction.
    bandwidths: PairMap,
    rng: SplitMix64,
}

impl NetworkModel {
    pub fn new(seed: u64) -> Self {
        Self {
            nodes: Vec::new(),
            live: 0,
            regions: Regions::default(),
            rtts: PairMap::default(),
            bandwidths: PairMap::default(),
            rng: SplitMix64::new(seed),
        }
    }

    /// Number of nodes in the model.
    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    pub fn contains(&self, key: NodeKey) -> bool {
        self.node(key).is_some()
    }

    /// Adds `key` in `region`, or moves an existing node to `region` (keeping its coordinate and
    /// measurements). O(1) amortized plus one hash of the region name.
    pub fn add_node(&mut self, key: NodeKey, region: &str) {
        let region = self.regions.intern(region);
        let index = key as usize;
        if index >= self.nodes.len() {
            self.nodes.resize_with(index + 1, || None);
        }
        match &mut self.nodes[index] {
            Some(node) => {
                if node.region != region {
                    self.regions.leave(node.region);
                    self.regions.join(region);
                    node.region = region;
                }
            }
            slot @ None => {
                *slot = Some(Node {
                    coord: Coordinate::origin(),
                    region,
                    uplink_mbps: None,
                    downlink_mbps: None,
                    placed: false,
                    peers: Vec::new(),
                });
                self.regions.join(region);
                self.live += 1;
            }
        }
    }

    /// Removes `key` and every measurement involving it; returns whether it was there. Region
    /// summaries keep counting its old coordinate until the next [`refresh`](Self::refresh).
    /// O(P²) for P = its measured peers (≤ [`MAX_MEASURED_PEERS`]).
    pub fn remove_node(&mut self, key: NodeKey) -> bool {
        let Some(node) = self.nodes.get_mut(key as usize).and_then(Option::take) else {
            return false;
        };
        self.live -= 1;
        self.regions.leave(node.region);
        for peer in node.peers {
            self.forget_measurements(key, peer.key);
            if let Some(p) = self.node_mut(peer.key) {
                p.peers.retain(|q| q.key != key);
            }
        }
        true
    }

    /// Feeds one RTT sample that node `a` measured to node `b`. The pair's estimate (median of its
    /// last samples, symmetric in `a`/`b`) takes the sample, then `a` (the probing node) makes
    /// one Vivaldi step against `b`'s coordinate using that estimate; `b` does not move. Returns
    /// false, changing nothing, for a sample that is not finite, ≤ 0 or above [`MAX_RTT_MS`], for
    /// `a == b` and for unknown nodes. O(P) for P ≤ [`MAX_MEASURED_PEERS`] (one scan of each
    /// end's peer list), one hash lookup, O(`DIMS`) arithmetic.
    pub fn observe_rtt(&mut self, a: NodeKey, b: NodeKey, rtt_ms: f64) -> bool {
        if a == b || !usable_rtt(rtt_ms) || !self.contains(a) || !self.contains(b) {
            return false;
        }
        let estimate = record(&mut self.rtts, pair_key(a, b), rtt_ms);
        self.touch(a, b, Some(estimate));
        self.step(a, b, estimate);
        true
    }

    /// The measured RTT of the pair (median of its last samples), if it was ever measured.
    pub fn measured_rtt_ms(&self, a: NodeKey, b: NodeKey) -> Option<f64> {
        self.rtts.get(&pair_key(a, b)).map(|w| w.median())
    }

    /// The coordinate estimate of the RTT, ignoring measurements; None for an unknown node.
    pub fn estimated_rtt_ms(&self, a: NodeKey, b: NodeKey) -> Option<f64> {
        let (x, y) = (self.node(a)?, self.node(b)?);
        Some(if a == b {
            0.0
        } else {
            x.coord.distance(&y.coord)
        })
    }

    /// The RTT in ms between two nodes: the measured pair if there is one, else the coordinate
    /// distance. 0 to itself. An unknown node is infinitely far (so latency limits exclude it).
    /// O(1): one hash lookup, then O(`DIMS`).
    pub fn rtt_ms(&self, a: NodeKey, b: NodeKey) -> f64 {
        if a == b && self.contains(a) {
            return 0.0;
        }
        if let Some(rtt) = self.measured_rtt_ms(a, b) {
            return rtt;
        }
        self.estimated_rtt_ms(a, b).unwrap_or(f64::INFINITY)
    }

    /// Sets the node's reported access-link capacities. Returns false, changing nothing, for an
    /// unknown node or a value that is not finite, ≤ 0 or above [`MAX_BANDWIDTH_MBPS`]. O(1).
    pub fn set_bandwidth(&mut self, key: NodeKey, uplink_mbps: f64, downlink_mbps: f64) -> bool {
        if !usable_bandwidth(uplink_mbps) || !usable_bandwidth(downlink_mbps) {
            return false;
        }
        let Some(node) = self.node_mut(key) else {
            return false;
        };
        node.uplink_mbps = Some(uplink_mbps);
        node.downlink_mbps = Some(downlink_mbps);
        true
    }

    /// Feeds one throughput sample from `a` to `b` (directional: residential links are
    /// asymmetric). The direction keeps the median of its last samples. Same rejections as
    /// [`set_bandwidth`](Self::set_bandwidth), plus `a == b`. O(P) like
    /// [`observe_rtt`](Self::observe_rtt).
    pub fn observe_bandwidth(&mut self, a: NodeKey, b: NodeKey, mbps: f64) -> bool {
        if a == b || !usable_bandwidth(mbps) || !self.contains(a) || !self.contains(b) {
            return false;
        }
        record(&mut self.bandwidths, directed_key(a, b), mbps);
        self.touch(a, b, None);
        true
    }

    /// The measured bandwidth from `a` to `b`, if that direction was ever measured.
    pub fn measured_bandwidth_mbps(&self, a: NodeKey, b: NodeKey) -> Option<f64> {
        self.bandwidths.get(&directed_key(a, b)).map(|w| w.median())
    }

    /// The bandwidth in Mbps from `a` to `b`: the measured direction if there is one, else
    /// `min(uplink(a), downlink(b))`, where an unknown capacity (or an unknown node) counts as
    /// [`DEFAULT_BANDWIDTH_MBPS`]. Infinite from a node to itself (no network is crossed, so
    /// transfer times come out 0). O(1).
    pub fn bandwidth_mbps(&self, a: NodeKey, b: NodeKey) -> f64 {
        if a == b && self.contains(a) {
            return f64::INFINITY;
        }
        if let Some(bw) = self.measured_bandwidth_mbps(a, b) {
            return bw;
        }
        let up = self.node(a).and_then(|n| n.uplink_mbps);
        let down = self.node(b).and_then(|n| n.downlink_mbps);
        up.unwrap_or(DEFAULT_BANDWIDTH_MBPS)
            .min(down.unwrap_or(DEFAULT_BANDWIDTH_MBPS))
    }

    /// The id of a region that ever had a member, for the `_id` variants of the region queries.
    pub fn region_id(&self, region: &str) -> Option<RegionId> {
        self.regions.id(region)
    }

    /// The region a node is in.
    pub fn region_of(&self, key: NodeKey) -> Option<&str> {
        self.node(key).map(|n| self.regions.name(n.region))
    }

    /// Live members of a region (not waiting for [`refresh`](Self::refresh)).
    pub fn region_members(&self, region: &str) -> usize {
        self.region_id(region)
            .map_or(0, |id| self.regions.members(id) as usize)
    }

    /// The summary of a region as of the last [`refresh`](Self::refresh).
    pub fn region_summary(&self, region: &str) -> Option<RegionSummary> {
        self.regions.summary(self.region_id(region)?).copied()
    }

    /// The typical RTT in ms from node `a` to a member of `region`, from the last refreshed
    /// summary (for `a` inside the region: its typical RTT to its neighbours, not 0). None for an
    /// unknown node, an unknown region, or a region with no placed member at the last refresh.
    /// O(1): one hash of the name and O(`DIMS`) arithmetic.
    pub fn rtt_to_region_ms(&self, a: NodeKey, region: &str) -> Option<f64> {
        self.rtt_to_region_id_ms(a, self.region_id(region)?)
    }

    /// [`rtt_to_region_ms`](Self::rtt_to_region_ms) without the name lookup.
    pub fn rtt_to_region_id_ms(&self, a: NodeKey, region: RegionId) -> Option<f64> {
        let node = self.node(a)?;
        Some(self.regions.summary(region)?.rtt_from(&node.coord))
    }

    /// The typical RTT in ms between a member of `region_a` and a member of `region_b` (the same
    /// region: between two of its members), from the last refreshed summaries. O(1).
    pub fn region_rtt_ms(&self, region_a: &str, region_b: &str) -> Option<f64> {
        self.region_id_rtt_ms(self.region_id(region_a)?, self.region_id(region_b)?)
    }

    /// [`region_rtt_ms`](Self::region_rtt_ms) without the name lookups.
    pub fn region_id_rtt_ms(&self, a: RegionId, b: RegionId) -> Option<f64> {
        Some(self.regions.summary(a)?.rtt_to(self.regions.summary(b)?))
    }

    /// Recomputes every region summary from the placed members' current coordinates. O(n)
    /// expected (median selection); call it periodically (e.g. once per scheduling cycle), not
    /// per query.
    pub fn refresh(&mut self) {
        let mut by_region: Vec<Vec<Coordinate>> = vec![Vec::new(); self.regions.count()];
        for node in self.nodes.iter().flatten().filter(|n| n.placed) {
            if let Some(members) = by_region.get_mut(node.region.index()) {
                members.push(node.coord);
            }
        }
        self.regions.set_summaries(&by_region);
    }

    /// Re-runs Vivaldi over the measurements the model already holds: `passes` times, every node
    /// (in key order) steps against each of its measured peers (least recently measured first),
    /// using the pair's current estimate. Each pair is visited from both sides, so
    /// both ends move. This is the paper's simulation setting (every node keeps sampling a fixed
    /// set of neighbours) without sending a single new probe; it turns the ≤ 32 samples a node
    /// took into a converged coordinate (see the module docs for the numbers). Then refreshes the
    /// region summaries. O(`passes` × measured pairs × `DIMS`): about 2 × 32 steps per node per
    /// pass when every node probed 32 peers.
    pub fn refit(&mut self, passes: u32) {
        for _ in 0..passes {
            for a in 0..self.nodes.len() as NodeKey {
                let peers = self.node(a).map_or(0, |n| n.peers.len());
                for i in 0..peers {
                    let Some(peer) = self.node(a).and_then(|n| n.peers.get(i).copied()) else {
                        break;
                    };
                    if peer.rtt_ms > 0.0 {
                        self.step(a, peer.key, peer.rtt_ms);
                    }
                }
            }
        }
        self.refresh();
    }

    /// A node's coordinate, to persist it.
    pub fn coordinate(&self, key: NodeKey) -> Option<Coordinate> {
        self.node(key).map(|n| n.coord)
    }

    /// Restores a persisted coordinate. Returns false, changing nothing, for an unknown node or a
    /// coordinate that fails [`Coordinate::is_valid`] (non-finite or out of bounds).
    pub fn set_coordinate(&mut self, key: NodeKey, coordinate: Coordinate) -> bool {
        if !coordinate.is_valid() {
            return false;
        }
        let Some(node) = self.node_mut(key) else {
            return false;
        };
        node.coord = coordinate;
        node.placed = true;
        true
    }

    fn node(&self, key: NodeKey) -> Option<&Node> {
        self.nodes.get(key as usize).and_then(Option::as_ref)
    }

    fn node_mut(&mut self, key: NodeKey) -> Option<&mut Node> {
        self.nodes.get_mut(key as usize).and_then(Option::as_mut)
    }

    /// One Vivaldi step of `a` against `b` for an RTT estimate. A node that was never placed first
    /// moves to where its region's members are (the last refreshed summary: center and median
    /// height), when there is one, so a node joining an established fleet starts near its
    /// neighbours instead of at the origin; its error stays at [`INITIAL_ERROR`], so its own
    /// samples still move it freely.
    fn step(&mut self, a: NodeKey, b: NodeKey, rtt_ms: f64) {
        let Some(remote) = self.node(b).map(|n| n.coord) else {
            return;
        };
        let Self {
            nodes,
            rng,
            regions,
            ..
        } = self;
        let Some(node) = nodes.get_mut(a as usize).and_then(Option::as_mut) else {
            return;
        };
        if !node.placed
            && let Some(summary) = regions.summary(node.region)
        {
            node.coord.v = summary.center;
            node.coord.height = summary.median_height_ms;
        }
        if node.coord.update(&remote, rtt_ms, rng) {
            node.placed = true;
        }
    }

    /// Notes a fresh measurement between `a` and `b` (with the pair's new RTT estimate, if it was
    /// an RTT) in both peer lists, moving the pair to the most recent end; a new pair beyond
    /// [`MAX_MEASURED_PEERS`] makes that node forget its least recently measured one.
    fn touch(&mut self, a: NodeKey, b: NodeKey, rtt_ms: Option<f64>) {
        for (x, y) in [(a, b), (b, a)] {
            let Some(node) = self.node_mut(x) else {
                continue;
            };
            let mut peer = Peer {
                key: y,
                rtt_ms: 0.0,
            };
            if let Some(i) = node.peers.iter().position(|p| p.key == y) {
                peer = node.peers.remove(i);
            }
            if let Some(rtt) = rtt_ms {
                peer.rtt_ms = rtt;
            }
            node.peers.push(peer);
            if node.peers.len() > MAX_MEASURED_PEERS {
                // The front is the least recently measured, never `y` (just pushed to the back).
                let old = node.peers.remove(0);
                self.forget_measurements(x, old.key);
                if let Some(n) = self.node_mut(old.key) {
                    n.peers.retain(|q| q.key != x);
                }
            }
        }
    }

    /// Drops every stored measurement between `a` and `b` (not the peer-list entries).
    fn forget_measurements(&mut self, a: NodeKey, b: NodeKey) {
        self.rtts.remove(&pair_key(a, b));
        self.bandwidths.remove(&directed_key(a, b));
        self.bandwidths.remove(&directed_key(b, a));
    }
}

fn usable_bandwidth(mbps: f64) -> bool {
    mbps.is_finite() && mbps > 0.0 && mbps <= MAX_BANDWIDTH_MBPS
}
