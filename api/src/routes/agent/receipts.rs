//! `POST /v1/agent/assignments/{id}/receipts`: a node's signed, cumulative usage receipt for one of
//! its assignments (docs/settlement.md). The hub keeps the latest per assignment; settlement
//! batches are built from those.
//!
//! A receipt is what a node will be paid on, so the hub accepts one only if it states exactly what
//! the hub itself agreed to (node, job, assignment, network, price, GPU count), carries the node's
//! own signature, covers no time outside the assignment's life on the hub, and is newer than the
//! one kept. Checks go in that order, each refusal naming the field at fault.

use axum::{extract::State, http::StatusCode};
use crds::agent::{ReceiptReport, UsageReceipt};
use settlement::receipt::{Receipt, ReceiptError};

use crate::{
    error::{ApiError, ApiResult},
    extract::{AgentNode, Json, Path},
    state::AppState,
    store::{
        now_ms,
        receipts::{NewReceipt, ReceiptOutcome},
    },
};

/// How far a node's clock may be off the hub's: a window may start this much before the hub
/// placed the assignment and end this much after now (or after the assignment finished).
pub const CLOCK_SKEW_MS: i64 = 30_000;

/// The answer to a receipt whose sequence is not above the stored one's.
pub const STALE_RECEIPT: &str = "stale_receipt";

/// Checks a receipt and keeps it as its assignment's latest (see the module docs).
pub(super) async fn receipt(
    State(state): State<AppState>,
    AgentNode(node): AgentNode,
    Path(id): Path<String>,
    Json(report): Json<ReceiptReport>,
) -> ApiResult<StatusCode> {
    let wire = &report.receipt;
    in_store_range(wire)?;
    let Some(assignment) = state.store.node_assignment(&node, &id).await? else {
        return Err(ApiError::NotFound(format!(
            "assignment {id} on node {node}"
        )));
    };
    let gpus = assignment.gpus.len() as u64;
    for (field, stated, agreed) in [
        ("receipt.node", wire.node.as_str(), node.as_str()),
        ("receipt.job", &wire.job, &assignment.job_id),
        ("receipt.assignment", &wire.assignment, &id),
        ("receipt.network", &wire.network, &state.settings.network),
    ] {
        if stated != agreed {
            return Err(mismatch(field, stated, agreed));
        }
    }
    for (field, stated, agreed) in [
        (
            "receipt.priceMicrosPerGpuHour",
            wire.price_micros_per_gpu_hour,
            assignment.price_micros,
        ),
        ("receipt.gpus", u64::from(wire.gpus), gpus),
    ] {
        if stated != agreed {
            return Err(mismatch(field, &stated.to_string(), &agreed.to_string()));
        }
    }
    let receipt = Receipt::from(wire);
    let body = receipt.encode().map_err(malformed)?;
    let public_key = state
        .store
        .node_public_key(&node)
        .await?
        .unwrap_or_default();
    if !receipt.verify(&public_key, &report.signature) {
        return Err(ApiError::Unproven {
            code: "invalid_signature",
            message: format!(
                "is not node {node}'s signature of this receipt (the node's registered key over the \
                 canonical encoding, docs/settlement.md)"
            ),
            field: "signature",
        });
    }
    // Both fit in i64 (`in_store_range`).
    let started = receipt.started_at_ms as i64;
    let until = receipt.until_ms as i64;
    if started < assignment.created_at - CLOCK_SKEW_MS {
        return Err(ApiError::invalid(
            "receipt.startedAtMs",
            format!(
                "{started} is before the hub placed the assignment ({}), beyond {CLOCK_SKEW_MS} ms of clock skew",
                assignment.created_at
            ),
        ));
    }
    let now = now_ms();
    if until > now + CLOCK_SKEW_MS {
        return Err(ApiError::invalid(
            "receipt.untilMs",
            format!(
                "{until} is in the future (the hub's clock reads {now}), beyond {CLOCK_SKEW_MS} ms of clock skew"
            ),
        ));
    }
    if let Some(finished) = assignment.finished_at
        && until > finished + CLOCK_SKEW_MS
    {
        return Err(ApiError::invalid(
            "receipt.untilMs",
            format!(
                "{until} is after the assignment finished ({finished}), beyond {CLOCK_SKEW_MS} ms of clock skew"
            ),
        ));
    }
    let body = hex::encode(body);
    let outcome = state
        .store
        .record_receipt(&NewReceipt {
            assignment_id: &id,
            job_id: &assignment.job_id,
            node_name: &node,
            sequence: receipt.sequence,
            gpu_millis: receipt.gpu_millis,
            amount_micros: receipt.amount_micros(),
            until_ms: receipt.until_ms,
            body: &body,
            signature: &report.signature,
        })
        .await?;
    match outcome {
        ReceiptOutcome::Stored => {
            tracing::debug!(assignment = %id, sequence = receipt.sequence, gpu_millis = receipt.gpu_millis, "receipt stored");
            Ok(StatusCode::NO_CONTENT)
        }
        ReceiptOutcome::Replay => Ok(StatusCode::NO_CONTENT),
        ReceiptOutcome::Stale { last } => Err(ApiError::conflict(
            STALE_RECEIPT,
            format!(
                "receipt.sequence: {} is not above {last}, the sequence of the receipt the hub keeps for assignment {id}",
                receipt.sequence
            ),
        )),
    }
}

/// The store keeps receipts' integers as signed 64-bit; larger values are refused, not wrapped.
fn in_store_range(wire: &UsageReceipt) -> ApiResult<()> {
    for (field, value) in [
        ("receipt.sequence", wire.sequence),
        (
            "receipt.priceMicrosPerGpuHour",
            wire.price_micros_per_gpu_hour,
        ),
        ("receipt.startedAtMs", wire.started_at_ms),
        ("receipt.untilMs", wire.until_ms),
        ("receipt.gpuMillis", wire.gpu_millis),
    ] {
        if value > i64::MAX as u64 {
            return Err(ApiError::invalid(
                field,
                format!("must be at most {}", i64::MAX),
            ));
        }
    }
    Ok(())
}

fn mismatch(field: &str, stated: &str, agreed: &str) -> ApiError {
    ApiError::conflict(
        "receipt_mismatch",
        format!(
            "{field}: the receipt states {stated:?}, the hub's record of the assignment {agreed:?}"
        ),
    )
}

/// A receipt that is not consistent in itself.
fn malformed(error: ReceiptError) -> ApiError {
    let field = match &error {
        ReceiptError::Window { .. } => "receipt.untilMs",
        ReceiptError::TooMuchTime { .. } => "receipt.gpuMillis",
        ReceiptError::TooLong { field }
        | ReceiptError::Truncated { field }
        | ReceiptError::NotUtf8 { field } => field,
        ReceiptError::Magic | ReceiptError::Trailing(_) => "receipt",
    };
    ApiError::invalid(field, error.to_string())
}
