//! The DT-FM benchmark: the five simulated environments of Yuan et al. (NeurIPS 2022), each solved
//! by `gang::solve` and compared with the paper's random-placement baseline (best of 5,000 draws,
//! as in its reference implementation) and with a hand-structured layout.
//!
//! Costs only: solve times are measured by `cargo test --release -- --nocapture` and reported, not
//! asserted (timing assertions do not belong in tests).

use scheduler::{
    cost::dtfm::{Layout, dtfm},
    gang::scenarios::{self, DtfmCase, pipeline_per_block, run_dtfm_benchmark, stage_per_block},
};
use std::{sync::OnceLock, time::Instant};

/// The benchmark is the expensive part; every test reads the same run.
fn benchmark() -> &'static [DtfmCase] {
    static RUN: OnceLock<Vec<DtfmCase>> = OnceLock::new();
    RUN.get_or_init(|| {
        let origin = Instant::now();
        let clock = move || origin.elapsed().as_secs_f64() * 1e3;
        let cases = run_dtfm_benchmark(2022, &clock);
        print_table(&cases);
        cases
    })
}

fn print_table(cases: &[DtfmCase]) {
    println!(
        "\n{:<4} {:<28} {:>9} {:>12} {:>12} {:>11} {:>12} {:>12} {:>10} {:>9}",
        "case",
        "scenario",
        "cost s",
        "random mean",
        "random best",
        "structured",
        "stage/block",
        "pipe/block",
        "best/cost",
        "solve ms"
    );
    for (case, scenario) in cases.iter().zip(scenarios::all()) {
        let cost = |layout: &Layout| dtfm(&scenario.topology, &scenario.sizes, layout).total_s;
        println!(
            "{:<4} {:<28} {:>9.3} {:>12.3} {:>12.3} {:>11.3} {:>12.3} {:>12.3} {:>9.2}x {:>9.1}",
            case.case,
            case.name,
            case.cost_s,
            case.random_mean_s,
            case.random_best_s,
            case.structured_s,
            cost(&stage_per_block(8, 8)),
            cost(&pipeline_per_block(8, 8)),
            case.random_best_s / case.cost_s,
            case.solve_ms,
        );
    }
}

/// A tolerance for comparing costs computed along different floating-point paths.
const EPS: f64 = 1e-9;

#[test]
fn placements_are_valid_eight_by_eight_layouts() {
    for case in benchmark() {
        let layout = Layout {
            stages: case.placement.clone(),
        };
        layout.validate(64).unwrap();
        assert_eq!((layout.d_pp(), layout.d_dp()), (8, 8), "case {}", case.case);
    }
}

#[test]
fn every_case_beats_the_random_mean() {
    for case in benchmark() {
        assert!(
            case.cost_s <= case.random_mean_s,
            "case {} ({}): {} s vs random mean {} s",
            case.case,
            case.name,
            case.cost_s,
            case.random_mean_s
        );
    }
}

#[test]
fn no_case_is_worse_than_its_structured_layout() {
    for case in benchmark() {
        assert!(
            case.cost_s <= case.structured_s + EPS,
            "case {} ({}): {} s vs structured {} s",
            case.case,
            case.name,
            case.cost_s,
            case.structured_s
        );
    }
}

#[test]
fn worldwide_case_beats_the_best_random_layout_by_the_papers_margin() {
    let case = benchmark()
        .iter()
        .find(|c| c.case == 5)
        .expect("case 5 present");
    assert!(
        case.cost_s <= case.random_best_s / 2.7,
        "world-wide: {} s vs best of 5,000 random {} s (ratio {:.2})",
        case.cost_s,
        case.random_best_s,
        case.random_best_s / case.cost_s
    );
}

#[test]
fn benchmark_serializes() {
    let json = serde_json::to_value(benchmark()).unwrap();
    assert_eq!(json.as_array().map(Vec::len), Some(5));
    assert_eq!(json[4]["case"], 5);
    assert!(json[0]["placement"].is_array());
}
