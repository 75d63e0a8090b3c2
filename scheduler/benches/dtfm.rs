//! Solve time of `gang::solve` on the five DT-FM scenarios (`cargo bench -p scheduler --bench
//! dtfm`): the fastest of several runs (seeds) per scenario, on one thread, with the best and the
//! worst cost found over those seeds. An optional argument overrides the budget (move
//! evaluations).

use scheduler::{
    cost::dtfm::dtfm,
    gang::{DEFAULT_BUDGET, scenarios, solve},
};
use std::{hint::black_box, time::Instant};

const RUNS: u64 = 7;

fn main() {
    // `cargo bench` passes `--bench`; a number among the arguments is the budget.
    let budget = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(DEFAULT_BUDGET);
    println!("budget {budget} move evaluations, {RUNS} seeds");
    println!(
        "{:<4} {:<28} {:>10} {:>10} {:>10}",
        "case", "scenario", "best s", "worst s", "fastest ms"
    );
    for s in scenarios::all() {
        let mut fastest = f64::INFINITY;
        let (mut best, mut worst) = (f64::INFINITY, 0.0f64);
        for seed in 0..RUNS {
            let start = Instant::now();
            let layout = black_box(solve(
                &s.topology,
                &s.sizes,
                s.d_pp,
                s.d_dp,
                2022 + seed,
                budget,
            ));
            fastest = fastest.min(start.elapsed().as_secs_f64() * 1e3);
            if let Ok(layout) = layout {
                let cost = dtfm(&s.topology, &s.sizes, &layout).total_s;
                best = best.min(cost);
                worst = worst.max(cost);
            }
        }
        println!(
            "{:<4} {:<28} {:>10.3} {:>10.3} {:>10.2}",
            s.case, s.name, best, worst, fastest
        );
    }
}
