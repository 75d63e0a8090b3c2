//! What GPUs a node has.
//!
//! For now only simulated inventories exist: `agora dev`, `agora simulate` and `agora agent
//! --simulate-gpus SPEC` describe a fleet with specs like `8xH100-80GB` or `2xA100-40GB,1xL4-24GB`,
//! so the whole control plane can be exercised on machines without GPUs. Simulated GPUs are labelled
//! as such everywhere (`simulated: true`, UUIDs `GPU-SIM-…`) so they are never mistaken for real ones.
//!
//! NVML discovery arrives with the agent issue.

use crds::v1alpha1::GpuDevice;
use sha2::{Digest, Sha256};

/// The most GPUs one node may have, in one spec entry and in total: more than any real machine holds,
/// small enough that a typo (`800xH100-80GB`) is caught rather than advertised.
pub const MAX_GPUS_PER_NODE: u32 = 64;

/// A real GPU model that simulated inventories may use, with the facts the scheduler filters on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GpuModel {
    /// Model name as Agora writes it: product, dash, memory size (`H100-80GB`).
    pub name: &'static str,
    /// Memory in GiB, as the name states it.
    pub memory_gib: u32,
    /// CUDA compute capability `major.minor`.
    pub compute_capability: &'static str,
}

const fn model(name: &'static str, memory_gib: u32, compute_capability: &'static str) -> GpuModel {
    GpuModel {
        name,
        memory_gib,
        compute_capability,
    }
}

/// GPU models a simulated inventory may name. Only real products, with their real memory size and
/// compute capability, so simulated fleets exercise the scheduler with believable numbers.
pub const KNOWN_GPU_MODELS: &[GpuModel] = &[
    model("B200-180GB", 180, "10.0"),
    model("H200-141GB", 141, "9.0"),
    model("H100-80GB", 80, "9.0"),
    model("A100-80GB", 80, "8.0"),
    model("A100-40GB", 40, "8.0"),
    model("L40S-48GB", 48, "8.9"),
    model("L40-48GB", 48, "8.9"),
    model("L4-24GB", 24, "8.9"),
    model("A40-48GB", 48, "8.6"),
    model("A30-24GB", 24, "8.0"),
    model("A10-24GB", 24, "8.6"),
    model("RTX5090-32GB", 32, "12.0"),
    model("RTX4090-24GB", 24, "8.9"),
    model("RTX3090-24GB", 24, "8.6"),
    model("V100-32GB", 32, "7.0"),
    model("V100-16GB", 16, "7.0"),
    model("T4-16GB", 16, "7.5"),
];

/// Looks a model up by name, ignoring ASCII case (`h100-80gb` is `H100-80GB`).
pub fn known_model(name: &str) -> Option<&'static GpuModel> {
    KNOWN_GPU_MODELS
        .iter()
        .find(|m| m.name.eq_ignore_ascii_case(name))
}

impl GpuModel {
    /// Dense FP32 peak in TFLOPS, from NVIDIA's product datasheets ([`crds::gpu_models`], shared
    /// with the hub's benchmark-honesty rule). The matmul benchmark's health finding compares
    /// against it (`workloads::matmul_benchmark::benchmark_finding`).
    pub fn fp32_peak_tflops(&self) -> Option<f64> {
        crds::gpu_models::fp32_peak_tflops(self.name)
    }
}

/// Why a simulated GPU spec was refused. Each message names the offending part of the spec, because
/// the spec is typed by a person on a command line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InventoryError {
    /// Nothing was given.
    #[error("GPU spec is empty; expected e.g. `8xH100-80GB` or `2xA100-40GB,1xL4-24GB`")]
    Empty,
    /// Two commas in a row, or a comma at either end.
    #[error("GPU spec {spec:?} has an empty entry; separate entries with single commas")]
    EmptyEntry {
        /// The whole spec.
        spec: String,
    },
    /// An entry that is not `<count>x<model>`.
    #[error("GPU spec entry {entry:?} is not `<count>x<model>`, e.g. `8xH100-80GB`")]
    Malformed {
        /// The entry.
        entry: String,
    },
    /// An entry with count 0.
    #[error("GPU spec entry {entry:?}: the count must be at least 1")]
    ZeroCount {
        /// The entry.
        entry: String,
    },
    /// An entry with a count above [`MAX_GPUS_PER_NODE`].
    #[error("GPU spec entry {entry:?}: the count must be at most {MAX_GPUS_PER_NODE}")]
    CountTooLarge {
        /// The entry.
        entry: String,
    },
    /// An entry naming a model missing from [`KNOWN_GPU_MODELS`].
    #[error("GPU spec entry {entry:?}: unknown GPU model {model:?}; known models: {known}")]
    UnknownModel {
        /// The entry.
        entry: String,
        /// The model it names.
        model: String,
        /// The known models, comma-separated.
        known: String,
    },
    /// Entries that together exceed [`MAX_GPUS_PER_NODE`].
    #[error("GPU spec {spec:?} describes {total} GPUs; a node has at most {MAX_GPUS_PER_NODE}")]
    TooManyInTotal {
        /// The whole spec.
        spec: String,
        /// How many GPUs it describes.
        total: u64,
    },
}

/// The simulated GPUs a spec such as `8xH100-80GB` or `2xA100-40GB,1xL4-24GB` describes, in spec
/// order. Each GPU's UUID comes from [`simulated_uuid`], so a node restarted with the same name and
/// spec offers the very same GPUs and the hub sees no inventory change.
pub fn simulated(spec: &str, node_name: &str) -> Result<Vec<GpuDevice>, InventoryError> {
    let trimmed = spec.trim();
    if trimmed.is_empty() {
        return Err(InventoryError::Empty);
    }
    let mut entries = Vec::new();
    let mut total: u64 = 0;
    for entry in trimmed.split(',') {
        let entry = entry.trim();
        if entry.is_empty() {
            return Err(InventoryError::EmptyEntry {
                spec: trimmed.to_string(),
            });
        }
        let (count, model) = parse_entry(entry)?;
        total += u64::from(count);
        entries.push((count, model));
    }
    if total > u64::from(MAX_GPUS_PER_NODE) {
        return Err(InventoryError::TooManyInTotal {
            spec: trimmed.to_string(),
            total,
        });
    }
    let mut gpus = Vec::new();
    for (count, model) in entries {
        for _ in 0..count {
            gpus.push(GpuDevice {
                uuid: simulated_uuid(node_name, gpus.len()),
                model: model.name.to_string(),
                memory_gib: model.memory_gib,
                compute_capability: model.compute_capability.to_string(),
                healthy: true,
                simulated: true,
            });
        }
    }
    Ok(gpus)
}

/// One `<count>x<model>` entry.
fn parse_entry(entry: &str) -> Result<(u32, &'static GpuModel), InventoryError> {
    let malformed = || InventoryError::Malformed {
        entry: entry.to_string(),
    };
    let (count, model_name) = entry.split_once(['x', 'X']).ok_or_else(malformed)?;
    let (count, model_name) = (count.trim(), model_name.trim());
    if count.is_empty() || !count.bytes().all(|b| b.is_ascii_digit()) || model_name.is_empty() {
        return Err(malformed());
    }
    // Only digits remain, so a parse failure means the number overflowed: far too many GPUs.
    let count: u32 = count.parse().map_err(|_| InventoryError::CountTooLarge {
        entry: entry.to_string(),
    })?;
    if count == 0 {
        return Err(InventoryError::ZeroCount {
            entry: entry.to_string(),
        });
    }
    if count > MAX_GPUS_PER_NODE {
        return Err(InventoryError::CountTooLarge {
            entry: entry.to_string(),
        });
    }
    let model = known_model(model_name).ok_or_else(|| InventoryError::UnknownModel {
        entry: entry.to_string(),
        model: model_name.to_string(),
        known: KNOWN_GPU_MODELS
            .iter()
            .map(|m| m.name)
            .collect::<Vec<_>>()
            .join(", "),
    })?;
    Ok((count, model))
}

/// The UUID of simulated GPU number `index` (0-based, across the whole spec) of node `node_name`:
/// `GPU-SIM-` and 32 hex digits of a SHA-256 over both. Deterministic so restarts keep GPU identities;
/// the node name is part of it so two simulated nodes never share a GPU UUID.
pub fn simulated_uuid(node_name: &str, index: usize) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"agora simulated gpu\0");
    hasher.update(node_name.as_bytes());
    hasher.update(b"\0");
    hasher.update(index.to_string().as_bytes());
    let digest = hasher.finalize();
    format!("GPU-SIM-{}", hex::encode(&digest[..16]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_single_entry() {
        let gpus = simulated("8xH100-80GB", "gn-a").unwrap();
        assert_eq!(gpus.len(), 8);
        for gpu in &gpus {
            assert_eq!(gpu.model, "H100-80GB");
            assert_eq!(gpu.memory_gib, 80);
            assert_eq!(gpu.compute_capability, "9.0");
            assert!(gpu.healthy);
            assert!(gpu.simulated);
            assert!(gpu.uuid.starts_with("GPU-SIM-"), "{}", gpu.uuid);
        }
    }

    #[test]
    fn parses_several_entries_in_order() {
        let gpus = simulated("2xA100-40GB,1xL4-24GB", "gn-a").unwrap();
        let models: Vec<_> = gpus
            .iter()
            .map(|g| (g.model.as_str(), g.memory_gib))
            .collect();
        assert_eq!(
            models,
            [("A100-40GB", 40), ("A100-40GB", 40), ("L4-24GB", 24)]
        );
        assert_eq!(gpus[2].compute_capability, "8.9");
    }

    #[test]
    fn accepts_spaces_and_any_case() {
        let gpus = simulated(" 1xrtx4090-24gb , 2X t4-16GB ", "gn-a").unwrap();
        let models: Vec<_> = gpus.iter().map(|g| g.model.as_str()).collect();
        assert_eq!(models, ["RTX4090-24GB", "T4-16GB", "T4-16GB"]);
        assert_eq!(gpus[0].compute_capability, "8.9");
        assert_eq!(gpus[1].compute_capability, "7.5");
    }

    #[test]
    fn knows_the_documented_models() {
        for (name, mem, cc) in [
            ("H200-141GB", 141, "9.0"),
            ("H100-80GB", 80, "9.0"),
            ("A100-80GB", 80, "8.0"),
            ("A100-40GB", 40, "8.0"),
            ("L40S-48GB", 48, "8.9"),
            ("L4-24GB", 24, "8.9"),
            ("A10-24GB", 24, "8.6"),
            ("RTX4090-24GB", 24, "8.9"),
            ("RTX3090-24GB", 24, "8.6"),
            ("V100-32GB", 32, "7.0"),
            ("T4-16GB", 16, "7.5"),
        ] {
            let m = known_model(name).unwrap();
            assert_eq!((m.memory_gib, m.compute_capability), (mem, cc), "{name}");
        }
    }

    #[test]
    fn model_names_state_their_memory() {
        for m in KNOWN_GPU_MODELS {
            assert!(
                m.name.ends_with(&format!("-{}GB", m.memory_gib)),
                "{}",
                m.name
            );
        }
    }

    #[test]
    fn uuids_are_deterministic_and_distinct() {
        let a = simulated("4xH100-80GB", "gn-a").unwrap();
        let again = simulated("4xH100-80GB", "gn-a").unwrap();
        assert_eq!(a, again);
        let b = simulated("4xH100-80GB", "gn-b").unwrap();
        let mut all: Vec<_> = a.iter().chain(&b).map(|g| g.uuid.clone()).collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 8, "UUIDs differ across indexes and nodes");
        assert_eq!(a[1].uuid, simulated_uuid("gn-a", 1));
        let hex = a[0].uuid.strip_prefix("GPU-SIM-").unwrap();
        assert_eq!(hex.len(), 32);
        assert!(hex.bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn uuid_is_stable_across_releases() {
        // A change here would give every simulated node new GPUs on upgrade.
        assert_eq!(
            simulated_uuid("gn-a", 0),
            "GPU-SIM-ae3ec5b09b0cc47e7caa1c5746e832a6"
        );
        assert_ne!(simulated_uuid("gn-a", 0), simulated_uuid("gn-a0", 0));
        assert_ne!(simulated_uuid("gn-a", 1), simulated_uuid("gn-a", 10));
    }

    fn err(spec: &str) -> (InventoryError, String) {
        let e = simulated(spec, "gn-a").unwrap_err();
        let message = e.to_string();
        (e, message)
    }

    #[test]
    fn rejects_an_empty_spec() {
        for spec in ["", "   "] {
            let (e, message) = err(spec);
            assert_eq!(e, InventoryError::Empty);
            assert_eq!(
                message,
                "GPU spec is empty; expected e.g. `8xH100-80GB` or `2xA100-40GB,1xL4-24GB`"
            );
        }
    }

    #[test]
    fn rejects_empty_entries() {
        for spec in ["8xH100-80GB,", ",8xH100-80GB", "1xL4-24GB,,1xL4-24GB"] {
            let (e, message) = err(spec);
            assert!(matches!(e, InventoryError::EmptyEntry { .. }), "{spec}");
            assert_eq!(
                message,
                format!(
                    "GPU spec {spec:?} has an empty entry; separate entries with single commas"
                )
            );
        }
    }

    #[test]
    fn rejects_malformed_entries() {
        for entry in [
            "H100-80GB",
            "8H100-80GB",
            "x",
            "8x",
            "ax H100-80GB",
            "-1xH100-80GB",
            "1.5xL4-24GB",
        ] {
            let (e, message) = err(entry);
            assert_eq!(
                e,
                InventoryError::Malformed {
                    entry: entry.to_string()
                },
                "{entry}"
            );
            assert_eq!(
                message,
                format!("GPU spec entry {entry:?} is not `<count>x<model>`, e.g. `8xH100-80GB`")
            );
        }
        let (_, message) = err("1xL4-24GB,RTX4090-24GB");
        assert!(
            message.contains("\"RTX4090-24GB\""),
            "names the bad entry: {message}"
        );
    }

    #[test]
    fn rejects_count_zero() {
        let (e, message) = err("1xL4-24GB,0xH100-80GB");
        assert_eq!(
            e,
            InventoryError::ZeroCount {
                entry: "0xH100-80GB".to_string()
            }
        );
        assert_eq!(
            message,
            "GPU spec entry \"0xH100-80GB\": the count must be at least 1"
        );
    }

    #[test]
    fn rejects_counts_above_64() {
        assert_eq!(simulated("64xT4-16GB", "gn-a").unwrap().len(), 64);
        for entry in ["65xH100-80GB", "99999999999999999999xH100-80GB"] {
            let (e, message) = err(entry);
            assert_eq!(
                e,
                InventoryError::CountTooLarge {
                    entry: entry.to_string()
                }
            );
            assert_eq!(
                message,
                format!("GPU spec entry {entry:?}: the count must be at most 64")
            );
        }
    }

    #[test]
    fn rejects_more_than_64_in_total() {
        let (e, message) = err("40xH100-80GB,40xA100-80GB");
        assert_eq!(
            e,
            InventoryError::TooManyInTotal {
                spec: "40xH100-80GB,40xA100-80GB".to_string(),
                total: 80
            }
        );
        assert_eq!(
            message,
            "GPU spec \"40xH100-80GB,40xA100-80GB\" describes 80 GPUs; a node has at most 64"
        );
    }

    #[test]
    fn rejects_unknown_models_listing_known_ones() {
        let (e, message) = err("2xH100-80GB,1xH100-81GB");
        assert!(matches!(&e, InventoryError::UnknownModel { model, .. } if model == "H100-81GB"));
        assert!(
            message.starts_with(
                "GPU spec entry \"1xH100-81GB\": unknown GPU model \"H100-81GB\"; known models: "
            ),
            "{message}"
        );
        for m in KNOWN_GPU_MODELS {
            assert!(message.contains(m.name), "{message} lists {}", m.name);
        }
    }
}
