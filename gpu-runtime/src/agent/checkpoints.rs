//! Delivers the checkpoints a running worker reports ([`crate::executor::checkpoint_marker`]) to
//! the hub, which hands the job's latest to a retried attempt as `AGORA_CHECKPOINT_URI`.
//!
//! A checkpoint is worth something only if it survives what it guards against, the worker or the
//! agent dying, so each one is numbered like a status report (the assignment's `seq`, shared with
//! them), written to the outbox before it is sent, and removed once the hub acknowledged it
//! (`409 stale_report` included: the hub has it). Only the newest matters (the hub keeps the
//! highest step), so a newer checkpoint supersedes an undelivered older one, whose record goes
//! once the newer one is on disk. While the work runs, a checkpoint the hub cannot take now is
//! retried with backoff in the background of the work.
//!
//! Order matters: the hub refuses checkpoints on an assignment that is over, and a worker that
//! checkpoints and then fails must leave the checkpoint for the retry. So once the work ended, its
//! pending checkpoint is delivered (retried until the hub takes it, [`deliver_final`]) before the
//! final status report; at shutdown it stays in the outbox ahead of that report, and a restarted
//! agent delivers both in that order ([`deliver_kept`]).

use std::future::Future;

use crds::agent::{CheckpointReport, STALE_REPORT};
use tokio::{
    sync::watch,
    time::{Duration, Instant},
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::Shared;
use crate::{
    backoff::{Backoff, FailureStreak},
    client::ClientError,
    executor::checkpoint_marker::Checkpoint,
    outbox::{self, Record},
};

/// A checkpoint report the hub has not acknowledged yet.
#[derive(Debug)]
pub(super) struct Pending {
    assignment: String,
    report: CheckpointReport,
    /// Its outbox record (absent if it could not be written), and those of older checkpoints it
    /// supersedes that are still on disk because it is not.
    records: Vec<Record>,
}

/// What became of one attempt at a checkpoint report.
#[derive(Debug, PartialEq)]
enum Delivery {
    /// The hub has it (or, answering `409 stale_report`, a newer report already).
    Taken,
    /// The hub will never take it (the assignment is over or unknown, or the report refused);
    /// retrying cannot help.
    Refused,
    /// Not delivered; try again later.
    Retry(ClientError),
}

/// Runs `work` (the worker) while delivering the checkpoints that arrive on `latest`; once it
/// ended, returns its output with the checkpoint still to deliver, if any (already in the outbox).
pub(super) async fn alongside<F: Future>(
    shared: &Shared,
    id: &str,
    mut latest: watch::Receiver<Option<Checkpoint>>,
    work: F,
) -> (F::Output, Option<Pending>) {
    let done = CancellationToken::new();
    let work = async {
        let output = work.await;
        done.cancel();
        output
    };
    let (output, pending) = tokio::join!(work, while_running(shared, id, &mut latest, &done));
    // One reported as the work ended is numbered now, below the final report.
    let pending = match take_new(&mut latest) {
        Some(checkpoint) => queue(shared, id, checkpoint, pending),
        None => pending,
    };
    (output, pending)
}

/// Delivers the checkpoints arriving on `latest` until `done` fires; returns the one not
/// delivered by then.
async fn while_running(
    shared: &Shared,
    id: &str,
    latest: &mut watch::Receiver<Option<Checkpoint>>,
    done: &CancellationToken,
) -> Option<Pending> {
    let mut pending: Option<Pending> = None;
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
    let mut streak = FailureStreak::default();
    // When the pending checkpoint is tried next; `None`: at once.
    let mut retry_at: Option<Instant> = None;
    let mut open = true;
    // A checkpoint `changed` saw (which marks it seen).
    let mut fresh = None;
    loop {
        if let Some(checkpoint) = fresh.take().or_else(|| take_new(latest)) {
            pending = queue(shared, id, checkpoint, pending);
            retry_at = None;
        }
        if let Some(report) = pending.as_ref().map(|p| p.report.clone())
            && retry_at.is_none_or(|at| at <= Instant::now())
        {
            let delivery = tokio::select! {
                delivery = attempt(shared, id, &report) => delivery,
                // `end` sends it again, with the same `seq`.
                () = done.cancelled() => return pending,
            };
            match delivery {
                Delivery::Taken | Delivery::Refused => {
                    if let Some(failures) = streak.succeed()
                        && delivery == Delivery::Taken
                    {
                        info!(failures, "checkpoint report delivered after retries");
                    }
                    if let Some(delivered) = pending.take() {
                        remove_all(shared, delivered.records);
                    }
                    backoff.reset();
                    retry_at = None;
                }
                Delivery::Retry(e) => {
                    if streak.fail() {
                        warn!(error = %e, "cannot deliver a checkpoint report; retrying while the work runs");
                    }
                    retry_at = Some(Instant::now() + backoff.next_delay());
                }
            }
            continue;
        }
        let retry = pending.as_ref().and(retry_at);
        tokio::select! {
            () = done.cancelled() => return pending,
            changed = latest.changed(), if open => match changed {
                Ok(()) => fresh = latest.borrow_and_update().clone(),
                Err(_) => open = false,
            },
            () = sleep_until(retry) => {}
        }
    }
}

/// Completes at `at`, never when `None`.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The newest checkpoint on `latest`, if it was not taken yet.
fn take_new(latest: &mut watch::Receiver<Option<Checkpoint>>) -> Option<Checkpoint> {
    if latest.has_changed().unwrap_or(false) {
        latest.borrow_and_update().clone()
    } else {
        None
    }
}

/// Numbers `checkpoint` and writes it to the outbox, superseding `older`: the result is what to
/// deliver now.
fn queue(
    shared: &Shared,
    id: &str,
    checkpoint: Checkpoint,
    older: Option<Pending>,
) -> Option<Pending> {
    let state = &shared.state;
    let seq = match state.started().next_seq(id) {
        Ok(seq) => seq,
        Err(e) => {
            // The next checkpoint may fare better; meanwhile the older one still counts.
            error!(error = %e, step = checkpoint.step, "cannot number a checkpoint report; dropped");
            return older;
        }
    };
    let report = CheckpointReport {
        seq,
        uri: checkpoint.uri,
        step: checkpoint.step,
    };
    let mut records = older.map(|p| p.records).unwrap_or_default();
    match state.outbox().push(id, seq, outbox::CHECKPOINT, &report) {
        Ok(record) => {
            // The newer one is on disk: the older ones are no longer needed there.
            remove_all(shared, std::mem::take(&mut records));
            records.push(record);
        }
        // Still sent, only without surviving a restart; the older ones stay on disk meanwhile.
        Err(e) => {
            error!(error = %e, "cannot write a checkpoint report to the outbox; sending it without")
        }
    }
    Some(Pending {
        assignment: id.to_string(),
        report,
        records,
    })
}

/// Delivers the checkpoint a worker left pending when it ended until the hub takes it: true once
/// it did (or refused it for good, or there is none), false when the agent is shutting down first
/// (it stays in the outbox).
pub(super) async fn deliver_final(shared: &Shared, pending: Option<Pending>) -> bool {
    let Some(pending) = pending else {
        return true;
    };
    if !until_taken(shared, &pending.assignment, &pending.report).await {
        return false;
    }
    remove_all(shared, pending.records);
    true
}

/// Delivers a checkpoint report a previous run of the agent left in the outbox (see
/// [`super::worker`]'s redelivery): true once the hub took or refused it, false when the agent is
/// shutting down first.
pub(super) async fn deliver_kept(shared: &Shared, record: &Record) -> bool {
    match serde_json::from_value::<CheckpointReport>(record.body.clone()) {
        Ok(report) => until_taken(shared, &record.assignment, &report).await,
        Err(e) => {
            error!(number = record.number, error = %e, "an outbox checkpoint report this agent cannot read; dropped");
            true
        }
    }
}

/// Sends `report` until the hub takes or refuses it (true), except that once the agent is
/// shutting down one more attempt is all it gets (false when that fails too).
async fn until_taken(shared: &Shared, id: &str, report: &CheckpointReport) -> bool {
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
    let mut streak = FailureStreak::default();
    let mut last_attempt = shared.stopping.is_cancelled();
    loop {
        match attempt(shared, id, report).await {
            delivery @ (Delivery::Taken | Delivery::Refused) => {
                if let Some(failures) = streak.succeed()
                    && delivery == Delivery::Taken
                {
                    info!(failures, "checkpoint report delivered after retries");
                }
                return true;
            }
            Delivery::Retry(e) if last_attempt => {
                warn!(error = %e, step = report.step, "shutting down; the checkpoint report was not delivered (kept for the next start)");
                return false;
            }
            Delivery::Retry(e) => {
                if streak.fail() {
                    warn!(error = %e, "cannot deliver the checkpoint report; retrying until the hub takes it");
                }
            }
        }
        tokio::select! {
            () = shared.stopping.cancelled() => last_attempt = true,
            () = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}

/// One attempt at a checkpoint report.
async fn attempt(shared: &Shared, id: &str, report: &CheckpointReport) -> Delivery {
    let client = shared.session.client();
    let result = shared
        .session
        .call(|token| async move { client.report_checkpoint(&token, id, report).await })
        .await;
    let delivery = settle(result, report);
    if delivery == Delivery::Taken {
        info!(
            seq = report.seq,
            step = report.step,
            uri = %report.uri,
            "checkpoint delivered to the hub"
        );
    }
    delivery
}

/// What the hub's answer to `report` means for the agent.
fn settle(result: Result<(), ClientError>, report: &CheckpointReport) -> Delivery {
    match result {
        Ok(()) => Delivery::Taken,
        Err(ClientError::Conflict { code, message }) if code == STALE_REPORT => {
            debug!(%message, seq = report.seq, "the hub already has this checkpoint report or a newer report");
            Delivery::Taken
        }
        Err(ClientError::Conflict { message, .. }) => {
            info!(%message, step = report.step, "the assignment is over at the hub; checkpoint dropped");
            Delivery::Refused
        }
        Err(ClientError::NotFound { message }) => {
            warn!(%message, step = report.step, "the hub does not know this assignment; checkpoint dropped");
            Delivery::Refused
        }
        Err(e @ ClientError::Rejected { .. }) => {
            error!(error = %e, step = report.step, "the hub refused the checkpoint report; dropped");
            Delivery::Refused
        }
        Err(e @ (ClientError::Transient(_) | ClientError::Unauthorized)) => Delivery::Retry(e),
    }
}

/// Removes acknowledged (or superseded) checkpoint records from the outbox.
fn remove_all(shared: &Shared, records: Vec<Record>) {
    for record in records {
        if let Err(e) = shared.state.outbox().remove(&record) {
            // Delivered again at the next start, which the hub answers `409 stale_report`.
            warn!(error = %e, "cannot remove a checkpoint report from the outbox");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_transient_failures_are_retried_and_a_stale_report_counts_as_taken() {
        let report = CheckpointReport {
            seq: 3,
            uri: "s3://b/step-1".into(),
            step: 1,
        };
        let conflict = |code: &str| {
            Err(ClientError::Conflict {
                code: code.into(),
                message: "…".into(),
            })
        };
        assert_eq!(settle(Ok(()), &report), Delivery::Taken);
        assert_eq!(settle(conflict(STALE_REPORT), &report), Delivery::Taken);
        assert_eq!(
            settle(conflict("assignment_final"), &report),
            Delivery::Refused
        );
        let not_found = Err(ClientError::NotFound {
            message: "no such assignment".into(),
        });
        assert_eq!(settle(not_found, &report), Delivery::Refused);
        let refused = Err(ClientError::Rejected {
            status: 400,
            code: "invalid_field".into(),
            message: "uri".into(),
            field: Some("uri".into()),
        });
        assert_eq!(settle(refused, &report), Delivery::Refused);
        let lost = ClientError::Transient("connection reset".into());
        assert_eq!(settle(Err(lost.clone()), &report), Delivery::Retry(lost));
        assert_eq!(
            settle(Err(ClientError::Unauthorized), &report),
            Delivery::Retry(ClientError::Unauthorized)
        );
    }
}
