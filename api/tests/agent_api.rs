//! `/v1/agent/...` as a node agent sees it: registration and its validation, tokens, the protocol
//! version, the assignment long-poll, status reports and what they do to jobs, heartbeats that stop
//! work, and nodes that fall silent. Every test runs on SQLite and on PostgreSQL.

mod common;

use std::time::{Duration, Instant};

use api::HubSettings;
use common::*;
use serde_json::{Value, json};

/// A sleep job of `workers` workers with one GPU each.
fn gang_spec(workers: u32) -> Value {
    let mut spec = sleep_spec(60);
    spec["resources"]["workers"] = json!(workers);
    spec
}

/// The `free` GPU count of a node as the API shows it.
async fn free_gpus(app: &axum::Router, key: &str, node: &str) -> u64 {
    get_node(app, key, node).await["status"]["free"]
        .as_u64()
        .expect("a free count")
}

/// The node's `Ready` condition.
fn ready_condition(node: &Value) -> Value {
    node["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .unwrap_or_else(|| panic!("no Ready condition: {node}"))
        .clone()
}

/// The ids a heartbeat answer tells the agent to stop.
fn stop_list(reply: &Reply) -> Vec<String> {
    assert_eq!(reply.status, 200, "heartbeat: {}", reply.body);
    reply.body["stop"]
        .as_array()
        .unwrap_or_else(|| panic!("no stop list: {}", reply.body))
        .iter()
        .map(|id| id.as_str().unwrap().to_string())
        .collect()
}

backend_tests! {
    async fn a_registration_with_a_bad_field_is_refused_naming_it(store: Store) {
        let (app, _, key) = app(&store, "team-a").await;
        let edit = |change: fn(&mut Value)| {
            let mut reg = registration("gn-a", "eu-west", 2, "1.00");
            change(&mut reg);
            reg
        };
        let cases: [(&str, Value, &str); 5] = [
            ("a name that is not a DNS label", edit(|r| r["name"] = json!("Bad_Name")), "name"),
            ("the same GPU twice", edit(|r| r["gpus"][1]["uuid"] = r["gpus"][0]["uuid"].clone()), "gpus[1].uuid"),
            ("no GPUs", edit(|r| r["gpus"] = json!([])), "gpus"),
            ("a bad compute capability", edit(|r| r["gpus"][0]["computeCapability"] = json!("nine")), "gpus[0].computeCapability"),
            ("no capabilities", edit(|r| r["capabilities"] = json!([])), "capabilities"),
        ];
        for (what, reg, field) in cases {
            let reply = send(&app, "POST", "/v1/agent/register", None, Some("application/json"), reg.to_string()).await;
            assert_eq!(reply.status, 422, "{what}: {}", reply.body);
            assert_eq!(error_code(&reply), "invalid_field", "{what}: {}", reply.body);
            assert_eq!(reply.body["error"]["field"], field, "{what}: {}", reply.body);
        }
        let nodes = send(&app, "GET", "/v1/nodes", Some(&key), None, "").await;
        assert_eq!(nodes.body["items"], json!([]), "a refused registration leaves no node: {}", nodes.body);
    }

    async fn registering_again_keeps_one_node_and_rotates_its_token(store: Store) {
        let (app, _, key) = app(&store, "team-a").await;
        let old = register(&app, &registration("gn-a", "eu-west", 2, "1.00")).await;
        assert_eq!(heartbeat(&app, &old, &[]).await.status, 200);

        let new = register(&app, &registration("gn-a", "eu-west", 2, "1.20")).await;
        assert_ne!(new, old, "a new registration issues a new token");
        let stale = heartbeat(&app, &old, &[]).await;
        assert_eq!(stale.status, 401, "the superseded token no longer works: {}", stale.body);
        assert_eq!(error_code(&stale), "unauthenticated");
        assert_eq!(heartbeat(&app, &new, &[]).await.status, 200, "the new token works");

        let nodes = send(&app, "GET", "/v1/nodes", Some(&key), None, "").await;
        let items = nodes.body["items"].as_array().unwrap();
        assert_eq!(items.len(), 1, "one node per name: {}", nodes.body);
        assert_eq!(items[0]["spec"]["pricePerGpuHour"], "1.20", "the node shows its latest registration");
    }

    async fn every_agent_route_needs_the_nodes_token(store: Store) {
        let (app, state, key) = app(&store, "team-a").await;
        let token = register(&app, &registration("gn-a", "eu-west", 1, "1.00")).await;
        submit(&app, &key, &sleep_spec(1)).await;
        api::scheduling::schedule_once(&state).await.unwrap();
        let assignment = poll(&app, &token).await[0]["id"].as_str().unwrap().to_string();

        let routes = [
            ("POST", "/v1/agent/heartbeat".to_string(), json!({"assignments": []})),
            ("GET", "/v1/agent/assignments?waitSeconds=0".to_string(), Value::Null),
            ("POST", format!("/v1/agent/assignments/{assignment}/status"), json!({"seq": 1, "state": "Running"})),
        ];
        for (method, uri, body) in routes {
            // A tenant's API key is not a node token either.
            for credentials in [None, Some("agt_not-a-token"), Some(key.as_str())] {
                let reply = send(&app, method, &uri, credentials, Some("application/json"), body.to_string()).await;
                assert_eq!(reply.status, 401, "{method} {uri} with {credentials:?}: {}", reply.body);
                assert_eq!(error_code(&reply), "unauthenticated", "{method} {uri}: {}", reply.body);
            }
        }
        let items = poll(&app, &token).await;
        assert_eq!(items[0]["id"], assignment.as_str(), "nothing an unauthenticated call did changed the assignment");
        assert_eq!(store.job_assignments(items[0]["job"].as_str().unwrap(), 1).await.unwrap()[0].state, api::lifecycle::AssignmentPhase::Assigned);
    }

    async fn a_token_acts_only_for_its_own_node(store: Store) {
        let (app, state, key) = app(&store, "team-a").await;
        let token_a = register(&app, &registration("gn-a", "eu-west", 1, "1.00")).await;
        let job = submit(&app, &key, &sleep_spec(1)).await;
        assert_eq!(api::scheduling::schedule_once(&state).await.unwrap(), 1);
        let token_b = register(&app, &registration("gn-b", "eu-west", 1, "1.00")).await;
        let assignment = assignment_of(&poll(&app, &token_a).await, &job);

        for state in ["Running", "Failed", "Succeeded"] {
            let reply = report(&app, &token_b, &assignment, state, Some(1), None).await;
            assert_eq!(reply.status, 404, "node B reporting {state} on A's assignment: {}", reply.body);
            assert_eq!(error_code(&reply), "not_found");
        }
        assert!(poll(&app, &token_b).await.is_empty(), "B is offered none of A's work");
        assert_eq!(stop_list(&heartbeat(&app, &token_b, &[&assignment]).await), [assignment.as_str()], "B is told to stop what is not its own");

        assert_eq!(assignment_of(&poll(&app, &token_a).await, &job), assignment, "A still holds its assignment");
        let row = &store.job_assignments(&job, 1).await.unwrap()[0];
        assert_eq!(row.state, api::lifecycle::AssignmentPhase::Assigned, "B's calls left A's assignment as it was");
        assert_eq!(get_job(&app, &key, &job).await["status"]["phase"], "Scheduled");
        assert_eq!(free_gpus(&app, &key, "gn-a").await, 0, "A's GPU is still held");
    }

    async fn agents_must_speak_a_protocol_version_the_hub_knows(store: Store) {
        let (app, _, key) = app(&store, "team-a").await;
        let reg = signed(&app, &registration("gn-a", "eu-west", 1, "1.00")).await.to_string();
        let json = ("content-type", "application/json");

        let old = send_with(&app, "POST", "/v1/agent/register", &[json, ("agora-protocol-version", "v0")], reg.clone()).await;
        assert_eq!(old.status, 400, "{}", old.body);
        assert_eq!(error_code(&old), "unsupported_protocol_version", "{}", old.body);
        assert_eq!(old.body["error"]["field"], "agora-protocol-version");
        let nodes = send(&app, "GET", "/v1/nodes", Some(&key), None, "").await;
        assert_eq!(nodes.body["items"], json!([]), "an agent of another version registers nothing");

        let current = send_with(&app, "POST", "/v1/agent/register", &[json, ("agora-protocol-version", "v1")], reg).await;
        assert_eq!(current.status, 200, "{}", current.body);
        let authorization = format!("Bearer {}", current.body["token"].as_str().unwrap());
        let auth = ("authorization", authorization.as_str());
        for version in ["v0", "v2"] {
            let reply = send_with(&app, "POST", "/v1/agent/heartbeat", &[json, auth, ("agora-protocol-version", version)], "{}").await;
            assert_eq!(reply.status, 400, "heartbeat as {version}: {}", reply.body);
            assert_eq!(error_code(&reply), "unsupported_protocol_version");
        }
        let reply = send_with(&app, "POST", "/v1/agent/heartbeat", &[json, auth, ("agora-protocol-version", "v1")], "{}").await;
        assert_eq!(reply.status, 200, "{}", reply.body);
    }

    async fn the_assignment_long_poll_answers_when_work_arrives(store: Store) {
        let (app, state, key) = app(&store, "team-a").await;
        let token = register(&app, &registration("gn-a", "eu-west", 1, "1.00")).await;

        let idle = send(&app, "GET", "/v1/agent/assignments?waitSeconds=0", Some(&token), None, "").await;
        assert_eq!(idle.status, 200, "{}", idle.body);
        assert_eq!(idle.body["items"], json!([]), "nothing to do, answered at once");

        // Wait longer than the guard below: only the hub's wake-up can make the poll answer in time.
        let waiting = {
            let (app, token) = (app.clone(), token.clone());
            tokio::spawn(async move {
                send(&app, "GET", "/v1/agent/assignments?waitSeconds=30", Some(&token), None, "").await
            })
        };
        let sessions = &state.sessions;
        eventually("the long-poll to wait for work", Duration::from_secs(10), move || async move {
            (sessions.waiting_polls("gn-a") > 0).then_some(())
        })
        .await;
        let job = submit(&app, &key, &sleep_spec(1)).await;
        assert_eq!(api::scheduling::schedule_once(&state).await.unwrap(), 1);
        let woken = tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("the long-poll answers when work arrives, not at the end of its wait")
            .unwrap();
        assert_eq!(woken.status, 200, "{}", woken.body);
        let items = woken.body["items"].as_array().unwrap();
        assert_eq!(items.len(), 1, "{}", woken.body);
        assert_eq!(items[0]["job"], job.as_str());
        assert_eq!(items[0]["workload"]["builtin"]["sleep"]["durationSeconds"], 1, "the assignment says what to run");
        assert_eq!(items[0]["gpus"], json!(["GPU-SIM-gn-a-0"]));
        let assignment = items[0]["id"].as_str().unwrap().to_string();

        let running = report(&app, &token, &assignment, "Running", None, None).await;
        assert_eq!(running.status, 204, "{}", running.body);
        let started = Instant::now();
        let later = send(&app, "GET", "/v1/agent/assignments?waitSeconds=1", Some(&token), None, "").await;
        assert_eq!(later.status, 200, "{}", later.body);
        assert_eq!(later.body["items"][0]["id"], assignment.as_str(), "a poll lists running work too: {}", later.body);
        assert!(
            started.elapsed() >= Duration::from_secs(1),
            "acknowledged work does not end the wait early (answered after {:?})",
            started.elapsed()
        );
    }

    async fn status_reports_drive_a_job_to_success(store: Store) {
        let (app, state, key) = app(&store, "team-a").await;
        let token = register(&app, &registration("gn-a", "eu-west", 1, "1.00")).await;
        let (job, assignment) = run_to_success(&app, &state, &key, &token).await;

        let body = get_job(&app, &key, &job).await;
        let status = &body["status"];
        assert_eq!(status["phase"], "Succeeded", "{body}");
        assert!(status["startTime"].is_string() && status["completionTime"].is_string(), "{body}");
        let worker = &status["placement"]["workers"][0];
        assert_eq!((&worker["node"], &worker["region"]), (&json!("gn-a"), &json!("eu-west")), "{body}");
        assert_eq!(worker["gpus"], json!(["GPU-SIM-gn-a-0"]), "{body}");
        let metered: u64 = store.job_assignments(&job, 1).await.unwrap().iter().map(|a| a.gpu_millis()).sum();
        assert_eq!(status["usage"]["gpuSeconds"], metered / 1000, "usage is the metered GPU time: {body}");
        assert!(status["usage"]["cost"].is_string(), "{body}");
        assert_eq!(free_gpus(&app, &key, "gn-a").await, 1, "a finished worker frees its GPU");

        let repeat = report(&app, &token, &assignment, "Succeeded", Some(0), None).await;
        assert_eq!(repeat.status, 204, "repeating a final report is harmless: {}", repeat.body);
        let contradiction = report(&app, &token, &assignment, "Failed", Some(1), Some("late")).await;
        assert_eq!(contradiction.status, 409, "{}", contradiction.body);
        assert_eq!(error_code(&contradiction), "assignment_final", "{}", contradiction.body);
        assert_eq!(get_job(&app, &key, &job).await["status"]["phase"], "Succeeded", "the contradiction changed nothing");

        let unknown = report(&app, &token, "asg-00000000000deadbeef-1-0", "Running", None, None).await;
        assert_eq!(unknown.status, 404, "{}", unknown.body);
        assert_eq!(error_code(&unknown), "not_found");
    }

    async fn workers_reporting_at_the_same_moment_still_move_their_job_on(store: Store) {
        let (app, state, key) = app(&store, "team-a").await;
        let token = register(&app, &registration("gn-a", "eu-west", 2, "1.00")).await;
        // Gang workers finish together; the race is narrow, so try it a few times.
        for round in 0..5 {
            let job = submit(&app, &key, &gang_spec(2)).await;
            assert_eq!(api::scheduling::schedule_once(&state).await.unwrap(), 1);
            let ids: Vec<String> = poll(&app, &token)
                .await
                .iter()
                .filter(|a| a["job"] == job.as_str())
                .map(|a| a["id"].as_str().unwrap().to_string())
                .collect();
            for (reported, phase) in [("Running", "Running"), ("Succeeded", "Succeeded")] {
                let reports: Vec<_> = ids
                    .iter()
                    .map(|id| {
                        let (app, token, id) = (app.clone(), token.clone(), id.clone());
                        tokio::spawn(async move { report(&app, &token, &id, reported, Some(0), None).await })
                    })
                    .collect();
                for handle in reports {
                    let reply = handle.await.unwrap();
                    assert_eq!(reply.status, 204, "round {round}, {reported}: {}", reply.body);
                }
                let body = get_job(&app, &key, &job).await;
                assert_eq!(body["status"]["phase"], phase, "round {round}: both workers reported {reported}: {body}");
            }
        }
    }

    async fn a_failed_worker_fails_the_job_and_stops_the_others(store: Store) {
        let (app, state, key) = app(&store, "team-a").await;
        let token = register(&app, &registration("gn-a", "eu-west", 2, "1.00")).await;
        let job = submit(&app, &key, &gang_spec(2)).await;
        assert_eq!(api::scheduling::schedule_once(&state).await.unwrap(), 1);
        let items = poll(&app, &token).await;
        let ids: Vec<String> = items.iter().map(|a| a["id"].as_str().unwrap().to_string()).collect();
        assert_eq!(ids.len(), 2, "two workers: {items:?}");
        let rank = |r: u64| ids[items.iter().position(|a| a["rank"] == r).unwrap()].clone();
        let (failing, other) = (rank(0), rank(1));
        for id in &ids {
            assert_eq!(report(&app, &token, id, "Running", None, None).await.status, 204);
        }
        assert_eq!(get_job(&app, &key, &job).await["status"]["phase"], "Running");

        let failed = report(&app, &token, &failing, "Failed", Some(3), Some("CUDA error: out of memory")).await;
        assert_eq!(failed.status, 204, "{}", failed.body);
        let body = get_job(&app, &key, &job).await;
        assert_eq!(body["status"]["phase"], "Failed", "{body}");
        assert_eq!(body["status"]["reason"], "WorkerFailed", "{body}");
        let message = body["status"]["message"].as_str().unwrap();
        assert!(message.contains("CUDA error: out of memory") && message.contains("exit code 3"), "{message}");

        let stop = stop_list(&heartbeat(&app, &token, &[&failing, &other]).await);
        assert!(stop.contains(&other), "the surviving worker is told to stop: {stop:?}");
        assert!(poll(&app, &token).await.is_empty(), "no worker of a failed job is still wanted");
        assert_eq!(report(&app, &token, &other, "Stopped", None, None).await.status, 204);
        assert_eq!(free_gpus(&app, &key, "gn-a").await, 2, "both GPUs are free again");
        assert_eq!(get_job(&app, &key, &job).await["status"]["phase"], "Failed", "stopping the rest keeps the failure");
    }

    async fn cancelling_a_running_job_stops_its_worker_and_frees_its_gpus(store: Store) {
        // A short heartbeat interval makes the hub settle assignments an agent dropped quickly.
        let settings = HubSettings { heartbeat_interval: Duration::from_millis(50), ..HubSettings::default() };
        let (app, state, key) = app_with(&store, "team-a", settings).await;
        let token = register(&app, &registration("gn-a", "eu-west", 2, "1.00")).await;
        let start = |spec: Value| {
            let (app, state, key, token) = (app.clone(), state.clone(), key.clone(), token.clone());
            async move {
                let job = submit(&app, &key, &spec).await;
                assert_eq!(api::scheduling::schedule_once(&state).await.unwrap(), 1);
                let assignment = assignment_of(&poll(&app, &token).await, &job);
                assert_eq!(report(&app, &token, &assignment, "Running", None, None).await.status, 204);
                let cancelled = send(&app, "DELETE", &format!("/v1/jobs/{job}"), Some(&key), None, "").await;
                assert_eq!(cancelled.status, 200, "{}", cancelled.body);
                assert_eq!(cancelled.body["status"]["phase"], "Cancelled", "{}", cancelled.body);
                (job, assignment)
            }
        };

        // The agent still runs the worker: the heartbeat tells it to stop; its report frees the GPU.
        let (job, assignment) = start(sleep_spec(60)).await;
        assert_eq!(stop_list(&heartbeat(&app, &token, &[&assignment]).await), [assignment.as_str()]);
        assert_eq!(free_gpus(&app, &key, "gn-a").await, 1, "the GPU stays held until the worker stopped");
        let stopped = report(&app, &token, &assignment, "Stopped", None, None).await;
        assert_eq!(stopped.status, 204, "{}", stopped.body);
        assert_eq!(free_gpus(&app, &key, "gn-a").await, 2, "a stopped worker frees its GPU");
        assert_eq!(get_job(&app, &key, &job).await["status"]["phase"], "Cancelled");

        // The agent already dropped the worker: a heartbeat without it settles it.
        let (job, assignment) = start(sleep_spec(61)).await;
        assert_eq!(free_gpus(&app, &key, "gn-a").await, 1);
        let (app_ref, key_ref, token_ref) = (&app, &key, &token);
        eventually("a heartbeat without the stopping worker to free its GPU", Duration::from_secs(10), move || async move {
            assert_eq!(stop_list(&heartbeat(app_ref, token_ref, &[]).await), Vec::<String>::new());
            (free_gpus(app_ref, key_ref, "gn-a").await == 2).then_some(())
        })
        .await;
        let late = report(&app, &token, &assignment, "Running", None, None).await;
        assert_eq!(late.status, 409, "the worker was recorded as stopped: {}", late.body);
        assert_eq!(get_job(&app, &key, &job).await["status"]["phase"], "Cancelled");
    }

    async fn a_worker_the_agent_no_longer_holds_fails_its_job(store: Store) {
        let settings = HubSettings { heartbeat_interval: Duration::from_millis(50), ..HubSettings::default() };
        let (app, state, key) = app_with(&store, "team-a", settings).await;
        let token = register(&app, &registration("gn-a", "eu-west", 1, "1.00")).await;
        let job = submit(&app, &key, &sleep_spec(60)).await;
        assert_eq!(api::scheduling::schedule_once(&state).await.unwrap(), 1);
        let assignment = assignment_of(&poll(&app, &token).await, &job);
        assert_eq!(report(&app, &token, &assignment, "Running", None, None).await.status, 204);

        let (app_ref, key_ref, token_ref, job_ref) = (&app, &key, &token, &job);
        let body = eventually("the lost worker to fail its job", Duration::from_secs(10), move || async move {
            heartbeat(app_ref, token_ref, &[]).await;
            let body = get_job(app_ref, key_ref, job_ref).await;
            (body["status"]["phase"] == "Failed").then_some(body)
        })
        .await;
        assert_eq!(body["status"]["reason"], "WorkerFailed", "{body}");
        assert!(body["status"]["message"].as_str().unwrap().contains("no longer runs this worker"), "{body}");
        assert_eq!(free_gpus(&app, &key, "gn-a").await, 1, "the lost worker's GPU is free again");
    }

    async fn a_heartbeat_naming_an_unknown_assignment_is_told_to_stop_it(store: Store) {
        let (app, _, _) = app(&store, "team-a").await;
        let token = register(&app, &registration("gn-a", "eu-west", 1, "1.00")).await;
        let stray = "asg-00000000000deadbeef-1-0";
        assert_eq!(stop_list(&heartbeat(&app, &token, &[stray]).await), [stray]);
    }

    async fn a_node_that_stops_sending_heartbeats_is_not_ready_and_gets_no_work(store: Store) {
        let settings = HubSettings { node_timeout: Duration::from_secs(1), ..HubSettings::default() };
        let (app, state, key) = app_with(&store, "team-a", settings).await;
        register(&app, &registration("gn-a", "eu-west", 2, "1.00")).await;

        let (app_ref, key_ref) = (&app, &key);
        let node = eventually("the silent node to turn NotReady", Duration::from_secs(10), move || async move {
            let node = get_node(app_ref, key_ref, "gn-a").await;
            (ready_condition(&node)["status"] == "False").then_some(node)
        })
        .await;
        assert_eq!(ready_condition(&node)["reason"], "HeartbeatsMissed", "{node}");
        assert_eq!(node["status"]["free"], 0, "a NotReady node offers no GPUs: {node}");

        let job = submit(&app, &key, &sleep_spec(1)).await;
        assert_eq!(api::scheduling::schedule_once(&state).await.unwrap(), 0, "nothing is placed on a NotReady node");
        let body = get_job(&app, &key, &job).await;
        assert_eq!(body["status"]["phase"], "Pending", "{body}");
        assert!(body["status"]["message"].as_str().unwrap().contains("1 not ready"), "{body}");
    }
}
