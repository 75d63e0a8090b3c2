//! `agora bench …`: runs a benchmark scenario of a crate and prints its figures beside the baselines
//! measured in the same run, as tables or as JSON (`--json`).

use std::time::Instant;

use clap::{Args, Subcommand};
use scheduler::bench::scale;

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

pub fn run(bench: Bench) -> anyhow::Result<()> {
    match bench {
        Bench::Scheduler(args) => scheduler(args),
    }
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
