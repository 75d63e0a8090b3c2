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
    service,
    state::AppState,
    submission,
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
    let (created, job) = service::submit(&state, &tenant, key, parsed).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let location = HeaderValue::from_str(&format!("/v1/jobs/{}", job.id)).ok();
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
    Ok(axum::Json(service::job(&state, &tenant, &id).await?))
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
        items.push(service::job_view(&state, row).await?);
    }
    Ok(axum::Json(List { items, next }))
}

async fn cancel(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Job>> {
    Ok(axum::Json(service::cancel(&state, &tenant, &id).await?))
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
    Ok(axum::Json(
        service::events(&state, &tenant, &id, after, page.limit).await?,
    ))
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
