//! The life of one assignment on this node: report it running, run it, and make sure the hub learns
//! how it ended.
//!
//! Nothing a worker finished may be lost: a final report that fails for a transient reason is retried
//! (with backoff) until the hub acknowledges it, and the assignment stays held, so heartbeats keep
//! carrying its final state meanwhile. Only shutdown cuts this short, after one last attempt.
//!
//! Each report carries its number on the assignment (`seq`, see [`ReportSeq`]); a retry repeats
//! the number, so the hub applies a report once, and a retry of one whose answer was lost (the hub
//! has it) is answered `409 stale_report`, which ends the retries like an acknowledgement.

use std::{sync::Arc, time::Duration};

use crds::agent::{Assignment, STALE_REPORT, StatusReport, WorkerState};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::Shared;
use crate::{
    backoff::{Backoff, FailureStreak},
    client::ClientError,
    executor::{self, Outcome},
};

/// Numbers the reports on one assignment: 1 for the first, one more for each new report. The hub
/// refuses a report whose number is not above the last it applied, so a report replayed or
/// delayed on the network can never undo a newer one. An agent that restarts starts over, which is
/// safe: it has lost its workers and never reports on their assignments again.
#[derive(Debug, Default)]
struct ReportSeq(u64);

impl ReportSeq {
    /// The number of the next new report (a retry keeps the number of the report it repeats).
    fn next(&mut self) -> u64 {
        self.0 += 1;
        self.0
    }
}

/// What became of a status report.
#[derive(Debug, PartialEq)]
enum Delivery {
    /// The hub has it (or, answering `409 stale_report`, has it or a newer one already).
    Acknowledged,
    /// 409: the hub considers the assignment already final or stopped.
    AlreadyFinal,
    /// The hub does not want it (404: unknown assignment; other 4xx: refused); retrying cannot help.
    Dropped,
    /// Not delivered; try again later.
    Retry(ClientError),
}

/// Runs `assignment` until it ends or `stop` fires, then reports the outcome until acknowledged.
pub(super) async fn run(shared: Arc<Shared>, assignment: Assignment, stop: CancellationToken) {
    let id = assignment.id.as_str();
    // A retried attempt says so, and where it resumes from, so an operator reading the node's log
    // can tell a resumed worker from a fresh one.
    let resume_from = assignment
        .env
        .iter()
        .find(|v| v.name == crds::agent::CHECKPOINT_URI_ENV)
        .map(|v| v.value.as_str());
    info!(
        workload = %assignment.workload.capability(),
        gpus = assignment.gpus.len(),
        attempt = assignment.attempt,
        resume_from = resume_from.unwrap_or("-"),
        "starting"
    );
    shared.held.set_state(id, WorkerState::Running);

    // The Running report goes first, so the hub's start time (what usage is metered from) is never
    // later than the work's; one attempt only, as heartbeats carry the state should it fail. A hub
    // that answers that the assignment is over or unknown gets no work done at all.
    let mut seq = ReportSeq::default();
    let running = StatusReport {
        seq: seq.next(),
        state: WorkerState::Running,
        exit_code: None,
        message: None,
    };
    if let Delivery::AlreadyFinal | Delivery::Dropped = deliver(&shared, id, &running).await {
        info!("the hub no longer wants this assignment; dropped");
        shared.held.release(id);
        return;
    }
    let outcome = executor::run_builtin(&assignment, &stop).await;

    let outcome = explain_stop(outcome, &shared.stopping);
    shared.held.set_state(id, outcome.state);
    match outcome.state {
        WorkerState::Succeeded => info!("succeeded"),
        _ => {
            info!(state = ?outcome.state, message = outcome.message.as_deref().unwrap_or(""), "ended")
        }
    }
    report_final(&shared, id, &outcome.to_report(seq.next())).await;
    shared.held.release(id);
}

/// Says why a worker was stopped: the hub asked, or the agent is shutting down.
fn explain_stop(outcome: Outcome, stopping: &CancellationToken) -> Outcome {
    if outcome.state != WorkerState::Stopped {
        return outcome;
    }
    if stopping.is_cancelled() {
        Outcome::stopped("the node agent shut down")
    } else {
        Outcome::stopped("stopped on the hub's request")
    }
}

/// Delivers a final report: retried until acknowledged, except that once the agent is shutting down
/// one more attempt is all it gets.
async fn report_final(shared: &Shared, id: &str, report: &StatusReport) {
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
    let mut streak = FailureStreak::default();
    let mut last_attempt = shared.stopping.is_cancelled();
    loop {
        match deliver(shared, id, report).await {
            Delivery::Acknowledged | Delivery::AlreadyFinal | Delivery::Dropped => {
                if let Some(failures) = streak.succeed() {
                    info!(failures, "final report delivered after retries");
                }
                return;
            }
            Delivery::Retry(e) if last_attempt => {
                warn!(error = %e, state = ?report.state, "shutting down; the final report was not delivered");
                return;
            }
            Delivery::Retry(e) => {
                if streak.fail() {
                    warn!(error = %e, "cannot deliver the final report; retrying until the hub takes it");
                }
            }
        }
        tokio::select! {
            () = shared.stopping.cancelled() => last_attempt = true,
            () = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}

/// One attempt at a status report, sorted by what to do next.
async fn deliver(shared: &Shared, id: &str, report: &StatusReport) -> Delivery {
    let client = shared.session.client();
    let result = shared
        .session
        .call(|token| async move { client.report_status(&token, id, report).await })
        .await;
    sort(result, report)
}

/// What the hub's answer to `report` means for the agent.
fn sort(result: Result<(), ClientError>, report: &StatusReport) -> Delivery {
    match result {
        Ok(()) => Delivery::Acknowledged,
        Err(ClientError::Conflict { code, message }) if code == STALE_REPORT => {
            debug!(%message, seq = report.seq, state = ?report.state, "the hub already has this report");
            Delivery::Acknowledged
        }
        Err(ClientError::Conflict { message, .. }) => {
            debug!(%message, state = ?report.state, "the hub already has a final state");
            Delivery::AlreadyFinal
        }
        Err(ClientError::NotFound { message }) => {
            warn!(%message, state = ?report.state, "the hub does not know this assignment");
            Delivery::Dropped
        }
        Err(e @ ClientError::Rejected { .. }) => {
            error!(error = %e, state = ?report.state, "the hub refused the status report");
            Delivery::Dropped
        }
        Err(e @ (ClientError::Transient(_) | ClientError::Unauthorized)) => Delivery::Retry(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_are_numbered_from_one() {
        let mut seq = ReportSeq::default();
        assert_eq!([seq.next(), seq.next(), seq.next()], [1, 2, 3]);
    }

    #[test]
    fn a_stale_report_is_acknowledged_and_never_retried() {
        let report = Outcome::succeeded().to_report(2);
        let conflict = |code: &str| {
            Err(ClientError::Conflict {
                code: code.into(),
                message: "…".into(),
            })
        };
        assert_eq!(
            sort(conflict(STALE_REPORT), &report),
            Delivery::Acknowledged
        );
        assert_eq!(
            sort(conflict("assignment_final"), &report),
            Delivery::AlreadyFinal
        );
        assert_eq!(sort(Ok(()), &report), Delivery::Acknowledged);
        let lost = ClientError::Transient("connection reset".into());
        assert_eq!(sort(Err(lost.clone()), &report), Delivery::Retry(lost));
    }

    #[test]
    fn stops_say_why() {
        let stopping = CancellationToken::new();
        let stopped = Outcome::stopped("stopped before completion");
        assert_eq!(
            explain_stop(stopped.clone(), &stopping).message.as_deref(),
            Some("stopped on the hub's request")
        );
        assert_eq!(
            explain_stop(Outcome::succeeded(), &stopping),
            Outcome::succeeded()
        );
        stopping.cancel();
        assert_eq!(
            explain_stop(stopped, &stopping).message.as_deref(),
            Some("the node agent shut down")
        );
    }
}
