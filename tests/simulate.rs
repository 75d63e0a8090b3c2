//! `agora simulate` run as a user runs it: a generated workload with `--json` and `--html`, the
//! example traces, and a broken trace whose error names the line and the field.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn agora(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_agora"))
        .args(args)
        .current_dir(repo())
        .stdin(Stdio::null())
        .output()
        .expect("running agora")
}

fn json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "agora simulate failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the report is JSON")
}

fn number(report: &serde_json::Value, pointer: &str) -> f64 {
    report
        .pointer(pointer)
        .and_then(serde_json::Value::as_f64)
        .unwrap_or_else(|| panic!("{pointer} is not a number in {report:#}"))
}

#[test]
fn a_generated_run_reports_its_keys_and_writes_svg_charts() {
    let dir = tempfile::tempdir().unwrap();
    let html = dir.path().join("report.html");
    let out = agora(&[
        "simulate",
        "--generate",
        "--nodes",
        "300",
        "--jobs",
        "3000",
        "--seed",
        "4",
        "--json",
        "--html",
        html.to_str().unwrap(),
    ]);
    let report = json(&out);
    for key in [
        "simulated",
        "source",
        "seed",
        "fleet",
        "jobs",
        "failures",
        "node_failures",
        "wait_ms",
        "utilization",
        "utilization_to_end",
        "mean_price_micros_per_gpu_hour",
        "base_prices",
        "mean_user_latency_ms",
        "jobs_with_user_region",
        "receipts",
        "virtual_seconds",
        "last_arrival_seconds",
        "events",
        "decisions",
        "wall_seconds",
        "events_per_second",
    ] {
        assert!(report.get(key).is_some(), "no {key} in {report:#}");
    }
    assert_eq!(report["simulated"], true);
    assert_eq!(number(&report, "/fleet/nodes"), 300.0);
    let total = number(&report, "/jobs/total");
    assert_eq!(total, 3000.0);
    let placed = number(&report, "/jobs/placed");
    assert_eq!(
        placed
            + number(&report, "/jobs/unplaceable")
            + number(&report, "/jobs/failed")
            + number(&report, "/jobs/queued_at_end"),
        total,
        "every job is accounted for"
    );
    assert!(placed > 0.0);
    assert!(number(&report, "/wait_ms/p50") <= number(&report, "/wait_ms/p99"));
    let utilization = number(&report, "/utilization");
    assert!(utilization > 0.0 && utilization <= 1.0, "{utilization}");
    assert!(number(&report, "/receipts/count") >= placed);
    // 300 nodes, each failing every 720 h on average, over the run's days of virtual time.
    assert!(number(&report, "/node_failures/nodes") > 0.0);
    assert!(number(&report, "/receipts/total_micros") > 0.0);
    assert!(number(&report, "/mean_user_latency_ms") > 0.0);
    for kind in ["Inference", "Batch", "Training"] {
        assert!(number(&report, &format!("/jobs/by_kind/{kind}/total")) > 0.0);
    }

    let page = std::fs::read_to_string(&html).expect("the HTML report was written");
    assert!(page.contains("Simulated fleet"));
    assert_eq!(
        page.matches("<svg xmlns=\"http://www.w3.org/2000/svg\"")
            .count(),
        3
    );
    for title in ["Queue length", "Utilization", "Price per GPU-hour"] {
        assert!(page.contains(title), "no {title} chart");
    }
    assert!(page.matches("<polyline").count() >= 3);
    assert!(!page.contains("<script"), "no scripts");

    // The same seed gives the same run.
    let again = json(&agora(&[
        "simulate",
        "--generate",
        "--nodes",
        "300",
        "--jobs",
        "3000",
        "--seed",
        "4",
        "--json",
    ]));
    for key in [
        "jobs",
        "failures",
        "node_failures",
        "wait_ms",
        "receipts",
        "utilization",
        "events",
    ] {
        assert_eq!(
            report[key], again[key],
            "{key} differs between two runs of one seed"
        );
    }
}

#[test]
fn the_example_traces_replay_alike_and_the_summary_says_simulated() {
    let csv = json(&agora(&[
        "simulate",
        "examples/simulate-trace.csv",
        "--nodes",
        "200",
        "--json",
    ]));
    let json_trace = json(&agora(&[
        "simulate",
        "examples/simulate-trace.json",
        "--nodes",
        "200",
        "--json",
    ]));
    for key in ["jobs", "failures", "wait_ms", "receipts"] {
        assert_eq!(csv[key], json_trace[key], "{key}");
    }
    assert_eq!(number(&csv, "/jobs/total"), 11.0);
    // The example's 0.10 inference job is below every ask; its 200 GiB job fits no GPU.
    assert_eq!(number(&csv, "/failures/by_reason/TooExpensive"), 1.0);
    assert_eq!(number(&csv, "/failures/by_reason/NoMatchingGpu"), 1.0);

    let out = agora(&["simulate", "examples/simulate-trace.csv", "--nodes", "200"]);
    assert!(out.status.success());
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(summary.contains("SIMULATED"), "{summary}");
    for line in [
        "wait",
        "utilization",
        "mean price",
        "user latency",
        "receipts",
        "wall time",
    ] {
        assert!(summary.contains(line), "no {line} in\n{summary}");
    }
}

#[test]
fn a_broken_trace_fails_naming_the_line_and_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace.csv");
    std::fs::write(
        &trace,
        "arrivalSeconds,gpusPerWorker,maxPricePerGpuHour,durationSeconds\n0,1,2.00,60\n5,1,two,60\n",
    )
    .unwrap();
    let out = agora(&["simulate", trace.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("line 3, field maxPricePerGpuHour"),
        "{stderr}"
    );
    assert!(path_named(&stderr, &trace), "{stderr}");

    let out = agora(&["simulate"]);
    assert!(!out.status.success(), "a trace or --generate is required");
}

fn path_named(text: &str, path: &Path) -> bool {
    text.contains(&path.display().to_string())
}
