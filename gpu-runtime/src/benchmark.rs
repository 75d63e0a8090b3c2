//! The node's benchmark score: the agent runs a short `matmulBenchmark` on its idle GPUs at start
//! and every `--benchmark-interval-seconds`, and sends the result with the next heartbeat. The hub
//! shows it on the node, and a score far below the claimed model's peak
//! ([`benchmark_finding`]) marks the node not `Healthy` — the GPU is faulty, throttled or not the
//! model it claims.
//!
//! Only real GPUs are measured, through CUDA; the run never competes with paid work: it waits
//! while the node holds an assignment. Simulated GPUs are not measured (the CPU reference would
//! report the host's CPU as the GPU's throughput): they get a **simulated score**, the published
//! FP32 peak of their model from the model table ([`crds::gpu_models::fp32_peak_tflops`], from
//! NVIDIA's datasheets — the table the agent's finding and the hub's "below the model" rule are
//! made against), logged as simulated. So an honest simulated node passes the hub's benchmark rule, and one that claims a
//! faster model than it has (`--cheat lie-model:MODEL`, [`crate::cheat`]) reports its real
//! model's figure and fails it.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use crds::{
    agent::BenchmarkReport,
    v1alpha1::{BuiltinWorkload, GpuDevice, MatmulBenchmarkWorkload},
};
use tracing::{info, warn};

use crate::workloads::{self, WorkloadError, matmul_benchmark::benchmark_finding};

/// Matrix size of the scheduled run: large enough to keep a GPU's cores busy, small enough to
/// take well under a second per GPU.
pub const SIZE: u32 = 2048;
/// Timed iterations of the scheduled run (after one untimed warm-up).
pub const ITERATIONS: u32 = 5;
/// Default `--benchmark-interval-seconds`: once a day.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(86_400);
/// How long a measurement that found the node busy waits before looking again.
const BUSY_RETRY: Duration = Duration::from_secs(60);

/// Why a measurement does not run now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// `--benchmark-interval-seconds 0`.
    Disabled,
    /// No healthy GPU to measure.
    NoGpus,
    /// The node holds an assignment; the GPUs are someone's paid work.
    Busy,
}

/// Whether the scheduled benchmark runs now; `Busy` is the only reason that passes with time. A
/// simulated score takes no GPU time, so a busy simulated node gets one all the same.
pub fn decide(interval: Duration, simulated: bool, gpus: &[GpuDevice], busy: bool) -> Option<Skip> {
    if interval.is_zero() {
        Some(Skip::Disabled)
    } else if !gpus.iter().any(|g| g.healthy) {
        Some(Skip::NoGpus)
    } else if busy && !is_simulated(simulated, gpus) {
        Some(Skip::Busy)
    } else {
        None
    }
}

fn is_simulated(simulated: bool, gpus: &[GpuDevice]) -> bool {
    simulated || gpus.iter().any(|g| g.simulated)
}

/// The score of simulated GPUs: for each healthy one, the published FP32 peak of its model (its
/// real model, whatever the node advertises), so never a finding. GPUs of a model without a
/// published figure are left out; `None` when none has one.
pub fn simulated_report(gpus: &[GpuDevice], measured_at_ms: i64) -> Option<BenchmarkReport> {
    let per_gpu: Vec<(String, f64)> = gpus
        .iter()
        .filter(|g| g.healthy)
        .filter_map(|g| {
            let peak = crate::inventory::known_model(&g.model)?.fp32_peak_tflops()?;
            Some((g.model.clone(), peak))
        })
        .collect();
    report(&per_gpu, measured_at_ms)
}

/// The heartbeat's `benchmark` from per-GPU figures `(model, TFLOPS)`: the mean over all GPUs,
/// with the finding of the first model whose mean is far below its peak.
pub fn report(per_gpu: &[(String, f64)], measured_at_ms: i64) -> Option<BenchmarkReport> {
    if per_gpu.is_empty() {
        return None;
    }
    let mut by_model: BTreeMap<&str, (f64, usize)> = BTreeMap::new();
    for (model, tflops) in per_gpu {
        let entry = by_model.entry(model).or_default();
        entry.0 += tflops;
        entry.1 += 1;
    }
    let finding = by_model
        .iter()
        .find_map(|(model, (sum, n))| benchmark_finding(model, sum / *n as f64))
        .map(|f| f.message);
    Some(BenchmarkReport {
        tflops: per_gpu.iter().map(|(_, t)| t).sum::<f64>() / per_gpu.len() as f64,
        measured_at: measured_at_ms,
        finding,
    })
}

/// The node's scheduled benchmark and the score waiting for a heartbeat.
pub struct Benchmark {
    interval: Duration,
    simulated: bool,
    gpus: Vec<GpuDevice>,
    /// Measured and not yet delivered.
    pending: Mutex<Option<BenchmarkReport>>,
    /// The latest measurement, sent again after a re-registration.
    last: Mutex<Option<BenchmarkReport>>,
}

impl Benchmark {
    /// `interval` zero disables the benchmark.
    pub fn new(interval: Duration, simulated: bool, gpus: Vec<GpuDevice>) -> Self {
        Self {
            interval,
            simulated,
            gpus,
            pending: Mutex::default(),
            last: Mutex::default(),
        }
    }

    /// What the next heartbeat carries: a score not yet delivered.
    pub fn to_send(&self) -> Option<BenchmarkReport> {
        lock(&self.pending).clone()
    }

    /// The hub has `report`; later heartbeats carry none until the next measurement.
    pub fn delivered(&self, report: &BenchmarkReport) {
        let mut pending = lock(&self.pending);
        if pending.as_ref() == Some(report) {
            *pending = None;
        }
    }

    /// The node registered again: send the latest score once more.
    pub fn registered_again(&self) {
        let last = lock(&self.last).clone();
        let mut pending = lock(&self.pending);
        if pending.is_none() {
            *pending = last;
        }
    }

    fn measured(&self, report: BenchmarkReport) {
        *lock(&self.last) = Some(report.clone());
        *lock(&self.pending) = Some(report);
    }

    /// Measures at start and every interval while `busy()` is false (simulated GPUs: takes their
    /// simulated score). Never returns: without GPUs or when disabled it just waits.
    pub async fn run(&self, busy: impl Fn() -> bool) {
        let mut next = tokio::time::Instant::now();
        loop {
            tokio::time::sleep_until(next).await;
            match decide(self.interval, self.simulated, &self.gpus, busy()) {
                Some(Skip::Busy) => {
                    next += BUSY_RETRY;
                    continue;
                }
                Some(skip) => {
                    info!(?skip, "no GPU benchmark score will be reported");
                    return std::future::pending().await;
                }
                None => {}
            }
            let gpus: Vec<GpuDevice> = self.gpus.iter().filter(|g| g.healthy).cloned().collect();
            if is_simulated(self.simulated, &gpus) {
                let now = jiff::Timestamp::now().as_millisecond();
                if let Some(report) = simulated_report(&gpus, now) {
                    info!(
                        tflops = report.tflops,
                        "simulated GPU benchmark score: the published FP32 peak of the simulated \
                         model, not a measurement"
                    );
                    self.measured(report);
                }
                next = tokio::time::Instant::now() + self.interval;
                continue;
            }
            let cancel = CancelOnDrop(Arc::new(AtomicBool::new(false)));
            let flag = Arc::clone(&cancel.0);
            let measured = tokio::task::spawn_blocking(move || measure(&gpus, &flag)).await;
            match measured {
                Ok(Ok(Some(report))) => {
                    match &report.finding {
                        Some(finding) => warn!(tflops = report.tflops, %finding, "GPU benchmark"),
                        None => info!(tflops = report.tflops, "GPU benchmark"),
                    }
                    self.measured(report);
                }
                Ok(Ok(None)) => {}
                Ok(Err(e)) => warn!("GPU benchmark failed: {e}"),
                Err(e) => warn!("GPU benchmark thread ended abnormally: {e}"),
            }
            next = tokio::time::Instant::now() + self.interval;
        }
    }
}

/// Runs the benchmark on each GPU in turn, through CUDA. Blocking.
fn measure(
    gpus: &[GpuDevice],
    cancel: &AtomicBool,
) -> Result<Option<BenchmarkReport>, WorkloadError> {
    let workload = BuiltinWorkload {
        matmul_benchmark: Some(MatmulBenchmarkWorkload {
            size: SIZE,
            iterations: ITERATIONS,
        }),
        ..Default::default()
    };
    let mut per_gpu = Vec::with_capacity(gpus.len());
    for gpu in gpus {
        let result = workloads::run(&workload, std::slice::from_ref(&gpu.uuid), cancel)?;
        if let Some(tflops) = result.tflops {
            per_gpu.push((gpu.model.clone(), tflops));
        }
    }
    Ok(report(&per_gpu, jiff::Timestamp::now().as_millisecond()))
}

/// Stops a run on its blocking thread when the agent stops waiting for it (shutdown).
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu(model: &str, simulated: bool, healthy: bool) -> GpuDevice {
        GpuDevice {
            uuid: format!("GPU-{model}"),
            model: model.into(),
            simulated,
            healthy,
            ..Default::default()
        }
    }

    #[test]
    fn only_idle_real_gpus_are_measured() {
        let day = DEFAULT_INTERVAL;
        let real = [gpu("H100-80GB", false, true)];
        assert_eq!(decide(day, false, &real, false), None);
        // Busy with an assignment: not measured now, but later.
        assert_eq!(decide(day, false, &real, true), Some(Skip::Busy));
        // Simulated GPUs get their simulated score, idle or not (it takes no GPU time).
        let sim = [gpu("H100-80GB", true, true)];
        assert_eq!(decide(day, true, &sim, false), None);
        assert_eq!(decide(day, false, &sim, true), None);
        assert_eq!(
            decide(Duration::ZERO, false, &real, false),
            Some(Skip::Disabled)
        );
        let broken = [gpu("H100-80GB", false, false)];
        assert_eq!(decide(day, false, &broken, false), Some(Skip::NoGpus));
    }

    /// A simulated node reports its model's published FP32 figure (never a CPU measurement),
    /// which passes the finding against the same model.
    #[tokio::test(start_paused = true)]
    async fn a_simulated_node_reports_its_model_s_published_figure() {
        let gpus = vec![gpu("L4-24GB", true, true), gpu("H100-80GB", true, true)];
        let bench = Benchmark::new(DEFAULT_INTERVAL, true, gpus);
        let _ = tokio::time::timeout(Duration::from_secs(60), bench.run(|| true)).await;
        let score = bench.to_send().expect("a simulated score");
        // The mean of the L4's 30.3 and the H100's 51 TFLOPS.
        assert!((score.tflops - 40.65).abs() < 1e-9, "{score:?}");
        assert_eq!(score.finding, None);
        // A model without a published figure gets none.
        assert_eq!(
            simulated_report(&[gpu("Imaginary-1GB", true, true)], 1),
            None
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_node_is_not_measured_but_checked_again() {
        let bench = Benchmark::new(DEFAULT_INTERVAL, false, vec![gpu("H100-80GB", false, true)]);
        let checks = std::sync::atomic::AtomicU32::new(0);
        let busy = || {
            checks.fetch_add(1, Ordering::Relaxed);
            true
        };
        let _ = tokio::time::timeout(Duration::from_secs(570), bench.run(busy)).await;
        assert_eq!(bench.to_send(), None);
        // Looked at start and once a minute after, for 9.5 minutes.
        assert_eq!(checks.load(Ordering::Relaxed), 10);
    }

    #[test]
    fn a_score_far_below_the_model_is_a_finding() {
        let slow = report(&[("H100-80GB".into(), 3.0), ("H100-80GB".into(), 3.2)], 7).unwrap();
        assert!((slow.tflops - 3.1).abs() < 1e-9);
        assert_eq!(slow.measured_at, 7);
        assert!(slow.finding.unwrap().contains("H100-80GB"));
        let fine = report(&[("H100-80GB".into(), 40.0)], 7).unwrap();
        assert_eq!(fine.finding, None);
        assert_eq!(report(&[], 7), None);
    }

    #[test]
    fn a_score_is_sent_once_and_again_after_reregistering() {
        let bench = Benchmark::new(DEFAULT_INTERVAL, false, Vec::new());
        bench.registered_again();
        assert_eq!(bench.to_send(), None);
        let score = report(&[("L4-24GB".into(), 20.0)], 1).unwrap();
        bench.measured(score.clone());
        assert_eq!(bench.to_send(), Some(score.clone()));
        bench.delivered(&score);
        assert_eq!(bench.to_send(), None);
        bench.registered_again();
        assert_eq!(bench.to_send(), Some(score));
    }
}
