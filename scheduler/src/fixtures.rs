//! Test fixtures shared by the crate's unit tests.

use crate::{GpuView, NodeView};

/// A ready, spotless node in `region` asking `ask` micro-units per GPU-hour, with one free GPU
/// (UUID `{name}-{i}`) per entry of `models`, running `capability` workloads.
pub(crate) fn node(
    name: &str,
    region: &str,
    ask: u64,
    models: &[&str],
    capability: &str,
) -> NodeView {
    NodeView {
        name: name.into(),
        region: region.into(),
        price_micros: ask,
        ready: true,
        capabilities: vec![capability.into()],
        gpus: models
            .iter()
            .enumerate()
            .map(|(i, model)| GpuView {
                uuid: format!("{name}-{i}"),
                model: (*model).into(),
                memory_gib: 80,
                compute_capability: (9, 0),
                healthy: true,
                allocated: false,
            })
            .collect(),
        reputation_bps: 10_000,
        ..NodeView::default()
    }
}
