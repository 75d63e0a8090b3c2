//! The liveness loop: acts on what the hub can only learn from silence and the clock.
//!
//! Readiness is derived from each node's last heartbeat, so a silent node stops getting new work at
//! once; but the work it already holds would wait forever for reports that never come. Each sweep
//! therefore marks the live assignments of every node silent for longer than the node timeout
//! `Lost` (their GPUs are released) and fails their attempts with reason `NodeLost`, so jobs retry
//! on other nodes while attempts remain. It also fails Running jobs that exceeded their
//! `maxRuntime` (reason `DeadlineExceeded`): the agent enforces the limit too, but a hub cannot rely
//! on agents it does not control, and a lost agent enforces nothing.
//!
//! Every change is a compare-and-set in the store, so several hub replicas may sweep at once, and a
//! node that heartbeats again before its sweep keeps its work. A hub process counts silence only
//! from its own start: after an outage of the hub, agents get one node timeout to reconnect before
//! any of their work is declared lost, so a hub restart never fails running jobs.

use std::time::Duration;

use crate::{
    leader::Leadership,
    state::AppState,
    store::{Fence, StoreError, now_ms},
};

/// Most overdue jobs handled in one sweep; the next sweep takes the rest.
const DEADLINE_BATCH: u32 = 256;

/// What one sweep did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sweep {
    /// Assignments marked Lost.
    pub lost: usize,
    /// Jobs failed for exceeding their maxRuntime.
    pub expired: usize,
}

/// How often the loop sweeps: a few times per node timeout, so a lost node's work is noticed
/// within about 1.25 timeouts, but never busier than every 50 ms nor lazier than every 5 s.
pub fn interval(node_timeout: Duration) -> Duration {
    (node_timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(5))
}

/// Sweeps until shutdown, while this replica leads (see [`crate::leader`]); returns once the lease
/// is released, so the hub closes its store after.
pub async fn run(state: AppState, mut leadership: Leadership) {
    let mut shutdown = state.shutdown.clone();
    let every = interval(state.settings.node_timeout);
    loop {
        if *shutdown.borrow() {
            break;
        }
        match sweep_if_leader(&state, &leadership).await {
            Ok(Some(sweep)) if sweep != Sweep::default() => {
                tracing::debug!(?sweep, "liveness sweep")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "liveness sweep failed; retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => {}
            () = leadership.changed() => {}
        }
    }
    leadership.stopped().await;
}

/// One sweep if this replica leads now, with lost workers fenced by the lease's epoch; `None`,
/// doing nothing, if it does not lead.
pub async fn sweep_if_leader(
    state: &AppState,
    leadership: &Leadership,
) -> Result<Option<Sweep>, StoreError> {
    let Some(fence) = leadership.fence() else {
        return Ok(None);
    };
    sweep_fenced(state, Some(&fence)).await.map(Some)
}

/// One sweep, unfenced (a lone hub, tests): loses the work of silent nodes and fails overdue jobs.
pub async fn sweep_once(state: &AppState) -> Result<Sweep, StoreError> {
    sweep_fenced(state, None).await
}

/// One sweep whose lost workers are marked only under `fence` (always, without one). Expiring
/// overdue jobs is not fenced: it is a compare-and-set on a deadline that has passed, right
/// whoever does it.
pub async fn sweep_fenced(state: &AppState, fence: Option<&Fence>) -> Result<Sweep, StoreError> {
    let now = now_ms();
    let timeout = state.settings.node_timeout;
    let cutoff = now.saturating_sub(i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX));
    let silence = describe(timeout);
    let mut sweep = Sweep::default();
    // A node with several jobs appears once per job; the metric counts nodes.
    let mut lost_nodes = std::collections::BTreeSet::new();
    // A hub that was itself away (a restart, an outage) heard nothing meanwhile: silence counts
    // only from when this process started, so after a restart every node gets one node timeout
    // to reach the hub again before its work is declared lost.
    let heard_long_enough = state.started_ms <= cutoff;
    let silent = if heard_long_enough {
        state.store.work_on_silent_nodes(cutoff).await?
    } else {
        Vec::new()
    };
    for (node, job) in silent {
        let lost = state
            .store
            .lose_assignments_fenced(&node, &job, cutoff, &silence, fence)
            .await?;
        if !lost.is_empty() {
            tracing::warn!(%node, %job, assignments = ?lost, "node lost: no heartbeat for more than {silence}");
            sweep.lost += lost.len();
            state.metrics.assignments_lost.inc_by(lost.len() as u64);
            if lost_nodes.insert(node) {
                state.metrics.nodes_lost.inc();
            }
        }
    }
    for job in state.store.overdue_jobs(now, DEADLINE_BATCH).await? {
        if state.store.expire_job(&job, now).await? {
            tracing::info!(%job, "job exceeded its maxRuntime; failed and its workers stopped");
            sweep.expired += 1;
        }
    }
    if sweep != Sweep::default() {
        // GPUs were freed and jobs may be Pending again; workers to stop show in heartbeats.
        state.fleet_changed();
    }
    Ok(sweep)
}

/// A timeout for messages: whole seconds when it is, milliseconds otherwise.
fn describe(timeout: Duration) -> String {
    if timeout.subsec_millis() == 0 {
        format!("{} s", timeout.as_secs())
    } else {
        format!("{} ms", timeout.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweeps_a_few_times_per_timeout_within_bounds() {
        assert_eq!(interval(Duration::from_secs(20)), Duration::from_secs(5));
        assert_eq!(interval(Duration::from_secs(8)), Duration::from_secs(2));
        assert_eq!(
            interval(Duration::from_millis(100)),
            Duration::from_millis(50)
        );
        assert_eq!(interval(Duration::from_secs(600)), Duration::from_secs(5));
    }

    #[test]
    fn timeouts_read_naturally() {
        assert_eq!(describe(Duration::from_secs(20)), "20 s");
        assert_eq!(describe(Duration::from_millis(300)), "300 ms");
    }
}
