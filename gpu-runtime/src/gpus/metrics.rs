//! The agent's `/metrics`: GPU metrics under the NVIDIA DCGM exporter's names and labels, so the
//! standard DCGM Grafana dashboard (grafana.com dashboard 12239) works on Agora nodes unchanged, and
//! the agent's own `agora_agent_*` metrics.
//!
//! Names, units and labels follow dcgm-exporter (github.com/NVIDIA/dcgm-exporter: the field list of
//! `etc/default-counters.csv`, and the labels of its README's sample output and of its Kubernetes
//! output: `gpu` (index), `UUID`, `device` (`nvidiaN`), `modelName` (NVML's product name) and
//! `Hostname`). Two differences, both because these readings come from NVML and not from DCGM:
//!
//! - every metric is a gauge, the ECC totals included (dcgm-exporter types those as counters but
//!   emits them without a `_total` suffix, which a counter here would add and so rename them);
//! - `DCGM_FI_PROF_GR_ENGINE_ACTIVE` (a profiling metric NVML does not have) is the utilization as a
//!   0–1 ratio, the closest NVML reading.
//!
//! Simulated GPUs say so: their `modelName` starts with `Simulated`, their UUIDs with `GPU-SIM-`,
//! and `agora_agent_simulated` is 1.

use std::sync::{Arc, atomic::AtomicU64};

use axum::{Router, extract::State, http::header, response::IntoResponse, routing::get};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use super::{GpuInfo, Monitor, Sample};

/// The labels of every DCGM metric, spelled as dcgm-exporter spells them.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
#[allow(non_snake_case)]
struct GpuLabels {
    gpu: String,
    UUID: String,
    device: String,
    modelName: String,
    Hostname: String,
}

type IntFamily = Family<GpuLabels, Gauge>;
type FloatFamily = Family<GpuLabels, Gauge<f64, AtomicU64>>;

/// The registry and every metric in it.
pub(super) struct Metrics {
    registry: Registry,
    labels: Vec<(String, GpuLabels)>,
    gpu_util: IntFamily,
    fb_used: IntFamily,
    fb_free: IntFamily,
    gpu_temp: IntFamily,
    power_usage: FloatFamily,
    sm_clock: IntFamily,
    mem_clock: IntFamily,
    xid_errors: IntFamily,
    ecc_sbe: IntFamily,
    ecc_dbe: IntFamily,
    gr_engine_active: FloatFamily,
    assignments_running: Gauge,
    reports_queued: Gauge,
    heartbeat_failures: Counter,
    gpus_healthy: Gauge,
    gpus_unhealthy: Gauge,
    cheater: Family<CheatLabels, Gauge>,
}

/// The label of `agora_agent_simulated_cheater`: the `--cheat` mode.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheatLabels {
    mode: String,
}

impl Metrics {
    pub(super) fn new(gpus: &[GpuInfo], hostname: &str, simulated: bool) -> Self {
        let mut registry = Registry::default();
        // prometheus-client ends every help text with a period: none here, so the text reads as
        // dcgm-exporter's.
        let mut family = |name: &str, help: &str| {
            let family = IntFamily::default();
            registry.register(name, help, family.clone());
            family
        };
        let gpu_util = family("DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %)");
        let fb_used = family("DCGM_FI_DEV_FB_USED", "Framebuffer memory used (in MiB)");
        let fb_free = family("DCGM_FI_DEV_FB_FREE", "Framebuffer memory free (in MiB)");
        let gpu_temp = family("DCGM_FI_DEV_GPU_TEMP", "GPU temperature (in C)");
        let sm_clock = family("DCGM_FI_DEV_SM_CLOCK", "SM clock frequency (in MHz)");
        let mem_clock = family("DCGM_FI_DEV_MEM_CLOCK", "Memory clock frequency (in MHz)");
        let xid_errors = family(
            "DCGM_FI_DEV_XID_ERRORS",
            "Value of the last XID error encountered",
        );
        let ecc_sbe = family(
            "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL",
            "Total number of single-bit volatile ECC errors",
        );
        let ecc_dbe = family(
            "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL",
            "Total number of double-bit volatile ECC errors",
        );
        let power_usage = FloatFamily::default();
        registry.register(
            "DCGM_FI_DEV_POWER_USAGE",
            "Power draw (in W)",
            power_usage.clone(),
        );
        let gr_engine_active = FloatFamily::default();
        registry.register(
            "DCGM_FI_PROF_GR_ENGINE_ACTIVE",
            "Ratio of time the graphics engine is active (from NVML utilization)",
            gr_engine_active.clone(),
        );
        let gauge = |registry: &mut Registry, name: &str, help: &str| {
            let gauge = Gauge::default();
            registry.register(name, help, gauge.clone());
            gauge
        };
        let assignments_running = gauge(
            &mut registry,
            "agora_agent_assignments_running",
            "Assignments the agent holds that have not ended",
        );
        let reports_queued = gauge(
            &mut registry,
            "agora_agent_reports_queued",
            "Assignments that ended whose final report the hub has not acknowledged yet",
        );
        let gpus_healthy = gauge(
            &mut registry,
            "agora_agent_gpus_healthy",
            "GPUs the node offers",
        );
        let gpus_unhealthy = gauge(
            &mut registry,
            "agora_agent_gpus_unhealthy",
            "GPUs withheld because a health rule found a fault",
        );
        let simulated_gauge = gauge(
            &mut registry,
            "agora_agent_simulated",
            "1 when the node's GPUs and their readings are simulated (--simulate-gpus)",
        );
        simulated_gauge.set(i64::from(simulated));
        let cheater = Family::<CheatLabels, Gauge>::default();
        registry.register(
            "agora_agent_simulated_cheater",
            "1, labelled with the mode, on a simulated node that cheats on purpose (--cheat) to \
             test verification; no series on honest nodes",
            cheater.clone(),
        );
        let heartbeat_failures = Counter::default();
        registry.register(
            "agora_agent_heartbeat_failures",
            "Heartbeats the hub did not answer",
            heartbeat_failures.clone(),
        );
        let labels = gpus
            .iter()
            .map(|g| {
                (
                    g.device.uuid.clone(),
                    GpuLabels {
                        gpu: g.index.to_string(),
                        UUID: g.device.uuid.clone(),
                        device: format!("nvidia{}", g.index),
                        modelName: g.product_name.clone(),
                        Hostname: hostname.to_string(),
                    },
                )
            })
            .collect();
        Self {
            registry,
            labels,
            gpu_util,
            fb_used,
            fb_free,
            gpu_temp,
            power_usage,
            sm_clock,
            mem_clock,
            xid_errors,
            ecc_sbe,
            ecc_dbe,
            gr_engine_active,
            assignments_running,
            reports_queued,
            heartbeat_failures,
            gpus_healthy,
            gpus_unhealthy,
            cheater,
        }
    }

    pub(super) fn mark_cheater(&self, mode: &str) {
        self.cheater
            .get_or_create(&CheatLabels { mode: mode.into() })
            .set(1);
    }

    /// Takes in a sample of every GPU and the inventory's health. A reading a GPU did not report
    /// removes its series rather than leaving a stale value.
    pub(super) fn record(&self, samples: &[Sample], gpus: &[GpuInfo]) {
        for sample in samples {
            let Some((_, labels)) = self.labels.iter().find(|(uuid, _)| *uuid == sample.uuid)
            else {
                continue;
            };
            let int = |family: &IntFamily, value: Option<i64>| match value {
                Some(v) => {
                    family.get_or_create(labels).set(v);
                }
                None => {
                    family.remove(labels);
                }
            };
            let float = |family: &FloatFamily, value: Option<f64>| match value {
                Some(v) => {
                    family.get_or_create(labels).set(v);
                }
                None => {
                    family.remove(labels);
                }
            };
            let wide = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
            int(&self.gpu_util, sample.utilization_percent.map(i64::from));
            int(&self.fb_used, sample.memory_used_mib.map(wide));
            int(&self.fb_free, sample.memory_free_mib.map(wide));
            int(&self.gpu_temp, sample.temperature_c.map(i64::from));
            float(&self.power_usage, sample.power_watts);
            int(&self.sm_clock, sample.sm_clock_mhz.map(i64::from));
            int(&self.mem_clock, sample.memory_clock_mhz.map(i64::from));
            int(&self.xid_errors, Some(sample.last_xid.map_or(0, i64::from)));
            int(&self.ecc_sbe, sample.ecc_corrected.map(wide));
            int(&self.ecc_dbe, sample.ecc_uncorrected.map(wide));
            float(
                &self.gr_engine_active,
                sample
                    .utilization_percent
                    .map(|u| f64::from(u.min(100)) / 100.0),
            );
        }
        let healthy = gpus.iter().filter(|g| g.device.healthy).count();
        self.gpus_healthy.set(count(healthy));
        self.gpus_unhealthy.set(count(gpus.len() - healthy));
    }

    pub(super) fn set_assignments(&self, running: usize, reports_queued: usize) {
        self.assignments_running.set(count(running));
        self.reports_queued.set(count(reports_queued));
    }

    pub(super) fn heartbeat_failed(&self) {
        self.heartbeat_failures.inc();
    }

    pub(super) fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Serves `GET /metrics` on `listener` until the process ends.
pub async fn serve(
    listener: tokio::net::TcpListener,
    monitor: Arc<Monitor>,
) -> std::io::Result<()> {
    let router = Router::new()
        .route("/metrics", get(scrape))
        .with_state(monitor);
    axum::serve(listener, router).await
}

async fn scrape(State(monitor): State<Arc<Monitor>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        monitor.metrics_text(),
    )
}
