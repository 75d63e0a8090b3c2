//! Network measurements through the agent protocol (see `api::network`): probe addresses at
//! registration, probe targets in heartbeat answers, measurements and telemetry in heartbeats,
//! written by the flush (never by the heartbeat itself) and read back after a restart, and the
//! scheduler placing on what was measured. Every test runs on SQLite and on PostgreSQL.

mod common;

use api::{
    HubSettings,
    store::{Store, probes::ProbeNode},
};
use common::*;
use serde_json::{Value, json};

/// A registration with a probe address.
fn probed(name: &str, region: &str, gpus: usize, price: &str) -> Value {
    let mut reg = registration(name, region, gpus, price);
    reg["probeAddress"] = json!(format!("{name}.probe.example:7070"));
    reg
}

/// Sends a heartbeat with `extra` merged into an empty one (`network`, `telemetry`).
async fn beat(app: &axum::Router, token: &str, extra: Value) -> Reply {
    let mut body = json!({"assignments": []});
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    send_heartbeat(app, token, &body).await
}

/// The probe targets of a heartbeat answer, as (node, address).
fn targets(reply: &Reply) -> Vec<(String, String)> {
    assert_eq!(reply.status, 200, "heartbeat: {}", reply.body);
    reply.body["probeTargets"]
        .as_array()
        .map(|targets| {
            targets
                .iter()
                .map(|t| {
                    (
                        t["node"].as_str().unwrap().to_string(),
                        t["address"].as_str().unwrap().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The stored probe address of every live node, by name.
async fn addresses(store: &Store) -> Vec<(String, Option<String>)> {
    let mut nodes: Vec<(String, Option<String>)> = store
        .probe_nodes(0)
        .await
        .unwrap()
        .into_iter()
        .map(|ProbeNode { name, address, .. }| (name, address))
        .collect();
    nodes.sort();
    nodes
}

/// RTT reports to each (peer, ms).
fn peers(results: &[(&str, f64)]) -> Value {
    let peers: Vec<Value> = results
        .iter()
        .map(|(node, ms)| json!({"node": node, "rttMs": ms}))
        .collect();
    json!({"network": {"peers": peers}})
}

/// A job of one GPU for users in `user_region`, within `max_latency_ms` when given.
fn near(user_region: &str, max_latency_ms: Option<u32>) -> Value {
    let mut spec = sleep_spec(600);
    spec["placement"] = json!({"userRegion": user_region});
    if let Some(ms) = max_latency_ms {
        spec["placement"]["maxLatencyMs"] = json!(ms);
    }
    spec
}

/// The node a job was placed on, if it was.
async fn placed_on(app: &axum::Router, key: &str, job: &str) -> Option<String> {
    let job = get_job(app, key, job).await;
    job["status"]["placement"]["workers"][0]["node"]
        .as_str()
        .map(str::to_string)
}

backend_tests! {
    async fn a_registration_may_name_a_probe_address_and_registering_again_without_one_withdraws_it(store: Store) {
        let (app, _, _) = app(&store, "team-a").await;
        register(&app, &probed("gn-a", "eu-west", 1, "1.00")).await;
        register(&app, &registration("gn-b", "eu-west", 1, "1.00")).await;
        let mut v6 = registration("gn-c", "eu-west", 1, "1.00");
        v6["probeAddress"] = json!("[2001:db8::7]:7070");
        register(&app, &v6).await;
        assert_eq!(
            addresses(&store).await,
            [
                ("gn-a".to_string(), Some("gn-a.probe.example:7070".to_string())),
                ("gn-b".to_string(), None),
                ("gn-c".to_string(), Some("[2001:db8::7]:7070".to_string())),
            ]
        );

        register(&app, &registration("gn-a", "eu-west", 1, "1.00")).await;
        assert_eq!(addresses(&store).await[0], ("gn-a".to_string(), None));

        for bad in ["gn-d", "gn-d:0", "0.0.0.0:7070", "999.1.1.1:7070", "gn d:7070"] {
            let mut reg = registration("gn-d", "eu-west", 1, "1.00");
            reg["probeAddress"] = json!(bad);
            let reply = send_registration(&app, &signed(&app, &reg).await).await;
            assert_eq!(reply.status, 422, "{bad}: {}", reply.body);
            assert_eq!(reply.body["error"]["field"], "probeAddress", "{bad}: {}", reply.body);
        }
        assert_eq!(addresses(&store).await.len(), 3, "refused registrations add no node");
    }

    async fn a_heartbeat_answer_names_at_most_k_peers_with_probe_addresses_never_the_node_itself(store: Store) {
        let settings = HubSettings { probe_targets: 2, ..HubSettings::default() };
        let (app, state, _) = app_with(&store, "team-a", settings).await;
        let mut tokens = Vec::new();
        for (name, region, address) in [
            ("gn-a", "eu-west", true),
            ("gn-b", "eu-west", true),
            ("gn-c", "eu-west", true),
            ("gn-d", "eu-west", false),
            ("gn-e", "us-east", true),
            ("gn-f", "us-east", false),
        ] {
            let reg = if address { probed(name, region, 1, "1.00") } else { registration(name, region, 1, "1.00") };
            tokens.push((name, register(&app, &reg).await));
        }
        // Before the first read of the fleet there is nothing to name.
        assert!(targets(&beat(&app, &tokens[0].1, json!({})).await).is_empty());
        state.sessions.network.refresh(&store).await.unwrap();

        for (name, token) in &tokens {
            let mut named = Vec::new();
            for _ in 0..3 {
                let answer = targets(&beat(&app, token, json!({})).await);
                assert!(answer.len() <= 2, "{name}: {answer:?}");
                named.extend(answer);
            }
            named.sort();
            named.dedup();
            let expected: Vec<(String, String)> = ["gn-a", "gn-b", "gn-c", "gn-e"]
                .iter()
                .filter(|peer| *peer != name)
                .map(|peer| (peer.to_string(), format!("{peer}.probe.example:7070")))
                .collect();
            // Three heartbeats of two cover the whole pool (at most three peers here).
            assert_eq!(named, expected, "{name}");
        }

        // K = 0: no probing.
        let settings = HubSettings { probe_targets: 0, ..HubSettings::default() };
        let (off, off_state, _) = app_with(&store, "team-a", settings).await;
        off_state.sessions.network.refresh(&store).await.unwrap();
        let reply = beat(&off, &tokens[0].1, json!({})).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert!(reply.body.get("probeTargets").is_none(), "{}", reply.body);
    }

    async fn invalid_measurements_are_refused_naming_the_field_and_change_nothing(store: Store) {
        let (app, state, _) = app(&store, "team-a").await;
        let token = register(&app, &probed("gn-a", "eu-west", 2, "1.00")).await;
        register(&app, &probed("gn-b", "eu-west", 1, "1.00")).await;
        state.sessions.network.refresh(&store).await.unwrap();
        let registered = store.get_node("gn-a").await.unwrap().unwrap().last_heartbeat;
        clock_passes(registered + 5).await;

        let many: Vec<(&str, f64)> = vec![("gn-b", 1.0); 65];
        let gpu = |extra: Value| {
            let mut gpu = json!({"uuid": "GPU-SIM-gn-a-0", "utilizationPercent": 50});
            if let (Some(gpu), Some(extra)) = (gpu.as_object_mut(), extra.as_object()) {
                gpu.extend(extra.clone());
            }
            gpu
        };
        let cases: Vec<(&str, Value, &str)> = vec![
            ("a negative peer RTT", peers(&[("gn-b", 3.0), ("gn-b", 3.0), ("gn-b", 3.0), ("gn-b", -1.0)]), "network.peers[3].rttMs"),
            ("a peer RTT over a minute", peers(&[("gn-b", 60_001.0)]), "network.peers[0].rttMs"),
            ("a negative hub RTT", json!({"network": {"hubRttMs": -0.5}}), "network.hubRttMs"),
            ("an absurd uplink", json!({"network": {"uplinkMbps": 2.0e7}}), "network.uplinkMbps"),
            ("a negative downlink", json!({"network": {"downlinkMbps": -1}}), "network.downlinkMbps"),
            ("too many peers", peers(&many), "network.peers"),
            ("a peer that is no node name", peers(&[("Not_A_Node", 3.0)]), "network.peers[0].node"),
            ("an RTT that is not a number", json!({"network": {"peers": [{"node": "gn-b", "rttMs": "3"}]}}), "network.peers[0].rttMs"),
            ("the same GPU twice", json!({"telemetry": {"gpus": [gpu(json!({})), gpu(json!({}))]}}), "telemetry.gpus[1].uuid"),
            ("a utilization over 100 %", json!({"telemetry": {"gpus": [gpu(json!({"utilizationPercent": 101}))]}}), "telemetry.gpus[0].utilizationPercent"),
            ("a temperature below any GPU's", json!({"telemetry": {"gpus": [gpu(json!({"temperatureC": -100}))]}}), "telemetry.gpus[0].temperatureC"),
            ("a negative power draw", json!({"telemetry": {"gpus": [gpu(json!({"powerWatts": -3.5}))]}}), "telemetry.gpus[0].powerWatts"),
        ];
        for (what, extra, field) in cases {
            let reply = beat(&app, &token, extra).await;
            assert_eq!(reply.status, 422, "{what}: {}", reply.body);
            assert_eq!(error_code(&reply), "invalid_field", "{what}: {}", reply.body);
            assert_eq!(reply.body["error"]["field"], field, "{what}: {}", reply.body);
        }
        let unknown = beat(&app, &token, json!({"network": {"jitterMs": 3}})).await;
        assert_eq!(unknown.status, 422, "an unknown field: {}", unknown.body);

        state.sessions.network.flush(&store).await.unwrap();
        state.sessions.flush(&store).await.unwrap();
        assert_eq!(store.rtts_since(0).await.unwrap(), []);
        assert!(store.links_of(&["gn-a"]).await.unwrap().is_empty());
        assert_eq!(store.get_node("gn-a").await.unwrap().unwrap().last_heartbeat, registered, "no heartbeat recorded");
        let key = add_key(&store, "team-a").await;
        assert!(get_node(&app, &key, "gn-a").await.get("telemetry").is_none());
    }

    async fn measurements_wait_for_the_flush_and_survive_a_restart(store: Store) {
        let (app, state, key) = app(&store, "team-a").await;
        let a = register(&app, &probed("gn-a", "eu-west", 2, "1.00")).await;
        register(&app, &probed("gn-b", "eu-west", 1, "1.00")).await;
        register(&app, &probed("gn-c", "us-east", 1, "1.00")).await;
        state.sessions.network.refresh(&store).await.unwrap();

        let report = json!({
            "network": {
                "hubRttMs": 12.5, "uplinkMbps": 940.2, "downlinkMbps": 1800,
                "peers": [
                    {"node": "gn-b", "rttMs": 1.25},
                    {"node": "gn-c", "rttMs": 71.0},
                    // Ignored: not a node, and the node itself.
                    {"node": "gn-zz", "rttMs": 4.0},
                    {"node": "gn-a", "rttMs": 0.1}
                ]
            },
            "telemetry": {"gpus": [
                {"uuid": "GPU-SIM-gn-a-0", "utilizationPercent": 97, "memoryUsedMib": 61000,
                 "temperatureC": 71, "powerWatts": 612.5, "smClockMhz": 1980, "xidErrors": 0},
                {"uuid": "GPU-SIM-gn-a-1", "utilizationPercent": 0}
            ]}
        });
        assert_eq!(beat(&app, &a, report).await.status, 200);
        // The heartbeat wrote nothing of it: the flush does.
        assert_eq!(store.rtts_since(0).await.unwrap(), []);
        state.sessions.network.flush(&store).await.unwrap();
        let mut rtts: Vec<(String, String, i64)> = store
            .rtts_since(0)
            .await
            .unwrap()
            .into_iter()
            .map(|s| (s.from, s.to, s.rtt_us))
            .collect();
        rtts.sort();
        assert_eq!(
            rtts,
            [
                ("gn-a".to_string(), "gn-b".to_string(), 1_250),
                ("gn-a".to_string(), "gn-c".to_string(), 71_000),
            ]
        );

        let node = get_node(&app, &key, "gn-a").await;
        assert_eq!(node["status"]["network"], json!({"uplinkMbps": 940, "downlinkMbps": 1800}));
        assert_eq!(node["telemetry"]["hubRttMs"], 12.5);
        assert_eq!(node["telemetry"]["gpus"][0]["utilizationPercent"], 97);
        assert_eq!(node["telemetry"]["gpus"][0]["powerWatts"], 612.5);
        assert_eq!(node["telemetry"]["gpus"][1], json!({"uuid": "GPU-SIM-gn-a-1", "utilizationPercent": 0}));
        let listed = send(&app, "GET", "/v1/nodes", Some(&key), None, "").await;
        assert_eq!(listed.body["items"][0]["telemetry"]["hubRttMs"], 12.5, "{}", listed.body);
        assert!(listed.body["items"][1].get("telemetry").is_none(), "{}", listed.body);

        // A later report without bandwidth keeps the stored one.
        assert_eq!(beat(&app, &a, json!({"network": {"hubRttMs": 9.0}})).await.status, 200);
        state.sessions.network.flush(&store).await.unwrap();

        // A new hub on the same database: the measurements are there, the telemetry (memory) is not.
        let (restarted, _, _) = common::app(&store, "team-a").await;
        let node = get_node(&restarted, &key, "gn-a").await;
        assert_eq!(node["status"]["network"], json!({"uplinkMbps": 940, "downlinkMbps": 1800}));
        assert_eq!(node["telemetry"], json!({"hubRttMs": 9.0}));
        assert_eq!(store.rtts_since(0).await.unwrap().len(), 2);
    }

    async fn jobs_near_a_region_go_to_the_node_measured_close_to_it(store: Store) {
        let (app, state, key) = app(&store, "team-a").await;
        // Region x's own nodes are too expensive for the jobs; a and b are elsewhere, a cheaper.
        let x1 = register(&app, &probed("gn-x1", "x", 2, "9.00")).await;
        register(&app, &probed("gn-x2", "x", 2, "9.00")).await;
        let a = register(&app, &probed("gn-a", "y", 2, "1.00")).await;
        let b = register(&app, &probed("gn-b", "y", 2, "1.50")).await;
        state.sessions.network.refresh(&store).await.unwrap();

        // Without measurements, as before: nobody is known to be near x, and an unbounded job
        // goes to the cheapest node.
        let bounded = submit(&app, &key, &near("x", Some(20))).await;
        let unbounded = submit(&app, &key, &near("x", None)).await;
        assert_eq!(api::scheduling::schedule_once(&state).await.unwrap(), 1);
        assert_eq!(placed_on(&app, &key, &bounded).await, None);
        assert_eq!(placed_on(&app, &key, &unbounded).await.as_deref(), Some("gn-a"));

        // b measures 3 ms to x's nodes, a 80 ms; x's nodes 2 ms to each other.
        for (token, results) in [
            (&x1, vec![("gn-x2", 2.0)]),
            (&b, vec![("gn-x1", 3.0), ("gn-x2", 3.0)]),
            (&a, vec![("gn-x1", 80.0), ("gn-x2", 80.0)]),
        ] {
            let reply = beat(&app, token, peers(&results)).await;
            assert_eq!(reply.status, 200, "{}", reply.body);
        }
        state.sessions.network.flush(&store).await.unwrap();
        assert_eq!(api::scheduling::schedule_once(&state).await.unwrap(), 1);
        assert_eq!(placed_on(&app, &key, &bounded).await.as_deref(), Some("gn-b"));

        // A restarted hub rebuilds the same network from the store.
        let (restarted_app, restarted, _) = common::app(&store, "team-a").await;
        let again = submit(&restarted_app, &key, &near("x", Some(20))).await;
        assert_eq!(api::scheduling::schedule_once(&restarted).await.unwrap(), 1);
        assert_eq!(placed_on(&restarted_app, &key, &again).await.as_deref(), Some("gn-b"));
        // An unbounded job still goes to the cheaper a, which has a free GPU left.
        let cheap = submit(&restarted_app, &key, &near("x", None)).await;
        assert_eq!(api::scheduling::schedule_once(&restarted).await.unwrap(), 1);
        assert_eq!(placed_on(&restarted_app, &key, &cheap).await.as_deref(), Some("gn-a"));
    }
}
