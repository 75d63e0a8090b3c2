//! The discrete-event engine: virtual time jumps from event to event (arrivals, completions, price
//! epochs, the scheduler's retries and chart samples); nothing sleeps.
//!
//! Placement is the hub's: each job's ComputeJob spec becomes a request through
//! `api::scheduling::request_for` and is placed by `scheduler::place` over the scheduler's
//! [`Index`] with the hub's default weights, against base prices from the market's
//! [`PriceBook`] (the hub's default pricing parameters), which moves once per `price_epoch` with
//! each class's utilization (allocated over offered GPUs at the end of the epoch, as
//! `api::market::usage` samples it).
//!
//! Scheduling follows the hub's loop (`api::scheduling`): jobs are considered oldest first; a new
//! job is tried when it arrives; jobs that did not fit are tried again once GPUs were freed or a
//! base price fell, after at most `fleet_refresh` (the hub's fleet copy is at most that old), and
//! a job arriving meanwhile waits for that cycle rather than overtake older ones.
//!
//! Two shortcuts keep a long queue cheap without changing any decision. A request that failed is
//! not tried again until GPUs were freed in a region and model it accepts or a base price fell:
//! with fewer free GPUs and the same prices a single worker's placement (an exact optimum over the
//! same filters) cannot succeed where it failed. (A gang's solver is a heuristic search, for
//! which this is an approximation.) And [`Gate`] refuses, without a scheduler call, jobs for which
//! no region and model they accept has the free GPUs.
//! A job that would not fit even on the idle fleet at the floor price is *unplaceable*: the hub
//! would keep it waiting for ever; the simulation reports it with the scheduler's main reason.
//!
//! Nodes fail (exponential times between failures, `node_mtbf`) and come back after a repair
//! (exponential, `node_repair`). A failed node's workers are lost; their jobs go back to the
//! queue, as the hub sends them back, never to be placed on that node again
//! (`Request::excluded_nodes`, the hub's rule), until they have used up their `maxAttempts`; then
//! they fail with `NodeLost`. A retried job starts its run again from the beginning.

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap},
};

use scheduler::{
    Index, NodeKey, Request, Slot, Weights,
    network::synthetic::SplitMix64,
    pricing::{ClassUsage, PriceBook, PricingParams},
};
use settlement::receipt::Receipt;

use super::{
    fleet::{Fleet, SimNetwork},
    gate::Gate,
    trace::TraceJob,
};

/// Timing of the simulated hub.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// Length of a pricing epoch (the hub's `price_epoch`).
    pub price_epoch_ms: u64,
    /// Longest a waiting job goes without being tried again after GPUs were freed.
    pub fleet_refresh_ms: u64,
    /// Interval of the chart samples.
    pub sample_ms: u64,
    pub pricing: PricingParams,
    /// Mean time between failures of one node; 0: nodes never fail.
    pub node_mtbf_ms: u64,
    /// Mean time a failed node takes to come back.
    pub node_repair_ms: u64,
    /// Seed of the failures.
    pub seed: u64,
}

impl Default for Config {
    /// The hub's defaults: `HubSettings::default()` for the epoch and the pricing, and its
    /// scheduling loop's one-second fleet copy.
    fn default() -> Self {
        let hub = api::state::HubSettings::default();
        Self {
            price_epoch_ms: hub.price_epoch.as_millis() as u64,
            fleet_refresh_ms: 1_000,
            sample_ms: hub.price_epoch.as_millis() as u64,
            pricing: hub.pricing,
            node_mtbf_ms: 0,
            node_repair_ms: 2 * 3_600_000,
            seed: 0,
        }
    }
}

/// What became of one job.
#[derive(Clone, Debug, PartialEq)]
pub enum Fate {
    /// Placed (and, by the end of the run, finished).
    Placed {
        at_ms: u64,
        /// Effective price per GPU-hour, averaged over its GPUs, micro-units.
        price_micros: u64,
        /// RTT from its users' region to the node of worker 0, when it names a `userRegion`.
        user_latency_ms: Option<f64>,
    },
    /// Would not fit even on the idle fleet at the floor price; the scheduler's main reason.
    Unplaceable(&'static str),
    /// Ran out of attempts: its nodes failed (`NodeLost`).
    Failed(&'static str),
    /// Still waiting when the run ended.
    Queued,
}

/// One worker that ran.
#[derive(Clone, Debug, PartialEq)]
pub struct Worker {
    pub job: usize,
    /// 0 for the first attempt, 1 for the first retry, …
    pub attempt: u32,
    pub rank: u32,
    pub node: String,
    pub gpus: Vec<String>,
    pub price_micros: u64,
    pub start_ms: u64,
    pub end_ms: u64,
    /// Its node failed under it.
    pub lost: bool,
}

/// A point of the charts.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub at_ms: u64,
    /// Jobs waiting.
    pub queued: usize,
    pub running: usize,
    /// Allocated GPUs over the fleet's GPUs.
    pub utilization: f64,
    /// Base price of each class (the order of [`Outcome::classes`]), micro-units per GPU-hour.
    pub base_micros: Vec<u64>,
    /// GPU-weighted mean effective price of the workers placed since the previous sample.
    pub paid_micros: Option<u64>,
}

/// Everything a run produced.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// By job, in the order of the jobs given.
    pub fates: Vec<Fate>,
    pub workers: Vec<Worker>,
    pub samples: Vec<Sample>,
    /// GPU classes of the fleet, sorted.
    pub classes: Vec<String>,
    pub fleet_gpus: u64,
    /// Allocated GPU-milliseconds over the whole run.
    pub allocated_gpu_ms: u128,
    /// From the first arrival to the last: while jobs keep coming, before the queue drains.
    pub arrivals_ms: (u64, u64),
    /// Allocated GPU-milliseconds within `arrivals_ms`.
    pub allocated_gpu_ms_arriving: u128,
    /// Virtual time of the last event.
    pub end_ms: u64,
    /// Usage receipts (one final cumulative receipt per worker) and their total.
    pub receipts: u64,
    pub receipts_micros: u64,
    /// Arrivals, completions, price epochs and scheduling cycles processed.
    pub events: u64,
    /// Calls to the scheduler.
    pub decisions: u64,
    /// Node failures, workers they killed, and jobs sent back to the queue for another attempt.
    pub node_failures: u64,
    pub workers_lost: u64,
    pub retries: u64,
}

/// A running job.
struct Running {
    attempt: u32,
    /// Its workers' positions in [`Outcome::workers`].
    workers: Vec<usize>,
    slots: Vec<Slot>,
    /// (class, GPUs) per slot.
    classes: Vec<(usize, u64)>,
    start_ms: u64,
}

/// The simulated hub.
struct Hub<'a> {
    jobs: &'a [TraceJob],
    config: Config,
    index: Index,
    /// The idle fleet, for telling unplaceable jobs from waiting ones.
    idle: Index,
    network: SimNetwork,
    /// Refuses, without asking the scheduler, jobs that cannot fit (see [`Gate`]).
    gate: Gate,
    book: PriceBook,
    /// The book as it starts (every class at the initial price), for the idle check.
    floor_book: PriceBook,
    weights: Weights,
    classes: Vec<String>,
    class_of: HashMap<String, usize>,
    offered: Vec<u64>,
    allocated: Vec<u64>,
    /// GPUs placed per class since the last pricing epoch (`ClassUsage::placed_gpus`).
    placed: Vec<u64>,
    /// Distinct requests; jobs refer to them by position.
    shapes: Vec<Request>,
    shape_of: Vec<usize>,
    /// Per shape: whether it fits the idle fleet (`None`: not checked yet), and if not, why.
    idle_fit: Vec<Option<Result<(), &'static str>>>,
    /// Waiting jobs, oldest first; those from `first_new` on were never tried.
    queue: Vec<usize>,
    first_new: usize,
    /// GPUs were freed or a price fell since the last full cycle.
    stale: bool,
    /// Counts frees and price falls, to date failures against.
    clock: u64,
    /// Per (region, model) pair of the index's names: the clock of the last free there.
    freed_at: Vec<u64>,
    price_fell_at: u64,
    /// Per shape: the clock when it last failed to fit.
    failed_at: Vec<Option<u64>>,
    /// Per shape: the (region, model) pairs it accepts, once asked.
    pairs: Vec<Option<Vec<usize>>>,
    /// Per shape: the last cycle that found nothing changed for it, so its other jobs in that
    /// cycle are passed over without looking again.
    unchanged_in: Vec<u64>,
    cycles: u64,
    /// The last arrival or placement.
    last_progress: u64,
    refresh_at: u64,
    running: HashMap<usize, Running>,
    /// (time, job, attempt): an attempt that was lost meanwhile finds no match and is ignored.
    completions: BinaryHeap<Reverse<(u64, usize, u32)>>,
    /// Requests by their text, to give retried jobs (which exclude nodes) their shape.
    shape_ids: HashMap<String, usize>,
    /// Failed attempts per job.
    attempts: Vec<u32>,
    /// (time, node, whether it comes back up).
    node_events: BinaryHeap<Reverse<(u64, NodeKey, bool)>>,
    /// Each node as it is when healthy and idle, by key.
    originals: Vec<Option<scheduler::NodeView>>,
    nodes_down: usize,
    rng: SplitMix64,
    out: Outcome,
    paid: (u128, u64),
}

/// Runs `jobs` (sorted by arrival) on `fleet`; `progress` is told how many jobs have arrived,
/// now and then.
pub fn run(
    fleet: &Fleet,
    jobs: &[TraceJob],
    config: Config,
    progress: &mut dyn FnMut(usize),
) -> anyhow::Result<Outcome> {
    let (index, network) = fleet.index();
    let mut classes: Vec<String> = fleet
        .nodes
        .iter()
        .flat_map(|n| n.gpus.iter().map(|g| g.model.clone()))
        .collect();
    classes.sort();
    classes.dedup();
    let class_of: HashMap<String, usize> = classes
        .iter()
        .enumerate()
        .map(|(i, c)| (c.clone(), i))
        .collect();
    let mut offered = vec![0; classes.len()];
    for gpu in fleet.nodes.iter().flat_map(|n| &n.gpus) {
        offered[class_of[&gpu.model]] += 1;
    }
    let book = PriceBook::new(config.pricing)?;
    let mut shapes = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let shape_of = jobs
        .iter()
        .map(|job| {
            let request = api::scheduling::request_for(&job.spec());
            *seen.entry(format!("{request:?}")).or_insert_with(|| {
                shapes.push(request);
                shapes.len() - 1
            })
        })
        .collect();
    let index_pairs = index.region_ids().count() * index.model_ids().count();
    let shape_count = shapes.len();
    let mut originals = Vec::new();
    for (key, entry) in index.iter() {
        if key as usize >= originals.len() {
            originals.resize(key as usize + 1, None);
        }
        originals[key as usize] = Some(entry.node.clone());
    }
    let mut rng = SplitMix64::new(config.seed ^ 0xFA11_0000);
    let mut node_events = BinaryHeap::new();
    if config.node_mtbf_ms > 0 {
        for (key, _) in index.iter() {
            node_events.push(Reverse((
                exponential(&mut rng, config.node_mtbf_ms),
                key,
                false,
            )));
        }
    }
    let hub = Hub {
        jobs,
        config,
        gate: Gate::new(&index, &network),
        idle: index.clone(),
        index,
        network,
        floor_book: book.clone(),
        book,
        weights: Weights::default(),
        allocated: vec![0; classes.len()],
        placed: vec![0; classes.len()],
        out: Outcome {
            fates: vec![Fate::Queued; jobs.len()],
            workers: Vec::new(),
            samples: Vec::new(),
            classes: classes.clone(),
            fleet_gpus: offered.iter().sum(),
            allocated_gpu_ms: 0,
            arrivals_ms: (
                jobs.first().map_or(0, |j| j.arrival_ms),
                jobs.last().map_or(0, |j| j.arrival_ms),
            ),
            allocated_gpu_ms_arriving: 0,
            end_ms: 0,
            receipts: 0,
            receipts_micros: 0,
            events: 0,
            decisions: 0,
            node_failures: 0,
            workers_lost: 0,
            retries: 0,
        },
        classes,
        class_of,
        offered,
        idle_fit: vec![None; shapes.len()],
        shapes,
        shape_of,
        queue: Vec::new(),
        first_new: 0,
        stale: false,
        clock: 0,
        freed_at: vec![0; index_pairs],
        price_fell_at: 0,
        failed_at: vec![None; shape_count],
        pairs: vec![None; shape_count],
        unchanged_in: vec![u64::MAX; shape_count],
        cycles: 0,
        last_progress: 0,
        refresh_at: 0,
        running: HashMap::new(),
        completions: BinaryHeap::new(),
        shape_ids: seen,
        attempts: vec![0; jobs.len()],
        node_events,
        originals,
        nodes_down: 0,
        rng,
        paid: (0, 0),
    };
    Ok(hub.run(progress))
}

impl Hub<'_> {
    fn run(mut self, progress: &mut dyn FnMut(usize)) -> Outcome {
        let mut now = 0;
        let mut next_arrival = 0;
        let mut next_epoch = self.config.price_epoch_ms;
        let mut next_sample = 0;
        loop {
            let arrival = self.jobs.get(next_arrival).map(|j| j.arrival_ms);
            let completion = self.completions.peek().map(|Reverse((t, _, _))| *t);
            let node_event = self.node_events.peek().map(|Reverse((t, _, _))| *t);
            let retry = (self.stale && self.first_new > 0).then_some(self.refresh_at.max(now));
            if arrival.is_none()
                && completion.is_none()
                && (self.queue.is_empty() || retry.is_none())
            {
                // Nothing runs and nothing arrives: only a falling price or a node coming back
                // could still place a waiting job; a day without either placing one ends it.
                if self.queue.is_empty()
                    || (!self.epoch_would_lower_prices() && self.nodes_down == 0)
                    || now > self.last_progress + 24 * 3_600_000
                {
                    break;
                }
            }
            let mut t = [
                arrival,
                completion,
                node_event,
                retry,
                Some(next_epoch),
                Some(next_sample),
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(now);
            t = t.max(now);
            let allocated: u64 = self.allocated.iter().sum();
            self.out.allocated_gpu_ms += u128::from(allocated) * u128::from(t - now);
            let (first, last) = self.out.arrivals_ms;
            let overlap = t.min(last).saturating_sub(now.max(first));
            self.out.allocated_gpu_ms_arriving += u128::from(allocated) * u128::from(overlap);
            now = t;

            while let Some(Reverse((at, job, attempt))) = self.completions.peek().copied() {
                if at > now {
                    break;
                }
                self.completions.pop();
                if self.running.get(&job).is_some_and(|r| r.attempt == attempt) {
                    self.finish(job, now);
                }
            }
            while let Some(Reverse((at, key, up))) = self.node_events.peek().copied() {
                if at > now {
                    break;
                }
                self.node_events.pop();
                if up {
                    self.node_up(key, now);
                } else {
                    self.node_down(key, now);
                }
            }
            if now == next_epoch {
                self.epoch();
                next_epoch += self.config.price_epoch_ms;
            }
            let before = next_arrival;
            while self
                .jobs
                .get(next_arrival)
                .is_some_and(|j| j.arrival_ms <= now)
            {
                self.queue.push(next_arrival);
                next_arrival += 1;
                self.out.events += 1;
                self.last_progress = now;
            }
            if next_arrival / 256 != before / 256 {
                progress(next_arrival);
            }
            self.schedule(now);
            if now == next_sample {
                self.sample(now);
                next_sample += self.config.sample_ms;
            }
            self.out.end_ms = now;
        }
        progress(next_arrival);
        for &job in &self.queue {
            self.out.fates[job] = Fate::Queued;
        }
        self.out
    }

    /// A scheduling cycle if one is due: the whole queue once freed GPUs are visible, else the
    /// jobs that just arrived (unless older jobs wait for a refresh they should get first).
    fn schedule(&mut self, now: u64) {
        let old_waiting = self.first_new > 0;
        if self.stale && old_waiting {
            if now >= self.refresh_at {
                self.cycle(0, now);
                self.stale = false;
                self.refresh_at = now + self.config.fleet_refresh_ms;
            }
        } else if self.first_new < self.queue.len() {
            self.cycle(self.first_new, now);
            if !old_waiting {
                self.stale = false;
            }
        }
    }

    /// Tries the queue from position `from`, oldest first.
    fn cycle(&mut self, from: usize, now: u64) {
        self.out.events += 1;
        self.cycles += 1;
        let mut waiting = Vec::with_capacity(self.queue.len());
        waiting.extend_from_slice(&self.queue[..from]);
        let tried = std::mem::take(&mut self.queue);
        for &job in &tried[from..] {
            let shape = self.shape_of[job];
            if self.unchanged_in[shape] == self.cycles
                || self.failed_at[shape].is_some_and(|at| !self.changed_since(shape, at))
            {
                self.unchanged_in[shape] = self.cycles;
                waiting.push(job);
                continue;
            }
            let request = &self.shapes[shape];
            let placed = if self
                .gate
                .admits(&self.index, &self.network, &self.book, request)
            {
                self.out.decisions += 1;
                scheduler::place(
                    &mut self.index,
                    &self.network,
                    &self.book,
                    request,
                    &self.weights,
                )
                .ok()
            } else {
                None
            };
            match placed {
                Some(slots) => {
                    for slot in &slots {
                        self.gate.refresh(&self.index, slot.node);
                    }
                    self.start(job, slots, now)
                }
                None => {
                    self.failed_at[shape] = Some(self.clock);
                    match self.fits_idle(shape) {
                        Ok(()) => waiting.push(job),
                        Err(reason) => self.out.fates[job] = Fate::Unplaceable(reason),
                    }
                }
            }
        }
        self.queue = waiting;
        self.first_new = self.queue.len();
    }

    /// Whether GPUs were freed where `shape` could run, or a price fell, after clock `at`.
    fn changed_since(&mut self, shape: usize, at: u64) -> bool {
        if self.price_fell_at > at {
            return true;
        }
        let index = &self.index;
        let pairs = self.pairs[shape].get_or_insert_with(|| {
            let request = &self.shapes[shape];
            let models = index.model_ids().count();
            let regions: Vec<usize> = if request.regions.is_empty() {
                index.region_ids().map(usize::from).collect()
            } else {
                request
                    .regions
                    .iter()
                    .filter_map(|r| index.region_id(r))
                    .map(usize::from)
                    .collect()
            };
            let wanted: Vec<usize> = if request.models.is_empty() {
                index.model_ids().map(usize::from).collect()
            } else {
                request
                    .models
                    .iter()
                    .filter_map(|m| index.model_id(m))
                    .map(usize::from)
                    .collect()
            };
            regions
                .iter()
                .flat_map(|r| wanted.iter().map(move |m| r * models + m))
                .collect()
        });
        pairs.iter().any(|p| self.freed_at[*p] > at)
    }

    /// Whether requests of `shape` fit the idle fleet at the floor price (checked once).
    fn fits_idle(&mut self, shape: usize) -> Result<(), &'static str> {
        if let Some(known) = self.idle_fit[shape] {
            return known;
        }
        let request = &self.shapes[shape];
        let fit = match scheduler::place(
            &mut self.idle,
            &self.network,
            &self.floor_book,
            request,
            &self.weights,
        ) {
            Ok(slots) => {
                scheduler::release(&mut self.idle, &slots);
                Ok(())
            }
            Err(why) if why.unmet_link_bounds.is_some() => Err("LinkBounds"),
            Err(why) => Err(why
                .rejections
                .iter()
                .max_by_key(|(reason, n)| (**n, Reverse(**reason)))
                .map_or("NoNodes", |(reason, _)| reason.name())),
        };
        self.idle_fit[shape] = Some(fit);
        fit
    }

    fn start(&mut self, job: usize, slots: Vec<Slot>, now: u64) {
        let spec = &self.jobs[job];
        self.last_progress = now;
        let attempt = self.attempts[job];
        let mut workers = Vec::with_capacity(slots.len());
        let mut classes = Vec::with_capacity(slots.len());
        let (mut cost, mut gpus) = (0u128, 0u64);
        for slot in &slots {
            let class = self.class_of_slot(slot.node, slot);
            let n = slot.gpus.len() as u64;
            classes.push((class, n));
            self.allocated[class] += n;
            self.placed[class] += n;
            cost += u128::from(slot.price_micros) * u128::from(n);
            gpus += n;
            workers.push(self.out.workers.len());
            self.out.workers.push(Worker {
                job,
                attempt,
                rank: slot.rank,
                node: self.node_name(slot.node),
                gpus: slot.gpus.clone(),
                price_micros: slot.price_micros,
                start_ms: now,
                end_ms: now + spec.duration_ms,
                lost: false,
            });
        }
        self.paid.0 += cost;
        self.paid.1 += gpus;
        let user_latency_ms = slots.first().and_then(|slot| {
            let region = self.shapes[self.shape_of[job]].user_region.as_deref()?;
            scheduler::Network::rtt_to_region_ms(&self.network, slot.node, region)
        });
        // A retried job waited from its arrival to its first placement.
        let at_ms = match self.out.fates[job] {
            Fate::Placed { at_ms, .. } => at_ms,
            _ => now,
        };
        self.out.fates[job] = Fate::Placed {
            at_ms,
            price_micros: (cost / u128::from(gpus.max(1))) as u64,
            user_latency_ms,
        };
        self.completions
            .push(Reverse((now + spec.duration_ms, job, attempt)));
        self.running.insert(
            job,
            Running {
                attempt,
                workers,
                slots,
                classes,
                start_ms: now,
            },
        );
    }

    fn finish(&mut self, job: usize, now: u64) {
        self.out.events += 1;
        if let Some(run) = self.running.remove(&job) {
            self.release(job, run, now);
        }
    }

    /// Frees a run's GPUs and pays its workers' receipts up to `now`.
    fn release(&mut self, job: usize, run: Running, now: u64) {
        for &w in &run.workers {
            self.out.workers[w].end_ms = now;
        }
        scheduler::release(&mut self.index, &run.slots);
        self.clock += 1;
        let models = self.index.model_ids().count();
        for slot in &run.slots {
            self.gate.refresh(&self.index, slot.node);
            if let Some(entry) = self.index.entry(slot.node)
                && let Some(i) = entry
                    .node
                    .gpus
                    .iter()
                    .position(|g| slot.gpus.first() == Some(&g.uuid))
            {
                self.freed_at[usize::from(entry.region) * models + usize::from(entry.models[i])] =
                    self.clock;
            }
        }
        for ((class, n), slot) in run.classes.iter().zip(&run.slots) {
            self.allocated[*class] -= n;
            let receipt = Receipt {
                network: crds::agent::DEFAULT_NETWORK.to_string(),
                node: self.node_name(slot.node),
                job: format!("sim-job-{job}"),
                assignment: format!("sim-asg-{job}-{}-{}", run.attempt, slot.rank),
                sequence: 1,
                price_micros_per_gpu_hour: slot.price_micros,
                gpus: *n as u32,
                started_at_ms: run.start_ms,
                until_ms: now,
                gpu_millis: n * (now - run.start_ms),
            };
            self.out.receipts += 1;
            self.out.receipts_micros += receipt.amount_micros();
        }
        self.stale = true;
    }

    /// A node fails: its workers are lost, their jobs retried elsewhere or failed, and its GPUs
    /// leave the market until it comes back.
    fn node_down(&mut self, key: NodeKey, now: u64) {
        let Some(Some(view)) = self.originals.get(key as usize).cloned() else {
            return;
        };
        self.out.events += 1;
        self.out.node_failures += 1;
        self.nodes_down += 1;
        let mut lost: Vec<usize> = self
            .running
            .iter()
            .filter(|(_, run)| run.slots.iter().any(|s| s.node == key))
            .map(|(job, _)| *job)
            .collect();
        lost.sort_unstable();
        for job in lost {
            let Some(run) = self.running.remove(&job) else {
                continue;
            };
            self.out.workers_lost += run.slots.len() as u64;
            for (&w, slot) in run.workers.iter().zip(&run.slots) {
                self.out.workers[w].lost = slot.node == key;
            }
            self.release(job, run, now);
            self.attempts[job] += 1;
            if self.attempts[job] < self.jobs[job].max_attempts {
                self.retry(job, &view.name);
            } else {
                self.out.fates[job] = Fate::Failed("NodeLost");
            }
        }
        for gpu in view.gpus.iter().filter(|g| g.healthy) {
            self.offered[self.class_of[&gpu.model]] -= 1;
        }
        let mut down = view;
        down.ready = false;
        self.index.apply(down);
        self.gate.refresh(&self.index, key);
        let back = now + exponential(&mut self.rng, self.config.node_repair_ms).max(1);
        self.node_events.push(Reverse((back, key, true)));
    }

    /// A failed node is back, idle.
    fn node_up(&mut self, key: NodeKey, now: u64) {
        let Some(Some(view)) = self.originals.get(key as usize).cloned() else {
            return;
        };
        self.out.events += 1;
        self.nodes_down -= 1;
        for gpu in view.gpus.iter().filter(|g| g.healthy) {
            self.offered[self.class_of[&gpu.model]] += 1;
        }
        self.index.apply(view);
        self.gate.refresh(&self.index, key);
        self.clock += 1;
        if let Some(entry) = self.index.entry(key) {
            let models = self.index.model_ids().count();
            for model in &entry.models {
                self.freed_at[usize::from(entry.region) * models + usize::from(*model)] =
                    self.clock;
            }
        }
        self.stale = true;
        let next = now + exponential(&mut self.rng, self.config.node_mtbf_ms).max(1);
        self.node_events.push(Reverse((next, key, false)));
    }

    /// Sends a job whose node failed back to the queue, in its place by age, never to be placed
    /// on `node` again.
    fn retry(&mut self, job: usize, node: &str) {
        self.out.retries += 1;
        let mut request = self.shapes[self.shape_of[job]].clone();
        request.excluded_nodes.push(node.to_string());
        let key = format!("{request:?}");
        let shape = match self.shape_ids.get(&key) {
            Some(shape) => *shape,
            None => {
                self.shapes.push(request);
                self.idle_fit.push(None);
                self.failed_at.push(None);
                self.pairs.push(None);
                self.unchanged_in.push(u64::MAX);
                self.shape_ids.insert(key, self.shapes.len() - 1);
                self.shapes.len() - 1
            }
        };
        self.shape_of[job] = shape;
        let at = self.queue.partition_point(|&waiting| waiting < job);
        self.queue.insert(at, job);
        if at <= self.first_new {
            self.first_new += 1;
        }
        self.stale = true;
    }

    /// Closes a pricing epoch: utilization per class moves the base prices.
    fn epoch(&mut self) {
        self.out.events += 1;
        let before = self.book.clone();
        self.book.advance_epoch(&self.usage());
        self.placed.fill(0);
        if self
            .classes
            .iter()
            .any(|c| self.book.base_price(c) < before.base_price(c))
        {
            // Jobs too poor for the old prices may fit now.
            self.stale = true;
            self.clock += 1;
            self.price_fell_at = self.clock;
        }
    }

    /// Whether the next epoch would lower a price (nothing is running, so utilization is 0 and
    /// every price above the floor falls).
    fn epoch_would_lower_prices(&self) -> bool {
        let mut book = self.book.clone();
        book.advance_epoch(&self.usage());
        self.classes
            .iter()
            .any(|c| book.base_price(c) < self.book.base_price(c))
    }

    fn usage(&self) -> Vec<ClassUsage> {
        self.classes
            .iter()
            .enumerate()
            .map(|(i, class)| ClassUsage {
                class: class.clone(),
                allocated_gpu_ms: self.allocated[i],
                offered_gpu_ms: self.offered[i],
                placed_gpus: self.placed[i],
            })
            .collect()
    }

    fn sample(&mut self, now: u64) {
        let allocated: u64 = self.allocated.iter().sum();
        let paid = std::mem::take(&mut self.paid);
        self.out.samples.push(Sample {
            at_ms: now,
            queued: self.queue.len(),
            running: self.running.len(),
            utilization: allocated as f64 / self.out.fleet_gpus.max(1) as f64,
            base_micros: self
                .classes
                .iter()
                .map(|c| self.book.base_price(c))
                .collect(),
            paid_micros: (paid.1 > 0).then(|| (paid.0 / u128::from(paid.1)) as u64),
        });
    }

    fn class_of_slot(&self, key: NodeKey, slot: &Slot) -> usize {
        self.index
            .entry(key)
            .and_then(|e| {
                e.node
                    .gpus
                    .iter()
                    .find(|g| slot.gpus.first() == Some(&g.uuid))
            })
            .and_then(|g| self.class_of.get(&g.model).copied())
            .unwrap_or(0)
    }

    fn node_name(&self, key: NodeKey) -> String {
        self.index
            .entry(key)
            .map(|e| e.node.name.clone())
            .unwrap_or_default()
    }
}

/// An exponential draw with mean `mean_ms`.
fn exponential(rng: &mut SplitMix64, mean_ms: u64) -> u64 {
    // 1 − u is in (0, 1], so the logarithm is finite.
    (-(1.0 - rng.next_f64()).ln() * mean_ms as f64) as u64
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use crds::v1alpha1::JobKind;
    use scheduler::{GpuView, NodeView};

    use super::*;
    use crate::simulate::{fleet::Link, report::Report, workload};

    fn generated(seed: u64) -> (Fleet, Vec<TraceJob>, Outcome) {
        let fleet = Fleet::generate(150, seed);
        let jobs = workload::generate(1_500, fleet.gpus(), 0.9, seed);
        let outcome = run(&fleet, &jobs, Config::default(), &mut |_| {}).unwrap();
        (fleet, jobs, outcome)
    }

    /// A fleet of `gpus` H100s on one node in virginia, asking 2.00.
    fn one_node(gpus: usize) -> Fleet {
        Fleet {
            nodes: vec![NodeView {
                name: "sim-00000".into(),
                region: "virginia".into(),
                price_micros: 2_000_000,
                ready: true,
                capabilities: vec!["container".into()],
                gpus: (0..gpus)
                    .map(|g| GpuView {
                        uuid: format!("gpu{g}"),
                        model: "H100-80GB".into(),
                        memory_gib: 80,
                        compute_capability: (9, 0),
                        healthy: true,
                        allocated: false,
                    })
                    .collect(),
                reputation_bps: 10_000,
                ..NodeView::default()
            }],
            links: vec![Link {
                region: 1,
                last_mile_ms: 1.0,
                uplink_mbps: 1_000.0,
                downlink_mbps: 1_000.0,
            }],
        }
    }

    fn job(arrival_s: u64, gpus: u32, price_micros: u64, duration_s: u64) -> TraceJob {
        TraceJob {
            arrival_ms: arrival_s * 1000,
            kind: JobKind::Batch,
            workers: 1,
            gpus_per_worker: gpus,
            models: Vec::new(),
            min_memory_gib: None,
            max_price_micros: price_micros,
            regions: Vec::new(),
            user_region: None,
            max_latency_ms: None,
            min_bandwidth_mbps: None,
            duration_ms: duration_s * 1000,
            max_attempts: 1,
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_run() {
        let (_, _, a) = generated(11);
        let (_, _, b) = generated(11);
        assert_eq!(a.fates, b.fates);
        assert_eq!(a.workers, b.workers);
        assert_eq!(a.samples, b.samples);
        assert_eq!(
            (a.receipts, a.receipts_micros),
            (b.receipts, b.receipts_micros)
        );
        let (_, _, c) = generated(12);
        assert_ne!(a.workers, c.workers, "another seed, another run");
    }

    #[test]
    fn every_job_is_placed_unplaceable_or_still_queued_and_placed_ones_ran_whole() {
        let (_, jobs, outcome) = generated(5);
        let placed = outcome
            .fates
            .iter()
            .filter(|f| matches!(f, Fate::Placed { .. }))
            .count();
        assert!(placed > jobs.len() / 2, "most jobs run: {placed}");
        let mut workers_of: BTreeMap<usize, Vec<&Worker>> = BTreeMap::new();
        for w in &outcome.workers {
            workers_of.entry(w.job).or_default().push(w);
        }
        for (i, (job, fate)) in jobs.iter().zip(&outcome.fates).enumerate() {
            let workers = workers_of.get(&i).map_or(0, Vec::len);
            match fate {
                Fate::Placed { at_ms, .. } => {
                    assert!(*at_ms >= job.arrival_ms);
                    assert_eq!(workers, job.workers as usize, "job {i}: every worker once");
                    for w in &workers_of[&i] {
                        assert_eq!(w.end_ms - w.start_ms, job.duration_ms);
                        assert!(w.end_ms <= outcome.end_ms, "finished by the end");
                    }
                }
                Fate::Unplaceable(_) | Fate::Queued | Fate::Failed(_) => {
                    assert_eq!(workers, 0, "job {i}")
                }
            }
        }
        assert_eq!(
            outcome.receipts,
            outcome.workers.len() as u64,
            "one receipt per worker"
        );
        let report = Report::new(
            "generated".into(),
            5,
            &Fleet::generate(150, 5),
            &jobs,
            &outcome,
            1.0,
        );
        assert_eq!(
            report.jobs.placed + report.jobs.unplaceable + report.jobs.queued_at_end,
            jobs.len() as u64
        );
        assert!(report.utilization > 0.0 && report.utilization <= 1.0);
    }

    #[test]
    fn a_job_only_runs_on_free_gpus_of_the_model_and_memory_it_asked_for() {
        let (fleet, jobs, outcome) = generated(9);
        let gpus: HashMap<&str, (&str, &GpuView)> = fleet
            .nodes
            .iter()
            .flat_map(|n| {
                n.gpus
                    .iter()
                    .map(move |g| (g.uuid.as_str(), (n.name.as_str(), g)))
            })
            .collect();
        let mut busy: BTreeMap<&str, Vec<(u64, u64)>> = BTreeMap::new();
        for w in &outcome.workers {
            let job = &jobs[w.job];
            assert_eq!(w.gpus.len(), job.gpus_per_worker as usize);
            for uuid in &w.gpus {
                let (node, gpu) = gpus[uuid.as_str()];
                assert_eq!(node, w.node, "the GPU is on the worker's node");
                assert!(job.models.is_empty() || job.models.contains(&gpu.model));
                assert!(gpu.memory_gib >= job.min_memory_gib.unwrap_or(0));
                assert!(
                    job.regions.is_empty()
                        || job.regions.iter().any(|r| {
                            fleet
                                .nodes
                                .iter()
                                .any(|n| n.name == w.node && &n.region == r)
                        })
                );
                assert!(w.price_micros <= job.max_price_micros);
                busy.entry(uuid).or_default().push((w.start_ms, w.end_ms));
            }
        }
        for (uuid, mut spans) in busy {
            spans.sort_unstable();
            assert!(
                spans.windows(2).all(|s| s[0].1 <= s[1].0),
                "{uuid} held by two workers at once"
            );
        }
    }

    #[test]
    fn waits_on_a_hand_built_trace() {
        // One GPU, four 10-second jobs arriving together: they run one after another.
        let fleet = one_node(1);
        let jobs: Vec<TraceJob> = (0..4).map(|_| job(0, 1, 3_000_000, 10)).collect();
        let outcome = run(&fleet, &jobs, Config::default(), &mut |_| {}).unwrap();
        let starts: Vec<u64> = outcome
            .fates
            .iter()
            .map(|f| match f {
                Fate::Placed { at_ms, .. } => *at_ms,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(starts, [0, 10_000, 20_000, 30_000]);
        let report = Report::new("test".into(), 0, &fleet, &jobs, &outcome, 1.0);
        assert_eq!(report.wait_ms.p50, 10_000);
        assert_eq!(report.wait_ms.p99, 30_000);
        assert_eq!(report.wait_ms.mean, 15_000);
        assert_eq!(report.jobs.placed, 4);
        // 4 receipts of 10 GPU-seconds at 2.00 per GPU-hour: ceil(10,000 × 2,000,000 / 3,600,000).
        assert_eq!(report.receipts.count, 4);
        assert_eq!(report.receipts.total_micros, 4 * 5_556);
        assert_eq!(report.mean_price_micros_per_gpu_hour, 2_000_000);
        assert!(
            (report.utilization - 1.0).abs() < 1e-9,
            "{}",
            report.utilization
        );
    }

    #[test]
    fn jobs_that_cannot_fit_an_idle_fleet_are_unplaceable_with_the_reason() {
        let fleet = one_node(2);
        let jobs = vec![
            job(0, 4, 3_000_000, 10), // more GPUs than any node has
            job(1, 1, 1_000_000, 10), // below the ask
            job(2, 2, 3_000_000, 10), // fits
        ];
        let outcome = run(&fleet, &jobs, Config::default(), &mut |_| {}).unwrap();
        assert_eq!(outcome.fates[0], Fate::Unplaceable("NoMatchingGpu"));
        assert_eq!(outcome.fates[1], Fate::Unplaceable("TooExpensive"));
        assert!(matches!(
            outcome.fates[2],
            Fate::Placed { at_ms: 2_000, .. }
        ));
    }

    #[test]
    fn a_busy_class_gets_dearer_only_while_jobs_take_it() {
        // One GPU busy for ten minutes: utilization 100 % > 80 % target. The epoch that placed
        // the job raises the H100 base price by the market's full step (12.5 %) from the floor;
        // after it nothing new takes the class, so the price holds (scheduler::pricing).
        let fleet = one_node(1);
        let outcome = run(
            &fleet,
            &[job(0, 1, 3_000_000, 600)],
            Config::default(),
            &mut |_| {},
        )
        .unwrap();
        let h100 = outcome
            .classes
            .iter()
            .position(|c| c == "H100-80GB")
            .unwrap();
        let prices: Vec<u64> = outcome
            .samples
            .iter()
            .filter(|s| s.at_ms < 600_000)
            .map(|s| s.base_micros[h100])
            .collect();
        assert_eq!(prices.len(), 10);
        assert_eq!(prices[0], 10_000, "the floor before the first epoch");
        assert!(prices[1..].iter().all(|&p| p == 11_250), "{prices:?}");
        assert!(
            outcome
                .samples
                .iter()
                .all(|s| (s.utilization == 1.0) == (s.at_ms < 600_000))
        );
    }

    #[test]
    fn jobs_lost_with_their_nodes_are_retried_elsewhere_or_fail() {
        let fleet = Fleet::generate(150, 21);
        let mut jobs = workload::generate(1_500, fleet.gpus(), 0.9, 21);
        for (i, job) in jobs.iter_mut().enumerate() {
            // Every third job gets one attempt only.
            if i % 3 == 0 {
                job.max_attempts = 1;
            }
        }
        let config = Config {
            node_mtbf_ms: 20 * 3_600_000,
            node_repair_ms: 3_600_000,
            seed: 21,
            ..Config::default()
        };
        let outcome = run(&fleet, &jobs, config, &mut |_| {}).unwrap();
        assert!(outcome.node_failures > 50, "{}", outcome.node_failures);
        assert!(outcome.retries > 10 && outcome.workers_lost >= outcome.retries);
        let again = run(&fleet, &jobs, config, &mut |_| {}).unwrap();
        assert_eq!(
            (outcome.fates.clone(), outcome.workers.clone()),
            (again.fates, again.workers)
        );

        // (node, attempt) where each job lost a worker: no later attempt may use that node (a
        // gang's other worker on the same node in the same attempt was lost with it).
        let mut lost_on: BTreeMap<usize, Vec<(&str, u32)>> = BTreeMap::new();
        let mut attempts: BTreeMap<usize, u32> = BTreeMap::new();
        for w in &outcome.workers {
            let job = &jobs[w.job];
            assert!(
                !lost_on.get(&w.job).is_some_and(|lost| lost
                    .iter()
                    .any(|(node, attempt)| *node == w.node && *attempt < w.attempt)),
                "job {} placed again on {}, where it failed",
                w.job,
                w.node
            );
            if w.lost {
                lost_on.entry(w.job).or_default().push((&w.node, w.attempt));
                assert!(
                    w.end_ms - w.start_ms < job.duration_ms,
                    "lost before its end"
                );
            }
            let last = attempts.entry(w.job).or_default();
            *last = (*last).max(w.attempt);
        }
        let mut failed = 0;
        for (i, fate) in outcome.fates.iter().enumerate() {
            let tries = attempts.get(&i).map_or(0, |a| a + 1);
            assert!(tries <= jobs[i].max_attempts, "job {i} ran {tries} times");
            match fate {
                Fate::Failed(reason) => {
                    assert_eq!(*reason, "NodeLost");
                    assert_eq!(
                        tries, jobs[i].max_attempts,
                        "failed only when out of attempts"
                    );
                    failed += 1;
                }
                Fate::Placed { .. } => {
                    let last = outcome
                        .workers
                        .iter()
                        .filter(|w| w.job == i && w.attempt + 1 == tries);
                    for w in last {
                        assert!(!w.lost);
                        assert_eq!(w.end_ms - w.start_ms, jobs[i].duration_ms, "ran whole");
                    }
                }
                _ => {}
            }
        }
        assert!(failed > 0, "single-attempt jobs on failed nodes fail");
        let report = Report::new("generated".into(), 21, &fleet, &jobs, &outcome, 1.0);
        assert_eq!(
            report.jobs.placed
                + report.jobs.unplaceable
                + report.jobs.failed
                + report.jobs.queued_at_end,
            jobs.len() as u64
        );
        assert_eq!(report.failures.by_reason.get("NodeLost"), Some(&failed));
        assert_eq!(
            outcome.receipts,
            outcome.workers.len() as u64,
            "lost workers are paid too"
        );
    }
}
