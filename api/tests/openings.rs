//! Verification by opening (docs/verification.md): a SpotCheck of a `verifiableMatmul` whose
//! sampled rows fit in one request asks the *worker* to open its commitments of the sampled chunks;
//! the hub checks the rows against the commitments and with Freivalds' algorithm, and needs no
//! second node. The products here are real (the `verification::matmul` arithmetic the agent runs),
//! the openings signed with the node's key. SQLite and PostgreSQL.

mod common;

use std::{sync::atomic::AtomicBool, time::Duration};

use axum::Router;
use common::*;
use crds::agent::{DEFAULT_NETWORK, OPENING_SIGNATURE_HEADER, opening_message, result_message};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use verification::matmul::{self, Output, Params};

/// n = 32 rows in chunks of 4: 8 chunks, of which a quarter (2) are sampled.
const N: u32 = 32;
const CHUNK_ROWS: u32 = 4;
const SEED: u64 = 11;

fn params() -> Params {
    Params::new(N, CHUNK_ROWS, SEED).unwrap()
}

fn spec() -> Value {
    json!({
        "kind": "Batch",
        "workload": {"builtin": {"verifiableMatmul": {"n": N, "chunkRows": CHUNK_ROWS, "seed": SEED}}},
        "resources": {"workers": 1, "gpusPerWorker": 1},
        "pricing": {"maxPricePerGpuHour": "5.00"},
        "verification": {"mode": "SpotCheck", "sampleRate": 0.25},
        "retry": {"maxAttempts": 3}
    })
}

/// C = A·B, as an honest node computes it.
fn product() -> Vec<u32> {
    let p = params();
    matmul::multiply_rows(
        p.n(),
        &matmul::input_a(&p),
        &matmul::input_b(&p),
        &AtomicBool::new(false),
    )
    .unwrap()
}

/// The rows of `chunks` of `c`, in turn.
fn rows_of(c: &[u32], chunks: &[u32]) -> Vec<u32> {
    let p = params();
    chunks
        .iter()
        .flat_map(|&k| {
            let rows = p.chunk_rows(k as usize);
            c[rows.start * p.n()..rows.end * p.n()].to_vec()
        })
        .collect()
}

async fn node(app: &Router, name: &str, operator: &str, price: &str) -> String {
    let mut node = registration(name, "eu-west", 1, price);
    node["capabilities"] = json!(["builtin:verifiableMatmul"]);
    node["operatorAddress"] = json!(operator);
    register(app, &node).await
}

/// Runs `node`'s assignment of `job` to success, reporting (and signing) `output`; returns the
/// assignment id.
async fn finish(app: &Router, token: &str, node: &str, job: &str, output: &Output) -> String {
    let assignment = assignment_of(&poll(app, token).await, job);
    assert_eq!(
        report(app, token, &assignment, "Running", None, None)
            .await
            .status,
        204
    );
    let signature = sign(
        &node_key(node),
        &result_message(DEFAULT_NETWORK, &assignment, &output.digest),
    );
    let result = json!({
        "backend": "cpu-reference",
        "outputDigest": hex::encode(output.digest),
        "chunkCommitments": output.commitments.iter().map(hex::encode).collect::<Vec<_>>(),
        "signature": signature,
    });
    let reply = report_result(app, token, &assignment, &result).await;
    assert_eq!(reply.status, 204, "{}", reply.body);
    assignment
}

/// The openings the node's next heartbeat answer asks for.
async fn asked(app: &Router, token: &str) -> Vec<Value> {
    let reply = heartbeat(app, token, &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.body["openings"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Sends `rows` as the opening of `assignment`, signed by `signer`'s key.
async fn open(app: &Router, token: &str, signer: &str, assignment: &str, rows: &[u32]) -> Reply {
    let body: Vec<u8> = rows.iter().flat_map(|x| x.to_le_bytes()).collect();
    let digest: [u8; 32] = Sha256::digest(&body).into();
    let signature = sign(
        &node_key(signer),
        &opening_message(DEFAULT_NETWORK, assignment, &digest),
    );
    let authorization = format!("Bearer {token}");
    send_with(
        app,
        "POST",
        &format!("/v1/agent/assignments/{assignment}/opening"),
        &[
            ("authorization", &authorization),
            ("content-type", "application/octet-stream"),
            (OPENING_SIGNATURE_HEADER, &signature),
        ],
        body,
    )
    .await
}

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
    reply.body["items"][0].clone()
}

fn chunks_of(request: &Value) -> Vec<u32> {
    request["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_u64().unwrap() as u32)
        .collect()
}

backend_tests! {
    async fn an_honest_worker_opens_its_sample_and_no_second_node_runs(store: Store) {
        let (app, state, key) = app(&store, "team-a").await;
        let worker = node(&app, "gn-a", "agora1qqqqqqqqqa", "1.00").await;
        node(&app, "gn-b", "agora1qqqqqqqqqz", "2.00").await;
        let job = submit(&app, &key, &spec()).await;
        api::scheduling::schedule_once(&state).await.unwrap();
        let c = product();
        let assignment = finish(&app, &worker, "gn-a", &job, &Output::from_product(&params(), &c)).await;
        // Nothing is asked before the sample is drawn, after the result arrived.
        assert_eq!(asked(&app, &worker).await, Vec::<Value>::new());
        api::verifying::verify_once(&state).await.unwrap();

        let requests = asked(&app, &worker).await;
        assert_eq!(requests.len(), 1, "{requests:#?}");
        let request = &requests[0];
        assert_eq!((request["assignment"].as_str(), request["n"].as_u64(), request["chunkRows"].as_u64(), request["seed"].as_u64()),
                   (Some(assignment.as_str()), Some(u64::from(N)), Some(u64::from(CHUNK_ROWS)), Some(SEED)));
        let chunks = chunks_of(request);
        assert_eq!(chunks.len(), 2, "a quarter of 8 chunks");
        let verification = verification_of(&app, &key, &job).await;
        assert_eq!(verification["state"], "opening", "{verification:#}");
        assert_eq!(verification["chunks"], json!(chunks));
        // Another node cannot answer for it; a node not asked is told so.
        let other = node(&app, "gn-c", "agora1qqqqqqqqqc", "3.00").await;
        assert_eq!(open(&app, &other, "gn-c", &assignment, &rows_of(&c, &chunks)).await.status, 404);
        // Nobody was asked to recompute anything.
        assert!(verification.get("verifierJob").is_none(), "{verification:#}");

        let reply = open(&app, &worker, "gn-a", &assignment, &rows_of(&c, &chunks)).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.body["outcome"], "passed");
        // A repeat (the answer was lost on its way) gets the same finding.
        let again = open(&app, &worker, "gn-a", &assignment, &rows_of(&c, &chunks)).await;
        assert_eq!(again.body["outcome"], "passed", "{}", again.body);
        assert_eq!(asked(&app, &worker).await, Vec::<Value>::new(), "answered: asked no more");
        api::verifying::verify_once(&state).await.unwrap();

        let done = get_job(&app, &key, &job).await;
        assert_eq!(done["status"]["phase"], "Succeeded", "{done:#}");
        let message = done["status"]["message"].as_str().unwrap();
        assert!(message.contains("opened by the worker") && message.contains("Freivalds"), "{message}");
        let verification = verification_of(&app, &key, &job).await;
        assert_eq!(verification["state"], "passed");
        assert_eq!(verification["verdict"]["checked_by"], "opening");
        assert_eq!(verification["openings"][0]["state"], "passed", "{verification:#}");
        assert!(verification.get("verifierJob").is_none(), "{verification:#}");
        let jobs = send(&app, "GET", "/v1/jobs", Some(&key), None, "").await;
        assert_eq!(jobs.body["items"].as_array().unwrap().len(), 1, "no verifier job: {}", jobs.body);
        assert_eq!(store.get_node("gn-a").await.unwrap().unwrap().reputation_bps, 10_000);
    }

    async fn a_worker_that_invented_commitments_cannot_open_them(store: Store) {
        let (app, state, key) = app(&store, "team-a").await;
        let cheater = node(&app, "gn-a", "agora1qqqqqqqqqa", "1.00").await;
        node(&app, "gn-b", "agora1qqqqqqqqqz", "2.00").await;
        let job = submit(&app, &key, &spec()).await;
        api::scheduling::schedule_once(&state).await.unwrap();
        // Skipped the work: every commitment made up.
        let c = product();
        let mut output = Output::from_product(&params(), &c);
        for (i, commitment) in output.commitments.iter_mut().enumerate() {
            *commitment = Sha256::digest(format!("made up {i}")).into();
        }
        output.digest = matmul::digest(&params(), &output.commitments);
        let assignment = finish(&app, &cheater, "gn-a", &job, &output).await;
        api::verifying::verify_once(&state).await.unwrap();
        let chunks = chunks_of(&asked(&app, &cheater).await[0]);

        // Its best try, the true rows, do not hash to what it claimed.
        let reply = open(&app, &cheater, "gn-a", &assignment, &rows_of(&c, &chunks)).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.body["outcome"], "failed");
        api::verifying::verify_once(&state).await.unwrap();

        let verification = verification_of(&app, &key, &job).await;
        assert_eq!(verification["state"], "failed", "{verification:#}");
        let evidence = &verification["verdict"]["evidence"][0];
        assert_eq!(evidence["kind"], "opening");
        assert_eq!(evidence["node"], "gn-a");
        assert_eq!(evidence["chunk"], json!(chunks[0]));
        assert_eq!(evidence["claimed"], json!(hex::encode(output.commitments[chunks[0] as usize])));
        let true_commitment = Output::from_product(&params(), &c).commitments[chunks[0] as usize];
        assert_eq!(evidence["recomputed"], json!(hex::encode(true_commitment)), "the rows it opened");
        assert_eq!(evidence["sampleSeed"], verification["seed"]);
        assert!(evidence["workerSignature"].is_string() && evidence["openingSignature"].is_string(), "{evidence:#}");
        // Retried elsewhere, reputation halved, a slash for cheating queued.
        let retried = get_job(&app, &key, &job).await;
        assert_eq!(retried["status"]["phase"], "Pending", "{retried:#}");
        api::scheduling::schedule_once(&state).await.unwrap();
        let placed = get_job(&app, &key, &job).await;
        assert_eq!(placed["status"]["placement"]["workers"][0]["node"], "gn-b", "{placed:#}");
        assert_eq!(store.get_node("gn-a").await.unwrap().unwrap().reputation_bps, 5_000);
        let slashes = send(&app, "GET", "/v1/settlement/slashes?operator=agora1qqqqqqqqqa", Some(&key), None, "").await;
        let slash = &slashes.body["items"][0];
        assert_eq!(slash["reason"], "cheating", "{}", slashes.body);
        let text = slash["evidence"].as_str().unwrap();
        assert!(text.starts_with("agora-evidence/v1 kind=opening "), "{text}");
    }

    async fn a_committed_wrong_product_fails_freivalds(store: Store) {
        let (app, state, key) = app(&store, "team-a").await;
        let worker = node(&app, "gn-a", "agora1qqqqqqqqqa", "1.00").await;
        node(&app, "gn-b", "agora1qqqqqqqqqz", "2.00").await;
        let job = submit(&app, &key, &spec()).await;
        api::scheduling::schedule_once(&state).await.unwrap();
        // A faulty kernel: every entry of row 0 of every chunk off by one, committed as computed.
        let p = params();
        let mut c = product();
        for chunk in 0..p.chunks() {
            let row = p.chunk_rows(chunk).start;
            for x in &mut c[row * p.n()..(row + 1) * p.n()] {
                *x = (*x + 1) % matmul::MODULUS;
            }
        }
        let output = Output::from_product(&p, &c);
        let assignment = finish(&app, &worker, "gn-a", &job, &output).await;
        api::verifying::verify_once(&state).await.unwrap();
        let chunks = chunks_of(&asked(&app, &worker).await[0]);
        let reply = open(&app, &worker, "gn-a", &assignment, &rows_of(&c, &chunks)).await;
        assert_eq!(reply.body["outcome"], "failed", "{}", reply.body);
        api::verifying::verify_once(&state).await.unwrap();

        let verification = verification_of(&app, &key, &job).await;
        let evidence = &verification["verdict"]["evidence"][0];
        assert_eq!(evidence["kind"], "freivalds", "{verification:#}");
        // The rows match the commitment; they are just not A·B, from the chunk's first row on.
        assert_eq!(evidence["claimed"], json!(hex::encode(output.commitments[chunks[0] as usize])));
        assert_eq!(evidence["row"], json!(chunks[0] * CHUNK_ROWS), "{evidence:#}");
        assert!(evidence["recomputed"].as_str().unwrap().starts_with(&format!("row={} ", chunks[0] * CHUNK_ROWS)), "{evidence:#}");
        assert_eq!(get_job(&app, &key, &job).await["status"]["phase"], "Pending");
    }

    async fn a_malformed_or_unsigned_opening_changes_nothing(store: Store) {
        let (app, state, key) = app(&store, "team-a").await;
        let worker = node(&app, "gn-a", "agora1qqqqqqqqqa", "1.00").await;
        node(&app, "gn-b", "agora1qqqqqqqqqz", "2.00").await;
        let job = submit(&app, &key, &spec()).await;
        api::scheduling::schedule_once(&state).await.unwrap();
        let c = product();
        let assignment = finish(&app, &worker, "gn-a", &job, &Output::from_product(&params(), &c)).await;
        // Not asked yet: nothing to open.
        assert_eq!(open(&app, &worker, "gn-a", &assignment, &c[..4]).await.status, 404);
        api::verifying::verify_once(&state).await.unwrap();
        let chunks = chunks_of(&asked(&app, &worker).await[0]);
        let rows = rows_of(&c, &chunks);

        let short = open(&app, &worker, "gn-a", &assignment, &rows[1..]).await;
        assert_eq!(short.status, 422, "{}", short.body);
        assert_eq!(short.body["error"]["field"], "body");
        assert!(short.body["error"]["message"].as_str().unwrap().contains("1024 bytes"), "{}", short.body);
        let forged = open(&app, &worker, "gn-z", &assignment, &rows).await;
        assert_eq!(forged.status, 422, "{}", forged.body);
        assert_eq!(forged.body["error"]["field"], OPENING_SIGNATURE_HEADER);
        let authorization = format!("Bearer {worker}");
        let unsigned = send_with(&app, "POST", &format!("/v1/agent/assignments/{assignment}/opening"),
            &[("authorization", &authorization)], rows.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>()).await;
        assert_eq!(unsigned.status, 422, "{}", unsigned.body);
        // Still asked, still opening: the worker may send a correct one.
        assert_eq!(asked(&app, &worker).await.len(), 1);
        assert_eq!(verification_of(&app, &key, &job).await["state"], "opening");
        assert_eq!(open(&app, &worker, "gn-a", &assignment, &rows).await.body["outcome"], "passed");
    }

    async fn a_silent_worker_leaves_the_check_to_a_verifier_node(store: Store) {
        let settings = api::HubSettings { opening_timeout: Duration::from_millis(300), ..Default::default() };
        let (app, state, key) = app_with(&store, "team-a", settings).await;
        let worker = node(&app, "gn-a", "agora1qqqqqqqqqa", "1.00").await;
        let verifier = node(&app, "gn-b", "agora1qqqqqqqqqz", "2.00").await;
        let job = submit(&app, &key, &spec()).await;
        api::scheduling::schedule_once(&state).await.unwrap();
        let c = product();
        let output = Output::from_product(&params(), &c);
        finish(&app, &worker, "gn-a", &job, &output).await;
        api::verifying::verify_once(&state).await.unwrap();
        assert_eq!(verification_of(&app, &key, &job).await["state"], "opening");

        // The worker never answers; past the deadline a verifier at another operator recomputes.
        let verification = eventually("the verifier job", Duration::from_secs(10), || async {
            api::verifying::verify_once(&state).await.unwrap();
            let v = verification_of(&app, &key, &job).await;
            (v["state"] == "recomputing").then_some(v)
        })
        .await;
        assert_eq!(asked(&app, &worker).await, Vec::<Value>::new(), "no longer asked");
        assert_eq!(verification["openings"][0]["state"], "requested", "{verification:#}");
        let verifier_job = verification["verifierJob"].as_str().unwrap().to_string();
        api::scheduling::schedule_once(&state).await.unwrap();
        let placed = get_job(&app, &key, &verifier_job).await;
        assert_eq!(placed["status"]["placement"]["workers"][0]["node"], "gn-b", "{placed:#}");
        let chunks = chunks_of(&verification);
        let sampled = Output::from_chunk_rows(&params(), &chunks, &rows_of(&c, &chunks));
        finish(&app, &verifier, "gn-b", &verifier_job, &sampled).await;
        api::verifying::verify_once(&state).await.unwrap();
        let done = get_job(&app, &key, &job).await;
        assert_eq!(done["status"]["phase"], "Succeeded", "{done:#}");
        assert!(done["status"]["message"].as_str().unwrap().contains(&verifier_job), "{done:#}");
    }
}
