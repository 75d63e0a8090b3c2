//! Leader election among hub replicas that share one database.
//!
//! Every replica serves the API, but the background loops — scheduling, pricing, liveness — must
//! run on one replica at a time: two schedulers would race for the same GPUs (the store would keep
//! them from double-booking, but half their work would be wasted and their waiting messages would
//! fight), and two pricing loops would move prices twice per epoch. So each replica campaigns for
//! one lease in the database ([`LEASE`]); whoever holds it leads, and the loops do their work only
//! while their replica leads.
//!
//! A lease is not enough on its own: a leader can stall (a long GC-like pause, a slow disk, a
//! network partition) and wake up after its lease went to someone else, still believing it leads.
//! Two things guard against that:
//!
//! - A leader stops leading *before* its lease can expire: when it has not renewed it for
//!   `lease_ttl − lease_renew`, it steps down even if the database is unreachable, so by the time
//!   a successor can take the lease the old leader has already stopped starting new work.
//! - The lease's epoch is a fencing token. The loops' conflicting writes (placements, lost
//!   workers, prices) carry a [`Fence`], and the store applies them only if the lease still has
//!   that holder and epoch. A cycle that was already running when leadership moved writes nothing.

use std::{sync::Arc, time::Duration};

use tokio::{sync::watch, task::JoinHandle, time::Instant};

use crate::{
    metrics::Metrics,
    state::AppState,
    store::{Fence, Store, now_ms},
};

/// The lease whose holder runs the hub's background loops.
pub const LEASE: &str = "hub";

/// This replica's view of the leader lease: whether it leads now, and under which epoch.
///
/// Cheap to clone; every clone sees the same campaign. The campaign runs until the hub shuts down
/// (it then releases the lease) or until every handle is dropped (it then stops without releasing,
/// as a crashed replica would, and the lease expires after its TTL).
#[derive(Clone)]
pub struct Leadership {
    holder: Arc<str>,
    epoch: watch::Receiver<Option<i64>>,
    _campaign: Arc<Campaign>,
}

/// Ends the campaign when the last [`Leadership`] handle goes away.
struct Campaign(JoinHandle<()>);

impl Drop for Campaign {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Leadership {
    /// Starts campaigning for [`LEASE`] on `state`'s store with `state`'s lease settings, until
    /// `state` shuts down. The first attempt is made at once, so a lone replica leads within one
    /// round trip to the database.
    pub fn start(state: &AppState) -> Self {
        let settings = &state.settings;
        let holder: Arc<str> = settings
            .lease_holder
            .clone()
            .unwrap_or_else(holder_id)
            .into();
        let ttl = settings.lease_ttl.max(Duration::from_millis(3));
        let renew = if settings.lease_renew.is_zero() || settings.lease_renew >= ttl {
            // Renewing as rarely as the lease lasts would lose it between renewals; a third of
            // the TTL still leaves room for one failed attempt.
            tracing::warn!(
                ttl = ?settings.lease_ttl,
                renew = ?settings.lease_renew,
                "the lease renewal interval must be shorter than the lease TTL; renewing every third of the TTL"
            );
            ttl / 3
        } else {
            settings.lease_renew
        };
        let (epoch_tx, epoch) = watch::channel(None);
        let campaigner = Campaigner {
            store: state.store.clone(),
            metrics: state.metrics.clone(),
            holder: holder.clone(),
            ttl,
            renew,
            shutdown: state.shutdown.clone(),
            epoch: epoch_tx,
        };
        let task = tokio::spawn(campaigner.run());
        Self {
            holder,
            epoch,
            _campaign: Arc::new(Campaign(task)),
        }
    }

    /// The name this replica campaigns under.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// The lease's epoch while this replica leads; `None` while it does not.
    pub fn epoch(&self) -> Option<i64> {
        *self.epoch.borrow()
    }

    /// Whether this replica leads now.
    pub fn is_leader(&self) -> bool {
        self.epoch().is_some()
    }

    /// The fence for writes made as leader now; `None` while this replica does not lead.
    pub fn fence(&self) -> Option<Fence> {
        self.epoch().map(|epoch| Fence {
            lease: LEASE.to_string(),
            holder: self.holder.to_string(),
            epoch,
        })
    }

    /// The epoch as it changes (`None` while not leading), for whoever wants to wait on it.
    pub fn subscribe(&self) -> watch::Receiver<Option<i64>> {
        self.epoch.clone()
    }

    /// Waits until leadership changes (gained, lost, or a new epoch) since this handle last
    /// looked. Once the campaign has ended nothing changes any more, and this waits forever, so a
    /// loop selecting on it does not spin.
    pub async fn changed(&mut self) {
        if self.epoch.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Waits until the campaign has ended — after shutdown, once the lease is released — so the
    /// hub closes its database only after giving the lease up.
    pub async fn stopped(&mut self) {
        while self.epoch.changed().await.is_ok() {}
    }
}

/// A holder id unique to this process start: the host (a pod's name in Kubernetes), the process
/// id, and a random part so a restarted process under a reused pid is a new holder too.
pub fn holder_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "hub".to_string());
    format!(
        "{host}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

/// The task that takes and keeps the lease.
struct Campaigner {
    store: Store,
    metrics: Arc<Metrics>,
    holder: Arc<str>,
    ttl: Duration,
    renew: Duration,
    shutdown: watch::Receiver<bool>,
    epoch: watch::Sender<Option<i64>>,
}

impl Campaigner {
    async fn run(mut self) {
        // When the last successful attempt started, while the lease is ours: the database counts
        // the TTL from a `now` taken just before that, so leading must end `renew` earlier than
        // `renewed + ttl`.
        let mut renewed: Option<Instant> = None;
        self.gauge(false);
        loop {
            if *self.shutdown.borrow() {
                break;
            }
            let started = Instant::now();
            let attempt = tokio::time::timeout(
                self.ttl,
                self.store
                    .try_acquire(LEASE, &self.holder, now_ms(), self.ttl),
            );
            tokio::pin!(attempt);
            let outcome = match renewed.map(|at| self.lead_until(at)) {
                Some(deadline) => tokio::select! {
                    outcome = &mut attempt => outcome,
                    () = tokio::time::sleep_until(deadline) => {
                        // A renewal this slow may not land before the lease runs out.
                        self.set(None, "the lease could not be renewed in time");
                        renewed = None;
                        attempt.await
                    }
                },
                None => attempt.await,
            };
            match outcome {
                Ok(Ok(Some(epoch))) => {
                    if self.lead_until(started) > Instant::now() {
                        renewed = Some(started);
                        self.set(Some(epoch), "");
                    } else {
                        // Ours, but it took so long that too little of it is left to lead on.
                        renewed = None;
                        self.set(None, "the lease was renewed too late to lead on");
                    }
                }
                Ok(Ok(None)) => {
                    renewed = None;
                    self.set(None, "another replica holds the lease");
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "taking or renewing the leader lease failed")
                }
                Err(_) => tracing::warn!(
                    ttl = ?self.ttl,
                    "taking or renewing the leader lease took longer than the lease lasts"
                ),
            }
            let next = started + self.renew;
            let deadline = renewed.map(|at| self.lead_until(at));
            tokio::select! {
                () = tokio::time::sleep_until(next) => {}
                () = sleep_until_some(deadline) => {}
                changed = self.shutdown.changed() => {
                    // A hub whose shutdown sender is gone is shutting down (or leaked); either
                    // way, nobody will tell this campaign to stop any more.
                    if changed.is_err() {
                        break;
                    }
                }
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                self.set(None, "the lease could not be renewed in time");
                renewed = None;
            }
        }
        // Stop leading before giving the lease up, so no loop starts a cycle as the successor
        // takes over; then give it up so the successor need not wait out the TTL. Releasing is
        // conditional on holding, and an attempt that timed out may have taken the lease after
        // all, so it is always tried. It may need a new connection, so it gets half a TTL: past
        // that, letting the lease expire costs the successor little more than waiting would.
        self.set(None, "the hub is shutting down");
        let release = self.store.release(LEASE, &self.holder);
        match tokio::time::timeout(self.ttl / 2, release).await {
            Ok(Ok(true)) => tracing::info!(holder = %self.holder, "leader lease released"),
            Ok(Ok(false)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "releasing the leader lease failed; it expires on its own")
            }
            Err(_) => tracing::warn!("releasing the leader lease timed out; it expires on its own"),
        }
    }

    /// The moment to stop leading on a lease renewed by an attempt that started at `renewed`.
    fn lead_until(&self, renewed: Instant) -> Instant {
        renewed + self.ttl.saturating_sub(self.renew)
    }

    /// Publishes whether (and under which epoch) this replica leads, logging and counting changes.
    fn set(&self, epoch: Option<i64>, why: &str) {
        let changed = self.epoch.send_if_modified(|current| {
            let changed = *current != epoch;
            *current = epoch;
            changed
        });
        if !changed {
            return;
        }
        match epoch {
            Some(epoch) => {
                tracing::info!(holder = %self.holder, epoch, "leading: running the scheduling, pricing and liveness loops")
            }
            None => tracing::info!(holder = %self.holder, "not leading: {why}"),
        }
        self.gauge(epoch.is_some());
    }

    /// `agora_leader{holder}`: 1 while leading, so a dashboard shows which replica runs the loops.
    fn gauge(&self, leading: bool) {
        self.metrics
            .leader
            .get_or_create(&vec![("holder", self.holder.to_string())])
            .set(i64::from(leading));
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
