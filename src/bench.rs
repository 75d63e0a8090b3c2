//! `agora bench …`: runs a benchmark scenario of a crate and prints its figures beside the baselines
//! measured in the same run, as tables or as JSON (`--json`).

use std::time::Instant;

use clap::{Args, Subcommand};
use scheduler::bench::scale;

#[derive(Subcommand, Debug)]
pub enum Bench {
    /// Placement quality and speed: the DT-FM scenarios and the 10,000-node scale scenario.
    Scheduler(SchedulerArgs),
    /// A real hub on loopback over real HTTP: heartbeats/s, submissions/s, submit→Scheduled
    /// latency, with simulated agents and users in this process (rate limits off).
    Hub(HubBenchArgs),
    /// The node agent's memory and CPU: a real `agora agent` process with 8 simulated GPUs at a 1 s
    /// telemetry interval against a real hub on loopback.
    Agent(crate::bench_agent::AgentBenchArgs),
    /// Settlement batches on one core: receipts batched and proven per second, the build time of
    /// a 1,000,000-receipt batch, receipts settled per transaction, against baselines.
    Settlement(crate::bench_settlement::SettlementBenchArgs),
    /// SpotCheck's detection probability beside 1 − (1 − f)^k, its overhead, a faulty verifier
    /// against honest workers, and Freivalds' check beside the product it checks.
    Verify(crate::bench_verify::VerifyBenchArgs),
}

#[derive(Args, Debug)]
pub struct HubBenchArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Run on this PostgreSQL server: a fresh database is created beside the one the URL names
    /// and dropped afterwards. Without it, a temporary SQLite database.
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// Length of each measured phase (heartbeats, paced submissions, sustained submissions).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub seconds: u64,
    /// Simulated agents, each with 8 simulated H100s.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub agents: u64,
    /// Submissions per second in the submit→Scheduled phase.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub rate: u32,
    /// Requests in flight in the as-fast-as-possible phases.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub concurrency: u64,
}

#[derive(Args, Debug)]
pub struct SchedulerArgs {
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Seed of every random choice: the same seed gives the same scenarios and placements.
    #[arg(long, default_value_t = 2022)]
    pub seed: u64,
    /// Nodes in the scale scenario.
    #[arg(long, default_value_t = 10_000)]
    pub nodes: usize,
    /// Single-GPU jobs placed in the scale scenario.
    #[arg(long, default_value_t = 20_000)]
    pub jobs: usize,
    /// 64-GPU gangs placed in the scale scenario.
    #[arg(long, default_value_t = 50)]
    pub gangs: usize,
}

pub async fn run(bench: Bench) -> anyhow::Result<()> {
    match bench {
        Bench::Scheduler(args) => scheduler(args),
        Bench::Hub(args) => hub(args).await,
        Bench::Agent(args) => crate::bench_agent::run(args).await,
        Bench::Settlement(args) => crate::bench_settlement::run(args).await,
        Bench::Verify(args) => crate::bench_verify::run(args).await,
    }
}

async fn hub(args: HubBenchArgs) -> anyhow::Result<()> {
    let options = api::bench::Options {
        postgres_url: args.database_url.clone(),
        seconds: args.seconds,
        agents: usize::try_from(args.agents)?,
        rate: args.rate,
        concurrency: usize::try_from(args.concurrency)?,
    };
    let json = args.json;
    let progress = move |what: &str| {
        if !json {
            eprintln!("{what}…");
        }
    };
    let report = api::bench::run(options, &progress).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let backend = match report.backend {
        "postgres" => "PostgreSQL",
        _ => "SQLite",
    };
    println!(
        "Hub on {backend}, {} agents ({} simulated GPUs), {} s per phase, {} requests in flight",
        report.agents, report.gpus, report.seconds, report.concurrency
    );
    println!("{:<34} {:>10}  target", "", "measured");
    println!(
        "{:<34} {:>10.0}",
        "registrations/s", report.registrations_per_s
    );
    println!(
        "{:<34} {:>10.0}  ≥ 10,000 on PostgreSQL",
        "heartbeats/s", report.heartbeats_per_s
    );
    println!(
        "{:<34} {:>10.0}  ≥ 2,000 on PostgreSQL",
        "submissions/s", report.submit_per_s
    );
    let latency = format!("submit→Scheduled at {:.0}/s, p50 ms", report.achieved_rate);
    println!("{latency:<34} {:>10.1}", report.scheduled_p50_ms);
    println!(
        "{:<34} {:>10.1}  ≤ 50 at 1,000/s with 1,000 agents",
        "submit→Scheduled p99 ms", report.scheduled_p99_ms
    );
    println!(
        "{:<34} {:>10.1}",
        "submit→Scheduled max ms", report.scheduled_max_ms
    );
    println!(
        "{:<34} {:>10.1}",
        "submission round trip p99 ms", report.submit_response_p99_ms
    );
    println!(
        "{} jobs submitted ({} paced at {}/s, {} as fast as answered); {} paced jobs unplaced; {} failed requests",
        report.jobs,
        report.scheduled_jobs,
        report.rate,
        report.submissions,
        report.unscheduled,
        report.failed_requests
    );
    Ok(())
}

fn scheduler(args: SchedulerArgs) -> anyhow::Result<()> {
    let origin = Instant::now();
    let clock = || origin.elapsed().as_nanos() as u64;
    let clock_ms = || origin.elapsed().as_secs_f64() * 1e3;
    let progress = |what: &str| {
        if !args.json {
            eprintln!("{what}…");
        }
    };
    progress("DT-FM scenarios");
    let dtfm = scheduler::gang::scenarios::run_dtfm_benchmark(args.seed, &clock_ms);
    progress(&format!(
        "scale scenario: {} nodes, network model fitted from probes",
        args.nodes
    ));
    let scenario = scale::Scenario::generate(args.nodes, args.seed);
    progress(&format!(
        "{} single-GPU placements, ours and baselines",
        args.jobs
    ));
    let single = scale::single(&scenario, args.jobs, args.seed, &clock);
    progress(&format!("{} 64-GPU gang placements", args.gangs));
    let gang = scale::gang(&scenario, args.gangs, &clock);
    if args.json {
        let report =
            serde_json::json!({ "seed": args.seed, "dtfm": dtfm, "single": single, "gang": gang });
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }

    println!(
        "DT-FM scenarios (64 GPUs, 8 stages × 8 data-parallel): communication seconds per step"
    );
    println!(
        "{:<5} {:<30} {:>8} {:>12} {:>12} {:>11} {:>11} {:>9}",
        "case",
        "scenario",
        "agora",
        "random mean",
        "random best",
        "structured",
        "best/agora",
        "solve ms"
    );
    for c in &dtfm {
        println!(
            "{:<5} {:<30} {:>8.3} {:>12.3} {:>12.3} {:>11.3} {:>10.2}× {:>9.1}",
            c.case,
            c.name,
            c.cost_s,
            c.random_mean_s,
            c.random_best_s,
            c.structured_s,
            c.random_best_s / c.cost_s,
            c.solve_ms
        );
    }

    println!();
    println!(
        "Single-GPU placement, {} nodes / {} GPUs, {} jobs",
        single.nodes, single.gpus, single.jobs
    );
    println!(
        "{:<38} {:>12} {:>8} {:>8} {:>16} {:>11} {:>7}",
        "", "placements/s", "p50 µs", "p99 µs", "user latency ms", "mean price", "placed"
    );
    println!(
        "{:<38} {:>12.0} {:>8.1} {:>8.1} {:>16.1} {:>11.3} {:>7}",
        "agora (fitted network model)",
        single.placements_per_s,
        single.p50_us,
        single.p99_us,
        single.mean_user_latency_ms,
        single.mean_price,
        single.placed
    );
    for b in &single.baselines {
        println!(
            "{:<38} {:>12.0} {:>8} {:>8} {:>16.1} {:>11.3} {:>7}",
            b.name, b.placements_per_s, "", "", b.mean_user_latency_ms, b.mean_price, b.placed
        );
    }
    if let Some(oblivious) = single.baselines.first() {
        println!(
            "user latency {:.2}× lower than {}, at {:+.1}% mean price",
            oblivious.mean_user_latency_ms / single.mean_user_latency_ms.max(f64::MIN_POSITIVE),
            oblivious.name,
            (single.mean_price / oblivious.mean_price.max(f64::MIN_POSITIVE) - 1.0) * 100.0
        );
    }

    println!();
    println!(
        "Gang placement, {} nodes: {} decisions of {} GPUs ({} workers), {} placed; p50 {:.1} ms, p99 {:.1} ms",
        gang.nodes, gang.decisions, gang.gpus, gang.workers, gang.placed, gang.p50_ms, gang.p99_ms
    );
    println!(
        "communication per step on the true network: {:.2} s, vs {:.2} s for the cheapest slots placed without network knowledge ({:.1}× faster)",
        gang.mean_step_s,
        gang.oblivious_mean_step_s,
        gang.oblivious_mean_step_s / gang.mean_step_s.max(f64::MIN_POSITIVE)
    );
    Ok(())
}
