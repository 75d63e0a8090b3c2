//! How stored rows are shown: the REST API's `Job` and `Node`, with Kubernetes-style conditions.

use std::collections::HashMap;

use crds::{
    money::{Price, display_micros},
    rest::{Job, JobEvent, Node, NodeBenchmark, WorkerResult},
    v1alpha1::{
        CheckpointStatus, ComputeJobStatus, GpuNodeSpec, GpuNodeStatus, JobPhase, PlacementStatus,
        Usage, WorkerPlacement,
    },
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::store::{AssignmentRow, EventRow, JobRow, NodeRow};

/// A store time (Unix milliseconds) as a Kubernetes timestamp.
pub fn time(ms: i64) -> Time {
    Time(jiff::Timestamp::from_millisecond(ms).unwrap_or(jiff::Timestamp::UNIX_EPOCH))
}

/// Whether a node's last heartbeat is recent enough for it to take work.
pub fn node_ready(last_heartbeat_ms: i64, now_ms: i64, timeout_ms: i64) -> bool {
    now_ms.saturating_sub(last_heartbeat_ms) <= timeout_ms
}

fn condition(kind: &str, status: bool, reason: &str, message: String, at: i64) -> Condition {
    Condition {
        type_: kind.to_string(),
        status: if status { "True" } else { "False" }.to_string(),
        reason: reason.to_string(),
        message,
        last_transition_time: time(at),
        observed_generation: None,
    }
}

/// The `Verified` condition of a job from its latest verification: `Unknown` while it is being
/// checked, `True` when the result stood, `False` when it was found wrong or could not be checked.
pub fn verified(row: &crate::store::verification::VerificationRow) -> Condition {
    use crate::store::verification::VerificationState as State;
    let (status, reason) = match row.state {
        State::Sampling | State::Opening | State::Recomputing | State::TieBreaking => {
            ("Unknown", "Verifying")
        }
        State::Passed => ("True", "Passed"),
        State::Failed => ("False", "VerificationFailed"),
        State::Unverifiable => ("False", "Unverifiable"),
    };
    let message = row.message.clone().unwrap_or_else(|| {
        format!(
            "{} of attempt {}: {}",
            row.mode,
            row.attempt,
            row.state.as_str().replace('_', " ")
        )
    });
    Condition {
        type_: "Verified".to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message,
        last_transition_time: time(row.decided_at.unwrap_or(row.created_at)),
        observed_generation: None,
    }
}

/// A job as the API shows it. `assignments` are those of the current attempt; `regions` maps node
/// names to regions.
pub fn job(row: &JobRow, assignments: &[AssignmentRow], regions: &HashMap<String, String>) -> Job {
    let reason = row.reason.clone().unwrap_or_default();
    let message = row.message.clone().unwrap_or_default();
    let mut conditions = vec![condition(
        "Accepted",
        true,
        "Submitted",
        "the hub accepted the job".into(),
        row.submitted_at,
    )];
    conditions.push(match row.scheduled_at {
        Some(at) => condition("Scheduled", true, "Placed", placed_message(assignments), at),
        None if row.phase == JobPhase::Pending => condition(
            "Scheduled",
            false,
            &reason,
            message.clone(),
            row.submitted_at,
        ),
        None => condition(
            "Scheduled",
            false,
            &reason,
            message.clone(),
            row.finished_at.unwrap_or(row.submitted_at),
        ),
    });
    match (row.phase, row.started_at) {
        (JobPhase::Running, Some(at)) => conditions.push(condition(
            "Running",
            true,
            "Started",
            "all workers are running".into(),
            at,
        )),
        (phase, _) if phase.is_final() => conditions.push(condition(
            "Running",
            false,
            &reason,
            message.clone(),
            row.finished_at.unwrap_or(row.submitted_at),
        )),
        _ => {}
    }

    // A Pending job has no placement: after a failed attempt it waits for a new one (the failed
    // attempt's nodes are in the event log).
    let placement =
        (!assignments.is_empty() && row.phase != JobPhase::Pending).then(|| PlacementStatus {
            workers: assignments
                .iter()
                .map(|a| WorkerPlacement {
                    rank: a.rank,
                    node: a.node_name.clone(),
                    gpus: a.gpus.clone(),
                    region: regions.get(&a.node_name).cloned().unwrap_or_default(),
                })
                .collect(),
            price_per_gpu_hour: Price::from_micros(row.price_micros.unwrap_or_default()),
            aggregator: row.aggregator.clone(),
        });
    let nodes = placement.as_ref().map(|p| {
        let mut names: Vec<&str> = p.workers.iter().map(|w| w.node.as_str()).collect();
        names.dedup();
        names.join(",")
    });
    let usage = (row.gpu_millis > 0 || row.phase.is_final()).then(|| Usage {
        gpu_seconds: row.gpu_millis / 1000,
        cost: display_micros(row.cost_micros),
    });
    Job {
        id: row.id.clone(),
        name: row.name.clone(),
        spec: row.spec.clone(),
        status: ComputeJobStatus {
            phase: row.phase,
            message: row.message.clone(),
            reason: row.reason.clone(),
            conditions,
            placement,
            nodes,
            attempts: row.attempt,
            usage,
            settlement: None,
            checkpoint: row.checkpoint.as_ref().map(|c| CheckpointStatus {
                uri: c.uri.clone(),
                step: c.step,
                time: time(c.at),
            }),
            submit_time: Some(time(row.submitted_at)),
            schedule_time: row.scheduled_at.map(time),
            start_time: row.started_at.map(time),
            completion_time: row.finished_at.map(time),
            observed_generation: None,
            job_id: Some(row.id.clone()),
            event_cursor: None,
        },
        results: assignments
            .iter()
            .filter_map(|a| {
                Some(WorkerResult {
                    rank: a.rank,
                    node: a.node_name.clone(),
                    result: a.result.clone()?,
                })
            })
            .collect(),
        // Filled in by the route, which reads them from the store.
        receipts: Vec::new(),
    }
}

fn placed_message(assignments: &[AssignmentRow]) -> String {
    let mut nodes: Vec<&str> = assignments.iter().map(|a| a.node_name.as_str()).collect();
    nodes.dedup();
    format!("{} worker(s) on {}", assignments.len(), nodes.join(", "))
}

/// A node as the API (and the GpuNode mirror) shows it.
pub fn node(row: &NodeRow, now_ms: i64, timeout_ms: i64) -> Node {
    let ready = node_ready(row.last_heartbeat, now_ms, timeout_ms);
    let healthy_gpus = row.gpus.iter().filter(|g| g.healthy).count() as u32;
    let allocated = row
        .gpus
        .iter()
        .filter(|g| row.allocated.contains(&g.uuid))
        .count() as u32;
    let free = row
        .gpus
        .iter()
        .filter(|g| g.healthy && !row.allocated.contains(&g.uuid))
        .count() as u32;
    let mut models: Vec<&str> = row.gpus.iter().map(|g| g.model.as_str()).collect();
    models.sort_unstable();
    models.dedup();
    let unhealthy: Vec<&str> = row
        .gpus
        .iter()
        .filter(|g| !g.healthy)
        .map(|g| g.uuid.as_str())
        .collect();
    let conditions = vec![
        if ready {
            condition(
                "Ready",
                true,
                "HeartbeatsArriving",
                "the agent sends heartbeats".into(),
                row.last_heartbeat,
            )
        } else {
            condition(
                "Ready",
                false,
                "HeartbeatsMissed",
                format!("no heartbeat for more than {} s", timeout_ms / 1000),
                row.last_heartbeat,
            )
        },
        if !unhealthy.is_empty() {
            condition(
                "Healthy",
                false,
                "GpuUnhealthy",
                format!("unhealthy: {}", unhealthy.join(", ")),
                row.last_heartbeat,
            )
        } else if let (Some(below), Some(benchmark)) =
            (crate::honesty::assess(row), row.benchmark.as_ref())
        {
            // Judged by the hub against the claimed model (crate::honesty).
            condition(
                "Healthy",
                false,
                "BenchmarkBelowModel",
                below.message(),
                benchmark.at,
            )
        } else if let Some((finding, at)) = row
            .benchmark
            .as_ref()
            .and_then(|b| Some((b.finding.as_deref()?, b.at)))
        {
            // A score far below the claimed model's peak: faulty, throttled or mislabelled GPUs.
            condition(
                "Healthy",
                false,
                "BenchmarkBelowModel",
                finding.to_string(),
                at,
            )
        } else {
            condition(
                "Healthy",
                true,
                "AllGpusHealthy",
                "every GPU is healthy".into(),
                row.last_heartbeat,
            )
        },
    ];
    let benchmark = row.benchmark.as_ref().map(|b| NodeBenchmark {
        tflops: b.tflops_milli as f64 / 1000.0,
        time: time(b.at),
        finding: b.finding.clone(),
    });
    Node {
        name: row.name.clone(),
        spec: GpuNodeSpec {
            operator_address: row.operator_address.clone(),
            region: row.region.clone(),
            price_per_gpu_hour: Price::from_micros(row.price_micros),
        },
        status: GpuNodeStatus {
            gpus: row.gpus.clone(),
            gpu_model: match models.as_slice() {
                [] => None,
                [one] => Some(one.to_string()),
                _ => Some("mixed".into()),
            },
            capacity: row.gpus.len() as u32,
            allocatable: healthy_gpus,
            allocated,
            free: if ready { free } else { 0 },
            capabilities: row.capabilities.clone(),
            benchmark_tflops: benchmark.as_ref().map(|b| b.tflops),
            network: None,
            stake: None,
            reputation: None,
            jailed: false,
            simulated: row.simulated,
            last_heartbeat: Some(time(row.last_heartbeat)),
            conditions,
        },
        // Measurements and telemetry are added by `crate::network::NetworkState::annotate`.
        telemetry: None,
        benchmark,
    }
}

/// An event log entry as the API shows it, `position` being its place in the log.
pub fn event(position: i64, row: &EventRow) -> JobEvent {
    JobEvent {
        cursor: position.to_string(),
        time: time(row.at),
        from: row.from_phase,
        to: row.to_phase,
        reason: row.reason.clone(),
        message: row.message.clone(),
        attempt: row.attempt,
        node: row.node.clone(),
    }
}
