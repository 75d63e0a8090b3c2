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
        // The hub judges the score against the claimed model itself (crate::honesty).
        let message = condition["message"].as_str().unwrap();
        assert!(message.starts_with("measured 3.0 TFLOPS FP32 per GPU, 6% of the H100-80GB's 51.0 TFLOPS peak"), "{node}");

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

    async fn a_node_far_below_its_claimed_model_is_priced_as_it_measures(store: Store) {
        let (app, state, key) = app(&store, "team-a").await;
        // Claims H100s at 2.00, benchmarks like an L4 (30.3 TFLOPS: 59% of the H100's 51),
        // without any finding of its own.
        let liar = register(&app, &registration("gn-liar", "eu-west", 1, "2.00")).await;
        let honest = register(&app, &registration("gn-honest", "eu-west", 1, "1.50")).await;
        for (token, tflops) in [(&liar, 30.3), (&honest, 45.0)] {
            let reply = send_heartbeat(&app, token, &with_benchmark(json!({"tflops": tflops, "measuredAt": 1_790_000_000_000i64}))).await;
            assert_eq!(reply.status, 200, "{}", reply.body);
        }
        let node = get_node(&app, &key, "gn-liar").await;
        let condition = healthy(&node);
        assert_eq!((condition["status"].as_str(), condition["reason"].as_str()), (Some("False"), Some("BenchmarkBelowModel")), "{node}");
        assert!(condition["message"].as_str().unwrap().contains("priced as measured"), "{node}");
        assert_eq!(healthy(&get_node(&app, &key, "gn-honest").await)["status"], "True", "88% of peak is honest");

        // It is offered at 2.00 × 30.3 / 51 = 1.188235…, floored to micro-units: cheaper than the
        // honest node's 1.50 now, so a job lands there at that price.
        let job = submit(&app, &key, &sleep_spec(60)).await;
        assert_eq!(api::scheduling::schedule_once(&state).await.unwrap(), 1);
        let placed = get_job(&app, &key, &job).await;
        assert_eq!(placed["status"]["placement"]["workers"][0]["node"], "gn-liar", "{placed:#}");
        assert_eq!(placed["status"]["placement"]["pricePerGpuHour"], "1.188235", "{placed:#}");
    }
}
