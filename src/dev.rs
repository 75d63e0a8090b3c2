//! `agora dev`: a hub on loopback with SQLite in a data directory and simulated GPU agents running
//! in this process. The agents still talk to the hub over real HTTP, exactly as remote ones do.

use std::time::Duration;

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
        let loopback: std::net::IpAddr = if hub.addr().is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        };
        format!(
            "http://{}",
            std::net::SocketAddr::new(loopback, hub.addr().port())
        )
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
    for i in 0..args.agents {
        let (region, gpus, price) = FLEET[i % FLEET.len()];
        let name = format!("gn-sim-{i}");
        let identity = gpu_runtime::identity::NodeIdentity::load_or_create(
            &keys_dir.join(format!("{name}.key")),
        )?;
        let config = gpu_runtime::agent::AgentConfig {
            hub_url: agent_url.clone(),
            name: name.clone(),
            region: region.to_string(),
            price_per_gpu_hour: price.parse::<Price>()?,
            gpus: gpu_runtime::inventory::simulated(gpus, &name)?,
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
            // Simulated telemetry is for `agora agent --simulate-gpus`; dev agents only offer GPUs.
            telemetry: None,
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
    println!("Metrics for Prometheus: {url}/metrics   API description: {url}/openapi.json");
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
