//! `/v1/nodes`: the node registry, as every tenant may see it (capacity is market information).

use std::collections::HashMap;

use axum::{
    Router,
    extract::{Query, State},
    routing::get,
};
use crds::rest::{List, Node};

use super::jobs::Page;
use crate::{
    error::{ApiError, ApiResult},
    extract::{Path, Tenant},
    service,
    state::AppState,
    store::now_ms,
    views,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/nodes", get(list))
        .route("/v1/nodes/{name}", get(read))
}

async fn list(
    State(state): State<AppState>,
    _tenant: Tenant,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<axum::Json<List<Node>>> {
    let page = Page::from_query(&query, &[])?;
    let (items, next) = service::nodes(&state, page.after.as_deref(), page.limit).await?;
    Ok(axum::Json(List { items, next }))
}

async fn read(
    State(state): State<AppState>,
    _tenant: Tenant,
    Path(name): Path<String>,
) -> ApiResult<axum::Json<Node>> {
    let row = state
        .store
        .get_node(&name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("node {name}")))?;
    let mut node = views::node(
        &row,
        now_ms(),
        state.settings.node_timeout.as_millis() as i64,
    );
    state
        .sessions
        .network
        .annotate(&state.store, std::slice::from_mut(&mut node))
        .await?;
    Ok(axum::Json(node))
}
