//! Agents number their reports on each assignment (`seq`, shared by status and checkpoint reports),
//! and the hub applies a report only when its number is above the last one it applied: a replayed
//! report, or one overtaken by a newer one, answers `409 stale_report` and changes nothing. Every
//! test runs on SQLite and on PostgreSQL.

mod common;

use api::store::{AssignmentRow, EventRow, JobRow};
use axum::Router;
use common::*;
use serde_json::{Value, json};

/// A job placed on the only node, gn-a: (job id, assignment id).
async fn placed(app: &Router, state: &api::AppState, key: &str, token: &str) -> (String, String) {
    let job = submit(app, key, &sleep_spec(60)).await;
    assert_eq!(api::scheduling::schedule_once(state).await.unwrap(), 1);
    let assignment = assignment_of(&poll(app, token).await, &job);
    (job, assignment)
}

/// A checkpoint report body.
fn at(seq: u64, step: u64) -> Value {
    json!({"seq": seq, "uri": format!("s3://ckpt/{step}"), "step": step})
}

/// Everything a report could change: the job, its event log, its first attempt's assignments.
async fn snapshot(
    store: &api::store::Store,
    job: &str,
) -> (JobRow, Vec<EventRow>, Vec<AssignmentRow>) {
    (
        store.get_job(None, job).await.unwrap().unwrap(),
        store.job_events(job).await.unwrap(),
        store.job_assignments(job, 1).await.unwrap(),
    )
}

/// Asserts `reply` is the hub's refusal of a stale report, naming the seq sent and the last applied.
fn assert_stale(reply: &Reply, sent: u64, last: u64) {
    assert_eq!(reply.status, 409, "{}", reply.body);
    assert_eq!(error_code(reply), "stale_report", "{}", reply.body);
    let message = reply.body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("seq {sent} "))
            && message.contains(&format!("{last}, the last one applied")),
        "the message names the seq received ({sent}) and the last applied ({last}): {message}"
    );
}

backend_tests! {
    async fn a_replayed_report_is_refused_and_changes_nothing(store: Store) {
        let (app, state, key) = app(&store, "team-a").await;
        let token = register(&app, &registration("gn-a", "eu-west", 1, "1.00")).await;
        let (job, id) = placed(&app, &state, &key, &token).await;
        assert_eq!(report_seq(&app, &token, &id, 1, "Running", None, None).await.status, 204);
        let before = snapshot(&store, &job).await;
        assert_eq!(before.0.phase, crds::v1alpha1::JobPhase::Running);

        // The same report again, and a different one under the same number: both are replays.
        assert_stale(&report_seq(&app, &token, &id, 1, "Running", None, None).await, 1, 1);
        assert_stale(&report_seq(&app, &token, &id, 1, "Failed", Some(3), Some("replayed")).await, 1, 1);
        assert_eq!(snapshot(&store, &job).await, before, "job, events and assignment are as they were");

        // The agent's next report is taken.
        assert_eq!(report_seq(&app, &token, &id, 2, "Succeeded", Some(0), None).await.status, 204);
        assert_eq!(get_job(&app, &key, &job).await["status"]["phase"], "Succeeded");
        let done = snapshot(&store, &job).await;
        assert_stale(&report_seq(&app, &token, &id, 2, "Succeeded", Some(0), None).await, 2, 2);
        assert_eq!(snapshot(&store, &job).await, done, "a replayed final report changes nothing");
    }

    async fn a_report_overtaken_by_a_newer_one_is_refused(store: Store) {
        let (app, state, key) = app(&store, "team-a").await;
        let token = register(&app, &registration("gn-a", "eu-west", 1, "1.00")).await;
        let (job, id) = placed(&app, &state, &key, &token).await;
        // Running (seq 2) was delayed on the network; Succeeded (seq 3) arrived first.
        assert_eq!(report_seq(&app, &token, &id, 3, "Succeeded", Some(0), None).await.status, 204);
        let done = snapshot(&store, &job).await;
        assert_eq!(done.0.phase, crds::v1alpha1::JobPhase::Succeeded);
        assert_stale(&report_seq(&app, &token, &id, 2, "Running", None, None).await, 2, 3);
        assert_stale(&report_seq(&app, &token, &id, 1, "Starting", None, None).await, 1, 3);
        assert_eq!(snapshot(&store, &job).await, done);

        // An older report that would otherwise be applied: Starting (1) after Running (2) on a
        // worker that is still running.
        let (job, id) = placed(&app, &state, &key, &token).await;
        assert_eq!(report_seq(&app, &token, &id, 2, "Running", None, None).await.status, 204);
        let running = snapshot(&store, &job).await;
        assert_stale(&report_seq(&app, &token, &id, 1, "Failed", Some(1), Some("stale")).await, 1, 2);
        assert_eq!(snapshot(&store, &job).await, running, "an overtaken failure fails nothing");
    }

    async fn a_checkpoint_with_a_stale_seq_is_refused(store: Store) {
        let (app, state, key) = app(&store, "team-a").await;
        let token = register(&app, &registration("gn-a", "eu-west", 1, "1.00")).await;
        let (job, id) = placed(&app, &state, &key, &token).await;
        assert_eq!(report_seq(&app, &token, &id, 1, "Running", None, None).await.status, 204);
        assert_eq!(send_checkpoint(&app, &token, &id, &at(2, 10)).await.status, 204);
        let before = snapshot(&store, &job).await;
        assert_eq!(before.0.checkpoint.as_ref().map(|c| c.step), Some(10));

        // A replay (same seq, even with a later step), an older number, and one the status report
        // used: status and checkpoint reports share the counter.
        assert_stale(&send_checkpoint(&app, &token, &id, &at(2, 20)).await, 2, 2);
        assert_stale(&send_checkpoint(&app, &token, &id, &at(1, 30)).await, 1, 2);
        assert_stale(&report_seq(&app, &token, &id, 2, "Failed", None, None).await, 2, 2);
        assert_eq!(snapshot(&store, &job).await, before, "the checkpoint stays at step 10");

        assert_eq!(send_checkpoint(&app, &token, &id, &at(3, 20)).await.status, 204);
        assert_eq!(get_job(&app, &key, &job).await["status"]["checkpoint"]["step"], 20);
        assert_stale(&report_seq(&app, &token, &id, 3, "Succeeded", Some(0), None).await, 3, 3);
    }

    async fn increasing_sequences_work_with_gaps_and_per_assignment(store: Store) {
        let (app, state, key) = app(&store, "team-a").await;
        let token = register(&app, &registration("gn-a", "eu-west", 2, "1.00")).await;
        let (first, a) = placed(&app, &state, &key, &token).await;
        let (second, b) = placed(&app, &state, &key, &token).await;
        // Each assignment counts from 1 on its own; numbers need only grow.
        for (id, seqs) in [(&a, [1, 2, 5, 9]), (&b, [1, 3, 4, 100])] {
            assert_eq!(report_seq(&app, &token, id, seqs[0], "Running", None, None).await.status, 204);
            assert_eq!(send_checkpoint(&app, &token, id, &at(seqs[1], 1)).await.status, 204);
            // A repeated state under a new number is a new report with nothing to change.
            assert_eq!(report_seq(&app, &token, id, seqs[2], "Running", None, None).await.status, 204);
            assert_eq!(report_seq(&app, &token, id, seqs[3], "Succeeded", Some(0), None).await.status, 204);
        }
        for job in [first, second] {
            let body = get_job(&app, &key, &job).await;
            assert_eq!(body["status"]["phase"], "Succeeded", "{body}");
            assert_eq!(body["status"]["checkpoint"]["step"], 1, "{body}");
        }
    }

    async fn a_report_without_a_valid_seq_is_refused_naming_it(store: Store) {
        let (app, state, key) = app(&store, "team-a").await;
        let token = register(&app, &registration("gn-a", "eu-west", 1, "1.00")).await;
        let (job, id) = placed(&app, &state, &key, &token).await;
        let status = |body: Value| {
            let (app, token, id) = (app.clone(), token.clone(), id.clone());
            async move {
                send(&app, "POST", &format!("/v1/agent/assignments/{id}/status"), Some(&token), Some("application/json"), body.to_string()).await
            }
        };
        for (bad, field) in [
            (json!({"seq": 0, "state": "Running"}), "seq"),
            (json!({"seq": -1, "state": "Running"}), "seq"),
            (json!({"seq": 9_223_372_036_854_775_808u64, "state": "Running"}), "seq"),
            (json!({"seq": "1", "state": "Running"}), "seq"),
        ] {
            let reply = status(bad.clone()).await;
            assert_eq!(reply.status, 422, "{bad}: {}", reply.body);
            assert_eq!(reply.body["error"]["field"], field, "{bad}: {}", reply.body);
        }
        let missing = status(json!({"state": "Running"})).await;
        assert_eq!(missing.status, 422, "{}", missing.body);
        assert!(missing.body["error"]["message"].as_str().unwrap().contains("seq"), "the message names seq: {}", missing.body);
        for (bad, field) in [
            (json!({"seq": 0, "uri": "s3://a", "step": 1}), "seq"),
            (json!({"uri": "s3://a", "step": 1}), "body"),
        ] {
            let reply = send_checkpoint(&app, &token, &id, &bad).await;
            assert_eq!(reply.status, 422, "{bad}: {}", reply.body);
            assert_eq!(reply.body["error"]["field"], field, "{bad}: {}", reply.body);
        }
        let row = &store.job_assignments(&job, 1).await.unwrap()[0];
        assert_eq!(row.state, api::lifecycle::AssignmentPhase::Assigned, "refused reports changed nothing");
        // The largest seq the hub stores is taken.
        assert_eq!(report_seq(&app, &token, &id, i64::MAX as u64, "Running", None, None).await.status, 204);
    }
}
