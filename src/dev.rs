//! `agora dev`: a hub on loopback with SQLite in a data directory and simulated GPU agents running
//! in this process. The agents still talk to the hub over real HTTP, exactly as remote ones do.
//!
//! Each agent serves its own `/metrics` (the DCGM exporter's names, simulated readings) on a port
//! of its own, as `agora agent --metrics-listen` does, and `DATA_DIR/prometheus.yml` is written at
//! each start: a Prometheus scrape config for the hub and every agent, so the dashboards in
//! charts/agora/dashboards can be tried on a laptop.

use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};

use anyhow::Context;
use crds::money::Price;
use tokio::task::JoinSet;

use crate::cli::{DevArgs, shutdown_signal};

/// The simulated fleet `agora dev` starts, cycled when more agents are asked for: (region, GPUs,
/// asking price per GPU-hour). Prices are in the range public GPU clouds list for these models.
const FLEET: [(&str, &str, &str); 3] = [
    ("eu-west", "8xH100-80GB", "2.49"),
    ("us-east", "4xA100-80GB", "1.59"),
    ("ap-southeast", "2xL4-24GB", "0.59"),
];

pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating the data directory {}", args.data_dir.display()))?;
    let data_dir = args.data_dir.canonicalize()?;
    let database = data_dir.join("agora.db");
    let settings = api::HubSettings {
        heartbeat_interval: Duration::from_secs(2),
        node_timeout: Duration::from_secs(10),
        schedule_interval: Duration::from_secs(1),
        price_epoch: Duration::from_secs(15),
        // One person on loopback, plus `scripts/fuzz-api` and the e2e tests, which drive this
        // hub as fast as it answers: limits far above what they reach, but still enforced, so
        // the limiter is on the path every dev hub serves.
        rate_limits: api::ratelimit::RateLimits {
            api_key: Some(api::ratelimit::Rate::new(10_000.0, 20_000)?),
            node: Some(api::ratelimit::Rate::new(10_000.0, 20_000)?),
            anonymous: Some(api::ratelimit::Rate::new(10_000.0, 20_000)?),
            ..api::ratelimit::RateLimits::default()
        },
        ..api::HubSettings::default()
    };
    let key_file = data_dir.join("api-key");
    // Settlement on the embedded devnet by default: short epochs and challenge windows, so a
    // finished job's receipts are in a final batch within a minute.
    let chain = args.chain.link(crate::chain::Defaults {
        mode: crate::chain::ChainMode::Embedded,
        epoch: Duration::from_secs(10),
        devnet_state: Some(data_dir.join("devnet.json")),
    })?;
    let chain_line = chain.as_ref().map(|link| link.chain.label());
    let hub = api::RunningHub::start(api::HubConfig {
        listen: args.listen,
        database_url: format!("sqlite://{}", database.display()),
        settings,
        api_key_file: Some(key_file.clone()),
        tls: None,
        // `agora dev` is a trial hub: on loopback by default, and `--listen` elsewhere is the
        // user's explicit choice (a container's port, say).
        allow_plain_http: true,
        chain,
    })
    .await?;
    let key = hub.api_key().unwrap_or_default().to_string();
    let url = hub.url();
    // The in-process agents reach the hub over loopback even when it listens on every address
    // (`--listen 0.0.0.0:…`): agents refuse plain HTTP to another machine.
    let agent_url = if hub.addr().ip().is_unspecified() {
        format!("http://{}", reachable(hub.addr()))
    } else {
        url.clone()
    };

    // One key per simulated node, kept with the database: the hub binds each name to its key, so a
    // restarted `agora dev` must present the same keys to get its nodes back.
    let keys_dir = data_dir.join("keys");
    if args.agents > 0 {
        std::fs::create_dir_all(&keys_dir)
            .with_context(|| format!("creating the key directory {}", keys_dir.display()))?;
    }

    let (stop_agents, agents_stopped) = tokio::sync::watch::channel(false);
    let mut agents = JoinSet::new();
    let mut fleet_lines = Vec::new();
    let mut scrape_targets = Vec::new();
    for i in 0..args.agents {
        let (region, gpus, price) = FLEET[i % FLEET.len()];
        let name = format!("gn-sim-{i}");
        let identity = gpu_runtime::identity::NodeIdentity::load_or_create(
            &keys_dir.join(format!("{name}.key")),
        )?;
        let (monitor, metrics_addr) = agent_monitor(gpus, &name, hub.addr().ip()).await?;
        scrape_targets.push(AgentTarget {
            node: name.clone(),
            region: region.to_string(),
            address: reachable(metrics_addr),
        });
        let config = gpu_runtime::agent::AgentConfig {
            hub_url: agent_url.clone(),
            name: name.clone(),
            region: region.to_string(),
            price_per_gpu_hour: price.parse::<Price>()?,
            gpus: monitor.devices(),
            capabilities: gpu_runtime::executor::simulated_capabilities(),
            executors: vec![gpu_runtime::executor::ExecutorKind::Builtin],
            kubernetes: None,
            // Kept with the database, like the keys: a restarted `agora dev` delivers what its
            // agents had not (each agent keeps its own subdirectory, by node name).
            state_dir: data_dir.join("agents"),
            simulated: true,
            operator_address: None,
            identity,
            // The dev hub speaks plain HTTP on whatever address it was given.
            trust: gpu_runtime::client::HubTrust {
                allow_plain_http: true,
                ..Default::default()
            },
            // Hub RTT and bandwidth as any agent; no responder, so peers do not probe them.
            probes: gpu_runtime::probes::ProbeConfig::default(),
            // Simulated readings, as `agora agent --simulate-gpus` has: heartbeats carry them and
            // the agent's `/metrics` serves them (a GPU a job holds runs hot and busy).
            telemetry: Some(monitor),
            receipt_interval: Duration::from_secs(60),
            // A simulated score (the model's published FP32 peak), at start and daily.
            benchmark_interval: gpu_runtime::benchmark::DEFAULT_INTERVAL,
            cheat: None,
        };
        fleet_lines.push(format!(
            "  {name:<10} {region:<13} {gpus:<13} {price}/GPU-hour (simulated GPUs)"
        ));
        let mut stop = agents_stopped.clone();
        agents.spawn(gpu_runtime::agent::run(config, async move {
            let _ = stop.wait_for(|s| *s).await;
        }));
    }

    let scrape_config = data_dir.join("prometheus.yml");
    std::fs::write(
        &scrape_config,
        prometheus_config(&scrape_config, reachable(hub.addr()), &scrape_targets),
    )
    .with_context(|| format!("writing {}", scrape_config.display()))?;

    println!("Agora dev hub on {url}  (SQLite: {})", database.display());
    println!("API key: {key}  (also in {})", key_file.display());
    if args.agents == 0 {
        println!(
            "No simulated agents: start some with `agora agent --hub {url} --region eu-west --simulate-gpus 8xH100-80GB`."
        );
    } else {
        println!(
            "{} simulated agent(s), running in this process:",
            args.agents
        );
        for line in &fleet_lines {
            println!("{line}");
        }
    }
    println!(
        "Prometheus scrape config for the hub and every agent: {}",
        scrape_config.display()
    );
    println!(
        "  prometheus --config.file={}   (dashboards: charts/agora/dashboards, docs/observability.md)",
        scrape_config.display()
    );
    match &chain_line {
        Some(label) => println!("Settling on {label}"),
        None => println!("Settlement: off (--chain none): receipts are kept, nothing is posted."),
    }
    println!();
    println!("Try it:");
    println!("  export AGORA_API_KEY=$(cat {})", key_file.display());
    println!("  agora job submit examples/quickstart.yaml --wait");
    println!("  agora job list && agora node list");
    println!("  curl -H \"Authorization: Bearer $AGORA_API_KEY\" {url}/v1/jobs");
    if chain_line.is_some() {
        println!("  curl -H \"Authorization: Bearer $AGORA_API_KEY\" {url}/v1/settlement/batches");
    }
    println!("Hub metrics: {url}/metrics   API description: {url}/openapi.json");
    println!(
        "Ctrl-C stops everything; state stays in {}.",
        data_dir.display()
    );

    hub.serve_until(async {
        tokio::select! {
            _ = shutdown_signal() => {}
            Some(result) = agents.join_next() => {
                // An agent ended on its own: report it, and stop (dev mode should not limp on).
                match result {
                    Ok(Ok(())) => tracing::warn!("a simulated agent stopped"),
                    Ok(Err(e)) => tracing::error!(error = %e, "a simulated agent failed"),
                    Err(e) => tracing::error!(error = %e, "a simulated agent panicked"),
                }
            }
        }
        let _ = stop_agents.send(true);
        while agents.join_next().await.is_some() {}
    })
    .await
}

/// How often the simulated GPUs' readings change: the dev hub's heartbeat interval, so each
/// heartbeat and each scrape sees a fresh sample.
const TELEMETRY_INTERVAL: Duration = Duration::from_secs(2);

/// Simulated GPUs `spec` for node `name`, sampled in the background, with their `/metrics` served
/// on a free port of `ip` (the hub's address, so a hub listening on every address exposes its
/// agents' metrics there too). The `Hostname` label is the node's name: every dev agent runs on
/// this one machine, and the DCGM dashboards tell GPUs apart by it.
async fn agent_monitor(
    spec: &str,
    name: &str,
    ip: std::net::IpAddr,
) -> anyhow::Result<(Arc<gpu_runtime::gpus::Monitor>, SocketAddr)> {
    let source = gpu_runtime::gpus::simulated::SimulatedGpus::new(spec, name)
        .with_context(|| format!("simulated GPUs {spec:?}"))?;
    let monitor = Arc::new(gpu_runtime::gpus::Monitor::new(
        Box::new(source),
        TELEMETRY_INTERVAL,
        name,
    ));
    tokio::spawn(Arc::clone(&monitor).run());
    let listener = tokio::net::TcpListener::bind(SocketAddr::new(ip, 0))
        .await
        .with_context(|| format!("the metrics port of simulated agent {name}"))?;
    let address = listener.local_addr()?;
    let served = Arc::clone(&monitor);
    let node = name.to_string();
    tokio::spawn(async move {
        if let Err(e) = gpu_runtime::gpus::metrics::serve(listener, served).await {
            tracing::error!(error = %e, node, "a simulated agent's metrics endpoint stopped");
        }
    });
    Ok((monitor, address))
}

/// An address Prometheus on this machine can scrape: loopback for one bound to every address.
fn reachable(address: SocketAddr) -> SocketAddr {
    if address.ip().is_unspecified() {
        let loopback: std::net::IpAddr = if address.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        };
        SocketAddr::new(loopback, address.port())
    } else {
        address
    }
}

/// One in-process agent's metrics endpoint, with the labels its scrape adds.
struct AgentTarget {
    node: String,
    region: String,
    address: SocketAddr,
}

/// `DATA_DIR/prometheus.yml`: the hub as job `agora-hub`, every agent as job `agora-agents` with
/// `node` and `region` labels (the agents' DCGM metrics carry neither, and the Node fleet
/// dashboard filters by region). The hub's target gets no extra labels: its metrics have their own
/// `region`, which a target label would rename to `exported_region`. Label values are quoted as
/// YAML double-quoted strings; region and node names are plain identifiers, but a quote in one
/// must not break the file.
fn prometheus_config(path: &Path, hub: SocketAddr, agents: &[AgentTarget]) -> String {
    let quoted = |text: &str| format!("{:?}", text);
    let mut yaml = format!(
        "# Written by `agora dev` at each start (the agents' metrics ports change between starts:\n\
         # restart Prometheus, or reload it with SIGHUP, after restarting `agora dev`).\n\
         #   prometheus --config.file={}\n\
         # Dashboards for it: charts/agora/dashboards (docs/observability.md).\n\
         global:\n  scrape_interval: 5s\n  evaluation_interval: 5s\n\
         scrape_configs:\n",
        path.display()
    );
    yaml.push_str(&format!(
        "  - job_name: agora-hub\n    static_configs:\n      - targets: [{}]\n",
        quoted(&hub.to_string())
    ));
    yaml.push_str("  - job_name: agora-agents\n    static_configs:\n");
    if agents.is_empty() {
        // No in-process agents (`--agents 0`): an empty list keeps the job, for agents added by hand.
        yaml.push_str("      []\n");
    }
    for agent in agents {
        yaml.push_str(&format!(
            "      - targets: [{}]\n        labels: {{node: {}, region: {}}}\n",
            quoted(&agent.address.to_string()),
            quoted(&agent.node),
            quoted(&agent.region),
        ));
    }
    yaml
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scrape_config_names_the_hub_and_each_agent_with_its_node_and_region() {
        let agents = [
            AgentTarget {
                node: "gn-sim-0".into(),
                region: "eu-west".into(),
                address: "127.0.0.1:41001".parse().unwrap(),
            },
            AgentTarget {
                node: "gn-sim-1".into(),
                region: "us-east".into(),
                address: "127.0.0.1:41002".parse().unwrap(),
            },
        ];
        let text = prometheus_config(
            Path::new("/data/prometheus.yml"),
            "127.0.0.1:7600".parse().unwrap(),
            &agents,
        );
        let config: serde_yaml::Value = serde_yaml::from_str(&text).expect("valid YAML");
        let jobs = config["scrape_configs"]
            .as_sequence()
            .expect("scrape_configs");
        assert_eq!(jobs.len(), 2, "{text}");
        assert!(
            text.contains("prometheus --config.file=/data/prometheus.yml"),
            "{text}"
        );
        assert_eq!(jobs[0]["job_name"], "agora-hub");
        assert_eq!(jobs[0]["static_configs"][0]["targets"][0], "127.0.0.1:7600");
        assert!(
            jobs[0]["static_configs"][0].get("labels").is_none(),
            "the hub's own region labels must not be renamed: {text}"
        );
        assert_eq!(jobs[1]["job_name"], "agora-agents");
        let targets = jobs[1]["static_configs"]
            .as_sequence()
            .expect("agent targets");
        for (target, agent) in targets.iter().zip(&agents) {
            assert_eq!(target["targets"][0], agent.address.to_string().as_str());
            assert_eq!(target["labels"]["node"], agent.node.as_str());
            assert_eq!(target["labels"]["region"], agent.region.as_str());
        }
        assert_eq!(targets.len(), 2);
    }

    #[test]
    fn without_agents_the_agents_job_stays_valid() {
        let text = prometheus_config(
            Path::new("/data/prometheus.yml"),
            "127.0.0.1:7600".parse().unwrap(),
            &[],
        );
        let config: serde_yaml::Value = serde_yaml::from_str(&text).expect("valid YAML");
        assert_eq!(config["scrape_configs"][1]["job_name"], "agora-agents");
        assert_eq!(
            config["scrape_configs"][1]["static_configs"]
                .as_sequence()
                .map(Vec::len),
            Some(0),
            "{text}"
        );
    }

    #[test]
    fn a_wildcard_address_is_scraped_on_loopback() {
        assert_eq!(
            reachable("0.0.0.0:7600".parse().unwrap()),
            "127.0.0.1:7600".parse().unwrap()
        );
        assert_eq!(
            reachable("[::]:7600".parse().unwrap()),
            "[::1]:7600".parse().unwrap()
        );
    }
}
