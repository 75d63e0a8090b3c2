//! `GET` / `POST /v1/agent/bandwidth`: the hub's side of an agent's bandwidth probe. The agent
//! downloads N bytes of random (incompressible) data and times them, and uploads N bytes that the
//! hub reads, discards and times (see `gpu_runtime::probes`). Both need a node token, so only
//! registered agents can make the hub move data, and both are bounded: at most
//! [`MAX_BANDWIDTH_PROBE_BYTES`] a probe, at most [`MAX_CONCURRENT_TRANSFERS`] probes at once per
//! hub (per router, which a hub builds once), and each one is a request under the node's rate
//! limit.
//!
//! The upload streams its body past the router's JSON body limit (1 MiB by default): it is read
//! chunk by chunk and dropped, counted against [`MAX_BANDWIDTH_PROBE_BYTES`] instead, so this route
//! alone takes larger bodies without the hub ever holding one in memory.

use std::{
    collections::HashMap,
    convert::Infallible,
    sync::{Arc, OnceLock},
    time::Instant,
};

use axum::{
    Extension,
    body::{Body, Bytes},
    extract::Query,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{MethodRouter, get},
};
use crds::{
    agent::{BandwidthUpload, MAX_BANDWIDTH_PROBE_BYTES},
    rest::{ErrorBody, ErrorDetail},
};
use futures::StreamExt;
use rand::RngCore;
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore, oneshot},
    time::Duration,
};

use crate::{
    error::{ApiError, ApiResult},
    extract::AgentNode,
    state::AppState,
};

/// Probes the hub serves at once; more are refused (`503 bandwidth_busy`) rather than queued, so
/// that probes take a bounded share of the hub's link and CPU and never pile up.
pub const MAX_CONCURRENT_TRANSFERS: usize = 4;

/// How long one probe may hold its slot: 16 MiB at 2.3 Mbit/s, twice what the agent waits. A
/// client that stops reading a download keeps its connection, like any slow client, but not the
/// slot; an upload that has not arrived by then is refused.
pub const TRANSFER_DEADLINE: Duration = Duration::from_secs(60);

/// Size of each chunk of random data the download sends.
const CHUNK_BYTES: usize = 64 << 10;

/// Seconds a probe refused as busy is told to wait (`Retry-After`).
const BUSY_RETRY_SECONDS: u32 = 5;

/// The transfers in progress: [`MAX_CONCURRENT_TRANSFERS`] slots.
#[derive(Clone)]
struct Transfers(Arc<Semaphore>);

/// Both methods of `/v1/agent/bandwidth`, sharing one set of [`Transfers`].
pub fn routes() -> MethodRouter<AppState> {
    get(download)
        .post(upload)
        .layer(Extension(Transfers(Arc::new(Semaphore::new(
            MAX_CONCURRENT_TRANSFERS,
        )))))
}

/// A slot among the [`MAX_CONCURRENT_TRANSFERS`], or `503 bandwidth_busy` with `Retry-After`.
fn transfer_slot(transfers: Transfers) -> Result<OwnedSemaphorePermit, Busy> {
    transfers.0.try_acquire_owned().map_err(|_| Busy)
}

/// All [`MAX_CONCURRENT_TRANSFERS`] slots are taken.
struct Busy;

impl IntoResponse for Busy {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: "bandwidth_busy".into(),
                message: format!(
                    "the hub is serving {MAX_CONCURRENT_TRANSFERS} bandwidth probes already; probe again later"
                ),
                field: None,
            },
        };
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, BUSY_RETRY_SECONDS.to_string())],
            axum::Json(body),
        )
            .into_response()
    }
}

/// Size of the random block downloads are cut from.
const BLOCK_BYTES: usize = 4 << 20;

/// A block of random bytes made once per process, which downloads send slices of from a random
/// offset on: generating fresh random data per probe would make the hub's CPU (ChaCha, a few
/// hundred MB/s unoptimised) the bottleneck on a fast link instead of the link. Data repeating
/// only every 4 MiB is still incompressible to anything on the way (HTTP and link compressors
/// look back 32 KiB to a few MiB at most).
fn random_block() -> Bytes {
    static BLOCK: OnceLock<Bytes> = OnceLock::new();
    BLOCK
        .get_or_init(|| {
            let mut block = vec![0u8; BLOCK_BYTES];
            rand::rng().fill_bytes(&mut block);
            Bytes::from(block)
        })
        .clone()
}

/// `GET /v1/agent/bandwidth?bytes=N`: N random bytes (1 to [`MAX_BANDWIDTH_PROBE_BYTES`]), so no
/// compression on the way can shorten them.
async fn download(
    Extension(transfers): Extension<Transfers>,
    AgentNode(node): AgentNode,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, Response> {
    let bytes =
        probe_bytes(query.get("bytes").map(String::as_str)).map_err(IntoResponse::into_response)?;
    let permit = transfer_slot(transfers).map_err(IntoResponse::into_response)?;
    tracing::debug!(%node, bytes, "serving a bandwidth download");
    // The slot is held until the body is sent or dropped (`sent` with it), or the deadline.
    let (sent, dropped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let _permit = permit;
        let _ = tokio::time::timeout(TRANSFER_DEADLINE, dropped).await;
    });
    let block = random_block();
    let start = rand::rng().next_u64() as usize % block.len();
    let chunks = bytes.div_ceil(CHUNK_BYTES as u64);
    let stream = futures::stream::iter(0..chunks).map(move |i| {
        let _sending = &sent;
        let len = (bytes - i * CHUNK_BYTES as u64).min(CHUNK_BYTES as u64) as usize;
        let offset = (start + i as usize * CHUNK_BYTES) % block.len();
        let chunk = if offset + len <= block.len() {
            block.slice(offset..offset + len)
        } else {
            let mut wrapped = Vec::with_capacity(len);
            wrapped.extend_from_slice(&block[offset..]);
            wrapped.extend_from_slice(&block[..len - (block.len() - offset)]);
            Bytes::from(wrapped)
        };
        Ok::<_, Infallible>(chunk)
    });
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, bytes.to_string()),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// `POST /v1/agent/bandwidth`: reads and discards a body of up to [`MAX_BANDWIDTH_PROBE_BYTES`],
/// answering how many bytes arrived and how long they took from the first chunk on.
async fn upload(
    Extension(transfers): Extension<Transfers>,
    AgentNode(node): AgentNode,
    headers: HeaderMap,
    body: Body,
) -> Result<axum::Json<BandwidthUpload>, Response> {
    let too_large = || {
        ApiError::TooLarge {
            limit: MAX_BANDWIDTH_PROBE_BYTES as usize,
        }
        .into_response()
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BANDWIDTH_PROBE_BYTES) {
        return Err(too_large());
    }
    let _permit = transfer_slot(transfers).map_err(IntoResponse::into_response)?;
    let mut stream = body.into_data_stream();
    let mut bytes = 0u64;
    let mut first: Option<(Instant, u64)> = None;
    let mut last = Instant::now();
    let read = async {
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                ApiError::bad_request("malformed_body", format!("reading the body: {e}"))
                    .into_response()
            })?;
            if chunk.is_empty() {
                continue;
            }
            last = Instant::now();
            bytes += chunk.len() as u64;
            if bytes > MAX_BANDWIDTH_PROBE_BYTES {
                return Err(too_large());
            }
            first.get_or_insert((last, bytes));
        }
        Ok(())
    };
    tokio::time::timeout(TRANSFER_DEADLINE, read)
        .await
        .map_err(|_| {
            ApiError::bad_request(
                "probe_timeout",
                format!("the upload did not arrive within {TRANSFER_DEADLINE:?}"),
            )
            .into_response()
        })??;
    let (timed_bytes, read_micros) = match first {
        Some((at, first_bytes)) => (
            bytes - first_bytes,
            last.duration_since(at).as_micros() as u64,
        ),
        None => (0, 0),
    };
    tracing::debug!(%node, bytes, read_micros, "read a bandwidth upload");
    Ok(axum::Json(BandwidthUpload {
        bytes,
        timed_bytes,
        read_micros,
    }))
}

/// The `bytes` query parameter: 1 to [`MAX_BANDWIDTH_PROBE_BYTES`].
fn probe_bytes(value: Option<&str>) -> ApiResult<u64> {
    let value = value.ok_or_else(|| {
        ApiError::invalid(
            "bytes",
            format!("required: how many bytes to send, 1 to {MAX_BANDWIDTH_PROBE_BYTES}"),
        )
    })?;
    let bytes: u64 = value.parse().map_err(|_| ApiError::BadRequest {
        code: "invalid_query",
        message: format!("bytes must be a whole number of bytes, not {value:?}"),
        field: Some("bytes".into()),
    })?;
    if !(1..=MAX_BANDWIDTH_PROBE_BYTES).contains(&bytes) {
        return Err(ApiError::invalid(
            "bytes",
            format!("must be 1 to {MAX_BANDWIDTH_PROBE_BYTES}"),
        ));
    }
    Ok(bytes)
}
