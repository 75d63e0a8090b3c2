//! Runs an assignment's workload and says how it ended.
//!
//! For now there is one executor: the builtin one of simulated nodes, which runs `builtin:sleep` so
//! that jobs go through their whole lifecycle (scheduled, running, succeeded, cancelled, timed out)
//! without a GPU. Container and process executors come with later issues; until then such workloads
//! fail at once. The hub only sends a node the workloads it advertised, so that is defence in depth.

use std::time::Duration;

use crds::{
    agent::{Assignment, StatusReport, WorkerState},
    v1alpha1::EnvVar,
};
use tokio_util::sync::CancellationToken;

/// What a simulated node advertises it can run, and all that [`run_builtin`] runs.
pub const SIMULATED_CAPABILITIES: &[&str] = &["builtin:sleep"];

/// [`SIMULATED_CAPABILITIES`] as the register request wants them.
pub fn simulated_capabilities() -> Vec<String> {
    SIMULATED_CAPABILITIES
        .iter()
        .map(|c| c.to_string())
        .collect()
}

/// How a worker ended: the final state and what the hub is told about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// A final state: `Succeeded`, `Failed` or `Stopped`.
    pub state: WorkerState,
    /// The exit code, when the workload exited by itself.
    pub exit_code: Option<i32>,
    /// Why it did not succeed.
    pub message: Option<String>,
}

impl Outcome {
    /// Exited 0.
    pub fn succeeded() -> Self {
        Self {
            state: WorkerState::Succeeded,
            exit_code: Some(0),
            message: None,
        }
    }

    /// Could not start, or ended badly.
    pub fn failed(message: impl Into<String>) -> Self {
        Self {
            state: WorkerState::Failed,
            exit_code: None,
            message: Some(message.into()),
        }
    }

    /// Cancelled before it ended.
    pub fn stopped(message: impl Into<String>) -> Self {
        Self {
            state: WorkerState::Stopped,
            exit_code: None,
            message: Some(message.into()),
        }
    }

    /// The status report that tells the hub about this outcome, as report number `seq` on its
    /// assignment.
    pub fn to_report(&self, seq: u64) -> StatusReport {
        StatusReport {
            seq,
            state: self.state,
            exit_code: self.exit_code,
            message: self.message.clone(),
        }
    }
}

/// The environment a worker runs with: the workload's `env`, then what the hub set for this
/// attempt (`AGORA_ATTEMPT`, `AGORA_CHECKPOINT_URI`), which wins over a workload variable of the
/// same name — a job must not be able to make a retried attempt believe it is the first, or resume
/// from somewhere else than the hub said.
pub fn worker_env(assignment: &Assignment) -> Vec<EnvVar> {
    let mut env: Vec<EnvVar> = assignment
        .workload
        .env
        .iter()
        .filter(|var| !assignment.env.iter().any(|hub| hub.name == var.name))
        .cloned()
        .collect();
    env.extend(assignment.env.iter().cloned());
    env
}

/// The message of a worker killed at its job's `maxRuntime`.
pub const MAX_RUNTIME_EXCEEDED: &str = "exceeded maxRuntime";

/// Runs a builtin workload of a simulated node until it ends, its `maxRuntimeSeconds` passes, or
/// `cancel` fires (then promptly, with `Stopped`). Workloads other than `builtin:sleep` fail at once.
pub async fn run_builtin(assignment: &Assignment, cancel: &CancellationToken) -> Outcome {
    let capability = assignment.workload.capability();
    let work = match assignment
        .workload
        .builtin
        .as_ref()
        .and_then(|b| b.sleep.as_ref())
    {
        Some(sleep) => Duration::from_secs(u64::from(sleep.duration_seconds)),
        None => {
            return Outcome::failed(format!(
                "unsupported workload `{capability}`: this node runs only {}",
                SIMULATED_CAPABILITIES.join(", ")
            ));
        }
    };
    // The sleep builtin reads no variables; the worker still gets them, as a process or container
    // would, and the log shows what a resumed attempt was told.
    let env = worker_env(assignment);
    tracing::debug!(
        env = ?env.iter().map(|v| format!("{}={}", v.name, v.value)).collect::<Vec<_>>(),
        "worker environment"
    );
    let limit = assignment.max_runtime_seconds.map(Duration::from_secs);
    // Work that outlasts the job's limit is cut off at the limit; work that fits ends by itself.
    let (run_for, outcome) = match limit {
        Some(limit) if limit < work => (limit, Outcome::failed(MAX_RUNTIME_EXCEEDED)),
        _ => (work, Outcome::succeeded()),
    };
    tokio::select! {
        biased;
        () = cancel.cancelled() => Outcome::stopped("stopped before completion"),
        () = tokio::time::sleep(run_for) => outcome,
    }
}

#[cfg(test)]
mod tests {
    use crds::v1alpha1::{BuiltinWorkload, MatmulBenchmarkWorkload, SleepWorkload, Workload};
    use tokio::time::{Instant, advance};

    use super::*;

    fn assignment(workload: Workload, max_runtime_seconds: Option<u64>) -> Assignment {
        Assignment {
            id: "asg-1".into(),
            job: "job-1".into(),
            attempt: 1,
            rank: 0,
            workers: 1,
            gpus: vec!["GPU-SIM-0".into()],
            workload,
            max_runtime_seconds,
            env: vec![EnvVar {
                name: crds::agent::ATTEMPT_ENV.into(),
                value: "1".into(),
            }],
        }
    }

    fn sleep(duration_seconds: u32) -> Workload {
        Workload {
            builtin: Some(BuiltinWorkload {
                sleep: Some(SleepWorkload { duration_seconds }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn the_hubs_variables_win_over_the_workloads() {
        let var = |name: &str, value: &str| EnvVar {
            name: name.into(),
            value: value.into(),
        };
        let mut work = assignment(sleep(1), None);
        work.workload.env = vec![var("EPOCHS", "3"), var("AGORA_ATTEMPT", "1")];
        work.env = vec![
            var("AGORA_ATTEMPT", "2"),
            var("AGORA_CHECKPOINT_URI", "s3://ckpt/step-100"),
        ];
        assert_eq!(
            worker_env(&work),
            [
                var("EPOCHS", "3"),
                var("AGORA_ATTEMPT", "2"),
                var("AGORA_CHECKPOINT_URI", "s3://ckpt/step-100"),
            ]
        );
    }

    #[test]
    fn simulated_nodes_advertise_sleep() {
        assert_eq!(simulated_capabilities(), ["builtin:sleep"]);
        assert_eq!(sleep(1).capability(), "builtin:sleep");
    }

    #[tokio::test(start_paused = true)]
    async fn sleep_succeeds_after_its_duration() {
        let start = Instant::now();
        let outcome = run_builtin(&assignment(sleep(30), None), &CancellationToken::new()).await;
        assert_eq!(outcome, Outcome::succeeded());
        assert_eq!(outcome.to_report(1).exit_code, Some(0));
        assert_eq!(start.elapsed(), Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn sleep_within_max_runtime_succeeds() {
        let start = Instant::now();
        let outcome =
            run_builtin(&assignment(sleep(30), Some(30)), &CancellationToken::new()).await;
        assert_eq!(outcome.state, WorkerState::Succeeded);
        assert_eq!(start.elapsed(), Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn exceeding_max_runtime_fails_at_the_limit() {
        let start = Instant::now();
        let outcome =
            run_builtin(&assignment(sleep(600), Some(10)), &CancellationToken::new()).await;
        assert_eq!(outcome.state, WorkerState::Failed);
        assert_eq!(outcome.message.as_deref(), Some("exceeded maxRuntime"));
        assert_eq!(outcome.exit_code, None);
        assert_eq!(start.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn cancellation_stops_promptly() {
        let cancel = CancellationToken::new();
        let work = assignment(sleep(3600), None);
        let task = tokio::spawn({
            let cancel = cancel.clone();
            async move { run_builtin(&work, &cancel).await }
        });
        advance(Duration::from_secs(5)).await;
        assert!(!task.is_finished());
        let cancelled_at = Instant::now();
        cancel.cancel();
        let outcome = task.await.unwrap();
        assert_eq!(outcome.state, WorkerState::Stopped);
        assert_eq!(outcome.to_report(1).state, WorkerState::Stopped);
        assert_eq!(
            cancelled_at.elapsed(),
            Duration::ZERO,
            "no virtual time passed"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_already_cancelled_worker_does_not_run() {
        let cancel = CancellationToken::new();
        cancel.cancel();
        let outcome = run_builtin(&assignment(sleep(1), None), &cancel).await;
        assert_eq!(outcome.state, WorkerState::Stopped);
    }

    #[tokio::test(start_paused = true)]
    async fn unsupported_workloads_fail_at_once() {
        let container = Workload {
            image: Some("ghcr.io/acme/train:1.4".into()),
            ..Default::default()
        };
        let process = Workload {
            command: Some(vec!["python".into(), "train.py".into()]),
            ..Default::default()
        };
        let matmul = Workload {
            builtin: Some(BuiltinWorkload {
                matmul_benchmark: Some(MatmulBenchmarkWorkload {
                    size: 1024,
                    iterations: 1,
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        for (workload, capability) in [
            (container, "container"),
            (process, "process"),
            (matmul, "builtin:matmulBenchmark"),
        ] {
            let start = Instant::now();
            let outcome = run_builtin(&assignment(workload, None), &CancellationToken::new()).await;
            assert_eq!(outcome.state, WorkerState::Failed);
            assert_eq!(
                outcome.message.as_deref(),
                Some(
                    format!(
                        "unsupported workload `{capability}`: this node runs only builtin:sleep"
                    )
                    .as_str()
                )
            );
            assert_eq!(start.elapsed(), Duration::ZERO);
        }
    }
}
