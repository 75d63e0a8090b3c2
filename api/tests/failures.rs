//! What the hub does when things go wrong: a node that falls silent loses its work and the job is
//! re-placed elsewhere (never on the failed node) while `retry.maxAttempts` allows; a failed worker
//! is retried the same way; a lost node that comes back is told to stop and its late reports
//! change nothing; a job past its `maxRuntime` fails; checkpoints carry a retried attempt forward.
//! Every test runs on SQLite and on PostgreSQL, and drives the liveness sweep and the scheduler
//! directly instead of waiting for their loops.

mod common;

use std::time::Duration;

use api::{AppState, HubSettings, lifecycle::AssignmentPhase, liveness, scheduling};
use axum::Router;
use common::*;
use serde_json::{Value, json};

/// A node timeout short enough to wait out in a test, long enough that a node the test keeps
/// heartbeating never looks silent between two steps.
const NODE_TIMEOUT: Duration = Duration::from_millis(800);

/// Short timeouts: nodes fall silent quickly, and a heartbeat that leaves out a running worker
/// fails it after 2 × 100 ms (so the tests' heartbeats list what each node runs).
fn settings() -> HubSettings {
    HubSettings {
        node_timeout: NODE_TIMEOUT,
        heartbeat_interval: Duration::from_millis(100),
        ..HubSettings::default()
    }
}

/// A 60 s sleep job of `workers` one-GPU workers allowing `attempts` attempts.
fn retry_spec(workers: u32, attempts: u32) -> Value {
    let mut spec = sleep_spec(60);
    spec["resources"]["workers"] = json!(workers);
    spec["retry"] = json!({"maxAttempts": attempts});
    spec
}

/// A node of the test fleet: its name and token.
#[derive(Clone)]
struct Node {
    name: String,
    token: String,
}

/// Registers one-GPU nodes `names` (in eu-west, all at the same price).
async fn fleet(app: &Router, names: &[&str]) -> Vec<Node> {
    let mut nodes = Vec::new();
    for name in names {
        let token = register(app, &registration(name, "eu-west", 1, "1.00")).await;
        nodes.push(Node {
            name: name.to_string(),
            token,
        });
    }
    nodes
}

/// The node among `nodes` named `name`.
fn named<'a>(nodes: &'a [Node], name: &str) -> &'a Node {
    nodes
        .iter()
        .find(|n| n.name == name)
        .unwrap_or_else(|| panic!("no node {name}"))
}

/// The assignment of `job` a node is offered (asserting there is exactly one).
async fn offered(app: &Router, node: &Node, job: &str) -> Value {
    let items: Vec<Value> = poll(app, &node.token)
        .await
        .into_iter()
        .filter(|a| a["job"] == job)
        .collect();
    assert_eq!(
        items.len(),
        1,
        "{} is offered one worker of {job}: {items:?}",
        node.name
    );
    items[0].clone()
}

/// The node that holds `job`'s current attempt, and that attempt's assignment as offered to it.
async fn placed_on(app: &Router, nodes: &[Node], job: &str) -> (Node, Value) {
    let mut found = Vec::new();
    for node in nodes {
        for item in poll(app, &node.token).await {
            if item["job"] == job {
                found.push((node.clone(), item));
            }
        }
    }
    assert_eq!(
        found.len(),
        1,
        "one node runs the job: {:?}",
        found
            .iter()
            .map(|(n, a)| (&n.name, &a["id"]))
            .collect::<Vec<_>>()
    );
    found.remove(0)
}

/// The value of `name` in an assignment's `env`, if set.
fn env_of(assignment: &Value, name: &str) -> Option<String> {
    assignment["env"]
        .as_array()
        .unwrap_or_else(|| panic!("an env list: {assignment}"))
        .iter()
        .find(|v| v["name"] == name)
        .map(|v| v["value"].as_str().unwrap().to_string())
}

/// The id of an offered assignment.
fn id_of(assignment: &Value) -> String {
    assignment["id"].as_str().unwrap().to_string()
}

/// Reports `state` on `assignment`, asserting it was taken.
async fn reported(app: &Router, node: &Node, assignment: &str, state: &str) {
    let reply = report(app, &node.token, assignment, state, Some(0), None).await;
    assert_eq!(
        reply.status, 204,
        "{} reporting {state} on {assignment}: {}",
        node.name, reply.body
    );
}

/// Posts a checkpoint report, numbered as the assignment's next report ([`next_seq`]) unless
/// `body` has its own `seq`.
async fn checkpoint(app: &Router, token: &str, assignment: &str, mut body: Value) -> Reply {
    if let Some(fields) = body.as_object_mut() {
        fields
            .entry("seq")
            .or_insert_with(|| next_seq(assignment).into());
    }
    send_checkpoint(app, token, assignment, &body).await
}

/// A job's event log.
async fn events(app: &Router, key: &str, job: &str) -> Vec<Value> {
    let reply = send(
        app,
        "GET",
        &format!("/v1/jobs/{job}/events"),
        Some(key),
        None,
        "",
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.body["items"].as_array().unwrap().clone()
}

/// The event with `reason`, asserting there is one.
fn event<'a>(events: &'a [Value], reason: &str) -> &'a Value {
    events
        .iter()
        .find(|e| e["reason"] == reason)
        .unwrap_or_else(|| panic!("no {reason} event in {events:#?}"))
}

/// The ids a heartbeat answer tells the agent to stop.
fn stop_list(reply: &Reply) -> Vec<String> {
    assert_eq!(reply.status, 200, "heartbeat: {}", reply.body);
    reply.body["stop"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_str().unwrap().to_string())
        .collect()
}

/// Lets `silent` fall silent while the nodes in `alive` keep heartbeating (each listing what it
/// holds), sweeping until the sweep loses something; returns how many assignments it lost.
async fn lose(state: &AppState, app: &Router, alive: &[(&Node, Vec<String>)]) -> usize {
    eventually(
        "the silent node's work to be lost",
        Duration::from_secs(20),
        || async {
            for (node, held) in alive {
                let held: Vec<&str> = held.iter().map(String::as_str).collect();
                assert_eq!(heartbeat(app, &node.token, &held).await.status, 200);
            }
            let sweep = liveness::sweep_once(state).await.unwrap();
            (sweep.lost > 0).then_some(sweep.lost)
        },
    )
    .await
}

/// Heartbeats from every node in `nodes` (holding nothing), then one scheduling cycle.
async fn schedule_with(state: &AppState, app: &Router, nodes: &[&Node]) -> usize {
    for node in nodes {
        assert_eq!(heartbeat(app, &node.token, &[]).await.status, 200);
    }
    scheduling::schedule_once(state).await.unwrap()
}

backend_tests! {
    async fn a_restarted_hub_gives_silent_nodes_one_timeout_to_come_back(store: Store) {
        let (app, state, key) = app_with(&store, "team-a", settings()).await;
        let nodes = fleet(&app, &["gn-a"]).await;
        let job = submit(&app, &key, &retry_spec(1, 3)).await;
        assert_eq!(schedule_with(&state, &app, &[&nodes[0]]).await, 1);
        let (node, assignment) = placed_on(&app, &nodes, &job).await;
        reported(&app, &node, &id_of(&assignment), "Running").await;
        // The node has been silent longer than the node timeout, but this hub process has
        // only just started: it heard nothing meanwhile, so the silence does not count yet.
        tokio::time::sleep(NODE_TIMEOUT * 2).await;
        let restarted = AppState { started_ms: api::store::now_ms(), ..state.clone() };
        assert_eq!(liveness::sweep_once(&restarted).await.unwrap(), liveness::Sweep::default());
        assert_eq!(get_job(&app, &key, &job).await["status"]["phase"], "Running");
        // A hub that has been up for longer than the timeout declares the work lost.
        assert_eq!(liveness::sweep_once(&state).await.unwrap().lost, 1);
    }

    async fn a_lost_nodes_job_is_re_placed_elsewhere_and_resumes_from_its_checkpoint(store: Store) {
        let (app, state, key) = app_with(&store, "team-a", settings()).await;
        let nodes = fleet(&app, &["gn-a", "gn-b"]).await;
        let job = submit(&app, &key, &retry_spec(1, 3)).await;
        assert_eq!(scheduling::schedule_once(&state).await.unwrap(), 1);
        let (first, assignment) = placed_on(&app, &nodes, &job).await;
        let other = nodes.iter().find(|n| n.name != first.name).unwrap().clone();
        assert_eq!(assignment["attempt"], 1);
        assert_eq!(env_of(&assignment, "AGORA_ATTEMPT").as_deref(), Some("1"), "{assignment}");
        assert_eq!(env_of(&assignment, "AGORA_CHECKPOINT_URI"), None, "a first attempt has nothing to resume: {assignment}");
        let lost_id = id_of(&assignment);
        reported(&app, &first, &lost_id, "Running").await;
        for (uri, step) in [("s3://ckpt/job/step-100", 100), ("s3://ckpt/job/step-200", 200)] {
            let reply = checkpoint(&app, &first.token, &lost_id, json!({"uri": uri, "step": step})).await;
            assert_eq!(reply.status, 204, "{}", reply.body);
        }
        assert_eq!(get_job(&app, &key, &job).await["status"]["phase"], "Running");
        // A heartbeat while the worker runs: GPU time is metered up to the last one.
        clock_passes(api::store::now_ms() + 20).await;
        assert_eq!(stop_list(&heartbeat(&app, &first.token, &[&lost_id]).await), Vec::<String>::new());

        // The node falls silent; the other keeps heartbeating.
        assert_eq!(lose(&state, &app, &[(&other, vec![])]).await, 1);
        let rows = store.job_assignments(&job, 1).await.unwrap();
        assert_eq!(rows[0].state, AssignmentPhase::Lost, "{rows:?}");
        assert!(store.get_node(&first.name).await.unwrap().unwrap().allocated.is_empty(), "a lost worker's GPU is released");
        let body = get_job(&app, &key, &job).await;
        let status = &body["status"];
        assert_eq!(status["phase"], "Pending", "{body}");
        assert_eq!(status["reason"], "Retrying", "{body}");
        let message = status["message"].as_str().unwrap();
        assert!(message.contains("attempt 1 of 3 failed") && message.contains("attempt 2") && message.contains(&first.name), "{message}");
        assert_eq!(status["attempts"], 1, "{body}");
        assert_eq!(status["checkpoint"]["step"], 200, "{body}");
        let log = events(&app, &key, &job).await;
        let lost = event(&log, "NodeLost");
        assert_eq!(lost["node"], first.name.as_str(), "{lost}");
        assert_eq!(lost["attempt"], 1, "{lost}");
        let retrying = event(&log, "Retrying");
        assert_eq!((&retrying["from"], &retrying["to"]), (&json!("Running"), &json!("Pending")), "{retrying}");
        // Another sweep finds nothing more to do.
        assert_eq!(liveness::sweep_once(&state).await.unwrap(), liveness::Sweep::default());

        // The failed node comes back before the next placement: it is ready again, but the job
        // never goes back to it.
        assert_eq!(stop_list(&heartbeat(&app, &first.token, &[&lost_id]).await), [lost_id.as_str()], "the returning node is told to stop its lost worker");
        assert_eq!(schedule_with(&state, &app, &[&first, &other]).await, 1);
        let retried = offered(&app, &other, &job).await;
        assert!(poll(&app, &first.token).await.is_empty(), "nothing is offered to the node the job failed on");
        assert_eq!(retried["attempt"], 2, "{retried}");
        assert_eq!(env_of(&retried, "AGORA_ATTEMPT").as_deref(), Some("2"), "{retried}");
        assert_eq!(env_of(&retried, "AGORA_CHECKPOINT_URI").as_deref(), Some("s3://ckpt/job/step-200"), "the retry resumes from the latest checkpoint: {retried}");

        let id = id_of(&retried);
        reported(&app, &other, &id, "Running").await;
        reported(&app, &other, &id, "Succeeded").await;
        let body = get_job(&app, &key, &job).await;
        let status = &body["status"];
        assert_eq!(status["phase"], "Succeeded", "{body}");
        assert_eq!(status["attempts"], 2, "{body}");
        assert_eq!(status["placement"]["workers"][0]["node"], other.name.as_str(), "{body}");
        let mut metered = 0;
        for attempt in [1, 2] {
            metered += store.job_assignments(&job, attempt).await.unwrap().iter().map(|a| a.gpu_millis()).sum::<u64>();
        }
        assert!(store.job_assignments(&job, 1).await.unwrap()[0].gpu_millis() > 0, "the lost worker ran until its node's last heartbeat");
        assert_eq!(status["usage"]["gpuSeconds"], metered / 1000, "usage counts the lost attempt too: {body}");
        assert_eq!(status["checkpoint"]["uri"], "s3://ckpt/job/step-200", "{body}");
    }

    async fn with_one_attempt_a_lost_node_fails_its_job(store: Store) {
        let (app, state, key) = app_with(&store, "team-a", settings()).await;
        let nodes = fleet(&app, &["gn-a", "gn-b"]).await;
        let job = submit(&app, &key, &sleep_spec(60)).await;
        assert_eq!(scheduling::schedule_once(&state).await.unwrap(), 1);
        let (first, assignment) = placed_on(&app, &nodes, &job).await;
        let other = nodes.iter().find(|n| n.name != first.name).unwrap().clone();
        reported(&app, &first, &id_of(&assignment), "Running").await;

        assert_eq!(lose(&state, &app, &[(&other, vec![])]).await, 1);
        let body = get_job(&app, &key, &job).await;
        let status = &body["status"];
        assert_eq!(status["phase"], "Failed", "{body}");
        assert_eq!(status["reason"], "NodeLost", "{body}");
        assert!(status["message"].as_str().unwrap().contains(&first.name), "{body}");
        assert!(status["completionTime"].is_string(), "{body}");
        let log = events(&app, &key, &job).await;
        let failed = event(&log, "NodeLost");
        assert_eq!((&failed["to"], &failed["node"]), (&json!("Failed"), &json!(first.name)), "{failed}");
        assert!(log.iter().all(|e| e["reason"] != "Retrying"), "{log:#?}");
        assert_eq!(store.job_assignments(&job, 1).await.unwrap()[0].state, AssignmentPhase::Lost);
        assert!(store.get_node(&first.name).await.unwrap().unwrap().allocated.is_empty());
        assert_eq!(schedule_with(&state, &app, &[&first, &other]).await, 0, "a failed job is not placed again");
    }

    async fn a_failed_worker_is_retried_on_another_node(store: Store) {
        let (app, state, key) = app_with(&store, "team-a", settings()).await;
        let nodes = fleet(&app, &["gn-a", "gn-b"]).await;
        let job = submit(&app, &key, &retry_spec(1, 2)).await;
        assert_eq!(scheduling::schedule_once(&state).await.unwrap(), 1);
        let (first, assignment) = placed_on(&app, &nodes, &job).await;
        let other = nodes.iter().find(|n| n.name != first.name).unwrap().clone();
        let id = id_of(&assignment);
        reported(&app, &first, &id, "Running").await;
        let failed = report(&app, &first.token, &id, "Failed", Some(3), Some("CUDA error: out of memory")).await;
        assert_eq!(failed.status, 204, "{}", failed.body);

        let body = get_job(&app, &key, &job).await;
        let status = &body["status"];
        assert_eq!((&status["phase"], &status["reason"]), (&json!("Pending"), &json!("Retrying")), "{body}");
        let message = status["message"].as_str().unwrap();
        assert!(message.contains("CUDA error: out of memory") && message.contains("exit code 3") && message.contains("attempt 2"), "{message}");
        assert!(status.get("placement").is_none(), "a job waiting for its next attempt shows no placement: {body}");
        let log = events(&app, &key, &job).await;
        assert_eq!(event(&log, "WorkerFailed")["node"], first.name.as_str());
        assert_eq!(event(&log, "Retrying")["to"], "Pending");
        assert_eq!(store.excluded_nodes(&job).await.unwrap(), [first.name.as_str()]);

        assert_eq!(schedule_with(&state, &app, &[&first, &other]).await, 1);
        assert!(poll(&app, &first.token).await.is_empty(), "never again on the node it failed on");
        let retried = offered(&app, &other, &job).await;
        assert_eq!(env_of(&retried, "AGORA_ATTEMPT").as_deref(), Some("2"), "{retried}");
        assert_eq!(env_of(&retried, "AGORA_CHECKPOINT_URI"), None, "no checkpoint was saved: {retried}");
        let id = id_of(&retried);
        reported(&app, &other, &id, "Running").await;
        reported(&app, &other, &id, "Succeeded").await;
        let body = get_job(&app, &key, &job).await;
        assert_eq!((&body["status"]["phase"], &body["status"]["attempts"]), (&json!("Succeeded"), &json!(2)), "{body}");
    }

    async fn the_last_allowed_attempt_failing_fails_the_job(store: Store) {
        let (app, state, key) = app_with(&store, "team-a", settings()).await;
        let nodes = fleet(&app, &["gn-a", "gn-b"]).await;
        let job = submit(&app, &key, &retry_spec(1, 2)).await;
        for attempt in 1..=2 {
            assert_eq!(schedule_with(&state, &app, &nodes.iter().collect::<Vec<_>>()).await, 1, "attempt {attempt}");
            let (node, assignment) = placed_on(&app, &nodes, &job).await;
            let id = id_of(&assignment);
            reported(&app, &node, &id, "Running").await;
            let failed = report(&app, &node.token, &id, "Failed", Some(1), Some("boom")).await;
            assert_eq!(failed.status, 204, "{}", failed.body);
        }
        let body = get_job(&app, &key, &job).await;
        let status = &body["status"];
        assert_eq!((&status["phase"], &status["reason"]), (&json!("Failed"), &json!("WorkerFailed")), "{body}");
        assert!(status["message"].as_str().unwrap().contains("attempt 2 of 2: no attempts left"), "{body}");
        assert_eq!(status["attempts"], 2, "{body}");
        let mut excluded = store.excluded_nodes(&job).await.unwrap();
        excluded.sort();
        assert_eq!(excluded, ["gn-a", "gn-b"], "both nodes it failed on are recorded");
    }

    async fn a_retry_with_no_other_node_waits_naming_the_failed_one(store: Store) {
        let (app, state, key) = app_with(&store, "team-a", settings()).await;
        let nodes = fleet(&app, &["gn-a"]).await;
        let node = &nodes[0];
        let job = submit(&app, &key, &retry_spec(1, 3)).await;
        assert_eq!(scheduling::schedule_once(&state).await.unwrap(), 1);
        let id = id_of(&offered(&app, node, &job).await);
        reported(&app, node, &id, "Running").await;
        assert_eq!(report(&app, &node.token, &id, "Failed", Some(1), Some("segfault")).await.status, 204);

        assert_eq!(schedule_with(&state, &app, &[node]).await, 0, "the only node is the one it failed on");
        let body = get_job(&app, &key, &job).await;
        let status = &body["status"];
        assert_eq!((&status["phase"], &status["reason"]), (&json!("Pending"), &json!("Unschedulable")), "{body}");
        let message = status["message"].as_str().unwrap();
        assert!(message.contains("attempt 2 of 3 waits (never on gn-a, where it failed)") && message.contains("1 where this job failed before"), "{message}");
        assert!(poll(&app, &node.token).await.is_empty());

        // A new node arrives: the retry goes there.
        let fresh = fleet(&app, &["gn-c"]).await;
        assert_eq!(schedule_with(&state, &app, &[node, &fresh[0]]).await, 1);
        let retried = offered(&app, &fresh[0], &job).await;
        assert_eq!(retried["attempt"], 2);
    }

    async fn a_lost_node_coming_back_is_told_to_stop_and_changes_nothing(store: Store) {
        let (app, state, key) = app_with(&store, "team-a", settings()).await;
        let nodes = fleet(&app, &["gn-a", "gn-b"]).await;
        let job = submit(&app, &key, &retry_spec(1, 2)).await;
        assert_eq!(scheduling::schedule_once(&state).await.unwrap(), 1);
        let (first, assignment) = placed_on(&app, &nodes, &job).await;
        let other = nodes.iter().find(|n| n.name != first.name).unwrap().clone();
        let lost_id = id_of(&assignment);
        reported(&app, &first, &lost_id, "Running").await;
        assert_eq!(lose(&state, &app, &[(&other, vec![])]).await, 1);
        assert_eq!(schedule_with(&state, &app, &[&other]).await, 1);
        let retry_id = id_of(&offered(&app, &other, &job).await);
        reported(&app, &other, &retry_id, "Running").await;
        let before = get_job(&app, &key, &job).await;
        let log_before = events(&app, &key, &job).await;

        // The lost agent comes back (it restarted and registered again) still running its worker.
        let first = Node { token: register(&app, &registration(&first.name, "eu-west", 1, "1.00")).await, ..first };
        assert_eq!(stop_list(&heartbeat(&app, &first.token, &[&lost_id]).await), [lost_id.as_str()]);
        for state in ["Running", "Succeeded", "Failed", "Stopped"] {
            let late = report(&app, &first.token, &lost_id, state, Some(0), None).await;
            assert_eq!(late.status, 409, "a late {state} from the lost node: {}", late.body);
            assert_eq!(error_code(&late), "assignment_final");
            assert!(late.body["error"]["message"].as_str().unwrap().contains("Lost"), "{}", late.body);
        }
        let late = checkpoint(&app, &first.token, &lost_id, json!({"uri": "s3://stale", "step": 999})).await;
        assert_eq!(late.status, 409, "a lost worker's checkpoint does not count: {}", late.body);

        let after = get_job(&app, &key, &job).await;
        assert_eq!(after["status"], before["status"], "the late reports changed nothing");
        assert_eq!(events(&app, &key, &job).await, log_before);
        assert_eq!(store.job_assignments(&job, 1).await.unwrap()[0].state, AssignmentPhase::Lost);
        assert_eq!(store.job_assignments(&job, 2).await.unwrap()[0].state, AssignmentPhase::Running);
        assert!(store.get_node(&first.name).await.unwrap().unwrap().allocated.is_empty(), "the lost worker's GPU stays free");
        // The node is ready again and takes other work.
        let next = submit(&app, &key, &sleep_spec(5)).await;
        assert_eq!(schedule_with(&state, &app, &[&first]).await, 1);
        offered(&app, &first, &next).await;
    }

    async fn a_lost_node_stops_the_rest_of_its_gang_and_the_gang_moves(store: Store) {
        let (app, state, key) = app_with(&store, "team-a", settings()).await;
        let nodes = fleet(&app, &["gn-a", "gn-b", "gn-c"]).await;
        let job = submit(&app, &key, &retry_spec(2, 2)).await;
        assert_eq!(scheduling::schedule_once(&state).await.unwrap(), 1);
        let workers = store.job_assignments(&job, 1).await.unwrap();
        assert_eq!(workers.len(), 2);
        for w in &workers {
            reported(&app, named(&nodes, &w.node_name), &w.id, "Running").await;
        }
        let (lost, survivor) = (&workers[0], &workers[1]);
        let spare = nodes.iter().find(|n| n.name != lost.node_name && n.name != survivor.node_name).unwrap();
        let survivor_node = named(&nodes, &survivor.node_name);

        let alive = [(survivor_node, vec![survivor.id.clone()]), (spare, vec![])];
        assert_eq!(lose(&state, &app, &alive).await, 1);
        assert_eq!(get_job(&app, &key, &job).await["status"]["phase"], "Pending");
        let rows = store.job_assignments(&job, 1).await.unwrap();
        assert_eq!((rows[0].state, rows[1].state), (AssignmentPhase::Lost, AssignmentPhase::Stopping), "{rows:?}");
        assert_eq!(stop_list(&heartbeat(&app, &survivor_node.token, &[&survivor.id]).await), [survivor.id.as_str()], "the rest of the gang is told to stop");
        // Its GPU is held until it stopped, so the gang cannot move yet.
        assert_eq!(heartbeat(&app, &spare.token, &[]).await.status, 200);
        assert_eq!(heartbeat(&app, &survivor_node.token, &[&survivor.id]).await.status, 200);
        assert_eq!(scheduling::schedule_once(&state).await.unwrap(), 0);
        reported(&app, survivor_node, &survivor.id, "Stopped").await;
        assert_eq!(get_job(&app, &key, &job).await["status"]["phase"], "Pending", "stopping the rest does not move the job");
        assert_eq!(schedule_with(&state, &app, &[survivor_node, spare]).await, 1);
        let mut placed: Vec<String> = store.job_assignments(&job, 2).await.unwrap().into_iter().map(|a| a.node_name).collect();
        placed.sort();
        let mut expected = vec![survivor.node_name.clone(), spare.name.clone()];
        expected.sort();
        assert_eq!(placed, expected, "the gang moved off the lost node");
    }

    async fn a_job_past_its_max_runtime_fails_and_its_workers_stop(store: Store) {
        // The default node timeout: the node stays ready while the job outlives its limit.
        let (app, state, key) = app(&store, "team-a").await;
        let nodes = fleet(&app, &["gn-a"]).await;
        let node = &nodes[0];
        let mut spec = retry_spec(1, 3);
        spec["maxRuntime"] = json!("1s");
        let job = submit(&app, &key, &spec).await;
        assert_eq!(scheduling::schedule_once(&state).await.unwrap(), 1);
        let assignment = offered(&app, node, &job).await;
        assert_eq!(assignment["maxRuntimeSeconds"], 1, "the agent enforces it too: {assignment}");
        let id = id_of(&assignment);
        reported(&app, node, &id, "Running").await;
        let sweep = liveness::sweep_once(&state).await.unwrap();
        assert_eq!(sweep.expired, 0, "not yet");

        let expired = eventually("the job's deadline to pass", Duration::from_secs(10), || async {
            let sweep = liveness::sweep_once(&state).await.unwrap();
            (sweep.expired > 0).then_some(sweep.expired)
        })
        .await;
        assert_eq!(expired, 1);
        let body = get_job(&app, &key, &job).await;
        let status = &body["status"];
        assert_eq!((&status["phase"], &status["reason"]), (&json!("Failed"), &json!("DeadlineExceeded")), "not retried, though attempts remain: {body}");
        assert!(status["message"].as_str().unwrap().contains("maxRuntime 1s"), "{body}");
        assert_eq!(event(&events(&app, &key, &job).await, "DeadlineExceeded")["to"], "Failed");
        assert_eq!(stop_list(&heartbeat(&app, &node.token, &[&id]).await), [id.as_str()], "the worker is told to stop");
        reported(&app, node, &id, "Stopped").await;
        assert!(store.get_node("gn-a").await.unwrap().unwrap().allocated.is_empty());
        assert_eq!(get_job(&app, &key, &job).await["status"]["reason"], "DeadlineExceeded");
        assert!(store.excluded_nodes(&job).await.unwrap().is_empty(), "running out of time is not the node's fault");
    }

    async fn a_worker_its_agent_cut_off_at_max_runtime_is_not_retried(store: Store) {
        let (app, state, key) = app(&store, "team-a").await;
        let nodes = fleet(&app, &["gn-a", "gn-b"]).await;
        let mut spec = retry_spec(1, 3);
        spec["maxRuntime"] = json!("1s");
        let job = submit(&app, &key, &spec).await;
        assert_eq!(scheduling::schedule_once(&state).await.unwrap(), 1);
        let (node, assignment) = placed_on(&app, &nodes, &job).await;
        let id = id_of(&assignment);
        reported(&app, &node, &id, "Running").await;
        clock_passes(api::store::now_ms() + 1000).await;
        let failed = report(&app, &node.token, &id, "Failed", None, Some("exceeded maxRuntime")).await;
        assert_eq!(failed.status, 204, "{}", failed.body);
        let body = get_job(&app, &key, &job).await;
        assert_eq!((&body["status"]["phase"], &body["status"]["reason"]), (&json!("Failed"), &json!("DeadlineExceeded")), "{body}");
    }

    async fn checkpoints_need_the_nodes_token_and_never_go_backwards(store: Store) {
        let (app, state, key) = app_with(&store, "team-a", settings()).await;
        let nodes = fleet(&app, &["gn-a", "gn-b"]).await;
        let job = submit(&app, &key, &retry_spec(1, 2)).await;
        assert_eq!(scheduling::schedule_once(&state).await.unwrap(), 1);
        let (owner, assignment) = placed_on(&app, &nodes, &job).await;
        let stranger = nodes.iter().find(|n| n.name != owner.name).unwrap();
        let id = id_of(&assignment);
        reported(&app, &owner, &id, "Running").await;
        let at = |step: u64| json!({"uri": format!("s3://ckpt/{step}"), "step": step});

        for credentials in [None, Some("agt_not-a-token"), Some(key.as_str())] {
            let reply = send(&app, "POST", &format!("/v1/agent/assignments/{id}/checkpoint"), credentials, Some("application/json"), at(1).to_string()).await;
            assert_eq!(reply.status, 401, "{credentials:?}: {}", reply.body);
        }
        let foreign = checkpoint(&app, &stranger.token, &id, at(5)).await;
        assert_eq!(foreign.status, 404, "another node's token: {}", foreign.body);
        assert_eq!(error_code(&foreign), "not_found");
        let unknown = checkpoint(&app, &owner.token, "asg-00000000000deadbeef-1-0", at(5)).await;
        assert_eq!(unknown.status, 404, "{}", unknown.body);
        for (bad, field) in [
            (json!({"uri": "", "step": 1}), "uri"),
            (json!({"uri": "x".repeat(2049), "step": 1}), "uri"),
            (json!({"uri": "s3://a", "step": -1}), "step"),
            (json!({"uri": "s3://a", "step": u64::MAX}), "step"),
            (json!({"uri": "s3://a\nb", "step": 1}), "uri"),
            (json!({"uri": "s3://a", "step": 1, "extra": true}), "body"),
        ] {
            let reply = checkpoint(&app, &owner.token, &id, bad.clone()).await;
            assert_eq!(reply.status, 422, "{bad}: {}", reply.body);
            assert_eq!(reply.body["error"]["field"], field, "{bad}: {}", reply.body);
        }
        assert!(get_job(&app, &key, &job).await["status"].get("checkpoint").is_none(), "refused reports recorded nothing");

        assert_eq!(checkpoint(&app, &owner.token, &id, at(10)).await.status, 204);
        let shown = get_job(&app, &key, &job).await["status"]["checkpoint"].clone();
        assert_eq!((&shown["uri"], &shown["step"]), (&json!("s3://ckpt/10"), &json!(10)), "{shown}");
        assert!(shown["time"].is_string(), "{shown}");
        for older in [json!({"uri": "s3://ckpt/5", "step": 5}), json!({"uri": "s3://other/10", "step": 10})] {
            let reply = checkpoint(&app, &owner.token, &id, older.clone()).await;
            assert_eq!(reply.status, 204, "an older report is acknowledged: {}", reply.body);
            assert_eq!(get_job(&app, &key, &job).await["status"]["checkpoint"], shown, "{older} does not replace step 10");
        }
        assert_eq!(checkpoint(&app, &owner.token, &id, at(20)).await.status, 204);
        assert_eq!(get_job(&app, &key, &job).await["status"]["checkpoint"]["uri"], "s3://ckpt/20");

        reported(&app, &owner, &id, "Succeeded").await;
        let late = checkpoint(&app, &owner.token, &id, at(30)).await;
        assert_eq!(late.status, 409, "an ended worker's checkpoint: {}", late.body);
        assert_eq!(error_code(&late), "assignment_final");
        assert_eq!(get_job(&app, &key, &job).await["status"]["checkpoint"]["step"], 20);
    }

    async fn the_hub_sweeps_silent_nodes_on_its_own(store: Store) {
        // The same through the running loop, as a served hub runs it.
        let (app, state, key) = app_with(&store, "team-a", settings()).await;
        let nodes = fleet(&app, &["gn-a"]).await;
        let job = submit(&app, &key, &sleep_spec(60)).await;
        assert_eq!(scheduling::schedule_once(&state).await.unwrap(), 1);
        let id = id_of(&offered(&app, &nodes[0], &job).await);
        reported(&app, &nodes[0], &id, "Running").await;
        let loop_task = tokio::spawn(liveness::run(state.clone(), api::leader::Leadership::start(&state)));
        let (app_ref, key_ref, job_ref) = (&app, &key, &job);
        let body = eventually("the loop to lose the silent node's work", Duration::from_secs(20), move || async move {
            let body = get_job(app_ref, key_ref, job_ref).await;
            (body["status"]["phase"] == "Failed").then_some(body)
        })
        .await;
        assert_eq!(body["status"]["reason"], "NodeLost", "{body}");
        loop_task.abort();
    }
}
