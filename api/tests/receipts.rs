//! Usage receipts (`POST /v1/agent/assignments/{id}/receipts`): the hub keeps a node's latest
//! signed receipt per assignment, and only one that states what the hub agreed, is signed by the
//! node's registered key, covers no time outside the assignment's life, and is newer than the one
//! kept. Every test runs on SQLite and on PostgreSQL.

mod common;

use api::store::receipts::StoredReceipt;
use axum::Router;
use common::*;
use serde_json::{Value, json};
use settlement::receipt::Receipt;

/// A 2-GPU job placed on gn-a (price 2.49/GPU-hour): (app, gn-a's token, the assignment's hub
/// record, the tenant's API key).
async fn placed(store: &api::store::Store) -> (Router, String, api::store::AssignmentRow, String) {
    let (app, state, key) = app(store, "team-a").await;
    let token = register(&app, &registration("gn-a", "eu-west", 2, "2.49")).await;
    let mut spec = sleep_spec(60);
    spec["resources"]["gpusPerWorker"] = 2.into();
    let job = submit(&app, &key, &spec).await;
    assert_eq!(api::scheduling::schedule_once(&state).await.unwrap(), 1);
    let items = poll(&app, &token).await;
    let id = assignment_of(&items, &job);
    assert!(
        items[0]["pricePerGpuHour"].is_string(),
        "the assignment carries its agreed price: {}",
        items[0]
    );
    let row = store.job_assignments(&job, 1).await.unwrap().remove(0);
    assert_eq!(row.id, id);
    (app, token, row, key)
}

/// The receipt gn-a's agent would make for `row` at `sequence`, a minute of both GPUs from placement.
fn receipt(row: &api::store::AssignmentRow, sequence: u64) -> Receipt {
    let started = row.created_at as u64;
    Receipt {
        network: crds::agent::DEFAULT_NETWORK.into(),
        node: "gn-a".into(),
        job: row.job_id.clone(),
        assignment: row.id.clone(),
        sequence,
        price_micros_per_gpu_hour: row.price_micros,
        gpus: 2,
        started_at_ms: started,
        until_ms: started + 1_000 * sequence,
        gpu_millis: 2 * 1_000 * sequence,
    }
}

/// Sends `receipt` signed by gn-a's key.
async fn send_signed(app: &Router, token: &str, receipt: &Receipt) -> Reply {
    let signature = receipt.sign(&node_key("gn-a")).unwrap();
    send_body(
        app,
        token,
        &receipt.assignment,
        &receipt_body(receipt, &signature),
    )
    .await
}

async fn send_body(app: &Router, token: &str, assignment: &str, body: &Value) -> Reply {
    send(
        app,
        "POST",
        &format!("/v1/agent/assignments/{assignment}/receipts"),
        Some(token),
        Some("application/json"),
        body.to_string(),
    )
    .await
}

/// Asserts `reply` is `status` with `code` and a message naming `field`.
fn assert_refused(reply: &Reply, status: u16, code: &str, field: &str) {
    assert_eq!(reply.status, status, "{}", reply.body);
    assert_eq!(error_code(reply), code, "{}", reply.body);
    let error = &reply.body["error"];
    assert!(
        error.to_string().contains(field),
        "the error names {field}: {error}"
    );
}

/// What the hub keeps for the assignment.
async fn kept(store: &api::store::Store, job: &str) -> Vec<StoredReceipt> {
    store.job_receipts(job).await.unwrap()
}

backend_tests! {
    async fn a_signed_receipt_is_stored_and_a_later_one_supersedes_it(store: Store) {
        let (app, token, row, key) = placed(&store).await;
        assert_eq!(send_signed(&app, &token, &receipt(&row, 1)).await.status, 204);
        let later = receipt(&row, 3);
        assert_eq!(send_signed(&app, &token, &later).await.status, 204);
        let stored = kept(&store, &row.job_id).await;
        assert_eq!(stored.len(), 1, "one receipt per assignment: {stored:?}");
        assert_eq!(stored[0].sequence, 3);
        assert_eq!(stored[0].gpu_millis, 6_000);
        assert_eq!(stored[0].amount_micros, later.amount_micros());
        assert_eq!(stored[0].until_ms, later.until_ms);
        // The stored body is the canonical encoding the signature covers.
        let (body, signature) = store.receipt_body(&row.id).await.unwrap().unwrap();
        let decoded = Receipt::decode(&hex::decode(body).unwrap()).unwrap();
        assert_eq!(decoded, later);
        assert!(decoded.verify(&public_key_hex(&node_key("gn-a")), &signature));
        // The job view shows it.
        let job = get_job(&app, &key, &row.job_id).await;
        assert_eq!(
            job["receipts"],
            json!([{
                "assignment": row.id,
                "sequence": 3,
                "gpuMillis": 6_000,
                "amountMicros": later.amount_micros(),
                "untilMs": later.until_ms,
            }]),
            "{job:#}"
        );
    }

    async fn a_tampered_receipt_is_refused_as_unsigned(store: Store) {
        let (app, token, row, _) = placed(&store).await;
        let honest = receipt(&row, 2);
        let signature = honest.sign(&node_key("gn-a")).unwrap();
        let mut tampered = receipt_body(&honest, &signature);
        tampered["receipt"]["gpuMillis"] = 4_000.into();
        tampered["receipt"]["untilMs"] = (honest.until_ms + 1_000).into();
        assert_refused(&send_body(&app, &token, &row.id, &tampered).await, 401, "invalid_signature", "signature");
        // Signed by another key than the node's registered one.
        let forged = honest.sign(&node_key("gn-b")).unwrap();
        assert_refused(&send_body(&app, &token, &row.id, &receipt_body(&honest, &forged)).await, 401, "invalid_signature", "signature");
        assert!(kept(&store, &row.job_id).await.is_empty());
    }

    async fn a_receipt_stating_another_price_or_gpu_count_is_refused_naming_the_field(store: Store) {
        let (app, token, row, _) = placed(&store).await;
        let dearer = Receipt { price_micros_per_gpu_hour: row.price_micros + 1, ..receipt(&row, 1) };
        assert_refused(&send_signed(&app, &token, &dearer).await, 409, "receipt_mismatch", "receipt.priceMicrosPerGpuHour");
        let more_gpus = Receipt { gpus: 3, ..receipt(&row, 1) };
        assert_refused(&send_signed(&app, &token, &more_gpus).await, 409, "receipt_mismatch", "receipt.gpus");
        let other_network = Receipt { network: "agora-mainnet".into(), ..receipt(&row, 1) };
        assert_refused(&send_signed(&app, &token, &other_network).await, 409, "receipt_mismatch", "receipt.network");
        assert!(kept(&store, &row.job_id).await.is_empty());
    }

    async fn an_older_receipt_is_stale_and_an_exact_replay_changes_nothing(store: Store) {
        let (app, token, row, _) = placed(&store).await;
        assert_eq!(send_signed(&app, &token, &receipt(&row, 5)).await.status, 204);
        assert_refused(&send_signed(&app, &token, &receipt(&row, 4)).await, 409, "stale_receipt", "receipt.sequence");
        // Same sequence, other content: stale, not a replay.
        let rewritten = Receipt { gpu_millis: 1, ..receipt(&row, 5) };
        assert_refused(&send_signed(&app, &token, &rewritten).await, 409, "stale_receipt", "receipt.sequence");
        // The very receipt again (a retry whose answer was lost).
        assert_eq!(send_signed(&app, &token, &receipt(&row, 5)).await.status, 204);
        let stored = kept(&store, &row.job_id).await;
        assert_eq!((stored[0].sequence, stored[0].gpu_millis), (5, 10_000));
    }

    async fn another_nodes_token_cannot_receipt_the_assignment(store: Store) {
        let (app, _token, row, _) = placed(&store).await;
        let other = register(&app, &registration("gn-b", "eu-west", 2, "2.49")).await;
        let reply = send_signed(&app, &other, &receipt(&row, 1)).await;
        assert_eq!(reply.status, 404, "{}", reply.body);
        assert!(kept(&store, &row.job_id).await.is_empty());
    }

    async fn a_window_reaching_beyond_now_is_refused(store: Store) {
        let (app, token, row, _) = placed(&store).await;
        let now = api::store::now_ms() as u64;
        let future = Receipt {
            until_ms: now + 3_600_000,
            gpu_millis: 2 * (now + 3_600_000 - row.created_at as u64),
            ..receipt(&row, 1)
        };
        assert_refused(&send_signed(&app, &token, &future).await, 422, "invalid_field", "receipt.untilMs");
        let early = Receipt {
            started_at_ms: row.created_at as u64 - 3_600_000,
            gpu_millis: 0,
            ..receipt(&row, 1)
        };
        assert_refused(&send_signed(&app, &token, &early).await, 422, "invalid_field", "receipt.startedAtMs");
        assert!(kept(&store, &row.job_id).await.is_empty());
    }
}
