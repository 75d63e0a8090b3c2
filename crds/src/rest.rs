//! Wire types of the hub's REST API (`/v1/...`). Bodies reuse the CRD types so that a manifest and
//! a REST body are one schema.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::v1alpha1::{ComputeJobSpec, ComputeJobStatus, GpuNodeSpec, GpuNodeStatus};

/// A job as the REST API returns it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Job {
    /// The hub's id for the job (`job-…`); stable, sortable by submission time.
    pub id: String,
    /// The name given at submission (`metadata.name` of a posted ComputeJob), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The spec as submitted (immutable).
    pub spec: ComputeJobSpec,
    /// The job's observed state.
    pub status: ComputeJobStatus,
    /// What the current attempt's workers reported of a builtin workload (benchmark TFLOPS,
    /// verifiable-matmul output digest and chunk commitments), by rank; only workers that
    /// reported one. Not part of the `ComputeJob` status: commitments are too large for it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub results: Vec<WorkerResult>,
    /// The latest signed usage receipt of each of the job's assignments (every attempt's), as the
    /// hub keeps them for settlement; only assignments that sent one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub receipts: Vec<WorkerReceipt>,
}

/// The latest usage receipt of one assignment.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkerReceipt {
    /// The assignment (`asg-…`).
    pub assignment: String,
    /// The receipt's sequence: grows with every receipt of the assignment.
    pub sequence: u64,
    /// GPU time from the worker's start to `untilMs`, in GPU-milliseconds.
    pub gpu_millis: u64,
    /// What that GPU time is worth at the assignment's price, in micro-units.
    pub amount_micros: u64,
    /// The end of the receipt's window (Unix ms).
    pub until_ms: u64,
}

/// One worker's result.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkerResult {
    /// The worker's rank.
    pub rank: u32,
    /// The node it ran on.
    pub node: String,
    /// What it computed.
    pub result: crate::agent::WorkloadResult,
}

/// A node as the REST API returns it: the same shape as the `GpuNode` resource, plus what its
/// agent reported lately.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Node {
    /// The node's name (`gn-…`), also the `GpuNode` object's name.
    pub name: String,
    /// What the node offers.
    pub spec: GpuNodeSpec,
    /// What the hub knows of it now.
    pub status: GpuNodeStatus,
    /// What the node's agent reported in its recent heartbeats. Only the hub shows it: it is not
    /// part of the `GpuNode` resource, whose status Kubernetes would otherwise have to rewrite at
    /// every heartbeat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telemetry: Option<NodeTelemetry>,
    /// The node's latest matmul benchmark score, absent until its agent reports one (agents on
    /// simulated GPUs never do).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub benchmark: Option<NodeBenchmark>,
}

/// A node's latest benchmark score (see docs/workloads.md).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeBenchmark {
    /// Achieved FP32 TFLOPS per GPU.
    pub tflops: f64,
    /// When the agent measured it.
    pub time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
    /// Why the score is a health finding, when it is one (also the `Healthy` condition's message).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finding: Option<String>,
}

/// A node's latest reports beyond its `GpuNode` status.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeTelemetry {
    /// The agent's latest measured round-trip time to the hub, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub_rtt_ms: Option<f64>,
    /// When the hub replica answering received `gpus`. Each replica keeps the readings of the
    /// heartbeats it served, so behind a load balancer they may be a heartbeat or so old.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    /// The GPUs' latest readings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<crate::agent::GpuTelemetry>,
}

/// One page of a list. Pass `next` back as `?after=` to get the following page; it is absent on the
/// last page.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct List<T> {
    /// The items of this page.
    pub items: Vec<T>,
    /// Cursor of the next page, or null on the last.
    pub next: Option<String>,
}

/// The one shape of every error the API returns.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct ErrorDetail {
    /// Machine-readable code (`invalid_field`, `not_found`, …).
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
    /// The offending field as a dotted path (`spec.resources.workers`), when one field is at fault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// One entry of a job's event log (`GET /v1/jobs/{id}/events`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobEvent {
    /// The event's position in the log: `?after=` this cursor lists the events that came after
    /// it (the operator keeps the last one it turned into a Kubernetes Event).
    pub cursor: String,
    /// When it happened.
    pub time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
    /// The phase before, absent for the submission.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<crate::v1alpha1::JobPhase>,
    /// The phase after.
    pub to: crate::v1alpha1::JobPhase,
    /// Machine-readable reason (`Submitted`, `Placed`, `Started`, `Completed`, `WorkerFailed`, …).
    pub reason: String,
    /// Human-readable detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The attempt it belongs to (0 before the first placement).
    pub attempt: u32,
    /// The node involved, if one was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// A job's event log.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct JobEventList {
    /// Events, oldest first.
    pub items: Vec<JobEvent>,
    /// Cursor of the next page (`?after=`), or null on the last.
    #[serde(default)]
    pub next: Option<String>,
}

/// `GET /v1/prices`: the base price of every GPU class the hub has priced.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PriceList {
    /// One entry per GPU class (model), by name.
    pub items: Vec<GpuClassPrice>,
    /// The utilization at which base prices hold still, in basis points.
    pub target_utilization_bps: u32,
    /// The largest change of a base price per epoch, in basis points.
    pub max_change_bps: u32,
    /// Length of a pricing epoch in seconds.
    pub epoch_seconds: u64,
}

/// One GPU class's base price. A job pays max(node's ask, base price) per GPU-hour, never more than
/// its `maxPricePerGpuHour`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GpuClassPrice {
    /// The GPU model, e.g. `H100-80GB`.
    pub gpu_class: String,
    /// Base price per GPU-hour.
    pub base_price_per_gpu_hour: crate::money::Price,
    /// Utilization of the class in the last epoch, in basis points.
    pub utilization_bps: u32,
    /// How the last epoch moved the base price, in basis points (negative: down).
    pub change_bps: i32,
}

/// `POST /v1/quotes`: what a job would cost and where it would run if it were submitted now.
/// Nothing is reserved: a later submission is placed on the fleet as it is then.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Quote {
    /// Whether the job could be placed now.
    pub placeable: bool,
    /// The tentative placement, one entry per worker.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workers: Vec<crate::v1alpha1::WorkerPlacement>,
    /// The highest effective price per GPU-hour among the workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_per_gpu_hour: Option<crate::money::Price>,
    /// What one hour of the whole job would cost, in display units.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_per_hour: Option<String>,
    /// Federated jobs: where the participants' updates would be aggregated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregator: Option<String>,
    /// Why the job could not be placed now (the scheduler's counts of rejections by reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// An amount owed to or by one chain address in a settlement batch.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct AddressTotal {
    /// The chain account address.
    pub address: String,
    /// Micro-units of the settlement denom, as a decimal string (amounts may exceed 2^53).
    pub amount: String,
}

/// A settlement batch (`GET /v1/settlement/batches/{id}`): one epoch's receipts, posted to the
/// settlement contract as one Merkle root with totals per provider and per payer.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SettlementBatch {
    /// `epoch-<fromMs>-<first 16 hex digits of the root>`.
    pub id: String,
    /// `built` (recorded, not yet on chain), `posted`, `confirmed` (in a block), `final` (paid
    /// out after the challenge window) or `challenged` (proved wrong; never paid).
    pub state: String,
    /// The epoch's start and end (Unix ms).
    pub from_ms: u64,
    pub to_ms: u64,
    /// The RFC 6962 Merkle root of the batch's receipts, hex.
    pub root: String,
    /// How many receipts the batch settles.
    pub receipts: u64,
    /// What each provider (node operator) is owed.
    pub provider_totals: Vec<AddressTotal>,
    /// What each payer owes.
    pub payer_totals: Vec<AddressTotal>,
    /// The transaction that posted it, once posted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx: Option<String>,
    /// The block that holds that transaction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u64>,
    pub built_at: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub posted_at: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_at: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    /// Failed tries of the current step.
    pub attempts: u64,
    /// Why the last try failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// A usage receipt of a job (`GET /v1/receipts?job=ID`): settled in a batch, or not yet.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReceiptItem {
    /// `<assignment>.<sequence>`: what `GET /v1/receipts/{id}/proof` takes.
    pub id: String,
    pub job: String,
    pub assignment: String,
    pub sequence: u64,
    /// GPU time up to this receipt, cumulative, and its amount in micro-units.
    pub amount_micros: u64,
    /// What the batch pays for this receipt (its amount minus what earlier batches paid); absent
    /// while unsettled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paid_micros: Option<u64>,
    /// The batch that settles it, once one does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<String>,
}

/// An inclusion proof of a receipt in its batch (`GET /v1/receipts/{id}/proof`). Check it with
/// the RFC 6962 rules in docs/settlement.md: hash the leaf, combine with `path` from the leaf up,
/// compare with `root`, and compare `root` with the batch's root on chain.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct ReceiptProof {
    /// The canonical receipt bytes, hex.
    pub leaf: String,
    /// The leaf's position in the batch.
    pub index: u64,
    /// The number of leaves in the batch.
    pub tree_size: u64,
    /// Sibling hashes from the leaf up, hex.
    pub path: Vec<String>,
    /// The batch's Merkle root, hex.
    pub root: String,
    /// The batch id.
    pub batch: String,
    /// The transaction that posted the batch, once posted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx: Option<String>,
}

/// The chain the hub settles on (`GET /v1/settlement/chain`): where, with which contract
/// parameters, and the contract's running totals, so anyone can check nothing was created or lost.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChainInfo {
    /// What and where the chain is; the embedded devnet says it is a simulation.
    pub label: String,
    /// True for the embedded devnet (`--chain embedded`): a simulated chain in the hub's process.
    pub devnet: bool,
    /// How often the hub builds and posts a batch, in seconds.
    pub epoch_seconds: u64,
    /// The contract's `params` as it answers them (denom, min stake, windows, fee, slash ratios).
    pub params: serde_json::Value,
    /// The contract's `totals`: deposits, stakes, payouts, fees, slashes, and its actual balance.
    pub totals: serde_json::Value,
}

/// An operator's account as the chain holds it (`GET /v1/operators/{address}`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OperatorAccount {
    pub address: String,
    /// The contract's denom, in which every amount here is counted (smallest unit).
    pub denom: String,
    /// The bank balance: where finalized batches pay the operator's net earnings. Absent when
    /// the chain client cannot read balances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balance: Option<String>,
    /// Stake bonded in the contract.
    pub bonded: String,
    /// Stake unbonding (still slashable until claimed).
    pub unbonding: String,
    /// Everything slashed from this operator so far.
    pub slashed: String,
    /// Whether the bonded stake meets the contract's minimum (its nodes may get work).
    pub meets_min_stake: bool,
    /// Jailed by a slash: its nodes get no work until `jailedUntil` (Unix seconds).
    pub jailed: bool,
    pub jailed_until: u64,
    /// Nodes whose keys are registered to this operator.
    pub nodes: Vec<String>,
}

/// One worker's opening of its commitments, in a [`Verification`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VerificationOpening {
    /// The worker's assignment.
    pub assignment: String,
    /// The worker's node.
    pub node: String,
    /// `requested`, `passed` or `failed`.
    pub state: String,
    /// When a verifier node checks instead if the worker has not answered.
    pub deadline: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answered_at: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    /// The finding: the Freivalds challenge when it passed, the evidence when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
}

/// One verification of a job's attempt (`GET /v1/jobs/{id}/verifications`, docs/verification.md).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Verification {
    pub id: String,
    /// The attempt checked.
    pub attempt: u32,
    /// `SpotCheck` or `Redundant`.
    pub mode: String,
    /// `sampling`, `opening`, `recomputing`, `tie_breaking`, `passed`, `failed` or
    /// `unverifiable`.
    pub state: String,
    /// The sample's seed (hex), drawn after the worker's result arrived: anyone can derive the
    /// sample from it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<String>,
    /// The chunks recomputed (SpotCheck).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunks: Vec<u32>,
    /// The workers' openings of the sampled chunks (SpotCheck of a `verifiableMatmul` whose
    /// sampled rows fit in one request): each worker shows the rows, the hub checks them against
    /// the commitments and with Freivalds' algorithm.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub openings: Vec<VerificationOpening>,
    /// The job that recomputed them on another operator's node: when the sample was too large
    /// to open, or the workers did not open it in time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verifier_job: Option<String>,
    /// The job that decided a disagreement on a third operator's node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tie_breaker_job: Option<String>,
    /// The outcome, with the evidence when a worker was found wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub created_at: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
}
