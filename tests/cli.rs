//! The `agora` binary's offline commands and first-contact errors, run as a user runs them: the
//! printed CRDs and OpenAPI document match the checked-in files, `--help` lists the subcommands, and
//! mistakes (no hub at the URL, an unknown GPU model) fail with a message that says what is wrong.

use std::{
    io::Read,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use serde::Deserialize;

/// No command here needs more than a moment; a hang (e.g. an agent retrying forever) is a failure.
const TIMEOUT: Duration = Duration::from_secs(30);

struct Output {
    success: bool,
    stdout: String,
    stderr: String,
}

/// Runs `agora ARGS` in the repository root without the caller's `AGORA_*` variables; kills it and
/// panics if it runs longer than [`TIMEOUT`].
fn agora(args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_agora"));
    cmd.args(args)
        .current_dir(repo())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("AGORA_") {
            cmd.env_remove(name);
        }
    }
    let mut child = cmd.spawn().expect("spawning agora");
    let read = |mut pipe: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = read(Box::new(child.stdout.take().expect("stdout")));
    let stderr = read(Box::new(child.stderr.take().expect("stderr")));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for agora") {
            break status;
        }
        if started.elapsed() > TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`agora {}` still ran after {TIMEOUT:?}; stderr:\n{}",
                args.join(" "),
                stderr.join().unwrap_or_default()
            );
        }
        thread::sleep(Duration::from_millis(20));
    };
    Output {
        success: status.success(),
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    let path: PathBuf = repo().join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Every document of a YAML stream, parsed (comments and formatting do not count).
fn yaml_documents(text: &str) -> Vec<serde_yaml::Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|doc| serde_yaml::Value::deserialize(doc).expect("valid YAML"))
        .collect()
}

#[test]
fn crds_prints_the_checked_in_crds() {
    let out = agora(&["crds"]);
    assert!(out.success, "agora crds failed: {}", out.stderr);
    let printed = yaml_documents(&out.stdout);
    let mut files = yaml_documents(&read("crds/computejob.yaml"));
    files.extend(yaml_documents(&read("crds/gpunode.yaml")));
    assert_eq!(files.len(), 2, "each CRD file holds one document");
    assert_eq!(
        printed.len(),
        2,
        "agora crds prints two documents:\n{}",
        out.stdout
    );
    assert!(
        printed == files,
        "`agora crds` differs from crds/computejob.yaml + crds/gpunode.yaml; regenerate them with \
         `cargo run -p crds --bin crdgen`"
    );
}

#[test]
fn openapi_prints_the_checked_in_document() {
    let out = agora(&["openapi"]);
    assert!(out.success, "agora openapi failed: {}", out.stderr);
    let printed: serde_json::Value =
        serde_json::from_str(&out.stdout).expect("agora openapi prints JSON");
    let file: serde_json::Value =
        serde_json::from_str(&read("docs/openapi.json")).expect("docs/openapi.json is JSON");
    assert!(
        printed == file,
        "`agora openapi` differs from docs/openapi.json; regenerate it with \
         `cargo run --bin agora -- openapi > docs/openapi.json`"
    );
}

#[test]
fn help_lists_the_subcommands() {
    let out = agora(&["--help"]);
    assert!(out.success, "agora --help failed: {}", out.stderr);
    for command in ["dev", "server", "agent", "job", "node", "crds"] {
        let listed = out
            .stdout
            .lines()
            .any(|line| line.split_whitespace().next() == Some(command));
        assert!(
            listed,
            "`{command}` is not in agora --help:\n{}",
            out.stdout
        );
    }
}

#[test]
fn a_hub_that_is_not_there_is_reported_as_unreachable() {
    // Nothing listens on the discard port.
    let out = agora(&["job", "get", "x", "--hub", "http://127.0.0.1:9"]);
    assert!(!out.success, "succeeded without a hub: {}", out.stdout);
    assert!(
        out.stderr.contains("cannot reach the hub"),
        "stderr: {}",
        out.stderr
    );
}

#[test]
fn an_unknown_simulated_gpu_model_is_named() {
    let out = agora(&[
        "agent",
        "--hub",
        "http://127.0.0.1:9",
        "--region",
        "eu-west",
        "--name",
        "gn-cli-test",
        "--simulate-gpus",
        "3xNoSuchGPU",
    ]);
    assert!(!out.success, "the agent started with an unknown GPU model");
    assert!(out.stderr.contains("NoSuchGPU"), "stderr: {}", out.stderr);
}

#[test]
fn a_hub_with_timings_that_cannot_work_refuses_to_start() {
    // Checked before the database is opened: nothing is created at this path.
    let db = "sqlite:///nonexistent-dir/hub.db";
    let out = agora(&[
        "server",
        "--listen",
        "127.0.0.1:0",
        "--database-url",
        db,
        "--lease-ttl-seconds",
        "3",
        "--lease-renew-seconds",
        "3",
    ]);
    assert!(
        !out.success,
        "started with a lease renewed only as often as it expires"
    );
    assert!(
        out.stderr
            .contains("--lease-ttl-seconds 3 must be longer than --lease-renew-seconds 3"),
        "stderr: {}",
        out.stderr
    );
    let out = agora(&[
        "server",
        "--listen",
        "127.0.0.1:0",
        "--database-url",
        db,
        "--node-timeout-seconds",
        "5",
        "--heartbeat-interval-seconds",
        "5",
    ]);
    assert!(
        !out.success,
        "started with a node timeout no longer than the heartbeat interval"
    );
    assert!(
        out.stderr
            .contains("--node-timeout-seconds 5 must be longer"),
        "stderr: {}",
        out.stderr
    );
}

/// `agora bench scheduler --json` reports the keys scripts rely on, and its figures hold together:
/// every job placed, ours no farther from users than the network-oblivious baseline.
#[test]
fn the_scheduler_benchmark_reports_its_contract() {
    let out = agora(&[
        "bench",
        "scheduler",
        "--json",
        "--nodes",
        "400",
        "--jobs",
        "400",
        "--gangs",
        "2",
    ]);
    assert!(out.success, "{}", out.stderr);
    let report: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON report");
    let dtfm = report["dtfm"].as_array().expect("dtfm is a list");
    assert_eq!(dtfm.len(), 5);
    for case in dtfm {
        for key in [
            "cost_s",
            "random_mean_s",
            "random_best_s",
            "solve_ms",
            "placement",
        ] {
            assert!(!case[key].is_null(), "dtfm case lacks {key}: {case}");
        }
        assert!(
            case["cost_s"].as_f64() <= case["random_best_s"].as_f64(),
            "{case}"
        );
    }
    let single = &report["single"];
    for key in [
        "nodes",
        "placements_per_s",
        "p50_us",
        "p99_us",
        "mean_user_latency_ms",
        "baselines",
    ] {
        assert!(!single[key].is_null(), "single lacks {key}: {single}");
    }
    assert_eq!(single["placed"], 400, "{single}");
    let oblivious = &single["baselines"][0];
    assert!(
        single["mean_user_latency_ms"].as_f64() < oblivious["mean_user_latency_ms"].as_f64(),
        "network-aware placement must serve users from nearer: {single}"
    );
    for key in ["nodes", "gpus", "p50_ms", "p99_ms"] {
        assert!(
            !report["gang"][key].is_null(),
            "gang lacks {key}: {}",
            report["gang"]
        );
    }
    assert_eq!(report["gang"]["gpus"], 64);
}

/// `agora bench hub --json` runs a real hub with simulated agents and users over loopback and
/// reports the keys scripts rely on. A small run (20 agents, 1 s phases, 50 paced jobs) keeps it
/// quick in a debug build; the figures themselves are only checked to be there and positive.
#[test]
fn the_hub_benchmark_reports_its_contract() {
    let out = agora(&[
        "--log",
        "warn",
        "bench",
        "hub",
        "--json",
        "--seconds",
        "1",
        "--agents",
        "20",
        "--rate",
        "50",
    ]);
    assert!(out.success, "{}", out.stderr);
    let report: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON report");
    assert_eq!(report["backend"], "sqlite", "{report}");
    for key in [
        "submit_per_s",
        "scheduled_p50_ms",
        "scheduled_p99_ms",
        "heartbeats_per_s",
        "agents",
        "jobs",
        "seconds",
    ] {
        let value = report[key].as_f64();
        assert!(
            value.is_some_and(|v| v > 0.0),
            "{key} should be a positive number: {report}"
        );
    }
    assert_eq!(report["agents"], 20, "{report}");
    assert_eq!(report["scheduled_jobs"], 50, "{report}");
    assert_eq!(report["unscheduled"], 0, "every paced job fits: {report}");
    assert_eq!(report["failed_requests"], 0, "{report}");
}
