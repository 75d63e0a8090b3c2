//! The Grafana dashboards (charts/agora/dashboards) against a real Prometheus scraping a real
//! `agora dev` — the hub and every in-process agent — through the scrape config `agora dev` writes
//! (`DATA_DIR/prometheus.yml`), while jobs run, fail, retry and settle. Every query of every panel
//! must return at least one series: a panel with no data fails the test, naming the dashboard, the
//! panel and the query. So does a template variable with no values.
//!
//! Prometheus is the Debian package (`prometheus`), run as `nobody` from a temporary directory. When
//! it is missing it is installed (`apt-get`) if the test runs as root; otherwise the test is skipped
//! with a message, unless `AGORA_REQUIRE_PROMETHEUS=1` (scripts/test sets it), which makes that a
//! failure.
//!
//! Needs the binary: `cargo build --bin agora && cargo test -p e2e --test dashboards`.
#![cfg(unix)]

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use e2e::{Api, DevHub, Process, free_port, job_id, poll_until, repo_root, wait_ready};
use serde_json::{Value, json};

/// Long enough for any placement or state change on loopback, short enough to fail fast.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// `agora dev` settles on its embedded devnet in 10 s epochs with a short challenge window: a
/// finished job's receipts are paid out within about a minute.
const SETTLEMENT_TIMEOUT: Duration = Duration::from_secs(150);

/// How often the test's Prometheus scrapes (the generated config says 5 s; a copy says this), so
/// that `rate()` over the value `$__rate_interval` stands for has enough samples soon.
const SCRAPE_INTERVAL: &str = "1s";

/// What Grafana's variables become in the queries sent here: every region and model, and ranges
/// that hold enough 1 s samples.
const SUBSTITUTIONS: [(&str, &str); 6] = [
    ("${region}", ".*"),
    ("$region", ".*"),
    ("${model}", ".*"),
    ("$model", ".*"),
    ("$__rate_interval", "1m"),
    ("$__range", "5m"),
];

#[test]
fn every_dashboard_panel_has_data_from_a_real_prometheus_scraping_agora_dev() {
    let Some(prometheus) = prometheus_binary() else {
        return;
    };
    let dir = tempfile::tempdir().expect("a temp dir");
    let hub = DevHub::start(dir.path(), 3);
    let api = hub.api();
    wait_ready(&api, &["gn-sim-0", "gn-sim-1", "gn-sim-2"], STEP_TIMEOUT);

    // The scrape config `agora dev` wrote, as a user would read it.
    let config_path = hub.data_dir.join("prometheus.yml");
    let config = read_scrape_config(&config_path);
    assert_scrape_config_names_everything(&config, &hub);
    assert!(
        hub.process.stdout().contains(&format!(
            "prometheus --config.file={}",
            config_path.display()
        )),
        "agora dev should print how to start Prometheus with its config:\n{}",
        hub.process.stdout()
    );

    // Prometheus's own checker accepts it as written.
    let promtool = prometheus.with_file_name("promtool");
    if promtool.is_file() {
        let checked = Command::new(&promtool)
            .args(["check", "config"])
            .arg(&config_path)
            .output()
            .expect("running promtool");
        assert!(
            checked.status.success(),
            "promtool check config {}: {}{}",
            config_path.display(),
            String::from_utf8_lossy(&checked.stdout),
            String::from_utf8_lossy(&checked.stderr)
        );
    }

    let prom = Prometheus::start(&prometheus, &config, dir.path());
    prom.wait_for("the hub's target up", "up{job=\"agora-hub\"} == 1", 1);
    prom.wait_for(
        "every agent's target up",
        "up{job=\"agora-agents\"} == 1",
        3,
    );

    // Work for every panel: a job that runs throughout (allocated GPUs, placed prices, busy
    // simulated GPUs), short ones that succeed and settle, one that fails (its deadline), and one
    // that loses its node, is retried and then waits (nothing else in its region).
    let long = job_id(&api.submit(&sleep_job("keeps-running", 900, None, &[])));
    for i in 0..3 {
        api.submit(&sleep_job(&format!("settles-{i}"), 2, None, &[]));
    }
    let deadline = job_id(&api.submit(&sleep_job("overruns", 60, Some("2s"), &[])));
    // The dearest node, so none of the jobs above (which fit the in-process agents) goes there.
    let mut lonely = hub.agent("gn-ext-lonely", "sa-east", "1xH100-80GB", "4.00");
    wait_ready(&api, &["gn-ext-lonely"], STEP_TIMEOUT);
    let retried = job_id(&api.submit(&sleep_job("outlives-its-node", 600, None, &["sa-east"])));
    api.wait_for_phase(&retried, "Running", STEP_TIMEOUT);
    lonely.kill();
    api.wait_for_phase(&long, "Running", STEP_TIMEOUT);
    let failed = api.wait_for_phase(&deadline, "Failed", STEP_TIMEOUT);
    assert_eq!(failed["status"]["reason"], "DeadlineExceeded", "{failed:#}");
    poll_until(
        "the job on the lost node to be retried",
        STEP_TIMEOUT * 2,
        || {
            let job = api.job(&retried)?;
            let events = api.events(&retried)?;
            if events.iter().any(|e| e["reason"] == "Retrying")
                && job["status"]["phase"] == "Pending"
            {
                Ok(())
            } else {
                Err(format!("{job:#}"))
            }
        },
    );

    // What the jobs did, as Prometheus saw it: the failure and the retry by reason, and the
    // receipts paid out to the providers.
    prom.wait_for(
        "the deadline failure counted",
        "max(agora_job_failures_total{reason=\"DeadlineExceeded\"}) == 1",
        1,
    );
    prom.wait_for(
        "the retry counted",
        "max(agora_job_retries_total{reason=\"NodeLost\"}) == 1",
        1,
    );
    prom.wait_for_within(
        "a settlement batch final and paid out",
        "max(agora_settlement_payouts_micros_total{kind=\"net\"}) > 0",
        1,
        SETTLEMENT_TIMEOUT,
    );
    prom.wait_for(
        "a simulated GPU busy with the running job",
        "max(DCGM_FI_DEV_GPU_UTIL) > 0",
        1,
    );
    // A minute of samples, so every `rate()`, `increase()` and `deriv()` over `1m` has at least
    // two, including ones taken after the last change.
    prom.wait_for_within(
        "a minute of samples",
        "count_over_time(up{job=\"agora-hub\"}[1m]) >= 20",
        1,
        Duration::from_secs(90),
    );

    let mut empty = Vec::new();
    let mut checked = 0;
    for (file, dashboard) in dashboards() {
        for variable in dashboard["templating"]["list"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if variable["type"] != "query" {
                continue;
            }
            let query = variable["query"].as_str().unwrap_or_default();
            let values = prom.label_values(query);
            checked += 1;
            if values.is_empty() {
                empty.push(format!(
                    "{file}: variable ${}: {query} has no values",
                    variable["name"].as_str().unwrap_or_default()
                ));
            }
        }
        for panel in panels(&dashboard) {
            let title = panel["title"].as_str().unwrap_or_default();
            for target in panel["targets"].as_array().into_iter().flatten() {
                let Some(expr) = target["expr"].as_str() else {
                    continue;
                };
                let query = substitute(expr);
                checked += 1;
                match prom.query(&query) {
                    Ok(series) if series.is_empty() => {
                        empty.push(format!("{file}: panel {title:?}: no series for {query}"));
                    }
                    Ok(_) => {}
                    Err(e) => empty.push(format!("{file}: panel {title:?}: {query}: {e}")),
                }
            }
        }
    }
    assert!(
        checked > 100,
        "only {checked} queries found in the dashboards"
    );
    assert!(
        empty.is_empty(),
        "{} of {checked} dashboard queries returned nothing:\n{}\n{}",
        empty.len(),
        empty.join("\n"),
        prom.process.log_tail()
    );
    println!("{checked} dashboard queries (panels and variables) returned data");
}

/// The Prometheus binary: on `PATH`, or installed from Debian's package when running as root.
/// `None` (the test skips, saying why) when neither, unless `AGORA_REQUIRE_PROMETHEUS=1`.
fn prometheus_binary() -> Option<PathBuf> {
    let found = || {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("prometheus"))
                .find(|path| path.is_file())
        })
    };
    if let Some(path) = found() {
        return Some(path);
    }
    let required = std::env::var("AGORA_REQUIRE_PROMETHEUS").is_ok_and(|v| v == "1");
    if !is_root() {
        assert!(
            !required,
            "AGORA_REQUIRE_PROMETHEUS=1 but prometheus is not installed and this test is not root \
             (apt-get install -y --no-install-recommends prometheus)"
        );
        eprintln!(
            "skipped: prometheus is not installed and installing it needs root \
             (apt-get install -y --no-install-recommends prometheus)"
        );
        return None;
    }
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends", "prometheus"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    if !install() {
        // A fresh machine may not have the package lists yet.
        let updated = Command::new("apt-get")
            .arg("update")
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            updated && install(),
            "installing prometheus with apt-get failed"
        );
    }
    // The package starts a system service; this test runs its own.
    let _ = Command::new("systemctl")
        .args(["stop", "prometheus"])
        .status();
    Some(found().expect("prometheus on PATH after installing it"))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// `DATA_DIR/prometheus.yml`, parsed.
fn read_scrape_config(path: &Path) -> serde_yaml::Value {
    let text = fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("agora dev should write {}: {e}", path.display()));
    serde_yaml::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not YAML: {e}\n{text}", path.display()))
}

/// The hub is job `agora-hub` at the hub's address; the agents are job `agora-agents`, one target
/// per in-process agent, each labelled with its node and region, and each serving its metrics.
fn assert_scrape_config_names_everything(config: &serde_yaml::Value, hub: &DevHub) {
    let jobs = config["scrape_configs"]
        .as_sequence()
        .unwrap_or_else(|| panic!("no scrape_configs: {config:?}"));
    let job = |name: &str| {
        jobs.iter()
            .find(|j| j["job_name"] == name)
            .unwrap_or_else(|| panic!("no job {name}: {config:?}"))
    };
    let hub_address = hub.url.trim_start_matches("http://");
    assert_eq!(
        job("agora-hub")["static_configs"][0]["targets"][0],
        hub_address,
        "{config:?}"
    );
    let targets = job("agora-agents")["static_configs"]
        .as_sequence()
        .expect("agent targets");
    let mut seen: Vec<(String, String)> = targets
        .iter()
        .map(|t| {
            let address = t["targets"][0].as_str().expect("an agent address");
            // Each target really serves the agent's metrics (DCGM names).
            let metrics = reqwest_get(&format!("http://{address}/metrics"));
            assert!(
                metrics.contains("DCGM_FI_DEV_GPU_UTIL"),
                "{address}/metrics: {metrics}"
            );
            (
                t["labels"]["node"]
                    .as_str()
                    .expect("a node label")
                    .to_string(),
                t["labels"]["region"]
                    .as_str()
                    .expect("a region label")
                    .to_string(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("gn-sim-0".to_string(), "eu-west".to_string()),
            ("gn-sim-1".to_string(), "us-east".to_string()),
            ("gn-sim-2".to_string(), "ap-southeast".to_string()),
        ],
        "{config:?}"
    );
}

/// A plain GET (no key), for the agents' `/metrics`.
fn reqwest_get(url: &str) -> String {
    let api = Api::new(url, "");
    match api.get("") {
        Ok((200, Value::String(text))) => text,
        other => panic!("GET {url}: {other:?}"),
    }
}

/// A Prometheus on a free loopback port, scraping what `config` names every second, with its data
/// in a directory of its own. Killed when dropped.
struct Prometheus {
    process: Process,
    api: Api,
    /// Removed after the process is killed (fields drop in order).
    _home: tempfile::TempDir,
}

impl Prometheus {
    fn start(binary: &Path, config: &serde_yaml::Value, log_dir: &Path) -> Prometheus {
        // A directory `nobody` can use: the test's own temp dir is private to root.
        let dir = tempfile::Builder::new()
            .prefix("agora-prometheus-")
            .tempdir()
            .expect("a directory for Prometheus");
        let home = dir.path();
        fs::set_permissions(home, fs::Permissions::from_mode(0o777)).expect("chmod");
        let mut config = config.clone();
        config["global"]["scrape_interval"] = SCRAPE_INTERVAL.into();
        config["global"]["evaluation_interval"] = SCRAPE_INTERVAL.into();
        let config_file = home.join("prometheus.yml");
        fs::write(
            &config_file,
            serde_yaml::to_string(&config).expect("the config as YAML"),
        )
        .expect("writing the config copy");
        fs::set_permissions(&config_file, fs::Permissions::from_mode(0o644)).expect("chmod");
        let port = free_port();
        let args = [
            format!("--config.file={}", config_file.display()),
            format!("--storage.tsdb.path={}", home.join("data").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
        ];
        // As `nobody` when root (Prometheus has no reason to run as root). setpriv execs, so the
        // process killed when the test ends is Prometheus itself (runuser would stay in between,
        // and SIGKILL would leave Prometheus running).
        let mut cmd = if is_root() {
            let mut cmd = Command::new("setpriv");
            cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
                .arg(binary);
            cmd
        } else {
            Command::new(binary)
        };
        cmd.args(&args).current_dir(home);
        let process = Process::spawn("prometheus", log_dir, cmd);
        let prometheus = Prometheus {
            process,
            api: Api::new(&format!("http://127.0.0.1:{port}"), ""),
            _home: dir,
        };
        poll_until("Prometheus to answer", STEP_TIMEOUT, || {
            match prometheus.api.get("/-/ready") {
                Ok((200, _)) => Ok(()),
                other => Err(format!("{other:?}\n{}", prometheus.process.log_tail())),
            }
        });
        prometheus
    }

    /// The series an instant query returns, or why it failed.
    fn query(&self, promql: &str) -> Result<Vec<Value>, String> {
        let (status, body) = self
            .api
            .get(&format!("/api/v1/query?query={}", encode(promql)))?;
        if status != 200 || body["status"] != "success" {
            return Err(format!("HTTP {status}: {body}"));
        }
        Ok(body["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// The values of a Grafana `label_values(SELECTOR, LABEL)` (or `label_values(LABEL)`) query.
    fn label_values(&self, query: &str) -> Vec<Value> {
        let inner = query
            .trim()
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
            .unwrap_or_else(|| panic!("not a label_values query: {query}"));
        let (selector, label) = match inner.rsplit_once(',') {
            Some((selector, label)) => (Some(substitute(selector.trim())), label.trim()),
            None => (None, inner.trim()),
        };
        let mut path = format!("/api/v1/label/{label}/values");
        if let Some(selector) = selector {
            path.push_str(&format!("?match[]={}", encode(&selector)));
        }
        match self.api.get(&path) {
            Ok((200, body)) => body["data"].as_array().cloned().unwrap_or_default(),
            other => panic!("{path}: {other:?}"),
        }
    }

    /// Waits until `promql` returns at least `series` series.
    fn wait_for(&self, what: &str, promql: &str, series: usize) {
        self.wait_for_within(what, promql, series, STEP_TIMEOUT);
    }

    fn wait_for_within(&self, what: &str, promql: &str, series: usize, timeout: Duration) {
        poll_until(what, timeout, || match self.query(promql) {
            Ok(found) if found.len() >= series => Ok(()),
            Ok(found) => Err(format!("{promql}: {found:?}")),
            Err(e) => Err(e),
        });
    }
}

/// Every dashboard file, parsed.
fn dashboards() -> Vec<(String, Value)> {
    let dir = repo_root().join("charts/agora/dashboards");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 5,
        "dashboards in {}: {files:?}",
        dir.display()
    );
    files
        .into_iter()
        .map(|path| {
            let text = fs::read_to_string(&path).expect("reading a dashboard");
            let json = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
            let name = path
                .file_name()
                .expect("a file name")
                .to_string_lossy()
                .into_owned();
            (name, json)
        })
        .collect()
}

/// Every panel, rows' nested panels included.
fn panels(dashboard: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        out.extend(panel["panels"].as_array().into_iter().flatten().cloned());
        out.push(panel.clone());
    }
    out
}

/// A panel's query as Grafana would send it with every region and model selected.
fn substitute(expr: &str) -> String {
    let mut query = expr.to_string();
    for (variable, value) in SUBSTITUTIONS {
        query = query.replace(variable, value);
    }
    assert!(
        !query.contains("$region") && !query.contains("$model") && !query.contains("$__"),
        "a variable the test does not know in {expr}"
    );
    query
}

/// Percent-encodes everything but RFC 3986's unreserved characters, for a query string.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A one-GPU builtin sleep of `seconds`, with an optional `maxRuntime`, limited to `regions` when
/// given. Two attempts, so a lost node sends it back to the queue.
fn sleep_job(name: &str, seconds: u32, max_runtime: Option<&str>, regions: &[&str]) -> Value {
    let mut spec = json!({
        "kind": "Batch",
        "workload": {"builtin": {"sleep": {"durationSeconds": seconds}}},
        "resources": {"workers": 1, "gpusPerWorker": 1},
        "pricing": {"maxPricePerGpuHour": "5.00"},
        "retry": {"maxAttempts": 2},
    });
    if let Some(limit) = max_runtime {
        spec["maxRuntime"] = json!(limit);
    }
    if !regions.is_empty() {
        spec["placement"] = json!({"regions": regions});
    }
    json!({
        "apiVersion": "agora.dev/v1alpha1",
        "kind": "ComputeJob",
        "metadata": {"name": name},
        "spec": spec,
    })
}
