//! Verification through the hub's API and loops (docs/verification.md): a SpotCheck job's result
//! is sampled after it arrived, recomputed by a verifier job on another operator's node, and a
//! disagreement is settled by a tie-breaker on a third operator's node. A cheating worker fails its
//! attempt (retried elsewhere, never on it again), loses reputation and is slashed with the
//! evidence; an honest worker contradicted by a faulty verifier is not. SQLite and PostgreSQL.
//!
//! The products here are too large for the workers to open their sampled chunks to the hub
//! (tests/openings.rs covers that path), so a verifier node always recomputes.

mod common;

use axum::Router;
use common::*;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Chunks of the product: n = 16,384 rows, 16 per chunk. A quarter of them sampled is 256 chunks
/// of 1 MiB each, far above what a worker may open in one request (8 MiB).
const CHUNKS: u32 = 1024;

/// The true commitment of chunk `i` (the hub compares strings; any fixed function serves).
fn honest(i: u32) -> String {
    hex::encode(Sha256::digest(i.to_le_bytes()))
}

fn forged(i: u32) -> String {
    hex::encode(Sha256::digest((i + 1_000).to_le_bytes()))
}

fn spot_check_spec() -> Value {
    json!({
        "kind": "Batch",
        "workload": {"builtin": {"verifiableMatmul": {"n": CHUNKS * 16, "chunkRows": 16, "seed": 11}}},
        "resources": {"workers": 1, "gpusPerWorker": 1},
        "pricing": {"maxPricePerGpuHour": "5.00"},
        "verification": {"mode": "SpotCheck", "sampleRate": 0.25},
        "retry": {"maxAttempts": 3}
    })
}

/// Registers `name` for operator `operator` at `price`, able to run verifiable matmuls.
async fn node(app: &Router, name: &str, operator: &str, price: &str) -> String {
    let mut node = registration(name, "eu-west", 1, price);
    node["capabilities"] = json!(["builtin:verifiableMatmul"]);
    node["operatorAddress"] = json!(operator);
    register(app, &node).await
}

/// Runs the node's assignment of `job` to success, reporting `commitments` (for the chunks the
/// job's spec asks for: all of them, or its `chunks`).
async fn finish(
    app: &Router,
    token: &str,
    job: &str,
    commitments: &dyn Fn(u32) -> String,
    chunks: &[u32],
) {
    let list: Vec<String> = chunks.iter().map(|c| commitments(*c)).collect();
    let result = json!({"backend": "cpu-reference", "outputDigest": "ab".repeat(32), "chunkCommitments": list});
    finish_with_result(app, token, job, result).await;
}

/// The verification of `job` as the API shows it.
async fn verification_of(app: &Router, key: &str, job: &str) -> Value {
    let reply = send(
        app,
        "GET",
        &format!("/v1/jobs/{job}/verifications"),
        Some(key),
        None,
        "",
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.body["items"]
        .as_array()
        .unwrap()
        .last()
        .cloned()
        .unwrap_or(Value::Null)
}

/// Places whatever is pending and returns the job id of the verifier or tie-breaker `field` of
/// `job`'s latest verification, with the chunks it recomputes.
async fn check_job(
    app: &Router,
    state: &api::state::AppState,
    key: &str,
    job: &str,
    field: &str,
) -> (String, Vec<u32>) {
    api::verifying::verify_once(state).await.unwrap();
    let verification = verification_of(app, key, job).await;
    let id = verification[field]
        .as_str()
        .unwrap_or_else(|| panic!("no {field}: {verification:#}"))
        .to_string();
    // Absent for Redundant, which recomputes everything.
    let chunks = verification["chunks"]
        .as_array()
        .map(|list| list.iter().map(|c| c.as_u64().unwrap() as u32).collect())
        .unwrap_or_default();
    api::scheduling::schedule_once(state).await.unwrap();
    (id, chunks)
}

/// The job's `Verified` condition as (status, reason).
fn verified(job: &Value) -> (String, String) {
    let condition = job["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Verified"))
        .unwrap_or_else(|| panic!("no Verified condition: {job:#}"));
    (
        condition["status"].as_str().unwrap().to_string(),
        condition["reason"].as_str().unwrap().to_string(),
    )
}

fn all_chunks() -> Vec<u32> {
    (0..CHUNKS).collect()
}

backend_tests! {
    async fn a_cheater_is_caught_retried_elsewhere_and_slashed(store: Store) {
        let (app, state, key) = app(&store, "team-a").await;
        let cheater = node(&app, "gn-a", "agora1qqqqqqqqqa", "1.00").await;
        let verifier = node(&app, "gn-b", "agora1qqqqqqqqqz", "2.00").await;
        let tie = node(&app, "gn-c", "agora1qqqqqqqqqc", "3.00").await;
        let job = submit(&app, &key, &spot_check_spec()).await;
        assert_eq!(api::scheduling::schedule_once(&state).await.unwrap(), 1);
        finish(&app, &cheater, &job, &forged, &all_chunks()).await;
        let verifying = get_job(&app, &key, &job).await;
        assert_eq!(verifying["status"]["phase"], "Verifying");
        assert_eq!(verified(&verifying), ("Unknown".into(), "Verifying".into()));

        // The sample is drawn only now; the verifier runs at another operator (gn-b, not the
        // cheaper gn-a) and recomputes just the sample.
        let (verifier_job, chunks) = check_job(&app, &state, &key, &job, "verifierJob").await;
        assert_eq!(chunks.len(), 256, "a quarter of 1024 chunks");
        let placed = get_job(&app, &key, &verifier_job).await;
        assert_eq!(placed["status"]["placement"]["workers"][0]["node"], "gn-b", "{placed:#}");
        assert_eq!(placed["spec"]["workload"]["builtin"]["verifiableMatmul"]["chunks"], json!(chunks));
        finish(&app, &verifier, &verifier_job, &honest, &chunks).await;

        // They disagree: a tie-breaker at a third operator decides.
        let (tie_job, _) = check_job(&app, &state, &key, &job, "tieBreakerJob").await;
        let placed = get_job(&app, &key, &tie_job).await;
        assert_eq!(placed["status"]["placement"]["workers"][0]["node"], "gn-c", "{placed:#}");
        finish(&app, &tie, &tie_job, &honest, &chunks).await;
        api::verifying::verify_once(&state).await.unwrap();

        let verification = verification_of(&app, &key, &job).await;
        assert_eq!(verification["state"], "failed", "{verification:#}");
        let evidence = &verification["verdict"]["evidence"][0];
        assert_eq!(evidence["node"], "gn-a");
        // The first contradicted chunk, with the worker's claim, both recomputations and the seed
        // the sample came from.
        let chunk = evidence["chunk"].as_u64().unwrap() as u32;
        assert_eq!(chunk, chunks[0], "{evidence:#}");
        assert_eq!(evidence["claimed"], json!(forged(chunk)));
        assert_eq!(evidence["recomputed"], json!(honest(chunk)));
        assert_eq!(evidence["tieBreaker"], json!(honest(chunk)));
        assert_eq!(evidence["sampleSeed"], verification["seed"]);
        assert_eq!((evidence["verifierNode"].as_str(), evidence["tieBreakerNode"].as_str()), (Some("gn-b"), Some("gn-c")));
        // The job is retried, never on the cheater again.
        let retried = get_job(&app, &key, &job).await;
        assert_eq!(retried["status"]["phase"], "Pending", "{retried:#}");
        assert_eq!(verified(&retried), ("False".into(), "VerificationFailed".into()));
        assert!(retried["status"]["message"].as_str().unwrap().contains("verification failed"), "{retried:#}");
        api::scheduling::schedule_once(&state).await.unwrap();
        let placed = get_job(&app, &key, &job).await;
        assert_ne!(placed["status"]["placement"]["workers"][0]["node"], "gn-a", "{placed:#}");
        // Reputation halved; a slash for cheating queued with the evidence.
        assert_eq!(store.get_node("gn-a").await.unwrap().unwrap().reputation_bps, 5_000);
        let slashes = send(&app, "GET", "/v1/settlement/slashes?operator=agora1qqqqqqqqqa", Some(&key), None, "").await;
        let slash = &slashes.body["items"][0];
        assert_eq!(slash["reason"], "cheating", "{}", slashes.body);
        assert!(slash["evidence"].as_str().unwrap().contains("gn-a"), "{slash:#}");
        let metrics = send(&app, "GET", "/metrics", None, None, "").await;
        assert!(
            metrics.text.contains(r#"agora_verifications_total{mode="SpotCheck",outcome="failed"} 1"#),
            "{}",
            metrics.text
        );
    }

    async fn an_honest_worker_passes_even_against_a_faulty_verifier(store: Store) {
        let (app, state, key) = app(&store, "team-a").await;
        let worker = node(&app, "gn-a", "agora1qqqqqqqqqa", "1.00").await;
        let faulty = node(&app, "gn-b", "agora1qqqqqqqqqz", "2.00").await;
        let tie = node(&app, "gn-c", "agora1qqqqqqqqqc", "3.00").await;
        let job = submit(&app, &key, &spot_check_spec()).await;
        api::scheduling::schedule_once(&state).await.unwrap();
        finish(&app, &worker, &job, &honest, &all_chunks()).await;
        let (verifier_job, chunks) = check_job(&app, &state, &key, &job, "verifierJob").await;
        finish(&app, &faulty, &verifier_job, &forged, &chunks).await;
        let (tie_job, _) = check_job(&app, &state, &key, &job, "tieBreakerJob").await;
        finish(&app, &tie, &tie_job, &honest, &chunks).await;
        api::verifying::verify_once(&state).await.unwrap();

        let done = get_job(&app, &key, &job).await;
        assert_eq!(done["status"]["phase"], "Succeeded", "{done:#}");
        assert_eq!(verified(&done), ("True".into(), "Passed".into()));
        let verification = verification_of(&app, &key, &job).await;
        assert_eq!(verification["state"], "passed");
        assert_eq!(verification["verdict"]["verifier"]["wrong"], true);
        // The honest worker keeps its reputation and is not slashed; the verifier pays.
        assert_eq!(store.get_node("gn-a").await.unwrap().unwrap().reputation_bps, 10_000);
        assert_eq!(store.get_node("gn-b").await.unwrap().unwrap().reputation_bps, 5_000);
        let slashes = send(&app, "GET", "/v1/settlement/slashes", Some(&key), None, "").await;
        assert_eq!(slashes.body["items"], json!([]), "{}", slashes.body);
    }

    async fn agreement_passes_at_once_and_a_lone_operator_cannot_verify_itself(store: Store) {
        let (app, state, key) = app(&store, "team-a").await;
        let worker = node(&app, "gn-a", "agora1qqqqqqqqqa", "1.00").await;
        // Same operator: may not verify gn-a.
        node(&app, "gn-a2", "agora1qqqqqqqqqa", "1.50").await;
        let job = submit(&app, &key, &spot_check_spec()).await;
        api::scheduling::schedule_once(&state).await.unwrap();
        finish(&app, &worker, &job, &honest, &all_chunks()).await;
        let (verifier_job, chunks) = check_job(&app, &state, &key, &job, "verifierJob").await;
        let waiting = get_job(&app, &key, &verifier_job).await;
        assert_eq!(waiting["status"]["phase"], "Pending", "only the checked operator's nodes exist: {waiting:#}");

        // Another operator joins and verifies; agreement passes the job.
        let other = node(&app, "gn-b", "agora1qqqqqqqqqz", "2.00").await;
        api::scheduling::schedule_once(&state).await.unwrap();
        finish(&app, &other, &verifier_job, &honest, &chunks).await;
        api::verifying::verify_once(&state).await.unwrap();
        let done = get_job(&app, &key, &job).await;
        assert_eq!(done["status"]["phase"], "Succeeded", "{done:#}");
        assert!(done["status"]["message"].as_str().unwrap().starts_with("verified (SpotCheck)"), "{done:#}");
    }

    async fn a_signed_result_must_be_the_nodes_own(store: Store) {
        let (app, state, key) = app(&store, "team-a").await;
        let token = node(&app, "gn-a", "agora1qqqqqqqqqa", "1.00").await;
        let mut spec = spot_check_spec();
        spec["verification"] = json!({"mode": "None"});
        let job = submit(&app, &key, &spec).await;
        api::scheduling::schedule_once(&state).await.unwrap();
        let assignment = assignment_of(&poll(&app, &token).await, &job);
        let digest = [7u8; 32];
        let sign = |signer: &str| {
            let message = crds::agent::result_message(crds::agent::DEFAULT_NETWORK, &assignment, &digest);
            sign(&node_key(signer), &message)
        };
        let result = |signature: String| json!({
            "backend": "cpu-reference", "outputDigest": hex::encode(digest),
            "chunkCommitments": (0..CHUNKS).map(honest).collect::<Vec<_>>(), "signature": signature
        });
        // Signed by another node's key: refused, naming the field, and nothing changes.
        let reply = report_result(&app, &token, &assignment, &result(sign("gn-z"))).await;
        assert_eq!(reply.status, 422, "{}", reply.body);
        assert_eq!(reply.body["error"]["field"], "result.signature");
        assert_ne!(get_job(&app, &key, &job).await["status"]["phase"], "Succeeded");
        // Its own signature: taken, and kept with the result.
        let reply = report_result(&app, &token, &assignment, &result(sign("gn-a"))).await;
        assert_eq!(reply.status, 204, "{}", reply.body);
        let done = get_job(&app, &key, &job).await;
        assert_eq!(done["status"]["phase"], "Succeeded", "{done:#}");
        assert_eq!(done["results"][0]["result"]["signature"], json!(sign("gn-a")));
    }

    async fn redundant_compares_whole_results_and_says_when_there_is_nothing_to_compare(store: Store) {
        let (app, state, key) = app(&store, "team-a").await;
        let worker = node(&app, "gn-a", "agora1qqqqqqqqqa", "1.00").await;
        let twin = node(&app, "gn-b", "agora1qqqqqqqqqz", "2.00").await;
        let mut spec = spot_check_spec();
        spec["verification"] = json!({"mode": "Redundant"});
        let job = submit(&app, &key, &spec).await;
        api::scheduling::schedule_once(&state).await.unwrap();
        finish(&app, &worker, &job, &honest, &all_chunks()).await;
        // The whole workload again, at another operator: no chunk list.
        let (verifier_job, chunks) = check_job(&app, &state, &key, &job, "verifierJob").await;
        assert!(chunks.is_empty());
        let placed = get_job(&app, &key, &verifier_job).await;
        assert_eq!(placed["status"]["placement"]["workers"][0]["node"], "gn-b", "{placed:#}");
        assert!(placed["spec"]["workload"]["builtin"]["verifiableMatmul"].get("chunks").is_none(), "{placed:#}");
        finish(&app, &twin, &verifier_job, &honest, &all_chunks()).await;
        api::verifying::verify_once(&state).await.unwrap();
        let done = get_job(&app, &key, &job).await;
        assert_eq!(done["status"]["phase"], "Succeeded", "{done:#}");
        assert!(done["status"]["message"].as_str().unwrap().contains("output digest"), "{done:#}");

        // A workload without an output digest cannot be compared: the job Succeeds unverified,
        // and says so.
        let mut sleep = sleep_spec(1);
        sleep["verification"] = json!({"mode": "Redundant"});
        let mut node_b = registration("gn-s", "eu-west", 1, "0.50");
        node_b["operatorAddress"] = json!("agora1qqqqqqqqqs");
        let sleeper = register(&app, &node_b).await;
        let job = submit(&app, &key, &sleep).await;
        api::scheduling::schedule_once(&state).await.unwrap();
        let assignment = assignment_of(&poll(&app, &sleeper).await, &job);
        for (phase, code) in [("Running", None), ("Succeeded", Some(0))] {
            assert_eq!(report(&app, &sleeper, &assignment, phase, code, None).await.status, 204);
        }
        api::verifying::verify_once(&state).await.unwrap();
        let done = get_job(&app, &key, &job).await;
        assert_eq!(done["status"]["phase"], "Succeeded", "{done:#}");
        assert!(done["status"]["message"].as_str().unwrap().starts_with("not verified (Redundant)"), "{done:#}");
        assert_eq!(verified(&done), ("False".into(), "Unverifiable".into()));
        assert_eq!(verification_of(&app, &key, &job).await["state"], "unverifiable");
    }

    async fn cancelling_a_job_under_check_cancels_its_verifier(store: Store) {
        let (app, state, key) = app(&store, "team-a").await;
        let worker = node(&app, "gn-a", "agora1qqqqqqqqqa", "1.00").await;
        node(&app, "gn-b", "agora1qqqqqqqqqz", "2.00").await;
        let job = submit(&app, &key, &spot_check_spec()).await;
        api::scheduling::schedule_once(&state).await.unwrap();
        finish(&app, &worker, &job, &honest, &all_chunks()).await;
        let (verifier_job, _) = check_job(&app, &state, &key, &job, "verifierJob").await;
        assert_eq!(get_job(&app, &key, &verifier_job).await["status"]["phase"], "Scheduled");

        let cancelled = send(&app, "DELETE", &format!("/v1/jobs/{job}"), Some(&key), None, "").await;
        assert!(cancelled.status < 300, "{}", cancelled.body);
        api::verifying::verify_once(&state).await.unwrap();
        let verifier = get_job(&app, &key, &verifier_job).await;
        assert_eq!(verifier["status"]["phase"], "Cancelled", "nobody needs its answer: {verifier:#}");
        let verification = verification_of(&app, &key, &job).await;
        assert_eq!(verification["state"], "unverifiable", "{verification:#}");
        assert_eq!(get_job(&app, &key, &job).await["status"]["phase"], "Cancelled");
    }
}
