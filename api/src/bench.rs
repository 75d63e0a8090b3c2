//! `agora bench hub`: a real hub on loopback, driven over real HTTP by simulated agents and users,
//! to measure what one hub sustains: agent heartbeats per second, job submissions per second, and
//! how long a submitted job waits until the scheduling loop places it.
//!
//! Every request takes the path production traffic takes (listener, router, schema checks, store,
//! and the scheduling loop that each submission wakes), with one exception: rate limits are off,
//! because with them on the benchmark would measure the limiter's budgets rather than the hub.
//! The clients run in the same process as the hub, so on a small machine they compete with it for
//! the CPU: the figures are what one machine does running both, a lower bound for the hub alone.
//!
//! The phases, in this order:
//!
//! 1. **Registration**: `agents` simulated nodes (8 simulated H100s each, `builtin:sleep`), each
//!    proving its own secp256k1 key through `/v1/agent/challenge` and `/v1/agent/register`.
//!    Keys are derived from the node's index, so a run needs no randomness to set its fleet up.
//! 2. **Heartbeats** as fast as the hub answers them, `concurrency` in flight, for `seconds`.
//! 3. **Submit→Scheduled**: submissions paced at `rate` per second for `seconds`, then the time
//!    from each job's submission to its placement, read from the timestamps the hub stored
//!    (`submitted_at`, `scheduled_at`, Unix ms). The API shows those as Kubernetes times, which
//!    have whole seconds only, so they are read from the hub's store instead.
//! 4. **Submissions** as fast as the hub answers them, `concurrency` in flight, for `seconds`.
//!
//! Phase 3 comes before phase 4 so that the latency is measured on a fleet with free GPUs and an
//! empty queue: phase 4 submits more jobs than the fleet holds, and those that do not fit stay
//! pending (as they would in production on a full fleet, with the scheduling loop working on them
//! while submissions keep coming). Phase 3 is cut short when `rate × seconds` jobs would not fit
//! on the fleet's GPUs, so that every job it submits can be placed; the report says how many it
//! submitted.
//!
//! From the end of phase 2 on, every agent also heartbeats at the hub's heartbeat interval, as a
//! live fleet does: nodes stay Ready however long the run takes, and the hub serves that
//! background load while phases 3 and 4 are measured.

use std::{
    future::Future,
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, anyhow, bail};
use crds::{
    agent::{
        ChallengeRequest, ChallengeResponse, HeartbeatRequest, PROTOCOL_VERSION,
        PROTOCOL_VERSION_HEADER, RegisterRequest, RegisterResponse,
    },
    v1alpha1::{GpuDevice, JobPhase},
};
use futures::{StreamExt, TryStreamExt};
use k256::ecdsa::{Signature, SigningKey, signature::Signer};
use reqwest::{StatusCode, header};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::{
    sync::{Semaphore, watch},
    task::{JoinHandle, JoinSet},
};

use crate::{HubConfig, HubSettings, RunningHub, ratelimit::RateLimits, store::Store};

/// Simulated GPUs per agent: the 8-GPU H100 machine most GPU clouds rent.
pub const GPUS_PER_AGENT: usize = 8;

/// Regions the simulated fleet is spread over (jobs name none, so this only makes the fleet look
/// like a real one to the scheduler's per-region index).
const REGIONS: [&str; 3] = ["eu-west", "us-east", "ap-southeast"];

/// Asking price per GPU-hour of every simulated node: below the jobs' maximum, so every job fits
/// any free GPU.
const ASK: &str = "2.49";

/// What every benchmark job runs: a sleep far longer than the run, so no job ends and frees its
/// GPU while the figures are taken, one worker on one GPU.
const JOB_SPEC: &str = r#"{"kind":"Batch","workload":{"builtin":{"sleep":{"durationSeconds":3600}}},"resources":{"workers":1,"gpusPerWorker":1},"pricing":{"maxPricePerGpuHour":"5.00"}}"#;

/// Longest any one request may take; a hub that stops answering fails the run instead of hanging it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Most paced submissions in flight at once. When the hub falls this far behind the pacing waits
/// for answers (the achieved rate in the report then falls short of the asked one) rather than
/// opening connections without bound.
const MAX_PACED_IN_FLIGHT: usize = 1024;

/// Longest the benchmark waits, after the paced submissions, for the last of their jobs to be
/// placed, beyond the run's `seconds`.
const PLACEMENT_WAIT: Duration = Duration::from_secs(30);

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// A PostgreSQL URL: the benchmark creates a fresh database on that server (next to the one
    /// the URL names, which must exist) and drops it afterwards. `None`: SQLite in a temporary
    /// directory.
    pub postgres_url: Option<String>,
    /// Length of each measured phase.
    pub seconds: u64,
    /// Simulated agents (nodes), each with [`GPUS_PER_AGENT`] GPUs.
    pub agents: usize,
    /// Submissions per second in the submit→Scheduled phase.
    pub rate: u32,
    /// Requests in flight in the as-fast-as-possible phases.
    pub concurrency: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            postgres_url: None,
            seconds: 5,
            agents: 1_000,
            rate: 1_000,
            concurrency: 64,
        }
    }
}

/// The figures of one run. Rates are of successful requests only; failures are counted apart.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// `sqlite` or `postgres`.
    pub backend: &'static str,
    pub agents: usize,
    pub gpus: usize,
    /// Length of each measured phase.
    pub seconds: u64,
    /// Requests in flight in the as-fast-as-possible phases.
    pub concurrency: usize,
    /// Registrations (challenge + register, each with a signature to check) per second.
    pub registrations_per_s: f64,
    pub heartbeats: u64,
    pub heartbeats_per_s: f64,
    /// Jobs accepted (201) in the as-fast-as-possible submission phase.
    pub submissions: u64,
    pub submit_per_s: f64,
    /// Submissions per second asked for in the submit→Scheduled phase.
    pub rate: u32,
    /// Submissions per second the paced phase achieved (below `rate` when the hub fell behind).
    pub achieved_rate: f64,
    /// Jobs accepted in the paced phase: `rate × seconds`, or fewer when those would not fit on
    /// the fleet's GPUs.
    pub scheduled_jobs: u64,
    /// Submit→Scheduled, from the hub's stored times (millisecond resolution).
    pub scheduled_p50_ms: f64,
    pub scheduled_p99_ms: f64,
    pub scheduled_max_ms: f64,
    /// Paced jobs still not placed when the benchmark stopped waiting for them.
    pub unscheduled: u64,
    /// Round trip of a paced submission as the client saw it (request sent to 201 read).
    pub submit_response_p50_ms: f64,
    pub submit_response_p99_ms: f64,
    /// Every job the run submitted.
    pub jobs: u64,
    /// Requests that failed, in every phase and the background heartbeats.
    pub failed_requests: u64,
}

/// Runs the benchmark; `progress` hears what each phase is about to do.
pub async fn run(options: Options, progress: &(dyn Fn(&str) + Sync)) -> anyhow::Result<Report> {
    anyhow::ensure!(
        options.agents >= 1,
        "the benchmark needs at least one agent"
    );
    anyhow::ensure!(options.seconds >= 1, "each phase needs at least one second");
    anyhow::ensure!(
        options.rate >= 1,
        "the paced submission rate must be at least 1/s"
    );
    anyhow::ensure!(options.concurrency >= 1, "concurrency must be at least 1");
    let workdir = WorkDir::create()?;
    let (database_url, backend, created) = match &options.postgres_url {
        None => {
            let path = workdir.0.join("hub.db");
            (format!("sqlite://{}", path.display()), "sqlite", None)
        }
        Some(server) => {
            let (url, name) = create_database(server).await?;
            progress(&format!(
                "created database {name} on {}",
                crate::server::redact(server)
            ));
            (url, "postgres", Some(name))
        }
    };
    let result = run_hub(&options, database_url, backend, &workdir, progress).await;
    if let (Some(server), Some(name)) = (&options.postgres_url, created)
        && let Err(e) = drop_database(server, &name).await
    {
        tracing::warn!(database = %name, error = format!("{e:#}"), "could not drop the benchmark's database; drop it by hand");
    }
    drop(workdir);
    result
}

/// Starts the hub, measures, and shuts the hub down whatever the measurement's outcome.
async fn run_hub(
    options: &Options,
    database_url: String,
    backend: &'static str,
    workdir: &WorkDir,
    progress: &(dyn Fn(&str) + Sync),
) -> anyhow::Result<Report> {
    let settings = HubSettings {
        rate_limits: RateLimits::unlimited(),
        ..HubSettings::default()
    };
    let heartbeat_interval = settings.heartbeat_interval;
    let hub = RunningHub::start(HubConfig {
        listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        database_url,
        settings,
        api_key_file: Some(workdir.0.join("api-key")),
        tls: None,
        allow_plain_http: false,
        chain: None,
    })
    .await?;
    progress(&format!("hub on {} ({backend})", hub.url()));
    let measured = measure(&hub, options, backend, heartbeat_interval, progress).await;
    let stopped = hub.shutdown().await;
    let report = measured?;
    stopped.context("shutting the hub down")?;
    Ok(report)
}

async fn measure(
    hub: &RunningHub,
    options: &Options,
    backend: &'static str,
    heartbeat_interval: Duration,
    progress: &(dyn Fn(&str) + Sync),
) -> anyhow::Result<Report> {
    let api_key = hub
        .api_key()
        .context("the hub started without an API key")?
        .to_string();
    let client = Arc::new(Client::new(hub.url(), &api_key)?);
    let failures = Arc::new(Failures::default());
    let seconds = Duration::from_secs(options.seconds);
    let gpus = options.agents * GPUS_PER_AGENT;

    progress(&format!(
        "registering {} agents ({gpus} simulated GPUs)",
        options.agents
    ));
    let started = Instant::now();
    let agents: Vec<Agent> = futures::stream::iter(0..options.agents)
        .map(|i| register(&client, i))
        .buffer_unordered(options.concurrency)
        .try_collect()
        .await?;
    let registrations_per_s = per_second(agents.len() as u64, started.elapsed());
    let agents = Arc::new(agents);

    progress(&format!(
        "heartbeats for {}s, {} in flight",
        options.seconds, options.concurrency
    ));
    let heartbeats = {
        let (client, agents, failures) = (client.clone(), agents.clone(), failures.clone());
        closed_loop(options.concurrency, seconds, move |n| {
            let (client, agents, failures) = (client.clone(), agents.clone(), failures.clone());
            async move {
                let agent = agents.get(n as usize % agents.len().max(1));
                match agent {
                    Some(agent) => heartbeat(&client, agent).await,
                    None => Err("no agents".to_string()),
                }
                .map_err(|e| failures.record(e))
            }
        })
        .await
    };
    failures.bail_if_none(heartbeats.ok, "heartbeat")?;

    // The fleet stays alive in the background from here on, as a real one would.
    let (stop_keepalive, keepalive_stopped) = watch::channel(false);
    let keepalive = keep_alive(
        client.clone(),
        agents.clone(),
        heartbeat_interval,
        keepalive_stopped,
        failures.clone(),
    );

    let wanted = options.rate as u64 * options.seconds;
    let paced_jobs = wanted.min(gpus as u64);
    if paced_jobs < wanted {
        progress(&format!(
            "{} submissions/s for {}s would be {wanted} jobs, more than the fleet's {gpus} GPUs: \
             submitting {paced_jobs}",
            options.rate, options.seconds
        ));
    }
    progress(&format!(
        "{paced_jobs} submissions paced at {}/s, then waiting for their placements",
        options.rate
    ));
    let paced = paced_submissions(&client, options.rate, paced_jobs, &failures).await;
    failures.bail_if_none(paced.ids.len() as u64, "paced submission")?;
    let placement_wait = PLACEMENT_WAIT + seconds;
    let latencies = placement_latencies(hub.store(), &api_key, &paced.ids, placement_wait).await?;

    progress(&format!(
        "submissions for {}s, {} in flight",
        options.seconds, options.concurrency
    ));
    let submissions = {
        let (client, failures) = (client.clone(), failures.clone());
        closed_loop(options.concurrency, seconds, move |_| {
            let (client, failures) = (client.clone(), failures.clone());
            async move {
                submit(&client)
                    .await
                    .map(|_| ())
                    .map_err(|e| failures.record(e))
            }
        })
        .await
    };
    failures.bail_if_none(submissions.ok, "submission")?;

    let _ = stop_keepalive.send(true);
    let _ = keepalive.await;

    let mut scheduled = latencies.scheduled_ms;
    scheduled.sort_by(f64::total_cmp);
    let mut responses = paced.response_ms;
    responses.sort_by(f64::total_cmp);
    Ok(Report {
        backend,
        agents: agents.len(),
        gpus,
        seconds: options.seconds,
        concurrency: options.concurrency,
        registrations_per_s,
        heartbeats: heartbeats.ok,
        heartbeats_per_s: per_second(heartbeats.ok, heartbeats.elapsed),
        submissions: submissions.ok,
        submit_per_s: per_second(submissions.ok, submissions.elapsed),
        rate: options.rate,
        achieved_rate: per_second(paced.ids.len() as u64, paced.elapsed),
        scheduled_jobs: paced.ids.len() as u64,
        scheduled_p50_ms: percentile(&scheduled, 0.50),
        scheduled_p99_ms: percentile(&scheduled, 0.99),
        scheduled_max_ms: scheduled.last().copied().unwrap_or(0.0),
        unscheduled: latencies.unscheduled,
        submit_response_p50_ms: percentile(&responses, 0.50),
        submit_response_p99_ms: percentile(&responses, 0.99),
        jobs: paced.ids.len() as u64 + submissions.ok,
        failed_requests: failures.count.load(Ordering::Relaxed),
    })
}

/// A directory of the run's own (the SQLite database, the API key file), removed when dropped.
struct WorkDir(PathBuf);

impl WorkDir {
    fn create() -> anyhow::Result<Self> {
        let path = std::env::temp_dir().join(format!(
            "agora-bench-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir(&path)
            .with_context(|| format!("creating the directory {}", path.display()))?;
        Ok(Self(path))
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Creates an empty database on the server `server_url` points at and returns its URL and name.
/// The run gets a database of its own so it never reads or changes anyone's data, and starts
/// from an empty fleet and queue.
async fn create_database(server_url: &str) -> anyhow::Result<(String, String)> {
    anyhow::ensure!(
        server_url.starts_with("postgres://") || server_url.starts_with("postgresql://"),
        "--database-url must be a PostgreSQL URL (postgres://…); without it the benchmark uses a \
         temporary SQLite database"
    );
    let name = format!(
        "agora_bench_{}_{:08x}",
        std::process::id(),
        rand::random::<u32>()
    );
    let url = sibling_database_url(server_url, &name)?;
    sqlx::any::install_default_drivers();
    let mut admin = <sqlx::AnyConnection as sqlx::Connection>::connect(server_url)
        .await
        .with_context(|| format!("connecting to {}", crate::server::redact(server_url)))?;
    // `name` is ours: letters, digits and underscores only.
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .with_context(|| format!("creating the database {name}"))?;
    let _ = sqlx::Connection::close(admin).await;
    Ok((url, name))
}

/// Drops the database [`create_database`] made (and only that one).
async fn drop_database(server_url: &str, name: &str) -> anyhow::Result<()> {
    let mut admin = <sqlx::AnyConnection as sqlx::Connection>::connect(server_url).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name}"
    )))
    .execute(&mut admin)
    .await?;
    let _ = sqlx::Connection::close(admin).await;
    Ok(())
}

/// `url` with its database name replaced by `name`, keeping credentials, host and parameters.
fn sibling_database_url(url: &str, name: &str) -> anyhow::Result<String> {
    let (address, query) = match url.split_once('?') {
        Some((address, query)) => (address, Some(query)),
        None => (url, None),
    };
    let authority_start = address
        .find("://")
        .map(|i| i + 3)
        .ok_or_else(|| anyhow!("{} is not a URL", crate::server::redact(url)))?;
    let server = match address[authority_start..].find('/') {
        Some(slash) => &address[..authority_start + slash],
        None => address,
    };
    Ok(match query {
        Some(query) => format!("{server}/{name}?{query}"),
        None => format!("{server}/{name}"),
    })
}

/// The HTTP side: one connection pool for every simulated agent and user, as a load balancer in
/// front of the hub would see many clients.
struct Client {
    http: reqwest::Client,
    base: String,
    api_key: String,
}

impl Client {
    fn new(base: String, api_key: &str) -> anyhow::Result<Self> {
        // reqwest refuses to build a client without a rustls provider, even for plain HTTP; the
        // `agora` binary installs ring at start, and this covers any other embedder.
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("agora-bench/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("building the HTTP client")?;
        Ok(Self {
            http,
            base,
            api_key: format!("Bearer {api_key}"),
        })
    }

    /// POSTs a JSON body and returns the answer's body when its status is `expected`; any other
    /// answer is an error naming the route, the status and the hub's message.
    async fn post(
        &self,
        path: &str,
        authorization: Option<&str>,
        agent: bool,
        body: String,
        expected: StatusCode,
    ) -> Result<Vec<u8>, String> {
        let mut request = self
            .http
            .post(format!("{}{path}", self.base))
            .header(header::CONTENT_TYPE, "application/json")
            .body(body);
        if let Some(authorization) = authorization {
            request = request.header(header::AUTHORIZATION, authorization);
        }
        if agent {
            request = request.header(PROTOCOL_VERSION_HEADER, PROTOCOL_VERSION);
        }
        let response = request
            .send()
            .await
            .map_err(|e| format!("POST {path}: {e}"))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| format!("POST {path}: reading the answer: {e}"))?;
        if status != expected {
            let text = String::from_utf8_lossy(&bytes);
            let text: String = text.chars().take(300).collect();
            return Err(format!("POST {path} answered {status}: {text}"));
        }
        Ok(bytes.to_vec())
    }
}

/// A registered simulated agent: what its heartbeats carry.
struct Agent {
    authorization: String,
}

/// The key of simulated node `i`: the SHA-256 of its index as the secret, so keys are distinct,
/// need no randomness, and cost one hash each.
fn node_key(i: usize) -> anyhow::Result<SigningKey> {
    let secret = Sha256::digest(format!("agora-bench-node/{i}"));
    SigningKey::from_slice(&secret).map_err(|_| anyhow!("no secp256k1 key for simulated node {i}"))
}

/// Registers simulated node `i` as a real agent does: a challenge for its key, then the
/// registration signed over it.
async fn register(client: &Client, i: usize) -> anyhow::Result<Agent> {
    let key = node_key(i)?;
    let public_key = hex::encode(key.verifying_key().to_sec1_point(true).as_bytes());
    let body = serde_json::to_string(&ChallengeRequest {
        public_key: public_key.clone(),
    })?;
    let answer = client
        .post("/v1/agent/challenge", None, true, body, StatusCode::OK)
        .await
        .map_err(|e| anyhow!(e))?;
    let challenge: ChallengeResponse =
        serde_json::from_slice(&answer).context("reading the challenge")?;
    let name = format!("gn-bench-{i:05}");
    let message = crds::agent::register_message(&challenge.challenge, &name, None);
    let signature: Signature = key.sign(message.as_bytes());
    let gpus = (0..GPUS_PER_AGENT)
        .map(|g| GpuDevice {
            uuid: format!("GPU-SIM-{name}-{g}"),
            model: "H100-80GB".into(),
            memory_gib: 80,
            compute_capability: "9.0".into(),
            healthy: true,
            simulated: true,
        })
        .collect();
    let registration = RegisterRequest {
        region: REGIONS[i % REGIONS.len()].into(),
        operator_address: None,
        price_per_gpu_hour: ASK.parse()?,
        gpus,
        capabilities: vec!["builtin:sleep".into()],
        simulated: true,
        agent_version: Some(concat!("agora-bench/", env!("CARGO_PKG_VERSION")).into()),
        public_key,
        challenge: challenge.challenge,
        signature: hex::encode(signature.to_bytes()),
        name,
        probe_address: None,
    };
    let answer = client
        .post(
            "/v1/agent/register",
            None,
            true,
            serde_json::to_string(&registration)?,
            StatusCode::OK,
        )
        .await
        .map_err(|e| anyhow!(e))?;
    let registered: RegisterResponse =
        serde_json::from_slice(&answer).context("reading the registration's answer")?;
    Ok(Agent {
        authorization: format!("Bearer {}", registered.token),
    })
}

/// One heartbeat of an idle agent: no inventory change, no assignments held.
async fn heartbeat(client: &Client, agent: &Agent) -> Result<(), String> {
    let body = serde_json::to_string(&HeartbeatRequest::default()).map_err(|e| e.to_string())?;
    client
        .post(
            "/v1/agent/heartbeat",
            Some(&agent.authorization),
            true,
            body,
            StatusCode::OK,
        )
        .await
        .map(|_| ())
}

/// Submits one benchmark job and returns its id.
async fn submit(client: &Client) -> Result<String, String> {
    #[derive(Deserialize)]
    struct Created {
        id: String,
    }
    let answer = client
        .post(
            "/v1/jobs",
            Some(&client.api_key),
            false,
            JOB_SPEC.to_string(),
            StatusCode::CREATED,
        )
        .await?;
    serde_json::from_slice::<Created>(&answer)
        .map(|created| created.id)
        .map_err(|e| format!("reading a submission's answer: {e}"))
}

/// Failed requests: how many, and the first one's error to show when a phase gets nothing done.
#[derive(Default)]
struct Failures {
    count: AtomicU64,
    first: Mutex<Option<String>>,
}

impl Failures {
    fn record(&self, error: String) {
        if self.count.fetch_add(1, Ordering::Relaxed) == 0
            && let Ok(mut first) = self.first.lock()
        {
            *first = Some(error);
        }
    }

    /// A phase in which not one request succeeded measured nothing: an error, with the cause.
    fn bail_if_none(&self, ok: u64, what: &str) -> anyhow::Result<()> {
        if ok > 0 {
            return Ok(());
        }
        let first = self
            .first
            .lock()
            .ok()
            .and_then(|first| first.clone())
            .unwrap_or_else(|| "no request completed in time".into());
        bail!("no {what} succeeded: {first}")
    }
}

/// What a closed-loop phase did: successful requests, and the time from its start until the last
/// request in flight at the deadline was answered.
struct Loop {
    ok: u64,
    elapsed: Duration,
}

/// Runs `request(n)` for n = 0, 1, … from `concurrency` workers, each sending its next request as
/// soon as the previous one is answered, until `duration` has passed.
async fn closed_loop<F, Fut>(concurrency: usize, duration: Duration, request: F) -> Loop
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), ()>> + Send + 'static,
{
    let request = Arc::new(request);
    let next = Arc::new(AtomicU64::new(0));
    let ok = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let mut workers = JoinSet::new();
    for _ in 0..concurrency {
        let (request, next, ok) = (request.clone(), next.clone(), ok.clone());
        workers.spawn(async move {
            while Instant::now() < deadline {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if request(n).await.is_ok() {
                    ok.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    while workers.join_next().await.is_some() {}
    Loop {
        ok: ok.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
    }
}

/// What the paced phase did: the accepted jobs' ids, each submission's round trip, and how long
/// sending took.
struct Paced {
    ids: Vec<String>,
    response_ms: Vec<f64>,
    elapsed: Duration,
}

/// Submits `jobs` jobs at `rate` per second: the n-th leaves at n / rate seconds after the start,
/// whether or not earlier ones were answered (up to [`MAX_PACED_IN_FLIGHT`]), as independent
/// users' submissions arrive.
async fn paced_submissions(
    client: &Arc<Client>,
    rate: u32,
    jobs: u64,
    failures: &Arc<Failures>,
) -> Paced {
    let in_flight = Arc::new(Semaphore::new(MAX_PACED_IN_FLIGHT));
    let mut tasks = JoinSet::new();
    let mut ids = Vec::with_capacity(jobs as usize);
    let mut response_ms = Vec::with_capacity(jobs as usize);
    let mut collect = |joined: Result<Result<(String, f64), ()>, tokio::task::JoinError>| {
        if let Ok(Ok((id, ms))) = joined {
            ids.push(id);
            response_ms.push(ms);
        }
    };
    let started = tokio::time::Instant::now();
    for n in 0..jobs {
        tokio::time::sleep_until(started + Duration::from_secs_f64(n as f64 / f64::from(rate)))
            .await;
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            break;
        };
        let (client, failures) = (client.clone(), failures.clone());
        tasks.spawn(async move {
            let _permit = permit;
            let sent = Instant::now();
            let result = submit(&client).await;
            let round_trip = sent.elapsed().as_secs_f64() * 1e3;
            result
                .map(|id| (id, round_trip))
                .map_err(|e| failures.record(e))
        });
        // Collect answered submissions as we go, so finished tasks do not pile up.
        while let Some(joined) = tasks.try_join_next() {
            collect(joined);
        }
    }
    while let Some(joined) = tasks.join_next().await {
        collect(joined);
    }
    Paced {
        ids,
        response_ms,
        elapsed: started.elapsed(),
    }
}

/// Submit→Scheduled of each paced job, in ms, and how many were never placed.
struct Latencies {
    scheduled_ms: Vec<f64>,
    unscheduled: u64,
}

/// Waits until no job is pending (or `wait` has passed), then reads each of `ids`' stored
/// submission and placement times. Only the paced phase's jobs exist at this point, so "no job
/// pending" means all of them were placed.
async fn placement_latencies(
    store: &Store,
    api_key: &str,
    ids: &[String],
    wait: Duration,
) -> anyhow::Result<Latencies> {
    let deadline = Instant::now() + wait;
    loop {
        let pending: u64 = store
            .job_phase_counts()
            .await?
            .iter()
            .filter(|(phase, _)| *phase == JobPhase::Pending)
            .map(|(_, n)| n)
            .sum();
        if pending == 0 || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let tenant = store
        .tenant_for_key(api_key)
        .await?
        .context("the benchmark's API key has no tenant")?;
    let wanted: std::collections::HashSet<&str> = ids.iter().map(String::as_str).collect();
    let mut scheduled_ms = Vec::with_capacity(ids.len());
    let mut seen = 0u64;
    let mut after: Option<String> = None;
    loop {
        let (rows, next) = store
            .list_jobs(&tenant, None, after.as_deref(), 1000)
            .await?;
        for row in rows.iter().filter(|row| wanted.contains(row.id.as_str())) {
            seen += 1;
            if let Some(at) = row.scheduled_at {
                scheduled_ms.push(at.saturating_sub(row.submitted_at).max(0) as f64);
            }
        }
        match next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    anyhow::ensure!(
        seen == ids.len() as u64,
        "the hub accepted {} paced jobs but stores {seen} of them",
        ids.len()
    );
    Ok(Latencies {
        unscheduled: seen - scheduled_ms.len() as u64,
        scheduled_ms,
    })
}

/// Keeps every agent heartbeating once per `interval`, spread evenly over it, until `stop` says
/// so (or its sender is gone).
fn keep_alive(
    client: Arc<Client>,
    agents: Arc<Vec<Agent>>,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
    failures: Arc<Failures>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut in_flight = JoinSet::new();
        let count = agents.len().max(1) as u32;
        let started = tokio::time::Instant::now();
        for n in 0u64.. {
            let at =
                started + (interval / count).saturating_mul(u32::try_from(n).unwrap_or(u32::MAX));
            tokio::select! {
                () = tokio::time::sleep_until(at) => {}
                _ = stop.changed() => break,
            }
            let (client, agents, failures) = (client.clone(), agents.clone(), failures.clone());
            in_flight.spawn(async move {
                if let Some(agent) = agents.get(n as usize % agents.len().max(1))
                    && let Err(e) = heartbeat(&client, agent).await
                {
                    failures.record(e);
                }
            });
            while in_flight.try_join_next().is_some() {}
        }
        while in_flight.join_next().await.is_some() {}
    })
}

fn per_second(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
}

/// The `q` quantile of `sorted` by nearest rank (0 when empty).
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted.get(rank - 1).copied().unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_benchmark_database_sits_beside_the_given_one() {
        assert_eq!(
            sibling_database_url("postgres://u:p@127.0.0.1:5432/agora", "agora_bench_1").unwrap(),
            "postgres://u:p@127.0.0.1:5432/agora_bench_1"
        );
        assert_eq!(
            sibling_database_url("postgres://u:p@db/agora?sslmode=require", "b").unwrap(),
            "postgres://u:p@db/b?sslmode=require"
        );
        assert_eq!(
            sibling_database_url("postgres://db", "b").unwrap(),
            "postgres://db/b"
        );
    }

    #[test]
    fn percentiles_are_by_nearest_rank() {
        let sorted: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&sorted, 0.5), 50.0);
        assert_eq!(percentile(&sorted, 0.99), 99.0);
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }

    #[test]
    fn node_keys_are_distinct_and_stable() {
        let a = node_key(1).unwrap().verifying_key().to_sec1_point(true);
        let b = node_key(2).unwrap().verifying_key().to_sec1_point(true);
        assert_ne!(a, b);
        assert_eq!(a, node_key(1).unwrap().verifying_key().to_sec1_point(true));
    }
}
