//! `/v1/agent/...`: the agent protocol. Agents connect out to the hub (they may sit behind NAT);
//! the hub never connects to them. Every call but `challenge` and `register` carries the node's
//! token, and a token acts only for the node it was issued to.
//!
//! Registration proves possession of the node's secp256k1 key: the agent signs a fresh challenge
//! the hub issued for its public key, and the hub binds the node name to the key that first
//! registered it, so nobody can take over another operator's node by registering its name.

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use axum::{
    Router,
    extract::{Query, State},
    http::StatusCode,
    routing::{get, post},
};
use crds::agent::{
    Assignment, AssignmentList, ChallengeRequest, ChallengeResponse, HeartbeatRequest,
    HeartbeatResponse, PROTOCOL_VERSION, PROTOCOL_VERSION_HEADER, Peer, RegisterRequest,
    RegisterResponse, StatusReport,
};
use crds::{
    agent::{ATTEMPT_ENV, CHECKPOINT_URI_ENV, CheckpointReport, STALE_REPORT},
    v1alpha1::EnvVar,
};
use k256::ecdsa::{Signature, VerifyingKey, signature::Verifier};
use rand::RngCore;

use crate::{
    error::{ApiError, ApiResult},
    extract::{AgentNode, Json, Path},
    ids,
    lifecycle::AssignmentPhase,
    network,
    state::AppState,
    store::{AssignmentOutcome, CheckpointOutcome, Registration, hash_secret, now_ms},
};

mod bandwidth;
mod openings;
mod receipts;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/agent/challenge", post(challenge))
        .route("/v1/agent/register", post(register))
        .route("/v1/agent/heartbeat", post(heartbeat))
        .route("/v1/agent/assignments", get(assignments))
        .route("/v1/agent/assignments/{id}/status", post(status))
        .route("/v1/agent/assignments/{id}/checkpoint", post(checkpoint))
        .route("/v1/agent/bandwidth", bandwidth::routes())
        .route(
            "/v1/agent/assignments/{id}/receipts",
            post(receipts::receipt),
        )
        .route("/v1/agent/assignments/{id}/opening", openings::routes())
        .route_layer(axum::middleware::from_fn(check_protocol_version))
}

/// Rejects agents that announce a protocol version this hub does not speak.
async fn check_protocol_version(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match req.headers().get(PROTOCOL_VERSION_HEADER).map(|v| v.to_str().unwrap_or_default()) {
        Some(version) if version != PROTOCOL_VERSION => ApiError::BadRequest {
            code: "unsupported_protocol_version",
            message: format!("this hub speaks agent protocol {PROTOCOL_VERSION}, the agent sent {version:?}; upgrade the agent"),
            field: Some(PROTOCOL_VERSION_HEADER.into()),
        }
        .into_response(),
        _ => next.run(req).await,
    }
}

/// Most GPUs one node may declare.
const MAX_GPUS: usize = 64;

/// How long a registration challenge is accepted: ample for an agent to sign and send it, short
/// enough that an unused one soon stops mattering.
const CHALLENGE_TTL_MS: i64 = 60_000;

/// Issues a single-use challenge for a public key; the agent signs it into its registration.
async fn challenge(
    State(state): State<AppState>,
    Json(req): Json<ChallengeRequest>,
) -> ApiResult<axum::Json<ChallengeResponse>> {
    public_key(&req.public_key)?;
    let mut nonce = [0u8; 32];
    rand::rng().fill_bytes(&mut nonce);
    let challenge = hex::encode(nonce);
    let expires_at = now_ms() + CHALLENGE_TTL_MS;
    state
        .store
        .issue_challenge(&challenge, &req.public_key, expires_at)
        .await?;
    Ok(axum::Json(ChallengeResponse {
        challenge,
        expires_at: crate::views::time(expires_at),
    }))
}

async fn register(
    State(state): State<AppState>,
    Json(req): Json<RegisterRequest>,
) -> ApiResult<axum::Json<RegisterResponse>> {
    let key = validate_registration(&req)?;
    verify_proof(&key, &req)?;
    let token = ids::secret("agt_");
    let node = match state
        .store
        .register_node(&req, &hash_secret(&token))
        .await?
    {
        Registration::Registered(node) => node,
        Registration::ChallengeRefused(why) => {
            return Err(ApiError::Unproven {
                code: "invalid_challenge",
                message: format!("the challenge is {why}"),
                field: "challenge",
            });
        }
        Registration::KeyMismatch => {
            tracing::warn!(node = %req.name, public_key = %req.public_key, "refused a registration of a node name bound to another key");
            return Err(ApiError::conflict(
                "node_key_mismatch",
                format!(
                    "node {} is registered with another public key; a node name stays bound to the key that first registered it",
                    req.name
                ),
            ));
        }
    };
    // The node's previous token is superseded: this replica stops honouring it at once (others
    // within `heartbeats::TOKEN_TTL`).
    state.sessions.forget_node(&node.name);
    // After the registration, so that a refused one changes no node's address. Should this write
    // fail, the agent gets a 500 and registers again.
    state
        .store
        .set_probe_address(&node.name, req.probe_address.as_deref())
        .await?;
    tracing::info!(node = %node.name, region = %node.region, gpus = node.gpus.len(), simulated = node.simulated, public_key = %req.public_key, "node registered");
    state.fleet_changed();
    Ok(axum::Json(RegisterResponse {
        node: node.name,
        token,
        heartbeat_interval_seconds: state.settings.heartbeat_interval.as_secs().max(1) as u32,
        network: state.settings.network.clone(),
    }))
}

/// What the registration's schema cannot say (the extractor already checked the schema: name,
/// region, lengths, GPU fields, counts, the shapes of the key, challenge, signature and operator
/// address). Returns the node's public key.
fn validate_registration(req: &RegisterRequest) -> ApiResult<VerifyingKey> {
    validate_gpus(&req.gpus, "gpus")?;
    for (i, capability) in req.capabilities.iter().enumerate() {
        printable(capability, &format!("capabilities[{i}]"))?;
    }
    if let Some(version) = &req.agent_version {
        printable(version, "agentVersion")?;
    }
    printable(&req.region, "region")?;
    if let Some(address) = &req.probe_address {
        network::validate_probe_address(address)?;
    }
    public_key(&req.public_key)
}

/// A public key as the agent protocol spells it: a compressed SEC1 secp256k1 point in lowercase
/// hex (the schema checked the spelling; this checks that the point is on the curve).
fn public_key(hex_key: &str) -> ApiResult<VerifyingKey> {
    let invalid = || {
        ApiError::invalid(
            "publicKey",
            "must be a compressed secp256k1 public key: 33 bytes as lowercase hex",
        )
    };
    let bytes = hex::decode(hex_key).map_err(|_| invalid())?;
    if bytes.len() != 33 {
        return Err(invalid());
    }
    VerifyingKey::from_sec1_bytes(&bytes).map_err(|_| invalid())
}

/// Checks the registration's signature: ECDSA over SHA-256 of
/// [`crds::agent::register_message`], `r ‖ s` with low `s`, by `publicKey` (see
/// docs/agent-protocol.md). k256 refuses high-`s` signatures, so each proof has one encoding.
fn verify_proof(key: &VerifyingKey, req: &RegisterRequest) -> ApiResult<()> {
    let refused = || ApiError::Unproven {
        code: "invalid_signature",
        message: "the signature is not publicKey's signature of this registration".into(),
        field: "signature",
    };
    let bytes = hex::decode(&req.signature).map_err(|_| refused())?;
    let signature = Signature::from_slice(&bytes).map_err(|_| refused())?;
    let message =
        crds::agent::register_message(&req.challenge, &req.name, req.operator_address.as_deref());
    key.verify(message.as_bytes(), &signature)
        .map_err(|_| refused())
}

/// GPU inventories: a count the schema of a heartbeat does not bound, and UUIDs that must be
/// unique within the node (each GPU is allocated by UUID).
fn validate_gpus(gpus: &[crds::v1alpha1::GpuDevice], field: &str) -> ApiResult<()> {
    if gpus.is_empty() || gpus.len() > MAX_GPUS {
        return Err(ApiError::invalid(
            field,
            format!("must list 1 to {MAX_GPUS} GPUs"),
        ));
    }
    for (i, gpu) in gpus.iter().enumerate() {
        printable(&gpu.uuid, &format!("{field}[{i}].uuid"))?;
        printable(&gpu.model, &format!("{field}[{i}].model"))?;
    }
    let mut seen = HashSet::new();
    if let Some(i) = gpus.iter().position(|gpu| !seen.insert(gpu.uuid.as_str())) {
        return Err(ApiError::invalid(
            format!("{field}[{i}].uuid"),
            "must be unique within the node",
        ));
    }
    Ok(())
}

/// Refuses control characters (NUL, newlines, escapes) in a name an agent declares: they end up
/// in node views, logs, metrics labels and, for NUL, cannot be stored by PostgreSQL at all.
fn printable(text: &str, field: &str) -> ApiResult<()> {
    if text.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// A compute capability `"8.6"` as (8, 6).
pub fn parse_capability(text: &str) -> Option<(u32, u32)> {
    let (major, minor) = text.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

async fn heartbeat(
    State(state): State<AppState>,
    AgentNode(node): AgentNode,
    Json(req): Json<HeartbeatRequest>,
) -> ApiResult<axum::Json<HeartbeatResponse>> {
    if let Some(gpus) = &req.gpus {
        validate_gpus(gpus, "gpus")?;
    }
    network::validate(&req)?;
    // Rare (after each measurement), so written directly rather than buffered for the flush.
    if let Some(benchmark) = &req.benchmark {
        state.store.record_benchmark(&node, benchmark).await?;
    }
    let written = state
        .sessions
        .heartbeat(&state.store, &node, req.gpus.as_deref())
        .await?;
    let held: Vec<String> = req.assignments.iter().map(|a| a.id.clone()).collect();
    let grace_ms = 2 * state.settings.heartbeat_interval.as_millis() as i64;
    let (stop, settled) = state
        .sessions
        .reconcile(&state.store, &node, &held, grace_ms)
        .await?;
    // A new inventory, a node back from silence, freed GPUs, or a job sent back to Pending for
    // another attempt.
    if written || settled > 0 {
        state.fleet_changed();
    }
    // Measurements and telemetry wait in memory for the flush; targets come from memory too.
    let probe_targets = state.sessions.network.heartbeat(&node, &req, now_ms());
    let openings = state
        .store
        .opening_requests(&node, crds::agent::MAX_OPENINGS_PER_HEARTBEAT)
        .await?;
    Ok(axum::Json(HeartbeatResponse {
        stop,
        heartbeat_interval_seconds: state.settings.heartbeat_interval.as_secs().max(1) as u32,
        probe_targets,
        openings,
    }))
}

/// Long-poll: answers at once when the node has work it has not acknowledged, else when such work
/// arrives or the wait ends. The answer lists every live assignment of the node; agents dedupe by id.
async fn assignments(
    State(state): State<AppState>,
    AgentNode(node): AgentNode,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<axum::Json<AssignmentList>> {
    let wait = match query.get("waitSeconds") {
        None => Duration::ZERO,
        Some(w) => Duration::from_secs(w.parse::<u64>().map_err(|_| ApiError::BadRequest {
            code: "invalid_query",
            message: "waitSeconds must be a whole number of seconds".into(),
            field: Some("waitSeconds".into()),
        })?),
    }
    .min(state.settings.max_poll_wait);
    let deadline = tokio::time::Instant::now() + wait;
    let mut changes = state.sessions.watch_work(&node);
    let mut shutdown = state.shutdown.clone();
    loop {
        changes.mark_unchanged();
        let rows = state.store.active_assignments(&node).await?;
        // Answer at once only for work the agent has not acknowledged yet; otherwise a busy node
        // would turn the long-poll into a busy loop.
        let unacknowledged = rows.iter().any(|a| a.state == AssignmentPhase::Assigned);
        if unacknowledged || tokio::time::Instant::now() >= deadline || *shutdown.borrow() {
            return Ok(axum::Json(AssignmentList {
                items: to_wire(&state, rows).await?,
            }));
        }
        tokio::select! {
            _ = changes.changed() => {}
            _ = shutdown.changed() => {}
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
}

async fn to_wire(
    state: &AppState,
    rows: Vec<crate::store::AssignmentRow>,
) -> ApiResult<Vec<Assignment>> {
    let mut jobs: HashMap<String, crate::store::JobRow> = HashMap::new();
    let mut peers: HashMap<(String, u32), Vec<Peer>> = HashMap::new();
    let mut items = Vec::with_capacity(rows.len());
    for row in rows {
        let attempt_key = (row.job_id.clone(), row.attempt);
        if !peers.contains_key(&attempt_key) {
            let workers = attempt_peers(state, &row.job_id, row.attempt).await?;
            peers.insert(attempt_key.clone(), workers);
        }
        if !jobs.contains_key(&row.job_id) {
            let job = state
                .store
                .get_job(None, &row.job_id)
                .await?
                .ok_or_else(|| {
                    ApiError::Internal(format!(
                        "assignment {} of missing job {}",
                        row.id, row.job_id
                    ))
                })?;
            jobs.insert(row.job_id.clone(), job);
        }
        let job = &jobs[&row.job_id];
        items.push(Assignment {
            id: row.id,
            job: row.job_id,
            attempt: row.attempt,
            rank: row.rank,
            workers: job.spec.resources.workers,
            gpus: row.gpus,
            workload: job.spec.workload.clone(),
            max_runtime_seconds: job.spec.max_runtime.map(|d| Duration::from(d).as_secs()),
            env: attempt_env(row.attempt, row.resume_checkpoint),
            peers: peers[&attempt_key].clone(),
            price_per_gpu_hour: Some(crds::money::Price::from_micros(row.price_micros)),
        });
    }
    Ok(items)
}

/// Every worker of a job attempt, by rank, with the host of its node's probe address where the
/// node advertised one (the only address of a node the hub knows; agents connect out, so a node
/// without one is reachable only in ways the hub cannot tell).
async fn attempt_peers(state: &AppState, job: &str, attempt: u32) -> ApiResult<Vec<Peer>> {
    let workers = state.store.job_assignments(job, attempt).await?;
    let nodes: Vec<String> = workers.iter().map(|w| w.node_name.clone()).collect();
    let addresses = state.store.probe_addresses(&nodes).await?;
    Ok(workers
        .into_iter()
        .map(|w| Peer {
            rank: w.rank,
            address: addresses.get(&w.node_name).map(|a| probe_host(a)),
            node: w.node_name,
        })
        .collect())
}

/// The host of a `host:port` probe address, an IPv6 address without its brackets.
fn probe_host(address: &str) -> String {
    let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_string()
}

/// What the hub tells a worker about its attempt: which one it is, and the checkpoint to resume
/// from when the job saved one before this attempt was placed.
fn attempt_env(attempt: u32, resume_checkpoint: Option<String>) -> Vec<EnvVar> {
    let mut env = vec![EnvVar {
        name: ATTEMPT_ENV.into(),
        value: attempt.to_string(),
    }];
    if let Some(uri) = resume_checkpoint {
        env.push(EnvVar {
            name: CHECKPOINT_URI_ENV.into(),
            value: uri,
        });
    }
    env
}

/// A worker saved a checkpoint: it becomes the job's latest unless the job has a later one, and a
/// re-placed attempt resumes from it. Only a live assignment's worker speaks for the job: a
/// report on one that ended (or was lost) is refused, like a late status report, and so is a
/// report whose `seq` the hub has already passed.
async fn checkpoint(
    State(state): State<AppState>,
    AgentNode(node): AgentNode,
    Path(id): Path<String>,
    Json(report): Json<CheckpointReport>,
) -> ApiResult<StatusCode> {
    if report.step > i64::MAX as u64 {
        return Err(ApiError::invalid(
            "step",
            format!("must be at most {}", i64::MAX),
        ));
    }
    if report.uri.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "uri",
            "must not contain control characters",
        ));
    }
    match state.store.record_checkpoint(&node, &id, &report).await? {
        CheckpointOutcome::Recorded => {
            tracing::debug!(assignment = %id, step = report.step, "checkpoint recorded");
            Ok(StatusCode::NO_CONTENT)
        }
        CheckpointOutcome::Older => Ok(StatusCode::NO_CONTENT),
        CheckpointOutcome::Stale { last } => Err(stale(&id, report.seq, last)),
        CheckpointOutcome::Conflict { current } => Err(ApiError::conflict(
            "assignment_final",
            format!(
                "assignment {id} is {}; its checkpoints no longer count",
                current.as_str()
            ),
        )),
        CheckpointOutcome::NotFound => Err(ApiError::NotFound(format!(
            "assignment {id} on node {node}"
        ))),
    }
}

/// A worker's state changed: the assignment follows it, and the job moves on when the report
/// completes a step. A report whose `seq` the hub has already passed is refused and changes
/// nothing, so a replayed or delayed report cannot undo a newer one.
async fn status(
    State(state): State<AppState>,
    AgentNode(node): AgentNode,
    Path(id): Path<String>,
    Json(report): Json<StatusReport>,
) -> ApiResult<StatusCode> {
    if report.message.as_ref().is_some_and(|m| m.len() > 4096) {
        return Err(ApiError::invalid("message", "must be at most 4096 bytes"));
    }
    if let Some(result) = &report.result
        && let Some(signature) = &result.signature
    {
        check_result_signature(&state, &node, &id, result, signature).await?;
    }
    match state.store.report_status(&node, &id, &report).await? {
        AssignmentOutcome::Applied => {
            if report.state.is_final() {
                state.fleet_changed();
            }
            Ok(StatusCode::NO_CONTENT)
        }
        AssignmentOutcome::Unchanged => Ok(StatusCode::NO_CONTENT),
        AssignmentOutcome::Stale { last } => Err(stale(&id, report.seq, last)),
        AssignmentOutcome::Conflict { current } => Err(ApiError::conflict(
            "assignment_final",
            format!(
                "assignment {id} is {}; it cannot become {:?}",
                current.as_str(),
                report.state
            ),
        )),
        AssignmentOutcome::NotFound => Err(ApiError::NotFound(format!(
            "assignment {id} on node {node}"
        ))),
    }
}

/// Checks a result's signature: the node's key over [`crds::agent::result_message`] of the hub's
/// network, the assignment and the output digest (which binds the chunk commitments). A signed
/// result is the worker's own word, kept as evidence should verification find it wrong.
async fn check_result_signature(
    state: &AppState,
    node: &str,
    assignment: &str,
    result: &crds::agent::WorkloadResult,
    signature: &str,
) -> ApiResult<()> {
    let refused = |why: &str| ApiError::invalid("result.signature", why.to_string());
    let digest: [u8; 32] = result
        .output_digest
        .as_deref()
        .and_then(|d| hex::decode(d).ok())
        .and_then(|d| d.try_into().ok())
        .ok_or_else(|| refused("a signed result needs its outputDigest (32 bytes, hex)"))?;
    let message = crds::agent::result_message(&state.settings.network, assignment, &digest);
    check_node_signature(state, node, &message, signature, "result", refused).await
}

/// Checks `signature` (hex `r ‖ s`) as the node's registered key's over `message` (a `what` the
/// node signed); `refused` turns a bad or foreign signature into the error naming its field.
pub(super) async fn check_node_signature(
    state: &AppState,
    node: &str,
    message: &[u8],
    signature: &str,
    what: &str,
    refused: impl Fn(&str) -> ApiError,
) -> ApiResult<()> {
    let signature = hex::decode(signature)
        .ok()
        .and_then(|s| Signature::from_slice(&s).ok())
        .ok_or_else(|| refused("must be r ‖ s, 64 bytes as hex"))?;
    let key = state
        .store
        .node_public_key(node)
        .await?
        .and_then(|k| hex::decode(k).ok())
        .and_then(|k| VerifyingKey::from_sec1_bytes(&k).ok())
        .ok_or_else(|| ApiError::Internal(format!("node {node} has no usable public key")))?;
    key.verify(message, &signature)
        .map_err(|_| refused(&format!("is not this node's signature of the {what}")))
}

/// The answer to a report whose `seq` is not above the highest the hub applied for its assignment.
fn stale(id: &str, seq: u64, last: u64) -> ApiError {
    ApiError::conflict(
        STALE_REPORT,
        format!(
            "assignment {id}: report seq {seq} is not above {last}, the last one applied; \
             the hub already has this report or a newer one"
        ),
    )
}

#[cfg(test)]
mod probe_host_tests {
    #[test]
    fn a_peer_address_is_the_probe_address_host() {
        assert_eq!(super::probe_host("10.0.0.7:7070"), "10.0.0.7");
        assert_eq!(super::probe_host("[2001:db8::1]:7070"), "2001:db8::1");
        assert_eq!(super::probe_host("gn-a.example.com:1"), "gn-a.example.com");
    }
}
