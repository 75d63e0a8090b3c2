//! How strongly a spot check catches a cheater, and what it costs.

/// The probability that a spot check of `sampled` chunks catches a worker that corrupts each chunk
/// independently with probability `cheat_fraction` (clamped to [0, 1]): `1 − (1 − f)^k`.
///
/// **Why this is exact although the sample is drawn without replacement.** The k sampled chunks
/// are distinct, so one might expect the hypergeometric formula of drawing from an urn. But here
/// the cheater decides each chunk's fate on its own coin (corrupt with probability f), before the
/// seed exists, and independently of it. Conditional on any fixed set of k *distinct* chunks, those
/// k coins are independent, so the set holds no corrupted chunk with probability exactly
/// `(1 − f)^k`; averaging over the sample (independent of the coins, because the seed is drawn
/// after the commitments) leaves the same value. Distinctness is what makes the k coins different
/// coins; sampling with replacement would be weaker (a repeated chunk tells nothing new). This is
/// exactly the model of an agent run with `--cheat partial:f`. A cheater that corrupts a fixed
/// number of chunks instead is the urn case: [`detection_probability_fixed`].
///
/// Computed as `−expm1(k · ln(1 − f))`, accurate also for small f where `1 − (1 − f)^k` would
/// lose digits.
pub fn detection_probability(cheat_fraction: f64, sampled: usize) -> f64 {
    let f = cheat_fraction.clamp(0.0, 1.0);
    if f == 1.0 {
        return if sampled == 0 { 0.0 } else { 1.0 };
    }
    -((sampled as f64) * (-f).ln_1p()).exp_m1()
}

/// The probability that a spot check of `sampled` of `chunks` chunks finds at least one of exactly
/// `corrupted` corrupted chunks (the hypergeometric case: the cheater fixed how many chunks to
/// corrupt): `1 − C(N − m, k) / C(N, k)`. At least [`detection_probability`] with
/// `f = m / N`, since a sample without replacement cannot hit the same clean chunk twice.
pub fn detection_probability_fixed(corrupted: usize, chunks: usize, sampled: usize) -> f64 {
    let (m, n, k) = (corrupted.min(chunks), chunks, sampled.min(chunks));
    if k + m > n {
        return 1.0;
    }
    // C(N − m, k) / C(N, k) = Π_{i<k} (N − m − i) / (N − i)
    let missed: f64 = (0..k)
        .map(|i| (n - m - i) as f64 / (n - i) as f64)
        .product();
    1.0 - missed
}

/// The share of a job's GPU-seconds a spot check adds: the verifier recomputes `sampled` of
/// `chunks` equal chunks, `k / N` (the recomputation runs on another node; the hub only compares
/// digests). Zero for no chunks.
pub fn spot_check_overhead(sampled: usize, chunks: usize) -> f64 {
    if chunks == 0 {
        return 0.0;
    }
    sampled.min(chunks) as f64 / chunks as f64
}

/// The fewest sampled chunks that catch a worker corrupting a fraction `cheat_fraction` of chunks
/// with probability at least `target`: the smallest k with `1 − (1 − f)^k ≥ target`. `None` when
/// no k does (f = 0, or a target of 1 or more with f < 1, or a target that is not a number).
pub fn samples_for_detection(cheat_fraction: f64, target: f64) -> Option<usize> {
    let f = cheat_fraction.clamp(0.0, 1.0);
    if target.is_nan() || target >= 1.0 && f < 1.0 || f == 0.0 {
        return None;
    }
    if target <= 0.0 || f == 1.0 {
        return Some(usize::from(target > 0.0));
    }
    let k = ((-target).ln_1p() / (-f).ln_1p()).ceil().max(1.0) as usize;
    // The ceiling of a rounded quotient can be one off either way; settle it on the formula.
    if k > 1 && detection_probability(f, k - 1) >= target {
        Some(k - 1)
    } else if detection_probability(f, k) >= target {
        Some(k)
    } else {
        Some(k + 1)
    }
}

/// The standard error of a detection rate measured over `trials` independent trials whose true
/// probability is `p`: `sqrt(p (1 − p) / trials)`. What the benchmark compares its measurement
/// with.
pub fn standard_error(p: f64, trials: u64) -> f64 {
    if trials == 0 {
        return f64::INFINITY;
    }
    (p * (1.0 - p) / trials as f64).max(0.0).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * b.abs().max(1.0)
    }

    #[test]
    fn detection_follows_one_minus_the_miss_probability() {
        assert!(close(detection_probability(0.5, 1), 0.5));
        assert!(close(detection_probability(0.5, 10), 1.0 - 0.5f64.powi(10)));
        assert!(close(detection_probability(0.1, 50), 1.0 - 0.9f64.powi(50)));
        assert!(close(
            detection_probability(0.01, 100),
            1.0 - 0.99f64.powi(100)
        ));
        assert_eq!(detection_probability(0.0, 100), 0.0);
        assert_eq!(detection_probability(1.0, 1), 1.0);
        assert_eq!(detection_probability(0.3, 0), 0.0);
        // Accurate where the naive form cancels: 1 − (1 − 1e-12)^1 is 1e-12.
        assert!((detection_probability(1e-12, 1) - 1e-12).abs() < 1e-24);
        // Out-of-range fractions are clamped.
        assert_eq!(detection_probability(2.0, 3), 1.0);
        assert_eq!(detection_probability(-1.0, 3), 0.0);
    }

    #[test]
    fn a_fixed_number_of_corruptions_is_caught_at_least_as_often() {
        // One corrupted chunk of 10, one sampled: 1/10. All sampled: certain.
        assert!(close(detection_probability_fixed(1, 10, 1), 0.1));
        assert_eq!(detection_probability_fixed(1, 10, 10), 1.0);
        assert_eq!(detection_probability_fixed(0, 10, 5), 0.0);
        // C(8, 2) / C(10, 2) = 28 / 45 missed.
        assert!(close(
            detection_probability_fixed(2, 10, 2),
            1.0 - 28.0 / 45.0
        ));
        for (m, n, k) in [(10, 1000, 10), (100, 1000, 50), (500, 1000, 100)] {
            let urn = detection_probability_fixed(m, n, k);
            let coins = detection_probability(m as f64 / n as f64, k);
            assert!(urn >= coins, "m {m} n {n} k {k}: {urn} < {coins}");
            assert!(urn - coins < 0.01, "m {m} n {n} k {k}: {urn} vs {coins}");
        }
    }

    #[test]
    fn the_overhead_is_the_sampled_share() {
        assert_eq!(spot_check_overhead(10, 1000), 0.01);
        assert_eq!(spot_check_overhead(100, 1000), 0.1);
        assert_eq!(spot_check_overhead(5, 3), 1.0);
        assert_eq!(spot_check_overhead(1, 0), 0.0);
    }

    #[test]
    fn the_samples_needed_are_the_smallest_sufficient() {
        // 1 − 0.99^k ≥ 0.95 first at k = 299 (0.99^298 = 0.0501, 0.99^299 = 0.0496).
        assert_eq!(samples_for_detection(0.01, 0.95), Some(299));
        for (f, target) in [(0.1, 0.99), (0.5, 0.999), (0.01, 0.5), (0.2, 0.2)] {
            let k = samples_for_detection(f, target).unwrap();
            assert!(
                detection_probability(f, k) >= target,
                "f {f} target {target}"
            );
            assert!(
                k == 1 || detection_probability(f, k - 1) < target,
                "f {f} target {target}: {k} is not the smallest"
            );
        }
        assert_eq!(samples_for_detection(0.0, 0.5), None);
        assert_eq!(samples_for_detection(0.5, 1.0), None);
        assert_eq!(samples_for_detection(0.5, f64::NAN), None);
        assert_eq!(samples_for_detection(1.0, 1.0), Some(1));
        assert_eq!(samples_for_detection(0.5, 0.0), Some(0));
    }

    #[test]
    fn the_standard_error_is_binomial() {
        assert!(close(standard_error(0.5, 10_000), 0.005));
        assert_eq!(standard_error(1.0, 100), 0.0);
        assert_eq!(standard_error(0.5, 0), f64::INFINITY);
    }
}
