//! Network probes through real processes: agents measure their RTT to the hub, to each other
//! (through their `--probe-listen` responders) and their bandwidth against the hub, and the hub
//! stores what they report; and, when running as root, a bandwidth probe through a `tc tbf` limit
//! between two network namespaces reads the limit to within ±10 %.
//!
//! Needs the binary: `cargo build --bin agora && cargo test -p e2e --test bandwidth`. The
//! namespace test needs root (`ip netns`, `tc`), as CI has; elsewhere it prints why it is skipped
//! and passes.
#![cfg(unix)]

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use e2e::{
    Api, Backend, Process, ServerHub, ServerOptions, TestDatabase, agora_command, free_port,
    poll_until,
};
use serde_json::Value;

/// Long enough for registration, a probe round and the hub's flush on a loaded machine.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// `agora agent` with simulated GPUs, its key in `dir/<name>.key`, and `extra` flags.
fn agent_command(hub: &str, dir: &Path, name: &str, extra: &[&str]) -> Command {
    let key = dir.join(format!("{name}.key"));
    let mut args = vec![
        "agent",
        "--hub",
        hub,
        "--key",
        key.to_str().expect("a UTF-8 temp dir"),
        "--name",
        name,
        "--region",
        "eu-west",
        "--simulate-gpus",
        "1xH100-80GB",
    ];
    args.extend(extra);
    agora_command(&args)
}

/// The node view's `status.network` figure `field` (Mbit/s), once the hub has one.
fn link(node: &Value, field: &str) -> Option<u64> {
    node["status"]["network"][field].as_u64()
}

/// Every stored RTT (µs) between the two nodes, either direction, read from the hub's SQLite file.
fn stored_rtts(database_url: &str, a: &str, b: &str) -> Result<Vec<i64>, String> {
    sqlx::any::install_default_drivers();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let mut db = <sqlx::AnyConnection as sqlx::Connection>::connect(database_url)
            .await
            .map_err(|e| format!("opening {database_url}: {e}"))?;
        let rows: Vec<(i64,)> = sqlx::query_as(
            "SELECT rtt_us FROM probe_rtts WHERE (from_node = ?1 AND to_node = ?2) \
             OR (from_node = ?2 AND to_node = ?1)",
        )
        .bind(a)
        .bind(b)
        .fetch_all(&mut db)
        .await
        .map_err(|e| format!("reading probe_rtts: {e}"))?;
        let _ = sqlx::Connection::close(db).await;
        Ok(rows.into_iter().map(|(us,)| us).collect())
    })
}

#[test]
fn agents_report_hub_rtt_bandwidth_and_peer_rtts_that_the_hub_stores() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDatabase::fresh(Backend::Sqlite, dir.path()).expect("SQLite");
    let hub = ServerHub::start(
        dir.path(),
        &db.url,
        ServerOptions {
            heartbeat_interval_seconds: 1,
            node_timeout_seconds: 10,
            ..ServerOptions::default()
        },
    );
    let mut agents = Vec::new();
    for name in ["gn-probe-a", "gn-probe-b"] {
        let listen = format!("127.0.0.1:{}", free_port());
        let cmd = agent_command(
            &hub.url,
            dir.path(),
            name,
            &[
                "--probe-listen",
                &listen,
                "--probe-address",
                &listen,
                "--bandwidth-interval-seconds",
                "1",
                "--bandwidth-probe-bytes",
                "1048576",
            ],
        );
        agents.push(Process::spawn(name, dir.path(), cmd));
    }
    let api = hub.api();
    for name in ["gn-probe-a", "gn-probe-b"] {
        let node = poll_until(
            &format!("{name}'s bandwidth and hub RTT on its node view"),
            STEP_TIMEOUT,
            || {
                let node = api.node(name)?;
                let measured = link(&node, "uplinkMbps").is_some_and(|m| m > 0)
                    && link(&node, "downlinkMbps").is_some_and(|m| m > 0)
                    && node["telemetry"]["hubRttMs"]
                        .as_f64()
                        .is_some_and(|ms| ms > 0.0);
                if measured {
                    Ok(node)
                } else {
                    Err(format!("{node:#}"))
                }
            },
        );
        eprintln!(
            "{name}: uplink {} Mbit/s, downlink {} Mbit/s, hub RTT {} ms (loopback)",
            node["status"]["network"]["uplinkMbps"],
            node["status"]["network"]["downlinkMbps"],
            node["telemetry"]["hubRttMs"]
        );
    }
    // The hub names each node to the other as a probe target; the pair's RTT is stored.
    let rtts = poll_until(
        "a stored RTT between the two agents",
        STEP_TIMEOUT,
        || match stored_rtts(&db.url, "gn-probe-a", "gn-probe-b")? {
            rtts if rtts.is_empty() => Err("no probe_rtts row yet".into()),
            rtts => Ok(rtts),
        },
    );
    eprintln!("stored peer RTTs (µs): {rtts:?}");
    // Loopback: well under a second, and a real measurement (not zero).
    assert!(rtts.iter().all(|&us| us > 0 && us < 1_000_000), "{rtts:?}");
    for agent in &mut agents {
        assert!(
            agent.exit_status().is_none(),
            "{} exited\n{}",
            agent.name(),
            agent.log_tail()
        );
    }
}

/// The rate `tc tbf` holds each direction to, Mbit/s.
const LIMIT_MBIT: f64 = 100.0;

/// Two network namespaces (the hub's and the agent's) joined by a veth pair whose both ends are
/// held to [`LIMIT_MBIT`] by `tc tbf` (egress only: the agent's end limits its uplink, the hub's
/// end its downlink), and a second, unlimited veth pair from this namespace to the hub's so the
/// test can read the hub's API. Deleted on drop, with everything in them.
struct Namespaces {
    hub: String,
    agent: String,
    /// The hub's address on the limited link (what the agent connects to).
    hub_limited: &'static str,
    /// The hub's address on the test's link, unique to this process (the link's other end is in
    /// this namespace, shared with any other run of this test).
    hub_direct: String,
}

impl Namespaces {
    fn create() -> Result<Namespaces, String> {
        let id = std::process::id() % 100_000;
        // The test's link is a /30 (`10.B.C.0/30`) picked by process id, so that concurrent runs
        // put different subnets in this namespace.
        let direct = format!("10.{}.{}", 32 + id % 200, (id / 200) % 250);
        let namespaces = Namespaces {
            hub: format!("agora-bw-hub-{id}"),
            agent: format!("agora-bw-agent-{id}"),
            hub_limited: "10.231.0.1",
            hub_direct: format!("{direct}.1"),
        };
        let (hub_cidr, test_cidr) = (format!("{direct}.1/30"), format!("{direct}.2/30"));
        let (hub, agent) = (namespaces.hub.as_str(), namespaces.agent.as_str());
        let (vh, va, vt, vd) = (
            format!("bwh{id}"),
            format!("bwa{id}"),
            format!("bwt{id}"),
            format!("bwd{id}"),
        );
        let rate = format!("{LIMIT_MBIT}mbit");
        let steps: Vec<Vec<&str>> = vec![
            vec!["ip", "netns", "add", hub],
            vec!["ip", "netns", "add", agent],
            vec![
                "ip", "link", "add", &vh, "type", "veth", "peer", "name", &va,
            ],
            vec!["ip", "link", "set", &vh, "netns", hub],
            vec!["ip", "link", "set", &va, "netns", agent],
            vec!["ip", "-n", hub, "addr", "add", "10.231.0.1/24", "dev", &vh],
            vec![
                "ip",
                "-n",
                agent,
                "addr",
                "add",
                "10.231.0.2/24",
                "dev",
                &va,
            ],
            vec![
                "ip", "link", "add", &vt, "type", "veth", "peer", "name", &vd,
            ],
            vec!["ip", "link", "set", &vd, "netns", hub],
            vec!["ip", "-n", hub, "addr", "add", &hub_cidr, "dev", &vd],
            vec!["ip", "addr", "add", &test_cidr, "dev", &vt],
            vec!["ip", "-n", hub, "link", "set", "lo", "up"],
            vec!["ip", "-n", agent, "link", "set", "lo", "up"],
            vec!["ip", "-n", hub, "link", "set", &vh, "up"],
            vec!["ip", "-n", agent, "link", "set", &va, "up"],
            vec!["ip", "-n", hub, "link", "set", &vd, "up"],
            vec!["ip", "link", "set", &vt, "up"],
            vec![
                "ip", "netns", "exec", agent, "tc", "qdisc", "add", "dev", &va, "root", "tbf",
                "rate", &rate, "burst", "64kb", "latency", "50ms",
            ],
            vec![
                "ip", "netns", "exec", hub, "tc", "qdisc", "add", "dev", &vh, "root", "tbf",
                "rate", &rate, "burst", "64kb", "latency", "50ms",
            ],
        ];
        for step in steps {
            let output = Command::new(step[0])
                .args(&step[1..])
                .output()
                .map_err(|e| format!("{}: {e}", step.join(" ")))?;
            if !output.status.success() {
                // Dropping `namespaces` deletes what was made so far.
                return Err(format!(
                    "{}: {}",
                    step.join(" "),
                    String::from_utf8_lossy(&output.stderr).trim()
                ));
            }
        }
        Ok(namespaces)
    }

    /// `ip netns exec NS` + the command.
    fn exec(&self, namespace: &str, command: Command) -> Command {
        let mut wrapped = Command::new("ip");
        wrapped
            .args(["netns", "exec", namespace])
            .arg(command.get_program())
            .args(command.get_args())
            .current_dir(command.get_current_dir().unwrap_or(Path::new(".")))
            .stdin(std::process::Stdio::null());
        for (name, value) in command.get_envs() {
            match value {
                Some(value) => wrapped.env(name, value),
                None => wrapped.env_remove(name),
            };
        }
        wrapped
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth ends in it, and with them their peers.
        for namespace in [&self.hub, &self.agent] {
            let _ = Command::new("ip")
                .args(["netns", "del", namespace])
                .status();
        }
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

#[test]
fn the_bandwidth_probe_reads_a_tc_tbf_limit_within_ten_percent() {
    if !is_root() {
        eprintln!(
            "skipped: network namespaces and tc need root (`id -u` is not 0); CI runs this as root"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let namespaces = Namespaces::create().unwrap_or_else(|e| panic!("setting up namespaces: {e}"));
    let port = 7600;
    let key_file = dir.path().join("api-key");
    let database = format!("sqlite://{}", dir.path().join("hub.db").display());
    let listen = format!("0.0.0.0:{port}");
    let hub_cmd = agora_command(&[
        "server",
        "--listen",
        &listen,
        "--allow-plain-http",
        "--database-url",
        &database,
        "--api-key-file",
        key_file.to_str().expect("a UTF-8 temp dir"),
        "--heartbeat-interval-seconds",
        "1",
        "--node-timeout-seconds",
        "10",
        "--api-key-limit",
        "off",
        "--node-limit",
        "off",
        "--anonymous-limit",
        "off",
    ]);
    let mut hub = Process::spawn("hub", dir.path(), namespaces.exec(&namespaces.hub, hub_cmd));
    let key = poll_until("the hub's API key", STEP_TIMEOUT, || {
        if let Some(status) = hub.exit_status() {
            return Err(format!("the hub exited {status}\n{}", hub.log_tail()));
        }
        std::fs::read_to_string(&key_file)
            .map(|k| k.trim().to_string())
            .map_err(|e| e.to_string())
            .and_then(|k| {
                if k.is_empty() {
                    Err("empty".into())
                } else {
                    Ok(k)
                }
            })
    });
    let api = Api::new(&format!("http://{}:{port}", namespaces.hub_direct), &key);
    // 8 MiB each way: 0.67 s at the limit, long enough for TCP to settle.
    let name = "gn-shaped";
    let hub_url = format!("http://{}:{port}", namespaces.hub_limited);
    let agent_cmd = agent_command(
        &hub_url,
        dir.path(),
        name,
        &[
            "--allow-plain-http",
            "--bandwidth-interval-seconds",
            "2",
            "--bandwidth-probe-bytes",
            "8388608",
        ],
    );
    let mut agent = Process::spawn(
        name,
        dir.path(),
        namespaces.exec(&namespaces.agent, agent_cmd),
    );
    poll_until(
        "the shaped agent's bandwidth on its node view",
        STEP_TIMEOUT,
        || {
            if let Some(status) = agent.exit_status() {
                return Err(format!("the agent exited {status}\n{}", agent.log_tail()));
            }
            let node = api.node(name)?;
            match (link(&node, "uplinkMbps"), link(&node, "downlinkMbps")) {
                (Some(_), Some(_)) => Ok(()),
                _ => Err(format!("{node:#}")),
            }
        },
    );
    // The first figure is kept until a later one differs by more than 10 %: let a few more
    // probes run so that the view shows a settled one.
    let settle = Instant::now() + Duration::from_secs(8);
    while Instant::now() < settle {
        std::thread::sleep(Duration::from_millis(500));
    }
    let node = api.node(name).expect("the node view");
    let (up, down) = (
        link(&node, "uplinkMbps").expect("uplink") as f64,
        link(&node, "downlinkMbps").expect("downlink") as f64,
    );
    eprintln!(
        "tc tbf {LIMIT_MBIT} Mbit/s each way: uplink {up} Mbit/s ({:+.1} %), downlink {down} Mbit/s ({:+.1} %)",
        (up / LIMIT_MBIT - 1.0) * 100.0,
        (down / LIMIT_MBIT - 1.0) * 100.0
    );
    for (direction, mbps) in [("uplink", up), ("downlink", down)] {
        assert!(
            (mbps - LIMIT_MBIT).abs() <= LIMIT_MBIT * 0.10,
            "{direction} {mbps} Mbit/s is not within ±10 % of the {LIMIT_MBIT} Mbit/s limit\n{}",
            agent.log_tail()
        );
    }
    drop(agent);
    drop(hub);
}
