//! Health, readiness, metrics and the OpenAPI document.

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};

use crate::{error::ApiError, state::AppState};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
}

/// The process is alive.
async fn healthz() -> impl IntoResponse {
    axum::Json(serde_json::json!({"status": "ok"}))
}

/// The hub can serve: its database answers.
async fn readyz(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    match state.store.ping().await {
        Ok(()) => Ok(axum::Json(serde_json::json!({"status": "ready"})).into_response()),
        Err(e) => {
            tracing::warn!(error = %e, "not ready: database unreachable");
            let body = crds::rest::ErrorBody {
                error: crds::rest::ErrorDetail {
                    code: "not_ready".into(),
                    message: "the database does not answer".into(),
                    field: None,
                },
            };
            Ok((StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response())
        }
    }
}

async fn metrics(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let stakes = state.stakes.snapshot();
    let scrape = crate::metrics::Scrape {
        node_timeout_ms: state.settings.node_timeout.as_millis() as i64,
        pricing: state.market.params(),
        stakes: stakes.as_deref(),
    };
    let text = state.metrics.render(&state.store, &scrape).await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    ))
}

async fn openapi() -> impl IntoResponse {
    axum::Json(crate::openapi::document())
}
