//! Every node's estimated RTT to every region, computed once per scheduling cycle from a network
//! model, with per-region floors. Decisions then look latencies up (a few nanoseconds) and skip
//! whole regions whose nearest node is already too far to win.

use std::collections::HashMap;

use crate::{
    index::{Index, NodeKey},
    inputs::Network,
};

/// Latencies to regions, precomputed over an index's nodes and regions.
pub struct LatencyTable<'a, N> {
    network: &'a N,
    regions: HashMap<String, usize>,
    /// `rtt[key * regions + r]`; NaN where the network has no estimate.
    rtt: Vec<f64>,
    /// `floor[from * regions + to]`: the smallest RTT from a node of `from` to region `to`.
    floor: Vec<f64>,
}

impl<'a, N: Network> LatencyTable<'a, N> {
    /// Tabulates `network` for every node and region of `index`: O(nodes × regions) lookups.
    pub fn build(index: &Index, network: &'a N) -> Self {
        let names: Vec<String> = index
            .region_ids()
            .map(|r| index.region_name(r).to_string())
            .collect();
        let count = names.len();
        let slots = index
            .iter()
            .map(|(key, _)| key as usize + 1)
            .max()
            .unwrap_or(0);
        let mut rtt = vec![f64::NAN; slots * count];
        let mut floor = vec![f64::INFINITY; count * count];
        for (key, entry) in index.iter() {
            for (r, name) in names.iter().enumerate() {
                if let Some(ms) = network.rtt_to_region_ms(key, name) {
                    rtt[key as usize * count + r] = ms;
                    let cell = &mut floor[entry.region as usize * count + r];
                    *cell = cell.min(ms);
                }
            }
        }
        let regions = names.into_iter().enumerate().map(|(i, n)| (n, i)).collect();
        Self {
            network,
            regions,
            rtt,
            floor,
        }
    }
}

impl<N: Network> Network for LatencyTable<'_, N> {
    fn rtt_to_region_ms(&self, node: NodeKey, region: &str) -> Option<f64> {
        match self.regions.get(region) {
            Some(&r) => self
                .rtt
                .get(node as usize * self.regions.len() + r)
                .copied()
                .filter(|ms| !ms.is_nan()),
            None => self.network.rtt_to_region_ms(node, region),
        }
    }

    fn rtt_ms(&self, a: NodeKey, b: NodeKey) -> f64 {
        self.network.rtt_ms(a, b)
    }

    fn bandwidth_mbps(&self, a: NodeKey, b: NodeKey) -> f64 {
        self.network.bandwidth_mbps(a, b)
    }

    fn region_floor_ms(&self, from_region: &str, to_region: &str) -> f64 {
        match (self.regions.get(from_region), self.regions.get(to_region)) {
            (Some(&from), Some(&to)) => {
                let floor = self.floor[from * self.regions.len() + to];
                // A region none of whose nodes has an estimate has no floor to offer.
                if floor.is_finite() { floor } else { 0.0 }
            }
            _ => 0.0,
        }
    }
}
