//! Vivaldi coordinates with a height (Dabek, Cox, Kaashoek, Morris, "Vivaldi: A Decentralized
//! Network Coordinate System", SIGCOMM 2004).
//!
//! A coordinate is a point `v` in a small Euclidean space plus a `height`. The Euclidean part
//! models the Internet core, where delay follows geography; the height models a node's access link
//! (its last mile: DSL, cable, Wi-Fi), which every packet crosses whatever the destination. A
//! predicted RTT is therefore `‖a.v − b.v‖ + a.height + b.height` (the paper's height vectors,
//! §5.5: `[x, xh] − [y, yh] = [x − y, xh + yh]` and `‖[x, xh]‖ = ‖x‖ + xh`). Without heights a
//! node with a slow last mile has to sit far from everyone in every direction at once, which a
//! Euclidean space cannot express; the paper reports heights beat adding Euclidean dimensions.
//!
//! **Why 2 dimensions + height.** The paper found 2-D + height as accurate as 3-D or 5-D on
//! its Internet data sets, and it is what we measured too: on the synthetic 8-region world
//! (`super::synthetic`, DT-FM's measured AWS matrix plus residential last miles), 32 samples per
//! node and `refit(10)`, the median / p90 relative error on unmeasured pairs is 2.1 % / 9.4 % at
//! 1,000 nodes and 2.4 % / 10.2 % at 10,000 with 2-D, against 2.7 % / 13.0 % and 2.7 % / 14.3 %
//! with 3-D and 2.4 % / 14.7 % and 3.2 % / 18.0 % with 4-D. Fewer free dimensions converge faster
//! from few samples, and the world's inter-continental structure (Asia – US – Europe is nearly a
//! line, with the US between) is close to planar; the height, not more dimensions, is what
//! absorbs last miles. Intra-region pairs gain the most (e.g. Oregon–Oregon +13 % vs +56 % in
//! 3-D). Each estimate is one `DIMS`-dimensional norm, so 2-D is also the cheapest.
//!
//! The update rule is the paper's Figure 3 (adaptive timestep), with height vectors:
//!
//! ```text
//! w   = e_i / (e_i + e_j)                       sample weight: trust the less confused node
//! e_s = | dist(x_i, x_j) − rtt | / rtt          relative error of this sample
//! e_i = e_s · c_e · w + e_i · (1 − c_e · w)     moving average of the local error
//! δ   = c_c · w                                 adaptive timestep
//! x_i = x_i + δ · (rtt − dist(x_i, x_j)) · u(x_i − x_j)
//! ```
//!
//! where `u(x_i − x_j)` is the unit height vector `[v_i − v_j, h_i + h_j] / (‖v_i − v_j‖ + h_i +
//! h_j)`: a spring that is too long pulls both the positions together and the heights down, one that
//! is too short pushes them apart and the heights up. Heights stay positive (the paper clamps them
//! at a small positive value). When the two positions coincide (every node starts at the origin)
//! the paper picks a random direction; we push along a random Euclidean unit vector.
//!
//! Constants `c_c = c_e = 0.25` are the paper's recommended values (§3.4, §4).

use super::rng::SplitMix64;

/// Euclidean dimensions of a coordinate (see the module docs for why 2).
pub const DIMS: usize = 2;

/// The paper's `c_c`: the largest fraction of a sample's error a node moves by.
pub const C_C: f64 = 0.25;
/// The paper's `c_e`: how fast the local error estimate follows new samples.
pub const C_E: f64 = 0.25;
/// A new node knows nothing: its error starts at 1 (100 %), so its first samples move it far and
/// confident peers barely move towards it.
pub const INITIAL_ERROR: f64 = 1.0;
/// Errors are kept in `[MIN_ERROR, MAX_ERROR]`: the floor keeps `e_i + e_j > 0` and lets a settled
/// node still follow a real route change; the cap stops one wild sample from making a node
/// unmovable-by-others for a long time.
pub const MIN_ERROR: f64 = 1e-3;
pub const MAX_ERROR: f64 = 1.5;
/// Heights stay at least this (ms), the paper's "small positive value".
pub const MIN_HEIGHT_MS: f64 = 0.01;
/// RTT samples above one minute are not network round trips (a suspended host, a broken clock);
/// they are ignored like non-finite ones.
pub const MAX_RTT_MS: f64 = 60_000.0;
/// Every component and the height stay within `±MAX_COORD_MS`, so sums of squares stay far from
/// overflow and a coordinate can never become infinite or NaN.
pub const MAX_COORD_MS: f64 = 1e6;
/// Positions closer than this (ms) are treated as coinciding (random push direction).
const COINCIDENT_MS: f64 = 1e-6;

/// A node's position in the latency space. All fields are in milliseconds except `error`, a
/// unitless relative error estimate (0.1 = the coordinate predicts RTTs within about 10 %).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Coordinate {
    pub v: [f64; DIMS],
    pub height: f64,
    pub error: f64,
}

impl Default for Coordinate {
    fn default() -> Self {
        Self::origin()
    }
}

impl Coordinate {
    /// Where a node starts: the origin, the smallest height, and no confidence.
    pub const fn origin() -> Self {
        Self {
            v: [0.0; DIMS],
            height: MIN_HEIGHT_MS,
            error: INITIAL_ERROR,
        }
    }

    /// The predicted RTT in ms between two coordinates: `‖a.v − b.v‖ + a.height + b.height`.
    pub fn distance(&self, other: &Coordinate) -> f64 {
        // Heights summed first so that the result is bit-for-bit symmetric in the two ends.
        euclidean(&self.v, &other.v) + (self.height + other.height)
    }

    /// Whether every field is finite and within the bounds the update rule maintains; only such
    /// coordinates are accepted from outside (`NetworkModel::set_coordinate`).
    pub fn is_valid(&self) -> bool {
        self.v
            .iter()
            .all(|x| x.is_finite() && x.abs() <= MAX_COORD_MS)
            && self.height.is_finite()
            && (MIN_HEIGHT_MS..=MAX_COORD_MS).contains(&self.height)
            && self.error.is_finite()
            && (MIN_ERROR..=MAX_ERROR).contains(&self.error)
    }

    /// One Vivaldi step of `self` (the probing node) against `remote`, for a measured `rtt_ms`.
    /// Returns false, leaving `self` untouched, when the sample is not a usable RTT (not finite,
    /// ≤ 0, above [`MAX_RTT_MS`]) or either coordinate is invalid. `rng` is drawn from only when
    /// the two positions coincide.
    pub(crate) fn update(
        &mut self,
        remote: &Coordinate,
        rtt_ms: f64,
        rng: &mut SplitMix64,
    ) -> bool {
        if !usable_rtt(rtt_ms) || !self.is_valid() || !remote.is_valid() {
            return false;
        }
        let before = *self;
        let mut diff = [0.0; DIMS];
        for (d, (a, b)) in diff.iter_mut().zip(self.v.iter().zip(&remote.v)) {
            *d = a - b;
        }
        let norm = norm(&diff);
        let dist = norm + self.height + remote.height;

        // (1) Sample weight. Both errors are ≥ MIN_ERROR, so the sum is > 0.
        let w = self.error / (self.error + remote.error);
        // (2) Relative error of this sample; rtt_ms > 0 was checked above.
        let sample_error = ((dist - rtt_ms).abs() / rtt_ms).min(MAX_ERROR);
        // (3) Moving average of the local error.
        self.error =
            (sample_error * C_E * w + self.error * (1.0 - C_E * w)).clamp(MIN_ERROR, MAX_ERROR);
        // (4) Move by the adaptive timestep along the unit height vector.
        let force = C_C * w * (rtt_ms - dist);
        let heights = self.height + remote.height;
        let (height_share, denom) = if norm < COINCIDENT_MS {
            // Coinciding positions: push the position along a random direction, leave the height.
            diff = random_unit(rng);
            (0.0, 1.0)
        } else {
            (heights, norm + heights)
        };
        let scale = force / denom;
        for (x, d) in self.v.iter_mut().zip(&diff) {
            *x = (*x + scale * d).clamp(-MAX_COORD_MS, MAX_COORD_MS);
        }
        self.height = (self.height + scale * height_share).clamp(MIN_HEIGHT_MS, MAX_COORD_MS);

        if self.is_valid() {
            true
        } else {
            // Unreachable given the clamps above; kept so that no arithmetic surprise can ever
            // leave a NaN in the model.
            *self = before;
            false
        }
    }
}

/// Whether `rtt_ms` is a sample the model accepts.
pub fn usable_rtt(rtt_ms: f64) -> bool {
    rtt_ms.is_finite() && rtt_ms > 0.0 && rtt_ms <= MAX_RTT_MS
}

pub(crate) fn euclidean(a: &[f64; DIMS], b: &[f64; DIMS]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f64>()
        .sqrt()
}

fn norm(v: &[f64; DIMS]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

/// A uniformly random unit vector: rejection-sample the unit ball, then normalize.
fn random_unit(rng: &mut SplitMix64) -> [f64; DIMS] {
    loop {
        let mut v = [0.0; DIMS];
        for x in &mut v {
            *x = rng.range_f64(-1.0, 1.0);
        }
        let n = norm(&v);
        // The ball fills > 50 % of the cube in ≤ 3 dimensions, so this loop ends fast; the lower
        // bound keeps the division well conditioned.
        if (0.1..=1.0).contains(&n) {
            for x in &mut v {
                *x /= n;
            }
            return v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(x: f64, height: f64, error: f64) -> Coordinate {
        let mut v = [0.0; DIMS];
        v[0] = x;
        Coordinate { v, height, error }
    }

    #[test]
    fn a_step_closes_part_of_the_gap_and_splits_it_between_position_and_height() {
        let remote = at(0.0, 10.0, 0.5);
        let mut me = at(50.0, 10.0, 0.5);
        let before = me.distance(&remote);
        assert_eq!(before, 70.0);
        let mut rng = SplitMix64::new(1);
        assert!(me.update(&remote, 100.0, &mut rng));
        // w = 0.5, δ = 0.125: the spring is 30 ms too short, so the step is 3.75 ms, split 50:20
        // between the position (pushed away) and the height (pushed up).
        assert!((me.distance(&remote) - 73.75).abs() < 1e-9);
        assert!((me.v[0] - (50.0 + 3.75 * 50.0 / 70.0)).abs() < 1e-9);
        assert!((me.height - (10.0 + 3.75 * 20.0 / 70.0)).abs() < 1e-9);
        // e_s = 0.3; e_i = 0.3·0.125 + 0.5·0.875.
        assert!((me.error - 0.475).abs() < 1e-9);
    }

    #[test]
    fn heights_stay_positive_and_coincident_nodes_separate() {
        let mut rng = SplitMix64::new(2);
        let remote = at(0.0, 30.0, 0.1);
        let mut me = at(0.0, 30.0, 1.0);
        for _ in 0..50 {
            assert!(me.update(&remote, 1.0, &mut rng));
            assert!(me.height >= MIN_HEIGHT_MS && me.is_valid());
        }
        let mut a = Coordinate::origin();
        assert!(a.update(&Coordinate::origin(), 80.0, &mut rng));
        assert!(euclidean(&a.v, &[0.0; DIMS]) > 1.0, "{a:?}");
    }

    #[test]
    fn unusable_rtts_change_nothing() {
        let mut rng = SplitMix64::new(3);
        let remote = at(10.0, 5.0, 0.2);
        let mut me = at(-10.0, 5.0, 0.2);
        let before = me;
        for rtt in [f64::NAN, f64::INFINITY, 0.0, -3.0, MAX_RTT_MS + 1.0] {
            assert!(!me.update(&remote, rtt, &mut rng));
        }
        let invalid = at(f64::NAN, 5.0, 0.2);
        assert!(!me.update(&invalid, 20.0, &mut rng));
        assert_eq!(me, before);
    }
}
