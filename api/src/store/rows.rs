//! Typed rows and their decoding from the `Any` driver's rows.

use crds::v1alpha1::{ComputeJobSpec, GpuDevice, JobPhase};
use serde::de::DeserializeOwned;
use sqlx::{Row, any::AnyRow};

use super::{Result, StoreError};
use crate::lifecycle::AssignmentPhase;

/// A job as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct JobRow {
    pub id: String,
    pub tenant_id: String,
    pub name: Option<String>,
    pub spec: ComputeJobSpec,
    pub phase: JobPhase,
    pub reason: Option<String>,
    pub message: Option<String>,
    /// The current attempt, 1-based; 0 before the first placement.
    pub attempt: u32,
    /// The agreed price per GPU-hour of the current attempt, in micro-units.
    pub price_micros: Option<u64>,
    pub gpu_millis: u64,
    pub cost_micros: u64,
    pub submitted_at: i64,
    pub scheduled_at: Option<i64>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// Federated jobs: the aggregator node.
    pub aggregator: Option<String>,
    /// When the running attempt exceeds `spec.maxRuntime` (start + maxRuntime); the hub fails the
    /// job then even if its agents do not. None until the attempt runs, or without a maxRuntime.
    pub deadline_at: Option<i64>,
    /// The latest checkpoint a worker reported, if any.
    pub checkpoint: Option<Checkpoint>,
}

/// A job's latest checkpoint as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub uri: String,
    pub step: u64,
    /// When the hub recorded it (Unix ms).
    pub at: i64,
}

/// The columns [`JobRow::from_row`] reads, for `SELECT` lists.
pub(super) const JOB_COLUMNS: &str = "id, tenant_id, name, spec, phase, reason, message, attempt, price_micros, \
     gpu_millis, cost_micros, submitted_at, scheduled_at, started_at, finished_at, aggregator, deadline_at, \
     checkpoint_uri, checkpoint_step, checkpoint_at";

impl JobRow {
    pub(super) fn from_row(row: &AnyRow) -> Result<Self> {
        Ok(Self {
            id: row.try_get("id")?,
            tenant_id: row.try_get("tenant_id")?,
            name: row.try_get("name")?,
            spec: json_column(row, "spec")?,
            phase: parse_column(row, "phase")?,
            reason: row.try_get("reason")?,
            message: row.try_get("message")?,
            attempt: unsigned(row, "attempt")?,
            price_micros: row
                .try_get::<Option<i64>, _>("price_micros")?
                .map(|v| v.max(0) as u64),
            gpu_millis: unsigned(row, "gpu_millis")?,
            cost_micros: unsigned(row, "cost_micros")?,
            submitted_at: row.try_get("submitted_at")?,
            scheduled_at: row.try_get("scheduled_at")?,
            started_at: row.try_get("started_at")?,
            finished_at: row.try_get("finished_at")?,
            aggregator: row.try_get("aggregator")?,
            deadline_at: row.try_get("deadline_at")?,
            checkpoint: match (
                row.try_get::<Option<String>, _>("checkpoint_uri")?,
                row.try_get::<Option<i64>, _>("checkpoint_step")?,
                row.try_get::<Option<i64>, _>("checkpoint_at")?,
            ) {
                (Some(uri), Some(step), Some(at)) => Some(Checkpoint {
                    uri,
                    step: u64::try_from(step).map_err(|_| {
                        StoreError::Corrupt(format!("column checkpoint_step: {step} out of range"))
                    })?,
                    at,
                }),
                _ => None,
            },
        })
    }
}

/// A registered node as stored, with the GPUs its live assignments hold.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeRow {
    pub name: String,
    pub region: String,
    pub operator_address: Option<String>,
    pub price_micros: u64,
    pub gpus: Vec<GpuDevice>,
    pub capabilities: Vec<String>,
    pub simulated: bool,
    pub registered_at: i64,
    pub last_heartbeat: i64,
    /// UUIDs of GPUs allocated to live assignments.
    pub allocated: Vec<String>,
    /// The latest benchmark score the agent reported, when it reported one.
    pub benchmark: Option<NodeBenchmarkRow>,
    /// Basis points, 10,000 = spotless; verification lowers it (docs/verification.md).
    pub reputation_bps: u16,
}

/// A node's stored benchmark score.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeBenchmarkRow {
    /// TFLOPS × 1000.
    pub tflops_milli: i64,
    /// When the agent measured it, Unix ms.
    pub at: i64,
    pub finding: Option<String>,
}

pub(super) const NODE_COLUMNS: &str = "name, region, operator_address, price_micros, gpus, capabilities, simulated, registered_at, last_heartbeat, benchmark_tflops_milli, benchmark_at, benchmark_finding, reputation_bps";

impl NodeRow {
    pub(super) fn from_row(row: &AnyRow) -> Result<Self> {
        Ok(Self {
            name: row.try_get("name")?,
            region: row.try_get("region")?,
            operator_address: row.try_get("operator_address")?,
            price_micros: unsigned(row, "price_micros")?,
            gpus: json_column(row, "gpus")?,
            capabilities: json_column(row, "capabilities")?,
            simulated: row.try_get::<i64, _>("simulated")? != 0,
            registered_at: row.try_get("registered_at")?,
            last_heartbeat: row.try_get("last_heartbeat")?,
            reputation_bps: u16::try_from(
                row.try_get::<i64, _>("reputation_bps")?.clamp(0, 10_000),
            )
            .unwrap_or(10_000),
            allocated: Vec::new(),
            benchmark: match (
                row.try_get::<Option<i64>, _>("benchmark_tflops_milli")?,
                row.try_get::<Option<i64>, _>("benchmark_at")?,
            ) {
                (Some(tflops_milli), Some(at)) => Some(NodeBenchmarkRow {
                    tflops_milli,
                    at,
                    finding: row.try_get("benchmark_finding")?,
                }),
                _ => None,
            },
        })
    }
}

/// One worker of one attempt, bound to a node.
#[derive(Clone, Debug, PartialEq)]
pub struct AssignmentRow {
    pub id: String,
    pub job_id: String,
    pub attempt: u32,
    pub rank: u32,
    pub node_name: String,
    pub gpus: Vec<String>,
    pub price_micros: u64,
    pub state: AssignmentPhase,
    pub exit_code: Option<i32>,
    pub message: Option<String>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// The job's checkpoint when this attempt was placed: what the worker resumes from.
    pub resume_checkpoint: Option<String>,
    /// What the worker's builtin workload computed, as its agent reported it.
    pub result: Option<crds::agent::WorkloadResult>,
}

pub(super) const ASSIGNMENT_COLUMNS: &str = "id, job_id, attempt, worker_rank, node_name, gpus, price_micros, state, \
     exit_code, message, created_at, started_at, finished_at, resume_checkpoint, result";

impl AssignmentRow {
    pub(super) fn from_row(row: &AnyRow) -> Result<Self> {
        Ok(Self {
            id: row.try_get("id")?,
            job_id: row.try_get("job_id")?,
            attempt: unsigned(row, "attempt")?,
            rank: unsigned(row, "worker_rank")?,
            node_name: row.try_get("node_name")?,
            gpus: json_column(row, "gpus")?,
            price_micros: unsigned(row, "price_micros")?,
            state: parse_column(row, "state")?,
            exit_code: row
                .try_get::<Option<i64>, _>("exit_code")?
                .map(|c| c as i32),
            message: row.try_get("message")?,
            created_at: row.try_get("created_at")?,
            started_at: row.try_get("started_at")?,
            finished_at: row.try_get("finished_at")?,
            resume_checkpoint: row.try_get("resume_checkpoint")?,
            result: row
                .try_get::<Option<String>, _>("result")?
                .map(|text| {
                    serde_json::from_str(&text)
                        .map_err(|e| StoreError::Corrupt(format!("column result: {e}")))
                })
                .transpose()?,
        })
    }

    /// GPU-milliseconds this worker has used, once it has both started and finished.
    pub fn gpu_millis(&self) -> u64 {
        match (self.started_at, self.finished_at) {
            (Some(start), Some(end)) if end > start => {
                (end - start) as u64 * self.gpus.len() as u64
            }
            _ => 0,
        }
    }
}

/// One entry of a job's event log.
#[derive(Clone, Debug, PartialEq)]
pub struct EventRow {
    pub at: i64,
    pub from_phase: Option<JobPhase>,
    pub to_phase: JobPhase,
    pub reason: String,
    pub message: Option<String>,
    pub attempt: u32,
    pub node: Option<String>,
}

impl EventRow {
    pub(super) fn from_row(row: &AnyRow) -> Result<Self> {
        let from: Option<String> = row.try_get("from_phase")?;
        Ok(Self {
            at: row.try_get("at")?,
            from_phase: from
                .map(|p| p.parse().map_err(StoreError::Corrupt))
                .transpose()?,
            to_phase: parse_column(row, "to_phase")?,
            reason: row.try_get("reason")?,
            message: row.try_get("message")?,
            attempt: unsigned(row, "attempt")?,
            node: row.try_get("node")?,
        })
    }
}

fn json_column<T: DeserializeOwned>(row: &AnyRow, column: &str) -> Result<T> {
    let text: String = row.try_get(column)?;
    serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(format!("column {column}: {e}")))
}

fn parse_column<T: std::str::FromStr<Err = String>>(row: &AnyRow, column: &str) -> Result<T> {
    let text: String = row.try_get(column)?;
    text.parse()
        .map_err(|e| StoreError::Corrupt(format!("column {column}: {e}")))
}

fn unsigned<T: TryFrom<i64>>(row: &AnyRow, column: &str) -> Result<T> {
    let value: i64 = row.try_get(column)?;
    T::try_from(value)
        .map_err(|_| StoreError::Corrupt(format!("column {column}: {value} out of range")))
}
