//! Real GPUs through NVML, the NVIDIA driver's management library (`libnvidia-ml.so.1`, loaded at
//! run time: the agent builds and starts without it, and says why NVML is unavailable).
//!
//! The inventory is read once when the source opens (GPUs are not hot-plugged in practice); each
//! sample reads utilization, memory, temperature, power, clocks, ECC counts and throttle reasons, and
//! drains the XID events NVML queued since the previous sample. A GPU whose calls answer
//! `GPU_IS_LOST` has fallen off the bus: its sample says `lost`, which the health rules act on.

use std::collections::HashSet;

use nvml_wrapper::{
    Device, Nvml,
    bitmasks::{device::ThrottleReasons, event::EventTypes},
    enum_wrappers::device::{Clock, EccCounter, MemoryError, TemperatureSensor},
    enums::event::XidError,
    error::NvmlError,
    event::EventSet,
};
use serde::Serialize;

use super::{GpuInfo, GpuSource, MAX_XIDS_REMEMBERED, Sample};
use crate::inventory::KNOWN_GPU_MODELS;

/// NVLink links NVML may report per GPU (`NVML_NVLINK_MAX_LINKS`).
const NVLINK_MAX_LINKS: u32 = 18;

/// Why NVML cannot be used, in words for the node's owner.
pub fn explain(error: &NvmlError) -> String {
    match error {
        NvmlError::LibloadingError(e) => format!(
            "the NVML library (libnvidia-ml.so.1) could not be loaded ({e}): is the NVIDIA driver \
             installed, and, in a container, is the NVIDIA container runtime in use?"
        ),
        NvmlError::LibraryNotFound => {
            "the NVML library (libnvidia-ml.so.1) was not found: is the NVIDIA driver installed?"
                .to_string()
        }
        NvmlError::DriverNotLoaded => {
            "the NVIDIA kernel driver is not loaded (no GPU, or the driver module is missing)"
                .to_string()
        }
        NvmlError::NoPermission => {
            "no permission to talk to the NVIDIA driver (access to /dev/nvidia* is needed)"
                .to_string()
        }
        NvmlError::GpuLost => "a GPU has fallen off the bus".to_string(),
        other => format!("NVML failed: {other}"),
    }
}

/// What [`discover`] found: the inventory and one sample, or why there is none, and the errors of
/// readings that failed without making NVML unusable.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Discovery {
    /// Why NVML is unavailable; `None` when it works.
    pub unavailable: Option<String>,
    /// The GPUs.
    pub gpus: Vec<GpuInfo>,
    /// One sample per GPU.
    pub samples: Vec<Sample>,
    /// Readings that failed (`GPU 0: power: Not supported`), for a person to read.
    pub errors: Vec<String>,
}

/// Opens NVML, reads the inventory and takes one sample: what `agora gpus` prints and
/// `scripts/gpu-check.sh` checks on a GPU machine. Never fails: NVML being unavailable is a result.
pub fn discover() -> Discovery {
    match NvmlGpus::open() {
        Ok(mut source) => {
            let samples = source.sample(&HashSet::new());
            Discovery {
                unavailable: None,
                gpus: source.gpus.clone(),
                samples,
                errors: std::mem::take(&mut source.errors),
            }
        }
        Err(e) => Discovery {
            unavailable: Some(explain(&e)),
            gpus: Vec::new(),
            samples: Vec::new(),
            errors: Vec::new(),
        },
    }
}

/// The node's real GPUs.
pub struct NvmlGpus {
    devices: Vec<Device<'static>>,
    gpus: Vec<GpuInfo>,
    /// XID events of every GPU that supports them; `None` when none could be registered.
    events: Option<EventSet<'static>>,
    xids: Vec<XidHistory>,
    /// Readings that failed in the latest inventory or sample.
    errors: Vec<String>,
}

#[derive(Clone, Default)]
struct XidHistory {
    count: u64,
    last: Option<u32>,
    seen: Vec<u32>,
}

impl NvmlGpus {
    /// Initialises NVML and reads the inventory.
    pub fn open() -> Result<Self, NvmlError> {
        // The NVML handle lives as long as the process: leaking it lets devices and the event set
        // borrow it for `'static` instead of tying the source to a self-referential struct.
        let nvml: &'static Nvml = Box::leak(Box::new(Nvml::init()?));
        let count = nvml.device_count()?;
        let driver_version = nvml.sys_driver_version().ok();
        let cuda_version = nvml.sys_cuda_driver_version().ok().map(cuda_version);
        let mut errors = Vec::new();
        let mut devices = Vec::new();
        let mut gpus = Vec::new();
        for index in 0..count {
            let device = nvml.device_by_index(index)?;
            let uuid = device.uuid()?;
            let product_name = device.name()?;
            let memory_bytes = device.memory_info()?.total;
            let mut note =
                |what: &str, e: &NvmlError| errors.push(format!("GPU {index}: {what}: {e}"));
            let compute_capability = match device.cuda_compute_capability() {
                Ok(cc) => format!("{}.{}", cc.major, cc.minor),
                Err(e) => {
                    note("compute capability", &e);
                    String::from("0.0")
                }
            };
            let pcie_generation = device
                .current_pcie_link_gen()
                .map_err(|e| note("PCIe generation", &e))
                .ok();
            let pcie_width = device
                .current_pcie_link_width()
                .map_err(|e| note("PCIe width", &e))
                .ok();
            let nvlink_active_links = nvlink_active_links(&device);
            let memory_mib = memory_bytes / (1024 * 1024);
            let (model, memory_gib) = model(&product_name, memory_mib);
            gpus.push(GpuInfo {
                device: crds::v1alpha1::GpuDevice {
                    uuid,
                    model,
                    memory_gib,
                    compute_capability,
                    healthy: true,
                    simulated: false,
                },
                index,
                product_name,
                memory_mib,
                pcie_generation,
                pcie_width,
                nvlink_active_links,
                driver_version: driver_version.clone(),
                cuda_version: cuda_version.clone(),
            });
            devices.push(device);
        }
        let events = register_xid_events(nvml, &devices, &mut errors);
        Ok(Self {
            xids: vec![XidHistory::default(); devices.len()],
            devices,
            gpus,
            events,
            errors,
        })
    }

    /// Moves the queued XID events into each GPU's history.
    fn drain_xid_events(&mut self) {
        let Some(events) = &self.events else { return };
        // A zero timeout returns at once with `Timeout` when the queue is empty; the bound keeps a
        // storm of events from holding up the sample.
        for _ in 0..1024 {
            let Ok(event) = events.wait(0) else { break };
            let Ok(uuid) = event.device.uuid() else {
                continue;
            };
            let Some(i) = self.gpus.iter().position(|g| g.device.uuid == uuid) else {
                continue;
            };
            let code = match event.event_data {
                Some(XidError::Value(code)) => u32::try_from(code).unwrap_or(u32::MAX),
                Some(XidError::Unknown) | None => continue,
            };
            let history = &mut self.xids[i];
            history.count += 1;
            history.last = Some(code);
            if !history.seen.contains(&code) && history.seen.len() < MAX_XIDS_REMEMBERED {
                history.seen.push(code);
            }
        }
    }
}

/// Registers every GPU that supports them for critical XID events.
fn register_xid_events(
    nvml: &'static Nvml,
    devices: &[Device<'static>],
    errors: &mut Vec<String>,
) -> Option<EventSet<'static>> {
    let mut set = match nvml.create_event_set() {
        Ok(set) => set,
        Err(e) => {
            errors.push(format!("XID events: {e}"));
            return None;
        }
    };
    for (index, device) in devices.iter().enumerate() {
        let supported = device
            .supported_event_types()
            .is_ok_and(|t| t.contains(EventTypes::CRITICAL_XID_ERROR));
        if !supported {
            errors.push(format!("GPU {index}: XID events: not supported"));
            continue;
        }
        // A failed registration consumes the set; XIDs are then not watched at all, and said so.
        set = match device.register_events(EventTypes::CRITICAL_XID_ERROR, set) {
            Ok(set) => set,
            Err(e) => {
                errors.push(format!("GPU {index}: XID events: {}", e.error));
                return None;
            }
        };
    }
    Some(set)
}

/// Active NVLink links; `None` when the GPU has no NVLink.
fn nvlink_active_links(device: &Device<'_>) -> Option<u32> {
    let mut active = 0;
    let mut any = false;
    for link in 0..NVLINK_MAX_LINKS {
        match device.link_wrapper_for(link).is_active() {
            Ok(up) => {
                any = true;
                active += u32::from(up);
            }
            Err(_) => continue,
        }
    }
    any.then_some(active)
}

/// NVML's CUDA driver version (`12040`) as `major.minor` (`12.4`).
pub fn cuda_version(version: i32) -> String {
    format!("{}.{}", version / 1000, (version % 1000) / 10)
}

/// The throttle reasons' names (NVML's, lowercased) and whether one of them is thermal.
pub fn throttle_reasons(reasons: ThrottleReasons) -> (Vec<String>, bool) {
    const NAMES: &[(ThrottleReasons, &str)] = &[
        (ThrottleReasons::GPU_IDLE, "gpu_idle"),
        (
            ThrottleReasons::APPLICATIONS_CLOCKS_SETTING,
            "applications_clocks_setting",
        ),
        (ThrottleReasons::SW_POWER_CAP, "sw_power_cap"),
        (ThrottleReasons::HW_SLOWDOWN, "hw_slowdown"),
        (ThrottleReasons::SYNC_BOOST, "sync_boost"),
        (ThrottleReasons::SW_THERMAL_SLOWDOWN, "sw_thermal_slowdown"),
        (ThrottleReasons::HW_THERMAL_SLOWDOWN, "hw_thermal_slowdown"),
        (
            ThrottleReasons::HW_POWER_BRAKE_SLOWDOWN,
            "hw_power_brake_slowdown",
        ),
        (
            ThrottleReasons::DISPLAY_CLOCK_SETTING,
            "display_clock_setting",
        ),
    ];
    let names = NAMES
        .iter()
        .filter(|(flag, _)| reasons.contains(*flag))
        .map(|(_, name)| (*name).to_string())
        .collect();
    let thermal = reasons
        .intersects(ThrottleReasons::SW_THERMAL_SLOWDOWN | ThrottleReasons::HW_THERMAL_SLOWDOWN);
    (names, thermal)
}

/// The model name Agora uses (`H100-80GB`) and its memory in GiB for NVML's product name (`NVIDIA
/// H100 80GB HBM3`) and memory: the known model of the same product whose memory is closest, within 10 % (drivers
/// report a little less than the marketed size); otherwise product and memory as reported. Naming
/// GPUs the same way on every node is what lets jobs ask for a model and find it.
pub fn model(product_name: &str, memory_mib: u64) -> (String, u32) {
    let product = product(product_name);
    let gib = memory_mib as f64 / 1024.0;
    let closest = KNOWN_GPU_MODELS
        .iter()
        .filter(|m| {
            m.name
                .rsplit_once('-')
                .is_some_and(|(p, _)| p.eq_ignore_ascii_case(&product))
        })
        .map(|m| {
            (
                m,
                (f64::from(m.memory_gib) - gib).abs() / f64::from(m.memory_gib),
            )
        })
        .filter(|(_, off)| *off <= 0.10)
        .min_by(|a, b| a.1.total_cmp(&b.1));
    match closest {
        Some((m, _)) => (m.name.to_string(), m.memory_gib),
        None => {
            let gib = gib.round() as u32;
            (format!("{product}-{gib}GB"), gib)
        }
    }
}

/// The product in NVML's name: vendor and family words dropped, the first remaining word, cut at
/// the first `-` (`A100-SXM4-40GB` → `A100`), with `RTX 4090` written `RTX4090`.
fn product(product_name: &str) -> String {
    let mut words = product_name.split_whitespace().filter(|w| {
        !["nvidia", "geforce", "tesla", "quadro"].contains(&w.to_ascii_lowercase().as_str())
    });
    let first = words.next().unwrap_or("GPU");
    let first = first.split('-').next().unwrap_or(first);
    let product = if first.eq_ignore_ascii_case("rtx") {
        match words.next() {
            Some(number) => format!("RTX{number}"),
            None => "RTX".to_string(),
        }
    } else {
        first.to_string()
    };
    product.to_ascii_uppercase()
}

impl GpuSource for NvmlGpus {
    fn inventory(&self) -> &[GpuInfo] {
        &self.gpus
    }

    fn simulated(&self) -> bool {
        false
    }

    fn sample(&mut self, _busy: &HashSet<String>) -> Vec<Sample> {
        self.drain_xid_events();
        let mut errors = Vec::new();
        let samples = self
            .devices
            .iter()
            .zip(&self.gpus)
            .zip(&self.xids)
            .map(|((device, gpu), xids)| sample_device(device, gpu, xids, &mut errors))
            .collect();
        self.errors = errors;
        samples
    }
}

/// Reads one value of one GPU, noting a lost GPU and failures worth telling.
struct Reader<'a> {
    index: u32,
    lost: bool,
    errors: &'a mut Vec<String>,
}

impl Reader<'_> {
    fn read<T>(&mut self, what: &str, result: Result<T, NvmlError>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(NvmlError::GpuLost) => {
                self.lost = true;
                None
            }
            // Not every GPU has every sensor; nothing to report then.
            Err(NvmlError::NotSupported) => None,
            Err(e) => {
                self.errors.push(format!("GPU {}: {what}: {e}", self.index));
                None
            }
        }
    }
}

fn sample_device(
    device: &Device<'_>,
    gpu: &GpuInfo,
    xids: &XidHistory,
    errors: &mut Vec<String>,
) -> Sample {
    let mut reader = Reader {
        index: gpu.index,
        lost: false,
        errors,
    };
    let utilization = reader.read("utilization", device.utilization_rates().map(|u| u.gpu));
    let memory = reader.read("memory", device.memory_info().map(|m| (m.used, m.free)));
    let temperature = reader.read("temperature", device.temperature(TemperatureSensor::Gpu));
    let power = reader.read("power", device.power_usage());
    let sm_clock = reader.read("SM clock", device.clock_info(Clock::SM));
    let memory_clock = reader.read("memory clock", device.clock_info(Clock::Memory));
    let ecc_corrected = reader.read(
        "ECC corrected",
        device.total_ecc_errors(MemoryError::Corrected, EccCounter::Volatile),
    );
    let ecc_uncorrected = reader.read(
        "ECC uncorrected",
        device.total_ecc_errors(MemoryError::Uncorrected, EccCounter::Volatile),
    );
    let throttle = reader.read("throttle reasons", device.current_throttle_reasons());
    let lost = reader.lost;
    let (throttle_reasons, thermally_throttled) =
        throttle.map(throttle_reasons).unwrap_or_default();
    const MIB: u64 = 1024 * 1024;
    Sample {
        uuid: gpu.device.uuid.clone(),
        utilization_percent: utilization,
        memory_used_mib: memory.map(|(used, _)| used / MIB),
        memory_free_mib: memory.map(|(_, free)| free / MIB),
        temperature_c: temperature.and_then(|t| i32::try_from(t).ok()),
        // NVML reports milliwatts.
        power_watts: power.map(|mw| f64::from(mw) / 1000.0),
        sm_clock_mhz: sm_clock,
        memory_clock_mhz: memory_clock,
        ecc_corrected,
        ecc_uncorrected,
        xid_errors: xids.count,
        last_xid: xids.last,
        xids_seen: xids.seen.clone(),
        throttle_reasons,
        thermally_throttled,
        lost,
        simulated: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nvml_product_names_map_to_agora_models() {
        for (name, mib, expected) in [
            ("NVIDIA H100 80GB HBM3", 81_559, "H100-80GB"),
            ("NVIDIA H100 PCIe", 81_559, "H100-80GB"),
            ("NVIDIA H200", 143_771, "H200-141GB"),
            ("NVIDIA A100-SXM4-40GB", 40_960, "A100-40GB"),
            ("NVIDIA A100-SXM4-80GB", 81_920, "A100-80GB"),
            ("NVIDIA A100 80GB PCIe", 81_920, "A100-80GB"),
            ("NVIDIA A10", 23_028, "A10-24GB"),
            ("NVIDIA L4", 23_034, "L4-24GB"),
            ("NVIDIA L40S", 46_068, "L40S-48GB"),
            ("NVIDIA GeForce RTX 4090", 24_564, "RTX4090-24GB"),
            ("NVIDIA GeForce RTX 3090", 24_576, "RTX3090-24GB"),
            ("Tesla T4", 15_360, "T4-16GB"),
            ("Tesla V100-SXM2-16GB", 16_160, "V100-16GB"),
            ("Tesla V100-SXM2-32GB", 32_768, "V100-32GB"),
        ] {
            let (found, gib) = model(name, mib);
            assert_eq!(found, expected, "{name}");
            assert!(
                expected.ends_with(&format!("-{gib}GB")),
                "{name}: {gib} GiB"
            );
        }
    }

    #[test]
    fn unknown_products_keep_their_name_and_memory() {
        assert_eq!(
            model("NVIDIA RTX A6000", 49_140),
            ("RTXA6000-48GB".into(), 48)
        );
        assert_eq!(
            model("NVIDIA GH200 480GB", 97_871),
            ("GH200-96GB".into(), 96)
        );
        // A known product with an unknown memory size is not passed off as the known size.
        assert_eq!(model("NVIDIA H100 NVL", 95_830), ("H100-94GB".into(), 94));
    }

    #[test]
    fn cuda_versions_read_as_major_minor() {
        assert_eq!(cuda_version(12_040), "12.4");
        assert_eq!(cuda_version(12_080), "12.8");
        assert_eq!(cuda_version(11_020), "11.2");
    }

    #[test]
    fn thermal_throttle_reasons_are_recognised() {
        let (names, thermal) = throttle_reasons(ThrottleReasons::GPU_IDLE);
        assert_eq!((names, thermal), (vec!["gpu_idle".to_string()], false));
        for flag in [
            ThrottleReasons::SW_THERMAL_SLOWDOWN,
            ThrottleReasons::HW_THERMAL_SLOWDOWN,
        ] {
            let (_, thermal) = throttle_reasons(flag | ThrottleReasons::SW_POWER_CAP);
            assert!(thermal);
        }
        let (names, thermal) = throttle_reasons(ThrottleReasons::SW_POWER_CAP);
        assert_eq!((names, thermal), (vec!["sw_power_cap".to_string()], false));
    }

    #[test]
    fn unavailable_nvml_is_explained() {
        assert!(explain(&NvmlError::DriverNotLoaded).contains("kernel driver is not loaded"));
        assert!(explain(&NvmlError::NoPermission).contains("/dev/nvidia"));
        assert!(explain(&NvmlError::LibraryNotFound).contains("libnvidia-ml.so.1"));
        assert!(explain(&NvmlError::GpuLost).contains("fallen off the bus"));
    }

    /// On a machine without the NVIDIA driver (CI, this repository's build machines) discovery
    /// reports why instead of failing; on a GPU machine it finds at least one GPU.
    #[test]
    fn discovery_reports_gpus_or_why_there_are_none() {
        let found = discover();
        match &found.unavailable {
            Some(why) => {
                assert!(found.gpus.is_empty());
                assert!(!why.is_empty());
            }
            None => {
                assert!(!found.gpus.is_empty(), "{found:?}");
                assert_eq!(found.samples.len(), found.gpus.len());
                assert!(found.gpus.iter().all(|g| g.device.uuid.starts_with("GPU-")));
            }
        }
    }
}
