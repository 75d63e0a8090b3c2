//! Settlement, as anyone paid or paying can check it: `/v1/settlement/batches` (what was posted
//! to the chain, and where each batch is), `/v1/receipts?job=ID` (a job's receipts and the
//! batches that settle them) and `/v1/receipts/{id}/proof` (a receipt's Merkle inclusion proof in
//! its batch, to check against the root on chain). Batches are public on chain, so any API key
//! reads them; receipts are listed for the job's own tenant.
//!
//! `/v1/operators/{address}/statement` is an operator's earnings statement ([`crate::statement`])
//! and `/v1/settlement/slashes` the slashes asked of the contract; both are derived from what is
//! public on chain, so any API key reads them too.

use std::collections::HashMap;

use axum::{
    Router,
    extract::{Query, State},
    http::{HeaderMap, HeaderValue, header},
    response::{IntoResponse, Response},
    routing::get,
};
use crds::rest::{AddressTotal, List, ReceiptItem, ReceiptProof, SettlementBatch};
use settlement::merkle::MerkleTree;

use super::jobs::Page;
use crate::{
    error::{ApiError, ApiResult},
    extract::{Path, Tenant},
    slashing::{SlashView, is_operator_address},
    state::AppState,
    statement::{period, statement as build_statement, to_csv},
    store::settlement::{BatchRow, BatchState, SlashState},
    views::time,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/settlement/batches", get(list_batches))
        .route("/v1/settlement/batches/{id}", get(read_batch))
        .route("/v1/receipts", get(list_receipts))
        .route("/v1/receipts/{id}/proof", get(proof))
        .route("/v1/settlement/slashes", get(list_slashes))
        .route("/v1/operators/{address}/statement", get(statement))
}

/// A chain address from a path or query, or a 400 naming `field`.
pub(super) fn operator_address(field: &str, address: &str) -> ApiResult<()> {
    if is_operator_address(address) {
        Ok(())
    } else {
        Err(ApiError::BadRequest {
            code: if field == "address" {
                "invalid_path"
            } else {
                "invalid_query"
            },
            message: format!(
                "{field} {address:?} is not a chain account address (bech32, such as wasm1…)"
            ),
            field: Some(field.into()),
        })
    }
}

async fn statement(
    State(state): State<AppState>,
    _tenant: Tenant,
    Path(address): Path<String>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    operator_address("address", &address)?;
    if let Some(unknown) = query
        .keys()
        .find(|k| !["from", "to", "format"].contains(&k.as_str()))
    {
        return Err(ApiError::BadRequest {
            code: "invalid_query",
            message: format!(
                "unknown query parameter {unknown:?}; a statement takes from, to and format"
            ),
            field: Some(unknown.clone()),
        });
    }
    let csv = match query.get("format").map(String::as_str) {
        Some("csv") => true,
        Some("json") => false,
        Some(other) => {
            return Err(ApiError::BadRequest {
                code: "invalid_query",
                message: format!("format {other:?} is not json or csv"),
                field: Some("format".into()),
            });
        }
        None => headers
            .get(header::ACCEPT)
            .and_then(|accept| accept.to_str().ok())
            .is_some_and(|accept| accept.contains("text/csv")),
    };
    let (from, to) = period(
        query.get("from").map(String::as_str),
        query.get("to").map(String::as_str),
        crate::store::now_ms(),
    )
    .map_err(|e| ApiError::BadRequest {
        code: "invalid_query",
        message: format!("{}: {}", e.field, e.message),
        field: Some(e.field.into()),
    })?;
    let statement = build_statement(&state.store, &address, from, to).await?;
    let vary = (header::VARY, HeaderValue::from_static("Accept"));
    if !csv {
        return Ok(([vary], axum::Json(statement)).into_response());
    }
    let name = format!(
        "attachment; filename=\"statement-{address}-{}.csv\"",
        statement.from.get(..10).unwrap_or("period")
    );
    let disposition =
        HeaderValue::from_str(&name).unwrap_or_else(|_| HeaderValue::from_static("attachment"));
    Ok((
        [
            vary,
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/csv; charset=utf-8; header=present"),
            ),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        to_csv(&statement),
    )
        .into_response())
}

async fn list_slashes(
    State(state): State<AppState>,
    _tenant: Tenant,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<axum::Json<List<SlashView>>> {
    let page = Page::from_query(&query, &["operator", "state"])?;
    if let Some(operator) = query.get("operator") {
        operator_address("operator", operator)?;
    }
    let filter = query
        .get("state")
        .map(|s| {
            s.parse::<SlashState>().map_err(|_| ApiError::BadRequest {
                code: "invalid_query",
                message: format!(
                    "state must be one of {}",
                    SlashState::ALL.map(SlashState::as_str).join(", ")
                ),
                field: Some("state".into()),
            })
        })
        .transpose()?;
    let (rows, next) = state
        .store
        .list_slashes(
            query.get("operator").map(String::as_str),
            filter,
            page.after.as_deref(),
            page.limit,
        )
        .await?;
    Ok(axum::Json(List {
        items: rows.into_iter().map(SlashView::from).collect(),
        next,
    }))
}

async fn list_batches(
    State(state): State<AppState>,
    _tenant: Tenant,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<axum::Json<List<SettlementBatch>>> {
    let page = Page::from_query(&query, &["state"])?;
    let filter = query
        .get("state")
        .map(|s| {
            s.parse::<BatchState>().map_err(|_| ApiError::BadRequest {
                code: "invalid_query",
                message: format!(
                    "state must be one of {}",
                    BatchState::ALL.map(BatchState::as_str).join(", ")
                ),
                field: Some("state".into()),
            })
        })
        .transpose()?;
    let (rows, next) = state
        .store
        .list_batches(filter, page.after.as_deref(), page.limit)
        .await?;
    Ok(axum::Json(List {
        items: rows.iter().map(batch_view).collect(),
        next,
    }))
}

async fn read_batch(
    State(state): State<AppState>,
    _tenant: Tenant,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<SettlementBatch>> {
    let row = state
        .store
        .batch(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("batch {id}")))?;
    Ok(axum::Json(batch_view(&row)))
}

async fn list_receipts(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<axum::Json<List<ReceiptItem>>> {
    if let Some(unknown) = query.keys().find(|k| k.as_str() != "job") {
        return Err(ApiError::BadRequest {
            code: "invalid_query",
            message: format!("unknown query parameter {unknown:?}; this list takes `job`"),
            field: Some(unknown.clone()),
        });
    }
    let job = query.get("job").ok_or_else(|| ApiError::BadRequest {
        code: "invalid_query",
        message: "job is required: the receipts of which job".into(),
        field: Some("job".into()),
    })?;
    state
        .store
        .get_job(Some(&tenant), job)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("job {job}")))?;
    let mut items: Vec<ReceiptItem> = state
        .store
        .job_leaves(job)
        .await?
        .into_iter()
        .map(|leaf| ReceiptItem {
            id: receipt_id(&leaf.assignment_id, leaf.sequence),
            job: leaf.job_id,
            assignment: leaf.assignment_id,
            sequence: leaf.sequence,
            amount_micros: leaf.amount_micros,
            paid_micros: Some(leaf.paid_micros),
            batch: Some(leaf.batch_id),
        })
        .collect();
    // The latest receipt of each assignment, if no batch settled it yet.
    for latest in state.store.job_receipts(job).await? {
        let settled = items
            .iter()
            .any(|i| i.assignment == latest.assignment_id && i.sequence >= latest.sequence);
        if !settled {
            items.push(ReceiptItem {
                id: receipt_id(&latest.assignment_id, latest.sequence),
                job: job.clone(),
                assignment: latest.assignment_id,
                sequence: latest.sequence,
                amount_micros: latest.amount_micros,
                paid_micros: None,
                batch: None,
            });
        }
    }
    Ok(axum::Json(List { items, next: None }))
}

async fn proof(
    State(state): State<AppState>,
    _tenant: Tenant,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<ReceiptProof>> {
    let not_found = || ApiError::NotFound(format!("settled receipt {id}"));
    let (assignment, sequence) = id
        .rsplit_once('.')
        .and_then(|(a, s)| Some((a, s.parse::<u64>().ok()?)))
        .ok_or_else(|| ApiError::BadRequest {
            code: "invalid_path",
            message: "a receipt id is <assignment>.<sequence>, as GET /v1/receipts lists it".into(),
            field: Some("id".into()),
        })?;
    let leaf = state
        .store
        .settled_leaf(assignment, sequence)
        .await?
        .ok_or_else(not_found)?;
    let batch = state
        .store
        .batch(&leaf.batch_id)
        .await?
        .ok_or_else(not_found)?;
    let leaves: Vec<Vec<u8>> = state
        .store
        .batch_leaves(&leaf.batch_id)
        .await?
        .iter()
        .map(|l| hex::decode(&l.body))
        .collect::<Result<_, _>>()
        .map_err(|e| ApiError::Internal(format!("batch {} leaf body: {e}", leaf.batch_id)))?;
    let tree = MerkleTree::from_leaves(&leaves);
    let index = usize::try_from(leaf.leaf_index).map_err(|_| not_found())?;
    let path = tree.proof(index).ok_or_else(not_found)?;
    let root = hex::encode(tree.root());
    if root != batch.root {
        // The stored leaves no longer give the posted root: nothing to prove with.
        return Err(ApiError::Internal(format!(
            "batch {}: its leaves give root {root}, not the recorded {}",
            batch.id, batch.root
        )));
    }
    Ok(axum::Json(ReceiptProof {
        leaf: leaf.body,
        index: leaf.leaf_index,
        tree_size: leaves.len() as u64,
        path: path.iter().map(hex::encode).collect(),
        root,
        batch: batch.id,
        tx: batch.tx,
    }))
}

/// A receipt's id in the API.
fn receipt_id(assignment: &str, sequence: u64) -> String {
    format!("{assignment}.{sequence}")
}

fn batch_view(row: &BatchRow) -> SettlementBatch {
    let totals = |value: &serde_json::Value| -> Vec<AddressTotal> {
        serde_json::from_value(value.clone()).unwrap_or_default()
    };
    SettlementBatch {
        id: row.id.clone(),
        state: row.state.as_str().to_string(),
        from_ms: row.period_from_ms.max(0) as u64,
        to_ms: row.period_to_ms.max(0) as u64,
        root: row.root.clone(),
        receipts: row.receipts.max(0) as u64,
        provider_totals: totals(&row.provider_totals),
        payer_totals: totals(&row.payer_totals),
        tx: row.tx.clone(),
        height: row.height.map(|h| h.max(0) as u64),
        built_at: time(row.built_at),
        posted_at: row.posted_at.map(time),
        final_at: row.final_at.map(time),
        attempts: row.attempts.max(0) as u64,
        last_error: row.last_error.clone(),
    }
}
