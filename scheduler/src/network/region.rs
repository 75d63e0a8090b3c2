//! Regions: named sets of nodes, and the per-region summary that answers "how far is this node
//! from that region" in O(1).
//!
//! A summary describes where a region's members sit in the latency space with three robust
//! numbers, all medians so that a few unconverged or lying nodes cannot drag them:
//!
//! * `center`: the coordinate-wise median of the members' positions;
//! * `spread_ms`: the median distance of a member's position from `center`;
//! * `median_height_ms`: the median member height (a typical member's last mile).
//!
//! The typical RTT from a coordinate `x` to a member is then estimated as
//! `sqrt(‖x.v − center‖² + spread²) + x.height + median_height`. The square root is the root mean
//! square of `‖x.v − m.v‖` over members `m` scattered around the center (`E‖x − m‖² = ‖x − c‖² +
//! E‖m − c‖²`): far from the region it tends to `‖x.v − center‖`, and for a node inside the region
//! it stays about the typical member-to-member distance instead of collapsing to 0, so a node's
//! RTT to its own region is its typical RTT to its neighbours. Between two regions the same
//! reasoning gives `sqrt(‖c_a − c_b‖² + spread_a² + spread_b²) + median_height_a +
//! median_height_b`.

use std::collections::HashMap;

use super::vivaldi::{Coordinate, DIMS, euclidean};

/// A region's dense index in a `NetworkModel`, stable for the model's life (a region that loses
/// all its members keeps its id). Resolve it once with `NetworkModel::region_id` to skip the
/// name lookup on a hot path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RegionId(pub(crate) u32);

impl RegionId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// Where a region's members sit, as of the last `NetworkModel::refresh`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RegionSummary {
    pub center: [f64; DIMS],
    pub spread_ms: f64,
    pub median_height_ms: f64,
    /// Members whose coordinates went into the summary (those with at least one accepted sample
    /// or a restored coordinate).
    pub members: u32,
}

impl RegionSummary {
    /// Typical RTT in ms from a node at `c` to a member of this region.
    pub fn rtt_from(&self, c: &Coordinate) -> f64 {
        let d = euclidean(&c.v, &self.center);
        (d * d + self.spread_ms * self.spread_ms).sqrt() + c.height + self.median_height_ms
    }

    /// Typical RTT in ms between a member of this region and a member of `other`.
    pub fn rtt_to(&self, other: &RegionSummary) -> f64 {
        let d = euclidean(&self.center, &other.center);
        // Grouped so that the result is bit-for-bit symmetric in the two regions.
        let spreads = self.spread_ms * self.spread_ms + other.spread_ms * other.spread_ms;
        (d * d + spreads).sqrt() + (self.median_height_ms + other.median_height_ms)
    }

    /// The summary of `coords`, or None when there are none. O(n) expected (median selection).
    pub(crate) fn of(coords: &[Coordinate]) -> Option<Self> {
        if coords.is_empty() {
            return None;
        }
        let mut scratch: Vec<f64> = Vec::with_capacity(coords.len());
        let mut center = [0.0; DIMS];
        for (k, c) in center.iter_mut().enumerate() {
            scratch.clear();
            scratch.extend(coords.iter().map(|x| x.v[k]));
            *c = median(&mut scratch);
        }
        scratch.clear();
        scratch.extend(coords.iter().map(|x| euclidean(&x.v, &center)));
        let spread_ms = median(&mut scratch);
        scratch.clear();
        scratch.extend(coords.iter().map(|x| x.height));
        let median_height_ms = median(&mut scratch);
        Some(Self {
            center,
            spread_ms,
            median_height_ms,
            members: coords.len() as u32,
        })
    }
}

/// The median of a non-empty slice (mean of the two middle values for an even length), reordering
/// it. Values are finite (valid coordinates only), so `total_cmp` is the numeric order.
fn median(xs: &mut [f64]) -> f64 {
    let n = xs.len();
    if n == 0 {
        return 0.0;
    }
    let (_, upper, _) = xs.select_nth_unstable_by(n / 2, f64::total_cmp);
    let upper = *upper;
    if n % 2 == 1 {
        return upper;
    }
    // After selection everything left of n/2 is ≤ upper; the lower middle is their maximum.
    let lower = xs[..n / 2]
        .iter()
        .copied()
        .fold(f64::NEG_INFINITY, f64::max);
    (lower + upper) / 2.0
}

/// The region names, their member counts and their last summaries.
#[derive(Clone, Debug, Default)]
pub(crate) struct Regions {
    names: Vec<String>,
    /// Looked up, never iterated: its random hash order cannot affect results.
    ids: HashMap<String, RegionId>,
    members: Vec<u32>,
    summaries: Vec<Option<RegionSummary>>,
}

impl Regions {
    pub fn id(&self, name: &str) -> Option<RegionId> {
        self.ids.get(name).copied()
    }

    pub fn name(&self, id: RegionId) -> &str {
        self.names.get(id.index()).map_or("", String::as_str)
    }

    pub fn count(&self) -> usize {
        self.names.len()
    }

    /// The id of `name`, creating the region if it is new.
    pub fn intern(&mut self, name: &str) -> RegionId {
        if let Some(id) = self.id(name) {
            return id;
        }
        let id = RegionId(self.names.len() as u32);
        self.names.push(name.to_owned());
        self.ids.insert(name.to_owned(), id);
        self.members.push(0);
        self.summaries.push(None);
        id
    }

    pub fn join(&mut self, id: RegionId) {
        if let Some(m) = self.members.get_mut(id.index()) {
            *m += 1;
        }
    }

    pub fn leave(&mut self, id: RegionId) {
        if let Some(m) = self.members.get_mut(id.index()) {
            *m = m.saturating_sub(1);
        }
    }

    pub fn members(&self, id: RegionId) -> u32 {
        self.members.get(id.index()).copied().unwrap_or(0)
    }

    pub fn summary(&self, id: RegionId) -> Option<&RegionSummary> {
        self.summaries.get(id.index()).and_then(Option::as_ref)
    }

    /// Replaces every summary; `by_region[i]` holds region `i`'s placed members. A region with no
    /// live members gets no summary even if it had placed coordinates before.
    pub fn set_summaries(&mut self, by_region: &[Vec<Coordinate>]) {
        for (i, summary) in self.summaries.iter_mut().enumerate() {
            *summary = match (self.members[i], by_region.get(i)) {
                (0, _) | (_, None) => None,
                (_, Some(coords)) => RegionSummary::of(coords),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_lengths() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&mut [7.0]), 7.0);
    }

    #[test]
    fn own_region_is_not_zero_and_far_region_is_the_center_distance() {
        let at = |x: f64, y: f64| Coordinate {
            v: {
                let mut v = [0.0; DIMS];
                v[0] = x;
                v[1] = y;
                v
            },
            height: 10.0,
            error: 0.1,
        };
        let members = [
            at(-3.0, 0.0),
            at(3.0, 0.0),
            at(0.0, 3.0),
            at(0.0, -3.0),
            at(0.0, 0.0),
        ];
        let s = RegionSummary::of(&members).unwrap();
        assert_eq!(s.spread_ms, 3.0);
        let inside = s.rtt_from(&at(0.0, 0.0));
        assert!((inside - 23.0).abs() < 1e-9, "{inside}");
        let far = s.rtt_from(&at(400.0, 0.0));
        assert!((far - 420.0).abs() < 0.1, "{far}");
    }
}
