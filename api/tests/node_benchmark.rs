//! A node's benchmark score through the agent protocol: a heartbeat that carries one is stored and
//! shown on the node, a finding turns the node's `Healthy` condition false with its message, and
//! heartbeats without one leave the stored score alone. Every test runs on SQLite and PostgreSQL.

mod common;

use common::*;
use serde_json::{Value, json};

fn healthy(node: &Value) -> Value {
    node["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Healthy")
        .cloned()
        .unwrap()
}

fn with_benchmark(benchmark: Value) -> Value {
    json!({"assignments": [], "benchmark": benchmark})
}

backend_tests! {
    async fn a_reported_score_shows_on_the_node_and_a_finding_on_its_health(store: Store) {
        let (app, _, key) = app(&store, "team-a").await;
        let token = register(&app, &registration("gn-a", "eu-west", 2, "1.00")).await;
        let fresh = get_node(&app, &key, "gn-a").await;
        assert!(fresh.get("benchmark").is_none(), "{fresh}");
        assert_eq!(healthy(&fresh)["status"], "True");

        let measured_at = 1_790_000_000_000i64;
        let reply = send_heartbeat(&app, &token, &with_benchmark(json!(
            {"tflops": 48.125, "measuredAt": measured_at}
        ))).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        let node = get_node(&app, &key, "gn-a").await;
        assert_eq!(node["benchmark"]["tflops"], 48.125, "{node}");
        assert_eq!(node["benchmark"]["time"], "2026-09-21T14:13:20Z", "{node}");
        assert!(node["benchmark"].get("finding").is_none(), "{node}");
        assert_eq!(node["status"]["benchmarkTflops"], 48.125, "{node}");
        assert_eq!(healthy(&node)["status"], "True");

        // A score far below the claimed model's: the node is not Healthy, and says why.
        let finding = "matmul benchmark measured 3.00 TFLOPS, below 10% of the H100-80GB's 51.2 TFLOPS FP32 peak";
        let reply = send_heartbeat(&app, &token, &with_benchmark(json!(
            {"tflops": 3.0, "measuredAt": measured_at + 1000, "finding": finding}
        ))).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        let node = get_node(&app, &key, "gn-a").await;
        assert_eq!(node["benchmark"]["tflops"], 3.0, "{node}");
        assert_eq!(node["benchmark"]["finding"], finding, "{node}");
        let condition = healthy(&node);
        assert_eq!(condition["status"], "False", "{node}");
        assert_eq!(condition["reason"], "BenchmarkBelowModel", "{node}");
        assert_eq!(condition["message"], finding, "{node}");

        // Heartbeats without a score change nothing of it.
        assert_eq!(heartbeat(&app, &token, &[]).await.status, 200);
        let after = get_node(&app, &key, "gn-a").await;
        assert_eq!(after["benchmark"], node["benchmark"], "{after}");
        assert_eq!(healthy(&after)["reason"], "BenchmarkBelowModel", "{after}");

        // A later score without a finding makes the node Healthy again.
        let reply = send_heartbeat(&app, &token, &with_benchmark(json!(
            {"tflops": 47.5, "measuredAt": measured_at + 2000}
        ))).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        let node = get_node(&app, &key, "gn-a").await;
        assert!(node["benchmark"].get("finding").is_none(), "{node}");
        assert_eq!(healthy(&node)["status"], "True", "{node}");
    }

    async fn an_invalid_score_is_refused_naming_the_field(store: Store) {
        let (app, _, key) = app(&store, "team-a").await;
        let token = register(&app, &registration("gn-a", "eu-west", 1, "1.00")).await;
        let cases = [
            (json!({"tflops": -1.0, "measuredAt": 1}), "benchmark.tflops"),
            (json!({"tflops": 1.0e9, "measuredAt": 1}), "benchmark.tflops"),
            (json!({"tflops": 1.0, "measuredAt": -5}), "benchmark.measuredAt"),
            (json!({"tflops": 1.0, "measuredAt": 1, "finding": "x".repeat(257)}), "benchmark.finding"),
        ];
        for (benchmark, field) in cases {
            let reply = send_heartbeat(&app, &token, &with_benchmark(benchmark.clone())).await;
            assert_eq!(reply.status, 422, "{benchmark}: {}", reply.body);
            assert_eq!(reply.body["error"]["field"], field, "{benchmark}: {}", reply.body);
        }
        assert!(get_node(&app, &key, "gn-a").await.get("benchmark").is_none());
    }
}
