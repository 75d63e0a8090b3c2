//! The heartbeat path as each replica keeps it in memory (see `api::heartbeats`): heartbeat times
//! written in batches, heartbeats answered from the live-assignments view, and long-polls woken
//! for work another replica placed. What an agent sees must be exactly what the store-only path
//! would tell it: no new work stopped, no stop missed after a refresh, no live node left looking
//! silent. Every test runs on SQLite and on PostgreSQL.

mod common;

use std::time::Duration;

use api::store::Store;
use common::*;

/// The node's last heartbeat time as stored.
async fn stored_heartbeat(store: &Store, node: &str) -> i64 {
    store
        .get_node(node)
        .await
        .unwrap()
        .expect("a registered node")
        .last_heartbeat
}

/// The ids a heartbeat answer says to stop.
fn stops(reply: &Reply) -> Vec<String> {
    assert_eq!(reply.status, 200, "heartbeat: {}", reply.body);
    reply.body["stop"]
        .as_array()
        .expect("a stop list")
        .iter()
        .map(|id| id.as_str().unwrap().to_string())
        .collect()
}

backend_tests! {
    async fn heartbeat_times_reach_the_store_at_once_after_silence_and_in_batches_otherwise(store: Store) {
        let (app, state, _) = app(&store, "team-a").await;
        let token = register(&app, &registration("gn-a", "eu-west", 1, "1.00")).await;
        let registered = stored_heartbeat(&store, "gn-a").await;

        // The first heartbeat this replica sees of the node is written before it is answered: a
        // node coming back must not look silent to the liveness loop for a moment longer.
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(heartbeat(&app, &token, &[]).await.status, 200);
        let first = stored_heartbeat(&store, "gn-a").await;
        assert!(first > registered, "written at once: {first} after {registered}");

        // The next ones wait for the flush, which writes the latest.
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(heartbeat(&app, &token, &[]).await.status, 200);
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(heartbeat(&app, &token, &[]).await.status, 200);
        assert_eq!(stored_heartbeat(&store, "gn-a").await, first, "buffered until the flush");
        state.sessions.flush(&store).await.unwrap();
        let flushed = stored_heartbeat(&store, "gn-a").await;
        assert!(flushed >= first + 10, "the flush writes the latest time, 10 ms or more later: {flushed} vs {first}");

        // Nothing left to write: a second flush changes nothing.
        state.sessions.flush(&store).await.unwrap();
        assert_eq!(stored_heartbeat(&store, "gn-a").await, flushed);
    }

    async fn a_flush_never_moves_a_heartbeat_time_back(store: Store) {
        let (app, state, _) = app(&store, "team-a").await;
        let token = register(&app, &registration("gn-a", "eu-west", 1, "1.00")).await;
        assert_eq!(heartbeat(&app, &token, &[]).await.status, 200);
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(heartbeat(&app, &token, &[]).await.status, 200);
        // Meanwhile another replica wrote a later time for the node.
        let later = api::store::now_ms() + 60_000;
        store.record_heartbeats(&mut [("gn-a".to_string(), later)]).await.unwrap();
        state.sessions.flush(&store).await.unwrap();
        assert_eq!(stored_heartbeat(&store, "gn-a").await, later);
    }

    async fn heartbeats_answered_from_the_view_never_stop_new_work_and_see_stops_after_a_refresh(store: Store) {
        let (app, state, key) = app(&store, "team-a").await;
        let token = register(&app, &registration("gn-a", "eu-west", 1, "1.00")).await;
        state.sessions.refresh(&store).await.unwrap();

        let job = submit(&app, &key, &sleep_spec(60)).await;
        assert_eq!(api::scheduling::schedule_once(&state).await.unwrap(), 1);
        let items = poll(&app, &token).await;
        let assignment = assignment_of(&items, &job);

        // Placed after the view was read: the agent holds work the view does not know, and must
        // not be told to stop it.
        assert_eq!(stops(&heartbeat(&app, &token, &[&assignment]).await), Vec::<String>::new());
        state.sessions.refresh(&store).await.unwrap();
        assert_eq!(stops(&heartbeat(&app, &token, &[&assignment]).await), Vec::<String>::new());

        // Cancelled: once the view is read again, the heartbeat says stop.
        let cancelled = send(&app, "DELETE", &format!("/v1/jobs/{job}"), Some(&key), None, "").await;
        assert_eq!(cancelled.status, 200, "{}", cancelled.body);
        state.sessions.refresh(&store).await.unwrap();
        assert_eq!(stops(&heartbeat(&app, &token, &[&assignment]).await), vec![assignment.clone()]);

        // An id the hub never issued is stopped too (the store answers for it).
        assert_eq!(
            stops(&heartbeat(&app, &token, &[&assignment, "asg-unknown"]).await),
            [assignment.clone(), "asg-unknown".to_string()]
        );
    }

    async fn a_long_poll_on_one_replica_wakes_for_work_the_leader_placed(store: Store) {
        let (leader_app, leader, key) = app(&store, "team-a").await;
        let (follower_app, follower, _) = app(&store, "team-a").await;
        let token = register(&follower_app, &registration("gn-a", "eu-west", 1, "1.00")).await;
        follower.sessions.refresh(&store).await.unwrap();

        let waiting = {
            let (app, token) = (follower_app.clone(), token.clone());
            tokio::spawn(async move {
                send(&app, "GET", "/v1/agent/assignments?waitSeconds=30", Some(&token), None, "").await
            })
        };
        let sessions = &follower.sessions;
        eventually("the long-poll to wait on the follower", Duration::from_secs(10), move || async move {
            (sessions.waiting_polls("gn-a") > 0).then_some(())
        })
        .await;

        let job = submit(&leader_app, &key, &sleep_spec(60)).await;
        assert_eq!(api::scheduling::schedule_once(&leader).await.unwrap(), 1);
        // The follower learns of the placement from its next read of the live assignments.
        follower.sessions.refresh(&store).await.unwrap();
        let woken = tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("the follower's long-poll answers after its refresh, not at the end of its wait")
            .unwrap();
        assert_eq!(woken.status, 200, "{}", woken.body);
        assert_eq!(woken.body["items"][0]["job"], job.as_str(), "{}", woken.body);
    }
}
