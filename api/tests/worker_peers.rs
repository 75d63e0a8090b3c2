//! Every worker of a multi-worker attempt learns who its peers are: the assignment's `peers` list
//! every worker of the attempt by rank, with the host of its node's `probeAddress` when the node
//! registered one (what the agent turns into `AGORA_PEERS`, docs/workers.md).

mod common;

use api::scheduling;
use common::*;
use serde_json::{Value, json};

backend_tests! {
    async fn each_worker_is_told_every_peer_of_its_attempt(store: Store) {
        let (app, state, key) = app(&store, "acme").await;
        // gn-a advertises where it answers probes; gn-b does not.
        let mut with_address = registration("gn-a", "eu-west", 1, "1.00");
        with_address["probeAddress"] = json!("[2001:db8::7]:7070");
        let tokens = [
            register(&app, &with_address).await,
            register(&app, &registration("gn-b", "eu-west", 1, "1.00")).await,
        ];
        let mut spec = sleep_spec(60);
        spec["resources"]["workers"] = json!(2);
        let job = submit(&app, &key, &spec).await;
        assert_eq!(scheduling::schedule_once(&state).await.unwrap(), 1);

        let mut offered: Vec<Value> = Vec::new();
        for token in &tokens {
            offered.extend(poll(&app, token).await.into_iter().filter(|a| a["job"] == job.as_str()));
        }
        assert_eq!(offered.len(), 2, "{offered:#?}");
        offered.sort_by_key(|a| a["rank"].as_u64());
        let node_of = |rank: usize| {
            // The node that was offered the worker of this rank.
            if holds_gpu(&offered[rank], "GPU-SIM-gn-a-0") { "gn-a" } else { "gn-b" }
        };
        let expected: Vec<Value> = (0..2)
            .map(|rank| {
                let node = node_of(rank);
                let address = if node == "gn-a" { json!("2001:db8::7") } else { Value::Null };
                json!({"rank": rank, "node": node, "address": address})
            })
            .collect();
        for assignment in &offered {
            assert_eq!(assignment["peers"], json!(expected), "{assignment:#}");
        }
    }
}

/// Whether the assignment holds the GPU `uuid`.
fn holds_gpu(assignment: &Value, uuid: &str) -> bool {
    assignment["gpus"]
        .as_array()
        .is_some_and(|gpus| gpus.iter().any(|g| g == uuid))
}
