//! The command line: which subcommands exist and which crate runs each.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::Context;
use api::client::{HubArgs, JobCommand, NodeCommand};
use clap::{Parser, Subcommand};
use crds::money::Price;

/// Agora: a control plane for decentralized GPU compute.
#[derive(Parser, Debug)]
#[command(name = "agora", version, about, propagate_version = true)]
pub struct Cli {
    /// Log filter (RUST_LOG syntax), e.g. `info,api=debug`.
    #[arg(long, global = true, env = "AGORA_LOG", default_value = "info")]
    pub log: String,
    /// Log as JSON lines instead of text.
    #[arg(long, global = true)]
    pub log_json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a hub with SQLite and simulated GPU agents on this machine, for trying Agora out.
    Dev(DevArgs),
    /// Run a hub for production (PostgreSQL or SQLite).
    Server(ServerArgs),
    /// Operator commands on the hub's database: tenants' API keys.
    #[command(subcommand)]
    Admin(api::admin::AdminCommand),
    /// Run a node agent that offers this machine's GPUs to a hub.
    Agent(AgentArgs),
    /// Submit, read, list and cancel jobs.
    Job {
        #[command(flatten)]
        hub: HubArgs,
        #[command(subcommand)]
        command: JobCommand,
    },
    /// List the hub's GPU nodes.
    Node {
        #[command(flatten)]
        hub: HubArgs,
        #[command(subcommand)]
        command: NodeCommand,
    },
    /// Print the ComputeJob and GpuNode CRDs (for `kubectl apply -f -`).
    Crds,
    /// Show this machine's GPUs as the agent finds them through NVML (or why NVML is unavailable),
    /// with one telemetry sample each.
    Gpus(GpusArgs),
    /// Print the hub's OpenAPI document.
    Openapi,
    /// Benchmarks: figures beside baselines measured in the same run.
    #[command(subcommand)]
    Bench(crate::bench::Bench),
    /// Replay a workload trace (or a generated one) against a simulated fleet through the hub's
    /// scheduler and market in virtual time, and report waits, utilization, prices and latency.
    Simulate(crate::simulate::SimulateArgs),
}

#[derive(clap::Args, Debug)]
pub struct DevArgs {
    /// Where the SQLite database and the API key live.
    #[arg(long, default_value = ".agora")]
    pub data_dir: PathBuf,
    /// Address of the hub (loopback by default: `agora dev` is not for exposing).
    #[arg(long, default_value = "127.0.0.1:7600")]
    pub listen: SocketAddr,
    /// Simulated GPU agents to start in-process (0: wait for external `agora agent`s).
    #[arg(long, default_value_t = 3)]
    pub agents: usize,
    #[command(flatten)]
    pub chain: crate::chain::ChainArgs,
}

#[derive(clap::Args, Debug)]
pub struct ServerArgs {
    /// Address to listen on.
    #[arg(long, env = "AGORA_LISTEN", default_value = "0.0.0.0:7600")]
    pub listen: SocketAddr,
    /// `postgres://USER:PASSWORD@HOST/DB` or `sqlite://PATH`.
    #[arg(long, env = "AGORA_DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
    /// File holding the API key of the `default` tenant; created with a new key if missing.
    #[arg(long, env = "AGORA_API_KEY_FILE")]
    pub api_key_file: Option<PathBuf>,
    /// Seconds without a heartbeat after which a node is NotReady.
    #[arg(long, env = "AGORA_NODE_TIMEOUT_SECONDS", default_value_t = 20)]
    pub node_timeout_seconds: u64,
    /// How often agents are told to send a heartbeat, in seconds; must be shorter than the node
    /// timeout (keep the timeout several intervals long).
    #[arg(
        long,
        env = "AGORA_HEARTBEAT_INTERVAL_SECONDS",
        default_value_t = 5,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub heartbeat_interval_seconds: u64,
    /// How long the leader lease lasts without renewal, in seconds: a crashed leader's loops are
    /// taken over by another replica after at most this long.
    #[arg(
        long,
        env = "AGORA_LEASE_TTL_SECONDS",
        default_value_t = 10,
        value_parser = clap::value_parser!(u64).range(2..)
    )]
    pub lease_ttl_seconds: u64,
    /// How often each replica tries to take or renew the leader lease, in seconds; must be
    /// shorter than the lease TTL (a leader that cannot renew steps down at TTL minus this).
    #[arg(
        long,
        env = "AGORA_LEASE_RENEW_SECONDS",
        default_value_t = 2,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub lease_renew_seconds: u64,
    /// Peers each heartbeat answer asks a node to probe (RTT) before its next heartbeat, at most
    /// 64; 0 turns probing off. The measurements feed the scheduler's network model.
    #[arg(
        long,
        env = "AGORA_PROBE_TARGETS",
        default_value_t = 4,
        value_parser = clap::value_parser!(u32).range(0..=64)
    )]
    pub probe_targets: u32,
    /// The network this hub settles on; agents sign their usage receipts for it.
    #[arg(long, env = "AGORA_NETWORK", default_value = crds::agent::DEFAULT_NETWORK)]
    pub network: String,
    /// This replica's name in the leader lease (the pod name, say); unique among running replicas.
    /// Default: host name, process id and a random suffix.
    #[arg(long, env = "AGORA_REPLICA_NAME")]
    pub replica_name: Option<String>,
    /// Serve HTTPS with this certificate chain (PEM, leaf first).
    #[arg(
        long,
        env = "AGORA_TLS_CERT",
        requires = "tls_key",
        value_name = "FILE"
    )]
    pub tls_cert: Option<PathBuf>,
    /// The private key of `--tls-cert` (PEM).
    #[arg(
        long,
        env = "AGORA_TLS_KEY",
        requires = "tls_cert",
        value_name = "FILE"
    )]
    pub tls_key: Option<PathBuf>,
    /// Serve plain HTTP on a non-loopback address: only behind an ingress or proxy that
    /// terminates TLS, since API keys and node tokens would otherwise cross the network in clear.
    #[arg(long, env = "AGORA_ALLOW_PLAIN_HTTP", conflicts_with = "tls_cert")]
    pub allow_plain_http: bool,
    /// Requests per second and burst per API key, `RPS/BURST` or `off` [default: 50/100].
    #[arg(long, env = "AGORA_API_KEY_LIMIT", value_name = "RPS/BURST")]
    pub api_key_limit: Option<api::ratelimit::RateSetting>,
    /// Requests per second and burst per node token (agents) [default: 200/400].
    #[arg(long, env = "AGORA_NODE_LIMIT", value_name = "RPS/BURST")]
    pub node_limit: Option<api::ratelimit::RateSetting>,
    /// Requests per second and burst per client address for requests without a credential
    /// (agent registration) and failed authentications [default: 5/20].
    #[arg(long, env = "AGORA_ANONYMOUS_LIMIT", value_name = "RPS/BURST")]
    pub anonymous_limit: Option<api::ratelimit::RateSetting>,
    /// Also run the Kubernetes operator (ComputeJob controller, GpuNode mirror) against the
    /// cluster the hub runs in (or `KUBECONFIG`'s); of several replicas, the holder of the
    /// operator's Lease runs it.
    #[arg(long, env = "AGORA_KUBERNETES")]
    pub kubernetes: bool,
    /// The namespace of the operator's Lease. Default: the pod's own namespace.
    #[arg(long, env = "AGORA_KUBERNETES_NAMESPACE", requires = "kubernetes")]
    pub kubernetes_namespace: Option<String>,
    /// The name of the operator's Lease (`coordination.k8s.io/v1`).
    #[arg(
        long,
        env = "AGORA_KUBERNETES_LEASE",
        default_value = "agora-operator",
        requires = "kubernetes"
    )]
    pub kubernetes_lease: String,
    #[command(flatten)]
    pub chain: crate::chain::ChainArgs,
}

#[derive(clap::Args, Debug)]
pub struct AgentArgs {
    /// The hub's base URL.
    #[arg(long, env = "AGORA_HUB")]
    pub hub: String,
    /// The node's region (e.g. `eu-west`).
    #[arg(long, env = "AGORA_REGION")]
    pub region: String,
    /// The node's name; defaults to `gn-` + the host name.
    #[arg(long, env = "AGORA_NODE_NAME")]
    pub name: Option<String>,
    /// Offer simulated GPUs (e.g. `8xH100-80GB`) with made-up telemetry, for development and tests.
    /// Without it the agent finds the machine's GPUs through NVML (the NVIDIA driver).
    #[arg(long, env = "AGORA_SIMULATE_GPUS", value_name = "SPEC")]
    pub simulate_gpus: Option<String>,
    /// Serve Prometheus metrics on `http://ADDR/metrics` (DCGM exporter names; docs/agent.md).
    #[arg(long, env = "AGORA_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
    /// How often to sample the GPUs' telemetry and apply the health rules, in seconds. Heartbeats
    /// carry the latest sample; 5 s matches the hub's default heartbeat interval.
    #[arg(
        long,
        env = "AGORA_TELEMETRY_INTERVAL_SECONDS",
        default_value_t = 5,
        value_parser = clap::value_parser!(u64).range(1..=3600)
    )]
    pub telemetry_interval_seconds: u64,
    /// Asking price per GPU-hour, in display units.
    #[arg(long, env = "AGORA_PRICE", default_value = "2.00")]
    pub price: Price,
    /// The operator's chain address (bech32, e.g. `cosmos1…`), where the node's earnings go.
    #[arg(long, env = "AGORA_OPERATOR_ADDRESS")]
    pub operator_address: Option<String>,
    /// The node's secp256k1 key file (the secret key as 64 hex digits), created with mode 0600 if
    /// missing. The hub binds the node's name to this key: keep the file, or the name is lost.
    #[arg(long, env = "AGORA_NODE_KEY", default_value = "./agora-node.key")]
    pub key: PathBuf,
    /// Trust only this CA (PEM) for the hub's certificate instead of the system's roots.
    #[arg(long, env = "AGORA_HUB_CA")]
    pub hub_ca: Option<PathBuf>,
    /// Allow a plain `http://` hub beyond loopback (behind a trusted network only).
    #[arg(long)]
    pub allow_plain_http: bool,
    /// Executors to run work with, repeatable (`--executor process --executor builtin`):
    /// `builtin` (the builtin workloads), `process` (the workload's command as a child process:
    /// for TRUSTED workloads only, it runs as the agent's user, unisolated) or `kubernetes` (the
    /// workload's image as an isolated Pod in the cluster the agent runs in). See docs/workers.md.
    #[arg(
        long = "executor",
        env = "AGORA_EXECUTORS",
        value_delimiter = ',',
        default_value = "builtin"
    )]
    pub executors: Vec<gpu_runtime::executor::ExecutorKind>,
    /// The kubernetes executor's RuntimeClass for job Pods (`gvisor`, `kata`): a sandbox for
    /// strangers' code. Default: the cluster's default runtime.
    #[arg(long, env = "AGORA_JOB_RUNTIME_CLASS", value_name = "NAME")]
    pub job_runtime_class: Option<String>,
    /// The kubernetes executor's CPU limit per worker Pod (a Kubernetes quantity: `8`, `7500m`).
    #[arg(long, env = "AGORA_JOB_CPU", default_value = "8",
          value_parser = gpu_runtime::executor::kubernetes::parse_quantity)]
    pub job_cpu: String,
    /// The kubernetes executor's memory limit per worker Pod (a Kubernetes quantity: `32Gi`).
    #[arg(long, env = "AGORA_JOB_MEMORY", default_value = "32Gi",
          value_parser = gpu_runtime::executor::kubernetes::parse_quantity)]
    pub job_memory: String,
    /// Where the agent keeps what must survive its restart (undelivered reports, started
    /// assignments, workers' directories); created with mode 0700.
    #[arg(long, env = "AGORA_STATE_DIR", default_value = "./agora-agent-state")]
    pub state_dir: PathBuf,
    /// Answer peers' RTT probes on this address (e.g. `0.0.0.0:7601`); see docs/agent.md.
    #[arg(long, env = "AGORA_PROBE_LISTEN", value_name = "ADDR")]
    pub probe_listen: Option<SocketAddr>,
    /// Where peers reach this node's probe responder (`HOST:PORT`, the forwarded public address
    /// behind NAT), sent at registration. Without it the node probes others but is not probed.
    #[arg(long, env = "AGORA_PROBE_ADDRESS", value_name = "HOST:PORT")]
    pub probe_address: Option<String>,
    /// How often to measure bandwidth against the hub, in seconds.
    #[arg(
        long,
        env = "AGORA_BANDWIDTH_INTERVAL_SECONDS",
        default_value_t = 600,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub bandwidth_interval_seconds: u64,
    /// How often a running worker's signed usage receipt is sent, in seconds; one more goes when
    /// it ends.
    #[arg(
        long,
        env = "AGORA_RECEIPT_INTERVAL_SECONDS",
        default_value_t = 60,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub receipt_interval_seconds: u64,
    /// How often the agent measures its GPUs' benchmark score (a short matmul through CUDA, only
    /// while no assignment is held) and reports it to the hub; 0 turns it off. Simulated GPUs
    /// report their model's published FP32 peak instead, marked as not measured.
    #[arg(
        long,
        env = "AGORA_BENCHMARK_INTERVAL_SECONDS",
        default_value_t = 86_400
    )]
    pub benchmark_interval_seconds: u64,
    /// Bytes each direction of a bandwidth probe moves (at most 16 MiB); 0 turns them off.
    #[arg(
        long,
        env = "AGORA_BANDWIDTH_PROBE_BYTES",
        default_value_t = 4 << 20,
        value_parser = clap::value_parser!(u64).range(0..=crds::agent::MAX_BANDWIDTH_PROBE_BYTES)
    )]
    pub bandwidth_probe_bytes: u64,
    /// Make this simulated node cheat on purpose, to test the hub's verification: `skip` (random
    /// results, no work), `partial:F` (each output chunk made up with probability F) or
    /// `lie-model:MODEL` (advertise the GPUs as MODEL). Only with --simulate-gpus; the node says
    /// it cheats in its logs, version and metrics (docs/agent.md).
    #[arg(long, env = "AGORA_CHEAT", value_name = "MODE")]
    pub cheat: Option<gpu_runtime::cheat::CheatMode>,
}

#[derive(clap::Args, Debug)]
pub struct GpusArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn init_tracing(cli: &Cli) {
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log).unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if cli.log_json {
        builder.json().init();
    } else {
        builder.init();
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Dev(args) => crate::dev::run(args).await,
        Command::Server(args) => server(args).await,
        Command::Admin(command) => api::admin::run(command, &mut std::io::stdout()).await,
        Command::Agent(args) => agent(args).await,
        Command::Job { hub, command } => api::client::run_job(&hub, command).await,
        Command::Node { hub, command } => api::client::run_node(&hub, command).await,
        Command::Crds => {
            print!("{}", crds::manifests::all_yaml()?);
            Ok(())
        }
        Command::Bench(bench) => crate::bench::run(bench).await,
        Command::Simulate(args) => crate::simulate::run(args),
        Command::Gpus(args) => crate::gpus::run(&args, &mut std::io::stdout()),
        Command::Openapi => {
            println!(
                "{}",
                serde_json::to_string_pretty(&api::openapi::document())?
            );
            Ok(())
        }
    }
}

async fn server(args: ServerArgs) -> anyhow::Result<()> {
    let defaults = api::ratelimit::RateLimits::default();
    let rate_limits = api::ratelimit::RateLimits {
        api_key: args.api_key_limit.map_or(defaults.api_key, |s| s.0),
        node: args.node_limit.map_or(defaults.node, |s| s.0),
        anonymous: args.anonymous_limit.map_or(defaults.anonymous, |s| s.0),
        ..defaults
    };
    // A node is declared lost after the node timeout without a heartbeat: with heartbeats no more
    // frequent than that, every node would lose its work between two heartbeats.
    anyhow::ensure!(
        args.node_timeout_seconds > args.heartbeat_interval_seconds,
        "--node-timeout-seconds {} must be longer than the heartbeat interval ({} s), or every node \
         is lost between two heartbeats; keep it several intervals long (--heartbeat-interval-seconds)",
        args.node_timeout_seconds,
        args.heartbeat_interval_seconds
    );
    anyhow::ensure!(
        args.lease_ttl_seconds > args.lease_renew_seconds,
        "--lease-ttl-seconds {} must be longer than --lease-renew-seconds {}: a leader renews \
         several times per lease, or one slow renewal costs it the lease",
        args.lease_ttl_seconds,
        args.lease_renew_seconds
    );
    // One name for this replica in the database lease and the operator's Lease.
    let replica = args
        .replica_name
        .clone()
        .unwrap_or_else(api::leader::holder_id);
    let settings = api::HubSettings {
        heartbeat_interval: Duration::from_secs(args.heartbeat_interval_seconds),
        node_timeout: Duration::from_secs(args.node_timeout_seconds),
        lease_ttl: Duration::from_secs(args.lease_ttl_seconds),
        lease_renew: Duration::from_secs(args.lease_renew_seconds),
        lease_holder: Some(replica.clone()),
        probe_targets: args.probe_targets,
        network: args.network.clone(),
        rate_limits,
        ..api::HubSettings::default()
    };
    let tls = match (args.tls_cert, args.tls_key) {
        (Some(cert), Some(key)) => Some(api::server::TlsFiles { cert, key }),
        // clap makes each of the two require the other.
        _ => None,
    };
    let cluster = if args.kubernetes {
        let settings = crate::kubernetes::Settings {
            namespace: args.kubernetes_namespace.clone(),
            lease: args.kubernetes_lease.clone(),
            identity: replica.clone(),
        };
        Some(crate::kubernetes::Cluster::connect(settings).await?)
    } else {
        None
    };
    let chain = args.chain.link(crate::chain::Defaults {
        mode: crate::chain::ChainMode::None,
        epoch: Duration::from_secs(3_600),
        devnet_state: None,
    })?;
    if let Some(link) = &chain {
        eprintln!("settling on {}", link.chain.label());
        if link.devnet.is_some() && args.chain.devnet_state.is_none() {
            eprintln!(
                "warning: the embedded devnet keeps its chain in memory: a restart starts a new one \
                 (--devnet-state FILE keeps it); run one replica only"
            );
        }
    }
    let hub = api::RunningHub::start(api::HubConfig {
        listen: args.listen,
        database_url: args.database_url,
        settings,
        api_key_file: args.api_key_file.clone(),
        tls,
        allow_plain_http: args.allow_plain_http,
        chain,
    })
    .await?;
    if let Some(file) = &args.api_key_file {
        eprintln!("API key of tenant `default` is in {}", file.display());
    }
    eprintln!("agora hub listening on {}", hub.url());
    let Some(cluster) = cluster else {
        return hub.serve_until(shutdown_signal()).await;
    };
    let (operator, stop_operator) = cluster.start(hub.state().clone());
    // The operator stops first (releasing its Lease), while the hub it calls still serves.
    hub.serve_until(async move {
        shutdown_signal().await;
        stop_operator.cancel();
        let _ = operator.await;
    })
    .await
}

async fn agent(args: AgentArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.cheat.is_none() || args.simulate_gpus.is_some(),
        "--cheat is accepted only with --simulate-gpus: it makes a deliberately dishonest \
         simulated node for testing verification, and a node on real GPUs never cheats"
    );
    let name = match args.name {
        Some(name) => name,
        None => default_node_name()?,
    };
    let monitor = crate::gpus::agent_monitor(
        args.simulate_gpus.as_deref(),
        &name,
        Duration::from_secs(args.telemetry_interval_seconds),
        args.metrics_listen,
    )
    .await?;
    let identity = gpu_runtime::identity::NodeIdentity::load_or_create(&args.key)
        .with_context(|| format!("--key {}", args.key.display()))?;
    let mut trust = match &args.hub_ca {
        Some(ca) => gpu_runtime::client::HubTrust::from_ca_file(ca)
            .with_context(|| format!("--hub-ca {}", ca.display()))?,
        None => gpu_runtime::client::HubTrust::default(),
    };
    trust.allow_plain_http = args.allow_plain_http;
    // The cluster client only where the owner enabled the kubernetes executor: elsewhere the agent
    // needs no cluster, and one outside a cluster stops here with a clear error.
    let kubernetes = if args
        .executors
        .contains(&gpu_runtime::executor::ExecutorKind::Kubernetes)
    {
        let options = gpu_runtime::executor::kubernetes::PodOptions {
            runtime_class: args.job_runtime_class.clone(),
            cpu: args.job_cpu.clone(),
            memory: args.job_memory.clone(),
            ..Default::default()
        };
        Some(gpu_runtime::executor::kubernetes::Executor::connect(options).await?)
    } else {
        None
    };
    let config = gpu_runtime::agent::AgentConfig {
        hub_url: args.hub,
        name,
        region: args.region,
        price_per_gpu_hour: args.price,
        gpus: monitor.devices(),
        capabilities: gpu_runtime::executor::capabilities(&args.executors),
        kubernetes,
        executors: args.executors,
        state_dir: args.state_dir,
        simulated: monitor.simulated(),
        operator_address: args.operator_address,
        identity,
        trust,
        probes: gpu_runtime::probes::ProbeConfig {
            listen: args.probe_listen,
            address: args.probe_address,
            bandwidth_interval: Duration::from_secs(args.bandwidth_interval_seconds),
            bandwidth_bytes: args.bandwidth_probe_bytes,
        },
        telemetry: Some(monitor),
        receipt_interval: Duration::from_secs(args.receipt_interval_seconds),
        benchmark_interval: Duration::from_secs(args.benchmark_interval_seconds),
        cheat: args.cheat,
    };
    gpu_runtime::agent::run(config, shutdown_signal()).await
}

/// `gn-` + the host name, lowercased and reduced to what a node name may contain.
fn default_node_name() -> anyhow::Result<String> {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .context("cannot tell the host name; pass --name")?;
    let cleaned: String = host
        .trim()
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    Ok(format!("gn-{}", cleaned.trim_matches('-'))
        .chars()
        .take(63)
        .collect())
}

/// Completes on Ctrl-C or SIGTERM (how Kubernetes and systemd stop a process).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}
