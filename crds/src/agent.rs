//! Wire types of the agent protocol (`/v1/agent/...`), spoken between the hub and node agents over
//! HTTP + JSON. Agents only ever connect out to the hub, so they work behind NAT.
//!
//! The sequence: `register` → token; then, concurrently, `heartbeat` every few seconds, a long-poll
//! on `assignments` for new work, and `status` reports as work starts and ends.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{
    money::Price,
    v1alpha1::{GpuDevice, Workload},
};

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: &str = "v1";

/// Header that carries [`PROTOCOL_VERSION`] on every agent request; the hub rejects versions it
/// does not speak, so an outdated agent fails loudly instead of misreading answers.
pub const PROTOCOL_VERSION_HEADER: &str = "agora-protocol-version";

/// `POST /v1/agent/register`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegisterRequest {
    /// The node name the agent wants (`gn-…`, stable across restarts); the hub keeps one node per name.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// The node's region.
    #[schemars(length(min = 1, max = 63))]
    pub region: String,
    /// The operator's chain address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub operator_address: Option<String>,
    /// Asking price per GPU-hour.
    pub price_per_gpu_hour: Price,
    /// The node's GPUs.
    #[schemars(length(min = 1, max = 64))]
    pub gpus: Vec<GpuDevice>,
    /// Workload types the node's executors run.
    #[schemars(length(min = 1, max = 64), inner(length(min = 1, max = 64)))]
    pub capabilities: Vec<String>,
    /// Whether the GPUs are simulated.
    #[serde(default)]
    pub simulated: bool,
    /// The agent's version, for the operator's view.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
}

/// Answer to `register`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegisterResponse {
    /// The node's name.
    pub node: String,
    /// Bearer token for every later agent call; it acts only for this node.
    pub token: String,
    /// How often to send heartbeats.
    pub heartbeat_interval_seconds: u32,
}

/// `POST /v1/agent/heartbeat`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeartbeatRequest {
    /// The full GPU inventory when it changed since the last heartbeat (health, hot-plug).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus: Option<Vec<GpuDevice>>,
    /// Every assignment the agent currently holds and its state.
    #[serde(default)]
    pub assignments: Vec<AssignmentState>,
}

/// An assignment the agent holds.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AssignmentState {
    /// Assignment id.
    pub id: String,
    /// What the agent is doing with it.
    pub state: WorkerState,
}

/// Answer to `heartbeat`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeartbeatResponse {
    /// Assignments the agent must stop (cancelled jobs, or assignments the hub no longer knows).
    #[serde(default)]
    pub stop: Vec<String>,
    /// How often to send heartbeats.
    pub heartbeat_interval_seconds: u32,
}

/// `GET /v1/agent/assignments?waitSeconds=N`: assignments to start, waiting up to N seconds for one.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AssignmentList {
    /// Assignments the agent should be running.
    pub items: Vec<Assignment>,
}

/// One worker of one job attempt, bound to this node and some of its GPUs.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Assignment {
    /// Assignment id (`asg-…`).
    pub id: String,
    /// The job's id.
    pub job: String,
    /// Attempt number, 1-based.
    pub attempt: u32,
    /// Worker rank, 0-based.
    pub rank: u32,
    /// Number of workers in the attempt.
    pub workers: u32,
    /// UUIDs of the GPUs this worker holds.
    pub gpus: Vec<String>,
    /// What to run.
    pub workload: Workload,
    /// Wall-clock limit in seconds, if the job has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_runtime_seconds: Option<u64>,
}

/// `POST /v1/agent/assignments/{id}/status`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StatusReport {
    /// The worker's state now.
    pub state: WorkerState,
    /// Exit code, when the worker ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Why the worker ended, when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A worker's state as its agent sees it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum WorkerState {
    /// Received, being prepared (image pull, environment).
    Starting,
    /// Running.
    Running,
    /// Exited 0.
    Succeeded,
    /// Exited non-zero or could not start.
    Failed,
    /// Stopped on the hub's request.
    Stopped,
}

impl WorkerState {
    /// Whether the worker has ended.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            WorkerState::Succeeded | WorkerState::Failed | WorkerState::Stopped
        )
    }
}
