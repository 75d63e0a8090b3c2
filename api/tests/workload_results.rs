//! What a builtin workload computed (benchmark TFLOPS, verifiable-matmul commitments) travels with
//! the worker's final status report, is stored with its assignment and shown on the job; a result
//! out of bounds is refused naming its field and changes nothing. Every test runs on SQLite and on
//! PostgreSQL.

mod common;

use axum::Router;
use common::*;
use serde_json::{Value, json};

/// A node advertising the matmul builtins; returns its token.
async fn matmul_node(app: &Router) -> String {
    let mut node = registration("gn-a", "eu-west", 1, "1.00");
    node["capabilities"] = json!(["builtin:matmulBenchmark", "builtin:verifiableMatmul"]);
    register(app, &node).await
}

fn spec(builtin: Value) -> Value {
    json!({
        "kind": "Batch",
        "workload": {"builtin": builtin},
        "resources": {"workers": 1, "gpusPerWorker": 1},
        "pricing": {"maxPricePerGpuHour": "5.00"}
    })
}

/// Submits `builtin`, places it on the only node and reports it Running: (job, assignment).
async fn running(
    app: &Router,
    state: &api::AppState,
    key: &str,
    token: &str,
    builtin: Value,
) -> (String, String) {
    let job = submit(app, key, &spec(builtin)).await;
    assert_eq!(api::scheduling::schedule_once(state).await.unwrap(), 1);
    let id = assignment_of(&poll(app, token).await, &job);
    assert_eq!(
        report_seq(app, token, &id, 1, "Running", None, None)
            .await
            .status,
        204
    );
    (job, id)
}

async fn report(app: &Router, token: &str, id: &str, body: &Value) -> Reply {
    send(
        app,
        "POST",
        &format!("/v1/agent/assignments/{id}/status"),
        Some(token),
        Some("application/json"),
        body.to_string(),
    )
    .await
}

backend_tests! {
    async fn a_reported_result_is_stored_and_shown_on_the_job(store: Store) {
        let (app, state, key) = app(&store, "team-a").await;
        let token = matmul_node(&app).await;

        let builtin = json!({"verifiableMatmul": {"n": 256, "chunkRows": 64, "seed": 7}});
        let (job, id) = running(&app, &state, &key, &token, builtin).await;
        assert!(get_job(&app, &key, &job).await.get("results").is_none(), "no result yet");
        let commitments: Vec<String> = (0..4).map(|i| format!("{i:x}").repeat(64)).collect();
        let digest = "ab".repeat(32);
        let body = json!({
            "seq": 2, "state": "Succeeded", "exitCode": 0,
            "result": {"backend": "cpu-reference", "outputDigest": digest, "chunkCommitments": commitments}
        });
        assert_eq!(report(&app, &token, &id, &body).await.status, 204);
        let shown = get_job(&app, &key, &job).await;
        assert_eq!(shown["status"]["phase"], "Succeeded", "{shown}");
        assert_eq!(
            shown["results"],
            json!([{"rank": 0, "node": "gn-a", "result": {
                "backend": "cpu-reference", "outputDigest": digest, "chunkCommitments": commitments
            }}]),
            "{shown}"
        );
        let stored = store.job_assignments(&job, 1).await.unwrap();
        assert_eq!(stored[0].result.as_ref().unwrap().output_digest.as_deref(), Some(digest.as_str()));

        let (job, id) = running(&app, &state, &key, &token, json!({"matmulBenchmark": {"size": 1024}})).await;
        let body = json!({
            "seq": 2, "state": "Succeeded", "exitCode": 0,
            "result": {"backend": "cuda", "tflops": 41.5}
        });
        assert_eq!(report(&app, &token, &id, &body).await.status, 204);
        let shown = get_job(&app, &key, &job).await;
        assert_eq!(shown["results"][0]["result"]["tflops"], 41.5, "{shown}");
        assert_eq!(shown["results"][0]["result"]["backend"], "cuda", "{shown}");
    }

    async fn a_result_out_of_bounds_is_refused_naming_the_field(store: Store) {
        let (app, state, key) = app(&store, "team-a").await;
        let token = matmul_node(&app).await;
        let (job, id) = running(&app, &state, &key, &token, json!({"matmulBenchmark": {}})).await;
        for (result, field) in [
            (json!({"backend": "cuda", "tflops": -1.0}), "result"),
            (json!({"backend": "cuda", "outputDigest": "AB".repeat(32)}), "result"),
            (json!({"backend": "cuda", "chunkCommitments": ["00".repeat(31)]}), "result"),
            (json!({"backend": "cuda", "chunkCommitments": vec!["00".repeat(32); 1025]}), "result"),
        ] {
            let body = json!({"seq": 2, "state": "Succeeded", "exitCode": 0, "result": result});
            let reply = report(&app, &token, &id, &body).await;
            assert_eq!(reply.status, 422, "{}", reply.body);
            assert_eq!(reply.body["error"]["field"], field, "{}", reply.body);
        }
        // An unknown backend is not a result the hub understands either.
        let body = json!({"seq": 2, "state": "Succeeded", "result": {"backend": "abacus"}});
        let reply = report(&app, &token, &id, &body).await;
        assert_eq!(reply.status, 422, "{}", reply.body);
        assert_eq!(reply.body["error"]["field"], "result", "{}", reply.body);
        let shown = get_job(&app, &key, &job).await;
        assert_eq!(shown["status"]["phase"], "Running", "nothing was applied: {shown}");
        assert!(shown.get("results").is_none(), "{shown}");
    }
}
