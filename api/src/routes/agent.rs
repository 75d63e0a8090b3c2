//! `/v1/agent/...`: the agent protocol. Agents connect out to the hub (they may sit behind NAT);
//! the hub never connects to them. Every call but `register` carries the node's token, and a token
//! acts only for the node it was issued to.

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
    Assignment, AssignmentList, HeartbeatRequest, HeartbeatResponse, PROTOCOL_VERSION,
    PROTOCOL_VERSION_HEADER, RegisterRequest, RegisterResponse, StatusReport,
};

use crate::{
    error::{ApiError, ApiResult},
    extract::{AgentNode, Json, Path},
    ids,
    lifecycle::AssignmentPhase,
    state::AppState,
    store::{AssignmentOutcome, hash_secret},
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/agent/register", post(register))
        .route("/v1/agent/heartbeat", post(heartbeat))
        .route("/v1/agent/assignments", get(assignments))
        .route("/v1/agent/assignments/{id}/status", post(status))
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

async fn register(
    State(state): State<AppState>,
    Json(req): Json<RegisterRequest>,
) -> ApiResult<axum::Json<RegisterResponse>> {
    validate_registration(&req)?;
    let token = ids::secret("agt_");
    let node = state.store.upsert_node(&req, &hash_secret(&token)).await?;
    tracing::info!(node = %node.name, region = %node.region, gpus = node.gpus.len(), simulated = node.simulated, "node registered");
    state.wake_scheduler.notify_one();
    Ok(axum::Json(RegisterResponse {
        node: node.name,
        token,
        heartbeat_interval_seconds: state.settings.heartbeat_interval.as_secs().max(1) as u32,
    }))
}

/// What the registration's schema cannot say (the extractor already checked the schema: name,
/// region, lengths, GPU fields, counts).
fn validate_registration(req: &RegisterRequest) -> ApiResult<()> {
    validate_gpus(&req.gpus, "gpus")
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
    let mut seen = HashSet::new();
    if let Some(i) = gpus.iter().position(|gpu| !seen.insert(gpu.uuid.as_str())) {
        return Err(ApiError::invalid(
            format!("{field}[{i}].uuid"),
            "must be unique within the node",
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
    state
        .store
        .record_heartbeat(&node, req.gpus.as_deref())
        .await?;
    let held: Vec<String> = req.assignments.iter().map(|a| a.id.clone()).collect();
    let grace_ms = 2 * state.settings.heartbeat_interval.as_millis() as i64;
    let stop = state.store.reconcile_held(&node, &held, grace_ms).await?;
    if req.gpus.is_some() {
        state.wake_scheduler.notify_one();
    }
    Ok(axum::Json(HeartbeatResponse {
        stop,
        heartbeat_interval_seconds: state.settings.heartbeat_interval.as_secs().max(1) as u32,
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
    let mut changes = state.assignments_changed.subscribe();
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
    let mut items = Vec::with_capacity(rows.len());
    for row in rows {
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
        });
    }
    Ok(items)
}

async fn status(
    State(state): State<AppState>,
    AgentNode(node): AgentNode,
    Path(id): Path<String>,
    Json(report): Json<StatusReport>,
) -> ApiResult<StatusCode> {
    if report.message.as_ref().is_some_and(|m| m.len() > 4096) {
        return Err(ApiError::invalid("message", "must be at most 4096 bytes"));
    }
    match state.store.report_status(&node, &id, &report).await? {
        AssignmentOutcome::Applied => {
            state.notify_assignments();
            if report.state.is_final() {
                state.wake_scheduler.notify_one();
            }
            Ok(StatusCode::NO_CONTENT)
        }
        AssignmentOutcome::Unchanged => Ok(StatusCode::NO_CONTENT),
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
