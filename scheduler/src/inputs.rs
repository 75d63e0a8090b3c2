//! What placement needs from the network model and the price book, as traits, so decisions can be
//! driven (and tested) with any source of latencies and base prices.

use crate::index::NodeKey;

/// Latency and bandwidth estimates between nodes and to regions.
pub trait Network {
    /// Estimated RTT from a node to a region's users, if the region is known.
    fn rtt_to_region_ms(&self, node: NodeKey, region: &str) -> Option<f64>;
    /// Estimated RTT between two nodes (0 to itself).
    fn rtt_ms(&self, a: NodeKey, b: NodeKey) -> f64;
    /// Estimated bandwidth from `a` to `b`.
    fn bandwidth_mbps(&self, a: NodeKey, b: NodeKey) -> f64;
    /// A lower bound on `rtt_to_region_ms` for every node of `from_region` to `to_region`, which
    /// lets a search skip whole regions; 0 (no bound) unless the source knows better.
    fn region_floor_ms(&self, from_region: &str, to_region: &str) -> f64 {
        let _ = (from_region, to_region);
        0.0
    }
}

/// A network nobody has measured: no region is known, every pair is unknown. Placement then
/// ignores latency, and any latency bound fails.
#[derive(Clone, Copy, Debug, Default)]
pub struct Unmeasured;

impl Network for Unmeasured {
    fn rtt_to_region_ms(&self, _: NodeKey, _: &str) -> Option<f64> {
        None
    }

    fn rtt_ms(&self, a: NodeKey, b: NodeKey) -> f64 {
        if a == b { 0.0 } else { f64::INFINITY }
    }

    fn bandwidth_mbps(&self, _: NodeKey, _: NodeKey) -> f64 {
        0.0
    }
}

/// The current base price of each GPU class.
pub trait BasePrices {
    /// Base price per GPU-hour of a GPU model, in micro-units (0: no floor).
    fn base_price_micros(&self, model: &str) -> u64;
}

/// No base prices: nodes are paid their ask.
#[derive(Clone, Copy, Debug, Default)]
pub struct AskOnly;

impl BasePrices for AskOnly {
    fn base_price_micros(&self, _: &str) -> u64 {
        0
    }
}

impl BasePrices for crate::pricing::PriceBook {
    fn base_price_micros(&self, model: &str) -> u64 {
        self.base_price(model)
    }
}

impl Network for crate::network::NetworkModel {
    fn rtt_to_region_ms(&self, node: NodeKey, region: &str) -> Option<f64> {
        crate::network::NetworkModel::rtt_to_region_ms(self, node, region)
    }

    fn rtt_ms(&self, a: NodeKey, b: NodeKey) -> f64 {
        crate::network::NetworkModel::rtt_ms(self, a, b)
    }

    fn bandwidth_mbps(&self, a: NodeKey, b: NodeKey) -> f64 {
        crate::network::NetworkModel::bandwidth_mbps(self, a, b)
    }
}
