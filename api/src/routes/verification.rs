//! `GET /v1/jobs/{id}/verifications`: how a job's attempts were checked, with the sample's seed,
//! the verifier and tie-breaker jobs and, for a failed check, the evidence (docs/verification.md).
//! The job's own tenant only, like the job.

use axum::{Router, extract::State, routing::get};
use crds::rest::{List, Verification};

use crate::{
    error::{ApiError, ApiResult},
    extract::{Path, Tenant},
    state::AppState,
    views::time,
};

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/jobs/{id}/verifications", get(list))
}

async fn list(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<List<Verification>>> {
    if state.store.get_job(Some(&tenant), &id).await?.is_none() {
        return Err(ApiError::NotFound(format!("job {id}")));
    }
    let items = state
        .store
        .job_verifications(&id)
        .await?
        .into_iter()
        .map(|row| Verification {
            id: row.id,
            attempt: row.attempt,
            mode: row.mode,
            state: row.state.as_str().to_string(),
            seed: row.seed,
            chunks: row.chunks,
            verifier_job: row.verifier_job,
            tie_breaker_job: row.tie_breaker_job,
            verdict: row.verdict,
            message: row.message,
            created_at: time(row.created_at),
            decided_at: row.decided_at.map(time),
        })
        .collect();
    Ok(axum::Json(List { items, next: None }))
}
