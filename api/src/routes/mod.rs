//! The hub's HTTP routes, one module per resource, merged in [`router`].

mod agent;
mod chain;
mod jobs;
mod market;
mod nodes;
mod settlement;
mod system;
mod verification;

pub use agent::parse_capability;

use std::{sync::Arc, time::Instant};

use axum::{
    Router,
    extract::{DefaultBodyLimit, MatchedPath, Request, State},
    middleware::{self, Next},
    response::Response,
};

use crate::{
    error::ApiError,
    extract::BodyLimit,
    ratelimit::{self, RateLimiter},
    state::AppState,
};

/// Every route of the hub.
///
/// The rate limiter sits inside `observe`, so refused requests are counted and timed like any
/// other (`agora_http_requests_total{status="429"}`), and outside the handlers, so a refused
/// request costs no database work. Each router has its own limiter: a hub builds one router.
pub fn router(state: AppState) -> Router {
    let limit = state.settings.max_body_bytes;
    let limiter = Arc::new(RateLimiter::new(state.settings.rate_limits.clone()));
    Router::new()
        .merge(jobs::router())
        .merge(nodes::router())
        .merge(market::router())
        .merge(settlement::router())
        .merge(chain::router())
        .merge(verification::router())
        .merge(agent::router())
        .merge(system::router())
        .fallback(|| async { ApiError::NoRoute })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(middleware::from_fn_with_state(limiter, ratelimit::enforce))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(middleware::from_fn(
            move |mut req: Request, next: Next| async move {
                req.extensions_mut().insert(BodyLimit(limit));
                next.run(req).await
            },
        ))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// Counts and times every request by its route template (never the raw path, which would make a
/// label per job id).
async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_string();
    let method = req.method().to_string();
    let started = Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    state
        .metrics
        .http_requests
        .get_or_create(&vec![
            ("method", method),
            ("route", route.clone()),
            ("status", status),
        ])
        .inc();
    state
        .metrics
        .http_duration
        .get_or_create(&vec![("route", route)])
        .observe(started.elapsed().as_secs_f64());
    response
}
