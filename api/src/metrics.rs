//! The hub's Prometheus metrics (`agora_*`), served at `/metrics` in the Prometheus text format.
//!
//! Counters and histograms are updated as things happen; the gauges that describe state (jobs by
//! phase, nodes, GPUs) are recomputed from the store at each scrape, so every replica reports the
//! same truth and nothing drifts.

use std::collections::BTreeMap;

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
    pub unschedulable: Family<Labels, Counter>,
    pub scheduling_cycle: Histogram,
    /// 1 while this replica holds the leader lease (see `leader`), by holder.
    pub leader: Family<Labels, Gauge>,
    jobs: Family<Labels, Gauge>,
    nodes: Family<Labels, Gauge>,
    gpus: Family<Labels, Gauge>,
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
        let jobs = Family::<Labels, Gauge>::default();
        registry.register("jobs", "Jobs by phase", jobs.clone());
        let nodes = Family::<Labels, Gauge>::default();
        registry.register(
            "nodes",
            "Registered nodes by region and readiness",
            nodes.clone(),
        );
        let gpus = Family::<Labels, Gauge>::default();
        registry.register(
            "gpus",
            "GPUs by region, model and state (free, allocated, unhealthy, unavailable)",
            gpus.clone(),
        );
        Self {
            registry,
            http_requests,
            http_duration,
            jobs_submitted,
            placements,
            unschedulable,
            scheduling_cycle,
            leader,
            jobs,
            nodes,
            gpus,
        }
    }

    /// Refreshes the state gauges from the store and renders every metric.
    pub async fn render(
        &self,
        store: &Store,
        node_timeout_ms: i64,
    ) -> Result<String, crate::store::StoreError> {
        let phases = store.job_phase_counts().await?;
        let fleet = store.all_nodes().await?;
        let now = crate::store::now_ms();

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
        let mut nodes: BTreeMap<(String, bool), i64> = BTreeMap::new();
        let mut gpus: BTreeMap<(String, String, &'static str), i64> = BTreeMap::new();
        for node in &fleet {
            let ready = node_ready(node.last_heartbeat, now, node_timeout_ms);
            *nodes.entry((node.region.clone(), ready)).or_default() += 1;
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
                .get_or_create(&vec![("region", region), ("ready", ready.to_string())])
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
        prometheus_text::encode(&mut out, &self.registry)
            .map_err(|e| crate::store::StoreError::Corrupt(e.to_string()))?;
        Ok(out)
    }
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}
