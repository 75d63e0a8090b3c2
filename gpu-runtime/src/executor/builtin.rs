//! The builtin executor: the workloads built into the agent. For now `builtin:sleep`, which holds
//! the GPUs for a while so that jobs go through their whole lifecycle (scheduled, running,
//! succeeded, cancelled, timed out) without a GPU; each builtin workload is one arm of the match in
//! [`run_builtin`].

use std::time::Duration;

use crds::{agent::Assignment, v1alpha1::EnvVar};
use tokio_util::sync::CancellationToken;

use super::Outcome;

/// What a simulated node advertises it can run, and all that [`run_builtin`] runs. The matmul
/// workloads run on the CPU reference for simulated GPUs (see [`crate::workloads`]).
pub const SIMULATED_CAPABILITIES: &[&str] = &[
    "builtin:sleep",
    "builtin:matmulBenchmark",
    "builtin:verifiableMatmul",
];

/// The message of a worker killed at its job's `maxRuntime`.
pub const MAX_RUNTIME_EXCEEDED: &str = "exceeded maxRuntime";

/// Runs a builtin workload of a simulated node until it ends, its `maxRuntimeSeconds` passes, or
/// `cancel` fires (then promptly, with `Stopped`). Workloads other than `builtin:sleep` fail at once.
/// `env` is the worker environment ([`super::worker_env`]).
pub async fn run_builtin(
    assignment: &Assignment,
    env: &[EnvVar],
    cancel: &CancellationToken,
) -> Outcome {
    let capability = assignment.workload.capability();
    if let Some(builtin) = &assignment.workload.builtin
        && crate::workloads::handles(builtin)
    {
        return crate::workloads::run_assignment(assignment, cancel).await;
    }
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
    use crds::{
        agent::WorkerState,
        v1alpha1::{BuiltinWorkload, SleepWorkload, Workload},
    };
    use tokio::time::{Instant, advance};

    use super::*;
    use crate::executor::{simulated_capabilities, tests::assignment};

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
    fn simulated_nodes_advertise_sleep() {
        assert_eq!(
            simulated_capabilities(),
            [
                "builtin:sleep",
                "builtin:matmulBenchmark",
                "builtin:verifiableMatmul"
            ]
        );
        assert_eq!(sleep(1).capability(), "builtin:sleep");
    }

    #[tokio::test(start_paused = true)]
    async fn sleep_succeeds_after_its_duration() {
        let start = Instant::now();
        let outcome =
            run_builtin(&assignment(sleep(30), None), &[], &CancellationToken::new()).await;
        assert_eq!(outcome, Outcome::succeeded());
        assert_eq!(outcome.to_report(1).exit_code, Some(0));
        assert_eq!(start.elapsed(), Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn sleep_within_max_runtime_succeeds() {
        let start = Instant::now();
        let outcome = run_builtin(
            &assignment(sleep(30), Some(30)),
            &[],
            &CancellationToken::new(),
        )
        .await;
        assert_eq!(outcome.state, WorkerState::Succeeded);
        assert_eq!(start.elapsed(), Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn exceeding_max_runtime_fails_at_the_limit() {
        let start = Instant::now();
        let outcome = run_builtin(
            &assignment(sleep(600), Some(10)),
            &[],
            &CancellationToken::new(),
        )
        .await;
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
            async move { run_builtin(&work, &[], &cancel).await }
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
        let outcome = run_builtin(&assignment(sleep(1), None), &[], &cancel).await;
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
        for (workload, capability) in [(container, "container"), (process, "process")] {
            let start = Instant::now();
            let outcome =
                run_builtin(&assignment(workload, None), &[], &CancellationToken::new()).await;
            assert_eq!(outcome.state, WorkerState::Failed);
            assert_eq!(
                outcome.message.as_deref(),
                Some(
                    format!(
                        "unsupported workload `{capability}`: this node runs only builtin:sleep, \
                         builtin:matmulBenchmark, builtin:verifiableMatmul"
                    )
                    .as_str()
                )
            );
            assert_eq!(start.elapsed(), Duration::ZERO);
        }
    }
}
