//! `POST /v1/agent/assignments/{id}/opening`: a worker opens the commitments of the chunks a
//! SpotCheck sampled (docs/verification.md). The hub asked for them in a heartbeat answer
//! (`openings`), after the result and its commitments had arrived, so the worker could not know
//! which chunks would be asked for.
//!
//! The body is the rows of C of the requested chunks in turn, each entry a u32 little-endian:
//! exactly `verification::matmul::opening_entries` × 4 bytes, at most
//! [`crds::agent::MAX_OPENING_BYTES`]. The [`OPENING_SIGNATURE_HEADER`] carries the node's
//! signature of [`crds::agent::opening_message`] over SHA-256 of the body, so the opening is the
//! worker's own statement and can stand as evidence.
//!
//! The hub checks, off the async runtime, that each chunk's rows hash to the commitment the worker
//! reported and that they are rows of A·B (one round of Freivalds' algorithm with a challenge it
//! draws now, after the rows arrived): `verification::matmul::check_opening`. The finding is
//! recorded once; the verification loop acts on it. A malformed or unsigned opening is refused and
//! changes nothing (the worker may send a correct one until the deadline).

use axum::{
    body::Bytes,
    extract::{DefaultBodyLimit, State},
    http::HeaderMap,
    routing::{MethodRouter, post},
};
use crds::agent::{MAX_OPENING_BYTES, OPENING_SIGNATURE_HEADER, OpeningAnswer};
use rand::RngCore;
use serde_json::json;
use sha2::{Digest as _, Sha256};
use verification::{
    evidence::{CheckKind, Evidence},
    matmul::{Opening, Params, check_opening, opening_entries},
};

use crate::{
    error::{ApiError, ApiResult},
    extract::{AgentNode, Path},
    state::AppState,
    store::openings::{OpeningRow, OpeningState},
};

pub(super) fn routes() -> MethodRouter<AppState> {
    // Room for the largest opening; every other agent route keeps the router's JSON limit.
    post(opening).layer(DefaultBodyLimit::max(MAX_OPENING_BYTES))
}

async fn opening(
    State(state): State<AppState>,
    AgentNode(node): AgentNode,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<axum::Json<OpeningAnswer>> {
    let not_asked = || {
        ApiError::NotFound(format!(
            "an opening asked of assignment {id} on node {node}"
        ))
    };
    let asked = state
        .store
        .pending_opening(&id)
        .await?
        .filter(|o| o.node_name == node)
        .ok_or_else(not_asked)?;
    if asked.state != OpeningState::Requested {
        // Answered before (a retry after a lost answer): the finding stands.
        return Ok(axum::Json(OpeningAnswer {
            outcome: asked.state.as_str().to_string(),
        }));
    }
    let request = &asked.request;
    let params = Params::new(request.n, request.chunk_rows, request.seed)
        .map_err(|e| ApiError::Internal(format!("opening of {id} stored with bad params: {e}")))?;
    let entries = opening_entries(&params, &request.chunks);
    if body.len() != entries * 4 {
        return Err(ApiError::invalid(
            "body",
            format!(
                "chunks {:?} of an n = {} product are {entries} entries, {} bytes as u32 little-endian; the body has {}",
                request.chunks,
                request.n,
                entries * 4,
                body.len()
            ),
        ));
    }
    let rows_digest: [u8; 32] = Sha256::digest(&body).into();
    let signature = check_signature(&state, &node, &id, &headers, &rows_digest).await?;
    let Some(assignment) = state.store.node_assignment(&node, &id).await? else {
        return Err(not_asked());
    };
    let claimed: Vec<[u8; 32]> = request
        .chunks
        .iter()
        .map(|&k| {
            assignment
                .result
                .as_ref()
                .and_then(|r| r.chunk_commitments.get(k as usize))
                .and_then(|c| verification::digest_from_hex(c))
                .unwrap_or([0; 32])
        })
        .collect();
    let rows: Vec<u32> = body
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let mut challenge = [0u8; 8];
    rand::rng().fill_bytes(&mut challenge);
    let challenge = u64::from_le_bytes(challenge);
    let chunks = request.chunks.clone();
    let finding = tokio::task::spawn_blocking(move || {
        check_opening(&params, &chunks, &claimed, &rows, challenge)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("the opening check stopped: {e}")))?;
    let (outcome, detail) = match finding {
        Opening::Valid => (
            OpeningState::Passed,
            json!({"challenge": format!("{challenge:016x}")}),
        ),
        Opening::Malformed(why) => return Err(ApiError::invalid("body", why)),
        failed => {
            let evidence =
                evidence(&state, &asked, &assignment, failed, challenge, signature).await?;
            tracing::warn!(assignment = %id, %node, kind = evidence.kind.as_str(), "an opening contradicts its commitments");
            (
                OpeningState::Failed,
                serde_json::to_value(&evidence).map_err(|e| ApiError::Internal(e.to_string()))?,
            )
        }
    };
    state
        .store
        .answer_opening(&asked.verification_id, &id, outcome, &detail)
        .await?;
    Ok(axum::Json(OpeningAnswer {
        outcome: outcome.as_str().to_string(),
    }))
}

/// Checks the opening's signature (the node's key over `opening_message`); returns it.
async fn check_signature(
    state: &AppState,
    node: &str,
    assignment: &str,
    headers: &HeaderMap,
    rows_digest: &[u8; 32],
) -> ApiResult<String> {
    let refused = |why: &str| ApiError::invalid(OPENING_SIGNATURE_HEADER, why.to_string());
    let text = headers
        .get(OPENING_SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| refused("an opening must carry the node's signature (r ‖ s as hex)"))?;
    let message = crds::agent::opening_message(&state.settings.network, assignment, rows_digest);
    super::check_node_signature(state, node, &message, text, "opening", refused).await?;
    Ok(text.to_string())
}

/// The evidence of a failed opening: the chunk, the claimed commitment, what the rows showed,
/// the sample's seed and the worker's signatures of its result and of the opening.
async fn evidence(
    state: &AppState,
    asked: &OpeningRow,
    assignment: &crate::store::AssignmentRow,
    finding: Opening,
    challenge: u64,
    opening_signature: String,
) -> ApiResult<Evidence> {
    let verification = state
        .store
        .job_verifications(&assignment.job_id)
        .await?
        .into_iter()
        .find(|v| v.id == asked.verification_id);
    let operator = state
        .store
        .get_node(&asked.node_name)
        .await?
        .and_then(|n| n.operator_address)
        .unwrap_or_else(|| format!("node:{}", asked.node_name));
    let claimed_of = |chunk: u32| {
        assignment
            .result
            .as_ref()
            .and_then(|r| r.chunk_commitments.get(chunk as usize).cloned())
            .unwrap_or_default()
    };
    let (kind, chunk, recomputed, row) = match finding {
        Opening::CommitmentMismatch { chunk, opened } => {
            (CheckKind::Opening, chunk, hex::encode(opened), None)
        }
        Opening::WrongProduct {
            chunk,
            row,
            c_r,
            a_b_r,
        } => (
            CheckKind::Freivalds,
            chunk,
            format!("row={row} cr={c_r} abr={a_b_r} challenge={challenge:016x}"),
            Some(row),
        ),
        Opening::Valid | Opening::Malformed(_) => {
            return Err(ApiError::Internal("no failure to record".into()));
        }
    };
    Ok(Evidence {
        kind,
        job: assignment.job_id.clone(),
        assignment: assignment.id.clone(),
        node: asked.node_name.clone(),
        operator,
        chunk: Some(chunk),
        sample_seed: verification.and_then(|v| v.seed),
        claimed: claimed_of(chunk),
        recomputed,
        verifier_node: None,
        verifier_operator: None,
        tie_breaker: None,
        tie_breaker_node: None,
        worker_signature: assignment.result.as_ref().and_then(|r| r.signature.clone()),
        verifier_signature: None,
        row,
        opening_signature: Some(opening_signature),
    })
}
