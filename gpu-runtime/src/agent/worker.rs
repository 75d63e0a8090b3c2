//! The life of one assignment on this node: record it as started, report it running, run it, and
//! make sure the hub learns how it ended.
//!
//! Nothing a worker finished may be lost, not even across an agent restart: the final report is
//! written to the [`Outbox`] (on disk, fsync'd) before it is sent, retried (with backoff) until the
//! hub acknowledges it, and only then removed; the assignment stays held meanwhile, so heartbeats
//! keep carrying its final state. A restarted agent delivers what its outbox holds
//! ([`redeliver`]) before anything else.
//!
//! Nor may a worker run twice: every assignment is recorded as started ([`Started`]) before its
//! work starts. One that the hub sends again to a restarted agent, which had started it before the
//! restart, is not run again but reported `Failed` ([`RESTARTED`]), so the hub retries the job
//! elsewhere or fails it by its retry policy; whatever is left of the old worker is killed.
//!
//! The checkpoints the worker reports meanwhile go to the hub the same way ([`super::checkpoints`]),
//! the last of them before the final report.
//!
//! Each report carries its number on the assignment (`seq`), recorded on disk before it is used, so
//! numbering continues across restarts; a retry repeats the number, so the hub applies a report
//! once, and a retry of one whose answer was lost (the hub has it) is answered `409 stale_report`,
//! which ends the retries like an acknowledgement.

use std::{path::Path, sync::Arc};

use crds::{
    agent::{Assignment, STALE_REPORT, StatusReport, WorkerState},
    v1alpha1::GpuDevice,
};
use tokio::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, info_span, warn};

use super::Shared;
use crate::{
    backoff::{Backoff, FailureStreak},
    client::ClientError,
    executor::{CheckpointSink, ExecutorKind, Executors, Outcome, WorkerId},
    outbox::{self, Outbox, Record, Started},
};

/// The final report's message for an assignment a previous run of the agent started.
pub const RESTARTED: &str = "the agent restarted while running it";

/// What workers need beyond the hub: the node's executors and GPUs, and the on-disk state.
pub(super) struct State {
    executors: Executors,
    gpus: Vec<GpuDevice>,
    outbox: Outbox,
    started: Started,
}

impl State {
    /// Opens (creating, mode 0700) node `node`'s part of the state directory `dir` and returns
    /// the reports a previous run of the agent left undelivered, in delivery order.
    ///
    /// Each node name has its own subdirectory, so agents of different nodes started in the same
    /// directory with the default `--state-dir` never take each other's reports or assignments
    /// for their own.
    pub(super) fn open(
        dir: &Path,
        node: &str,
        executors: &[ExecutorKind],
        kubernetes: Option<crate::executor::kubernetes::Executor>,
        gpus: Vec<GpuDevice>,
    ) -> anyhow::Result<(Self, Vec<Record>)> {
        outbox::check_id(node).map_err(|_| {
            anyhow::anyhow!("node name {node:?} cannot name a directory in the state directory")
        })?;
        outbox::create_private_dir(dir)?;
        let dir = &dir.join(node);
        outbox::create_private_dir(dir)?;
        let (outbox, pending) = Outbox::open(&dir.join("outbox"))?;
        let started = Started::open(&dir.join("started"))?;
        let work = dir.join("work");
        outbox::create_private_dir(&work)?;
        let state = Self {
            executors: Executors::new(executors, work).with_kubernetes(kubernetes),
            gpus,
            outbox,
            started,
        };
        Ok((state, pending))
    }

    /// The assignments started and not yet over for the hub, with their report numbers.
    pub(super) fn started(&self) -> &Started {
        &self.started
    }

    /// The reports and receipts waiting for the hub.
    pub(super) fn outbox(&self) -> &Outbox {
        &self.outbox
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
    let state = &shared.state;
    if state.started.started_before(id) {
        warn!("a previous run of the agent started this assignment; not running it again");
        state
            .executors
            .clean_up_after_restart(id, &WorkerId::of(&assignment))
            .await;
        end(&shared, id, Outcome::failed(RESTARTED), Vec::new(), None).await;
        return;
    }
    info!(
        workload = %assignment.workload.capability(),
        gpus = assignment.gpus.len(),
        attempt = assignment.attempt,
        resume_from = resume_from.unwrap_or("-"),
        "starting"
    );
    // Recorded before anything of the work starts: a restart must find it.
    let running_seq = match state
        .started
        .record(id, WorkerId::of(&assignment))
        .and_then(|()| state.started.next_seq(id))
    {
        Ok(seq) => seq,
        Err(e) => {
            error!(error = %e, "cannot record the assignment in the state directory; not running it");
            let outcome = Outcome::failed(format!(
                "the node agent cannot record the assignment in its state directory: {e:#}"
            ));
            shared.held.set_state(id, outcome.state);
            // Nothing was reported on it before (it was never recorded), so 1 is its first number.
            report_final(&shared, id, &outcome.to_report(1)).await;
            shared.held.release(id);
            return;
        }
    };
    shared.held.set_state(id, WorkerState::Running);

    // The Running report goes first, so the hub's start time (what usage is metered from) is never
    // later than the work's; one attempt only, as heartbeats carry the state should it fail. A hub
    // that answers that the assignment is over or unknown gets no work done at all.
    let running = StatusReport {
        seq: running_seq,
        state: WorkerState::Running,
        exit_code: None,
        message: None,
        result: None,
    };
    if let Delivery::AlreadyFinal | Delivery::Dropped = deliver(&shared, id, &running).await {
        info!("the hub no longer wants this assignment; dropped");
        forget(&shared, id);
        return;
    }
    let (sink, checkpoints) = CheckpointSink::channel();
    let work = state.executors.run(&assignment, &state.gpus, &stop, &sink);
    let work = crate::cheat::or_honest(shared.cheat, &assignment, &stop, work);
    let work = super::metering::metered(&shared, &assignment, work);
    let ((outcome, receipts), checkpoint) =
        super::checkpoints::alongside(&shared, id, checkpoints, work).await;
    let outcome = sign_result(&shared, id, explain_stop(outcome, &shared.stopping));
    end(&shared, id, outcome, receipts, checkpoint).await;
}

/// Signs the result's output digest with the node's key for the hub's network and assignment `id`
/// ([`crds::agent::result_message`]), so the report is the node's evidence of what it claimed.
fn sign_result(shared: &Shared, id: &str, mut outcome: Outcome) -> Outcome {
    if let Some(result) = &mut outcome.result
        && let Some(digest) = &result.output_digest
    {
        match <[u8; 32]>::try_from(hex::decode(digest).unwrap_or_default()) {
            Ok(digest) => {
                let identity = shared.session.identity();
                let network = shared.session.network();
                result.signature = Some(identity.sign_result(network, id, &digest));
            }
            // Made by this agent from a SHA-256 digest; never happens.
            Err(_) => error!(%digest, "an output digest that is not 32 bytes; sent unsigned"),
        }
    }
    outcome
}

/// Reports how `id` ended: written to the outbox, then delivered until acknowledged, after the
/// worker's last `checkpoint` and final usage `receipts` (already in the outbox): the hub takes no
/// checkpoint once the assignment is over. Once the hub has it, the assignment is forgotten; a
/// report still undelivered at shutdown stays in the outbox, and so does the assignment's started
/// record.
async fn end(
    shared: &Shared,
    id: &str,
    outcome: Outcome,
    receipts: Vec<Record>,
    checkpoint: Option<super::checkpoints::Pending>,
) {
    shared.held.set_state(id, outcome.state);
    match outcome.state {
        WorkerState::Succeeded => info!("succeeded"),
        _ => {
            info!(state = ?outcome.state, message = outcome.message.as_deref().unwrap_or(""), "ended")
        }
    }
    let state = &shared.state;
    let stored = state.started.next_seq(id).and_then(|seq| {
        let report = outcome.to_report(seq);
        Ok((state.outbox.push(id, seq, outbox::STATUS, &report)?, report))
    });
    match stored {
        Ok((record, report)) => {
            if !super::checkpoints::deliver_final(shared, checkpoint).await
                || !super::metering::deliver_pending(shared, receipts).await
            {
                // Shutting down: they all stay in the outbox for the next start.
                return;
            }
            if report_final(shared, id, &report).await {
                remove(shared, &record);
                forget(shared, id);
            }
        }
        Err(e) => {
            // The report still goes out, only without surviving a restart; numbered above any
            // report this agent makes on an assignment, so the hub does not take it for a replay.
            error!(error = %e, "cannot write the final report to the outbox; sending it without");
            let report = outcome.to_report(u64::from(u32::MAX));
            super::checkpoints::deliver_final(shared, checkpoint).await;
            super::metering::deliver_pending(shared, receipts).await;
            if report_final(shared, id, &report).await {
                forget(shared, id);
            }
        }
    }
}

/// Delivers the reports a previous run of the agent left in the outbox, each assignment's in
/// order, in the background; their assignments are held meanwhile (in the state of their last
/// report), so the long-poll does not start them and heartbeats carry their state.
///
/// First, every assignment the previous run started and did not see end gets its final report:
/// `Failed` ([`RESTARTED`]), after what is left of its worker is killed. Its work is lost with the
/// agent, and the hub learns at once rather than from a heartbeat that leaves it out.
pub(super) async fn redeliver(shared: &Arc<Shared>, mut records: Vec<Record>) {
    let state = &shared.state;
    for (id, worker) in state.started.previous() {
        if records
            .iter()
            .any(|r| r.assignment == id && r.kind == outbox::STATUS)
        {
            // It ended before the restart; its final report is in the outbox.
            continue;
        }
        warn!(assignment = %id, job = %worker.job, "the agent restarted while running this assignment; reporting it failed");
        state.executors.clean_up_after_restart(&id, &worker).await;
        let outcome = Outcome::failed(RESTARTED);
        let stored = state.started.next_seq(&id).and_then(|seq| {
            state
                .outbox
                .push(&id, seq, outbox::STATUS, &outcome.to_report(seq))
        });
        match stored {
            Ok(record) => records.push(record),
            // Reported when the hub sends the assignment again (`run`), or failed by the hub
            // when heartbeats leave it out.
            Err(e) => {
                error!(assignment = %id, error = %e, "cannot write the restart's report to the outbox")
            }
        }
    }
    let mut by_assignment: Vec<(String, Vec<Record>)> = Vec::new();
    for record in records {
        match by_assignment
            .iter_mut()
            .find(|(id, _)| *id == record.assignment)
        {
            Some((_, list)) => list.push(record),
            None => by_assignment.push((record.assignment.clone(), vec![record])),
        }
    }
    for (id, records) in by_assignment {
        if !shared.held.claim(&id, shared.stopping.child_token()) {
            continue;
        }
        let last_state = records
            .last()
            .and_then(|r| serde_json::from_value::<StatusReport>(r.body.clone()).ok())
            .map(|r| r.state);
        if let Some(state) = last_state {
            shared.held.set_state(&id, state);
        }
        info!(assignment = %id, reports = records.len(), "delivering reports kept from before a restart");
        let shared = Arc::clone(shared);
        let span = info_span!("assignment", id = %id);
        tokio::spawn(redeliver_one(shared, id, records).instrument(span));
    }
}

/// Delivers one assignment's kept reports in order, then lets go of the assignment.
async fn redeliver_one(shared: Arc<Shared>, id: String, records: Vec<Record>) {
    for record in &records {
        let parsed = serde_json::from_value::<StatusReport>(record.body.clone());
        let report = match (record.kind.as_str(), parsed) {
            (outbox::STATUS, Ok(report)) => report,
            (crate::receipts::KIND, _) => {
                if !super::metering::deliver_kept(&shared, record).await {
                    return;
                }
                remove(&shared, record);
                continue;
            }
            (outbox::CHECKPOINT, _) => {
                if !super::checkpoints::deliver_kept(&shared, record).await {
                    return;
                }
                remove(&shared, record);
                continue;
            }
            (kind, parsed) => {
                error!(kind, number = record.number, error = ?parsed.err(), "an outbox record this agent cannot send; dropped");
                remove(&shared, record);
                continue;
            }
        };
        if !report_final(&shared, &id, &report).await {
            // Shutting down: the rest stays on disk for the next start.
            return;
        }
        remove(&shared, record);
    }
    forget(&shared, &id);
}

/// Removes an acknowledged record from the outbox.
fn remove(shared: &Shared, record: &Record) {
    if let Err(e) = shared.state.outbox.remove(record) {
        // Delivered again at the next start, which the hub answers `409`: harmless.
        warn!(error = %e, "cannot remove a delivered report from the outbox");
    }
}

/// Lets go of an assignment that is over for the hub.
fn forget(shared: &Shared, id: &str) {
    if let Err(e) = shared.state.started.finish(id) {
        warn!(error = %e, "cannot remove the assignment's started record");
    }
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

/// Delivers a final report: retried until acknowledged (true), except that once the agent is
/// shutting down one more attempt is all it gets (false when that fails too).
async fn report_final(shared: &Shared, id: &str, report: &StatusReport) -> bool {
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
    let mut streak = FailureStreak::default();
    let mut last_attempt = shared.stopping.is_cancelled();
    loop {
        match deliver(shared, id, report).await {
            Delivery::Acknowledged | Delivery::AlreadyFinal | Delivery::Dropped => {
                if let Some(failures) = streak.succeed() {
                    info!(failures, "final report delivered after retries");
                }
                return true;
            }
            Delivery::Retry(e) if last_attempt => {
                warn!(error = %e, state = ?report.state, "shutting down; the final report was not delivered (kept for the next start)");
                return false;
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
