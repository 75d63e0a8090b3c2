//! `/v1/jobs`: submit, read, list and cancel jobs. A tenant sees only its own jobs.

use std::collections::HashMap;

use axum::{
    Router,
    extract::{Query, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use crds::{
    rest::{Job, JobEventList, List},
    v1alpha1::JobPhase,
};

use crate::{
    error::{ApiError, ApiResult},
    extract::{Path, RawBody, Tenant},
    ids,
    state::AppState,
    store::{CancelOutcome, JobRow, NewJob, SubmitOutcome},
    submission, views,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/jobs", get(list).post(submit))
        .route("/v1/jobs/{id}", get(read).delete(cancel))
        .route("/v1/jobs/{id}/events", get(events))
}

/// Longest accepted `Idempotency-Key`.
const MAX_IDEMPOTENCY_KEY: usize = 255;

async fn submit(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    headers: HeaderMap,
    body: RawBody,
) -> ApiResult<Response> {
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => {
            let key = v.to_str().ok().filter(|k| {
                (1..=MAX_IDEMPOTENCY_KEY).contains(&k.len())
                    && k.bytes().all(|b| b.is_ascii_graphic())
            });
            Some(key.ok_or_else(|| {
                ApiError::BadRequest {
                    code: "invalid_header",
                    message: format!("Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters, no spaces"),
                    field: Some("Idempotency-Key".into()),
                }
            })?.to_string())
        }
    };
    let parsed = submission::parse(&body.bytes, body.content_type.as_deref(), &state.validator)?;
    let id = ids::job_id();
    // Until the job is committed, the scheduling loop must not page past its id.
    let _writing = state.arrivals.writing(&id);
    let outcome = state
        .store
        .submit_job(NewJob {
            id,
            tenant_id: tenant,
            name: parsed.name,
            spec: parsed.spec,
            idempotency_key: key,
            request_hash: parsed.digest,
        })
        .await?;
    let (status, row) = match outcome {
        SubmitOutcome::Created(row) => {
            state.metrics.jobs_submitted.inc();
            state.wake_scheduler.notify_one();
            (StatusCode::CREATED, row)
        }
        SubmitOutcome::Existing(row) => (StatusCode::OK, row),
        SubmitOutcome::KeyReused { existing_id } => {
            return Err(ApiError::conflict(
                "idempotency_key_reused",
                format!(
                    "this Idempotency-Key was used for job {existing_id} with a different body"
                ),
            ));
        }
    };
    let location = HeaderValue::from_str(&format!("/v1/jobs/{}", row.id)).ok();
    let job = job_view(&state, &row).await?;
    let mut response = (status, axum::Json(job)).into_response();
    if let Some(location) = location {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

async fn read(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Job>> {
    let row = state
        .store
        .get_job(Some(&tenant), &id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("job {id}")))?;
    Ok(axum::Json(job_view(&state, &row).await?))
}

async fn list(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<axum::Json<List<Job>>> {
    let page = Page::from_query(&query, &["phase"])?;
    let phase = query
        .get("phase")
        .map(|p| {
            p.parse::<JobPhase>().map_err(|_| ApiError::BadRequest {
                code: "invalid_query",
                message: format!(
                    "phase must be one of {}",
                    JobPhase::ALL.map(JobPhase::as_str).join(", ")
                ),
                field: Some("phase".into()),
            })
        })
        .transpose()?;
    let (rows, next) = state
        .store
        .list_jobs(&tenant, phase, page.after.as_deref(), page.limit)
        .await?;
    let mut items = Vec::with_capacity(rows.len());
    for row in &rows {
        items.push(job_view(&state, row).await?);
    }
    Ok(axum::Json(List { items, next }))
}

async fn cancel(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Job>> {
    let row = match state.store.cancel_job(&tenant, &id).await? {
        CancelOutcome::NotFound => return Err(ApiError::NotFound(format!("job {id}"))),
        // Its workers learn to stop from their agents' next heartbeats.
        CancelOutcome::Cancelled(row) => row,
        CancelOutcome::AlreadyFinal(row) if row.phase == JobPhase::Cancelled => row,
        CancelOutcome::AlreadyFinal(row) => {
            return Err(ApiError::conflict(
                "job_finished",
                format!("job {id} already ended ({})", row.phase),
            ));
        }
    };
    Ok(axum::Json(job_view(&state, &row).await?))
}

async fn events(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<axum::Json<JobEventList>> {
    let page = Page::from_query(&query, &[])?;
    // Event cursors are the positions the hub hands out in `next`.
    let after = page
        .after
        .as_deref()
        .map(|cursor| {
            cursor.parse::<i64>().map_err(|_| ApiError::BadRequest {
                code: "invalid_query",
                message: "after must be a cursor from a previous page's `next`".into(),
                field: Some("after".into()),
            })
        })
        .transpose()?;
    state
        .store
        .get_job(Some(&tenant), &id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("job {id}")))?;
    let (rows, next) = state.store.job_events_page(&id, after, page.limit).await?;
    Ok(axum::Json(JobEventList {
        items: rows.iter().map(views::event).collect(),
        next,
    }))
}

/// A job with its current placement.
async fn job_view(state: &AppState, row: &JobRow) -> ApiResult<Job> {
    let assignments = if row.attempt > 0 {
        state.store.job_assignments(&row.id, row.attempt).await?
    } else {
        Vec::new()
    };
    let mut regions = HashMap::new();
    for a in &assignments {
        if !regions.contains_key(&a.node_name)
            && let Some(node) = state.store.get_node(&a.node_name).await?
        {
            regions.insert(a.node_name.clone(), node.region);
        }
    }
    let mut job = views::job(row, &assignments, &regions);
    job.receipts = state
        .store
        .job_receipts(&row.id)
        .await?
        .into_iter()
        .map(|r| crds::rest::WorkerReceipt {
            assignment: r.assignment_id,
            sequence: r.sequence,
            gpu_millis: r.gpu_millis,
            amount_micros: r.amount_micros,
            until_ms: r.until_ms,
        })
        .collect();
    Ok(job)
}

/// `limit` and `after` of a list request.
pub(super) struct Page {
    pub limit: u32,
    pub after: Option<String>,
}

impl Page {
    pub const DEFAULT_LIMIT: u32 = 50;
    pub const MAX_LIMIT: u32 = 500;

    /// Reads paging parameters; any parameter not in `extra` or the paging ones is an error, so a
    /// typo is not silently ignored.
    pub fn from_query(query: &HashMap<String, String>, extra: &[&str]) -> ApiResult<Self> {
        if let Some(unknown) = query
            .keys()
            .find(|k| !["limit", "after"].contains(&k.as_str()) && !extra.contains(&k.as_str()))
        {
            return Err(ApiError::BadRequest {
                code: "invalid_query",
                message: format!("unknown query parameter {unknown:?}"),
                field: Some(unknown.clone()),
            });
        }
        let limit = match query.get("limit") {
            None => Self::DEFAULT_LIMIT,
            Some(l) => l
                .parse::<u32>()
                .ok()
                .filter(|l| (1..=Self::MAX_LIMIT).contains(l))
                .ok_or_else(|| ApiError::BadRequest {
                    code: "invalid_query",
                    message: format!("limit must be an integer from 1 to {}", Self::MAX_LIMIT),
                    field: Some("limit".into()),
                })?,
        };
        let after = query.get("after").cloned().filter(|a| !a.is_empty());
        // Cursors are ids and names, which never hold a NUL; PostgreSQL cannot compare text with
        // one (the query fails), so refuse it rather than answer 500.
        if after.as_ref().is_some_and(|a| a.contains('\0')) {
            return Err(ApiError::BadRequest {
                code: "invalid_query",
                message: "after must not contain a NUL character".into(),
                field: Some("after".into()),
            });
        }
        Ok(Self { limit, after })
    }
}
