//! The `agora` binary's offline commands and first-contact errors, run as a user runs them: the
//! printed CRDs and OpenAPI document match the checked-in files, `--help` lists the subcommands, and
//! mistakes (no hub at the URL, an unknown GPU model) fail with a message that says what is wrong.

#[path = "common/process.rs"]
mod process;

use process::{background, free_port};
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

/// `--cheat` makes a dishonest node for testing verification: refused on real GPUs (without
/// `--simulate-gpus`), and a bad mode is named.
#[test]
fn cheating_is_only_for_simulated_nodes() {
    let base = [
        "agent",
        "--hub",
        "http://127.0.0.1:9",
        "--region",
        "eu-west",
        "--name",
        "gn-cli-test",
    ];
    let out = agora(&[&base[..], &["--cheat", "skip"]].concat());
    assert!(!out.success, "a cheater started without simulated GPUs");
    assert!(
        out.stderr
            .contains("--cheat is accepted only with --simulate-gpus"),
        "stderr: {}",
        out.stderr
    );
    let out = agora(
        &[
            &base[..],
            &["--simulate-gpus", "1xL4-24GB", "--cheat", "partial:1.5"],
        ]
        .concat(),
    );
    assert!(!out.success, "a cheater started with a fraction above 1");
    assert!(
        out.stderr.contains("--cheat") && out.stderr.contains("0 < F <= 1"),
        "stderr: {}",
        out.stderr
    );
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

/// `GET /metrics` as a scraper sends it; `None` while nothing answers yet.
fn scrape(port: u16) -> Option<String> {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(TIMEOUT)).ok()?;
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    Some(body.to_string())
}

/// One sample line of the Prometheus text format: name, labels, value.
fn parse_sample(line: &str) -> (String, Vec<(String, String)>, f64) {
    let (series, value) = line.rsplit_once(' ').expect("`series value`");
    let value: f64 = value.parse().unwrap_or_else(|_| panic!("a number: {line}"));
    let Some((name, labels)) = series.split_once('{') else {
        return (series.to_string(), Vec::new(), value);
    };
    let labels = labels
        .strip_suffix('}')
        .expect("labels end with }")
        .split(',')
        .map(|pair| {
            let (key, value) = pair.trim().split_once('=').expect("label=value");
            let value = value.strip_prefix('"').and_then(|v| v.strip_suffix('"'));
            (key.to_string(), value.expect("quoted value").to_string())
        })
        .collect();
    (name.to_string(), labels, value)
}

/// A real agent process, started against a real hub, serves the DCGM exporter's metrics for its
/// simulated GPUs (names and labels as dcgm-exporter spells them) and its own `agora_agent_*` ones.
#[test]
fn the_agent_serves_dcgm_metrics_for_its_gpus() {
    let dir = tempfile::tempdir().unwrap();
    let hub_port = free_port();
    let hub_url = format!("http://127.0.0.1:{hub_port}");
    let _hub = background(&[
        "server",
        "--listen",
        &format!("127.0.0.1:{hub_port}"),
        "--database-url",
        &format!("sqlite://{}", dir.path().join("hub.db").display()),
    ]);
    let metrics_port = free_port();
    let key = dir.path().join("node.key");
    let mut agent = background(&[
        "agent",
        "--hub",
        &hub_url,
        "--region",
        "eu-west",
        "--name",
        "gn-metrics-test",
        "--key",
        key.to_str().unwrap(),
        "--simulate-gpus",
        "2xH100-80GB",
        "--telemetry-interval-seconds",
        "1",
        "--metrics-listen",
        &format!("127.0.0.1:{metrics_port}"),
    ]);
    let started = Instant::now();
    let text = loop {
        if let Some(text) = scrape(metrics_port) {
            break text;
        }
        assert!(agent.0.try_wait().unwrap().is_none(), "the agent exited");
        assert!(started.elapsed() < TIMEOUT, "no /metrics after {TIMEOUT:?}");
        thread::sleep(Duration::from_millis(100));
    };
    let samples: Vec<_> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(parse_sample)
        .collect();
    for metric in [
        "DCGM_FI_DEV_GPU_UTIL",
        "DCGM_FI_DEV_FB_USED",
        "DCGM_FI_DEV_FB_FREE",
        "DCGM_FI_DEV_GPU_TEMP",
        "DCGM_FI_DEV_POWER_USAGE",
        "DCGM_FI_DEV_SM_CLOCK",
        "DCGM_FI_DEV_MEM_CLOCK",
        "DCGM_FI_DEV_XID_ERRORS",
        "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL",
        "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL",
        "DCGM_FI_PROF_GR_ENGINE_ACTIVE",
    ] {
        let series: Vec<_> = samples.iter().filter(|(n, _, _)| n == metric).collect();
        assert_eq!(series.len(), 2, "{metric}: one series per GPU\n{text}");
        let mut indexes = Vec::new();
        for (_, labels, value) in series {
            let names: Vec<&str> = labels.iter().map(|(k, _)| k.as_str()).collect();
            assert_eq!(
                names,
                ["gpu", "UUID", "device", "modelName", "Hostname"],
                "{metric}"
            );
            let label = |name: &str| &labels.iter().find(|(k, _)| k == name).unwrap().1;
            indexes.push(label("gpu").clone());
            assert_eq!(label("device"), &format!("nvidia{}", label("gpu")));
            assert!(label("UUID").starts_with("GPU-SIM-"), "{labels:?}");
            assert_eq!(label("modelName"), "Simulated H100-80GB");
            assert!(!label("Hostname").is_empty());
            assert!(value.is_finite() && *value >= 0.0, "{metric} {value}");
        }
        indexes.sort();
        assert_eq!(indexes, ["0", "1"], "{metric}");
    }
    let value = |name: &str| {
        samples
            .iter()
            .find(|(n, _, _)| n == name)
            .unwrap_or_else(|| panic!("{name} missing:\n{text}"))
            .2
    };
    assert_eq!(value("agora_agent_simulated"), 1.0);
    assert_eq!(value("agora_agent_gpus_healthy"), 2.0);
    assert_eq!(value("agora_agent_gpus_unhealthy"), 0.0);
    assert_eq!(value("agora_agent_assignments_running"), 0.0);
    assert_eq!(value("agora_agent_reports_queued"), 0.0);
    assert_eq!(value("agora_agent_heartbeat_failures_total"), 0.0);
    // Idle GPUs: nothing running, memory free.
    assert_eq!(value("DCGM_FI_DEV_GPU_UTIL"), 0.0);
    assert_eq!(value("DCGM_FI_DEV_FB_FREE"), 80.0 * 1024.0);
}

/// Without `--simulate-gpus` the agent needs NVML; where there is none (this machine, CI) it says
/// why and how to run without GPUs instead of offering nothing.
#[test]
fn an_agent_without_nvml_says_why_and_suggests_simulating() {
    let out = agora(&["gpus"]);
    if out.success {
        // A GPU machine: the agent would find its GPUs; nothing to check here.
        return;
    }
    assert!(out.stderr.contains("NVML is unavailable"), "{}", out.stderr);
    let out = agora(&[
        "agent",
        "--hub",
        "http://127.0.0.1:9",
        "--region",
        "eu-west",
        "--name",
        "gn-cli-test",
    ]);
    assert!(!out.success, "the agent started without GPUs");
    assert!(
        out.stderr.contains("cannot find this machine's GPUs")
            && out.stderr.contains("--simulate-gpus"),
        "stderr: {}",
        out.stderr
    );
    let json = agora(&["gpus", "--json"]);
    let found: serde_json::Value = serde_json::from_str(&json.stdout).expect("JSON");
    assert!(found["unavailable"].is_string(), "{found}");
    assert_eq!(found["gpus"], serde_json::json!([]));
}

/// `agora bench agent --json` measures a real agent process and reports the keys scripts rely on,
/// beside the targets. A short run; the figures are only checked to be plausible.
#[test]
fn the_agent_benchmark_reports_its_contract() {
    let out = agora(&[
        "--log",
        "warn",
        "bench",
        "agent",
        "--json",
        "--seconds",
        "2",
    ]);
    assert!(out.success, "{}", out.stderr);
    let report: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON report");
    let number = |key: &str| {
        report[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key} should be a number: {report}"))
    };
    assert!(number("rss_mb") > 0.0, "{report}");
    assert!(number("cpu_percent") >= 0.0, "{report}");
    assert_eq!(number("rss_target_mb"), 25.0);
    assert_eq!(number("cpu_target_percent"), 1.0);
    assert_eq!(report["gpus"], 8, "{report}");
    assert_eq!(report["telemetry_interval_s"], 1, "{report}");
    assert_eq!(report["gpus_healthy"], 8, "{report}");
    assert!(number("metrics_series") >= 8.0 * 11.0, "{report}");
}
