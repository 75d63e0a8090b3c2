//! `agora simulate`: replays a workload (a trace file, or `--generate`d) against a simulated
//! fleet through the hub's own placement and pricing, in virtual time, and reports what happened:
//! a terminal summary, `--json`, and `--html FILE` with charts. See docs/simulate.md.

pub mod engine;
pub mod fleet;
mod gate;
pub mod html;
pub mod report;
pub mod trace;
pub mod workload;

use std::{io::IsTerminal, path::PathBuf, time::Instant};

use anyhow::Context;
use clap::Args;

#[derive(Args, Debug)]
pub struct SimulateArgs {
    /// Workload trace to replay (CSV or JSON; format in docs/simulate.md).
    #[arg(value_name = "TRACE", required_unless_present = "generate")]
    pub trace: Option<PathBuf>,
    /// Generate a synthetic job mix instead of reading a trace.
    #[arg(long, conflicts_with = "trace")]
    pub generate: bool,
    /// Nodes in the simulated fleet.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub nodes: u64,
    /// Jobs to generate (with --generate).
    #[arg(long, default_value_t = 10_000, requires = "generate", value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub jobs: u64,
    /// Seed of the fleet and of generated jobs: the same seed gives the same run.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Offered load of generated jobs, as a fraction of the fleet's GPUs (with --generate).
    #[arg(long, default_value_t = 0.8, requires = "generate", value_parser = load)]
    pub load: f64,
    /// Mean time between failures of each simulated node, in hours; 0: nodes never fail.
    #[arg(long, default_value_t = 720.0, value_parser = hours)]
    pub node_mtbf_hours: f64,
    /// Mean time a failed node takes to come back, in hours.
    #[arg(long, default_value_t = 2.0, value_parser = hours)]
    pub node_repair_hours: f64,
    /// Print the report as JSON (stable keys, docs/simulate.md) instead of the summary.
    #[arg(long)]
    pub json: bool,
    /// Also write the report as an HTML page with SVG charts to this file.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// No progress bar (it is also hidden when stderr is not a terminal).
    #[arg(long, short)]
    pub quiet: bool,
}

fn hours(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if (0.0..=1e6).contains(&v) => Ok(v),
        _ => Err(format!("must be hours in [0, 1000000], got {text:?}")),
    }
}

fn load(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 10.0 => Ok(v),
        _ => Err(format!("must be a number in (0, 10], got {text:?}")),
    }
}

pub fn run(args: SimulateArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let fleet = fleet::Fleet::generate(args.nodes as usize, args.seed);
    let (jobs, source) = match &args.trace {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the trace {}", path.display()))?;
            let jobs =
                trace::parse(&text).with_context(|| format!("in the trace {}", path.display()))?;
            (jobs, path.display().to_string())
        }
        None => (
            workload::generate(args.jobs as usize, fleet.gpus(), args.load, args.seed),
            "generated".to_string(),
        ),
    };
    let bar = if args.quiet || !std::io::stderr().is_terminal() {
        indicatif::ProgressBar::hidden()
    } else {
        let bar = indicatif::ProgressBar::new(jobs.len() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "simulating {bar:24} {pos}/{len} jobs arrived (eta {eta})",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    };
    let config = engine::Config {
        node_mtbf_ms: (args.node_mtbf_hours * 3_600_000.0) as u64,
        node_repair_ms: (args.node_repair_hours * 3_600_000.0) as u64,
        seed: args.seed,
        ..engine::Config::default()
    };
    let outcome = engine::run(&fleet, &jobs, config, &mut |arrived| {
        bar.set_position(arrived as u64)
    })?;
    bar.finish_and_clear();
    let report = report::Report::new(
        source,
        args.seed,
        &fleet,
        &jobs,
        &outcome,
        started.elapsed().as_secs_f64(),
    );
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.summary());
    }
    if let Some(path) = &args.html {
        std::fs::write(
            path,
            html::page(&report, &outcome.samples, &outcome.classes),
        )
        .with_context(|| format!("writing {}", path.display()))?;
        if !args.json {
            println!("  html report    {}", path.display());
        }
    }
    Ok(())
}
