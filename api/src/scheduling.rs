//! The scheduling loop: takes pending jobs oldest first, asks the scheduler for a placement over
//! its copy of the fleet, and writes the cycle's placements in one transaction. A job that cannot be placed
//! keeps waiting with the scheduler's explanation as its message. A job retrying after a failed
//! attempt is never placed on a node it failed on (`Request::excluded_nodes`).

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex, atomic::Ordering},
    time::{Duration, Instant},
};

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

/// The reason a job that fits nowhere waits with.
const UNSCHEDULABLE: &str = "Unschedulable";

/// Most pending jobs considered in one cycle.
const BATCH: u32 = 256;

/// How long the scheduling loop trusts its copy of the fleet. Within a cycle the copy is exact for
/// what the loop itself did (its placements are marked in it); what others change — GPUs freed by
/// ended workers, nodes joining, leaving or changing inventory — is read back at the next cycle
/// once this replica saw it ([`AppState::fleet_changed`], also bumped by the leader's watch of
/// changes made through other replicas), and in any case at most this late. A fleet at rest is
/// read once a second, however many jobs arrive.
const FLEET_MAX_AGE: Duration = Duration::from_secs(1);

/// How often the leader looks at the queue and the fleet for changes it was not woken for: jobs
/// submitted to another replica, or sent back for a retry by a report another replica took; GPUs
/// freed or nodes registered there. One cheap read each time, so such a change is acted on about
/// this late, not a whole `schedule_interval` later.
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
                Ok(Cycle::default())
            }
        };
        match cycle {
            Ok(cycle) if cycle.placed > 0 || cycle.more => {
                // A cycle takes at most BATCH jobs: one that placed something, or paged past
                // jobs that fit nowhere, may have left work behind. Go again at once rather than
                // waiting for the interval.
                tracing::debug!(placed = cycle.placed, "scheduling cycle");
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

/// Returns when, while this replica leads, the queue or the fleet differs from `mark` (which it
/// updates): jobs arrived or came back, GPUs were freed or nodes registered, through other
/// replicas that cannot wake this loop. A fleet change counts as one of this replica's
/// ([`AppState::fleet_changes`]), so the loop reads its fleet copy again. Read errors are
/// retried at the next tick; the scheduling interval still bounds the wait.
async fn queue_changed(state: &AppState, leadership: &Leadership, mark: &mut QueueMark) {
    loop {
        tokio::time::sleep(QUEUE_WATCH).await;
        if leadership.fence().is_none() {
            continue;
        }
        match state.store.queue_mark().await {
            Ok(now) if now != *mark => {
                if now.fleet != mark.fleet {
                    state.fleet_changes.fetch_add(1, Ordering::Relaxed);
                }
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
    Ok(cycle(state, fence, &mut None).await?.placed)
}

/// What one cycle did.
#[derive(Clone, Copy, Debug, Default)]
struct Cycle {
    placed: usize,
    /// It read a whole batch and moved past it: more of the queue waits to be looked at.
    more: bool,
}

/// Submissions this replica is writing: ids handed out whose jobs may not be committed yet. Job
/// ids sort by the time they are handed out, not by when their transaction commits, so a cycle
/// that read jobs up to id `b` may not have seen a job `a < b` still being written; the loop never
/// moves its [`Fleet::considered_through`] past such a job. (Jobs written through other replicas
/// are caught by the next fleet reload, within [`FLEET_MAX_AGE`].)
#[derive(Default)]
pub struct Arrivals {
    writing: Mutex<BTreeSet<String>>,
}

impl Arrivals {
    /// Marks `id` as being written until the returned guard is dropped.
    pub fn writing(self: &Arc<Self>, id: &str) -> ArrivalGuard {
        lock(&self.writing).insert(id.to_string());
        ArrivalGuard {
            arrivals: self.clone(),
            id: id.to_string(),
        }
    }

    /// The oldest job id being written now.
    fn oldest(&self) -> Option<String> {
        lock(&self.writing).first().cloned()
    }
}

/// Keeps a submission in [`Arrivals`] while it is written.
pub struct ArrivalGuard {
    arrivals: Arc<Arrivals>,
    id: String,
}

impl Drop for ArrivalGuard {
    fn drop(&mut self) {
        lock(&self.arrivals.writing).remove(&self.id);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The fleet as the scheduling loop keeps it between cycles.
pub struct Fleet {
    /// [`AppState::fleet_changes`] when the copy was read.
    generation: u64,
    /// The newest job a cycle on this copy has looked at: every older job still pending found no
    /// room on it, and the copy only fills up as the loop places, so the next cycle on it starts
    /// after this one. A backlog that fits nowhere then costs nothing per wake-up, and the loop
    /// pages through a queue longer than one batch instead of re-reading its head.
    considered_through: Option<String>,
    index: Index,
    network: HubNetwork,
    loaded: Instant,
}

impl Fleet {
    /// The fleet as the store has it now.
    pub async fn load(state: &AppState) -> Result<Self, StoreError> {
        let generation = state.fleet_changes.load(Ordering::Relaxed);
        let (index, network) = fleet(state).await?;
        Ok(Self {
            generation,
            considered_through: None,
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
    let stakes = state.stakes.snapshot();
    let mut index = Index::new();
    index.reset(
        rows.iter()
            .map(|n| node_view(n, now, timeout, stakes.as_deref())),
    );
    let network = state
        .sessions
        .network
        .network(&state.store, &rows, &index)
        .await?;
    Ok((index, network))
}

/// Where the next cycle on the same fleet copy starts, after one that started `after` and read
/// `read` (ascending ids) while `oldest_writing` was the oldest submission still being written:
/// after the newest job read, unless an older one may still be committing — then after the newest
/// job read before it, or where this cycle started.
fn watermark(after: Option<&str>, read: &[&str], oldest_writing: Option<&str>) -> Option<String> {
    let usable = read
        .iter()
        .rev()
        .find(|id| oldest_writing.is_none_or(|writing| **id < writing));
    usable.or(after.as_ref()).map(|id| id.to_string())
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
/// decides a placement for each pending job, oldest first (after those the copy already found no
/// room for), and writes them all at once. Jobs that do not fit are tried once more on a fleet
/// read afresh when the fleet changed since the copy was read; those that still do not fit keep
/// waiting with the scheduler's explanation.
async fn cycle(
    state: &AppState,
    fence: Option<&Fence>,
    fleet: &mut Option<Fleet>,
) -> Result<Cycle, StoreError> {
    let started = Instant::now();
    let mut fresh = false;
    // A copy older than the fleet's last known change is read again before deciding: GPUs freed
    // or a node back since it was read would otherwise stay invisible for up to FLEET_MAX_AGE, and
    // a job arriving meanwhile would be placed on a worse node than the one just freed. A fresh
    // read also looks at the whole queue again, since room may have come back.
    let generation = state.fleet_changes.load(Ordering::Relaxed);
    match fleet.as_mut() {
        Some(copy) if copy.loaded.elapsed() <= FLEET_MAX_AGE && copy.generation == generation => {}
        _ => {
            *fleet = Some(Fleet::load(state).await?);
            fresh = true;
        }
    }
    let after = fleet.as_ref().and_then(|f| f.considered_through.clone());
    // Read before the queue, so a submission that commits meanwhile is either in the read or
    // still counted as being written.
    let oldest_writing = state.arrivals.oldest();
    let jobs = state.store.pending_jobs(after.as_deref(), BATCH).await?;
    if jobs.is_empty() {
        return Ok(Cycle::default());
    }
    let full = jobs.len() == BATCH as usize;
    let ids: Vec<&str> = jobs.iter().map(|job| job.id.as_str()).collect();
    let through = watermark(after.as_deref(), &ids, oldest_writing.as_deref());
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
        let changed = fleet
            .as_ref()
            .is_none_or(|f| f.generation != state.fleet_changes.load(Ordering::Relaxed));
        if unfit.is_empty() || fresh || !changed {
            explain_waiting(state, unfit).await?;
            break;
        }
        *fleet = Some(Fleet::load(state).await?);
        fresh = true;
        waiting = unfit.into_iter().map(|(job, _, _)| job).collect();
    }
    let more = full && through.is_some() && through != after;
    if let Some(copy) = fleet.as_mut() {
        copy.considered_through = through;
    }
    state
        .metrics
        .scheduling_cycle
        .observe(started.elapsed().as_secs_f64());
    Ok(Cycle { placed, more })
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
        let mut request = request_for_on(state, &job.spec);
        if job.attempt > 0 {
            // Only retried jobs can have failed somewhere, so first attempts cost no extra read.
            request.excluded_nodes = state.store.excluded_nodes(&job.id).await?;
        }
        if job
            .name
            .as_deref()
            .is_some_and(|name| name.starts_with(crate::verifying::JOB_PREFIX))
        {
            // A verifier never runs at an operator it checks (docs/verification.md).
            request
                .excluded_nodes
                .extend(state.store.nodes_of_excluded_operators(&job.id).await?);
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
        // A backlog is looked at every cycle: write only explanations that changed.
        if job.reason.as_deref() == Some(UNSCHEDULABLE) && job.message.as_deref() == Some(&message)
        {
            continue;
        }
        state
            .store
            .set_waiting_reason(&job.id, UNSCHEDULABLE, &message)
            .await?;
    }
    Ok(())
}

/// [`request_for`], with the stake the settlement contract asks of every operator (when the hub
/// settles on a chain: see [`crate::stakes`]).
pub fn request_for_on(state: &AppState, spec: &ComputeJobSpec) -> Request {
    let mut request = request_for(spec);
    if let Some(book) = state.stakes.snapshot() {
        request.min_stake_micros = request.min_stake_micros.max(book.min_stake_micros());
    }
    request
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

fn node_view(
    row: &NodeRow,
    now: i64,
    timeout: i64,
    stakes: Option<&crate::stakes::StakeBook>,
) -> NodeView {
    let (stake_micros, jailed) = stakes.map_or((0, false), |book| {
        book.node_standing(row.operator_address.as_deref())
    });
    NodeView {
        name: row.name.clone(),
        region: row.region.clone(),
        // A node that benchmarks far below its claimed model is offered as what it measures.
        price_micros: crate::honesty::priced_micros(row),
        ready: node_ready(row.last_heartbeat, now, timeout),
        capabilities: row.capabilities.clone(),
        gpus: row
            .gpus
            .iter()
            .map(|g| gpu_view(g, &row.allocated))
            .collect(),
        // Stake and jailing come from the settlement contract; reputation from verification
        // (docs/verification.md).
        stake_micros,
        reputation_bps: row.reputation_bps,
        jailed,
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

#[cfg(test)]
mod tests {
    use super::watermark;

    #[test]
    fn the_next_cycle_starts_after_the_newest_job_read() {
        assert_eq!(
            watermark(None, &["job-1", "job-2"], None).as_deref(),
            Some("job-2")
        );
        assert_eq!(
            watermark(Some("job-0"), &["job-1"], Some("job-9")).as_deref(),
            Some("job-1")
        );
    }

    #[test]
    fn it_never_moves_past_a_submission_still_being_written() {
        // job-2 was handed out before job-3 but had not committed when the queue was read.
        assert_eq!(
            watermark(None, &["job-1", "job-3", "job-4"], Some("job-2")).as_deref(),
            Some("job-1")
        );
        assert_eq!(
            watermark(Some("job-0"), &["job-3"], Some("job-2")).as_deref(),
            Some("job-0"),
            "stays where the cycle started"
        );
        assert_eq!(
            watermark(None, &["job-3"], Some("job-2")),
            None,
            "starts from the head again"
        );
    }
}
