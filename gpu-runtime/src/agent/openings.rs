//! Opening commitments on the hub's request (docs/verification.md): a heartbeat answer may list
//! `openings`, chunks of a finished `verifiableMatmul` the hub sampled after the result arrived.
//! The agent recomputes those chunks' rows on the CPU (the inputs are seeded, so it needs nothing
//! it kept), signs them and sends them; the hub checks them against the commitments the agent had
//! reported, and with Freivalds' algorithm. Each opening runs once at a time; one that fails to
//! reach the hub is asked for again by the next heartbeat answer, until the hub's deadline.
//!
//! A node that cheated on the product (`--cheat`) opens the true rows too: it has nothing better
//! to show, since rows that hash to an invented commitment cannot be found.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex, atomic::AtomicBool},
};

use crds::agent::OpeningRequest;
use sha2::{Digest as _, Sha256};
use tracing::{Instrument, info, info_span, warn};

use super::Shared;
use crate::workloads::verifiable_matmul::{Params, open_chunks_cpu};

/// The openings being worked on, by assignment, so a heartbeat that asks again while one is
/// computed or sent does not start it twice.
#[derive(Default)]
pub(super) struct Openings {
    in_flight: Mutex<HashSet<String>>,
}

impl Openings {
    fn start(&self, assignment: &str) -> bool {
        self.in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(assignment.to_string())
    }

    fn finish(&self, assignment: &str) {
        self.in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(assignment);
    }
}

/// Starts every requested opening not already under way.
pub(super) fn dispatch(shared: &Arc<Shared>, requests: Vec<OpeningRequest>) {
    for request in requests {
        if !shared.openings.start(&request.assignment) {
            continue;
        }
        let shared = Arc::clone(shared);
        let span = info_span!("opening", assignment = %request.assignment);
        tokio::spawn(
            async move {
                open(&shared, &request).await;
                shared.openings.finish(&request.assignment);
            }
            .instrument(span),
        );
    }
}

async fn open(shared: &Shared, request: &OpeningRequest) {
    let params = match Params::new(request.n, request.chunk_rows, request.seed) {
        Ok(params) => params,
        Err(e) => {
            warn!(error = %e, "the hub asked to open a product with invalid parameters");
            return;
        }
    };
    let chunks = request.chunks.clone();
    let computed = tokio::task::spawn_blocking(move || {
        open_chunks_cpu(&params, &chunks, &AtomicBool::new(false))
    })
    .await;
    let rows = match computed {
        Ok(Ok(rows)) => rows,
        Ok(Err(e)) => {
            warn!(error = %e, "cannot open the requested chunks");
            return;
        }
        Err(e) => {
            warn!(error = %e, "opening the requested chunks stopped");
            return;
        }
    };
    let body: Vec<u8> = rows.iter().flat_map(|x| x.to_le_bytes()).collect();
    let digest: [u8; 32] = Sha256::digest(&body).into();
    let signature = shared.session.identity().sign_opening(
        shared.session.network(),
        &request.assignment,
        &digest,
    );
    let client = shared.session.client();
    let (body, signature) = (&body, &signature);
    let answer = shared
        .session
        .call(|token| async move {
            client
                .send_opening(&token, &request.assignment, body.clone(), signature)
                .await
        })
        .await;
    match answer {
        Ok(answer) => {
            info!(chunks = request.chunks.len(), outcome = %answer.outcome, "opened the sampled chunks")
        }
        Err(e) => {
            warn!(error = %e, "could not send the opening; the hub asks again while it waits")
        }
    }
}
