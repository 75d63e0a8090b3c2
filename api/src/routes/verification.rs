//! `GET /v1/jobs/{id}/verifications`: how a job's attempts were checked, with the sample's seed,
//! the verifier and tie-breaker jobs and, for a failed check, the evidence (docs/verification.md).
//! The job's own tenant only, like the job.

use axum::{Router, extract::State, routing::get};
use crds::rest::{List, Verification, VerificationOpening};

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
    let mut items = Vec::new();
    for row in state.store.job_verifications(&id).await? {
        let openings = state
            .store
            .verification_openings(&row.id)
            .await?
            .into_iter()
            .map(|o| VerificationOpening {
                assignment: o.request.assignment,
                node: o.node_name,
                state: o.state.as_str().to_string(),
                deadline: time(o.deadline_at),
                answered_at: o.answered_at.map(time),
                detail: o.detail,
            })
            .collect();
        items.push(Verification {
            id: row.id,
            attempt: row.attempt,
            mode: row.mode,
            state: row.state.as_str().to_string(),
            seed: row.seed,
            chunks: row.chunks,
            openings,
            verifier_job: row.verifier_job,
            tie_breaker_job: row.tie_breaker_job,
            verdict: row.verdict,
            message: row.message,
            created_at: time(row.created_at),
            decided_at: row.decided_at.map(time),
        });
    }
    Ok(axum::Json(List { items, next: None }))
}
