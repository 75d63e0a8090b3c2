//! Dynamic base prices per GPU class.
//!
//! # The model
//!
//! Every GPU class (the GPU model string a node reports, such as `H100-80GB`) has a **base price**
//! per GPU-hour. Once per epoch (the hub picks its length, minutes rather than seconds) the hub
//! measures each class's utilization,
//!
//! ```text
//! u = allocated GPU-time / offered GPU-time      (offered = healthy GPUs on ready nodes)
//! ```
//!
//! and moves the base price toward the level at which `u` would equal a target utilization `T`
//! (default 80%), by at most `max_change` (default 12.5%) per epoch:
//!
//! ```text
//! below target:  price' = price · (1 − max_change · (T − u) / T)        u = 0 → −max_change
//! above target:  price' = price · (1 + max_change · (u − T) / (1 − T))  u = 1 → +max_change
//! at target:     price' = price
//! ```
//!
//! then clamps it to `[floor, ceiling]`. This is the base fee rule of Ethereum's EIP-1559
//! ("Fee market change for ETH 1.0 chain", <https://eips.ethereum.org/EIPS/eip-1559>):
//! `base_fee' = base_fee · (1 + (gas_used − gas_target) / gas_target / 8)`, where
//! `BASE_FEE_MAX_CHANGE_DENOMINATOR = 8` bounds the change to ±12.5% per block. A block may hold
//! twice its gas target, so there `(used − target) / target` spans exactly −1..=+1. Utilization
//! here cannot exceed 100% and the target is not 50%, so the deviation is normalized separately
//! on each side of the target: an idle class falls by the full step and a saturated class rises by
//! the full step, whatever the target. With `T = 50%` the rule is EIP-1559's exactly.
//!
//! A job pays [`effective_price`] `= max(node ask, base price)` per GPU-hour and is only placed
//! where that is [`affordable`] within its maximum price. The base price is thus a reserve price:
//! while a class has spare capacity it drifts down to the floor and node asks alone set the
//! price; when a class runs hot it climbs until enough jobs find it too expensive (or enough
//! providers bring more GPUs) for utilization to settle near the target, which keeps headroom for
//! new jobs and for re-placing jobs from failed nodes.
//!
//! **Where the money goes.** EIP-1559 burns the base fee; Agora has nothing to burn into. The
//! whole effective price is paid to the provider whose GPUs run the job (less the protocol fee that
//! settlement takes from every payment): the node keeps its ask, and the difference between ask
//! and base price is a scarcity premium that also goes to the provider. That premium is the signal
//! that draws more hardware into the classes that are short of it.
//!
//! # Rising only while jobs take the class
//!
//! Utilization above the target raises the price only in an epoch in which jobs were still placed
//! on the class (`ClassUsage::placed_gpus > 0`); otherwise the price holds. The base price is a
//! reserve: once no job takes the class at it — everything pending is priced out, or nothing is
//! pending — raising it further deters nobody, and long jobs that keep the class above the target
//! would otherwise drive it up epoch after epoch, far past every job's maximum, to be walked back
//! down ±12.5% at a time once they end (`agora simulate` showed it: in a 1,000-node run an H200
//! class climbed from the floor to 8.59 per GPU-hour while long jobs held it above the target). Falling is never held back: an idle class
//! needs no buyer to get cheaper. EIP-1559 has no such rule because every block's demand is new;
//! here most of the utilization is work placed epochs ago.
//!
//! # Why per GPU class
//!
//! Demand and supply differ per GPU model: an H100 shortage says nothing about consumer cards,
//! and one market-wide price would overprice idle classes while underpricing scarce ones. The
//! class is the exact model string (no normalization); each class has its own price and history.
//!
//! # Why ±12.5%
//!
//! It is EIP-1559's bound, and serves the same two purposes here. It is fast: a price can double
//! in 6 epochs (1.125⁶ ≈ 2.03) and halve in 6 (0.875⁶ ≈ 0.45). And it is predictable: a quote
//! shown to a user can be stale by at most one step per epoch, so a maximum price 12.5% above the
//! quote survives the next epoch. A bounded step also damps oscillation, since supply answers
//! prices slowly. The bound is configurable (`max_change_bps`).
//!
//! # Arithmetic and rounding
//!
//! All amounts are integer micro-units per GPU-hour (1 unit = 1,000,000 micro-units) in `u64`;
//! there are no floats. The change of an epoch is computed exactly as a rational number (with
//! 256-bit intermediates, so no input overflows) and rounded **once**:
//!
//! - its magnitude is rounded to the nearest micro-unit, **ties away from zero** (half up): at full
//!   utilization 1,000,004 becomes 1,125,005 (+125,000.5 → +125,001) and at zero utilization it
//!   becomes 875,003 (−125,000.5 → −125,001);
//! - a class off its target moves by **at least one micro-unit** in the right direction (as
//!   EIP-1559 does for increases), so rounding can never freeze a price, not even a price of 0;
//! - the result saturates at `0` and `u64::MAX`, then is clamped to `[floor, ceiling]`.
//!
//! So one epoch moves a price by at most `price · max_change + 1` micro-units.
//!
//! # Inputs that carry no signal
//!
//! A class with no offered capacity in an epoch (or absent from the epoch's usage) keeps its
//! price: utilization is 0/0 there, undefined. Lowering the price would crash it whenever all of a
//! class's nodes are down or in maintenance, and they would come back to a flood of underpriced
//! jobs; raising it would answer demand that was never measured. Allocation above the offered
//! capacity (possible when the two figures are sampled at slightly different moments) counts as
//! 100% utilization. Several usage entries for one class are summed.

use std::{
    collections::{BTreeMap, btree_map::Entry},
    fmt,
};

use serde::{Deserialize, Serialize};

/// Basis points in one whole (100%).
pub const BPS: u32 = 10_000;

/// Micro-units in one unit of money.
pub const MICROS_PER_UNIT: u64 = 1_000_000;

/// How base prices move. Validated by [`PricingParams::validate`], which [`PriceBook::new`] calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PricingParams {
    /// The utilization at which the price holds, in basis points; 1..=10000. Default 8000 (80%).
    pub target_utilization_bps: u32,
    /// The largest change per epoch, in basis points of the price; 1..=10000. Default 1250 (12.5%).
    pub max_change_bps: u32,
    /// The lowest base price, in micro-units per GPU-hour. Default 10,000 (0.01 per GPU-hour).
    pub floor_micros: u64,
    /// The highest base price, in micro-units per GPU-hour, if any. Default none.
    pub ceiling_micros: Option<u64>,
    /// The price of a class before its first epoch; `floor ≤ initial ≤ ceiling`. Default the
    /// floor: the base price only bites once a class is busy, so a new class starts with node
    /// asks setting its price.
    pub initial_micros: u64,
}

impl Default for PricingParams {
    fn default() -> Self {
        Self {
            target_utilization_bps: 8_000,
            max_change_bps: 1_250,
            floor_micros: 10_000,
            ceiling_micros: None,
            initial_micros: 10_000,
        }
    }
}

impl PricingParams {
    /// Checks the ranges; the error names the offending field.
    pub fn validate(&self) -> Result<(), PricingError> {
        if !(1..=BPS).contains(&self.target_utilization_bps) {
            return Err(PricingError::invalid(
                "target_utilization_bps",
                format!("must be 1..=10000, got {}", self.target_utilization_bps),
            ));
        }
        if !(1..=BPS).contains(&self.max_change_bps) {
            return Err(PricingError::invalid(
                "max_change_bps",
                format!("must be 1..=10000, got {}", self.max_change_bps),
            ));
        }
        if let Some(ceiling) = self.ceiling_micros {
            if ceiling < self.floor_micros {
                return Err(PricingError::invalid(
                    "ceiling_micros",
                    format!(
                        "must not be below floor_micros ({}), got {ceiling}",
                        self.floor_micros
                    ),
                ));
            }
            if self.initial_micros > ceiling {
                return Err(PricingError::invalid(
                    "initial_micros",
                    format!(
                        "must not be above ceiling_micros ({ceiling}), got {}",
                        self.initial_micros
                    ),
                ));
            }
        }
        if self.initial_micros < self.floor_micros {
            return Err(PricingError::invalid(
                "initial_micros",
                format!(
                    "must not be below floor_micros ({}), got {}",
                    self.floor_micros, self.initial_micros
                ),
            ));
        }
        Ok(())
    }

    fn clamp(&self, price: u64) -> u64 {
        let price = price.max(self.floor_micros);
        match self.ceiling_micros {
            Some(ceiling) => price.min(ceiling),
            None => price,
        }
    }
}

/// Why parameters or a snapshot were refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PricingError {
    /// A parameter is out of range.
    InvalidParam { field: &'static str, reason: String },
    /// A snapshot lists a class twice.
    DuplicateClass(String),
}

impl PricingError {
    fn invalid(field: &'static str, reason: String) -> Self {
        Self::InvalidParam { field, reason }
    }

    /// The parameter at fault, if the error is about one.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            Self::InvalidParam { field, .. } => Some(field),
            Self::DuplicateClass(_) => None,
        }
    }
}

impl fmt::Display for PricingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidParam { field, reason } => {
                write!(f, "invalid pricing parameter {field}: {reason}")
            }
            Self::DuplicateClass(class) => {
                write!(f, "price snapshot lists GPU class {class:?} more than once")
            }
        }
    }
}

impl std::error::Error for PricingError {}

/// One class's usage over an epoch: the time-weighted (or end-of-epoch) GPU figures, in any one
/// unit (GPU-milliseconds by convention) as long as both use the same.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassUsage {
    pub class: String,
    pub allocated_gpu_ms: u64,
    pub offered_gpu_ms: u64,
    /// GPUs of the class newly placed during the epoch: whether jobs still took the class at its
    /// price (see "Rising only while jobs take the class" in the module docs).
    #[serde(default)]
    pub placed_gpus: u64,
}

/// One class's base price and what the last epoch did to it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassPrice {
    pub class: String,
    /// Base price per GPU-hour, in micro-units.
    pub base_micros: u64,
    /// Utilization in the last epoch, in basis points (rounded half up); 0 when the class had no
    /// offered capacity in it.
    pub utilization_bps: u32,
    /// How the last epoch changed the price, in basis points of the previous price (rounded half
    /// away from zero); 0 when the class had no offered capacity in it. When the previous price
    /// was 0 the relative change is undefined, and the step the utilization asked for is given.
    pub change_bps: i32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ClassState {
    base_micros: u64,
    utilization_bps: u32,
    change_bps: i32,
}

/// Base prices per GPU class. Serializes as `{"params": …, "classes": [ClassPrice, …]}`;
/// deserializing goes through [`PriceBook::restore`], so it validates the same way.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "PriceBookRepr", try_from = "PriceBookRepr")]
pub struct PriceBook {
    params: PricingParams,
    classes: BTreeMap<String, ClassState>,
}

#[derive(Serialize, Deserialize)]
struct PriceBookRepr {
    params: PricingParams,
    classes: Vec<ClassPrice>,
}

impl From<PriceBook> for PriceBookRepr {
    fn from(book: PriceBook) -> Self {
        Self {
            classes: book.snapshot(),
            params: book.params,
        }
    }
}

impl TryFrom<PriceBookRepr> for PriceBook {
    type Error = PricingError;

    fn try_from(repr: PriceBookRepr) -> Result<Self, Self::Error> {
        PriceBook::restore(repr.params, repr.classes)
    }
}

impl PriceBook {
    /// An empty book: every class is at `initial_micros` until its first epoch.
    pub fn new(params: PricingParams) -> Result<Self, PricingError> {
        params.validate()?;
        Ok(Self {
            params,
            classes: BTreeMap::new(),
        })
    }

    /// A book from a [`snapshot`](Self::snapshot), as the hub persisted it. Prices outside
    /// `[floor, ceiling]` (the parameters may have changed since) are clamped into it; a class
    /// listed twice is an error.
    pub fn restore(
        params: PricingParams,
        snapshot: impl IntoIterator<Item = ClassPrice>,
    ) -> Result<Self, PricingError> {
        let mut book = Self::new(params)?;
        for entry in snapshot {
            let state = ClassState {
                base_micros: params.clamp(entry.base_micros),
                utilization_bps: entry.utilization_bps,
                change_bps: entry.change_bps,
            };
            match book.classes.entry(entry.class) {
                Entry::Occupied(taken) => {
                    return Err(PricingError::DuplicateClass(taken.key().clone()));
                }
                Entry::Vacant(free) => {
                    free.insert(state);
                }
            }
        }
        Ok(book)
    }

    /// The parameters the book runs with.
    pub fn params(&self) -> &PricingParams {
        &self.params
    }

    /// The base price of a class per GPU-hour, in micro-units; `initial_micros` for a class never
    /// seen.
    pub fn base_price(&self, class: &str) -> u64 {
        self.classes
            .get(class)
            .map_or(self.params.initial_micros, |state| state.base_micros)
    }

    /// Closes an epoch: moves each class's price by its utilization (see the module docs).
    /// Classes absent from `usage`, or offered no capacity, keep their price.
    pub fn advance_epoch(&mut self, usage: &[ClassUsage]) {
        let mut totals: BTreeMap<&str, (u64, u64, u64)> = BTreeMap::new();
        for entry in usage {
            let total = totals.entry(entry.class.as_str()).or_default();
            total.0 = total.0.saturating_add(entry.allocated_gpu_ms);
            total.1 = total.1.saturating_add(entry.offered_gpu_ms);
            total.2 = total.2.saturating_add(entry.placed_gpus);
        }
        for state in self.classes.values_mut() {
            state.utilization_bps = 0;
            state.change_bps = 0;
        }
        for (class, (allocated, offered, placed)) in totals {
            let initial = self.params.initial_micros;
            let state = self.classes.entry(class.to_owned()).or_insert(ClassState {
                base_micros: initial,
                utilization_bps: 0,
                change_bps: 0,
            });
            if offered > 0 {
                *state = step(&self.params, state.base_micros, allocated, offered, placed);
            }
        }
    }

    /// Every known class's price, sorted by class.
    pub fn snapshot(&self) -> Vec<ClassPrice> {
        self.classes
            .iter()
            .map(|(class, state)| ClassPrice {
                class: class.clone(),
                base_micros: state.base_micros,
                utilization_bps: state.utilization_bps,
                change_bps: state.change_bps,
            })
            .collect()
    }
}

/// What a job pays per GPU-hour on a node: the node's ask, or the class's base price when that is
/// higher. The whole amount goes to the provider (see the module docs).
pub fn effective_price(node_ask_micros: u64, base_micros: u64) -> u64 {
    node_ask_micros.max(base_micros)
}

/// Whether a job with maximum price `max_price_micros` may run at `effective_micros`: a job never
/// pays above its maximum.
pub fn affordable(effective_micros: u64, max_price_micros: u64) -> bool {
    effective_micros <= max_price_micros
}

/// One class's epoch. `offered > 0`.
fn step(
    params: &PricingParams,
    price: u64,
    allocated: u64,
    offered: u64,
    placed: u64,
) -> ClassState {
    let bps = u128::from(BPS);
    let target = u128::from(params.target_utilization_bps);
    let max_change = u128::from(params.max_change_bps);
    let offered = u128::from(offered);
    let allocated = u128::from(allocated).min(offered);

    // Utilization and target, both scaled by `BPS · offered` (each < 2^78).
    let used = allocated * bps;
    let wanted = target * offered;
    let utilization_bps = div_round_half_up(used, offered) as u32;

    // deviation = |u − T| / span, span = T below the target and 1 − T above it, so that the
    // deviation is 1 at u = 0 and at u = 1.
    let (rising, gap, span) = match used.cmp(&wanted) {
        std::cmp::Ordering::Equal => {
            return ClassState {
                base_micros: params.clamp(price),
                utilization_bps,
                change_bps: 0,
            };
        }
        // Above the target but nobody took the class at its price this epoch: a higher reserve
        // would deter nobody more, only overshoot (module docs). Hold.
        std::cmp::Ordering::Greater if placed == 0 => {
            return ClassState {
                base_micros: params.clamp(price),
                utilization_bps,
                change_bps: 0,
            };
        }
        std::cmp::Ordering::Greater => (true, used - wanted, (bps - target) * offered),
        std::cmp::Ordering::Less => (false, wanted - used, wanted),
    };

    // |Δ| = price · max_change/BPS · gap/span, one rounding of the exact quotient.
    let numerator = u128::from(price) * max_change; // < 2^78
    let denominator = bps * span; // < 2^92, > 0
    let exact = mul_div_round_half_up(numerator, gap, denominator);
    let delta = u64::try_from(exact).unwrap_or(u64::MAX).max(1);
    let next = if rising {
        price.saturating_add(delta)
    } else {
        price.saturating_sub(delta)
    };
    let next = params.clamp(next);

    let change_bps = if price == 0 {
        // The step asked for: max_change · gap/span, at most max_change.
        div_round_half_up(max_change * gap, span) as i32
    } else {
        div_round_half_up(u128::from(price.abs_diff(next)) * bps, u128::from(price)) as i32
    };
    let change_bps = if next < price || (price == 0 && !rising) {
        -change_bps
    } else {
        change_bps
    };
    ClassState {
        base_micros: next,
        utilization_bps,
        change_bps,
    }
}

/// `n / d` rounded to nearest, ties up. `d > 0`.
fn div_round_half_up(n: u128, d: u128) -> u128 {
    let (q, r) = (n / d, n % d);
    if r >= d - r { q + 1 } else { q }
}

/// `a · b / d` rounded to nearest, ties up, with a 256-bit product; saturates at `u128::MAX`.
/// `d > 0`.
fn mul_div_round_half_up(a: u128, b: u128, d: u128) -> u128 {
    let (hi, lo) = mul_wide(a, b);
    let (q, r) = div_wide(hi, lo, d);
    if r >= d - r { q.saturating_add(1) } else { q }
}

/// The full 256-bit product as (high, low) halves.
fn mul_wide(a: u128, b: u128) -> (u128, u128) {
    const LOW: u128 = u64::MAX as u128;
    let (a1, a0) = (a >> 64, a & LOW);
    let (b1, b0) = (b >> 64, b & LOW);
    let (p00, p01, p10, p11) = (a0 * b0, a0 * b1, a1 * b0, a1 * b1);
    // Each term < 2^64, so the sum < 3 · 2^64 fits.
    let middle = (p00 >> 64) + (p01 & LOW) + (p10 & LOW);
    let lo = (p00 & LOW) | (middle << 64);
    let hi = p11 + (p01 >> 64) + (p10 >> 64) + (middle >> 64);
    (hi, lo)
}

/// (high, low) / d as (quotient saturated at `u128::MAX`, remainder). `d > 0`.
fn div_wide(hi: u128, lo: u128, d: u128) -> (u128, u128) {
    if hi == 0 {
        return (lo / d, lo % d);
    }
    let mut quotient: u128 = 0;
    let mut overflow = false;
    let mut remainder: u128 = 0;
    for i in (0..256u32).rev() {
        let bit = if i >= 128 {
            (hi >> (i - 128)) & 1
        } else {
            (lo >> i) & 1
        };
        // The shifted remainder is < 2d and may need a 129th bit, kept in `carry`.
        let carry = remainder >> 127;
        remainder = (remainder << 1) | bit;
        let subtract = carry == 1 || remainder >= d;
        if subtract {
            remainder = remainder.wrapping_sub(d);
        }
        overflow |= quotient >> 127 == 1;
        quotient = (quotient << 1) | u128::from(subtract);
    }
    (if overflow { u128::MAX } else { quotient }, remainder)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wide_arithmetic_matches_narrow_where_narrow_fits() {
        let values = [
            0u128,
            1,
            2,
            7,
            255,
            1 << 63,
            u64::MAX as u128,
            12_345_678_901,
        ];
        for &a in &values {
            for &b in &values {
                let (hi, lo) = mul_wide(a, b);
                assert_eq!((hi, lo), (0, a * b), "{a} · {b}");
                for &d in &values[1..] {
                    assert_eq!(div_wide(hi, lo, d), (a * b / d, a * b % d));
                }
            }
        }
    }

    #[test]
    fn wide_arithmetic_past_128_bits() {
        // (2^128 − 1)^2 = 2^256 − 2^129 + 1.
        assert_eq!(mul_wide(u128::MAX, u128::MAX), (u128::MAX - 1, 1));
        // (2^100 · 3^20) / 3^20 = 2^100, through the long division.
        let three20 = 3u128.pow(20);
        let (hi, lo) = mul_wide(1 << 100, three20 * 5);
        assert!(hi > 0);
        assert_eq!(div_wide(hi, lo, three20), (5 << 100, 0));
        assert!(div_wide(hi, lo, three20 * 5 + 1).1 < three20 * 5 + 1);
        // A divisor above 2^127 exercises the 129th remainder bit.
        let d = u128::MAX - 12;
        let (hi, lo) = mul_wide(d, 1_000_003);
        assert_eq!(div_wide(hi, lo, d), (1_000_003, 0));
        let (hi, lo) = mul_wide(u128::MAX, u128::MAX);
        assert_eq!(div_wide(hi, lo, u128::MAX), (u128::MAX, 0));
        assert_eq!(div_wide(hi, lo, 3).0, u128::MAX, "saturates");
    }

    #[test]
    fn rounding_ties_up() {
        assert_eq!(div_round_half_up(5, 2), 3);
        assert_eq!(div_round_half_up(7, 4), 2);
        assert_eq!(div_round_half_up(5, 4), 1);
        assert_eq!(mul_div_round_half_up(1 << 100, 3, 2 << 100), 2);
        assert_eq!(mul_div_round_half_up(u128::MAX, u128::MAX, 1), u128::MAX);
    }
}
