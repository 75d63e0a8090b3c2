//! The Prometheus rules an operator installs (`charts/agora/alerts.yaml`, which the chart renders
//! as a PrometheusRule), checked with the real `promtool` — `promtool check rules` and the unit
//! tests of `charts/agora/alerts_test.yaml` — and held to what the one paged relies on: every alert
//! says how bad it is (`severity` page or ticket), what is wrong with its values (`summary`,
//! `description`) and where its runbook is (`runbook_url`, a section of docs/observability.md);
//! every alert is unit-tested both firing and quiet; the rules read only metrics that a real hub
//! and a real agent export (scraped here from running processes), and a real Prometheus scraping
//! them evaluates every rule without an error, keeps every alert quiet on the healthy fleet and
//! notices the hub going down; and the XIDs the GPU alert picks are those the agent withholds a
//! GPU for.
//!
//! promtool comes from Debian's `prometheus` package: taken from PATH, installed with apt-get when
//! this runs as root and it is missing, or else the promtool tests say so and pass, unless
//! `AGORA_REQUIRE_PROMETHEUS=1` (set by `scripts/test`), where they fail instead.

#[path = "common/process.rs"]
mod process;

use process::{Background, background, free_port};
use std::{
    collections::{BTreeMap, BTreeSet},
    io::{Read, Write},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::OnceLock,
    thread,
    time::{Duration, Instant},
};

use serde_yaml::Value;

/// How long a freshly started hub and agent may take to serve their first complete `/metrics`.
const STARTUP: Duration = Duration::from_secs(60);

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn chart() -> PathBuf {
    repo().join("charts/agora")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn yaml(path: &Path) -> Value {
    serde_yaml::from_str(&read(path))
        .unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()))
}

/// One rule of `alerts.yaml`.
struct Rule {
    group: String,
    /// The alert's name, or the recorded series' name.
    name: String,
    alert: bool,
    expr: String,
    labels: Value,
    annotations: Value,
}

fn rules() -> Vec<Rule> {
    let file = yaml(&chart().join("alerts.yaml"));
    let mut rules = Vec::new();
    for group in file["groups"].as_sequence().expect("groups") {
        let group_name = group["name"].as_str().expect("a group's name");
        for rule in group["rules"].as_sequence().expect("a group's rules") {
            let (name, alert) = match (rule["alert"].as_str(), rule["record"].as_str()) {
                (Some(alert), None) => (alert, true),
                (None, Some(record)) => (record, false),
                _ => panic!("a rule is an alert or a recording rule: {rule:?}"),
            };
            rules.push(Rule {
                group: group_name.to_string(),
                name: name.to_string(),
                alert,
                expr: rule["expr"].as_str().expect("an expr").to_string(),
                labels: rule["labels"].clone(),
                annotations: rule["annotations"].clone(),
            });
        }
    }
    rules
}

fn alerts() -> Vec<Rule> {
    rules().into_iter().filter(|r| r.alert).collect()
}

// --- promtool --------------------------------------------------------------------------------

fn required() -> bool {
    std::env::var("AGORA_REQUIRE_PROMETHEUS").as_deref() == Ok("1")
}

fn on_path(binary: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(binary))
        .find(|candidate| candidate.is_file())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.status.success() && out.stdout.trim_ascii() == b"0")
}

/// Installs Debian's `prometheus` package (promtool comes with it), refreshing the package lists
/// once if the first try fails on stale ones.
fn apt_install_prometheus() {
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends", "prometheus"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    eprintln!("promtool is not installed: installing Debian's prometheus package");
    if !install() {
        let _ = Command::new("apt-get")
            .args(["update", "-q"])
            .stdout(Stdio::null())
            .status();
        install();
    }
}

/// promtool, installed once per test process when missing and possible; `None` (the test then
/// passes saying why) when it cannot be had and is not required.
fn promtool() -> Option<PathBuf> {
    static PROMTOOL: OnceLock<Option<PathBuf>> = OnceLock::new();
    PROMTOOL
        .get_or_init(|| {
            if let Some(found) = on_path("promtool") {
                return Some(found);
            }
            if is_root() {
                apt_install_prometheus();
            }
            let found = on_path("promtool");
            if found.is_none() {
                assert!(
                    !required(),
                    "AGORA_REQUIRE_PROMETHEUS=1 but promtool is not installed and could not be: \
                     apt-get install -y --no-install-recommends prometheus (as root)"
                );
                eprintln!(
                    "promtool not installed (apt-get install prometheus, as root); skipping the \
                     promtool checks of charts/agora/alerts.yaml"
                );
            }
            found
        })
        .clone()
}

/// The Prometheus server of the same package as promtool; `None` (the test then passes saying why)
/// when it cannot be had and is not required.
fn prometheus() -> Option<PathBuf> {
    promtool()?;
    let found = on_path("prometheus");
    if found.is_none() {
        assert!(
            !required(),
            "AGORA_REQUIRE_PROMETHEUS=1 but promtool is installed without the prometheus server \
             (apt-get install -y --no-install-recommends prometheus)"
        );
        eprintln!("promtool without the prometheus server; skipping the real Prometheus check");
    }
    found
}

/// `promtool ARGS` in the chart's directory: success and everything it printed.
fn run_promtool(promtool: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(promtool)
        .args(args)
        .current_dir(chart())
        .output()
        .expect("running promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn promtool_accepts_every_rule() {
    let Some(promtool) = promtool() else { return };
    let (ok, text) = run_promtool(&promtool, &["check", "rules", "alerts.yaml"]);
    assert!(ok, "promtool check rules alerts.yaml failed:\n{text}");
    // promtool saw every rule the file holds, not a part of it.
    let count = rules().len();
    assert!(
        text.contains(&format!("SUCCESS: {count} rules found")),
        "expected {count} rules:\n{text}"
    );
}

#[test]
fn the_rules_pass_their_unit_tests() {
    let Some(promtool) = promtool() else { return };
    let (ok, text) = run_promtool(&promtool, &["test", "rules", "alerts_test.yaml"]);
    assert!(
        ok && text.contains("SUCCESS"),
        "promtool test rules alerts_test.yaml failed:\n{text}"
    );
}

// --- what every alert carries ----------------------------------------------------------------

/// The chart's home page (Chart.yaml `home`): the runbook links point into its docs.
fn home() -> String {
    yaml(&chart().join("Chart.yaml"))["home"]
        .as_str()
        .expect("Chart.yaml home")
        .to_string()
}

/// The anchor GitHub gives the heading `### NAME` of a runbook.
fn anchor(alert: &str) -> String {
    alert.to_lowercase()
}

#[test]
fn every_alert_says_how_bad_what_and_where_its_runbook_is() {
    let alerts = alerts();
    assert!(alerts.len() >= 20, "{} alerts", alerts.len());
    let runbooks = format!("{}/blob/main/docs/observability.md#", home());
    let mut names = BTreeSet::new();
    for alert in &alerts {
        let name = &alert.name;
        assert!(names.insert(name.clone()), "{name} is defined twice");
        assert!(name.starts_with("Agora"), "{name}: alerts are named Agora…");
        let severity = alert.labels["severity"].as_str();
        assert!(
            matches!(severity, Some("page" | "ticket")),
            "{name}: severity {severity:?}, not page or ticket"
        );
        let annotation = |key: &str| {
            alert.annotations[key]
                .as_str()
                .unwrap_or_else(|| panic!("{name}: no {key} annotation"))
        };
        assert!(!annotation("summary").trim().is_empty(), "{name}");
        let description = annotation("description");
        assert!(
            description.contains("{{ $value") || description.contains("{{ $labels."),
            "{name}: the description shows no value or label: {description}"
        );
        assert_eq!(
            annotation("runbook_url"),
            format!("{runbooks}{}", anchor(name)),
            "{name}"
        );
    }
    let mut records = BTreeSet::new();
    for record in rules().iter().filter(|r| !r.alert) {
        assert!(
            records.insert(record.name.clone()),
            "{} is recorded twice",
            record.name
        );
        assert!(
            record.name.starts_with("agora:"),
            "{}: recorded series are named agora:…",
            record.name
        );
    }
}

/// What the issue asks to be alerted on, each in the group it belongs to.
#[test]
fn the_alerts_cover_the_hub_the_fleet_the_slo_settlement_and_the_gpus() {
    let alerts = alerts();
    let group_of = |name: &str| {
        alerts
            .iter()
            .find(|a| a.name == name)
            .map(|a| a.group.as_str())
            .unwrap_or_else(|| panic!("no alert {name}"))
    };
    for (alert, group) in [
        ("AgoraHubDown", "agora-hub"),
        ("AgoraHubAbsent", "agora-hub"),
        ("AgoraNoLeader", "agora-hub"),
        ("AgoraQueueStuck", "agora-hub"),
        ("AgoraQueueWaitHigh", "agora-hub"),
        ("AgoraNodesLost", "agora-fleet"),
        ("AgoraNodesLostMany", "agora-fleet"),
        ("AgoraGpusUnhealthy", "agora-fleet"),
        ("AgoraErrorBudgetBurn", "agora-slo"),
        ("AgoraErrorBudgetBurnSlow", "agora-slo"),
        ("AgoraSettlementNotPosting", "agora-settlement"),
        ("AgoraSettlementNotFinalizing", "agora-settlement"),
        ("AgoraGpuSeriousXid", "agora-agent"),
    ] {
        assert_eq!(group_of(alert), group, "{alert}");
    }
    let expr = |name: &str| &alerts.iter().find(|a| a.name == name).unwrap().expr;
    assert!(expr("AgoraHubDown").contains(r#"(up{job="agora-hub"}) == 0"#));
    assert!(expr("AgoraHubAbsent").contains(r#"absent(up{job="agora-hub"})"#));
    // The SRE workbook's multiwindow, multi-burn-rate pairs for a 99.9% SLO.
    for pair in [
        [
            "ratio_rate1h > (14.4 * 0.001)",
            "ratio_rate5m > (14.4 * 0.001)",
        ],
        ["ratio_rate6h > (6 * 0.001)", "ratio_rate30m > (6 * 0.001)"],
    ] {
        for part in pair {
            assert!(expr("AgoraErrorBudgetBurn").contains(part), "{part}");
        }
    }
}

/// Every alert fires in some unit test (with its labels and rendered annotations) and stays quiet
/// in another; an alertname the rules do not define would pass promtool's quiet cases vacuously.
#[test]
fn every_alert_is_unit_tested_firing_and_quiet() {
    let tests = yaml(&chart().join("alerts_test.yaml"));
    let mut cases: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for test in tests["tests"].as_sequence().expect("tests") {
        let Some(checks) = test["alert_rule_test"].as_sequence() else {
            continue;
        };
        for check in checks {
            let name = check["alertname"].as_str().expect("alertname");
            let entry = cases.entry(name.to_string()).or_default();
            match check["exp_alerts"].as_sequence() {
                Some(expected) if !expected.is_empty() => {
                    entry.0 += 1;
                    for alert in expected {
                        let annotations = &alert["exp_annotations"];
                        for key in ["summary", "description", "runbook_url"] {
                            assert!(
                                annotations[key].is_string(),
                                "{name}: a firing case without its {key}"
                            );
                        }
                    }
                }
                _ => entry.1 += 1,
            }
        }
    }
    let defined: BTreeSet<String> = alerts().into_iter().map(|a| a.name).collect();
    for name in cases.keys() {
        assert!(
            defined.contains(name),
            "alerts_test.yaml tests {name}, which alerts.yaml does not define"
        );
    }
    for name in &defined {
        let (firing, quiet) = cases.get(name).copied().unwrap_or_default();
        assert!(firing > 0, "{name}: no unit test where it fires");
        assert!(quiet > 0, "{name}: no unit test where it stays quiet");
    }
}

/// `SERIOUS_XIDS` of the agent's health rules, read from its source.
fn agent_serious_xids() -> BTreeSet<u32> {
    let source = read(&repo().join("gpu-runtime/src/gpus/health.rs"));
    let list = source
        .split_once("pub const SERIOUS_XIDS: &[u32] = &[")
        .and_then(|(_, rest)| rest.split_once("];"))
        .expect("SERIOUS_XIDS in gpu-runtime/src/gpus/health.rs")
        .0;
    list.split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(|x| x.parse().expect("an XID"))
        .collect()
}

#[test]
fn the_gpu_alert_picks_the_xids_the_agent_withholds_a_gpu_for() {
    let alerts = alerts();
    let expr = &alerts
        .iter()
        .find(|a| a.name == "AgoraGpuSeriousXid")
        .expect("AgoraGpuSeriousXid")
        .expr;
    let alerted: BTreeSet<u32> = expr
        .split_once(r#"xid=~""#)
        .and_then(|(_, rest)| rest.split_once('"'))
        .expect("xid=~\"…\" in AgoraGpuSeriousXid")
        .0
        .split('|')
        .map(|x| x.parse().expect("an XID"))
        .collect();
    assert_eq!(alerted, agent_serious_xids());
}

/// The runbooks live in docs/observability.md, "Alerts", one section per alert headed by its name
/// (GitHub's anchor for it is the runbook_url's).
#[test]
fn every_alert_has_its_runbook_section() {
    let text = read(&repo().join("docs/observability.md"));
    // The "## Alerts" section, up to the next section of its level.
    let section: Vec<&str> = text
        .lines()
        .skip_while(|l| l.trim_end() != "## Alerts")
        .skip(1)
        .take_while(|l| !l.starts_with("## "))
        .collect();
    let headings: BTreeSet<&str> = section
        .iter()
        .filter(|l| l.starts_with('#'))
        .filter_map(|l| l.trim_start_matches('#').strip_prefix(' '))
        .map(str::trim)
        .collect();
    let alerts = alerts();
    if !alerts.iter().any(|a| headings.contains(a.name.as_str())) {
        eprintln!(
            "docs/observability.md's \"Alerts\" has no runbook sections yet; runbook anchors unchecked"
        );
        return;
    }
    for alert in alerts {
        assert!(
            headings.contains(alert.name.as_str()),
            "docs/observability.md, \"Alerts\", has no runbook section headed {}",
            alert.name
        );
    }
}

// --- the metrics the rules read --------------------------------------------------------------

/// The names in a PromQL expression that are series: metric names (`agora_…`, `DCGM_…`, `up`)
/// and recorded series (`agora:…`). String literals (label values) are skipped.
fn series_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut token = String::new();
    let mut quoted = false;
    for c in expr.chars().chain(std::iter::once(' ')) {
        if c == '"' {
            quoted = !quoted;
            token.clear();
            continue;
        }
        if quoted {
            continue;
        }
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            token.push(c);
            continue;
        }
        if token.starts_with("agora_")
            || token.starts_with("agora:")
            || token.starts_with("DCGM_")
            || token == "up"
        {
            names.insert(token.clone());
        }
        token.clear();
    }
    names
}

/// `GET /metrics` on the port; `None` while nothing answers yet.
fn scrape(port: u16) -> Option<String> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(STARTUP)).ok()?;
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

/// The series names a scrape can hold: every sample's name, and every family's under the names its
/// type gives its samples (a counter's `_total`, a histogram's `_bucket`, `_sum`, `_count`), so
/// that a family without series yet counts too.
fn exported_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(family) = line.strip_prefix("# TYPE ") {
            let (name, kind) = family.split_once(' ').expect("# TYPE name kind");
            let suffixes: &[&str] = match kind.trim() {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                _ => &[""],
            };
            names.extend(suffixes.iter().map(|s| format!("{name}{s}")));
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_string());
        }
    }
    names
}

/// Waits for `/metrics` on `port` to hold a sample of `metric`; panics if `process` exits first.
fn scrape_until(port: u16, metric: &str, process: &mut Background, what: &str) -> String {
    let started = Instant::now();
    loop {
        if let Some(text) = scrape(port)
            && text.lines().any(|l| l.starts_with(metric))
        {
            return text;
        }
        assert!(
            process.0.try_wait().expect("polling").is_none(),
            "the {what} exited"
        );
        assert!(
            started.elapsed() < STARTUP,
            "the {what}'s /metrics has no {metric} after {STARTUP:?}"
        );
        thread::sleep(Duration::from_millis(200));
    }
}

/// A real hub (SQLite) and a real agent with one simulated GPU registered with it, both serving
/// `/metrics` on loopback; killed when dropped.
struct Fleet {
    hub: Option<Background>,
    _agent: Background,
    hub_port: u16,
    agent_port: u16,
    /// Each one's first `/metrics` that holds the node's series.
    hub_text: String,
    agent_text: String,
    /// Removed after the processes (fields drop in order).
    _dir: tempfile::TempDir,
}

impl Fleet {
    fn start() -> Fleet {
        let dir = tempfile::tempdir().expect("temporary directory");
        let hub_port = free_port();
        let mut hub = background(&[
            "server",
            "--listen",
            &format!("127.0.0.1:{hub_port}"),
            "--database-url",
            &format!("sqlite://{}", dir.path().join("hub.db").display()),
        ]);
        let agent_port = free_port();
        let key = dir.path().join("node.key");
        let mut agent = background(&[
            "agent",
            "--hub",
            &format!("http://127.0.0.1:{hub_port}"),
            "--region",
            "eu-west",
            "--name",
            "gn-alert-rules",
            "--key",
            key.to_str().expect("UTF-8 path"),
            "--simulate-gpus",
            "1xH100-80GB",
            "--metrics-listen",
            &format!("127.0.0.1:{agent_port}"),
        ]);
        // The node's families (agora_nodes, agora_gpus, heartbeat ages) appear once it registered.
        let hub_text = scrape_until(hub_port, "agora_gpus{", &mut hub, "hub");
        let agent_text = scrape_until(agent_port, "DCGM_FI_DEV_XID_ERRORS{", &mut agent, "agent");
        Fleet {
            hub: Some(hub),
            _agent: agent,
            hub_port,
            agent_port,
            hub_text,
            agent_text,
            _dir: dir,
        }
    }
}

/// A real hub with a real (simulated-GPU) agent registered: every metric any rule reads is one of
/// theirs, and every recorded series a rule reads is recorded by another rule.
#[test]
fn the_rules_read_only_metrics_a_real_hub_and_agent_export() {
    let fleet = Fleet::start();
    let mut exported = exported_names(&fleet.hub_text);
    exported.extend(exported_names(&fleet.agent_text));
    // Prometheus's own series for every target.
    exported.insert("up".to_string());

    let rules = rules();
    let recorded: BTreeSet<&str> = rules
        .iter()
        .filter(|r| !r.alert)
        .map(|r| r.name.as_str())
        .collect();
    let mut read = BTreeSet::new();
    for rule in &rules {
        for name in series_names(&rule.expr) {
            if name.contains(':') {
                assert!(
                    recorded.contains(name.as_str()),
                    "{}: reads {name}, which no rule records",
                    rule.name
                );
            } else {
                assert!(
                    exported.contains(&name),
                    "{}: reads {name}, which neither the hub nor the agent exports",
                    rule.name
                );
                read.insert(name);
            }
        }
    }
    // The check saw the rules' metrics, hub and agent alike.
    for name in [
        "agora_http_requests_total",
        "agora_settlement_batches",
        "agora_node_heartbeat_age_seconds_bucket",
        "DCGM_FI_DEV_XID_ERRORS",
        "agora_agent_heartbeat_failures_total",
    ] {
        assert!(read.contains(name), "no rule reads {name}: {read:?}");
    }
}

#[test]
fn series_names_skip_label_values_and_functions() {
    let names = series_names(
        r#"sum by (route) (rate(agora_http_requests_total{status="429", route!="agora_x"}[5m])) > agora:leader:max or up{job="agora-hub"}"#,
    );
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    assert_eq!(
        names,
        ["agora:leader:max", "agora_http_requests_total", "up"]
    );
}

// --- a real Prometheus -----------------------------------------------------------------------

/// `GET path` on a loopback port as JSON (HTTP/1.0, so the answer is neither chunked nor kept
/// open); `None` while nothing answers or the answer is not a 200.
fn get_json(port: u16, path: &str) -> Option<serde_json::Value> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(STARTUP)).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        return None;
    }
    serde_json::from_str(body).ok()
}

/// Percent-encodes a query parameter.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A Prometheus (Debian's, beside promtool) on a free loopback port, scraping `targets` (job →
/// address) every second and evaluating alerts.yaml every second, as `nobody` when run as root;
/// killed when dropped.
struct Prometheus {
    process: Background,
    port: u16,
    _home: tempfile::TempDir,
}

impl Prometheus {
    fn start(binary: &Path, targets: &[(&str, u16)]) -> Prometheus {
        // A directory `nobody` can use: the test's own temporary directories are private to root.
        let home = tempfile::Builder::new()
            .prefix("agora-alert-rules-")
            .tempdir()
            .expect("a directory for Prometheus");
        let open = |path: &Path, mode: u32| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        };
        open(home.path(), 0o777);
        let rules = home.path().join("alerts.yaml");
        std::fs::copy(chart().join("alerts.yaml"), &rules).expect("copying alerts.yaml");
        open(&rules, 0o644);
        let mut config = format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nrule_files: [{}]\nscrape_configs:\n",
            rules.display()
        );
        for (job, port) in targets {
            config.push_str(&format!(
                "  - job_name: {job}\n    static_configs: [{{targets: [\"127.0.0.1:{port}\"]}}]\n"
            ));
        }
        let config_file = home.path().join("prometheus.yml");
        std::fs::write(&config_file, config).expect("writing prometheus.yml");
        open(&config_file, 0o644);
        let port = free_port();
        // setpriv execs, so the process killed at the end is Prometheus itself.
        let mut cmd = if is_root() {
            let mut cmd = Command::new("setpriv");
            cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
                .arg(binary);
            cmd
        } else {
            Command::new(binary)
        };
        cmd.arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                home.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .current_dir(home.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut process = Background(cmd.spawn().expect("spawning prometheus"));
        let started = Instant::now();
        while get_json(port, "/api/v1/status/buildinfo").is_none() {
            assert!(
                process.0.try_wait().expect("polling").is_none(),
                "prometheus exited"
            );
            assert!(
                started.elapsed() < STARTUP,
                "prometheus did not answer in {STARTUP:?}"
            );
            thread::sleep(Duration::from_millis(200));
        }
        Prometheus {
            process,
            port,
            _home: home,
        }
    }

    fn query(&self, promql: &str) -> Vec<serde_json::Value> {
        get_json(
            self.port,
            &format!("/api/v1/query?query={}", encode(promql)),
        )
        .and_then(|body| body["data"]["result"].as_array().cloned())
        .unwrap_or_default()
    }

    /// Polls `check` until it answers `Some`; panics with `what` (and the last answer) after
    /// [`STARTUP`].
    fn wait<T>(&mut self, what: &str, mut check: impl FnMut(&Self) -> Result<T, String>) -> T {
        let started = Instant::now();
        loop {
            match check(self) {
                Ok(found) => return found,
                Err(last) => {
                    assert!(
                        self.process.0.try_wait().expect("polling").is_none(),
                        "prometheus exited"
                    );
                    assert!(
                        started.elapsed() < STARTUP,
                        "{what}: not after {STARTUP:?}; last: {last}"
                    );
                }
            }
            thread::sleep(Duration::from_millis(250));
        }
    }
}

/// The rules loaded into a real Prometheus that scrapes a real hub and agent: every rule evaluates
/// without an error against their real series (label sets promtool's tests only imitate), the
/// recorded series hold what the fleet is (one leader, one GPU with no XID), no alert is active on
/// the healthy fleet; then the hub is killed, and `AgoraHubDown` becomes pending for its job.
#[test]
fn a_real_prometheus_evaluates_every_rule_and_notices_the_hub_going_down() {
    let Some(binary) = prometheus() else { return };
    let mut fleet = Fleet::start();
    let mut prometheus = Prometheus::start(
        &binary,
        &[
            ("agora-hub", fleet.hub_port),
            ("agora-agents", fleet.agent_port),
        ],
    );
    // Both scraped, and the recording rules evaluated over what was scraped.
    prometheus.wait("the hub's leader recorded", |p| {
        match p.query("agora:leader:max").first() {
            Some(s) if s["value"][1] == "1" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    prometheus.wait("the agent's GPU XID recorded", |p| {
        let found = p.query(r#"agora:gpu_last_xid:info{xid="0", job="agora-agents"}"#);
        if found.len() == 1 {
            Ok(())
        } else {
            Err(format!("{found:?}"))
        }
    });
    // Every rule of every group evaluated without an error, and no alert active on the healthy
    // fleet once the evaluations after the first scrapes have run (before them, AgoraHubAbsent
    // is pending). Left out: heartbeat timing on a busy test machine. One node's heartbeat is
    // 0 to 5.5 s old at a scrape, and between 5 and 10 s old it is a median above 5 s for
    // AgoraHubBehindOnHeartbeats; a hub slowed by other builds may miss an agent's heartbeat.
    const TIMING: [&str; 3] = [
        "AgoraHubBehindOnHeartbeats",
        "AgoraHeartbeatsLate",
        "AgoraAgentHeartbeatsFailing",
    ];
    let count = rules().len();
    prometheus.wait("every rule evaluated and healthy, no alert active", |p| {
        let body = get_json(p.port, "/api/v1/rules").ok_or("no /api/v1/rules")?;
        let mut evaluated = 0;
        let mut problems = Vec::new();
        for group in body["data"]["groups"].as_array().into_iter().flatten() {
            for rule in group["rules"].as_array().into_iter().flatten() {
                let name = rule["name"].as_str().unwrap_or_default();
                match rule["health"].as_str() {
                    Some("ok") => evaluated += 1,
                    // Not evaluated yet.
                    Some("unknown") => {}
                    _ => problems.push(format!(
                        "{name} in {}: {} {}",
                        group["name"], rule["health"], rule["lastError"]
                    )),
                }
                if rule["type"] == "alerting"
                    && rule["state"] != "inactive"
                    && !TIMING.contains(&name)
                {
                    problems.push(format!(
                        "{name} is {} on a healthy fleet: {}",
                        rule["state"], rule["alerts"]
                    ));
                }
            }
        }
        if evaluated == count && problems.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{evaluated} of {count} rules evaluated; {problems:?}"
            ))
        }
    });

    // The hub goes away: its scrapes fail, and the page is on its way (pending for its minute).
    drop(fleet.hub.take());
    let alert = prometheus.wait("AgoraHubDown pending or firing", |p| {
        let body = get_json(p.port, "/api/v1/alerts").ok_or("no /api/v1/alerts")?;
        let alerts = body["data"]["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        alerts
            .iter()
            .find(|a| a["labels"]["alertname"] == "AgoraHubDown")
            .cloned()
            .ok_or_else(|| format!("{alerts:?}"))
    });
    assert_eq!(alert["labels"]["job"], "agora-hub");
    assert_eq!(alert["labels"]["severity"], "page");
    assert!(
        alert["annotations"]["description"]
            .as_str()
            .is_some_and(|d| d.contains("Every target of job agora-hub")),
        "{alert}"
    );
}
