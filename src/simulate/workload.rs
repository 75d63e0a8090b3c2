//! `--generate`: a synthetic job mix for the simulated fleet.
//!
//! Three kinds of job, as a GPU marketplace sees them:
//!
//! | kind | share | workers × GPUs | GPUs wanted | duration (Pareto α, minimum, cap) | extra |
//! |---|---|---|---|---|---|
//! | Inference | 65 % | 1 × 1 (10 %: 1 × 2) | any ≥ 24 GiB (50 %), L40S/L4/A10 (30 %), consumer cards (20 %) | α 1.3, 10 min, 24 h | `userRegion` always; 20 % also `maxLatencyMs` 150 |
//! | Batch | 30 % | 1 × 1, 2, 4 or 8 | any ≥ 24 GiB, or A100/H100 | α 1.5, 10 min, 48 h | |
//! | Training | 5 % | 2 (70 %), 4 (25 %) or 8 × 4 or 8 | H100, H200 or A100 80 GB | α 1.5, 15 min, 24 h | 50 %: `minBandwidthMbps` 1000 |
//!
//! The shares are set so that each GPU class's demand roughly matches what the simulated fleet
//! offers of it (the 80 GB data-center classes are about half its GPUs). Price caps are round
//! numbers, as people write them, mostly above the asks of the GPUs a job wants, sometimes not. Durations are heavy-tailed (bounded Pareto: most jobs short, a few run for
//! days), arrivals a Poisson process whose rate makes the offered load `load` × the fleet's GPUs:
//! `rate = load × GPUs / mean(GPUs × duration)`.

use crds::v1alpha1::JobKind;
use scheduler::network::synthetic::SplitMix64;

use super::{
    fleet::{REGIONS, region_index},
    trace::TraceJob,
};

/// Where users are: a job's `userRegion`, in percent per region (the order of [`REGIONS`]).
const USER_SHARE: [u64; 8] = [14, 22, 10, 12, 6, 14, 14, 8];

/// `count` jobs for a fleet of `fleet_gpus` GPUs at offered load `load`, drawn from `seed`.
pub fn generate(count: usize, fleet_gpus: usize, load: f64, seed: u64) -> Vec<TraceJob> {
    let mut rng = SplitMix64::new(seed ^ 0x0B5_0000);
    let mut jobs: Vec<TraceJob> = (0..count).map(|_| job(&mut rng)).collect();
    let gpu_ms: f64 = jobs
        .iter()
        .map(|j| j.gpus() as f64 * j.duration_ms as f64)
        .sum::<f64>()
        / count.max(1) as f64;
    // Jobs per millisecond.
    let rate = (load * fleet_gpus as f64 / gpu_ms.max(1.0)).max(f64::MIN_POSITIVE);
    let mut clock = 0.0;
    for job in &mut jobs {
        // Exponential gaps: a Poisson process. 1 − u is in (0, 1], so the log is finite.
        clock += -(1.0 - rng.next_f64()).ln() / rate;
        job.arrival_ms = clock as u64;
    }
    jobs
}

fn job(rng: &mut SplitMix64) -> TraceJob {
    let roll = rng.below(100);
    let mut job = TraceJob {
        arrival_ms: 0,
        kind: JobKind::Inference,
        workers: 1,
        gpus_per_worker: 1,
        models: Vec::new(),
        min_memory_gib: None,
        max_price_micros: 0,
        regions: Vec::new(),
        user_region: None,
        max_latency_ms: None,
        min_bandwidth_mbps: None,
        duration_ms: 0,
        // Every generated job may be retried twice after a node failure.
        max_attempts: 3,
    };
    if roll < 65 {
        job.gpus_per_worker = if rng.below(10) == 0 { 2 } else { 1 };
        match rng.below(10) {
            0..5 => {
                job.min_memory_gib = Some(24);
                job.max_price_micros =
                    choose(rng, &[(1_000_000, 3), (2_000_000, 5), (3_000_000, 2)]);
            }
            5..8 => {
                job.models = names(&["L40S-48GB", "L4-24GB", "A10-24GB"]);
                job.max_price_micros = choose(rng, &[(1_000_000, 5), (1_500_000, 5)]);
            }
            _ => {
                job.models = names(&["RTX4090-24GB", "RTX5090-32GB"]);
                job.max_price_micros = choose(rng, &[(500_000, 3), (1_000_000, 7)]);
            }
        }
        let region = choose(
            rng,
            &USER_SHARE
                .iter()
                .enumerate()
                .map(|(i, w)| (i as u64, *w))
                .collect::<Vec<_>>(),
        );
        job.user_region = Some(REGIONS[region as usize].to_string());
        if rng.below(5) == 0 {
            job.max_latency_ms = Some(150);
        }
        job.duration_ms = pareto(rng, 1.3, 600.0, 24.0 * 3600.0);
    } else if roll < 95 {
        job.kind = JobKind::Batch;
        job.gpus_per_worker = choose(rng, &[(1, 4), (2, 3), (4, 2), (8, 1)]) as u32;
        if rng.below(2) == 0 {
            job.models = names(&["A100-80GB", "H100-80GB"]);
            job.max_price_micros = choose(rng, &[(2_500_000, 5), (4_000_000, 5)]);
        } else {
            job.min_memory_gib = Some(24);
            job.max_price_micros = choose(rng, &[(1_500_000, 5), (2_500_000, 3), (4_000_000, 2)]);
        }
        job.duration_ms = pareto(rng, 1.5, 600.0, 48.0 * 3600.0);
    } else {
        job.kind = JobKind::Training;
        job.workers = choose(rng, &[(2, 70), (4, 25), (8, 5)]) as u32;
        job.gpus_per_worker = choose(rng, &[(4, 1), (8, 1)]) as u32;
        job.models = names(&["H100-80GB", "H200-141GB", "A100-80GB"]);
        job.max_price_micros = choose(rng, &[(3_000_000, 4), (4_500_000, 4), (6_000_000, 2)]);
        if rng.below(2) == 0 {
            job.min_bandwidth_mbps = Some(1_000);
        }
        job.duration_ms = pareto(rng, 1.5, 900.0, 24.0 * 3600.0);
    }
    debug_assert!(
        job.user_region
            .as_deref()
            .is_none_or(|r| region_index(r).is_some())
    );
    job
}

fn names(models: &[&str]) -> Vec<String> {
    models.iter().map(|m| m.to_string()).collect()
}

/// One of `options` (value, weight), with probability proportional to weight.
fn choose(rng: &mut SplitMix64, options: &[(u64, u64)]) -> u64 {
    let total: u64 = options.iter().map(|(_, w)| w).sum();
    let mut roll = rng.below(total);
    for (value, weight) in options {
        if roll < *weight {
            return *value;
        }
        roll -= weight;
    }
    options.last().map_or(0, |(v, _)| *v)
}

/// A bounded Pareto draw in milliseconds: `minimum · u^(−1/α)` seconds, at most `cap` seconds.
fn pareto(rng: &mut SplitMix64, alpha: f64, minimum_s: f64, cap_s: f64) -> u64 {
    let u = 1.0 - rng.next_f64(); // (0, 1]
    let seconds = (minimum_s * u.powf(-1.0 / alpha)).min(cap_s);
    (seconds * 1000.0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_has_every_kind_heavy_tails_and_poisson_arrivals() {
        let jobs = generate(20_000, 10_000, 0.8, 3);
        assert_eq!(jobs, generate(20_000, 10_000, 0.8, 3), "deterministic");
        let share = |kind| jobs.iter().filter(|j| j.kind == kind).count() as f64 / 20_000.0;
        assert!((0.62..0.68).contains(&share(JobKind::Inference)));
        assert!((0.27..0.33).contains(&share(JobKind::Batch)));
        assert!((0.04..0.06).contains(&share(JobKind::Training)));
        assert!(jobs.windows(2).all(|w| w[0].arrival_ms <= w[1].arrival_ms));
        let mut durations: Vec<u64> = jobs.iter().map(|j| j.duration_ms).collect();
        durations.sort_unstable();
        let (median, p99) = (durations[10_000], durations[19_800]);
        // An exponential distribution has p99 / median = ln 100 / ln 2 ≈ 6.6; these are heavier.
        assert!(
            p99 > 10 * median,
            "heavy tail: p99 {p99} vs median {median}"
        );
        // Exponential gaps: the coefficient of variation is about 1.
        let gaps: Vec<f64> = jobs
            .windows(2)
            .map(|w| (w[1].arrival_ms - w[0].arrival_ms) as f64)
            .collect();
        let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
        let sd = (gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64).sqrt();
        assert!((0.9..1.1).contains(&(sd / mean)), "cv {}", sd / mean);
    }
}
