//! The node agent's main loop: register with the hub, then heartbeat, long-poll for assignments and
//! run them, until shut down.
//!
//! The agent only connects out to the hub and must outlive anything the network or the hub does: the
//! hub being down (registration retries with backoff), restarting with an empty database (a 401 makes
//! the agent register again), or answers getting lost (final reports are kept until acknowledged, and
//! heartbeats carry every held assignment's state). See [`run`].

mod checkpoints;
mod held;
mod metering;
mod openings;
mod session;
mod worker;

use std::{collections::HashMap, sync::Arc, time::Duration};

use crds::{
    agent::{HeartbeatRequest, RegisterRequest},
    money::Price,
    v1alpha1::GpuDevice,
};
use tokio::{task::JoinSet, time::Instant};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info, info_span, warn};

use self::{held::Held, session::Session};
use crate::{
    backoff::{Backoff, FailureStreak},
    client::{HubClient, HubTrust},
    identity::NodeIdentity,
    probes::{self, Network, ProbeConfig, Responder},
};

/// How long each long-poll asks the hub to wait for new work.
const LONG_POLL_WAIT_SECONDS: u32 = 20;

/// Pause after a long-poll answer with nothing new. The hub answers at once while the node has any
/// unfinished assignment, running ones included, so without it the agent would poll in a tight loop
/// while it works; this bounds how late it notices a new assignment meanwhile.
const POLL_PAUSE: Duration = Duration::from_secs(2);

/// How long shutdown waits for workers to report that they stopped.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// What the agent offers and where it reports.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// The hub's base URL (`http://127.0.0.1:8080`).
    pub hub_url: String,
    /// The node's name (`gn-…`), stable across restarts: the hub keeps one node per name.
    pub name: String,
    /// The node's region.
    pub region: String,
    /// Asking price per GPU-hour.
    pub price_per_gpu_hour: Price,
    /// The node's GPUs.
    pub gpus: Vec<GpuDevice>,
    /// Workload types the node runs (`builtin:sleep`, …).
    pub capabilities: Vec<String>,
    /// Whether the GPUs are simulated.
    pub simulated: bool,
    /// The operator's chain address.
    pub operator_address: Option<String>,
    /// The executors the owner enabled (`--executor`); `capabilities` should be what they offer
    /// ([`crate::executor::capabilities`]).
    pub executors: Vec<crate::executor::ExecutorKind>,
    /// The kubernetes executor's cluster client and Pod options, when `executors` has
    /// [`crate::executor::ExecutorKind::Kubernetes`].
    pub kubernetes: Option<crate::executor::kubernetes::Executor>,
    /// Where the agent keeps what must survive its restart (`--state-dir`): undelivered reports,
    /// started assignments, workers' directories.
    pub state_dir: std::path::PathBuf,
    /// The node's key: registration proves the agent holds it, and the hub binds the name to it.
    pub identity: NodeIdentity,
    /// How the hub's certificate is checked (and whether plain HTTP beyond loopback is allowed).
    pub trust: HubTrust,
    /// What the agent measures of its network, and where peers probe it.
    pub probes: ProbeConfig,
    /// The GPUs' telemetry and health, sampled in the background: heartbeats carry its latest
    /// readings and the inventory when a GPU's health changed. `None`: no telemetry.
    pub telemetry: Option<Arc<crate::gpus::Monitor>>,
    /// How often a running worker's usage receipt is sent (`--receipt-interval-seconds`); one
    /// more goes when it ends. Shorter loses less unpaid time should the node vanish, at a small
    /// request per worker per interval.
    pub receipt_interval: Duration,
    /// How often the GPUs' benchmark score is measured (`--benchmark-interval-seconds`); zero:
    /// never. See [`crate::benchmark`].
    pub benchmark_interval: Duration,
    /// A simulated node that cheats on purpose (`--cheat MODE`), to test verification; `None` for
    /// every honest node. See [`crate::cheat`].
    pub cheat: Option<crate::cheat::CheatMode>,
}

impl AgentConfig {
    fn register_request(&self) -> RegisterRequest {
        RegisterRequest {
            name: self.name.clone(),
            region: self.region.clone(),
            operator_address: self.operator_address.clone(),
            price_per_gpu_hour: self.price_per_gpu_hour,
            gpus: advertised(self.cheat, self.gpus.clone()),
            capabilities: self.capabilities.clone(),
            simulated: self.simulated,
            agent_version: Some(format!(
                "{}{}",
                env!("CARGO_PKG_VERSION"),
                self.cheat.map(|c| c.version_suffix()).unwrap_or_default()
            )),
            public_key: self.identity.public_key().to_string(),
            // Filled in for each registration with a fresh challenge.
            challenge: String::new(),
            signature: String::new(),
            probe_address: self.probes.address.clone(),
        }
    }
}

/// The inventory the hub is told: the GPUs as they are, unless a `lie-model` cheater relabels them.
fn advertised(cheat: Option<crate::cheat::CheatMode>, gpus: Vec<GpuDevice>) -> Vec<GpuDevice> {
    match cheat {
        Some(cheat) => cheat.advertise(gpus),
        None => gpus,
    }
}

/// What the agent's tasks share.
struct Shared {
    session: Session,
    held: Held,
    /// The executors and the on-disk state workers use.
    state: worker::State,
    /// Fires at shutdown; every worker's stop token is a child of it.
    stopping: CancellationToken,
    /// Network measurements waiting for the next heartbeat, and the peers to probe.
    network: Network,
    telemetry: Option<Arc<crate::gpus::Monitor>>,
    /// How often a running worker's usage receipt is sent.
    receipt_interval: Duration,
    /// The scheduled GPU benchmark and the score the next heartbeat carries.
    benchmark: crate::benchmark::Benchmark,
    /// How this (simulated) node cheats, if it does.
    cheat: Option<crate::cheat::CheatMode>,
    /// Commitments being opened on the hub's request.
    openings: openings::Openings,
}

/// Runs the node agent until `shutdown` completes, then stops every worker, tries once to report
/// each `Stopped`, and returns.
///
/// Registration is retried while the hub is unreachable. The error cases are the ones retrying cannot
/// fix: an invalid hub URL, or the hub refusing to register the node (e.g. an invalid name), at start
/// or when registering again after a 401.
pub async fn run(
    config: AgentConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let span = info_span!("agent", node = %config.name);
    run_node(config, shutdown).instrument(span).await
}

async fn run_node(
    config: AgentConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    // Until the agent's config carries `--hub-ca` / `--allow-plain-http`: the system's roots, and
    // plain HTTP on loopback only.
    let client = HubClient::new(&config.hub_url, &config.trust)?;
    let (state, undelivered) = worker::State::open(
        &config.state_dir,
        &config.name,
        &config.executors,
        config.kubernetes.clone(),
        config.gpus.clone(),
    )
    .map_err(|e| anyhow::anyhow!("--state-dir {}: {e:#}", config.state_dir.display()))?;
    config.probes.validate()?;
    if let Some(cheat) = config.cheat {
        cheat.warn_at_start();
        if let Some(monitor) = &config.telemetry {
            monitor.mark_cheater(&cheat.to_string());
        }
    }
    let responder = match config.probes.listen {
        Some(address) => Some(Responder::bind(address).await.map_err(|e| {
            anyhow::anyhow!("--probe-listen {address}: cannot answer probes there: {e}")
        })?),
        None => None,
    };
    let stopping = CancellationToken::new();
    let mut shutdown = std::pin::pin!(shutdown);

    let session = tokio::select! {
        session = Session::open(client, config.register_request(), config.identity.clone(), stopping.clone()) => session?,
        () = &mut shutdown => {
            info!("shut down before registering");
            return Ok(());
        }
    };
    let shared = Arc::new(Shared {
        session,
        held: Held::default(),
        state,
        stopping: stopping.clone(),
        network: Network::new(config.probes.clone()),
        telemetry: config.telemetry.clone(),
        receipt_interval: config.receipt_interval,
        benchmark: crate::benchmark::Benchmark::new(
            config.benchmark_interval,
            config.simulated,
            config.gpus.clone(),
        ),
        cheat: config.cheat,
        openings: openings::Openings::default(),
    });

    let mut workers = Workers::default();
    worker::redeliver(&shared, undelivered).await;
    let result = tokio::select! {
        () = &mut shutdown => {
            info!("shutting down");
            Ok(())
        }
        error = shared.session.refused() => Err(error),
        () = heartbeat_loop(&shared) => Ok(()),
        () = poll_loop(&shared, &mut workers) => Ok(()),
        () = network_loop(&shared, responder) => Ok(()),
        () = shared.benchmark.run(|| shared.held.is_busy()) => Ok(()),
    };

    // Cancels every worker; each tries once to report how it ended.
    stopping.cancel();
    if tokio::time::timeout(SHUTDOWN_GRACE, workers.drain())
        .await
        .is_err()
    {
        warn!("workers did not finish reporting in time; abandoning their reports");
    }
    result
}

/// Sends heartbeats at the interval the hub asks for, each carrying every held assignment's state,
/// and stops the workers the hub lists in `stop`. Never returns.
async fn heartbeat_loop(shared: &Arc<Shared>) {
    let client = shared.session.client();
    let mut interval = shared.session.auth().heartbeat_interval;
    let mut registration = shared.session.auth().generation;
    let mut streak = FailureStreak::default();
    loop {
        let started = Instant::now();
        let telemetry = shared.telemetry.as_deref();
        let assignments = shared.held.states();
        if let Some(monitor) = telemetry {
            monitor.track_assignments(&assignments);
        }
        // The inventory as it is; the hub is told it as advertised.
        let changed = telemetry.and_then(crate::gpus::Monitor::changed_devices);
        let request = HeartbeatRequest {
            gpus: changed.clone().map(|gpus| advertised(shared.cheat, gpus)),
            assignments,
            telemetry: telemetry
                .map(crate::gpus::Monitor::telemetry)
                .unwrap_or_default(),
            network: shared.network.report(),
            benchmark: shared.benchmark.to_send(),
        };
        let request = &request;
        let network = &shared.network;
        let result = shared
            .session
            .call(|token| async move {
                let sent = Instant::now();
                let answer = client.heartbeat(&token, request).await;
                if answer.is_ok() {
                    network.hub_round_trip(sent.elapsed());
                }
                answer
            })
            .await;
        match result {
            Ok(response) => {
                if let Some(failures) = streak.succeed() {
                    info!(failures, "heartbeats reach the hub again");
                }
                if let (Some(monitor), Some(gpus)) = (telemetry, &changed) {
                    monitor.devices_delivered(gpus);
                }
                if let Some(score) = &request.benchmark {
                    shared.benchmark.delivered(score);
                }
                // Registered again meanwhile (401): the hub has the registration's inventory,
                // and is sent the latest benchmark score again.
                if shared.session.auth().generation != registration {
                    registration = shared.session.auth().generation;
                    if let Some(monitor) = telemetry {
                        monitor.registered_again();
                    }
                    shared.benchmark.registered_again();
                }
                interval = session::heartbeat_interval(response.heartbeat_interval_seconds);
                for id in &response.stop {
                    if shared.held.stop(id) {
                        info!(assignment = %id, "stopping on the hub's request");
                    }
                }
                shared.network.set_targets(response.probe_targets);
                openings::dispatch(shared, response.openings);
            }
            Err(e) => {
                if let Some(monitor) = telemetry {
                    monitor.heartbeat_failed();
                }
                if streak.fail() {
                    warn!(error = %e, "heartbeat failed; will keep trying");
                }
            }
        }
        tokio::time::sleep_until(started + interval).await;
    }
}

/// Answers peers' probes (with `--probe-listen`), probes the peers heartbeat answers name and
/// measures bandwidth against the hub (see [`crate::probes`]). Never returns.
async fn network_loop(shared: &Shared, responder: Option<Responder>) {
    let client = shared.session.client();
    let bandwidth = shared.network.measure_bandwidth(|bytes| {
        shared
            .session
            .call(move |token| async move { probes::bandwidth(client, &token, bytes).await })
    });
    let respond = async {
        match responder {
            Some(responder) => responder.serve().await,
            None => std::future::pending().await,
        }
    };
    tokio::join!(respond, shared.network.probe_peers(), bandwidth);
}

/// Long-polls for assignments and starts a worker for each one not seen before. Never returns.
async fn poll_loop(shared: &Arc<Shared>, workers: &mut Workers) {
    let client = shared.session.client();
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
    let mut streak = FailureStreak::default();
    loop {
        workers.reap(&shared.held);
        let result = shared
            .session
            .call(|token| async move { client.assignments(&token, LONG_POLL_WAIT_SECONDS).await })
            .await;
        match result {
            Ok(list) => {
                if let Some(failures) = streak.succeed() {
                    info!(failures, "the hub answers the long-poll again");
                }
                backoff.reset();
                let answered = !list.items.is_empty();
                let mut started = 0;
                for assignment in list.items {
                    let stop = shared.stopping.child_token();
                    if shared.held.claim(&assignment.id, stop.clone()) {
                        if let Some(monitor) = &shared.telemetry {
                            monitor.hold(&assignment.id, &assignment.gpus);
                        }
                        workers.spawn(shared, assignment, stop);
                        started += 1;
                    }
                }
                if answered && started == 0 {
                    tokio::time::sleep(POLL_PAUSE).await;
                }
            }
            Err(e) => {
                if streak.fail() {
                    warn!(error = %e, "cannot fetch assignments; retrying with backoff");
                }
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}

/// The running worker tasks, by task id so that a worker that panicked can be let go of.
#[derive(Default)]
struct Workers {
    tasks: JoinSet<()>,
    assignments: HashMap<tokio::task::Id, String>,
}

impl Workers {
    fn spawn(
        &mut self,
        shared: &Arc<Shared>,
        assignment: crds::agent::Assignment,
        stop: CancellationToken,
    ) {
        let id = assignment.id.clone();
        let span = info_span!("assignment", id = %assignment.id, job = %assignment.job);
        let task = self
            .tasks
            .spawn(worker::run(Arc::clone(shared), assignment, stop).instrument(span));
        self.assignments.insert(task.id(), id);
    }

    /// Forgets finished workers; a panicked worker's assignment is released so heartbeats stop
    /// claiming it runs (it cannot be reported: its outcome is unknown).
    fn reap(&mut self, held: &Held) {
        while let Some(result) = self.tasks.try_join_next_with_id() {
            let task = match &result {
                Ok((task, ())) => *task,
                Err(e) => e.id(),
            };
            let assignment = self.assignments.remove(&task);
            if let (Err(e), Some(assignment)) = (result, assignment)
                && e.is_panic()
            {
                error!(%assignment, "worker panicked; releasing the assignment");
                held.release(&assignment);
            }
        }
    }

    /// Waits for every worker to end.
    async fn drain(&mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An agent's config for `hub_url`, keeping its state in `state` (a temporary directory the
    /// test holds, so nothing is left behind).
    fn config(hub_url: &str, state: &tempfile::TempDir) -> AgentConfig {
        AgentConfig {
            hub_url: hub_url.into(),
            name: "gn-test".into(),
            region: "eu-west".into(),
            price_per_gpu_hour: Price::from_micros(2_500_000),
            gpus: crate::inventory::simulated("2xL4-24GB", "gn-test").unwrap(),
            capabilities: crate::executor::simulated_capabilities(),
            executors: vec![crate::executor::ExecutorKind::Builtin],
            kubernetes: None,
            state_dir: state.path().to_path_buf(),
            simulated: true,
            operator_address: None,
            identity: NodeIdentity::generate(),
            trust: HubTrust::default(),
            probes: ProbeConfig::default(),
            telemetry: None,
            receipt_interval: Duration::from_secs(60),
            benchmark_interval: crate::benchmark::DEFAULT_INTERVAL,
            cheat: None,
        }
    }

    /// A cheater says so in its version, and a `lie-model` one registers its GPUs as the model
    /// it claims.
    #[test]
    fn a_cheater_is_marked_and_lies_only_where_its_mode_says() {
        let state = tempfile::tempdir().unwrap();
        let mut config = config("http://hub", &state);
        config.cheat = Some("partial:0.1".parse().unwrap());
        let request = config.register_request();
        assert_eq!(
            request.agent_version,
            Some(format!(
                "{} (simulated cheater: partial:0.1)",
                env!("CARGO_PKG_VERSION")
            ))
        );
        assert!(request.gpus.iter().all(|g| g.model == "L4-24GB"));
        config.cheat = Some("lie-model:H100-80GB".parse().unwrap());
        let request = config.register_request();
        assert!(request.gpus.iter().all(|g| g.model == "H100-80GB"));
        // What it runs with (and benchmarks) is still its real inventory.
        assert!(config.gpus.iter().all(|g| g.model == "L4-24GB"));
    }

    #[test]
    fn registers_what_the_config_says() {
        let state = tempfile::tempdir().unwrap();
        let request = config("http://hub", &state).register_request();
        assert_eq!(request.name, "gn-test");
        assert_eq!(request.region, "eu-west");
        assert_eq!(request.gpus.len(), 2);
        assert_eq!(
            request.capabilities,
            [
                "builtin:sleep",
                "builtin:matmulBenchmark",
                "builtin:verifiableMatmul"
            ]
        );
        assert!(request.simulated);
        assert_eq!(
            request.agent_version.as_deref(),
            Some(env!("CARGO_PKG_VERSION"))
        );
        let json = serde_json::to_value(&request).unwrap();
        assert_eq!(json["pricePerGpuHour"], "2.50");
        assert_eq!(json["publicKey"].as_str().map(str::len), Some(66));
    }

    #[tokio::test]
    async fn an_invalid_hub_url_is_an_error() {
        let state = tempfile::tempdir().unwrap();
        let err = run(config("hub:8080", &state), std::future::pending())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("invalid hub URL"), "{err}");
    }

    #[tokio::test]
    async fn shutdown_ends_registration_retries() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        // Nothing listens on the discard port, so registration keeps retrying until shut down.
        let shutdown = tokio::time::sleep(Duration::from_millis(300));
        let state = tempfile::tempdir().unwrap();
        let result = tokio::time::timeout(
            Duration::from_secs(10),
            run(config("http://127.0.0.1:9", &state), shutdown),
        )
        .await;
        assert!(matches!(result, Ok(Ok(()))), "{result:?}");
    }
}
