//! The assignments the agent holds: started, and not yet acknowledged by the hub as ended.
//!
//! Three activities share it: the long-poll starts assignments here, heartbeats report every held
//! assignment's state (so the hub knows about work whose status reports were lost), and heartbeat
//! `stop` lists cancel them. An assignment leaves only once the hub acknowledged its final report;
//! its id is then remembered for a while, because the long-poll returns every non-final assignment
//! and an answer computed just before that acknowledgement must not start the work a second time.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{Mutex, MutexGuard, PoisonError},
};

use crds::agent::{AssignmentState, WorkerState};
use tokio_util::sync::CancellationToken;

/// How many ended assignment ids are remembered; far more than can be in flight in one poll answer.
const REMEMBERED_ENDED: usize = 10_000;

/// The held assignments, safe to share between tasks. The lock is never held across an `.await`.
#[derive(Debug, Default)]
pub(super) struct Held {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    active: HashMap<String, Entry>,
    ended: HashSet<String>,
    ended_order: VecDeque<String>,
}

#[derive(Debug)]
struct Entry {
    state: WorkerState,
    stop: CancellationToken,
}

impl Held {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere while holding the lock leaves the map consistent (each operation is one
        // map update), so keep going rather than take the agent down.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes on an assignment in state `Starting` with the token that stops its worker; false when
    /// it is already held or has ended (then the caller must not start it).
    pub(super) fn claim(&self, id: &str, stop: CancellationToken) -> bool {
        let mut inner = self.lock();
        if inner.active.contains_key(id) || inner.ended.contains(id) {
            return false;
        }
        inner.active.insert(
            id.to_string(),
            Entry {
                state: WorkerState::Starting,
                stop,
            },
        );
        true
    }

    /// Records the worker's state, for the next heartbeat.
    pub(super) fn set_state(&self, id: &str, state: WorkerState) {
        if let Some(entry) = self.lock().active.get_mut(id) {
            entry.state = state;
        }
    }

    /// Every held assignment and its state, sorted by id.
    pub(super) fn states(&self) -> Vec<AssignmentState> {
        let mut states: Vec<_> = self
            .lock()
            .active
            .iter()
            .map(|(id, entry)| AssignmentState {
                id: id.clone(),
                state: entry.state,
            })
            .collect();
        states.sort_by(|a, b| a.id.cmp(&b.id));
        states
    }

    /// Whether a held assignment has not ended: its GPUs are in use (the benchmark waits).
    pub(super) fn is_busy(&self) -> bool {
        self.lock().active.values().any(|e| !e.state.is_final())
    }

    /// Asks the worker of a held assignment that has not ended to stop; true when it did.
    pub(super) fn stop(&self, id: &str) -> bool {
        match self.lock().active.get(id) {
            Some(entry) if !entry.state.is_final() && !entry.stop.is_cancelled() => {
                entry.stop.cancel();
                true
            }
            _ => false,
        }
    }

    /// Lets go of an assignment whose end the hub acknowledged (or that it no longer knows).
    pub(super) fn release(&self, id: &str) {
        let mut inner = self.lock();
        inner.active.remove(id);
        if inner.ended.insert(id.to_string()) {
            inner.ended_order.push_back(id.to_string());
            while inner.ended_order.len() > REMEMBERED_ENDED {
                if let Some(oldest) = inner.ended_order.pop_front() {
                    inner.ended.remove(&oldest);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(id: &str, state: WorkerState) -> AssignmentState {
        AssignmentState {
            id: id.into(),
            state,
        }
    }

    #[test]
    fn an_assignment_is_started_once() {
        let held = Held::default();
        assert!(held.claim("asg-1", CancellationToken::new()));
        assert!(!held.claim("asg-1", CancellationToken::new()), "held");
        held.release("asg-1");
        assert!(!held.claim("asg-1", CancellationToken::new()), "ended");
        assert!(held.states().is_empty());
    }

    #[test]
    fn heartbeats_see_every_held_state() {
        let held = Held::default();
        held.claim("asg-2", CancellationToken::new());
        held.claim("asg-1", CancellationToken::new());
        held.set_state("asg-1", WorkerState::Running);
        held.set_state("asg-unknown", WorkerState::Running);
        assert_eq!(
            held.states(),
            [
                state("asg-1", WorkerState::Running),
                state("asg-2", WorkerState::Starting)
            ]
        );
        held.set_state("asg-1", WorkerState::Succeeded);
        held.release("asg-2");
        assert_eq!(held.states(), [state("asg-1", WorkerState::Succeeded)]);
    }

    #[test]
    fn stop_cancels_only_unfinished_work() {
        let held = Held::default();
        let running = CancellationToken::new();
        let ended = CancellationToken::new();
        held.claim("asg-1", running.clone());
        held.claim("asg-2", ended.clone());
        held.set_state("asg-2", WorkerState::Succeeded);
        assert!(held.stop("asg-1"));
        assert!(running.is_cancelled());
        assert!(!held.stop("asg-1"), "already stopping");
        assert!(!held.stop("asg-2"));
        assert!(
            !ended.is_cancelled(),
            "an outcome awaiting acknowledgement is kept"
        );
        assert!(!held.stop("asg-unknown"));
    }

    #[test]
    fn forgets_the_oldest_ended_ids() {
        let held = Held::default();
        for i in 0..=REMEMBERED_ENDED {
            held.release(&format!("asg-{i}"));
        }
        assert!(held.claim("asg-0", CancellationToken::new()), "forgotten");
        assert!(!held.claim("asg-1", CancellationToken::new()), "remembered");
    }
}
