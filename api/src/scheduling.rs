//! The scheduling loop: takes pending jobs oldest first, asks the scheduler for a placement over
//! its copy of the fleet, and writes the cycle's placements in one transaction. A job that cannot be placed
//! keeps waiting with the scheduler's explanation as its message. A job retrying after a failed
//! attempt is never placed on a node it failed on (`Request::excluded_nodes`).

use std::time::{Duration, Instant};

use crds::v1alpha1::{ComputeJobSpec, GpuDevice};
use scheduler::{GpuView, Index, NodeKey, NodeView, Request, Weights};

use crate::{
    ids,
    leader::Leadership,
    network::HubNetwork,
    routes::parse_capability,
    state::AppState,
    store::{Fence, JobRow, NewAssignment, NodeRow, Placement, QueueMark, StoreError, now_ms},
    views::node_ready,
};

/// Most pending jobs considered in one cycle.
const BATCH: u32 = 256;

/// How long the scheduling loop trusts its copy of the fleet. Within a cycle the copy is exact for
/// what the loop itself did (its placements are marked in it); what other writers change — GPUs
/// freed by ended workers, nodes joining, leaving or changing inventory — is read back at most this
/// late, and at once when a job does not fit (so a job is never called unschedulable on a stale
/// view).
const FLEET_MAX_AGE: Duration = Duration::from_secs(1);

/// How often the leader looks at the queue for jobs it was not woken for: submitted to another
/// replica, or sent back for a retry by a report another replica took. One index-only read each
/// time, so a job reaching any replica waits about this long at most, not a whole
/// `schedule_interval`.
const QUEUE_WATCH: Duration = Duration::from_millis(100);

/// Runs scheduling cycles until shutdown, while this replica leads (see [`crate::leader`]): on
/// every wake-up (a job arrived, GPUs were freed, a node registered), when it becomes leader, and
/// at least every `schedule_interval`. Followers wait; jobs submitted to them are placed by the
/// leader's next cycle. Returns once the lease is released, so the hub closes its store after.
pub async fn run(state: AppState, mut leadership: Leadership) {
    let mut shutdown = state.shutdown.clone();
    let mut fleet = None;
    let mut mark = QueueMark::default();
    let watcher = leadership.clone();
    loop {
        if *shutdown.borrow() {
            break;
        }
        let cycle = match leadership.fence() {
            Some(fence) => cycle(&state, Some(&fence), &mut fleet).await,
            None => {
                // A follower's copy would be stale by the time it leads again.
                fleet = None;
                Ok(0)
            }
        };
        match cycle {
            Ok(placed) if placed > 0 => {
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
            _ = queue_changed(&state, &watcher, &mut mark) => {}
            _ = shutdown.changed() => {}
            () = leadership.changed() => {}
        }
    }
    leadership.stopped().await;
}

/// Returns when, while this replica leads, the queue differs from `mark` (which it updates):
/// jobs arrived, or came back, that nobody woke this loop for. Read errors are retried at the
/// next tick; the scheduling interval still bounds the wait.
async fn queue_changed(state: &AppState, leadership: &Leadership, mark: &mut QueueMark) {
    loop {
        tokio::time::sleep(QUEUE_WATCH).await;
        if leadership.fence().is_none() {
            continue;
        }
        match state.store.queue_mark().await {
            Ok(now) if now != *mark => {
                *mark = now;
                return;
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "reading the queue failed"),
        }
    }
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

/// One scheduling cycle on a fleet read afresh, its placements applied only under `fence`
/// (always, without one); returns how many jobs it placed.
pub async fn schedule_fenced(state: &AppState, fence: Option<&Fence>) -> Result<usize, StoreError> {
    cycle(state, fence, &mut None).await
}

/// The fleet as the scheduling loop keeps it between cycles.
pub struct Fleet {
    index: Index,
    network: HubNetwork,
    loaded: Instant,
}

impl Fleet {
    /// The fleet as the store has it now.
    pub async fn load(state: &AppState) -> Result<Self, StoreError> {
        let (index, network) = fleet(state).await?;
        Ok(Self {
            index,
            network,
            loaded: Instant::now(),
        })
    }
}

/// The fleet as the scheduler sees it now: the index, rebuilt from the store, and the network
/// the agents measured (see [`crate::network`]: the fitted model, kept between reloads and fed
/// what was measured since, and the region rule for nodes without measurements).
pub async fn fleet(state: &AppState) -> Result<(Index, HubNetwork), StoreError> {
    let now = now_ms();
    let timeout = state.settings.node_timeout.as_millis() as i64;
    let rows = state.store.all_nodes().await?;
    let mut index = Index::new();
    index.reset(rows.iter().map(|n| node_view(n, now, timeout)));
    let network = state
        .sessions
        .network
        .network(&state.store, &rows, &index)
        .await?;
    Ok((index, network))
}

/// A job the cycle decided to place, with what the scheduler reserved for it in the fleet copy.
struct Decided {
    job: JobRow,
    slots: Vec<scheduler::Slot>,
    data_nodes: bool,
    /// How long the scheduler took to decide it.
    took: Duration,
}

/// One cycle over `fleet` (read from the store when absent or older than [`FLEET_MAX_AGE`]):
/// decides a placement for each pending job, oldest first, and writes them all at once. Jobs that
/// do not fit are tried once more on a fleet read afresh, unless it already was; those that still
/// do not fit keep waiting with the scheduler's explanation.
async fn cycle(
    state: &AppState,
    fence: Option<&Fence>,
    fleet: &mut Option<Fleet>,
) -> Result<usize, StoreError> {
    let started = Instant::now();
    let jobs = state.store.pending_jobs(BATCH).await?;
    if jobs.is_empty() {
        return Ok(0);
    }
    let mut fresh = false;
    if fleet
        .as_ref()
        .is_none_or(|f| f.loaded.elapsed() > FLEET_MAX_AGE)
    {
        *fleet = Some(Fleet::load(state).await?);
        fresh = true;
    }
    let mut placed = 0;
    let mut waiting = jobs;
    while let Some(current) = fleet.as_mut() {
        let (decided, unfit) = decide(state, current, waiting).await?;
        let written = write(state, fence, current, decided).await;
        match written {
            Ok((n, lost_races)) => {
                placed += n;
                if lost_races {
                    // Another writer changed the fleet under this copy: read it again next time.
                    *fleet = None;
                }
            }
            Err(e) => {
                // The copy holds reservations that may not have been written.
                *fleet = None;
                return Err(e);
            }
        }
        if unfit.is_empty() || fresh {
            explain_waiting(state, unfit).await?;
            break;
        }
        *fleet = Some(Fleet::load(state).await?);
        fresh = true;
        waiting = unfit.into_iter().map(|(job, _, _)| job).collect();
    }
    state
        .metrics
        .scheduling_cycle
        .observe(started.elapsed().as_secs_f64());
    Ok(placed)
}

/// The scheduler's decision for each job on `fleet`: placements (reserved in the copy) and the
/// jobs that do not fit, with the request and why.
async fn decide(
    state: &AppState,
    fleet: &mut Fleet,
    jobs: Vec<JobRow>,
) -> Result<
    (
        Vec<Decided>,
        Vec<(JobRow, Request, scheduler::Unschedulable)>,
    ),
    StoreError,
> {
    let prices = state.market.book();
    let weights = Weights::default();
    let mut decided = Vec::new();
    let mut unfit = Vec::new();
    for job in jobs {
        let mut request = request_for(&job.spec);
        if job.attempt > 0 {
            // Only retried jobs can have failed somewhere, so first attempts cost no extra read.
            request.excluded_nodes = state.store.excluded_nodes(&job.id).await?;
        }
        let deciding = Instant::now();
        match scheduler::place(
            &mut fleet.index,
            &fleet.network,
            &prices,
            &request,
            &weights,
        ) {
            Ok(slots) => decided.push(Decided {
                job,
                slots,
                data_nodes: !request.data_nodes.is_empty(),
                took: deciding.elapsed(),
            }),
            Err(why) => unfit.push((job, request, why)),
        }
    }
    Ok((decided, unfit))
}

/// Writes the decided placements in one batch; returns how many were written and whether any lost
/// a race (its reservation is released from the copy).
async fn write(
    state: &AppState,
    fence: Option<&Fence>,
    fleet: &mut Fleet,
    decided: Vec<Decided>,
) -> Result<(usize, bool), StoreError> {
    if decided.is_empty() {
        return Ok((0, false));
    }
    let batch: Vec<Placement> = decided
        .iter()
        .map(|d| {
            let attempt = d.job.attempt + 1;
            Placement {
                job_id: d.job.id.clone(),
                attempt: d.job.attempt,
                workers: d
                    .slots
                    .iter()
                    .map(|slot| NewAssignment {
                        id: ids::assignment_id(&d.job.id, attempt, slot.rank),
                        rank: slot.rank,
                        node_name: fleet
                            .index
                            .entry(slot.node)
                            .map(|e| e.node.name.clone())
                            .unwrap_or_default(),
                        gpus: slot.gpus.clone(),
                        price_micros: slot.price_micros,
                    })
                    .collect(),
            }
        })
        .collect();
    let done = state.store.place_jobs(&batch, fence).await?;
    let mut placed = 0;
    let mut lost_races = false;
    for ((d, placement), written) in decided.iter().zip(&batch).zip(done) {
        if !written {
            // Another writer got there first; the next cycle sees the store's truth.
            scheduler::release(&mut fleet.index, &d.slots);
            lost_races = true;
            continue;
        }
        placed += 1;
        state.metrics.placements.inc();
        let queued_since = state.store.queued_since(&d.job).await?;
        state
            .metrics
            .observe_placement(crate::metrics::since_ms(queued_since, now_ms()), d.took);
        for worker in &placement.workers {
            state.sessions.work_arrived(&worker.node_name);
        }
        if d.data_nodes {
            let sites: Vec<NodeKey> = d.slots.iter().map(|s| s.node).collect();
            let aggregator = scheduler::federated::aggregator(&fleet.index, &fleet.network, &sites)
                .and_then(|(key, _)| fleet.index.entry(key).map(|e| e.node.name.clone()));
            state
                .store
                .set_aggregator(&d.job.id, aggregator.as_deref())
                .await?;
        }
        tracing::debug!(job = %d.job.id, workers = placement.workers.len(), node = %placement.workers[0].node_name, "placed");
    }
    Ok((placed, lost_races))
}

/// Records, on each job that does not fit, why it waits (a retrying job says which attempt waits
/// and where it will not go), and counts the scheduler's rejections by reason.
async fn explain_waiting(
    state: &AppState,
    unfit: Vec<(JobRow, Request, scheduler::Unschedulable)>,
) -> Result<(), StoreError> {
    for (job, request, why) in unfit {
        for (reason, n) in &why.rejections {
            state
                .metrics
                .unschedulable
                .get_or_create(&vec![("reason", reason.name().to_string())])
                .inc_by(u64::from(*n));
        }
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
    Ok(())
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
