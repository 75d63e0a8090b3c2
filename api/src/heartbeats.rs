//! The heartbeat path, kept off the database in the steady state.
//!
//! A fleet heartbeats all the time (50,000 nodes every 5 s is 10,000 heartbeats a second) and
//! almost every heartbeat says nothing new: the node is alive and holds what the hub thinks it
//! holds. Three reads and writes per heartbeat would make the database the limit of the fleet's
//! size, so each replica keeps, in memory:
//!
//! - **node tokens** it has checked, for [`TOKEN_TTL`]: a token superseded by a re-registration
//!   through this replica stops working at once, through another replica within the TTL;
//! - **heartbeat times**, written in one batched statement per [`AgentSessions::flush_every`]
//!   instead of one statement per heartbeat. The first heartbeat of a node this replica has not
//!   written for half the node timeout is written at once, so a node coming back from silence is
//!   Ready again before its heartbeat is answered, and no buffered time can be old enough to make
//!   the liveness loop think a live node silent;
//! - **the fleet's live assignments**, re-read in one query every `flush_every`. A heartbeat whose
//!   held assignments agree with that view is answered from it (the ids to stop are the ones the
//!   view says are being stopped); any disagreement — an assignment the view does not know (placed
//!   since the last read), or one the agent no longer holds — goes to the store, which settles it
//!   against the database's truth. So the view can delay a stop by at most one refresh, and can
//!   never stop or settle anything on its own.
//!
//! The same view wakes agents' long-polls for new work placed by another replica (the leader): a
//! node with an assignment the previous read did not have is woken after the read, so an agent
//! connected to any replica learns of its work within one flush interval; placements this replica
//! writes wake their nodes at once. Only the nodes concerned are woken — a placement costs one
//! query from one agent, not one from every agent waiting.
//!
//! Network measurements and telemetry ride the same path ([`crate::network`]): buffered in
//! memory, measurements written by the same flush in batched upserts, probe targets chosen from a
//! snapshot of the live nodes re-read here every few seconds.
//!
//! A crash loses at most one flush interval of heartbeat times and measurements: observations,
//! not acknowledged state. Everything an agent reports that changes state (inventory, status, checkpoints) is
//! written before it is answered.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant},
};

use crds::v1alpha1::GpuDevice;
use tokio::sync::watch;

use crate::{
    lifecycle::AssignmentPhase,
    network::NetworkState,
    state::{AppState, HubSettings},
    store::{LiveAssignment, Result, Store, hash_secret, now_ms},
};

/// How long a checked node token is trusted without asking the database again.
pub const TOKEN_TTL: Duration = Duration::from_secs(5);

/// A replica's memory of the agents it serves. Cheap to share; every method takes `&self`.
pub struct AgentSessions {
    tokens: Mutex<HashMap<String, (String, Instant)>>,
    seen: Mutex<Seen>,
    live: RwLock<Option<Arc<LiveView>>>,
    /// Per node with a long-poll waiting here: bumped when work for it arrives.
    work: Mutex<HashMap<String, watch::Sender<u64>>>,
    flush_every: Duration,
    write_through_after_ms: i64,
    /// The agents' network measurements and telemetry, and whom each should probe.
    pub network: NetworkState,
}

#[derive(Default)]
struct Seen {
    /// Heartbeat times not yet written, by node.
    pending: HashMap<String, i64>,
    /// The last heartbeat time this replica wrote, by node.
    written: HashMap<String, i64>,
}

/// The fleet's live assignments by node, as last read.
#[derive(Default)]
struct LiveView {
    by_node: HashMap<String, Vec<LiveAssignment>>,
}

impl AgentSessions {
    pub fn new(settings: &HubSettings) -> Self {
        Self {
            tokens: Mutex::default(),
            seen: Mutex::default(),
            live: RwLock::default(),
            work: Mutex::default(),
            flush_every: flush_interval(settings.node_timeout),
            write_through_after_ms: (settings.node_timeout / 2).as_millis() as i64,
            network: NetworkState::new(settings),
        }
    }

    /// How often buffered heartbeat times are written and the live assignments re-read.
    pub fn flush_every(&self) -> Duration {
        self.flush_every
    }

    /// The node `token` was issued to, from memory when this replica checked it within
    /// [`TOKEN_TTL`]. Unknown tokens are not remembered: each costs a lookup, as it should.
    pub async fn node_for_token(&self, store: &Store, token: &str) -> Result<Option<String>> {
        let hash = hash_secret(token);
        if let Some((node, checked)) = lock(&self.tokens).get(&hash)
            && checked.elapsed() < TOKEN_TTL
        {
            return Ok(Some(node.clone()));
        }
        let node = store.node_for_token(&hash).await?;
        if let Some(node) = &node {
            lock(&self.tokens).insert(hash, (node.clone(), Instant::now()));
        }
        Ok(node)
    }

    /// Forgets the tokens of `node`: it registered again, and its old token must stop working.
    pub fn forget_node(&self, node: &str) {
        lock(&self.tokens).retain(|_, (name, _)| name != node);
    }

    /// Records that `node` was heard from now, with its new inventory when it sent one. An
    /// inventory, or the first sign of life after half a node timeout, is written before this
    /// returns (and the answer is true: the node may be back); otherwise the time waits for the
    /// next flush.
    pub async fn heartbeat(
        &self,
        store: &Store,
        node: &str,
        gpus: Option<&[GpuDevice]>,
    ) -> Result<bool> {
        let now = now_ms();
        let write_now = gpus.is_some() || {
            let mut seen = lock(&self.seen);
            let stale = seen
                .written
                .get(node)
                .is_none_or(|at| now - at >= self.write_through_after_ms);
            if !stale {
                seen.pending.insert(node.to_string(), now);
            }
            stale
        };
        if write_now {
            store.record_heartbeat(node, gpus).await?;
            let mut seen = lock(&self.seen);
            seen.pending.remove(node);
            seen.written.insert(node.to_string(), now);
        }
        Ok(write_now)
    }

    /// What an agent holding `held` must stop, and how many assignments were settled because it
    /// no longer holds them (see [`Store::reconcile_held`]): from the live view when the two
    /// agree, from the store otherwise.
    pub async fn reconcile(
        &self,
        store: &Store,
        node: &str,
        held: &[String],
        grace_ms: i64,
    ) -> Result<(Vec<String>, usize)> {
        let view = self.live.read().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(stop) = view.and_then(|view| view.agreed_stops(node, held, now_ms() - grace_ms))
        {
            return Ok((stop, 0));
        }
        store.reconcile_held(node, held, grace_ms).await
    }

    /// Writes buffered heartbeat times. A failed write keeps them for the next flush.
    pub async fn flush(&self, store: &Store) -> Result<()> {
        let mut batch: Vec<(String, i64)> = std::mem::take(&mut lock(&self.seen).pending)
            .into_iter()
            .collect();
        if batch.is_empty() {
            return Ok(());
        }
        match store.record_heartbeats(&mut batch).await {
            Ok(()) => {
                let mut seen = lock(&self.seen);
                for (node, at) in batch {
                    let written = seen.written.entry(node).or_insert(at);
                    *written = (*written).max(at);
                }
                Ok(())
            }
            Err(e) => {
                let mut seen = lock(&self.seen);
                for (node, at) in batch {
                    let pending = seen.pending.entry(node).or_insert(at);
                    *pending = (*pending).max(at);
                }
                Err(e)
            }
        }
    }

    /// What a long-poll of `node` waits on: it changes when work for the node arrives.
    pub fn watch_work(&self, node: &str) -> watch::Receiver<u64> {
        lock(&self.work)
            .entry(node.to_string())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    /// How many long-polls of `node` wait on this replica.
    pub fn waiting_polls(&self, node: &str) -> usize {
        lock(&self.work)
            .get(node)
            .map_or(0, watch::Sender::receiver_count)
    }

    /// Wakes the long-polls of `node`: work was placed on it.
    pub fn work_arrived(&self, node: &str) {
        if let Some(sender) = lock(&self.work).get(node) {
            sender.send_modify(|generation| *generation = generation.wrapping_add(1));
        }
    }

    /// Re-reads the fleet's live assignments, wakes the long-polls of nodes with new ones, and
    /// forgets tokens past their TTL and nodes nobody waits for.
    pub async fn refresh(&self, store: &Store) -> Result<()> {
        let mut by_node: HashMap<String, Vec<LiveAssignment>> = HashMap::new();
        for assignment in store.live_assignments().await? {
            by_node
                .entry(assignment.node_name.clone())
                .or_default()
                .push(assignment);
        }
        let view = Arc::new(LiveView { by_node });
        let previous = self
            .live
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .replace(view.clone());
        if let Some(previous) = previous {
            for node in view.nodes_with_new_work(&previous) {
                self.work_arrived(node);
            }
        }
        lock(&self.tokens).retain(|_, (_, checked)| checked.elapsed() < TOKEN_TTL);
        lock(&self.work).retain(|_, sender| sender.receiver_count() > 0);
        Ok(())
    }
}

impl LiveView {
    /// Nodes with an assignment waiting for its agent (Assigned) that `previous` did not have.
    fn nodes_with_new_work<'a>(&'a self, previous: &'a LiveView) -> impl Iterator<Item = &'a str> {
        self.by_node.iter().filter_map(move |(node, live)| {
            let before = previous.by_node.get(node);
            live.iter()
                .any(|a| {
                    a.state == AssignmentPhase::Assigned
                        && before.is_none_or(|b| !b.iter().any(|p| p.id == a.id))
                })
                .then_some(node.as_str())
        })
    }

    /// The ids to stop when the view agrees with what the agent holds — it knows every held id,
    /// and every live assignment of the node the agent does not hold is younger than the grace —
    /// or `None` when only the store can answer.
    fn agreed_stops(&self, node: &str, held: &[String], settle_before: i64) -> Option<Vec<String>> {
        let live = self
            .by_node
            .get(node)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let held_set: HashSet<&str> = held.iter().map(String::as_str).collect();
        let unsettled = live
            .iter()
            .any(|a| !held_set.contains(a.id.as_str()) && a.since < settle_before);
        if unsettled {
            return None;
        }
        held.iter()
            .map(|id| {
                live.iter()
                    .find(|a| a.id == *id)
                    .map(|a| (!a.state.is_active()).then(|| id.clone()))
            })
            .collect::<Option<Vec<_>>>()
            .map(|stops| stops.into_iter().flatten().collect())
    }
}

/// Flushes heartbeat times and network measurements and refreshes the live view every
/// [`AgentSessions::flush_every`] on every replica (each serves its own agents), and once more at
/// shutdown; re-reads the probe targets when they are due.
pub async fn run(state: AppState) {
    let sessions = state.sessions.clone();
    let mut shutdown = state.shutdown.clone();
    loop {
        if let Err(e) = sessions.flush(&state.store).await {
            tracing::warn!(error = %e, "writing heartbeat times failed; retrying");
        }
        if let Err(e) = sessions.network.flush(&state.store).await {
            tracing::warn!(error = %e, "writing network measurements failed; retrying");
        }
        if *shutdown.borrow() {
            break;
        }
        if let Err(e) = sessions.refresh(&state.store).await {
            tracing::warn!(error = %e, "reading live assignments failed; retrying");
        }
        if sessions.network.refresh_due()
            && let Err(e) = sessions.network.refresh(&state.store).await
        {
            tracing::warn!(error = %e, "reading probe targets failed; retrying");
        }
        tokio::select! {
            _ = tokio::time::sleep(sessions.flush_every()) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// A twentieth of the node timeout, between 10 ms and 500 ms: buffered times are always far
/// fresher than what the liveness loop acts on.
fn flush_interval(node_timeout: Duration) -> Duration {
    (node_timeout / 20).clamp(Duration::from_millis(10), Duration::from_millis(500))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(assignments: &[(&str, AssignmentPhase, i64)]) -> LiveView {
        let mut by_node = HashMap::new();
        by_node.insert(
            "gn-a".to_string(),
            assignments
                .iter()
                .map(|(id, state, since)| LiveAssignment {
                    id: id.to_string(),
                    node_name: "gn-a".into(),
                    state: *state,
                    since: *since,
                })
                .collect(),
        );
        LiveView { by_node }
    }

    fn ids(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn an_agent_that_holds_what_the_view_says_is_answered_from_memory() {
        let view = view(&[
            ("asg-1", AssignmentPhase::Running, 0),
            ("asg-2", AssignmentPhase::Stopping, 0),
        ]);
        assert_eq!(
            view.agreed_stops("gn-a", &ids(&["asg-1", "asg-2"]), 100),
            Some(ids(&["asg-2"]))
        );
        assert_eq!(view.agreed_stops("gn-b", &[], 100), Some(vec![]));
    }

    #[test]
    fn a_held_assignment_the_view_does_not_know_goes_to_the_store() {
        // Placed after the view was read, or ended long ago: only the database can tell.
        let view = view(&[("asg-1", AssignmentPhase::Running, 0)]);
        assert_eq!(
            view.agreed_stops("gn-a", &ids(&["asg-1", "asg-9"]), 100),
            None
        );
    }

    #[test]
    fn a_live_assignment_the_agent_dropped_goes_to_the_store_after_the_grace() {
        let view = view(&[("asg-1", AssignmentPhase::Running, 50)]);
        // Placed within the grace: the agent may not have picked it up yet.
        assert_eq!(view.agreed_stops("gn-a", &[], 40), Some(vec![]));
        // Older: the store settles it.
        assert_eq!(view.agreed_stops("gn-a", &[], 60), None);
    }

    #[test]
    fn nodes_with_new_work_are_those_with_an_assignment_not_seen_before() {
        let before = view(&[("asg-1", AssignmentPhase::Assigned, 0)]);
        let same = view(&[("asg-1", AssignmentPhase::Assigned, 0)]);
        assert_eq!(same.nodes_with_new_work(&before).count(), 0);
        let more = view(&[
            ("asg-1", AssignmentPhase::Running, 0),
            ("asg-2", AssignmentPhase::Assigned, 0),
        ]);
        assert_eq!(
            more.nodes_with_new_work(&before).collect::<Vec<_>>(),
            ["gn-a"]
        );
        // Progress on known work wakes nobody.
        let started = view(&[("asg-1", AssignmentPhase::Starting, 0)]);
        assert_eq!(started.nodes_with_new_work(&before).count(), 0);
    }

    #[test]
    fn buffered_times_are_flushed_well_within_the_node_timeout() {
        assert_eq!(
            flush_interval(Duration::from_secs(20)),
            Duration::from_millis(500)
        );
        assert_eq!(
            flush_interval(Duration::from_secs(1)),
            Duration::from_millis(50)
        );
        assert_eq!(
            flush_interval(Duration::from_millis(100)),
            Duration::from_millis(10)
        );
    }
}
