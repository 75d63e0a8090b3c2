//! The scheduling loop: takes pending jobs oldest first, asks the scheduler for a placement over
//! the current fleet, and writes each placement in one transaction. A job that cannot be placed
//! keeps waiting with the scheduler's explanation as its message. A job retrying after a failed
//! attempt is never placed on a node it failed on (`Request::excluded_nodes`).

use std::time::Instant;

use crds::v1alpha1::{ComputeJobSpec, GpuDevice};
use scheduler::{GpuView, Index, Network, NodeKey, NodeView, Request, Weights};

use crate::{
    ids,
    leader::Leadership,
    routes::parse_capability,
    state::AppState,
    store::{Fence, NewAssignment, NodeRow, StoreError, now_ms},
    views::node_ready,
};

/// Most pending jobs considered in one cycle.
const BATCH: u32 = 256;

/// Runs scheduling cycles until shutdown, while this replica leads (see [`crate::leader`]): on
/// every wake-up (a job arrived, GPUs were freed, a node registered), when it becomes leader, and
/// at least every `schedule_interval`. Followers wait; jobs submitted to them are placed by the
/// leader's next cycle. Returns once the lease is released, so the hub closes its store after.
pub async fn run(state: AppState, mut leadership: Leadership) {
    let mut shutdown = state.shutdown.clone();
    loop {
        if *shutdown.borrow() {
            break;
        }
        match schedule_if_leader(&state, &leadership).await {
            Ok(Some(placed)) if placed > 0 => {
                // A cycle that placed something may have left a backlog (it takes at most BATCH
                // jobs): go again at once rather than waiting for the interval.
                tracing::debug!(placed, "scheduling cycle");
                continue;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "scheduling cycle failed; retrying"),
        }
        tokio::select! {
            _ = state.wake_scheduler.notified() => {}
            _ = tokio::time::sleep(state.settings.schedule_interval) => {}
            _ = shutdown.changed() => {}
            () = leadership.changed() => {}
        }
    }
    leadership.stopped().await;
}

/// One scheduling cycle if this replica leads now, its placements fenced by the lease's epoch (a
/// cycle that outlives the leadership places nothing); `None`, doing nothing, if it does not lead.
pub async fn schedule_if_leader(
    state: &AppState,
    leadership: &Leadership,
) -> Result<Option<usize>, StoreError> {
    let Some(fence) = leadership.fence() else {
        return Ok(None);
    };
    schedule_fenced(state, Some(&fence)).await.map(Some)
}

/// One scheduling cycle, unfenced (a lone hub, tests); returns how many jobs it placed.
pub async fn schedule_once(state: &AppState) -> Result<usize, StoreError> {
    schedule_fenced(state, None).await
}

/// One scheduling cycle whose placements apply only under `fence` (always, without one); returns
/// how many jobs it placed.
pub async fn schedule_fenced(state: &AppState, fence: Option<&Fence>) -> Result<usize, StoreError> {
    let started = Instant::now();
    let jobs = state.store.pending_jobs(BATCH).await?;
    if jobs.is_empty() {
        return Ok(0);
    }
    let (mut index, network) = fleet(state).await?;
    let prices = state.market.book();
    let weights = Weights::default();

    let mut placed = 0;
    for job in jobs {
        let mut request = request_for(&job.spec);
        if job.attempt > 0 {
            // Only retried jobs can have failed somewhere, so first attempts cost no extra read.
            request.excluded_nodes = state.store.excluded_nodes(&job.id).await?;
        }
        match scheduler::place(&mut index, &network, &prices, &request, &weights) {
            Ok(slots) => {
                let attempt = job.attempt + 1;
                let workers: Vec<NewAssignment> = slots
                    .iter()
                    .map(|slot| NewAssignment {
                        id: ids::assignment_id(&job.id, attempt, slot.rank),
                        rank: slot.rank,
                        node_name: index
                            .entry(slot.node)
                            .map(|e| e.node.name.clone())
                            .unwrap_or_default(),
                        gpus: slot.gpus.clone(),
                        price_micros: slot.price_micros,
                    })
                    .collect();
                if state
                    .store
                    .place_job_fenced(&job.id, job.attempt, &workers, fence)
                    .await?
                {
                    placed += 1;
                    state.metrics.placements.inc();
                    if !request.data_nodes.is_empty() {
                        let sites: Vec<scheduler::NodeKey> = slots.iter().map(|s| s.node).collect();
                        let aggregator = scheduler::federated::aggregator(&index, &network, &sites)
                            .and_then(|(key, _)| index.entry(key).map(|e| e.node.name.clone()));
                        state
                            .store
                            .set_aggregator(&job.id, aggregator.as_deref())
                            .await?;
                    }
                    tracing::info!(job = %job.id, workers = workers.len(), node = %workers[0].node_name, "placed");
                } else {
                    // Another writer got there first; the next cycle sees the store's truth.
                    scheduler::release(&mut index, &slots);
                }
            }
            Err(why) => {
                for (reason, n) in &why.rejections {
                    state
                        .metrics
                        .unschedulable
                        .get_or_create(&vec![("reason", reason.name().to_string())])
                        .inc_by(u64::from(*n));
                }
                // A retrying job says which attempt waits, so the user sees it is not the first.
                let message = if job.attempt > 0 {
                    let excluded = if request.excluded_nodes.is_empty() {
                        String::new()
                    } else {
                        format!(
                            " (never on {}, where it failed)",
                            request.excluded_nodes.join(", ")
                        )
                    };
                    format!(
                        "attempt {} of {} waits{excluded}: {why}",
                        job.attempt + 1,
                        job.spec.max_attempts()
                    )
                } else {
                    why.to_string()
                };
                state
                    .store
                    .set_waiting_reason(&job.id, "Unschedulable", &message)
                    .await?;
            }
        }
    }
    if placed > 0 {
        state.notify_assignments();
    }
    state
        .metrics
        .scheduling_cycle
        .observe(started.elapsed().as_secs_f64());
    Ok(placed)
}

/// The fleet as the scheduler sees it now: the index, rebuilt from the store, and the network.
pub async fn fleet(state: &AppState) -> Result<(Index, RegionOnly), StoreError> {
    let now = now_ms();
    let timeout = state.settings.node_timeout.as_millis() as i64;
    let rows = state.store.all_nodes().await?;
    let mut index = Index::new();
    index.reset(rows.iter().map(|n| node_view(n, now, timeout)));
    let network = RegionOnly::of(&index);
    Ok((index, network))
}

/// What the scheduler needs to know of a job.
pub fn request_for(spec: &ComputeJobSpec) -> Request {
    let gpu = spec.resources.gpu.clone().unwrap_or_default();
    let placement = spec.placement.clone().unwrap_or_default();
    Request {
        workers: spec.resources.workers,
        gpus_per_worker: spec.resources.gpus_per_worker,
        models: gpu.models,
        min_memory_gib: gpu.min_memory_gib.unwrap_or(0),
        min_compute_capability: gpu
            .min_compute_capability
            .as_deref()
            .and_then(parse_capability),
        regions: placement.regions,
        max_price_micros: spec.pricing.max_price_per_gpu_hour.micros(),
        capability: spec.workload.capability(),
        user_region: placement.user_region,
        max_latency_ms: placement.max_latency_ms,
        min_bandwidth_mbps: placement.min_bandwidth_mbps,
        min_stake_micros: 0,
        excluded_nodes: Vec::new(),
        pipeline_stages: spec.resources.pipeline_stages.unwrap_or(1),
        sizes: spec.resources.communication.as_ref().and_then(|c| {
            Some(scheduler::cost::dtfm::Sizes {
                c_pp_gb: c.activations_gb.parse().ok()?,
                c_dp_gb: c.gradients_gb.parse().ok()?,
            })
        }),
        data_nodes: placement
            .data_locality
            .iter()
            .flatten()
            .map(|site| site.node.clone())
            .collect(),
    }
}

fn node_view(row: &NodeRow, now: i64, timeout: i64) -> NodeView {
    NodeView {
        name: row.name.clone(),
        region: row.region.clone(),
        price_micros: row.price_micros,
        ready: node_ready(row.last_heartbeat, now, timeout),
        capabilities: row.capabilities.clone(),
        gpus: row
            .gpus
            .iter()
            .map(|g| gpu_view(g, &row.allocated))
            .collect(),
        // Stake, reputation and jailing come from the settlement layer and verification.
        stake_micros: 0,
        reputation_bps: 10_000,
        jailed: false,
    }
}

fn gpu_view(gpu: &GpuDevice, allocated: &[String]) -> GpuView {
    GpuView {
        uuid: gpu.uuid.clone(),
        model: gpu.model.clone(),
        memory_gib: gpu.memory_gib,
        compute_capability: parse_capability(&gpu.compute_capability).unwrap_or((0, 0)),
        healthy: gpu.healthy,
        allocated: allocated.contains(&gpu.uuid),
    }
}

/// The network as the hub knows it until agents report RTT probes: a node is close to its own
/// region's users (5 ms, the intra-region figure of the reference topologies) and of unknown distance
/// to anyone else, so a job with `maxLatencyMs` goes to its user region's nodes only and a job
/// without a bound is placed on price.
pub struct RegionOnly {
    regions: Vec<String>,
}

impl RegionOnly {
    const SAME_REGION_MS: f64 = 5.0;

    fn of(index: &Index) -> Self {
        let mut regions = Vec::new();
        for (key, entry) in index.iter() {
            let key = key as usize;
            if regions.len() <= key {
                regions.resize(key + 1, String::new());
            }
            regions[key] = entry.node.region.clone();
        }
        Self { regions }
    }

    fn region(&self, node: NodeKey) -> Option<&str> {
        self.regions.get(node as usize).map(String::as_str)
    }
}

impl Network for RegionOnly {
    fn rtt_to_region_ms(&self, node: NodeKey, region: &str) -> Option<f64> {
        (self.region(node) == Some(region)).then_some(Self::SAME_REGION_MS)
    }

    fn rtt_ms(&self, a: NodeKey, b: NodeKey) -> f64 {
        match (a == b, self.region(a) == self.region(b)) {
            (true, _) => 0.0,
            (false, true) => Self::SAME_REGION_MS,
            (false, false) => f64::INFINITY,
        }
    }

    fn bandwidth_mbps(&self, _: NodeKey, _: NodeKey) -> f64 {
        0.0
    }
}
