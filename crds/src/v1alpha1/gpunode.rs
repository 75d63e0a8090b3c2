//! The `GpuNode` custom resource: a GPU machine offered to the network, mirrored from the hub's
//! node registry so that `kubectl get gn` is a live capacity view.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::money::Price;

/// What a node offers: who operates it, where it is, and its asking price.
// Every `printcolumn(...)` repeats `name`/`type_`/`json_path`, which clippy takes for duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "agora.dev",
    version = "v1alpha1",
    kind = "GpuNode",
    shortname = "gn",
    category = "agora",
    status = "GpuNodeStatus",
    derive = "PartialEq",
    doc = "A GPU machine contributed to the Agora network (mirrored from the hub's node registry).",
    printcolumn(name = "Region", type_ = "string", json_path = ".spec.region"),
    printcolumn(
        name = "Model",
        type_ = "string",
        json_path = ".status.gpuModel",
        description = "GPU model"
    ),
    printcolumn(
        name = "GPUs",
        type_ = "integer",
        json_path = ".status.capacity",
        description = "GPUs on the node"
    ),
    printcolumn(
        name = "Free",
        type_ = "integer",
        json_path = ".status.free",
        description = "Healthy GPUs not allocated"
    ),
    printcolumn(
        name = "Price",
        type_ = "string",
        json_path = ".spec.pricePerGpuHour",
        description = "Asking price per GPU-hour"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Healthy",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Healthy\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "TFLOPS",
        type_ = "number",
        json_path = ".status.benchmarkTflops",
        description = "Measured matrix-multiply throughput",
        priority = "1"
    ),
    printcolumn(
        name = "Simulated",
        type_ = "boolean",
        json_path = ".status.simulated",
        description = "Simulated GPUs (development and tests only)",
        priority = "1"
    ),
    printcolumn(
        name = "Operator",
        type_ = "string",
        json_path = ".spec.operatorAddress",
        description = "The chain address whose stake backs the node",
        priority = "1"
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(transform = super::kubernetes_integer_formats)]
pub struct GpuNodeSpec {
    /// The chain address of the operator whose stake backs this node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub operator_address: Option<String>,
    /// The node's region (e.g. `eu-west`).
    #[schemars(length(min = 1, max = 63))]
    pub region: String,
    /// The operator's asking price per GPU-hour.
    pub price_per_gpu_hour: Price,
}

/// What the hub knows of a node now.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = super::kubernetes_integer_formats)]
pub struct GpuNodeStatus {
    /// Every GPU on the node.
    #[serde(default)]
    pub gpus: Vec<GpuDevice>,
    /// The GPU model, or `mixed` when the node has several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_model: Option<String>,
    /// Number of GPUs.
    #[serde(default)]
    pub capacity: u32,
    /// Healthy GPUs that may be offered.
    #[serde(default)]
    pub allocatable: u32,
    /// GPUs held by running work.
    #[serde(default)]
    pub allocated: u32,
    /// Healthy GPUs not allocated.
    #[serde(default)]
    pub free: u32,
    /// Workload types the node's executors run (`container`, `process`, `builtin:sleep`, …).
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// Measured matrix-multiply throughput in TFLOPS, when benchmarked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub benchmark_tflops: Option<f64>,
    /// What the node's network measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NodeNetwork>,
    /// Bonded stake in the chain's smallest denomination unit, as a decimal integer string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stake: Option<String>,
    /// Reputation score in [0, 1].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reputation: Option<f64>,
    /// Whether the node's operator is jailed (no new work).
    #[serde(default)]
    pub jailed: bool,
    /// Whether the node's GPUs are simulated (development and tests only).
    #[serde(default)]
    pub simulated: bool,
    /// The last heartbeat the hub received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat: Option<Time>,
    /// Conditions `Ready` (heartbeats arrive) and `Healthy` (no GPU health finding).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// One GPU of a node.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GpuDevice {
    /// The GPU's UUID (`GPU-…`; simulated GPUs have `GPU-SIM-…`).
    #[schemars(length(min = 1, max = 128))]
    pub uuid: String,
    /// Model, e.g. `H100-80GB`.
    #[schemars(length(min = 1, max = 64))]
    pub model: String,
    /// Memory in GiB.
    #[serde(rename = "memoryGiB")]
    pub memory_gib: u32,
    /// CUDA compute capability `major.minor`.
    #[schemars(regex(pattern = r"^[0-9]{1,2}\.[0-9]{1,2}$"))]
    pub compute_capability: String,
    /// Whether the GPU may be offered.
    pub healthy: bool,
    /// Whether the GPU is simulated.
    #[serde(default)]
    pub simulated: bool,
}

/// A node's measured network.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeNetwork {
    /// Uplink in Mbit/s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uplink_mbps: Option<u32>,
    /// Downlink in Mbit/s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downlink_mbps: Option<u32>,
    /// Latency coordinates (milliseconds), fitted from RTT probes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub coordinates: Vec<f64>,
}
