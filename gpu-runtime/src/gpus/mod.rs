//! The node's GPUs as the agent sees them: inventory, live telemetry and health.
//!
//! A [`GpuSource`] says what GPUs there are and takes readings of them: [`nvml`] asks the NVIDIA
//! driver, [`simulated`] makes plausible readings up for `--simulate-gpus` nodes (and says so). A
//! [`Monitor`] samples a source at the telemetry interval, applies the [`health`] rules (a GPU found
//! unhealthy is sent to the hub in the next heartbeat's inventory, so it is never offered again),
//! keeps the latest sample for heartbeats and feeds the agent's `/metrics` ([`metrics`]).

pub mod health;
pub mod metrics;
pub mod nvml;
pub mod simulated;

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use crds::{
    agent::{AssignmentState, GpuTelemetry, Telemetry},
    v1alpha1::GpuDevice,
};
use serde::Serialize;
use tracing::warn;

use self::health::{Finding, HealthInputs};

/// The most distinct XID codes remembered per GPU: far more kinds than a failing GPU shows, small
/// enough that a flood of events cannot grow the agent.
pub const MAX_XIDS_REMEMBERED: usize = 64;

/// One GPU's inventory: what the hub is told ([`GpuDevice`]) and what else the owner may want to
/// know (`agora gpus`). Fields a source cannot tell are `None`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GpuInfo {
    /// The GPU as registered with the hub.
    pub device: GpuDevice,
    /// The GPU's index on this machine (`nvidiaN`, `CUDA_VISIBLE_DEVICES` order of NVML).
    pub index: u32,
    /// The product name as the driver reports it (`NVIDIA H100 80GB HBM3`).
    pub product_name: String,
    /// Memory in MiB, exactly.
    pub memory_mib: u64,
    /// Current PCIe link generation.
    pub pcie_generation: Option<u32>,
    /// Current PCIe link width (lanes).
    pub pcie_width: Option<u32>,
    /// Active NVLink links (0: no NVLink or none up).
    pub nvlink_active_links: Option<u32>,
    /// The driver version (`550.54.15`).
    pub driver_version: Option<String>,
    /// The CUDA version the driver supports (`12.4`).
    pub cuda_version: Option<String>,
}

/// One reading of one GPU. Fields the GPU or driver does not report are `None`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Sample {
    /// The GPU's UUID.
    pub uuid: String,
    /// Busy share of the last sample period, percent.
    pub utilization_percent: Option<u32>,
    /// Frame buffer memory in use, MiB.
    pub memory_used_mib: Option<u64>,
    /// Frame buffer memory free, MiB.
    pub memory_free_mib: Option<u64>,
    /// Core temperature, °C.
    pub temperature_c: Option<i32>,
    /// Power draw, watts.
    pub power_watts: Option<f64>,
    /// SM clock, MHz.
    pub sm_clock_mhz: Option<u32>,
    /// Memory clock, MHz.
    pub memory_clock_mhz: Option<u32>,
    /// Corrected (single-bit) ECC errors since the driver loaded.
    pub ecc_corrected: Option<u64>,
    /// Uncorrected (double-bit) ECC errors since the driver loaded.
    pub ecc_uncorrected: Option<u64>,
    /// XID events seen since the agent started.
    pub xid_errors: u64,
    /// The most recent XID code.
    pub last_xid: Option<u32>,
    /// Every distinct XID code seen since the agent started (at most [`MAX_XIDS_REMEMBERED`]).
    pub xids_seen: Vec<u32>,
    /// Active clock throttle reasons, NVML's names (`sw_thermal_slowdown`, …).
    pub throttle_reasons: Vec<String>,
    /// Whether a thermal throttle reason is active.
    pub thermally_throttled: bool,
    /// NVML reported the GPU lost (fallen off the bus).
    pub lost: bool,
    /// The reading is made up (`--simulate-gpus`).
    pub simulated: bool,
}

/// Where GPUs and their readings come from.
pub trait GpuSource: Send {
    /// The GPUs, in index order, as found when the source was opened (health as found then).
    fn inventory(&self) -> &[GpuInfo];
    /// Whether the GPUs are simulated.
    fn simulated(&self) -> bool;
    /// One reading per GPU of [`GpuSource::inventory`], in the same order. `busy` holds the UUIDs of
    /// the GPUs an assignment holds now (simulated sources make them busy; real ones ignore it).
    fn sample(&mut self, busy: &HashSet<String>) -> Vec<Sample>;
}

/// Samples a [`GpuSource`], keeps the node's current inventory and latest readings, and counts what
/// `/metrics` reports about the agent.
pub struct Monitor {
    source: Mutex<Box<dyn GpuSource>>,
    simulated: bool,
    interval: Duration,
    state: Mutex<State>,
    metrics: metrics::Metrics,
}

struct State {
    /// The inventory with health as of the latest sample.
    gpus: Vec<GpuInfo>,
    /// The inventory the hub last acknowledged (registration or a heartbeat).
    delivered: Vec<GpuDevice>,
    /// The inventory as of the first sample: what the agent registers with, again after a hub
    /// restart (the registration request is built once).
    registered: Vec<GpuDevice>,
    samples: Vec<Sample>,
    /// When each GPU's current stretch of thermal throttling started.
    thermal_since: HashMap<String, Instant>,
    /// The GPUs each held assignment uses.
    holds: HashMap<String, Vec<String>>,
}

impl Monitor {
    /// A monitor of `source`, sampling every `interval`, with its first sample taken. `hostname` is
    /// the `Hostname` label of the DCGM metrics. Register the node with [`Monitor::devices`] as it is
    /// right after this: the monitor takes that inventory as the one the hub has.
    pub fn new(source: Box<dyn GpuSource>, interval: Duration, hostname: &str) -> Self {
        let gpus = source.inventory().to_vec();
        let simulated = source.simulated();
        let metrics = metrics::Metrics::new(&gpus, hostname, simulated);
        let monitor = Self {
            simulated,
            interval,
            state: Mutex::new(State {
                delivered: Vec::new(),
                registered: Vec::new(),
                gpus,
                samples: Vec::new(),
                thermal_since: HashMap::new(),
                holds: HashMap::new(),
            }),
            source: Mutex::new(source),
            metrics,
        };
        monitor.sample_now();
        {
            let mut state = monitor.state();
            state.registered = state.gpus.iter().map(|g| g.device.clone()).collect();
            state.delivered = state.registered.clone();
        }
        monitor
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Each update leaves the state consistent, so a panic elsewhere is no reason to stop.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the GPUs are simulated.
    pub fn simulated(&self) -> bool {
        self.simulated
    }

    /// The GPUs to register, with their current health.
    pub fn devices(&self) -> Vec<GpuDevice> {
        self.state().gpus.iter().map(|g| g.device.clone()).collect()
    }

    /// The full inventory, with current health.
    pub fn inventory(&self) -> Vec<GpuInfo> {
        self.state().gpus.clone()
    }

    /// The latest readings, one per GPU.
    pub fn samples(&self) -> Vec<Sample> {
        self.state().samples.clone()
    }

    /// Marks the node in `/metrics` as a simulated cheater in `mode` (`--cheat`, see
    /// [`crate::cheat`]): `agora_agent_simulated_cheater{mode="…"} 1`.
    pub fn mark_cheater(&self, mode: &str) {
        self.metrics.mark_cheater(mode);
    }

    /// The Prometheus text of `/metrics`.
    pub fn metrics_text(&self) -> String {
        self.metrics.encode()
    }

    /// Samples at the telemetry interval, forever. Each sample runs on a blocking thread: NVML
    /// calls usually take microseconds, but a failing GPU can hold one for seconds, and that must
    /// not stall heartbeats on the async runtime.
    pub async fn run(self: Arc<Self>) {
        let mut ticks = tokio::time::interval(self.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick completes at once; `new` already sampled.
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let monitor = Arc::clone(&self);
            if let Err(e) = tokio::task::spawn_blocking(move || monitor.sample_now()).await {
                warn!(error = %e, "a telemetry sample failed");
            }
        }
    }

    /// Takes one sample of every GPU, applies the health rules and updates the metrics.
    pub fn sample_now(&self) {
        let busy: HashSet<String> = self.state().holds.values().flatten().cloned().collect();
        let samples = self
            .source
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .sample(&busy);
        let now = Instant::now();
        let mut state = self.state();
        let state = &mut *state;
        for sample in &samples {
            let since = if sample.thermally_throttled {
                Some(
                    *state
                        .thermal_since
                        .entry(sample.uuid.clone())
                        .or_insert(now),
                )
            } else {
                state.thermal_since.remove(&sample.uuid);
                None
            };
            let found = health::findings(&HealthInputs {
                lost: sample.lost,
                ecc_uncorrected: sample.ecc_uncorrected,
                xids_seen: &sample.xids_seen,
                thermal_throttled_for: since.map_or(Duration::ZERO, |s| now - s),
            });
            if let Some(gpu) = state.gpus.iter_mut().find(|g| g.device.uuid == sample.uuid) {
                let healthy = found.is_empty();
                if gpu.device.healthy != healthy {
                    log_health_change(&gpu.device.uuid, &found);
                    gpu.device.healthy = healthy;
                }
            }
        }
        self.metrics.record(&samples, &state.gpus);
        state.samples = samples;
    }

    /// Notes that an assignment holds these GPUs (their simulated readings turn busy).
    pub fn hold(&self, assignment: &str, gpus: &[String]) {
        self.state()
            .holds
            .insert(assignment.to_string(), gpus.to_vec());
    }

    /// Updates from the held assignments' states, at each heartbeat: assignments that ended let go
    /// of their GPUs; the metrics count running assignments and final reports not yet acknowledged.
    pub fn track_assignments(&self, states: &[AssignmentState]) {
        let active: HashSet<&str> = states
            .iter()
            .filter(|s| !s.state.is_final())
            .map(|s| s.id.as_str())
            .collect();
        self.state()
            .holds
            .retain(|id, _| active.contains(id.as_str()));
        self.metrics
            .set_assignments(active.len(), states.len() - active.len());
    }

    /// Counts a heartbeat the hub did not answer.
    pub fn heartbeat_failed(&self) {
        self.metrics.heartbeat_failed();
    }

    /// The inventory for the next heartbeat's `gpus`: `Some` only when it differs from what the hub
    /// last acknowledged (a GPU's health changed).
    pub fn changed_devices(&self) -> Option<Vec<GpuDevice>> {
        let state = self.state();
        let current: Vec<GpuDevice> = state.gpus.iter().map(|g| g.device.clone()).collect();
        (current != state.delivered).then_some(current)
    }

    /// Records that the agent registered again (the hub restarted): the hub now has the
    /// registration's inventory, so a health change since is sent again.
    pub fn registered_again(&self) {
        let mut state = self.state();
        state.delivered = state.registered.clone();
    }

    /// Records that the hub acknowledged a heartbeat carrying this inventory.
    pub fn devices_delivered(&self, devices: &[GpuDevice]) {
        self.state().delivered = devices.to_vec();
    }

    /// The latest readings as a heartbeat carries them. Values outside the protocol's bounds (a
    /// driver's "not available" sentinels) are left out rather than letting the hub refuse the
    /// whole heartbeat.
    pub fn telemetry(&self) -> Telemetry {
        Telemetry {
            gpus: self.state().samples.iter().map(wire_telemetry).collect(),
        }
    }
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor")
            .field("simulated", &self.simulated)
            .field("interval", &self.interval)
            .field("gpus", &self.state().gpus.len())
            .finish_non_exhaustive()
    }
}

fn log_health_change(uuid: &str, found: &[Finding]) {
    if found.is_empty() {
        warn!(gpu = %uuid, "GPU is healthy again; offering it");
    } else {
        let reasons: Vec<String> = found.iter().map(ToString::to_string).collect();
        warn!(gpu = %uuid, reasons = %reasons.join("; "), "GPU is unhealthy; no longer offering it");
    }
}

/// One sample in the wire format, within [`GpuTelemetry`]'s bounds.
fn wire_telemetry(sample: &Sample) -> GpuTelemetry {
    GpuTelemetry {
        uuid: sample.uuid.clone(),
        utilization_percent: sample.utilization_percent.filter(|&u| u <= 100),
        memory_used_mib: sample.memory_used_mib.filter(|&m| m <= 16_777_216),
        temperature_c: sample.temperature_c.filter(|t| (-50..=200).contains(t)),
        power_watts: sample
            .power_watts
            .filter(|p| p.is_finite() && (0.0..=10_000.0).contains(p)),
        sm_clock_mhz: sample.sm_clock_mhz.filter(|&c| c <= 100_000),
        xid_errors: Some(sample.xid_errors.min(1_000_000_000)),
        last_xid: sample.last_xid.filter(|&x| x <= 65_535),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crds::agent::WorkerState;

    fn monitor() -> Monitor {
        let source = simulated::SimulatedGpus::new("2xH100-80GB", "gn-test").unwrap();
        Monitor::new(Box::new(source), Duration::from_secs(1), "host-a")
    }

    #[test]
    fn telemetry_out_of_bounds_is_left_out() {
        let sample = Sample {
            uuid: "GPU-1".into(),
            utilization_percent: Some(101),
            memory_used_mib: Some(u64::MAX),
            temperature_c: Some(-51),
            power_watts: Some(f64::NAN),
            sm_clock_mhz: Some(100_001),
            xid_errors: u64::MAX,
            last_xid: Some(70_000),
            ..Sample::default()
        };
        let wire = wire_telemetry(&sample);
        assert_eq!(
            wire,
            GpuTelemetry {
                uuid: "GPU-1".into(),
                xid_errors: Some(1_000_000_000),
                ..GpuTelemetry::default()
            }
        );
        let fine = Sample {
            uuid: "GPU-1".into(),
            utilization_percent: Some(100),
            temperature_c: Some(200),
            power_watts: Some(700.0),
            last_xid: Some(79),
            ..Sample::default()
        };
        let wire = wire_telemetry(&fine);
        assert_eq!(wire.utilization_percent, Some(100));
        assert_eq!(wire.temperature_c, Some(200));
        assert_eq!(wire.power_watts, Some(700.0));
        assert_eq!(wire.last_xid, Some(79));
    }

    #[test]
    fn heartbeats_carry_one_reading_per_gpu() {
        let monitor = monitor();
        let telemetry = monitor.telemetry();
        let uuids: Vec<_> = telemetry.gpus.iter().map(|g| g.uuid.clone()).collect();
        let devices: Vec<_> = monitor.devices().into_iter().map(|d| d.uuid).collect();
        assert_eq!(uuids, devices);
        assert!(
            telemetry
                .gpus
                .iter()
                .all(|g| g.utilization_percent == Some(0))
        );
    }

    #[test]
    fn held_gpus_turn_busy_until_the_assignment_ends() {
        let monitor = monitor();
        let uuid = monitor.devices()[0].uuid.clone();
        monitor.hold("a-1", std::slice::from_ref(&uuid));
        monitor.sample_now();
        let busy = monitor.samples();
        assert!(busy[0].utilization_percent.unwrap() >= 80, "{busy:?}");
        assert_eq!(busy[1].utilization_percent, Some(0));
        monitor.track_assignments(&[AssignmentState {
            id: "a-1".into(),
            state: WorkerState::Succeeded,
        }]);
        monitor.sample_now();
        assert_eq!(monitor.samples()[0].utilization_percent, Some(0));
        let text = monitor.metrics_text();
        assert!(text.contains("agora_agent_reports_queued 1"), "{text}");
        assert!(text.contains("agora_agent_assignments_running 0"), "{text}");
    }

    /// A cheater is marked in `/metrics`; an honest node has no such series.
    #[test]
    fn a_cheater_says_so_in_its_metrics() {
        let monitor = monitor();
        assert!(
            !monitor
                .metrics_text()
                .contains("agora_agent_simulated_cheater{")
        );
        monitor.mark_cheater("partial:0.1");
        let text = monitor.metrics_text();
        assert!(
            text.contains("agora_agent_simulated_cheater{mode=\"partial:0.1\"} 1"),
            "{text}"
        );
    }

    /// Simulated GPUs whose first GPU starts counting uncorrectable ECC errors on demand: how a
    /// real GPU's fault reaches the monitor (NVML itself cannot run on machines without a GPU).
    struct FailingEcc {
        gpus: simulated::SimulatedGpus,
        failing: std::sync::Arc<std::sync::atomic::AtomicBool>,
    }

    impl GpuSource for FailingEcc {
        fn inventory(&self) -> &[GpuInfo] {
            self.gpus.inventory()
        }
        fn simulated(&self) -> bool {
            true
        }
        fn sample(&mut self, busy: &HashSet<String>) -> Vec<Sample> {
            let mut samples = self.gpus.sample(busy);
            if self.failing.load(std::sync::atomic::Ordering::Relaxed) {
                samples[0].ecc_uncorrected = Some(2);
            }
            samples
        }
    }

    #[test]
    fn a_gpu_found_unhealthy_is_resent_once_and_counted() {
        let failing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let source = FailingEcc {
            gpus: simulated::SimulatedGpus::new("2xH100-80GB", "gn-test").unwrap(),
            failing: failing.clone(),
        };
        let monitor = Monitor::new(Box::new(source), Duration::from_secs(1), "host-a");
        assert_eq!(
            monitor.changed_devices(),
            None,
            "nothing changed since registration"
        );
        assert!(
            monitor
                .metrics_text()
                .contains("agora_agent_gpus_healthy 2")
        );

        failing.store(true, std::sync::atomic::Ordering::Relaxed);
        monitor.sample_now();
        let changed = monitor.changed_devices().expect("health changed");
        assert!(!changed[0].healthy);
        assert!(changed[1].healthy);
        let text = monitor.metrics_text();
        assert!(text.contains("agora_agent_gpus_healthy 1"), "{text}");
        assert!(text.contains("agora_agent_gpus_unhealthy 1"), "{text}");
        assert!(
            text.contains("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL{gpu=\"0\""),
            "{text}"
        );

        // Resent until the hub acknowledges it, then not again.
        assert_eq!(monitor.changed_devices().as_ref(), Some(&changed));
        monitor.devices_delivered(&changed);
        monitor.sample_now();
        assert_eq!(monitor.changed_devices(), None);
        assert!(
            !monitor.devices()[0].healthy,
            "uncorrectable ECC errors do not heal"
        );

        // A hub that restarted has the registration's inventory again: resent.
        monitor.registered_again();
        assert_eq!(monitor.changed_devices(), Some(changed));
    }
}
