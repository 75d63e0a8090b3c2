//! The `ComputeJob` custom resource: what an AI developer asks Agora to run, and what became of it.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, core::Duration};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::money::Price;

/// The desired state of a compute job. This type is both the CRD's `spec` and the body of
/// `POST /v1/jobs`; jobs are immutable once submitted.
// Every `printcolumn(...)` repeats `name`/`type_`/`json_path`, which clippy takes for duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "agora.dev",
    version = "v1alpha1",
    kind = "ComputeJob",
    namespaced,
    shortname = "cj",
    category = "agora",
    status = "ComputeJobStatus",
    derive = "PartialEq",
    doc = "A GPU compute job placed by Agora on decentralized GPU nodes.",
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Lifecycle phase"
    ),
    printcolumn(
        name = "Workers",
        type_ = "integer",
        json_path = ".spec.resources.workers",
        description = "Number of workers"
    ),
    printcolumn(
        name = "GPUs",
        type_ = "integer",
        json_path = ".spec.resources.gpusPerWorker",
        description = "GPUs per worker"
    ),
    printcolumn(
        name = "Price",
        type_ = "string",
        json_path = ".status.placement.pricePerGpuHour",
        description = "Agreed price per GPU-hour"
    ),
    printcolumn(
        name = "Nodes",
        type_ = "string",
        json_path = ".status.nodes",
        description = "Node(s) the workers run on"
    ),
    printcolumn(
        name = "Cost",
        type_ = "string",
        json_path = ".status.usage.cost",
        description = "What the GPU time used so far cost"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.reason",
        description = "Why the job is in its phase (Unschedulable, NodeLost, …)",
        priority = "1"
    ),
    printcolumn(
        name = "Attempts",
        type_ = "integer",
        json_path = ".status.attempts",
        description = "Attempts started so far",
        priority = "1"
    ),
    printcolumn(
        name = "Job",
        type_ = "string",
        json_path = ".status.jobId",
        description = "The hub's id for the job (agora job get ID)",
        priority = "1"
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(transform = super::kubernetes_integer_formats)]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!has(self.placement) || !has(self.placement.dataLocality) || self.kind == 'Federated'",
        "message": "placement.dataLocality is only allowed for kind Federated",
        "fieldPath": ".placement.dataLocality",
        "reason": "FieldValueForbidden"
    },
    {
        "rule": "self.kind != 'Federated' || (has(self.placement) && has(self.placement.dataLocality) && size(self.placement.dataLocality) == self.resources.workers)",
        "message": "a Federated job needs placement.dataLocality with exactly one entry per worker",
        "fieldPath": ".placement.dataLocality",
        "reason": "FieldValueRequired"
    }
]))]
pub struct ComputeJobSpec {
    /// What sort of job this is; it decides how workers are placed (gang placement for Training,
    /// one worker per data site for Federated).
    pub kind: JobKind,
    /// What each worker runs.
    pub workload: Workload,
    /// How many workers and which GPUs each needs.
    pub resources: Resources,
    /// Where the workers may run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<Placement>,
    /// What the job may cost.
    pub pricing: Pricing,
    /// Upper bound on wall-clock run time (Go duration, e.g. `6h`, `90m`); the job fails when it is exceeded.
    // The pattern admits only the Go duration syntax that the API server's CEL (`time.ParseDuration`),
    // the hub's CEL engine (which ignores trailing garbage) and `kube`'s `Duration` all parse alike:
    // ASCII units, no sign. A malformed value is then a plain schema error everywhere rather than a
    // CEL evaluation failure, and `maxLength` bounds the cost of `duration(self)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        regex(pattern = r"^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$"),
        length(max = 32)
    )]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "duration(self) >= duration('1s')", "message": "maxRuntime must be at least 1s"}
    ]))]
    pub max_runtime: Option<Duration>,
    /// How the work is checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<Verification>,
    /// How often a failed attempt is retried on other nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
}

/// The kind of job.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum JobKind {
    Inference,
    Training,
    Batch,
    Federated,
}

/// What each worker runs: a container image (optionally with command, args and env), a plain
/// command for the process executor, or a builtin workload of the node agent.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend(
    "anyOf" = [{"required": ["image"]}, {"required": ["command"]}, {"required": ["builtin"]}],
    "x-kubernetes-validations" = [
        {
            "rule": "!has(self.builtin) || (!has(self.image) && !has(self.command) && !has(self.args))",
            "message": "a builtin workload takes no image, command or args",
            "reason": "FieldValueForbidden"
        }
    ]
))]
pub struct Workload {
    /// Container image, e.g. `ghcr.io/acme/train:1.4`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,
    /// Entrypoint; for a container it overrides the image's entrypoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub command: Option<Vec<String>>,
    /// Arguments to the entrypoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// Environment variables for every worker.
    // Bounded so that the API server's CEL cost estimator can size rules over the list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128))]
    pub env: Vec<EnvVar>,
    /// A workload built into the node agent (no image needed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub builtin: Option<BuiltinWorkload>,
}

/// One environment variable.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EnvVar {
    /// Variable name.
    #[schemars(regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$"), length(max = 256))]
    pub name: String,
    /// Variable value.
    #[serde(default)]
    pub value: String,
}

/// A builtin workload of the node agent; exactly one field is set.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("minProperties" = 1, "maxProperties" = 1))]
pub struct BuiltinWorkload {
    /// Holds the GPUs for a fixed time and exits 0: for smoke tests and the quickstart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sleep: Option<SleepWorkload>,
    /// Measures dense matrix-multiply throughput (TFLOPS) on every GPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matmul_benchmark: Option<MatmulBenchmarkWorkload>,
    /// Multiplies two seeded integer matrices and commits to the product chunk by chunk, so that
    /// the work can be spot-checked (see docs/workloads.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verifiable_matmul: Option<VerifiableMatmulWorkload>,
}

/// Parameters of the `sleep` builtin.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SleepWorkload {
    /// How long to run, in seconds.
    #[schemars(range(min = 1, max = 604800))]
    pub duration_seconds: u32,
}

/// Parameters of the `matmulBenchmark` builtin.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MatmulBenchmarkWorkload {
    /// Matrix dimension n (n×n times n×n).
    #[serde(default = "default_matmul_size")]
    #[schemars(range(min = 64, max = 32768))]
    pub size: u32,
    /// Number of timed multiplications.
    #[serde(default = "default_matmul_iterations")]
    #[schemars(range(min = 1, max = 10000))]
    pub iterations: u32,
}

/// Parameters of the `verifiableMatmul` builtin: C = A·B modulo 2³¹ − 1 for n×n matrices A and B
/// generated from `seed`, with a SHA-256 commitment per block of `chunkRows` rows of C. At most 1024
/// chunks, because the commitments travel in the worker's status report.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend(
    "x-kubernetes-validations" = [
        {
            "rule": "self.chunkRows <= self.n",
            "message": "chunkRows must be at most n",
            "fieldPath": ".chunkRows",
            "reason": "FieldValueInvalid"
        },
        {
            "rule": "(self.n + self.chunkRows - 1) / self.chunkRows <= 1024",
            "message": "chunkRows must split n into at most 1024 chunks",
            "fieldPath": ".chunkRows",
            "reason": "FieldValueInvalid"
        },
        {
            "rule": "!has(self.chunks) || self.chunks.all(c, c < (self.n + self.chunkRows - 1) / self.chunkRows)",
            "message": "chunks must each be below the number of chunks, ceil(n / chunkRows)",
            "fieldPath": ".chunks",
            "reason": "FieldValueInvalid"
        },
        {
            "rule": "!has(self.chunks) || self.chunks.isSorted()",
            "message": "chunks must be sorted in ascending order",
            "fieldPath": ".chunks",
            "reason": "FieldValueInvalid"
        }
    ]
))]
pub struct VerifiableMatmulWorkload {
    /// Matrix dimension n (n×n times n×n).
    #[schemars(range(min = 1, max = 16384))]
    pub n: u32,
    /// Rows of C per committed chunk.
    #[schemars(range(min = 1, max = 16384))]
    pub chunk_rows: u32,
    /// Seed of the inputs. At most 2⁵³ − 1, so that every JSON parser reads it exactly.
    #[serde(default)]
    #[schemars(range(min = 0, max = 9007199254740991u64))]
    pub seed: u64,
    /// Compute only these chunks of C (indices from 0, ascending, each once, each below the
    /// number of chunks) and report their commitments in this order: a spot check of another
    /// node's result costs only these chunks' rows. Absent: the whole product.
    // A set: the API server refuses repeats, and so does the hub's validator (`uniqueItems`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 1024),
        inner(range(max = 1023)),
        extend("x-kubernetes-list-type" = "set")
    )]
    pub chunks: Option<Vec<u32>>,
}

fn default_matmul_size() -> u32 {
    8192
}

fn default_matmul_iterations() -> u32 {
    20
}

impl BuiltinWorkload {
    /// The builtin's name as nodes advertise it in their capabilities (`builtin:sleep`, …).
    pub fn name(&self) -> &'static str {
        if self.sleep.is_some() {
            "sleep"
        } else if self.matmul_benchmark.is_some() {
            "matmulBenchmark"
        } else if self.verifiable_matmul.is_some() {
            "verifiableMatmul"
        } else {
            "unknown"
        }
    }
}

impl Workload {
    /// The capability a node must advertise to run this workload: `container`, `process`, or
    /// `builtin:<name>`.
    pub fn capability(&self) -> String {
        match (&self.builtin, &self.image) {
            (Some(b), _) => format!("builtin:{}", b.name()),
            (None, Some(_)) => "container".to_string(),
            (None, None) => "process".to_string(),
        }
    }
}

/// Workers and the GPUs each needs.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!has(self.pipelineStages) || self.workers % self.pipelineStages == 0",
        "message": "workers must be a multiple of pipelineStages (each stage has the same number of data-parallel workers)",
        "fieldPath": ".pipelineStages",
        "reason": "FieldValueInvalid"
    }
]))]
pub struct Resources {
    /// Number of workers; more than one is gang-placed (all or nothing).
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 1024))]
    pub workers: u32,
    /// GPUs per worker, all on the worker's node.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 16))]
    pub gpus_per_worker: u32,
    /// Which GPUs qualify.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<GpuRequirements>,
    /// For training gangs: pipeline stages the workers form (each stage a data-parallel group of
    /// workers / pipelineStages). Placement minimizes the step's communication time for this layout;
    /// worker rank r runs stage r / (workers / pipelineStages). Default 1: pure data parallelism.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1024))]
    pub pipeline_stages: Option<u32>,
    /// For training gangs: gigabytes each stage boundary sends per step (activations forward and
    /// their gradients back) and each data-parallel group all-reduces per step (the stage's
    /// gradients), as decimal strings. Defaults: 0.25 and 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub communication: Option<Communication>,
}

/// Communication volumes of one training step.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Communication {
    /// Activation bytes per stage boundary per step, in GB (e.g. `"0.25"`).
    #[serde(rename = "activationsGB")]
    #[schemars(regex(pattern = r"^[0-9]{1,4}(\.[0-9]{1,6})?$"))]
    pub activations_gb: String,
    /// Gradient bytes each data-parallel group all-reduces per step, in GB (e.g. `"2"`).
    #[serde(rename = "gradientsGB")]
    #[schemars(regex(pattern = r"^[0-9]{1,4}(\.[0-9]{1,6})?$"))]
    pub gradients_gb: String,
}

fn one() -> u32 {
    1
}

/// Constraints on the GPUs a worker gets.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GpuRequirements {
    /// Acceptable GPU models (e.g. `H100-80GB`); empty means any.
    // An empty name would match no node and leave the job pending forever: rejected up front.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(min = 1, max = 64)))]
    pub models: Vec<String>,
    /// Minimum memory per GPU in GiB.
    #[serde(
        default,
        rename = "minMemoryGiB",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 1, max = 4096))]
    pub min_memory_gib: Option<u32>,
    /// Minimum CUDA compute capability, `major.minor` (e.g. `"8.0"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]{1,2}\.[0-9]$"))]
    pub min_compute_capability: Option<String>,
}

/// Where workers may run.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Placement {
    /// Regions the workers may run in; empty means anywhere.
    // Names are bounded like a GpuNode's `region`, which they are matched against; `maxItems`
    // lets the API server's CEL cost estimator size rules over the list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 63)))]
    pub regions: Vec<String>,
    /// Where the job's users are; latency is measured to this region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub user_region: Option<String>,
    /// Maximum round-trip time in milliseconds to `userRegion` and between workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub max_latency_ms: Option<u32>,
    /// Minimum bandwidth in Mbit/s between workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000000))]
    pub min_bandwidth_mbps: Option<u32>,
    /// For Federated jobs: the nodes that hold the data (each a different node); one worker runs on
    /// each, and data never moves.
    // The distinctness rule compares every pair of sites, so its cost grows with the square of the
    // list: `maxItems` keeps it far below the API server's per-call CEL budget of 1,000,000
    // (64² comparisons of names of at most 253 bytes), which also caps Federated jobs at 64 sites.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    #[schemars(extend("x-kubernetes-validations" = [
        {
            "rule": "self.all(s, self.exists_one(t, t.node == s.node))",
            "message": "every data site must be a different node",
            "reason": "FieldValueDuplicate"
        }
    ]))]
    pub data_locality: Option<Vec<DataSite>>,
}

/// A node holding part of a federated job's data.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DataSite {
    /// The GpuNode name that holds the data.
    #[schemars(length(min = 1, max = 253))]
    pub node: String,
    /// A label for the data set there, shown in status and events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub dataset: Option<String>,
}

/// What the job may cost.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Pricing {
    /// The most the job pays per GPU-hour, as a decimal string in display units (`"2.50"`).
    pub max_price_per_gpu_hour: Price,
}

/// How the work is verified.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "self.mode == 'SpotCheck' || !has(self.sampleRate)",
        "message": "sampleRate is only allowed for mode SpotCheck",
        "fieldPath": ".sampleRate",
        "reason": "FieldValueForbidden"
    }
]))]
pub struct Verification {
    /// The verification mode.
    pub mode: VerificationMode,
    /// Fraction of output chunks recomputed, in (0, 1]; SpotCheck only (default 0.05).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("minimum" = 0, "exclusiveMinimum" = true, "maximum" = 1))]
    pub sample_rate: Option<f64>,
}

/// Verification modes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum VerificationMode {
    None,
    SpotCheck,
    Redundant,
}

/// Retry policy.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Retry {
    /// Total attempts including the first.
    #[schemars(range(min = 1, max = 100))]
    pub max_attempts: u32,
}

impl ComputeJobSpec {
    /// Total GPUs the job holds while it runs.
    pub fn total_gpus(&self) -> u32 {
        self.resources
            .workers
            .saturating_mul(self.resources.gpus_per_worker)
    }

    /// Attempts allowed including the first.
    pub fn max_attempts(&self) -> u32 {
        self.retry.as_ref().map_or(1, |r| r.max_attempts)
    }
}

/// The observed state of a compute job, written by the hub (and mirrored to the CR by the operator).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = super::kubernetes_integer_formats)]
pub struct ComputeJobStatus {
    /// Lifecycle phase.
    pub phase: JobPhase,
    /// Human-readable explanation of the phase (why a job waits, why it failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Machine-readable reason for the phase (`Unschedulable`, `NodeLost`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Standard Kubernetes conditions: Accepted, Scheduled, Running, Verified, Settled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Where the workers run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<PlacementStatus>,
    /// Comma-separated node names, for `kubectl get cj`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<String>,
    /// Attempts started so far.
    #[serde(default)]
    pub attempts: u32,
    /// GPU time used and its cost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// On-chain settlement of the job's usage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settlement: Option<SettlementStatus>,
    /// The latest checkpoint a worker reported (highest step); a retried attempt resumes from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<CheckpointStatus>,
    /// When the hub accepted the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submit_time: Option<Time>,
    /// When the current attempt was placed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_time: Option<Time>,
    /// When all workers of the current attempt had started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the job reached a final phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// The CR generation this status describes (set by the operator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The hub's id for the job (`GET /v1/jobs/{id}`), set by the operator once the hub accepted
    /// the ComputeJob.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    /// How far into the hub's event log of the job the operator has turned events into
    /// Kubernetes Events (a cursor from `GET /v1/jobs/{id}/events`), so that an operator restart
    /// does not repeat them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_cursor: Option<String>,
}

/// Lifecycle phases of a job.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum JobPhase {
    #[default]
    Pending,
    Scheduled,
    Running,
    Verifying,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobPhase {
    /// All phases, in lifecycle order.
    pub const ALL: [JobPhase; 7] = [
        JobPhase::Pending,
        JobPhase::Scheduled,
        JobPhase::Running,
        JobPhase::Verifying,
        JobPhase::Succeeded,
        JobPhase::Failed,
        JobPhase::Cancelled,
    ];

    /// The phase's name as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            JobPhase::Pending => "Pending",
            JobPhase::Scheduled => "Scheduled",
            JobPhase::Running => "Running",
            JobPhase::Verifying => "Verifying",
            JobPhase::Succeeded => "Succeeded",
            JobPhase::Failed => "Failed",
            JobPhase::Cancelled => "Cancelled",
        }
    }

    /// Whether no further transition can happen.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobPhase::Succeeded | JobPhase::Failed | JobPhase::Cancelled
        )
    }
}

impl std::str::FromStr for JobPhase {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobPhase::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("unknown job phase {s:?}"))
    }
}

impl std::fmt::Display for JobPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a job's workers were placed.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlacementStatus {
    /// One entry per worker.
    pub workers: Vec<WorkerPlacement>,
    /// The agreed price per GPU-hour.
    pub price_per_gpu_hour: Price,
    /// Federated jobs: the node where the participants' updates are aggregated (smallest largest
    /// RTT to the data sites), when the network model can tell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregator: Option<String>,
}

/// Where one worker runs.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkerPlacement {
    /// Worker rank, 0-based.
    pub rank: u32,
    /// GpuNode name.
    pub node: String,
    /// UUIDs of the GPUs the worker holds.
    pub gpus: Vec<String>,
    /// The node's region.
    pub region: String,
}

/// GPU time used and what it cost.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    /// GPU-seconds used across all workers and attempts.
    pub gpu_seconds: u64,
    /// Cost in display units (`"2.85"`), computed from integer micro-units.
    pub cost: String,
}

/// The checkpoint a job resumes from when an attempt is re-placed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointStatus {
    /// Where the checkpoint is stored, as the worker reported it.
    pub uri: String,
    /// The step it was taken at.
    pub step: u64,
    /// When the hub recorded it.
    pub time: Time,
}

/// Settlement of a job's usage on chain.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SettlementStatus {
    /// The settlement batch that carries the job's receipts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<String>,
    /// The chain transaction that posted the batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx: Option<String>,
}
