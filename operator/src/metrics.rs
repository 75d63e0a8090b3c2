//! The operator's Prometheus metrics (`agora_operator_*`), served with the hub's at `/metrics`.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use prometheus_client::{
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

type Labels = Vec<(&'static str, String)>;

/// The controllers by name, as the `controller` label says them.
pub const COMPUTEJOB: &str = "computejob";
/// The GpuNode mirror's `controller` label.
pub const GPUNODE: &str = "gpunode";

/// Every metric of the operator.
#[derive(Clone)]
pub struct Metrics {
    reconciles: Family<Labels, Counter>,
    errors: Family<Labels, Counter>,
    duration: Family<Labels, Histogram>,
    queue_depth: Family<Labels, Gauge>,
    leader: Gauge,
    /// The objects each controller was told changed and has not reconciled since: its queue.
    pending: Arc<Mutex<HashSet<(&'static str, String)>>>,
}

impl Metrics {
    /// The operator's metrics, registered in `registry` under `operator_*` (the hub's registry
    /// adds its `agora_` prefix).
    pub fn register(registry: &mut Registry) -> Self {
        let registry = registry.sub_registry_with_prefix("operator");
        let reconciles = Family::<Labels, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciles run, by controller",
            reconciles.clone(),
        );
        let errors = Family::<Labels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Reconciles that failed, by controller and kind of error",
            errors.clone(),
        );
        let duration = Family::<Labels, Histogram>::new_with_constructor(
            duration_histogram as fn() -> Histogram,
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time one reconcile took, by controller",
            duration.clone(),
        );
        let queue_depth = Family::<Labels, Gauge>::default();
        registry.register(
            "queue_depth",
            "Objects changed in the cluster and not reconciled since, by controller",
            queue_depth.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica holds the operator's Lease and runs the controllers",
            leader.clone(),
        );
        Self {
            reconciles,
            errors,
            duration,
            queue_depth,
            leader,
            pending: Arc::default(),
        }
    }

    /// Metrics registered nowhere (tests).
    pub fn unregistered() -> Self {
        Self::register(&mut Registry::default())
    }

    /// `object` changed in the cluster: it waits for a reconcile.
    pub fn queued(&self, controller: &'static str, object: String) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        pending.insert((controller, object));
        self.set_depth(controller, &pending);
    }

    /// A reconcile of `object` starts: it no longer waits.
    pub fn started(&self, controller: &'static str, object: &str) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        pending.remove(&(controller, object.to_string()));
        self.set_depth(controller, &pending);
    }

    fn set_depth(&self, controller: &'static str, pending: &HashSet<(&'static str, String)>) {
        let depth = pending.iter().filter(|(c, _)| *c == controller).count();
        self.queue_depth
            .get_or_create(&vec![("controller", controller.to_string())])
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
    }

    /// A reconcile ended after `took`, failed with `error` (its metric label) or not.
    pub fn reconciled(
        &self,
        controller: &'static str,
        took: Duration,
        error: Option<&'static str>,
    ) {
        let labels = vec![("controller", controller.to_string())];
        self.reconciles.get_or_create(&labels).inc();
        self.duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
        if let Some(error) = error {
            self.errors
                .get_or_create(&vec![
                    ("controller", controller.to_string()),
                    ("error", error.to_string()),
                ])
                .inc();
        }
    }

    /// Whether this replica leads (runs the controllers).
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// The queue depth of `controller` (tests).
    pub fn queue_depth(&self, controller: &'static str) -> i64 {
        self.queue_depth
            .get_or_create(&vec![("controller", controller.to_string())])
            .get()
    }

    /// Reconciles run by `controller` (tests).
    pub fn reconciles(&self, controller: &'static str) -> u64 {
        self.reconciles
            .get_or_create(&vec![("controller", controller.to_string())])
            .get()
    }

    /// Errors of kind `error` in `controller` (tests).
    pub fn errors(&self, controller: &'static str, error: &'static str) -> u64 {
        self.errors
            .get_or_create(&vec![
                ("controller", controller.to_string()),
                ("error", error.to_string()),
            ])
            .get()
    }
}

/// 1 ms to ~33 s: a reconcile is a few API calls.
fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}
