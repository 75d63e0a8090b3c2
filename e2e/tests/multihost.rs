//! Several hosts on one machine, joined by a real (emulated) network: the hub and five agents,
//! each in its own network namespace on a bridge, each agent's link held to its bandwidth by
//! `tc tbf` and its distance to every other host made by user-space delay proxies (the kernel has
//! no `netem`). The agents measure that network themselves — RTT to the hub and to each other,
//! bandwidth against the hub — and the test checks that the hub places on what they measured:
//!
//! 1. a 2-worker training job with `minBandwidthMbps` lands on the two well-connected agents (and
//!    a 3-worker one cannot be placed, because only two links are fast enough);
//! 2. an inference job with `userRegion` lands on the agent measured nearest to that region's
//!    nodes, although another agent of the same region asks less;
//! 3. killing that agent's host (its processes and its namespace) mid-job re-places the job on the
//!    next nearest agent, where it completes.
//!
//! The emulated world (RTTs in ms are plane distance plus both hosts' last miles, so that they are
//! a latency space Vivaldi can fit exactly): the users are in us-east, where the nodes sit behind
//! slow links; the well-connected nodes are in Europe, near the hub.
//!
//! | host       | region  | link      | ask   | RTT to gn-boston | to the hub |
//! |------------|---------|-----------|-------|------------------|------------|
//! | gn-boston  | us-east | 20 Mbit/s | 50.00 | –                | 81         |
//! | gn-newyork | us-east | 20 Mbit/s | 2.01  | 8                | 75         |
//! | gn-chicago | us-east | 20 Mbit/s | 2.00  | 63               | 102        |
//! | gn-paris   | eu-west | 1 Gbit/s  | 2.00  | 92               | 11         |
//! | gn-berlin  | eu-west | 1 Gbit/s  | 2.00  | 92.4             | 13.8       |
//!
//! gn-boston asks more than any job here pays: it stands for the users' side of us-east (the
//! region's position in the hub's model is the median of its members') and is never rented. The
//! inference job's nodes (gn-newyork, then gn-chicago) are not the training job's, so that the
//! scheduler's copy of the fleet (read back up to a second late when other events free GPUs) has
//! their GPUs free whichever moment it was read.
//!
//! Where it runs: every host is a namespace `agora-e2e-PID-NAME` with `eth0` on the bridge
//! `ae2e-PID-br`, whose address in the root namespace is where this test's delay proxies listen.
//! Agents reach the hub through one proxy and each other's probe responders through one proxy
//! per responder; each proxy delays a connection by half the RTT of the pair (client, server),
//! picked by the client's address. See `e2e/src/netns.rs` and `e2e/src/delay_proxy.rs`.
//!
//! Needs root (`ip netns`, `tc`) and the binary: `cargo build --bin agora && cargo test -p e2e
//! --test multihost -- --nocapture`. Elsewhere it prints why it is skipped and passes, unless
//! `AGORA_REQUIRE_NETNS=1` (as `scripts/test` sets). Everything it makes is deleted when it ends,
//! failed or not; a run killed outright is swept by the next one.
#![cfg(target_os = "linux")]

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use e2e::{
    Api, Process,
    delay_proxy::DelayProxy,
    job_id,
    netns::{self, Fabric, Host},
    placed_node, poll_until, wait_ready,
};
use serde_json::{Value, json};

/// Long enough for registration, a probe round and the hub's flush on a loaded 2-core machine.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// The hub's port inside its namespace.
const HUB_PORT: u16 = 7600;

/// Each agent's probe responder, inside its namespace.
const PROBE_PORT: u16 = 7601;

/// The training job's bound, between the two link classes below.
const MIN_BANDWIDTH_MBPS: u64 = 100;

/// A host of the emulated world.
struct Site {
    name: &'static str,
    region: &'static str,
    /// Asking price per GPU-hour.
    price: &'static str,
    /// `tc tbf` rate of its link, each direction.
    mbit: u32,
    /// Where it sits in the plane, in ms.
    at: (f64, f64),
    /// Its last mile, paid by every path to or from it, in ms.
    last_mile_ms: f64,
}

/// The users' side of `us-east`: a node there, too expensive for any job here to rent.
const USERS: usize = 0;
const NEWYORK: usize = 1;
const CHICAGO: usize = 2;

const SITES: [Site; 5] = [
    Site {
        name: "gn-boston",
        region: "us-east",
        price: "50.00",
        mbit: 20,
        at: (0.0, 0.0),
        last_mile_ms: 1.0,
    },
    Site {
        name: "gn-newyork",
        region: "us-east",
        price: "2.01",
        mbit: 20,
        at: (6.0, 0.0),
        last_mile_ms: 1.0,
    },
    Site {
        name: "gn-chicago",
        region: "us-east",
        price: "2.00",
        mbit: 20,
        at: (0.0, 60.0),
        last_mile_ms: 2.0,
    },
    Site {
        name: "gn-paris",
        region: "eu-west",
        price: "2.00",
        mbit: 1000,
        at: (90.0, 0.0),
        last_mile_ms: 1.0,
    },
    Site {
        name: "gn-berlin",
        region: "eu-west",
        price: "2.00",
        mbit: 1000,
        at: (90.0, 8.0),
        last_mile_ms: 1.0,
    },
];

/// The hub's place in the plane (in Europe) and its last mile (a data centre: none).
const HUB_AT: (f64, f64) = (80.0, 0.0);

fn distance(a: (f64, f64), b: (f64, f64)) -> f64 {
    ((a.0 - b.0).powi(2) + (a.1 - b.1).powi(2)).sqrt()
}

/// The RTT the proxies give the pair of sites, ms.
fn configured_rtt(a: usize, b: usize) -> f64 {
    let (a, b) = (&SITES[a], &SITES[b]);
    distance(a.at, b.at) + a.last_mile_ms + b.last_mile_ms
}

/// The RTT the proxies give a site to the hub, ms.
fn configured_hub_rtt(a: usize) -> f64 {
    distance(SITES[a].at, HUB_AT) + SITES[a].last_mile_ms
}

/// Every unordered pair of sites, by index.
fn pairs() -> impl Iterator<Item = (usize, usize)> {
    (0..SITES.len()).flat_map(|a| (a + 1..SITES.len()).map(move |b| (a, b)))
}

/// Half of an RTT: each direction's delay.
fn one_way(rtt_ms: f64) -> Duration {
    Duration::from_secs_f64(rtt_ms / 2000.0)
}

/// Every stored RTT (the latest per direction), ms by unordered pair of node names, read from
/// the hub's SQLite file.
fn stored_rtts(database_url: &str) -> Result<HashMap<(String, String), Vec<f64>>, String> {
    sqlx::any::install_default_drivers();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let rows: Vec<(String, String, i64)> = runtime.block_on(async {
        let mut db = <sqlx::AnyConnection as sqlx::Connection>::connect(database_url)
            .await
            .map_err(|e| format!("opening {database_url}: {e}"))?;
        let rows = sqlx::query_as("SELECT from_node, to_node, rtt_us FROM probe_rtts")
            .fetch_all(&mut db)
            .await
            .map_err(|e| format!("reading probe_rtts: {e}"))?;
        let _ = sqlx::Connection::close(db).await;
        Ok::<_, String>(rows)
    })?;
    let mut pairs: HashMap<(String, String), Vec<f64>> = HashMap::new();
    for (from, to, us) in rows {
        let key = if from < to { (from, to) } else { (to, from) };
        pairs.entry(key).or_default().push(us as f64 / 1000.0);
    }
    Ok(pairs)
}

/// The measured RTT of a pair (the mean of both directions' latest), if any.
fn measured(rtts: &HashMap<(String, String), Vec<f64>>, a: usize, b: usize) -> Option<f64> {
    let (a, b) = (SITES[a].name.to_string(), SITES[b].name.to_string());
    let key = if a < b { (a, b) } else { (b, a) };
    let samples = rtts.get(&key)?;
    Some(samples.iter().sum::<f64>() / samples.len() as f64)
}

/// `candidates` by their measured distance to `region`'s users, nearest first: the median of a
/// candidate's measured RTTs to the region's other nodes. This is the test's own reading of the
/// measurements, independent of the hub's model.
fn by_distance_to(
    region: &str,
    candidates: &[usize],
    rtts: &HashMap<(String, String), Vec<f64>>,
) -> Vec<(usize, f64)> {
    let mut ranked: Vec<(usize, f64)> = candidates
        .iter()
        .map(|&c| {
            let mut to_members: Vec<f64> = (0..SITES.len())
                .filter(|&m| m != c && SITES[m].region == region)
                .map(|m| {
                    measured(rtts, c, m).unwrap_or_else(|| {
                        panic!("no measured RTT {}–{}", SITES[c].name, SITES[m].name)
                    })
                })
                .collect();
            to_members.sort_by(f64::total_cmp);
            let n = to_members.len();
            let median = if n % 2 == 1 {
                to_members[n / 2]
            } else {
                (to_members[n / 2 - 1] + to_members[n / 2]) / 2.0
            };
            (c, median)
        })
        .collect();
    ranked.sort_by(|a, b| a.1.total_cmp(&b.1));
    ranked
}

fn site_index(name: &str) -> usize {
    SITES
        .iter()
        .position(|s| s.name == name)
        .unwrap_or_else(|| panic!("placed on an unknown node {name}"))
}

/// A ComputeJob of `kind` running the builtin sleep for `seconds` on `workers` × `gpus` GPUs.
fn sleep_job(
    name: &str,
    kind: &str,
    seconds: u64,
    workers: u32,
    gpus: u32,
    placement: Value,
) -> Value {
    json!({
        "apiVersion": "agora.dev/v1alpha1",
        "kind": "ComputeJob",
        "metadata": {"name": name},
        "spec": {
            "kind": kind,
            "workload": {"builtin": {"sleep": {"durationSeconds": seconds}}},
            "resources": {"workers": workers, "gpusPerWorker": gpus},
            "placement": placement,
            "pricing": {"maxPricePerGpuHour": "5.00"},
            "verification": {"mode": "None"},
            "retry": {"maxAttempts": 2}
        }
    })
}

/// `POST /v1/quotes`: where the job would run now (sorted node names), or why not.
fn quote(api: &Api, job: &Value) -> Result<Vec<String>, String> {
    match api.post_json("/v1/quotes", job)? {
        (200, body) if body["placeable"] == true => {
            let mut nodes: Vec<String> = body["workers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|w| w["node"].as_str().map(str::to_string))
                .collect();
            nodes.sort();
            Ok(nodes)
        }
        (200, body) => Err(body["message"].as_str().unwrap_or_default().to_string()),
        (status, body) => panic!("POST /v1/quotes: HTTP {status}: {body}"),
    }
}

/// The nodes of every worker of a placed job, sorted.
fn placed_nodes(job: &Value) -> Vec<String> {
    let mut nodes: Vec<String> = job["status"]["placement"]["workers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|w| w["node"].as_str().map(str::to_string))
        .collect();
    nodes.sort();
    nodes
}

/// Starts `agora server` in `host` and waits until it serves the API key it wrote.
fn start_hub(fabric: &Fabric, host: &Host, dir: &Path) -> (Process, Api) {
    let key_file = dir.join("api-key");
    let database = format!("sqlite://{}", dir.join("hub.db").display());
    let listen = format!("0.0.0.0:{HUB_PORT}");
    let cmd = e2e::agora_command(&[
        "server",
        "--listen",
        &listen,
        "--allow-plain-http",
        "--database-url",
        &database,
        "--api-key-file",
        key_file.to_str().expect("a UTF-8 temp dir"),
        // Heartbeats every second; a host gone for 4 s is lost.
        "--heartbeat-interval-seconds",
        "1",
        "--node-timeout-seconds",
        "4",
        "--api-key-limit",
        "off",
        "--node-limit",
        "off",
        "--anonymous-limit",
        "off",
    ]);
    let mut hub = Process::spawn("hub", dir, fabric.command(host, cmd));
    let url = format!("http://{}:{HUB_PORT}", host.address);
    let key = poll_until("the hub to serve its API key", STEP_TIMEOUT, || {
        if let Some(status) = hub.exit_status() {
            panic!("the hub exited {status}\n{}", hub.log_tail());
        }
        let key = std::fs::read_to_string(&key_file).map_err(|e| e.to_string())?;
        let key = key.trim();
        match Api::new(&url, key).get("/v1/jobs?limit=1") {
            Ok((200, _)) if !key.is_empty() => Ok(key.to_string()),
            other => Err(format!("{other:?}")),
        }
    });
    let api = Api::new(&url, &key);
    (hub, api)
}

#[test]
fn jobs_land_where_the_measured_network_says_and_move_when_a_host_dies() {
    if !netns::available_or_skip("multihost") {
        return;
    }
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("a temp dir");
    // Declared first, dropped last: whatever happens below, the namespaces, links and bridge go.
    let mut fabric = Fabric::create().unwrap_or_else(|e| panic!("making the bridge: {e}"));
    let hub_host = fabric
        .add_host("hub", None)
        .unwrap_or_else(|e| panic!("adding the hub's host: {e}"));
    let hosts: Vec<Host> = SITES
        .iter()
        .map(|s| {
            fabric
                .add_host(s.name, Some(s.mbit))
                .unwrap_or_else(|e| panic!("adding {}: {e}", s.name))
        })
        .collect();
    eprintln!(
        "bridge {} in this namespace; hub {} in {}; agents {}",
        fabric.gateway(),
        hub_host.address,
        hub_host.namespace,
        hosts
            .iter()
            .map(|h| format!(
                "{} {} ({} Mbit/s)",
                h.name,
                h.address,
                h.limit_mbit.unwrap_or(0)
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );

    // The proxies: one in front of the hub, one in front of each agent's probe responder.
    let site_of: Arc<HashMap<IpAddr, usize>> = Arc::new(
        hosts
            .iter()
            .enumerate()
            .map(|(i, h)| (IpAddr::V4(h.address), i))
            .collect(),
    );
    let listen = SocketAddr::new(IpAddr::V4(fabric.gateway()), 0);
    let hub_proxy = {
        let site_of = Arc::clone(&site_of);
        DelayProxy::start(
            listen,
            SocketAddr::new(IpAddr::V4(hub_host.address), HUB_PORT),
            Arc::new(move |ip| {
                site_of
                    .get(&ip)
                    .map_or(Duration::ZERO, |&i| one_way(configured_hub_rtt(i)))
            }),
        )
        .expect("the hub's delay proxy")
    };
    let probe_proxies: Vec<DelayProxy> = hosts
        .iter()
        .enumerate()
        .map(|(j, host)| {
            let site_of = Arc::clone(&site_of);
            DelayProxy::start(
                listen,
                SocketAddr::new(IpAddr::V4(host.address), PROBE_PORT),
                Arc::new(move |ip| {
                    site_of
                        .get(&ip)
                        .map_or(Duration::ZERO, |&i| one_way(configured_rtt(i, j)))
                }),
            )
            .unwrap_or_else(|e| panic!("{}'s delay proxy: {e}", host.name))
        })
        .collect();

    let (mut hub, api) = start_hub(&fabric, &hub_host, dir.path());
    let hub_url = format!("http://{}", hub_proxy.addr());
    let state_dir = dir.path().join("agent-state");
    let mut agents: Vec<Process> = SITES
        .iter()
        .zip(&hosts)
        .zip(&probe_proxies)
        .map(|((site, host), proxy)| {
            let key = dir.path().join(format!("{}.key", site.name));
            let probe_listen = format!("0.0.0.0:{PROBE_PORT}");
            let probe_address = proxy.addr().to_string();
            let cmd = e2e::agora_command(&[
                "agent",
                "--hub",
                &hub_url,
                "--allow-plain-http",
                "--key",
                key.to_str().expect("a UTF-8 temp dir"),
                "--state-dir",
                state_dir.to_str().expect("a UTF-8 temp dir"),
                "--name",
                site.name,
                "--region",
                site.region,
                "--simulate-gpus",
                "8xH100-80GB",
                "--price",
                site.price,
                "--probe-listen",
                &probe_listen,
                "--probe-address",
                &probe_address,
                // A first bandwidth probe within 10 s, then every 10 s; 1 MiB is 0.4 s at 20 Mbit/s.
                "--bandwidth-interval-seconds",
                "10",
                "--bandwidth-probe-bytes",
                "1048576",
            ]);
            Process::spawn(site.name, dir.path(), fabric.command(host, cmd))
        })
        .collect();
    let names: Vec<&str> = SITES.iter().map(|s| s.name).collect();
    wait_ready(&api, &names, STEP_TIMEOUT);

    // ---------------------------------------------------------------------------------------
    // What the agents measured: their hub RTT and bandwidth, and every pair's RTT.
    // ---------------------------------------------------------------------------------------
    let views: Vec<Value> = SITES
        .iter()
        .map(|site| {
            poll_until(
                &format!("{}'s hub RTT and bandwidth on its node view", site.name),
                STEP_TIMEOUT,
                || {
                    let node = api.node(site.name)?;
                    let network = &node["status"]["network"];
                    let known = network["uplinkMbps"].as_u64().is_some_and(|m| m > 0)
                        && network["downlinkMbps"].as_u64().is_some_and(|m| m > 0)
                        && node["telemetry"]["hubRttMs"].as_f64().is_some();
                    if known {
                        Ok(node)
                    } else {
                        Err(format!("{node:#}"))
                    }
                },
            )
        })
        .collect();
    let database = format!("sqlite://{}", dir.path().join("hub.db").display());
    let rtts = poll_until(
        "a stored RTT for every pair of agents",
        STEP_TIMEOUT,
        || {
            let rtts = stored_rtts(&database)?;
            let missing: Vec<String> = (0..SITES.len())
                .flat_map(|a| (a + 1..SITES.len()).map(move |b| (a, b)))
                .filter(|&(a, b)| measured(&rtts, a, b).is_none())
                .map(|(a, b)| format!("{}–{}", SITES[a].name, SITES[b].name))
                .collect();
            if missing.is_empty() {
                Ok(rtts)
            } else {
                Err(format!("not yet measured: {}", missing.join(", ")))
            }
        },
    );
    eprintln!("\nwhat the agents measured (set: what the proxies and tc impose):");
    eprintln!(
        "{:<11} {:<8} {:>10} {:>18} {:>22}",
        "node", "region", "tbf", "hub RTT set/meas.", "uplink/downlink Mbit/s"
    );
    let mut bandwidth = Vec::new();
    for (i, (site, view)) in SITES.iter().zip(&views).enumerate() {
        let hub_rtt = view["telemetry"]["hubRttMs"].as_f64().unwrap_or_default();
        let up = view["status"]["network"]["uplinkMbps"]
            .as_u64()
            .unwrap_or_default();
        let down = view["status"]["network"]["downlinkMbps"]
            .as_u64()
            .unwrap_or_default();
        bandwidth.push(up.min(down));
        eprintln!(
            "{:<11} {:<8} {:>5} Mbit {:>7.1} / {:>6.1} ms {:>12} / {}",
            site.name,
            site.region,
            site.mbit,
            configured_hub_rtt(i),
            hub_rtt,
            up,
            down
        );
        // A delay line cannot deliver early: the hub RTT is at least what the proxy imposes.
        assert!(
            hub_rtt >= configured_hub_rtt(i) * 0.95,
            "{} measured a hub RTT of {hub_rtt} ms through a {:.1} ms proxy: the traffic did not \
             go through it\n{view:#}",
            site.name,
            configured_hub_rtt(i)
        );
    }
    eprintln!("peer RTTs, ms (set → measured, both directions' latest):");
    for (a, b) in pairs() {
        let got = measured(&rtts, a, b).expect("every pair is measured");
        eprintln!(
            "  {:<11} – {:<11} {:>6.1} → {:>6.1}",
            SITES[a].name,
            SITES[b].name,
            configured_rtt(a, b),
            got
        );
        assert!(
            got >= configured_rtt(a, b) * 0.95,
            "{}–{} measured {got} ms through a {:.1} ms proxy: the probes did not go through it",
            SITES[a].name,
            SITES[b].name,
            configured_rtt(a, b)
        );
    }
    // The premise of the training check: tc's limits were measured on the right side of the bound.
    for (i, site) in SITES.iter().enumerate() {
        let fast = site.mbit as u64 > MIN_BANDWIDTH_MBPS;
        assert_eq!(
            bandwidth[i] > MIN_BANDWIDTH_MBPS,
            fast,
            "{} is limited to {} Mbit/s but measured {} Mbit/s (the bound is {MIN_BANDWIDTH_MBPS})",
            site.name,
            site.mbit,
            bandwidth[i]
        );
    }

    // ---------------------------------------------------------------------------------------
    // 1. Training with minBandwidthMbps: the two well-connected agents it can afford.
    // ---------------------------------------------------------------------------------------
    let bound = json!({"minBandwidthMbps": MIN_BANDWIDTH_MBPS});
    // Only two hosts it can afford have fast links: three workers cannot be placed with the bound,
    // and can without it.
    let three = sleep_job("three-workers", "Training", 2, 3, 8, bound.clone());
    let refused = quote(&api, &three).expect_err("three workers placed over slow links");
    eprintln!("\n3 workers with minBandwidthMbps {MIN_BANDWIDTH_MBPS}: not placeable: {refused}");
    let unbounded = sleep_job("three-workers", "Training", 2, 3, 8, json!({}));
    let anywhere = quote(&api, &unbounded)
        .unwrap_or_else(|e| panic!("3 workers without a bound should be placeable: {e}"));
    eprintln!("3 workers without the bound would run on {anywhere:?}");

    let training = sleep_job("train", "Training", 2, 2, 8, bound);
    let id = job_id(&api.submit(&training));
    let done = api.wait_for_phase(&id, "Succeeded", STEP_TIMEOUT);
    let mut expected: Vec<String> = SITES
        .iter()
        .enumerate()
        .filter(|&(i, s)| i != USERS && s.mbit as u64 > MIN_BANDWIDTH_MBPS)
        .map(|(_, s)| s.name.to_string())
        .collect();
    expected.sort();
    assert_eq!(done["status"]["attempts"], 1, "{done:#}");
    assert_eq!(
        placed_nodes(&done),
        expected,
        "the 2-worker training job with minBandwidthMbps should run on the well-connected agents\n{done:#}"
    );
    eprintln!("training (2 × 8 GPUs, minBandwidthMbps {MIN_BANDWIDTH_MBPS}) ran on {expected:?}");

    // ---------------------------------------------------------------------------------------
    // 2. Inference with userRegion: the agent measured nearest to the region's users.
    // ---------------------------------------------------------------------------------------
    let candidates: Vec<usize> = (0..SITES.len()).filter(|&i| i != USERS).collect();
    let ranked = by_distance_to("us-east", &candidates, &rtts);
    eprintln!(
        "\nmeasured distance to us-east's users (median RTT to the region's other nodes): {}",
        ranked
            .iter()
            .map(|&(i, ms)| format!("{} {ms:.1} ms ({})", SITES[i].name, SITES[i].price))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let nearest = ranked[0].0;
    assert_eq!(
        nearest, NEWYORK,
        "the emulated world puts gn-newyork nearest to us-east; measured: {ranked:?}"
    );
    let inference = sleep_job(
        "serve-us-east",
        "Inference",
        10,
        1,
        1,
        json!({"userRegion": "us-east"}),
    );
    // The hub refits its latency model from the stored RTTs (at a node's first measurement, then
    // every 30 s): wait until its answer for this job settles on the measured nearest node.
    let waited = Instant::now();
    let quoted = poll_until(
        "the hub's quote for the us-east job to name the measured nearest node",
        STEP_TIMEOUT,
        || match quote(&api, &inference) {
            Ok(nodes) if nodes == [SITES[nearest].name] => Ok(nodes),
            other => Err(format!("{other:?}")),
        },
    );
    eprintln!(
        "the hub's quote named {quoted:?} after {:?}",
        waited.elapsed()
    );
    let id = job_id(&api.submit(&inference));
    let running = api.wait_for_phase(&id, "Running", STEP_TIMEOUT);
    let first = placed_node(&running);
    assert_eq!(
        first, SITES[nearest].name,
        "the us-east inference job should run on the node measured nearest to us-east \
         ({ranked:?}), not the cheaper {}\n{running:#}",
        SITES[CHICAGO].name
    );
    eprintln!("inference for us-east runs on {first}");

    // ---------------------------------------------------------------------------------------
    // 3. Its host dies mid-job: the job moves to the next nearest and completes there.
    // ---------------------------------------------------------------------------------------
    let victim = site_index(&first);
    agents[victim].kill();
    fabric
        .remove_host(&hosts[victim])
        .unwrap_or_else(|e| panic!("removing {}'s host: {e}", hosts[victim].name));
    let killed = Instant::now();
    eprintln!(
        "killed {first}'s processes and deleted its namespace {}",
        hosts[victim].namespace
    );
    let survivors: Vec<usize> = candidates
        .iter()
        .copied()
        .filter(|&i| i != victim)
        .collect();
    let next = by_distance_to("us-east", &survivors, &rtts)[0].0;
    let done = api.wait_for_phase(&id, "Succeeded", STEP_TIMEOUT);
    let events = api.events(&id).expect("the job's events");
    let lines: Vec<String> = events
        .iter()
        .map(|e| {
            format!(
                "{}→{} {} attempt {}{}",
                e["from"].as_str().unwrap_or(""),
                e["to"].as_str().unwrap_or("?"),
                e["reason"].as_str().unwrap_or("?"),
                e["attempt"],
                e["node"]
                    .as_str()
                    .map(|n| format!(" on {n}"))
                    .unwrap_or_default()
            )
        })
        .collect();
    assert_eq!(done["status"]["attempts"], 2, "{done:#}\n{lines:#?}");
    assert_eq!(
        placed_node(&done),
        SITES[next].name,
        "after {first} died the job should run on the next nearest node\n{done:#}\n{lines:#?}"
    );
    assert!(
        lines.contains(&format!("Running→Running NodeLost attempt 1 on {first}")),
        "the first attempt should be lost with its node: {lines:#?}"
    );
    eprintln!(
        "the job was re-placed on {} and Succeeded {:?} after the kill; events:\n  {}",
        SITES[next].name,
        killed.elapsed(),
        lines.join("\n  ")
    );
    for (i, agent) in agents.iter_mut().enumerate() {
        if i != victim {
            assert!(
                agent.exit_status().is_none(),
                "{} exited\n{}",
                agent.name(),
                agent.log_tail()
            );
        }
    }
    assert!(
        hub.exit_status().is_none(),
        "the hub exited\n{}",
        hub.log_tail()
    );
    eprintln!("multihost test took {:?}", started.elapsed());
}
