//! Simulated GPUs (`--simulate-gpus SPEC`): the inventory of [`crate::inventory::simulated`] and
//! made-up but plausible readings, so dashboards, heartbeats and benchmarks behave as on a real node.
//! Every reading says `simulated: true`, and `/metrics` says so in `agora_agent_simulated`.
//!
//! A GPU an assignment holds runs near full utilization, with most of its memory in use, warm, near
//! its power limit and at boost clock; an idle GPU sits at 0 %, cool, at idle power and clocks. The
//! values move toward those targets a little each sample, with a small deterministic jitter, the way
//! a real GPU warms up and cools down. Simulated GPUs never report ECC errors, XIDs or throttling.

use std::collections::HashSet;

use super::{GpuInfo, GpuSource, Sample};
use crate::inventory::{self, InventoryError};

/// Power limit in watts, boost SM clock and memory clock in MHz of each simulated model (the
/// products' published figures, SXM variants where there are several).
fn model_figures(model: &str) -> (f64, u32, u32) {
    let product = model.split('-').next().unwrap_or(model);
    match product {
        "B200" => (1000.0, 1965, 3996),
        "H200" | "H100" => (700.0, 1980, 2619),
        "A100" => (400.0, 1410, 1593),
        "L40S" | "L40" => (350.0, 2520, 9001),
        "L4" => (72.0, 2040, 6251),
        "A40" => (300.0, 1740, 7251),
        "A30" => (165.0, 1440, 1215),
        "A10" => (150.0, 1695, 6251),
        "RTX5090" => (575.0, 2407, 14001),
        "RTX4090" => (450.0, 2520, 10501),
        "RTX3090" => (350.0, 1695, 9751),
        "V100" => (300.0, 1530, 877),
        "T4" => (70.0, 1590, 5001),
        _ => (300.0, 1500, 5000),
    }
}

/// The simulated GPUs of one node and their current made-up state.
pub struct SimulatedGpus {
    gpus: Vec<GpuInfo>,
    state: Vec<GpuState>,
    /// xorshift64 state: deterministic jitter without a random number generator's setup cost.
    jitter: u64,
}

#[derive(Clone, Copy)]
struct GpuState {
    utilization: f64,
    memory_used_mib: f64,
    temperature_c: f64,
}

/// Idle temperature and the temperature of a GPU at full load, °C.
const IDLE_C: f64 = 32.0;
const BUSY_C: f64 = 71.0;
/// Share of the way to its target the temperature moves each sample.
const STEP: f64 = 0.35;
/// Share of the way to its target memory use moves each sample (allocations are quick).
const MEMORY_STEP: f64 = 0.7;

impl SimulatedGpus {
    /// The GPUs of `spec` (e.g. `8xH100-80GB`) on node `node_name`, all idle.
    pub fn new(spec: &str, node_name: &str) -> Result<Self, InventoryError> {
        let devices = inventory::simulated(spec, node_name)?;
        let gpus: Vec<GpuInfo> = devices
            .into_iter()
            .zip(0u32..)
            .map(|(device, index)| GpuInfo {
                index,
                product_name: format!("Simulated {}", device.model),
                memory_mib: u64::from(device.memory_gib) * 1024,
                device,
                pcie_generation: None,
                pcie_width: None,
                nvlink_active_links: None,
                driver_version: None,
                cuda_version: None,
            })
            .collect();
        let state = vec![
            GpuState {
                utilization: 0.0,
                memory_used_mib: 0.0,
                temperature_c: IDLE_C,
            };
            gpus.len()
        ];
        Ok(Self {
            gpus,
            state,
            jitter: 0x9E37_79B9_7F4A_7C15,
        })
    }

    /// A jitter in `[-1, 1)`.
    fn jitter(&mut self) -> f64 {
        let mut x = self.jitter;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.jitter = x;
        // The top 53 bits as a fraction in [0, 1), scaled to [-1, 1).
        (x >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    }
}

impl GpuSource for SimulatedGpus {
    fn inventory(&self) -> &[GpuInfo] {
        &self.gpus
    }

    fn simulated(&self) -> bool {
        true
    }

    fn sample(&mut self, busy: &HashSet<String>) -> Vec<Sample> {
        let mut samples = Vec::with_capacity(self.gpus.len());
        for i in 0..self.gpus.len() {
            let (uuid, memory_mib, model) = {
                let gpu = &self.gpus[i];
                (
                    gpu.device.uuid.clone(),
                    gpu.memory_mib as f64,
                    gpu.device.model.clone(),
                )
            };
            let is_busy = busy.contains(&uuid);
            let (power_limit, boost_mhz, memory_clock) = model_figures(&model);
            let (target_util, target_mem, target_temp) = if is_busy {
                (
                    93.0 + 5.0 * self.jitter(),
                    memory_mib * (0.8 + 0.05 * self.jitter()),
                    BUSY_C + 2.0 * self.jitter(),
                )
            } else {
                (0.0, 0.0, IDLE_C + 0.5 * self.jitter())
            };
            let state = &mut self.state[i];
            // Utilization jumps with the work; memory, and temperature more slowly, follow.
            state.utilization = if is_busy { target_util } else { 0.0 };
            state.memory_used_mib += (target_mem - state.memory_used_mib) * MEMORY_STEP;
            state.temperature_c += (target_temp - state.temperature_c) * STEP;
            let load = state.utilization / 100.0;
            let utilization = state.utilization.clamp(0.0, 100.0).round() as u32;
            let used = state.memory_used_mib.clamp(0.0, memory_mib).round() as u64;
            samples.push(Sample {
                uuid,
                utilization_percent: Some(utilization),
                memory_used_mib: Some(used),
                memory_free_mib: Some((memory_mib as u64).saturating_sub(used)),
                temperature_c: Some(state.temperature_c.round() as i32),
                power_watts: Some(((0.1 + 0.85 * load) * power_limit * 10.0).round() / 10.0),
                sm_clock_mhz: Some(if is_busy { boost_mhz } else { 345 }),
                memory_clock_mhz: Some(memory_clock),
                ecc_corrected: Some(0),
                ecc_uncorrected: Some(0),
                xid_errors: 0,
                last_xid: None,
                xids_seen: Vec::new(),
                throttle_reasons: if is_busy {
                    Vec::new()
                } else {
                    vec!["gpu_idle".to_string()]
                },
                thermally_throttled: false,
                lost: false,
                simulated: true,
            });
        }
        samples
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_inventory_is_the_specs() {
        let gpus = SimulatedGpus::new("2xA100-40GB,1xL4-24GB", "gn-a").unwrap();
        let inventory = gpus.inventory();
        assert_eq!(inventory.len(), 3);
        assert_eq!(inventory[2].index, 2);
        assert_eq!(inventory[2].device.model, "L4-24GB");
        assert_eq!(inventory[0].memory_mib, 40 * 1024);
        assert!(inventory.iter().all(|g| g.device.simulated));
        assert_eq!(
            inventory[0].device.uuid,
            inventory::simulated_uuid("gn-a", 0)
        );
        assert!(SimulatedGpus::new("1xH100-81GB", "gn-a").is_err());
    }

    #[test]
    fn busy_gpus_work_hard_and_idle_ones_rest() {
        let mut gpus = SimulatedGpus::new("2xH100-80GB", "gn-a").unwrap();
        let busy: HashSet<String> = [gpus.inventory()[0].device.uuid.clone()].into();
        let mut last = Vec::new();
        for _ in 0..20 {
            last = gpus.sample(&busy);
        }
        let (hot, idle) = (&last[0], &last[1]);
        assert!(hot.simulated && idle.simulated);
        assert!(
            (88..=98).contains(&hot.utilization_percent.unwrap()),
            "{hot:?}"
        );
        assert_eq!(idle.utilization_percent, Some(0));
        let used = hot.memory_used_mib.unwrap();
        assert!((60_000..=70_000).contains(&used), "{hot:?}");
        assert_eq!(used + hot.memory_free_mib.unwrap(), 80 * 1024);
        assert_eq!(idle.memory_used_mib, Some(0));
        assert!(hot.temperature_c.unwrap() >= 65, "{hot:?}");
        assert!(idle.temperature_c.unwrap() <= 35, "{idle:?}");
        assert!(hot.power_watts.unwrap() > 500.0 && hot.power_watts.unwrap() <= 700.0);
        assert!(idle.power_watts.unwrap() < 100.0);
        assert_eq!(hot.sm_clock_mhz, Some(1980));
        assert_eq!(idle.sm_clock_mhz, Some(345));

        // Released, the GPU cools down and frees its memory.
        for _ in 0..20 {
            last = gpus.sample(&HashSet::new());
        }
        assert_eq!(last[0].utilization_percent, Some(0));
        assert_eq!(last[0].memory_used_mib, Some(0));
        assert!(last[0].temperature_c.unwrap() <= 35, "{:?}", last[0]);
    }

    #[test]
    fn simulated_gpus_stay_healthy() {
        let mut gpus = SimulatedGpus::new("8xH100-80GB", "gn-a").unwrap();
        for sample in gpus.sample(&HashSet::new()) {
            assert_eq!(sample.ecc_uncorrected, Some(0));
            assert!(sample.xids_seen.is_empty() && !sample.lost && !sample.thermally_throttled);
        }
    }
}
