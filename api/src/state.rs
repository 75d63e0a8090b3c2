//! The state every handler and background task shares.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use crds::validate::SpecValidator;
use tokio::sync::{Notify, watch};

use crate::{
    heartbeats::AgentSessions, market::Market, metrics::Metrics, ratelimit::RateLimits,
    store::Store,
};

/// Tunables of a hub.
#[derive(Clone, Debug)]
pub struct HubSettings {
    /// How often agents are asked to send heartbeats.
    pub heartbeat_interval: Duration,
    /// A node whose last heartbeat is older than this is NotReady and gets no new work.
    pub node_timeout: Duration,
    /// How often the scheduling loop runs when nothing wakes it earlier.
    pub schedule_interval: Duration,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Longest an agent's long-poll for assignments is held open.
    pub max_poll_wait: Duration,
    /// Length of a pricing epoch: base prices move once per epoch.
    pub price_epoch: Duration,
    /// How base prices move.
    pub pricing: scheduler::pricing::PricingParams,
    /// Requests per second and bursts per API key, node token and client address (per replica).
    pub rate_limits: RateLimits,
    /// How long the leader lease lasts without renewal: when the leader dies or loses the
    /// database, another replica takes the background loops over after at most this long.
    pub lease_ttl: Duration,
    /// How often a replica tries to take or renew the leader lease. Well below `lease_ttl`, so a
    /// few failed renewals in a row do not cost the lease; the leader stops leading `lease_renew`
    /// before its lease would run out, so it is never still leading when a successor starts.
    pub lease_renew: Duration,
    /// The name this replica holds the lease under (a pod name, say); `None` makes one up from
    /// the host name, the process id and a random suffix, unique per start. It must be unique
    /// among replicas running at once: two replicas under one name would both lead.
    pub lease_holder: Option<String>,
    /// How many peers each heartbeat's answer asks the node to probe (RTT), at most 64; 0 turns
    /// probing off. More targets fill the network model faster at the cost of more probe traffic
    /// per node and more measurement rows to write (see `crate::network`).
    pub probe_targets: u32,
    /// The network this hub settles on: agents sign their usage receipts for it, and a receipt
    /// for another network is refused, so one network's receipts cannot be paid on another.
    pub network: String,
    /// How long a SpotCheck's workers have to open their sampled commitments before a verifier
    /// node recomputes the sample instead (docs/verification.md).
    pub opening_timeout: Duration,
}

impl Default for HubSettings {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(5),
            node_timeout: Duration::from_secs(20),
            schedule_interval: Duration::from_secs(2),
            max_body_bytes: 1024 * 1024,
            max_poll_wait: Duration::from_secs(30),
            price_epoch: Duration::from_secs(60),
            pricing: scheduler::pricing::PricingParams::default(),
            rate_limits: RateLimits::default(),
            lease_ttl: Duration::from_secs(10),
            lease_renew: Duration::from_secs(2),
            lease_holder: None,
            probe_targets: 4,
            network: crds::agent::DEFAULT_NETWORK.to_string(),
            // An honest agent recomputes the sample on its CPU and answers within seconds to a
            // minute; this leaves room for a slow CPU or a missed heartbeat.
            opening_timeout: Duration::from_secs(120),
        }
    }
}

/// Shared by every handler; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub validator: Arc<SpecValidator>,
    pub metrics: Arc<Metrics>,
    pub settings: Arc<HubSettings>,
    /// Base prices per GPU class.
    pub market: Arc<Market>,
    /// This replica's memory of its agents: checked tokens, buffered heartbeat times, the live
    /// assignments view.
    pub sessions: Arc<AgentSessions>,
    /// Wakes the scheduling loop early (a job arrived, GPUs were freed).
    pub wake_scheduler: Arc<Notify>,
    /// Grows whenever this replica changes what the fleet can take (GPUs freed, a node registered
    /// or its inventory changed): the scheduling loop reads its fleet copy again when a job does
    /// not fit and this moved since the copy was read.
    pub fleet_changes: Arc<AtomicU64>,
    /// Submissions being written on this replica (see [`crate::scheduling::Arrivals`]).
    pub arrivals: Arc<crate::scheduling::Arrivals>,
    /// Becomes true when the hub shuts down, to end long-polls.
    pub shutdown: watch::Receiver<bool>,
    /// The chain the hub settles on (`None`: `--chain none`).
    pub chain: Option<crate::settling::ChainLink>,
    /// Operators' stakes read from the settlement contract; empty without a chain.
    pub stakes: Arc<crate::stakes::Stakes>,
    /// When this hub process started (Unix ms): it heard no heartbeats before, so a node's
    /// silence counts from here at the earliest (see `liveness`).
    pub started_ms: i64,
}

impl AppState {
    /// Records that the fleet can take more (or other) work than before, and wakes the scheduling
    /// loop to use it.
    pub fn fleet_changed(&self) {
        self.fleet_changes.fetch_add(1, Ordering::Relaxed);
        self.wake_scheduler.notify_one();
    }
}
