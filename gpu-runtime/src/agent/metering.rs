//! Sends a running worker's usage receipts ([`crate::receipts`]): one every `receipt_interval`
//! while it runs, and a final one when it ends.
//!
//! Each receipt is written to the outbox before it is sent. Receipts are cumulative, so once the
//! hub acknowledges one, every earlier receipt of the assignment still in the outbox is superseded
//! and removed with it; a periodic receipt the hub did not take (it is away) simply waits for the
//! next. The final receipt is written before the final status report and delivered just before it
//! ([`deliver_pending`]), retried until the hub takes it; both still undelivered at shutdown stay
//! in the outbox, in that order, for the next start ([`deliver_kept`]).

use std::future::Future;

use crds::agent::{Assignment, ReceiptReport};
use tokio::time::{Duration, Instant, MissedTickBehavior};
use tracing::{debug, error, info, warn};

use super::Shared;
use crate::{
    backoff::{Backoff, FailureStreak},
    client::ClientError,
    executor::Outcome,
    outbox::Record,
    receipts::{self, Meter},
};

/// The hub's answer to a receipt older than the one it keeps.
const STALE_RECEIPT: &str = "stale_receipt";

/// Runs `work` (the worker), sending its receipts meanwhile; once it ended, writes its final
/// receipt to the outbox and returns the receipts still to deliver with the outcome. A hub that
/// sent no price for the assignment (older than receipts) gets none.
pub(super) async fn metered(
    shared: &Shared,
    assignment: &Assignment,
    work: impl Future<Output = Outcome>,
) -> (Outcome, Vec<Record>) {
    let session = &shared.session;
    let Some(meter) = Meter::new(
        session.network(),
        session.node(),
        assignment,
        receipts::now_ms(),
    ) else {
        debug!("the hub sent no price for this assignment; no usage receipts");
        return (work.await, Vec::new());
    };
    let mut pending = Vec::new();
    tokio::pin!(work);
    let period = shared.receipt_interval;
    let mut ticks = tokio::time::interval_at(Instant::now() + period, period);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let outcome = loop {
        tokio::select! {
            outcome = &mut work => break outcome,
            _ = ticks.tick() => {
                issue(shared, &meter, &mut pending);
                send(shared, &mut pending, false).await;
            }
        }
    };
    issue(shared, &meter, &mut pending);
    (outcome, pending)
}

/// Delivers the latest of `pending` (the final receipt) until the hub takes it: true once it did
/// (or refused it for good), false when the agent is shutting down first (they stay on disk).
pub(super) async fn deliver_pending(shared: &Shared, mut pending: Vec<Record>) -> bool {
    send(shared, &mut pending, true).await;
    pending.is_empty()
}

/// Makes, signs and queues the receipt up to now.
fn issue(shared: &Shared, meter: &Meter, pending: &mut Vec<Record>) {
    let state = &shared.state;
    match meter.issue(
        shared.session.identity(),
        state.started(),
        state.outbox(),
        receipts::now_ms(),
    ) {
        Ok(record) => pending.push(record),
        // The next one covers this one's time too.
        Err(e) => error!(error = %e, "cannot write a usage receipt to the outbox"),
    }
}

/// Sends the latest of `pending`: once, or (`until_taken`) until the hub takes it or the agent is
/// shutting down. What the hub took or refused leaves the outbox together with every earlier
/// receipt it supersedes.
async fn send(shared: &Shared, pending: &mut Vec<Record>, until_taken: bool) {
    let Some(latest) = pending.last() else {
        return;
    };
    let Ok(report) = serde_json::from_value::<ReceiptReport>(latest.body.clone()) else {
        error!(
            number = latest.number,
            "an outbox receipt this agent cannot read; dropped"
        );
        remove_all(shared, pending);
        return;
    };
    if deliver(shared, &latest.assignment.clone(), &report, until_taken).await {
        remove_all(shared, pending);
    }
}

/// Delivers a receipt a previous run of the agent left in the outbox (see [`super::worker`]'s
/// redelivery): true once the hub took or refused it, false when the agent is shutting down first.
pub(super) async fn deliver_kept(shared: &Shared, record: &Record) -> bool {
    match serde_json::from_value::<ReceiptReport>(record.body.clone()) {
        Ok(report) => deliver(shared, &record.assignment, &report, true).await,
        Err(e) => {
            error!(number = record.number, error = %e, "an outbox receipt this agent cannot read; dropped");
            true
        }
    }
}

/// Sends `report`: true when the hub took it (or has a newer one) or refused it for good.
async fn deliver(shared: &Shared, id: &str, report: &ReceiptReport, until_taken: bool) -> bool {
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
    let mut streak = FailureStreak::default();
    let mut last_attempt = !until_taken || shared.stopping.is_cancelled();
    loop {
        let client = shared.session.client();
        let result = shared
            .session
            .call(|token| async move { client.send_receipt(&token, id, report).await })
            .await;
        match settle(result) {
            Some(taken) => {
                if taken {
                    debug!(
                        sequence = report.receipt.sequence,
                        gpu_millis = report.receipt.gpu_millis,
                        "usage receipt delivered"
                    );
                }
                if let Some(failures) = streak.succeed() {
                    info!(failures, "usage receipt delivered after retries");
                }
                return true;
            }
            None if last_attempt => {
                debug!(
                    sequence = report.receipt.sequence,
                    "usage receipt not delivered; kept for later"
                );
                return false;
            }
            None => {
                if streak.fail() {
                    warn!(
                        "cannot deliver the final usage receipt; retrying until the hub takes it"
                    );
                }
            }
        }
        tokio::select! {
            () = shared.stopping.cancelled() => last_attempt = true,
            () = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}

/// What the hub's answer means: `Some(true)` taken (or it has a newer receipt), `Some(false)`
/// refused for good (retrying the same receipt cannot help), `None` try again later.
fn settle(result: Result<(), ClientError>) -> Option<bool> {
    match result {
        Ok(()) => Some(true),
        Err(ClientError::Conflict { code, .. }) if code == STALE_RECEIPT => Some(true),
        Err(ClientError::Transient(_)) => None,
        // A 401 that survived registering again is the hub refusing the receipt's signature.
        Err(ClientError::Unauthorized) => {
            error!("the hub refused the usage receipt's signature; dropped");
            Some(false)
        }
        Err(e) => {
            error!(error = %e, "the hub refused the usage receipt; dropped");
            Some(false)
        }
    }
}

/// Removes `records` from the outbox: the hub has the latest of them, which supersedes the rest.
fn remove_all(shared: &Shared, records: &mut Vec<Record>) {
    for record in records.drain(..) {
        if let Err(e) = shared.state.outbox().remove(&record) {
            // Delivered again at the next start, which the hub answers `409 stale_receipt`.
            warn!(error = %e, "cannot remove a delivered usage receipt from the outbox");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_receipt_counts_as_taken_and_only_transient_failures_are_retried() {
        let conflict = |code: &str| {
            Err(ClientError::Conflict {
                code: code.into(),
                message: "…".into(),
            })
        };
        assert_eq!(settle(Ok(())), Some(true));
        assert_eq!(settle(conflict(STALE_RECEIPT)), Some(true));
        assert_eq!(settle(conflict("receipt_mismatch")), Some(false));
        assert_eq!(settle(Err(ClientError::Transient("reset".into()))), None);
    }
}
