//! `matmulBenchmark`: achieved dense FP32 matrix-multiply throughput, in TFLOPS.
//!
//! One n×n by n×n product is 2n³ floating-point operations (a multiply and an add per term); the
//! figure is 2n³ × iterations divided by the time the timed iterations took, after one untimed
//! warm-up. Inputs are seeded ([`seeded_matrix`]) so that a run is reproducible.
//!
//! The CPU reference ([`sgemm`]) is what simulated nodes run and what the CUDA kernel's output is
//! checked against; its figure measures the CPU, and results say so. A figure far below the peak of
//! the GPU model a node claims is a health finding ([`benchmark_finding`]).

use std::{sync::atomic::AtomicBool, time::Instant};

use super::{WorkloadError, check_cancel, mix};
use crate::inventory::known_model;

/// Edge of the square blocks the CPU reference works on: three 64×64 f32 blocks (48 KiB) stay in
/// a core's L1/L2 cache.
const BLOCK: usize = 64;

/// An n×n matrix of values in [-1, 1), row-major, from `seed`; `tag` tells A from B.
pub fn seeded_matrix(n: usize, seed: u64, tag: u64) -> Vec<f32> {
    (0..n * n)
        .map(|i| {
            // The top 24 bits: exactly representable in f32.
            let bits = (mix(seed, tag, i as u64) >> 40) as f32;
            bits / 8_388_608.0 - 1.0
        })
        .collect()
}

/// C = A·B for n×n f32 matrices (row-major), blocked for cache, checking `cancel` between row
/// blocks. The CPU reference.
pub fn sgemm(
    n: usize,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    cancel: &AtomicBool,
) -> Result<(), WorkloadError> {
    c.fill(0.0);
    for i0 in (0..n).step_by(BLOCK) {
        check_cancel(cancel)?;
        let i1 = (i0 + BLOCK).min(n);
        for k0 in (0..n).step_by(BLOCK) {
            let k1 = (k0 + BLOCK).min(n);
            for j0 in (0..n).step_by(BLOCK) {
                let j1 = (j0 + BLOCK).min(n);
                for i in i0..i1 {
                    let c_row = &mut c[i * n + j0..i * n + j1];
                    for k in k0..k1 {
                        let aik = a[i * n + k];
                        let b_row = &b[k * n + j0..k * n + j1];
                        for (cij, &bkj) in c_row.iter_mut().zip(b_row) {
                            *cij += aik * bkj;
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// Floating-point operations of `iterations` n×n products.
pub fn flop_count(n: u32, iterations: u32) -> f64 {
    2.0 * f64::from(n).powi(3) * f64::from(iterations)
}

/// What a benchmark run measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Measurement {
    /// Achieved TFLOPS over the timed iterations.
    pub tflops: f64,
    /// Seconds the timed iterations took.
    pub seconds: f64,
}

impl Measurement {
    /// The figure for `iterations` n×n products done in `seconds`.
    pub fn new(n: u32, iterations: u32, seconds: f64) -> Self {
        // A clock too coarse to see the work must not report infinite throughput.
        let seconds = seconds.max(1e-9);
        Self {
            tflops: flop_count(n, iterations) / seconds / 1e12,
            seconds,
        }
    }
}

/// Runs the benchmark on the CPU reference.
pub fn run_cpu(
    size: u32,
    iterations: u32,
    cancel: &AtomicBool,
) -> Result<Measurement, WorkloadError> {
    if size == 0 || iterations == 0 {
        return Err(WorkloadError::Invalid(
            "size and iterations must be at least 1".into(),
        ));
    }
    let n = size as usize;
    let a = seeded_matrix(n, 0, 0xA);
    let b = seeded_matrix(n, 0, 0xB);
    let mut c = vec![0.0f32; n * n];
    sgemm(n, &a, &b, &mut c, cancel)?; // warm-up: page the buffers in
    let start = Instant::now();
    for _ in 0..iterations {
        sgemm(n, &a, &b, &mut c, cancel)?;
    }
    Ok(Measurement::new(
        size,
        iterations,
        start.elapsed().as_secs_f64(),
    ))
}

/// The share of a model's FP32 peak below which a measured figure is a finding. Deliberately loose:
/// the CUDA kernel is a plain register-tiled SGEMM, not cuBLAS, and reaches well under the peak even
/// on a healthy card, so only a GPU that is broken, throttled hard or not the model it claims falls
/// below a tenth of it (a T4 sold as an H100 reaches ~5% of the H100's peak). To be calibrated from
/// `scripts/gpu-check.sh` runs on real GPUs, which print the measured share.
pub const FINDING_THRESHOLD: f64 = 0.10;

/// A benchmark figure far below what the claimed model can do.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchmarkFinding {
    /// The model the node claims.
    pub model: String,
    /// What was measured.
    pub measured_tflops: f64,
    /// The model's dense FP32 peak.
    pub peak_tflops: f64,
    /// A sentence for the owner and the hub.
    pub message: String,
}

/// A finding when `measured_tflops` is below [`FINDING_THRESHOLD`] of the FP32 peak of `model`;
/// `None` when it is not, or when the model's peak is unknown (no claim to hold it against).
pub fn benchmark_finding(model: &str, measured_tflops: f64) -> Option<BenchmarkFinding> {
    let peak = known_model(model)?.fp32_peak_tflops()?;
    (measured_tflops < peak * FINDING_THRESHOLD).then(|| BenchmarkFinding {
        model: model.to_string(),
        measured_tflops,
        peak_tflops: peak,
        message: format!(
            "matmul benchmark measured {measured_tflops:.2} TFLOPS, below {:.0}% of the {model}'s \
             {peak:.1} TFLOPS FP32 peak: the GPU is faulty, throttled or not the model it claims",
            FINDING_THRESHOLD * 100.0
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(n: usize, a: &[f32], b: &[f32]) -> Vec<f64> {
        let mut c = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                c[i * n + j] = (0..n)
                    .map(|k| f64::from(a[i * n + k]) * f64::from(b[k * n + j]))
                    .sum();
            }
        }
        c
    }

    #[test]
    fn the_blocked_gemm_computes_the_product() {
        // Sizes around the block edge, where the blocking's bounds matter.
        for n in [1, 5, 63, 64, 65, 130] {
            let a = seeded_matrix(n, 1, 0xA);
            let b = seeded_matrix(n, 1, 0xB);
            let mut c = vec![f32::NAN; n * n];
            sgemm(n, &a, &b, &mut c, &AtomicBool::new(false)).unwrap();
            for (got, want) in c.iter().zip(naive(n, &a, &b)) {
                // f32 sums of n terms of magnitude < 1.
                assert!((f64::from(*got) - want).abs() < 1e-4 * n as f64, "n = {n}");
            }
        }
    }

    #[test]
    fn inputs_are_seeded_and_in_range() {
        let a = seeded_matrix(32, 5, 0xA);
        assert_eq!(a, seeded_matrix(32, 5, 0xA));
        assert_ne!(a, seeded_matrix(32, 6, 0xA));
        assert!(a.iter().all(|x| (-1.0..1.0).contains(x)));
    }

    #[test]
    fn the_cpu_benchmark_reports_a_figure() {
        let m = run_cpu(128, 2, &AtomicBool::new(false)).unwrap();
        assert!(m.tflops > 0.0 && m.tflops.is_finite());
        assert_eq!(flop_count(128, 2), 2.0 * 128f64.powi(3) * 2.0);
        println!("CPU reference: {:.4} TFLOPS at n = 128", m.tflops);
    }

    #[test]
    fn far_below_the_claimed_peak_is_a_finding() {
        // H100-80GB's peak (the PCIe card's, the lower of its two forms) is 51 TFLOPS.
        let finding = benchmark_finding("H100-80GB", 3.0).unwrap();
        assert_eq!(finding.peak_tflops, 51.0);
        assert!(
            finding.message.contains("3.00 TFLOPS"),
            "{}",
            finding.message
        );
        assert_eq!(benchmark_finding("h100-80gb", 30.0), None);
        // Just above a tenth of the peak: no finding.
        assert_eq!(benchmark_finding("H100-80GB", 5.2), None);
        assert_eq!(benchmark_finding("Imaginary-1GB", 0.001), None);
        // Every model in the table has a peak.
        for model in crate::inventory::KNOWN_GPU_MODELS {
            assert!(model.fp32_peak_tflops().is_some(), "{}", model.name);
        }
    }
}
