//! Measured node pairs: a robust estimate per pair (or direction) from its last few samples.

use std::{
    collections::HashMap,
    hash::{BuildHasherDefault, Hasher},
};

use super::{NodeKey, rng::mix};

/// How many recent samples a pair keeps.
pub const WINDOW: usize = 5;

/// The last [`WINDOW`] samples of one measurement and their median. The median (rather than an
/// average) ignores the odd sample inflated by a queue or a retransmission, and follows a real
/// route change after `WINDOW / 2 + 1` samples. Ledlie, Gardner, Seltzer ("Network Coordinates in
/// the Wild", NSDI 2007) found feeding such a filtered value, not the raw sample, to Vivaldi is
/// what keeps coordinates stable on real networks; `NetworkModel::observe_rtt` does that.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Window {
    samples: [f64; WINDOW],
    len: u8,
    next: u8,
    median: f64,
}

impl Window {
    fn new() -> Self {
        Self {
            samples: [0.0; WINDOW],
            len: 0,
            next: 0,
            median: 0.0,
        }
    }

    /// Adds a (finite, positive: the caller checks) sample and returns the new median.
    fn push(&mut self, sample: f64) -> f64 {
        self.samples[usize::from(self.next)] = sample;
        self.next = ((usize::from(self.next) + 1) % WINDOW) as u8;
        self.len = (usize::from(self.len) + 1).min(WINDOW) as u8;
        let n = usize::from(self.len);
        let mut sorted = self.samples;
        let sorted = &mut sorted[..n];
        sorted.sort_unstable_by(f64::total_cmp);
        self.median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        self.median
    }

    pub fn median(&self) -> f64 {
        self.median
    }
}

/// Records `sample` into the window at `key` of `map` (creating it) and returns its new median.
pub fn record(map: &mut PairMap, key: u64, sample: f64) -> f64 {
    map.entry(key).or_insert_with(Window::new).push(sample)
}

/// The unordered pair `{a, b}` as one map key.
pub fn pair_key(a: NodeKey, b: NodeKey) -> u64 {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    (u64::from(lo) << 32) | u64::from(hi)
}

/// The ordered pair `(from, to)` as one map key, for directional measurements.
pub fn directed_key(from: NodeKey, to: NodeKey) -> u64 {
    (u64::from(from) << 32) | u64::from(to)
}

/// A map from pair keys to sample windows. Its hasher is fixed (no per-process random state) and cheap; the map is only
/// ever looked up, never iterated, so its order cannot leak into results either way.
pub type PairMap = HashMap<u64, Window, BuildHasherDefault<PairHasher>>;

/// A hasher for the `u64` pair keys: the SplitMix64 finalizer, a full-avalanche bijection.
#[derive(Default)]
pub struct PairHasher {
    state: u64,
}

impl Hasher for PairHasher {
    fn finish(&self) -> u64 {
        self.state
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not used by `u64` keys; a correct (if slow) fallback for completeness.
        for &byte in bytes {
            self.state = mix(self.state ^ u64::from(byte));
        }
    }

    fn write_u64(&mut self, x: u64) {
        self.state = mix(self.state ^ x);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_recent_samples_ignores_a_spike_and_forgets_old_ones() {
        let mut map = PairMap::default();
        let k = pair_key(1, 2);
        assert_eq!(record(&mut map, k, 10.0), 10.0);
        assert_eq!(record(&mut map, k, 12.0), 11.0);
        assert_eq!(record(&mut map, k, 500.0), 12.0);
        record(&mut map, k, 11.0);
        assert_eq!(record(&mut map, k, 10.0), 11.0);
        for _ in 0..3 {
            record(&mut map, k, 40.0);
        }
        assert_eq!(map.get(&k).map(Window::median), Some(40.0));
    }

    #[test]
    fn pair_key_is_symmetric_and_directed_key_is_not() {
        assert_eq!(pair_key(3, 9), pair_key(9, 3));
        assert_ne!(pair_key(3, 9), pair_key(3, 8));
        assert_ne!(directed_key(3, 9), directed_key(9, 3));
    }
}
