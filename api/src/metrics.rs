//! The hub's Prometheus metrics (`agora_*`), served at `/metrics` in the Prometheus text format.
//!
//! Counters and histograms are updated as things happen; the gauges that describe state (jobs by
//! phase, the queue, nodes, GPUs, heartbeat ages, prices, settlement) are recomputed from the store
//! at each scrape, so every replica reports the same truth and nothing drifts. So are the totals
//! the database already keeps (failures, retries, payouts): they are counters whose value is read,
//! not counted, so they survive restarts and failovers, and every replica reports the same one
//! (aggregate them with `max`). Counters and histograms of the background loops (placements, queue
//! waits, lost nodes) grow on the leader only: sum them over replicas. docs/observability.md lists
//! every metric and the dashboards built on them; docs/operations.md says what to alert on.

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

use scheduler::pricing::{PriceBook, PricingParams, effective_price};

use crate::{
    lifecycle::FailureReason,
    stakes::StakeBook,
    store::{Store, StoreError, settlement::SlashState},
    views::node_ready,
};

type Labels = Vec<(&'static str, String)>;
type FloatGauge = Gauge<f64, AtomicU64>;

/// What a scrape needs besides the store: the hub's settings that shape the state metrics, and
/// the operators' stakes as the settlement loop last read them from the chain.
pub struct Scrape<'a> {
    /// A node whose last heartbeat is older is NotReady (`HubSettings::node_timeout`).
    pub node_timeout_ms: i64,
    /// How base prices move: their floor for classes not priced yet, and the target utilization.
    pub pricing: PricingParams,
    /// `None` without a chain, or before the first read.
    pub stakes: Option<&'a StakeBook>,
}

impl Scrape<'_> {
    /// A scrape of a hub with default pricing and no chain.
    pub fn new(node_timeout_ms: i64) -> Self {
        Scrape {
            node_timeout_ms,
            pricing: PricingParams::default(),
            stakes: None,
        }
    }
}

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
    /// The market's, the jobs' failures and retries, settlement's and the stakes' state metrics.
    dashboards: DashboardMetrics,
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
        let dashboards = DashboardMetrics::register(&mut registry);
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
            dashboards,
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
    pub async fn render(&self, store: &Store, scrape: &Scrape<'_>) -> Result<String, StoreError> {
        let node_timeout_ms = scrape.node_timeout_ms;
        let phases = store.job_phase_counts().await?;
        let fleet = store.all_nodes().await?;
        let oldest_queued = store.oldest_queued_since().await?;
        let batches = store.batch_state_counts().await?;
        let reads = DashboardReads::read(store).await?;
        let now = crate::store::now_ms();

        let _rendering = self.render.lock().unwrap_or_else(|e| e.into_inner());
        self.dashboards.fill(&reads, &fleet, now, scrape)?;
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
        encoded.map_err(|e| StoreError::Corrupt(e.to_string()))?;
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

/// The state metrics the dashboards (charts/agora/dashboards) need beyond the fleet and the queue:
/// jobs' failures and retries, the market, settlement and stakes. All are refilled at each scrape
/// from the store (and, for stakes, the chain's book), never counted in memory.
struct DashboardMetrics {
    job_failures: Family<Labels, Counter>,
    job_retries: Family<Labels, Counter>,
    base_price: Family<Labels, Gauge>,
    effective_price: Family<Labels, Gauge>,
    placed_price: Family<Labels, Gauge>,
    utilization: Family<Labels, FloatGauge>,
    epoch_utilization: Family<Labels, FloatGauge>,
    target_utilization: FloatGauge,
    settlement_receipts: Family<Labels, Gauge>,
    settlement_amount: Family<Labels, Gauge>,
    payouts: Family<Labels, Counter>,
    slashes: Family<Labels, Gauge>,
    slashed: Family<Labels, Gauge>,
    stake_operators: Family<Labels, Gauge>,
    /// Unlabelled, but families, so that they are left out (rather than 0) without a chain.
    stake_bonded: Family<Labels, Gauge>,
    stake_min: Family<Labels, Gauge>,
}

/// What one scrape reads from the store for [`DashboardMetrics`].
struct DashboardReads {
    failed: Vec<(String, i64)>,
    retried: Vec<(String, i64)>,
    prices: Vec<scheduler::pricing::ClassPrice>,
    allocated_prices: Vec<(String, String, i64)>,
    receipts: Vec<(String, String, i64, i64)>,
    payouts: (i64, i64, i64),
    slashes: Vec<(String, String, Option<String>)>,
}

impl DashboardReads {
    async fn read(store: &Store) -> Result<Self, StoreError> {
        Ok(Self {
            failed: store.failed_job_reasons().await?,
            retried: store.retried_attempt_reasons().await?,
            prices: store.load_prices().await?,
            allocated_prices: store.allocated_gpu_prices().await?,
            receipts: store.receipt_settlement().await?,
            payouts: store.payout_totals().await?,
            slashes: store.slash_summaries().await?,
        })
    }
}

impl DashboardMetrics {
    fn register(registry: &mut Registry) -> Self {
        fn add<M: prometheus_client::registry::Metric + Clone>(
            registry: &mut Registry,
            name: &str,
            help: &str,
            metric: M,
        ) -> M {
            registry.register(name, help, metric.clone());
            metric
        }
        Self {
            job_failures: add(
                registry,
                "job_failures",
                "Jobs that ended Failed, by reason (WorkerFailed, NodeLost, DeadlineExceeded, \
                 VerificationFailed); read from the database, the same on every replica",
                Family::default(),
            ),
            job_retries: add(
                registry,
                "job_retries",
                "Failed job attempts that sent their job back to the queue for another attempt, \
                 by the failure's reason; read from the database, the same on every replica",
                Family::default(),
            ),
            base_price: add(
                registry,
                "market_base_price_micros",
                "Base price per GPU-hour of each GPU class, in micro-units: the least any job \
                 placed on the class pays; moves each pricing epoch with the class's utilization",
                Family::default(),
            ),
            effective_price: add(
                registry,
                "market_effective_price_micros",
                "What a one-GPU job of the class would pay per GPU-hour now, in micro-units: the \
                 base price or the cheapest ask among Ready nodes with a free healthy GPU of the \
                 class, whichever is higher; no series while the class has no free GPU",
                Family::default(),
            ),
            placed_price: add(
                registry,
                "market_placed_price_micros",
                "Mean price per GPU-hour of the GPUs of the class allocated now (weighted by \
                 GPU), in micro-units; no series while none is allocated",
                Family::default(),
            ),
            utilization: add(
                registry,
                "market_utilization_ratio",
                "Allocated GPUs over offered ones (healthy GPUs on Ready nodes) of each class, now",
                Family::default(),
            ),
            epoch_utilization: add(
                registry,
                "market_epoch_utilization_ratio",
                "The utilization of each class the last pricing epoch sampled: what moved its \
                 base price",
                Family::default(),
            ),
            target_utilization: add(
                registry,
                "market_target_utilization_ratio",
                "The utilization at which base prices hold: above it they rise, below it they fall",
                FloatGauge::default(),
            ),
            settlement_receipts: add(
                registry,
                "settlement_receipts",
                "Usage receipts (the latest of each worker) by their node's region and the \
                 settlement state of their latest sequence: unsettled (in no batch yet) or the \
                 state of the batch that holds it",
                Family::default(),
            ),
            settlement_amount: add(
                registry,
                "settlement_amount_micros",
                "Receipted money by region and settlement state, in micro-units: what batches in \
                 each state pay, and what is receipted but in no batch yet (unsettled)",
                Family::default(),
            ),
            payouts: add(
                registry,
                "settlement_payouts_micros",
                "Paid to providers by finalized settlement batches, in micro-units, by kind \
                 (gross, fee, net = gross - fee); read from the database",
                Family::default(),
            ),
            slashes: add(
                registry,
                "settlement_slashes",
                "Slashes asked of the settlement contract, by state (pending, posted, failed) \
                 and reason (fraud, cheating, downtime)",
                Family::default(),
            ),
            slashed: add(
                registry,
                "settlement_slashed_micros",
                "Stake the contract took by posted slashes, by reason, in micro-units",
                Family::default(),
            ),
            stake_operators: add(
                registry,
                "stake_operators",
                "Operators in the settlement contract by standing: active, below_min (less \
                 bonded than min_stake: no new work) or jailed; no series without a chain",
                Family::default(),
            ),
            stake_bonded: add(
                registry,
                "stake_bonded_micros",
                "Stake bonded by all operators, in micro-units; no series without a chain",
                Family::default(),
            ),
            stake_min: add(
                registry,
                "stake_min_micros",
                "The least stake an operator needs for its nodes to get new work, in \
                 micro-units; no series without a chain",
                Family::default(),
            ),
        }
    }

    /// Refills every metric from `reads`, the fleet as the scrape read it and `scrape`.
    fn fill(
        &self,
        reads: &DashboardReads,
        fleet: &[crate::store::NodeRow],
        now: i64,
        scrape: &Scrape<'_>,
    ) -> Result<(), StoreError> {
        // Every reason is always present, so a rate over one that never happened reads 0.
        let counted =
            |family: &Family<Labels, Counter>, reasons: &[&str], rows: &[(String, i64)]| {
                family.clear();
                for reason in reasons {
                    family
                        .get_or_create(&vec![("reason", (*reason).to_string())])
                        .inc_by(0);
                }
                for (reason, n) in rows {
                    family
                        .get_or_create(&vec![("reason", reason.clone())])
                        .inc_by(count(*n));
                }
            };
        let failure_reasons: Vec<&str> = FailureReason::ALL.iter().map(|r| r.as_str()).collect();
        let retry_reasons: Vec<&str> = FailureReason::ALL
            .iter()
            .filter(|r| r.retryable())
            .map(|r| r.as_str())
            .collect();
        counted(&self.job_failures, &failure_reasons, &reads.failed);
        counted(&self.job_retries, &retry_reasons, &reads.retried);

        self.fill_market(reads, fleet, now, scrape)?;

        self.settlement_receipts.clear();
        self.settlement_amount.clear();
        for (region, state, receipts, amount) in &reads.receipts {
            let labels = vec![("region", region.clone()), ("state", state.clone())];
            self.settlement_receipts
                .get_or_create(&labels)
                .set(*receipts);
            self.settlement_amount.get_or_create(&labels).set(*amount);
        }
        let (gross, fee, net) = reads.payouts;
        self.payouts.clear();
        for (kind, value) in [("gross", gross), ("fee", fee), ("net", net)] {
            self.payouts
                .get_or_create(&vec![("kind", kind.to_string())])
                .inc_by(count(value));
        }

        self.slashes.clear();
        self.slashed.clear();
        for reason in crate::slashing::REASONS {
            self.slashed
                .get_or_create(&vec![("reason", reason.to_string())])
                .set(0);
            for state in SlashState::ALL {
                self.slashes
                    .get_or_create(&vec![
                        ("state", state.as_str().to_string()),
                        ("reason", reason.to_string()),
                    ])
                    .set(0);
            }
        }
        for (state, reason, amount) in &reads.slashes {
            self.slashes
                .get_or_create(&vec![("state", state.clone()), ("reason", reason.clone())])
                .inc();
            if state == SlashState::Posted.as_str()
                && let Some(amount) = amount
            {
                // The amount is what the chain's events said: one that does not read as a number
                // is left out of the sum (and said so) rather than failing the whole scrape.
                match amount.parse::<u128>() {
                    Ok(taken) => {
                        self.slashed
                            .get_or_create(&vec![("reason", reason.clone())])
                            .inc_by(saturating(taken));
                    }
                    Err(_) => tracing::warn!(amount, "a posted slash's amount is not an integer"),
                }
            }
        }

        self.stake_operators.clear();
        self.stake_bonded.clear();
        self.stake_min.clear();
        if let Some(book) = scrape.stakes {
            let mut standing = [("active", 0), ("below_min", 0), ("jailed", 0)];
            let mut bonded: u128 = 0;
            for operator in book.operators.values() {
                bonded = bonded.saturating_add(operator.bonded);
                let slot = if operator.jailed {
                    2
                } else if operator.bonded < book.min_stake {
                    1
                } else {
                    0
                };
                standing[slot].1 += 1;
            }
            for (state, n) in standing {
                self.stake_operators
                    .get_or_create(&vec![("state", state.to_string())])
                    .set(n);
            }
            self.stake_bonded
                .get_or_create(&Vec::new())
                .set(saturating(bonded));
            self.stake_min
                .get_or_create(&Vec::new())
                .set(saturating(book.min_stake));
        }
        Ok(())
    }

    /// Base, effective and placed prices and utilization per GPU class.
    fn fill_market(
        &self,
        reads: &DashboardReads,
        fleet: &[crate::store::NodeRow],
        now: i64,
        scrape: &Scrape<'_>,
    ) -> Result<(), StoreError> {
        let book = PriceBook::restore(scrape.pricing, reads.prices.clone())
            .map_err(|e| StoreError::Corrupt(format!("saved base prices: {e}")))?;
        self.target_utilization
            .set(f64::from(scrape.pricing.target_utilization_bps) / 10_000.0);

        // The classes: every priced one and every one the fleet offers (priced at the initial
        // price until its first epoch).
        let mut classes: BTreeMap<String, ClassView> = BTreeMap::new();
        for price in &reads.prices {
            classes
                .entry(price.class.clone())
                .or_default()
                .epoch_utilization = Some(f64::from(price.utilization_bps) / 10_000.0);
        }
        let mut model_of: std::collections::HashMap<(&str, &str), &str> = Default::default();
        for node in fleet {
            let ready = node_ready(node.last_heartbeat, now, scrape.node_timeout_ms);
            for gpu in &node.gpus {
                model_of.insert((node.name.as_str(), gpu.uuid.as_str()), gpu.model.as_str());
                let view = classes.entry(gpu.model.clone()).or_default();
                if ready && gpu.healthy && !node.allocated.contains(&gpu.uuid) {
                    view.cheapest_free = Some(
                        view.cheapest_free
                            .map_or(node.price_micros, |p| p.min(node.price_micros)),
                    );
                }
            }
        }
        // Utilization exactly as the pricing epoch samples it.
        for usage in crate::market::usage(fleet, now, scrape.node_timeout_ms) {
            if usage.offered_gpu_ms > 0 {
                classes.entry(usage.class).or_default().utilization =
                    Some(usage.allocated_gpu_ms as f64 / usage.offered_gpu_ms as f64);
            }
        }
        for (node, uuid, price) in &reads.allocated_prices {
            if let Some(model) = model_of.get(&(node.as_str(), uuid.as_str()))
                && let Some(view) = classes.get_mut(*model)
            {
                view.placed_gpus += 1;
                view.placed_price_sum += i128::from(*price);
            }
        }

        self.base_price.clear();
        self.effective_price.clear();
        self.placed_price.clear();
        self.utilization.clear();
        self.epoch_utilization.clear();
        for (class, view) in classes {
            let labels = vec![("class", class.clone())];
            let base = book.base_price(&class);
            self.base_price
                .get_or_create(&labels)
                .set(saturating(u128::from(base)));
            if let Some(ask) = view.cheapest_free {
                self.effective_price
                    .get_or_create(&labels)
                    .set(saturating(u128::from(effective_price(ask, base))));
            }
            if view.placed_gpus > 0 {
                let mean = view.placed_price_sum / i128::from(view.placed_gpus);
                self.placed_price
                    .get_or_create(&labels)
                    .set(i64::try_from(mean).unwrap_or(i64::MAX));
            }
            if let Some(now) = view.utilization {
                self.utilization.get_or_create(&labels).set(now);
            }
            if let Some(sampled) = view.epoch_utilization {
                self.epoch_utilization.get_or_create(&labels).set(sampled);
            }
        }
        Ok(())
    }
}

/// One GPU class as a scrape sees it.
#[derive(Default)]
struct ClassView {
    /// Allocated over offered GPUs (healthy, on Ready nodes) now; `None` when none is offered.
    utilization: Option<f64>,
    /// The lowest ask among Ready nodes with a free healthy GPU of the class.
    cheapest_free: Option<u64>,
    /// GPUs held by live assignments, and the sum of their prices per GPU-hour.
    placed_gpus: u64,
    placed_price_sum: i128,
    /// What the last pricing epoch sampled, for a priced class.
    epoch_utilization: Option<f64>,
}

/// A database count as a counter increment (a negative count cannot happen; it reads 0).
fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// Micro-units as a gauge value, saturating: stakes may exceed 64 bits.
fn saturating(micros: u128) -> i64 {
    i64::try_from(micros).unwrap_or(i64::MAX)
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
