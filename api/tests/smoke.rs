//! The walking skeleton through the router: submit → register → poll → report → Succeeded, on both
//! backends.

mod common;

use common::*;

backend_tests! {
    async fn a_job_runs_to_success_through_the_agent_protocol(store: Store) {
        let (app, state, key) = app(&store, "team-a").await;
        let submitted = send(&app, "POST", "/v1/jobs", Some(&key), Some("application/json"), sleep_spec(1).to_string()).await;
        assert_eq!(submitted.status, 201, "{}", submitted.body);
        let id = submitted.body["id"].as_str().unwrap().to_string();
        assert_eq!(submitted.body["status"]["phase"], "Pending");

        let reg = send(&app, "POST", "/v1/agent/register", None, Some("application/json"), signed(&app, &registration("gn-a", "eu-west", 2, "1.00")).await.to_string()).await;
        assert_eq!(reg.status, 200, "{}", reg.body);
        let token = reg.body["token"].as_str().unwrap().to_string();

        assert_eq!(api::scheduling::schedule_once(&state).await.unwrap(), 1);
        let polled = send(&app, "GET", "/v1/agent/assignments?waitSeconds=0", Some(&token), None, "").await;
        assert_eq!(polled.status, 200, "{}", polled.body);
        let assignment = polled.body["items"][0]["id"].as_str().unwrap().to_string();

        for (seq, state) in [(1, "Running"), (2, "Succeeded")] {
            let body = serde_json::json!({"seq": seq, "state": state, "exitCode": if state == "Succeeded" { Some(0) } else { None }});
            let r = send(&app, "POST", &format!("/v1/agent/assignments/{assignment}/status"), Some(&token), Some("application/json"), body.to_string()).await;
            assert_eq!(r.status, 204, "{state}: {}", r.body);
        }
        let job = send(&app, "GET", &format!("/v1/jobs/{id}"), Some(&key), None, "").await;
        assert_eq!(job.body["status"]["phase"], "Succeeded", "{}", job.body);
        assert_eq!(job.body["status"]["placement"]["workers"][0]["node"], "gn-a");
        assert!(job.body["status"]["completionTime"].is_string());
    }
}
