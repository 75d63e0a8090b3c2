//! Wire types of the agent protocol (`/v1/agent/...`), spoken between the hub and node agents over
//! HTTP + JSON. Agents only ever connect out to the hub, so they work behind NAT.
//!
//! The sequence: `challenge` → a nonce, which the node signs into `register` with its secp256k1 key
//! → token; then, concurrently, `heartbeat` every few seconds, a long-poll on `assignments` for new
//! work, and `status` reports as work starts and ends.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{
    money::Price,
    v1alpha1::{EnvVar, GpuDevice, Workload},
};

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: &str = "v1";

/// Header that carries [`PROTOCOL_VERSION`] on every agent request; the hub rejects versions it
/// does not speak, so an outdated agent fails loudly instead of misreading answers.
pub const PROTOCOL_VERSION_HEADER: &str = "agora-protocol-version";

/// The first line of every registration proof: names the purpose and the scheme's version, so a
/// signature made for registration can never be replayed as anything else a node signs (usage
/// receipts, later) and a change of scheme cannot be confused with this one.
pub const REGISTER_DOMAIN: &str = "agora-register-v1";

/// JSON Schema pattern of a node public key: a compressed SEC1 secp256k1 point (33 bytes), lowercase
/// hex. One spelling per key, so the hub can compare stored keys as text.
pub const PUBLIC_KEY_PATTERN: &str = "^0[23][0-9a-f]{64}$";

/// JSON Schema pattern of an operator's chain address: bech32-shaped (`cosmos1…`). The tie to the
/// operator's on-chain stake comes with settlement; until then the shape is all the hub checks.
pub const OPERATOR_ADDRESS_PATTERN: &str = "^[a-z]{1,16}1[02-9ac-hj-np-z]{6,90}$";

/// JSON Schema pattern of a probe address: `host:port`, where host is an IPv4 address, an IPv6
/// address in brackets or a DNS name. The hub also parses it (port 1–65535, DNS labels of 1–63
/// characters) and hands it to the node's peers as is.
pub const PROBE_ADDRESS_PATTERN: &str =
    r"^(\[[0-9A-Fa-f:.]{2,45}\]|[A-Za-z0-9]([-A-Za-z0-9.]{0,251}[A-Za-z0-9])?):[0-9]{1,5}$";

/// JSON Schema pattern of a node name (a lowercase RFC 1123 label).
pub const NODE_NAME_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// The largest RTT a measurement may report (ms): a minute. Beyond it a "round trip" is a stalled
/// connection, not a latency; the scheduler's network model drops such samples too.
pub const MAX_RTT_MS: f64 = 60_000.0;

/// The largest bandwidth a measurement may report (Mbit/s): 10 Tbit/s.
pub const MAX_BANDWIDTH_MBPS: f64 = 10_000_000.0;

/// The most peer results one heartbeat may carry, and the most probe targets one answer names.
pub const MAX_PROBE_PEERS: usize = 64;

/// The exact bytes a node signs to register: [`REGISTER_DOMAIN`], the challenge, the node name and
/// the operator address (empty when none), each followed by a newline but the last. None of the
/// parts can contain a newline (the schema forbids it), so the message is unambiguous, and binding
/// the name and the operator address means a captured signature cannot register another name or
/// redirect the node's earnings.
pub fn register_message(challenge: &str, name: &str, operator_address: Option<&str>) -> String {
    format!(
        "{REGISTER_DOMAIN}\n{challenge}\n{name}\n{}",
        operator_address.unwrap_or_default()
    )
}

/// `POST /v1/agent/challenge`: asks the hub for a registration challenge for a key.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChallengeRequest {
    /// The node's public key: compressed SEC1 secp256k1 point, 33 bytes as lowercase hex.
    #[schemars(regex(pattern = PUBLIC_KEY_PATTERN))]
    pub public_key: String,
}

/// Answer to `challenge`: a nonce to sign into the registration, valid once, for this key only,
/// until `expiresAt`. Fresh nonces make a captured registration useless to replay.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChallengeResponse {
    /// 32 random bytes as lowercase hex.
    pub challenge: String,
    /// When the hub stops accepting the challenge.
    pub expires_at: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
}

/// `POST /v1/agent/register`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegisterRequest {
    /// The node name the agent wants (`gn-…`, stable across restarts); the hub keeps one node per
    /// name, bound to the key that first registered it.
    #[schemars(length(min = 1, max = 63), regex(pattern = NODE_NAME_PATTERN))]
    pub name: String,
    /// The node's region.
    #[schemars(length(min = 1, max = 63))]
    pub region: String,
    /// The operator's chain address (bech32: `cosmos1…`), where the node's earnings go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 8, max = 107), regex(pattern = OPERATOR_ADDRESS_PATTERN))]
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
    /// The node's public key (compressed SEC1 secp256k1, hex). The first registration of a name
    /// binds the name to this key; the hub refuses the name to any other key.
    #[schemars(regex(pattern = PUBLIC_KEY_PATTERN))]
    pub public_key: String,
    /// A challenge the hub issued for `publicKey` (`POST /v1/agent/challenge`), unused and unexpired.
    #[schemars(regex(pattern = "^[0-9a-f]{64}$"))]
    pub challenge: String,
    /// ECDSA signature by the node's key over SHA-256 of [`register_message`]: `r ‖ s`, 64 bytes
    /// with low `s`, as lowercase hex.
    #[schemars(regex(pattern = "^[0-9a-f]{128}$"))]
    pub signature: String,
    /// Where the node's agent answers RTT probes from its peers (`host:port`: an IP address, an
    /// IPv6 address in brackets, or a DNS name, and a port). The hub names it to other nodes as a
    /// probe target (`HeartbeatResponse.probeTargets`); a node without one probes others but is
    /// never probed. Registering again without it withdraws it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 3, max = 259), regex(pattern = PROBE_ADDRESS_PATTERN))]
    pub probe_address: Option<String>,
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
    /// The network this hub settles on (e.g. `agora-devnet-1`): the agent signs its usage
    /// receipts for it, so a receipt cannot be replayed on another network. Absent from a hub older
    /// than receipts, which reads as [`DEFAULT_NETWORK`].
    #[serde(default = "default_network")]
    pub network: String,
}

/// The network a hub settles on unless configured otherwise (`agora server --network`).
pub const DEFAULT_NETWORK: &str = "agora-devnet-1";

fn default_network() -> String {
    DEFAULT_NETWORK.to_string()
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
    /// What the agent measured of the network since its last heartbeat (nothing when absent).
    #[serde(default, skip_serializing_if = "NetworkReport::is_empty")]
    pub network: NetworkReport,
    /// The GPUs' latest readings (none when absent).
    #[serde(default, skip_serializing_if = "Telemetry::is_empty")]
    pub telemetry: Telemetry,
    /// The node's latest matmul benchmark score, sent once after each measurement (and after a
    /// re-registration), absent otherwise: the hub writes it to the database, so it must be rare.
    // Not nullable in the schema, so that a refusal names the field at fault inside it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "BenchmarkReport")]
    pub benchmark: Option<BenchmarkReport>,
}

/// The largest benchmark score a heartbeat may report (TFLOPS per GPU): far above any GPU made,
/// so only a broken measurement is refused.
pub const MAX_BENCHMARK_TFLOPS: f64 = 100_000.0;

/// What the agent's matmul benchmark measured (`builtin:matmulBenchmark`, see docs/workloads.md).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BenchmarkReport {
    /// Achieved FP32 TFLOPS per GPU (mean over the node's GPUs of the model).
    #[schemars(range(min = 0, max = MAX_BENCHMARK_TFLOPS))]
    pub tflops: f64,
    /// When it was measured, Unix milliseconds (the agent's clock).
    #[schemars(range(min = 0, max = 9_007_199_254_740_991i64))]
    pub measured_at: i64,
    /// Why the score is a health finding (far below the claimed model's peak), when it is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub finding: Option<String>,
}

/// Network measurements a heartbeat carries. Every field is optional: an agent reports what it
/// measured. Values out of bounds refuse the whole heartbeat (`422 invalid_field`, naming the
/// field), so a broken measurement is noticed instead of silently skewing placements.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkReport {
    /// The agent's round-trip time to the hub in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = MAX_RTT_MS))]
    pub hub_rtt_ms: Option<f64>,
    /// The node's upload throughput to the hub in Mbit/s, as measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = MAX_BANDWIDTH_MBPS))]
    pub uplink_mbps: Option<f64>,
    /// The node's download throughput from the hub in Mbit/s, as measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = MAX_BANDWIDTH_MBPS))]
    pub downlink_mbps: Option<f64>,
    /// RTTs to the probe targets the hub named in its recent answers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_PROBE_PEERS))]
    pub peers: Vec<PeerRtt>,
}

impl NetworkReport {
    /// Whether the report carries no measurement at all.
    pub fn is_empty(&self) -> bool {
        self.hub_rtt_ms.is_none()
            && self.uplink_mbps.is_none()
            && self.downlink_mbps.is_none()
            && self.peers.is_empty()
    }
}

/// The RTT this node measured to one of its probe targets.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PeerRtt {
    /// The target's node name, as the hub named it.
    #[schemars(length(min = 1, max = 63), regex(pattern = NODE_NAME_PATTERN))]
    pub node: String,
    /// The round-trip time in milliseconds (the median of the probe's samples, say).
    #[schemars(range(min = 0, max = MAX_RTT_MS))]
    pub rtt_ms: f64,
}

/// The node's GPU readings at one moment.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Telemetry {
    /// One entry per GPU, each UUID once.
    #[schemars(length(max = 64))]
    pub gpus: Vec<GpuTelemetry>,
}

impl Telemetry {
    /// Whether there is no reading.
    pub fn is_empty(&self) -> bool {
        self.gpus.is_empty()
    }
}

/// One GPU's readings (NVML's, under DCGM's meanings). Each is optional: not every GPU or driver
/// reports every one.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GpuTelemetry {
    /// The GPU's UUID, as in the inventory.
    #[schemars(length(min = 1, max = 128))]
    pub uuid: String,
    /// Share of the last sample period the GPU was busy (`DCGM_FI_DEV_GPU_UTIL`), percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 100))]
    pub utilization_percent: Option<u32>,
    /// Frame buffer memory in use (`DCGM_FI_DEV_FB_USED`), MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 16777216))]
    pub memory_used_mib: Option<u64>,
    /// Core temperature (`DCGM_FI_DEV_GPU_TEMP`), degrees Celsius.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = -50, max = 200))]
    pub temperature_c: Option<i32>,
    /// Power draw (`DCGM_FI_DEV_POWER_USAGE`), watts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 10000))]
    pub power_watts: Option<f64>,
    /// Streaming-multiprocessor clock (`DCGM_FI_DEV_SM_CLOCK`), MHz.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 100000))]
    pub sm_clock_mhz: Option<u32>,
    /// XID errors (the driver's critical error events) the agent has seen on this GPU since it
    /// started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 1000000000))]
    pub xid_errors: Option<u64>,
    /// The code of the most recent XID error (`DCGM_FI_DEV_XID_ERRORS`), if there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 65535))]
    pub last_xid: Option<u32>,
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
    /// Peers to measure the RTT to before the next heartbeat, whose results that heartbeat reports
    /// in `network.peers`. Empty when probing is off or the node has no peer to probe.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_PROBE_PEERS))]
    pub probe_targets: Vec<ProbeTarget>,
    /// Commitments the hub asks this node to open: for each, the node sends the rows of the
    /// listed chunks of its `verifiableMatmul` result to `POST /v1/agent/assignments/{id}/opening`
    /// (docs/verification.md). Empty almost always; absent from hubs older than openings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_OPENINGS_PER_HEARTBEAT))]
    pub openings: Vec<OpeningRequest>,
}

/// The most openings one heartbeat answer asks for; the rest wait for the next heartbeat.
pub const MAX_OPENINGS_PER_HEARTBEAT: usize = 8;

/// The most bytes one opening's rows may take: 8 MiB (2 Mi entries of C). A sample whose rows
/// would take more is checked by a second node instead.
pub const MAX_OPENING_BYTES: usize = 8 << 20;

/// The header that carries an opening's signature ([`opening_message`]).
pub const OPENING_SIGNATURE_HEADER: &str = "x-agora-signature";

/// A hub's request that a node open the commitments of some chunks of a `verifiableMatmul`
/// result it reported: the chunks were sampled after the result arrived, so the node could not
/// know which. Everything needed to recompute the rows is here, since the assignment is over.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OpeningRequest {
    /// The assignment whose result is checked.
    pub assignment: String,
    /// The product's `n`.
    pub n: u32,
    /// The product's `chunkRows`.
    pub chunk_rows: u32,
    /// The product's `seed`.
    pub seed: u64,
    /// The chunks to open, ascending.
    #[schemars(length(min = 1, max = 1024))]
    pub chunks: Vec<u32>,
}

/// The first bytes of every signed opening ([`opening_message`]).
pub const OPENING_DOMAIN: &[u8] = b"agora-opening-v1\0";

/// The exact bytes a node signs for an opening: [`OPENING_DOMAIN`], the network, a zero byte, the
/// assignment id, a zero byte, and SHA-256 of the opening's body (the rows, u32 little-endian).
/// Signed, the opening is the node's own statement of what its committed rows are: evidence
/// against it when they are not its commitments, or not a product.
pub fn opening_message(network: &str, assignment: &str, rows_digest: &[u8; 32]) -> Vec<u8> {
    let mut message =
        Vec::with_capacity(OPENING_DOMAIN.len() + network.len() + assignment.len() + 2 + 32);
    message.extend_from_slice(OPENING_DOMAIN);
    message.extend_from_slice(network.as_bytes());
    message.push(0);
    message.extend_from_slice(assignment.as_bytes());
    message.push(0);
    message.extend_from_slice(rows_digest);
    message
}

/// The hub's answer to an opening.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OpeningAnswer {
    /// `passed` or `failed`.
    pub outcome: String,
}

/// The most bytes one bandwidth probe (`GET`/`POST /v1/agent/bandwidth`) moves: 16 MiB, enough
/// for a stable figure up to a few Gbit/s while bounding what one probe costs the hub.
pub const MAX_BANDWIDTH_PROBE_BYTES: u64 = 16 << 20;

/// Answer to `POST /v1/agent/bandwidth`: what the hub read of the agent's upload and how long it
/// took. The clock starts at the body's first chunk, so connection setup, authentication and
/// whatever the hub's buffers held before it looked are not counted: the agent's uplink is
/// `timedBytes × 8 / readMicros` Mbit/s.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BandwidthUpload {
    /// Bytes the hub read: the whole body.
    pub bytes: u64,
    /// Bytes that arrived after the body's first chunk: the ones `readMicros` timed.
    pub timed_bytes: u64,
    /// Microseconds from the first chunk's arrival to the last one's.
    pub read_micros: u64,
}

/// A peer the hub asks a node to probe.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProbeTarget {
    /// The peer's node name, to report the result under.
    pub node: String,
    /// Where the peer's agent answers probes (`host:port`, its registration's `probeAddress`).
    pub address: String,
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
    /// Variables the hub sets for this worker on top of the workload's own `env` (they win over
    /// a workload variable of the same name): always `AGORA_ATTEMPT`, and `AGORA_CHECKPOINT_URI`
    /// when the job had reported a checkpoint before this attempt was placed, so a re-placed
    /// attempt can resume instead of starting over.
    #[serde(default)]
    #[schemars(length(max = 16))]
    pub env: Vec<EnvVar>,
    /// Every worker of the attempt, this one included, by rank: what the worker needs to
    /// rendezvous with the others (`AGORA_PEERS`). Empty from a hub older than this field.
    #[serde(default)]
    pub peers: Vec<Peer>,
    /// The price per GPU-hour the assignment was placed at: what the node's usage receipts state.
    /// Absent from a hub older than receipts; the agent then sends no receipts for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_per_gpu_hour: Option<Price>,
}

/// `POST /v1/agent/assignments/{id}/receipts`: a node's signed, cumulative usage receipt for one
/// assignment (docs/settlement.md). The fields are those of the canonical receipt the signature
/// covers; the hub rebuilds the canonical bytes from them to verify it. Integers are JSON numbers:
/// every value a receipt holds (Unix milliseconds, GPU-milliseconds, micro-units per GPU-hour) is
/// far below 2^53, so no JSON reader rounds them, and the hub refuses larger ones.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReceiptReport {
    /// The receipt, field by field.
    pub receipt: UsageReceipt,
    /// The node key's ECDSA (SHA-256, low `s`) signature of the canonical encoding, `r ‖ s` as
    /// lowercase hex.
    #[schemars(length(equal = 128), regex(pattern = r"^[0-9a-f]{128}$"))]
    pub signature: String,
}

/// The fields of a usage receipt (see `settlement::Receipt`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UsageReceipt {
    /// The network the receipt is for (the hub's, from `register`).
    #[schemars(length(min = 1, max = 255))]
    pub network: String,
    /// The node's name.
    #[schemars(length(min = 1, max = 255))]
    pub node: String,
    /// The job.
    #[schemars(length(min = 1, max = 255))]
    pub job: String,
    /// The assignment; the same as the path's.
    #[schemars(length(min = 1, max = 255))]
    pub assignment: String,
    /// Grows with every receipt of the assignment; the highest wins.
    pub sequence: u64,
    /// The assignment's price per GPU-hour, in micro-units.
    pub price_micros_per_gpu_hour: u64,
    /// GPUs the assignment holds.
    pub gpus: u32,
    /// When the worker started (Unix ms).
    pub started_at_ms: u64,
    /// The end of the window the receipt covers (Unix ms).
    pub until_ms: u64,
    /// GPU time from `startedAtMs` to `untilMs`, in GPU-milliseconds.
    pub gpu_millis: u64,
}

/// The wire fields carry exactly the settlement receipt's, so the two convert both ways without
/// loss; the canonical bytes (what is signed) are always built from the settlement type.
impl From<&UsageReceipt> for settlement::receipt::Receipt {
    fn from(wire: &UsageReceipt) -> Self {
        Self {
            network: wire.network.clone(),
            node: wire.node.clone(),
            job: wire.job.clone(),
            assignment: wire.assignment.clone(),
            sequence: wire.sequence,
            price_micros_per_gpu_hour: wire.price_micros_per_gpu_hour,
            gpus: wire.gpus,
            started_at_ms: wire.started_at_ms,
            until_ms: wire.until_ms,
            gpu_millis: wire.gpu_millis,
        }
    }
}

impl From<&settlement::receipt::Receipt> for UsageReceipt {
    fn from(receipt: &settlement::receipt::Receipt) -> Self {
        Self {
            network: receipt.network.clone(),
            node: receipt.node.clone(),
            job: receipt.job.clone(),
            assignment: receipt.assignment.clone(),
            sequence: receipt.sequence,
            price_micros_per_gpu_hour: receipt.price_micros_per_gpu_hour,
            gpus: receipt.gpus,
            started_at_ms: receipt.started_at_ms,
            until_ms: receipt.until_ms,
            gpu_millis: receipt.gpu_millis,
        }
    }
}

/// One worker of a job attempt, as its peers see it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Peer {
    /// The worker's rank, 0-based.
    pub rank: u32,
    /// The node the worker runs on.
    pub node: String,
    /// The host (no port) of that node's `probeAddress`, the only address of it the hub knows;
    /// null when the node advertised none, and then the workers must find each other otherwise.
    #[serde(default)]
    pub address: Option<String>,
}

/// The attempt number (1-based) of the worker's job attempt, as a decimal string.
pub const ATTEMPT_ENV: &str = "AGORA_ATTEMPT";

/// The latest checkpoint of the job when this attempt was placed; absent on a first attempt or
/// when the job never reported one.
pub const CHECKPOINT_URI_ENV: &str = "AGORA_CHECKPOINT_URI";

/// The error code of a `409` answer to a status or checkpoint report whose `seq` is not above the
/// highest the hub applied for its assignment: the hub has that report, or a newer one, already.
/// Final for the agent: it must not retry the report.
pub const STALE_REPORT: &str = "stale_report";

/// `POST /v1/agent/assignments/{id}/checkpoint`: a worker saved a checkpoint the job can resume
/// from. The hub keeps the job's latest by `step` (a report at or below the stored step changes
/// nothing) and hands its URI to later attempts as `AGORA_CHECKPOINT_URI`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CheckpointReport {
    /// The report's number in its assignment's sequence, which status and checkpoint reports
    /// share: from 1, strictly increasing, the same only for a retry of the same report. A report
    /// at or below the highest number the hub applied for the assignment is refused
    /// (`409 stale_report`) and changes nothing.
    #[schemars(range(min = 1, max = 9223372036854775807u64))]
    pub seq: u64,
    /// Where the checkpoint is stored (`s3://…`, `file:///…`); the hub does not read it.
    #[schemars(length(min = 1, max = 2048))]
    pub uri: String,
    /// The training step (or any counter that grows with progress) the checkpoint was taken at.
    // Bounded to what the hub stores (a signed 64-bit integer).
    #[schemars(range(max = 9223372036854775807u64))]
    pub step: u64,
}

/// `POST /v1/agent/assignments/{id}/status`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StatusReport {
    /// The report's number in its assignment's sequence: the agent counts every status and
    /// checkpoint report it sends for one assignment from 1, strictly increasing, and repeats the
    /// number only when it retries the same report. The hub applies a report only when its `seq`
    /// is above the highest it applied for the assignment, so a replayed or delayed report can
    /// never undo a newer one (`409 stale_report` otherwise). Bounded to what the hub stores (a
    /// signed 64-bit integer).
    #[schemars(range(min = 1, max = 9223372036854775807u64))]
    pub seq: u64,
    /// The worker's state now.
    pub state: WorkerState,
    /// Exit code, when the worker ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Why the worker ended, when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// What a builtin workload computed, with the final report of a worker that succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<WorkloadResult>,
}

/// What a builtin workload computed (docs/workloads.md).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadResult {
    /// What computed it: a GPU, or the CPU reference (simulated nodes).
    pub backend: ResultBackend,
    /// `matmulBenchmark`: achieved FP32 TFLOPS per GPU (the mean over the worker's GPUs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 100000.0))]
    pub tflops: Option<f64>,
    /// `verifiableMatmul`: SHA-256 over all chunk commitments, lowercase hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9a-f]{64}$"))]
    pub output_digest: Option<String>,
    /// `verifiableMatmul`: the SHA-256 commitment of each chunk of rows of C, in order, lowercase
    /// hex; at most 1024, as many as a `verifiableMatmul` may have chunks. With `chunks` in the
    /// workload, exactly those chunks', in that order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1024), inner(regex(pattern = r"^[0-9a-f]{64}$")))]
    pub chunk_commitments: Vec<String>,
    /// The node key's signature of the result: ECDSA over SHA-256 of the message
    /// `"agora-result-v1\0" ‖ network ‖ 0x00 ‖ assignment id ‖ 0x00 ‖ outputDigest (32 raw bytes)`
    /// (`result_message`), low `s`, `r ‖ s` as lowercase hex, as registrations and receipts are
    /// signed. It makes a reported digest (and through it every
    /// commitment) evidence that this node, and no one on its way, claimed it. The agent always
    /// sets it with an `outputDigest`; optional so that older agents' results still parse.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9a-f]{128}$"))]
    pub signature: Option<String>,
}

/// The first bytes of every signed result: the purpose and the scheme's version, so a result
/// signature can never pass for a registration proof (`agora-register-v1`) or a usage receipt
/// (`agora-receipt-v1`), nor they for it.
pub const RESULT_DOMAIN: &[u8] = b"agora-result-v1\0";

/// The exact bytes a node signs for a workload result: [`RESULT_DOMAIN`] (`agora-result-v1` and a
/// zero byte), the network, a zero byte, the assignment id, a zero byte, and the 32 raw bytes of
/// the output digest. Neither the network nor the id can hold a zero byte (both are printable
/// names), so the message is unambiguous; binding both means a signed result can be replayed
/// neither for another assignment nor on another network. The commitments are bound through the
/// digest, which is computed over them.
pub fn result_message(network: &str, assignment: &str, digest: &[u8; 32]) -> Vec<u8> {
    let mut message =
        Vec::with_capacity(RESULT_DOMAIN.len() + network.len() + assignment.len() + 2 + 32);
    message.extend_from_slice(RESULT_DOMAIN);
    message.extend_from_slice(network.as_bytes());
    message.push(0);
    message.extend_from_slice(assignment.as_bytes());
    message.push(0);
    message.extend_from_slice(digest);
    message
}

/// What computed a [`WorkloadResult`].
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ResultBackend {
    /// A GPU, through CUDA.
    Cuda,
    /// The CPU reference implementation: a simulated node's figure, not a GPU's.
    CpuReference,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_older_agent_s_heartbeat_and_registration_still_parse() {
        let heartbeat: HeartbeatRequest =
            serde_json::from_str(r#"{"assignments": [{"id": "asg-1", "state": "Running"}]}"#)
                .unwrap();
        assert!(heartbeat.network.is_empty() && heartbeat.telemetry.is_empty());
        // And an empty report is not sent at all.
        assert_eq!(
            serde_json::to_string(&HeartbeatRequest::default()).unwrap(),
            r#"{"assignments":[]}"#
        );
        let answer: HeartbeatResponse =
            serde_json::from_str(r#"{"stop": [], "heartbeatIntervalSeconds": 5}"#).unwrap();
        assert!(answer.probe_targets.is_empty());
    }

    #[test]
    fn the_probe_address_pattern_takes_host_and_port() {
        // Compiled as the hub's validator compiles the schema.
        let pattern = jsonschema::validator_for(
            &serde_json::json!({"type": "string", "pattern": PROBE_ADDRESS_PATTERN}),
        )
        .unwrap();
        for good in ["10.0.0.7:7070", "[2001:db8::1]:7070", "gn-a.example.com:1"] {
            assert!(pattern.is_valid(&good.into()), "{good}");
        }
        for bad in [
            "10.0.0.7",
            "gn a:70",
            "http://gn-a:70",
            "[::1]",
            "gn-a:123456",
        ] {
            assert!(!pattern.is_valid(&bad.into()), "{bad}");
        }
    }

    #[test]
    fn the_result_message_is_byte_exact() {
        let message = result_message("agora-devnet-1", "asg-job-1-1-0", &[0xab; 32]);
        let mut expected = b"agora-result-v1\0agora-devnet-1\0asg-job-1-1-0\0".to_vec();
        expected.extend_from_slice(&[0xab; 32]);
        assert_eq!(message, expected);
    }

    /// Signed as the agent signs (ECDSA over SHA-256, low `s`), verified as the hub verifies: the
    /// node's key passes, another key or any changed part of the message does not.
    #[test]
    fn a_signed_result_verifies_only_for_its_key_and_digest() {
        use k256::ecdsa::{
            Signature, SigningKey,
            signature::{Signer, Verifier},
        };
        let node = SigningKey::from_slice(&[7; 32]).unwrap();
        let digest = [0x5a; 32];
        let signature: Signature = node.sign(&result_message("net-a", "asg-1", &digest));
        let signature = signature.normalize_s();
        let verifies = |key: &SigningKey, message: Vec<u8>| {
            key.verifying_key().verify(&message, &signature).is_ok()
        };
        assert!(verifies(&node, result_message("net-a", "asg-1", &digest)));
        let mut changed = digest;
        changed[31] ^= 1;
        assert!(!verifies(&node, result_message("net-a", "asg-1", &changed)));
        assert!(!verifies(&node, result_message("net-a", "asg-2", &digest)));
        assert!(!verifies(&node, result_message("net-b", "asg-1", &digest)));
        let other = SigningKey::from_slice(&[8; 32]).unwrap();
        assert!(!verifies(&other, result_message("net-a", "asg-1", &digest)));
        // The wire form is the 128 hex digits the schema asks for.
        assert_eq!(hex::encode(signature.to_bytes()).len(), 128);
    }

    #[test]
    fn the_register_message_is_byte_exact() {
        assert_eq!(
            register_message("ab01", "gn-a", Some("cosmos1qqqqqq")),
            "agora-register-v1\nab01\ngn-a\ncosmos1qqqqqq"
        );
        assert_eq!(
            register_message("ab01", "gn-a", None),
            "agora-register-v1\nab01\ngn-a\n"
        );
    }
}
