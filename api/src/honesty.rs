//! Benchmark honesty (docs/verification.md): a node whose measured matmul benchmark is far below
//! the FP32 peak of the GPU model it claims is flagged, and priced as what it measures.
//!
//! The hub judges from the score the agent reported and the model table
//! ([`crds::gpu_models`]), never from the agent's own finding: a node lying about its model would
//! not report itself. A real GPU reaches most of its FP32 peak in a large single-precision matrix
//! multiply, and the table holds the slowest form of each model, so a node at under
//! [`HONEST_MIN_RATIO`] of its claimed model's peak is not what it claims (or is badly throttled).
//! It keeps running work — it is not punished for being slow — but its ask is scaled by what it
//! measures: an "H100" that benchmarks like an L4 is offered at its ask × measured / claimed peak.

use crate::store::NodeRow;

/// The least share of the claimed model's FP32 peak an honest node measures.
pub const HONEST_MIN_RATIO: f64 = 0.7;

/// A node measured far below the model it claims.
#[derive(Clone, Debug, PartialEq)]
pub struct BelowModel {
    /// The model its GPUs claim.
    pub model: String,
    /// That model's FP32 peak, TFLOPS.
    pub peak_tflops: f64,
    /// What the node measured, TFLOPS per GPU.
    pub measured_tflops: f64,
}

impl BelowModel {
    /// Measured over claimed peak, in (0, HONEST_MIN_RATIO).
    pub fn ratio(&self) -> f64 {
        self.measured_tflops / self.peak_tflops
    }

    /// What the node and its users read.
    pub fn message(&self) -> String {
        format!(
            "measured {:.1} TFLOPS FP32 per GPU, {:.0}% of the {}'s {:.1} TFLOPS peak (below {:.0}%): priced as measured",
            self.measured_tflops,
            self.ratio() * 100.0,
            self.model,
            self.peak_tflops,
            HONEST_MIN_RATIO * 100.0
        )
    }
}

/// The node's benchmark judged against its claimed model: `Some` when it is far below.
pub fn assess(row: &NodeRow) -> Option<BelowModel> {
    let benchmark = row.benchmark.as_ref()?;
    let model = row.gpus.first()?.model.clone();
    let peak_tflops = crds::gpu_models::fp32_peak_tflops(&model)?;
    let measured_tflops = benchmark.tflops_milli as f64 / 1000.0;
    (measured_tflops < peak_tflops * HONEST_MIN_RATIO).then_some(BelowModel {
        model,
        peak_tflops,
        measured_tflops,
    })
}

/// The ask the scheduler offers the node at: its own, or scaled down to what it measures.
pub fn priced_micros(row: &NodeRow) -> u64 {
    match assess(row) {
        Some(below) => {
            let ratio = below.ratio().clamp(0.0, 1.0);
            // Integer micro-units: the ratio scales an integer, rounded down (in the payer's favour).
            (row.price_micros as f64 * ratio).floor() as u64
        }
        None => row.price_micros,
    }
}
