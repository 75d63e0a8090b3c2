//! `agora bench …`: runs a benchmark scenario of a crate and prints its figures beside the baselines
//! measured in the same run, as a table or as JSON (`--json`).

use std::time::Instant;

use clap::{Args, Subcommand};

#[derive(Subcommand, Debug)]
pub enum Bench {
    /// Placement quality and speed: the DT-FM scenarios and the 10,000-node scale scenario.
    Scheduler(SchedulerArgs),
}

#[derive(Args, Debug)]
pub struct SchedulerArgs {
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Seed of every random choice: the same seed gives the same scenarios and placements.
    #[arg(long, default_value_t = 2026)]
    pub seed: u64,
    /// Nodes in the scale scenario.
    #[arg(long, default_value_t = 10_000)]
    pub nodes: usize,
    /// Single-GPU jobs placed in the scale scenario.
    #[arg(long, default_value_t = 20_000)]
    pub jobs: usize,
}

pub fn run(bench: Bench) -> anyhow::Result<()> {
    match bench {
        Bench::Scheduler(args) => scheduler(args),
    }
}

fn scheduler(args: SchedulerArgs) -> anyhow::Result<()> {
    let origin = Instant::now();
    let clock = || origin.elapsed().as_nanos() as u64;
    if !args.json {
        eprintln!(
            "scale scenario: {} nodes, {} jobs (seed {})…",
            args.nodes, args.jobs, args.seed
        );
    }
    let single = scheduler::bench::scale::run(args.nodes, args.jobs, args.seed, &clock);
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "single": single }))?
        );
        return Ok(());
    }
    println!(
        "Single-GPU placement, {} nodes / {} GPUs, {} jobs",
        single.nodes, single.gpus, single.jobs
    );
    println!(
        "{:<38} {:>12} {:>10} {:>10} {:>16} {:>11} {:>7}",
        "", "placements/s", "p50 µs", "p99 µs", "user latency ms", "mean price", "placed"
    );
    println!(
        "{:<38} {:>12.0} {:>10.1} {:>10.1} {:>16.1} {:>11.3} {:>7}",
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
            "{:<38} {:>12.0} {:>10} {:>10} {:>16.1} {:>11.3} {:>7}",
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
    Ok(())
}
