//! The hub's Prometheus metrics (`agora_*`), served at `/metrics` in the Prometheus text format.
//!
//! Counters and histograms are updated as things happen; the gauges that describe state (jobs by
//! phase, the queue, nodes, GPUs, heartbeat ages) are recomputed from the store at each scrape, so
//! every replica reports the same truth and nothing drifts. Counters and histograms of the
//! background loops (placements, queue waits, lost nodes) grow on the leader only: sum them over
//! replicas. docs/operations.md says what to alert on.

use std::{
    collections::BTreeMap,
    sync::{Mutex, atomic::AtomicU64},
    time::Duration,
};

use prometheus_client::{
    encoding::prometheus_text,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

use crate::{store::Store, views::node_ready};

type Labels = Vec<(&'static str, String)>;

/// Every metric of the hub.
pub struct Metrics {
    registry: Registry,
    pub http_requests: Family<Labels, Counter>,
    pub http_duration: Family<Labels, Histogram>,
    pub jobs_submitted: Counter,
    pub placements: Counter,
    /// Verifications decided, by mode and outcome (`passed`, `failed`, `unverifiable`).
    pub verifications: Family<Labels, Counter>,
    pub unschedulable: Family<Labels, Counter>,
    pub scheduling_cycle: Histogram,
    /// 1 while this replica holds the leader lease (see `leader`), by holder.
    pub leader: Family<Labels, Gauge>,
    /// How long each placed job waited in the queue; see [`Metrics::observe_placement`].
    pub queue_wait: Histogram,
    /// How long the scheduling loop took to place one job; see [`Metrics::observe_placement`].
    pub placement_duration: Histogram,
    /// Nodes whose work the liveness sweep declared lost (counted once per node per sweep).
    pub nodes_lost: Counter,
    /// Assignments the liveness sweep marked Lost.
    pub assignments_lost: Counter,
    jobs: Family<Labels, Gauge>,
    queue_length: Gauge,
    queue_oldest_wait: Gauge<f64, AtomicU64>,
    nodes: Family<Labels, Gauge>,
    gpus: Family<Labels, Gauge>,
    heartbeat_age: Family<Labels, Histogram>,
    settlement_batches: Family<Labels, Gauge>,
    /// Held while the state metrics are refilled and the text encoded: two scrapes at once would
    /// otherwise interleave their clear-and-refill, and the heartbeat-age histogram, rebuilt by
    /// observing every node, would count nodes twice.
    render: Mutex<()>,
    /// Registries of components that run inside the hub (the Kubernetes operator), served with
    /// the hub's own metrics under the same `agora_` prefix.
    components: Mutex<Vec<Registry>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("agora");
        let http_requests = Family::<Labels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests served, by method, route and status",
            http_requests.clone(),
        );
        let http_duration = Family::<Labels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            http_duration.clone(),
        );
        let jobs_submitted = Counter::default();
        registry.register(
            "jobs_submitted",
            "Jobs accepted by the hub",
            jobs_submitted.clone(),
        );
        let placements = Counter::default();
        registry.register(
            "placements",
            "Job attempts placed on nodes",
            placements.clone(),
        );
        let verifications = Family::<Labels, Counter>::default();
        registry.register(
            "verifications",
            "Verifications of job attempts decided, by mode and outcome",
            verifications.clone(),
        );
        let unschedulable = Family::<Labels, Counter>::default();
        registry.register(
            "scheduling_rejections",
            "Nodes rejected for a pending job in a scheduling cycle, by reason",
            unschedulable.clone(),
        );
        let scheduling_cycle = latency_histogram();
        registry.register(
            "scheduling_cycle_duration_seconds",
            "Time of one scheduling cycle",
            scheduling_cycle.clone(),
        );
        let leader = Family::<Labels, Gauge>::default();
        registry.register(
            "leader",
            "1 while this replica holds the leader lease and runs the background loops",
            leader.clone(),
        );
        let queue_wait = queue_wait_histogram();
        registry.register(
            "job_queue_wait_seconds",
            "Time a placed job waited in the queue, from its submission or from being re-queued \
             for a retry to its placement",
            queue_wait.clone(),
        );
        let placement_duration = latency_histogram();
        registry.register(
            "placement_duration_seconds",
            "Time the scheduling loop took to place one job: the scheduler's decision and the \
             transaction that records it",
            placement_duration.clone(),
        );
        let nodes_lost = Counter::default();
        registry.register(
            "nodes_lost",
            "Nodes whose work was declared lost because they sent no heartbeat for the node timeout",
            nodes_lost.clone(),
        );
        let assignments_lost = Counter::default();
        registry.register(
            "assignments_lost",
            "Assignments (workers) declared lost with their silent node",
            assignments_lost.clone(),
        );
        let jobs = Family::<Labels, Gauge>::default();
        registry.register("jobs", "Jobs by phase", jobs.clone());
        let queue_length = Gauge::default();
        registry.register(
            "queue_length",
            "Jobs waiting to be placed (phase Pending)",
            queue_length.clone(),
        );
        let queue_oldest_wait = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "queue_oldest_wait_seconds",
            "How long the job waiting longest has been in the queue (since submission or \
             re-queueing); 0 when the queue is empty",
            queue_oldest_wait.clone(),
        );
        let nodes = Family::<Labels, Gauge>::default();
        registry.register(
            "nodes",
            "Registered nodes by region and state (Ready or NotReady; ready is the same as a boolean)",
            nodes.clone(),
        );
        let gpus = Family::<Labels, Gauge>::default();
        registry.register(
            "gpus",
            "GPUs by region, model and state (free, allocated, unhealthy, unavailable)",
            gpus.clone(),
        );
        let heartbeat_age = Family::<Labels, Histogram>::new_with_constructor(
            heartbeat_age_histogram as fn() -> Histogram,
        );
        registry.register(
            "node_heartbeat_age_seconds",
            "Registered nodes by the age of their last heartbeat at scrape time, by region and \
             state (a snapshot of the fleet, not a distribution over time)",
            heartbeat_age.clone(),
        );
        let settlement_batches = Family::<Labels, Gauge>::default();
        registry.register(
            "settlement_batches",
            "Settlement batches by state (built, posted, confirmed, final, challenged): built \
             batches that stay built mean the chain is not taking them (see each batch's lastError)",
            settlement_batches.clone(),
        );
        Self {
            registry,
            http_requests,
            http_duration,
            jobs_submitted,
            placements,
            verifications,
            unschedulable,
            scheduling_cycle,
            leader,
            queue_wait,
            placement_duration,
            nodes_lost,
            assignments_lost,
            jobs,
            queue_length,
            queue_oldest_wait,
            nodes,
            gpus,
            heartbeat_age,
            settlement_batches,
            render: Mutex::new(()),
            components: Mutex::default(),
        }
    }

    /// Records one placement: `queued_for`, how long the job waited since it entered the queue
    /// (submission, or re-queueing after a failed attempt: `Store::queued_since`), and
    /// `placement_took`, how long the scheduling loop spent placing it. The scheduling loop calls
    /// it once per job it placed, beside `placements.inc()`; a placement lost to another writer is
    /// not one.
    pub fn observe_placement(&self, queued_for: Duration, placement_took: Duration) {
        self.queue_wait.observe(queued_for.as_secs_f64());
        self.placement_duration
            .observe(placement_took.as_secs_f64());
    }

    /// Refreshes the state gauges from the store and renders every metric.
    pub async fn render(
        &self,
        store: &Store,
        node_timeout_ms: i64,
    ) -> Result<String, crate::store::StoreError> {
        let phases = store.job_phase_counts().await?;
        let fleet = store.all_nodes().await?;
        let oldest_queued = store.oldest_queued_since().await?;
        let batches = store.batch_state_counts().await?;
        let now = crate::store::now_ms();

        let _rendering = self.render.lock().unwrap_or_else(|e| e.into_inner());
        self.jobs.clear();
        for phase in crds::v1alpha1::JobPhase::ALL {
            let n = phases
                .iter()
                .find(|(p, _)| *p == phase)
                .map_or(0, |(_, n)| *n);
            self.jobs
                .get_or_create(&vec![("phase", phase.as_str().to_string())])
                .set(n as i64);
        }
        let pending = phases
            .iter()
            .find(|(p, _)| *p == crds::v1alpha1::JobPhase::Pending)
            .map_or(0, |(_, n)| *n);
        self.queue_length.set(pending as i64);
        for state in crate::store::settlement::BatchState::ALL {
            let n = batches
                .iter()
                .find(|(s, _)| *s == state)
                .map_or(0, |(_, n)| *n);
            self.settlement_batches
                .get_or_create(&vec![("state", state.as_str().to_string())])
                .set(n);
        }
        self.queue_oldest_wait
            .set(oldest_queued.map_or(0.0, |since| since_ms(since, now).as_secs_f64()));

        self.heartbeat_age.clear();
        let mut nodes: BTreeMap<(String, bool), i64> = BTreeMap::new();
        let mut gpus: BTreeMap<(String, String, &'static str), i64> = BTreeMap::new();
        for node in &fleet {
            let ready = node_ready(node.last_heartbeat, now, node_timeout_ms);
            *nodes.entry((node.region.clone(), ready)).or_default() += 1;
            self.heartbeat_age
                .get_or_create(&vec![
                    ("region", node.region.clone()),
                    ("state", node_state(ready).to_string()),
                ])
                .observe(since_ms(node.last_heartbeat, now).as_secs_f64());
            for gpu in &node.gpus {
                let state = if node.allocated.contains(&gpu.uuid) {
                    "allocated"
                } else if !gpu.healthy {
                    "unhealthy"
                } else if !ready {
                    "unavailable"
                } else {
                    "free"
                };
                *gpus
                    .entry((node.region.clone(), gpu.model.clone(), state))
                    .or_default() += 1;
            }
        }
        self.nodes.clear();
        for ((region, ready), n) in nodes {
            self.nodes
                .get_or_create(&vec![
                    ("region", region),
                    ("state", node_state(ready).to_string()),
                    ("ready", ready.to_string()),
                ])
                .set(n);
        }
        self.gpus.clear();
        for ((region, model, state), n) in gpus {
            self.gpus
                .get_or_create(&vec![
                    ("region", region),
                    ("model", model),
                    ("state", state.to_string()),
                ])
                .set(n);
        }

        let mut out = String::new();
        // The classic text format has no end marker: registries' texts follow one another.
        let encoded = prometheus_text::encode(&mut out, &self.registry).and_then(|()| {
            let components = self
                .components
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            components
                .iter()
                .try_for_each(|registry| prometheus_text::encode(&mut out, registry))
        });
        encoded.map_err(|e| crate::store::StoreError::Corrupt(e.to_string()))?;
        Ok(out)
    }

    /// Serves `registry` (a component running in the hub) with the hub's metrics; it should use
    /// the `agora` prefix too ([`Metrics::component_registry`]).
    pub fn add_component(&self, registry: Registry) {
        self.components
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(registry);
    }

    /// A registry for a component, with the hub's `agora` prefix.
    pub fn component_registry() -> Registry {
        Registry::with_prefix("agora")
    }
}

/// The time from `at_ms` (a store time, Unix ms) to `now_ms`; zero for a time in the future, which
/// a replica whose clock runs behind another's can see.
pub fn since_ms(at_ms: i64, now_ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(now_ms.saturating_sub(at_ms)).unwrap_or(0))
}

/// A node's state as the API names it.
fn node_state(ready: bool) -> &'static str {
    if ready { "Ready" } else { "NotReady" }
}

/// 0.5 ms to 16 s: request and per-decision latencies.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// 5 ms to 12 h, at round values: an idle hub places a job in milliseconds, a full fleet keeps jobs
/// for minutes or hours, and an operator's SLO (`le="60"`, `le="300"`) should be a bucket bound.
fn queue_wait_histogram() -> Histogram {
    Histogram::new([
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
        600.0, 1800.0, 3600.0, 10800.0, 43200.0,
    ])
}

/// 1 s to 1 day: below, around and above the default heartbeat interval (5 s) and node timeout
/// (20 s), so "late but not yet NotReady" is a bucket difference, then minutes to a day for nodes
/// that are gone.
fn heartbeat_age_histogram() -> Histogram {
    Histogram::new([
        1.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0, 21600.0, 86400.0,
    ])
}
