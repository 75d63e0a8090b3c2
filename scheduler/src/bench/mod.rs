//! The scheduler's benchmark scenarios, for `agora bench scheduler`. They are deterministic given
//! a seed; the only outside input is the clock the caller passes in, so this crate stays free of
//! I/O and the figures are measured where they are printed.

pub mod scale;

/// Nanoseconds from some fixed start, from the caller's clock.
pub type Clock<'a> = &'a dyn Fn() -> u64;

/// The `q`-quantile (0..=1) of sorted values, nearest rank.
pub fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}
