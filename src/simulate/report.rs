//! The report of a run: figures computed from the engine's [`Outcome`], printed as a summary for
//! people or as JSON with stable keys (docs/simulate.md lists them).

use std::collections::BTreeMap;

use serde::Serialize;

use super::{
    engine::{Fate, Outcome},
    fleet::Fleet,
    trace::TraceJob,
};

/// The JSON report. Keys are stable: new ones may be added, none renamed or removed.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Always true: the fleet, the network and the jobs' run times are simulated.
    pub simulated: bool,
    /// `generated` or the trace's path.
    pub source: String,
    /// The seed of the fleet (and of the jobs with `--generate`).
    pub seed: u64,
    pub fleet: FleetFigures,
    pub jobs: JobFigures,
    pub failures: Failures,
    pub node_failures: NodeFailures,
    /// Time from arrival to placement of the placed jobs, in milliseconds.
    pub wait_ms: Wait,
    /// Allocated GPU-time over the fleet's GPU-time from the first to the last arrival, while
    /// jobs keep coming (0..=1); over the whole run when they all arrive at once.
    pub utilization: f64,
    /// The same from the start to the last event, the queue's drain included.
    pub utilization_to_end: f64,
    /// Effective price per GPU-hour averaged over GPU-time, micro-units.
    pub mean_price_micros_per_gpu_hour: u64,
    /// Per GPU class: its highest and its last base price per GPU-hour, micro-units.
    pub base_prices: BTreeMap<String, BasePrice>,
    /// Mean RTT from a job's user region to its node (jobs naming a `userRegion`), ms.
    pub mean_user_latency_ms: Option<f64>,
    pub jobs_with_user_region: u64,
    pub receipts: Receipts,
    /// Virtual time from the start to the last event, seconds.
    pub virtual_seconds: f64,
    /// Virtual time of the last arrival, seconds: `utilization` is measured up to here.
    pub last_arrival_seconds: f64,
    /// Arrivals, completions, price epochs and scheduling cycles processed.
    pub events: u64,
    /// Calls to the scheduler (`scheduler::place`).
    pub decisions: u64,
    /// Wall-clock time of the simulation (fleet and jobs built, engine run), seconds.
    pub wall_seconds: f64,
    pub events_per_second: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct FleetFigures {
    pub nodes: u64,
    pub gpus: u64,
    /// Nodes per region.
    pub regions: BTreeMap<String, u64>,
    /// GPUs per model.
    pub gpu_models: BTreeMap<String, u64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct JobFigures {
    pub total: u64,
    /// Placed and run to the end (after retries, for jobs whose nodes failed).
    pub placed: u64,
    pub unplaceable: u64,
    /// Ran out of attempts after node failures.
    pub failed: u64,
    pub queued_at_end: u64,
    /// Per kind (`Inference`, `Batch`, `Training`): total, placed and their waits.
    pub by_kind: BTreeMap<String, KindFigures>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct KindFigures {
    pub total: u64,
    pub placed: u64,
    pub wait_ms: Wait,
}

/// Jobs that did not finish, by reason: the scheduler's main rejection for unplaceable jobs
/// (`TooExpensive`, `NoMatchingGpu`, `TooFar`, …; `LinkBounds` for a gang whose workers fit but
/// whose links miss its own latency or bandwidth bound), `NodeLost` for jobs whose attempts all died
/// with their nodes, and `StillQueued` for jobs waiting at the end.
#[derive(Clone, Debug, Serialize)]
pub struct Failures {
    pub total: u64,
    pub by_reason: BTreeMap<String, u64>,
}

/// Simulated node failures and what they cost.
#[derive(Clone, Debug, Serialize)]
pub struct NodeFailures {
    /// Times a node failed.
    pub nodes: u64,
    /// Workers running on them then.
    pub workers_lost: u64,
    /// Jobs sent back to the queue for another attempt.
    pub retries: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Wait {
    pub p50: u64,
    pub p99: u64,
    pub mean: u64,
    pub max: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct BasePrice {
    pub peak_micros: u64,
    pub end_micros: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Receipts {
    /// One final cumulative usage receipt per worker that ran.
    pub count: u64,
    /// Sum of the receipts' amounts (`ceil(GPU-ms × price / 3,600,000)` each), micro-units.
    pub total_micros: u64,
}

/// Wait percentiles (nearest rank, as the scheduler's benchmarks compute them) of waits in ms.
pub fn wait(mut waits: Vec<u64>) -> Wait {
    if waits.is_empty() {
        return Wait::default();
    }
    waits.sort_unstable();
    Wait {
        p50: scheduler::bench::quantile(&waits, 0.50),
        p99: scheduler::bench::quantile(&waits, 0.99),
        mean: (waits.iter().map(|w| u128::from(*w)).sum::<u128>() / waits.len() as u128) as u64,
        max: *waits.last().unwrap_or(&0),
    }
}

impl Report {
    pub fn new(
        source: String,
        seed: u64,
        fleet: &Fleet,
        jobs: &[TraceJob],
        outcome: &Outcome,
        wall_seconds: f64,
    ) -> Self {
        let mut regions = BTreeMap::new();
        let mut gpu_models = BTreeMap::new();
        for node in &fleet.nodes {
            *regions.entry(node.region.clone()).or_default() += 1;
            for gpu in &node.gpus {
                *gpu_models.entry(gpu.model.clone()).or_default() += 1;
            }
        }
        let mut by_kind: BTreeMap<String, KindFigures> = BTreeMap::new();
        let mut by_reason: BTreeMap<String, u64> = BTreeMap::new();
        let (mut placed, mut unplaceable, mut failed, mut queued) = (0, 0, 0, 0);
        let mut waits = Vec::new();
        let mut kind_waits: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        let (mut latency_sum, mut latency_jobs) = (0.0, 0u64);
        for (job, fate) in jobs.iter().zip(&outcome.fates) {
            let name = format!("{:?}", job.kind);
            let kind = by_kind.entry(name.clone()).or_default();
            kind.total += 1;
            match fate {
                Fate::Placed {
                    at_ms,
                    user_latency_ms,
                    ..
                } => {
                    placed += 1;
                    kind.placed += 1;
                    waits.push(at_ms - job.arrival_ms);
                    kind_waits
                        .entry(name)
                        .or_default()
                        .push(at_ms - job.arrival_ms);
                    if let Some(ms) = user_latency_ms {
                        latency_sum += ms;
                        latency_jobs += 1;
                    }
                }
                Fate::Unplaceable(reason) => {
                    unplaceable += 1;
                    *by_reason.entry(reason.to_string()).or_default() += 1;
                }
                Fate::Failed(reason) => {
                    failed += 1;
                    *by_reason.entry(reason.to_string()).or_default() += 1;
                }
                Fate::Queued => {
                    queued += 1;
                    *by_reason.entry("StillQueued".into()).or_default() += 1;
                }
            }
        }
        for (kind, waits) in kind_waits {
            if let Some(figures) = by_kind.get_mut(&kind) {
                figures.wait_ms = wait(waits);
            }
        }
        let (mut paid, mut gpu_ms) = (0u128, 0u128);
        for worker in &outcome.workers {
            let ms = worker.gpus.len() as u128 * u128::from(worker.end_ms - worker.start_ms);
            paid += u128::from(worker.price_micros) * ms;
            gpu_ms += ms;
        }
        let share = |allocated: u128, ms: u64| {
            let fleet_ms = u128::from(outcome.fleet_gpus) * u128::from(ms);
            if fleet_ms == 0 {
                0.0
            } else {
                allocated as f64 / fleet_ms as f64
            }
        };
        let (first, last) = outcome.arrivals_ms;
        let utilization_to_end = share(outcome.allocated_gpu_ms, outcome.end_ms);
        Self {
            simulated: true,
            source,
            seed,
            fleet: FleetFigures {
                nodes: fleet.nodes.len() as u64,
                gpus: outcome.fleet_gpus,
                regions,
                gpu_models,
            },
            jobs: JobFigures {
                total: jobs.len() as u64,
                placed,
                unplaceable,
                failed,
                queued_at_end: queued,
                by_kind,
            },
            failures: Failures {
                total: unplaceable + failed + queued,
                by_reason,
            },
            node_failures: NodeFailures {
                nodes: outcome.node_failures,
                workers_lost: outcome.workers_lost,
                retries: outcome.retries,
            },
            wait_ms: wait(waits),
            utilization: if last > first {
                share(outcome.allocated_gpu_ms_arriving, last - first)
            } else {
                utilization_to_end
            },
            utilization_to_end,
            mean_price_micros_per_gpu_hour: paid.checked_div(gpu_ms).unwrap_or(0) as u64,
            base_prices: outcome
                .classes
                .iter()
                .enumerate()
                .map(|(i, class)| {
                    let price = |s: &super::engine::Sample| s.base_micros.get(i).copied();
                    let price = BasePrice {
                        peak_micros: outcome.samples.iter().filter_map(price).max().unwrap_or(0),
                        end_micros: outcome.samples.last().and_then(price).unwrap_or(0),
                    };
                    (class.clone(), price)
                })
                .collect(),
            mean_user_latency_ms: (latency_jobs > 0).then(|| latency_sum / latency_jobs as f64),
            jobs_with_user_region: latency_jobs,
            receipts: Receipts {
                count: outcome.receipts,
                total_micros: outcome.receipts_micros,
            },
            virtual_seconds: outcome.end_ms as f64 / 1000.0,
            last_arrival_seconds: last as f64 / 1000.0,
            events: outcome.events,
            decisions: outcome.decisions,
            wall_seconds,
            events_per_second: outcome.events as f64 / wall_seconds.max(1e-9),
        }
    }

    /// The summary for a terminal.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let mut line = |text: String| {
            s.push_str(&text);
            s.push('\n');
        };
        line("agora simulate: SIMULATED fleet and jobs in virtual time, through the hub's scheduler and market".into());
        line(format!(
            "  fleet          {} simulated nodes, {} GPUs, {} regions, {} GPU models",
            thousands(self.fleet.nodes),
            thousands(self.fleet.gpus),
            self.fleet.regions.len(),
            self.fleet.gpu_models.len()
        ));
        line(format!(
            "  jobs           {} ({}): {} ran, {} unplaceable, {} failed, {} still queued",
            thousands(self.jobs.total),
            self.source,
            thousands(self.jobs.placed),
            thousands(self.jobs.unplaceable),
            thousands(self.jobs.failed),
            thousands(self.jobs.queued_at_end)
        ));
        let kinds: Vec<String> = self
            .jobs
            .by_kind
            .iter()
            .map(|(kind, k)| {
                format!(
                    "{kind} {} ran of {} (wait p99 {})",
                    thousands(k.placed),
                    thousands(k.total),
                    seconds(k.wait_ms.p99)
                )
            })
            .collect();
        line(format!("  by kind        {}", kinds.join(", ")));
        let reasons: Vec<String> = self
            .failures
            .by_reason
            .iter()
            .map(|(reason, n)| format!("{reason} {}", thousands(*n)))
            .collect();
        line(format!(
            "  failures       {} jobs did not finish{}; {} node failures lost {} workers, {} jobs retried",
            thousands(self.failures.total),
            if reasons.is_empty() {
                String::new()
            } else {
                format!(" ({})", reasons.join(", "))
            },
            thousands(self.node_failures.nodes),
            thousands(self.node_failures.workers_lost),
            thousands(self.node_failures.retries)
        ));
        line(format!(
            "  wait           p50 {}, p99 {}, mean {}, max {}",
            seconds(self.wait_ms.p50),
            seconds(self.wait_ms.p99),
            seconds(self.wait_ms.mean),
            seconds(self.wait_ms.max)
        ));
        line(format!(
            "  utilization    {:.1} % of GPU-time while jobs arrived ({:.1} h), {:.1} % over all {:.1} virtual hours",
            self.utilization * 100.0,
            self.last_arrival_seconds / 3600.0,
            self.utilization_to_end * 100.0,
            self.virtual_seconds / 3600.0
        ));
        line(format!(
            "  mean price     {} per GPU-hour (GPU-time weighted)",
            units(self.mean_price_micros_per_gpu_hour)
        ));
        let dearest = self
            .base_prices
            .iter()
            .max_by_key(|(_, p)| p.peak_micros)
            .map(|(class, p)| format!("; highest base price {} ({class})", units(p.peak_micros)))
            .unwrap_or_default();
        line(format!(
            "  base prices    {} GPU classes priced by utilization each epoch{dearest}",
            self.base_prices.len()
        ));
        line(match self.mean_user_latency_ms {
            Some(ms) => format!(
                "  user latency   mean {ms:.1} ms over {} jobs with a userRegion",
                thousands(self.jobs_with_user_region)
            ),
            None => "  user latency   no placed job names a userRegion".into(),
        });
        line(format!(
            "  receipts       {} usage receipts, {} micro-units ({})",
            thousands(self.receipts.count),
            thousands(self.receipts.total_micros),
            units(self.receipts.total_micros)
        ));
        line(format!(
            "  wall time      {:.2} s: {} events ({} events/s), {} scheduler decisions",
            self.wall_seconds,
            thousands(self.events),
            thousands(self.events_per_second as u64),
            thousands(self.decisions)
        ));
        s
    }
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Micro-units as display units with six decimals.
pub fn units(micros: u64) -> String {
    format!(
        "{}.{:06}",
        thousands(micros / 1_000_000),
        micros % 1_000_000
    )
}

fn seconds(ms: u64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_percentiles_are_nearest_rank() {
        // 1..=100 s: p50 is the 50th value, p99 the 99th.
        let waits: Vec<u64> = (1..=100).rev().map(|s| s * 1000).collect();
        assert_eq!(
            wait(waits),
            Wait {
                p50: 50_000,
                p99: 99_000,
                mean: 50_500,
                max: 100_000
            }
        );
        assert_eq!(wait(vec![7]).p99, 7);
        assert_eq!(wait(Vec::new()), Wait::default());
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(units(2_500_001), "2.500001");
    }
}
