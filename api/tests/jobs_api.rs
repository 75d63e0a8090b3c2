//! `/v1/jobs` as a user sees it: submitting in every accepted form, reading, listing, cancelling,
//! idempotent retries, tenant isolation, the error shape of every rejection, the event log, and
//! why a job waits. Every test runs on SQLite and on PostgreSQL.

mod common;

use std::collections::HashSet;

use common::*;
use serde_json::{Value, json};

/// The sleep spec of [`sleep_spec`] as YAML.
const SPEC_YAML: &str = "\
kind: Batch
workload:
  builtin:
    sleep: {durationSeconds: 1}
resources: {workers: 1, gpusPerWorker: 1}
pricing: {maxPricePerGpuHour: \"5.00\"}
";

/// The same spec as a whole ComputeJob manifest named `nightly-eval`.
const MANIFEST_YAML: &str = "\
apiVersion: agora.dev/v1alpha1
kind: ComputeJob
metadata:
  name: nightly-eval
  namespace: team-a
spec:
  kind: Batch
  workload:
    builtin:
      sleep: {durationSeconds: 1}
  resources: {workers: 1, gpusPerWorker: 1}
  pricing: {maxPricePerGpuHour: \"5.00\"}
";

/// Asserts that a freshly submitted job answered with 201, a `Location` naming it and the job's
/// shape; returns its id.
fn assert_created(reply: &Reply, what: &str) -> String {
    assert_eq!(reply.status, 201, "{what}: {}", reply.body);
    let id = reply.body["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no id in {}", reply.body));
    assert!(id.starts_with("job-"), "{what}: id {id:?}");
    assert_eq!(
        reply.header("location"),
        format!("/v1/jobs/{id}"),
        "{what}: Location header"
    );
    let status = &reply.body["status"];
    assert_eq!(status["phase"], "Pending", "{what}: {}", reply.body);
    assert!(
        status["submitTime"].is_string(),
        "{what}: submitTime missing: {}",
        reply.body
    );
    let conditions = status["conditions"]
        .as_array()
        .unwrap_or_else(|| panic!("{what}: no conditions: {}", reply.body));
    assert!(
        conditions
            .iter()
            .any(|c| c["type"] == "Accepted" && c["status"] == "True"),
        "{what}: an accepted job has Accepted=True: {}",
        reply.body
    );
    assert_eq!(
        reply.body["spec"]["workload"]["builtin"]["sleep"]["durationSeconds"], 1,
        "{what}: spec echoed: {}",
        reply.body
    );
    id.to_string()
}

/// The ids on one page of `GET uri`, and its `next` cursor.
async fn page(app: &axum::Router, key: &str, uri: &str) -> (Vec<String>, Option<String>) {
    let reply = send(app, "GET", uri, Some(key), None, "").await;
    assert_eq!(reply.status, 200, "GET {uri}: {}", reply.body);
    let ids = reply.body["items"]
        .as_array()
        .unwrap_or_else(|| panic!("GET {uri}: no items: {}", reply.body))
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_string())
        .collect();
    assert!(
        reply.body.get("next").is_some(),
        "GET {uri}: `next` must always be present: {}",
        reply.body
    );
    (ids, reply.body["next"].as_str().map(str::to_string))
}

/// A submission the hub must refuse: (what it is, content type, body, status, error code, field).
type Refusal = (
    &'static str,
    Option<&'static str>,
    String,
    u16,
    &'static str,
    Option<&'static str>,
);

/// A sleep spec asking at most `price` per GPU-hour.
fn priced_spec(price: &str) -> Value {
    let mut spec = sleep_spec(1);
    spec["pricing"]["maxPricePerGpuHour"] = json!(price);
    spec
}

backend_tests! {
    async fn a_job_submitted_as_json_yaml_or_manifest_is_pending_and_readable(store: Store) {
        let (app, _, key) = app(&store, "team-a").await;

        let json_reply = send(&app, "POST", "/v1/jobs", Some(&key), Some("application/json"), sleep_spec(1).to_string()).await;
        let json_id = assert_created(&json_reply, "JSON spec");
        assert!(json_reply.body.get("name").is_none(), "a bare spec has no name: {}", json_reply.body);

        let yaml_reply = send(&app, "POST", "/v1/jobs", Some(&key), Some("application/yaml"), SPEC_YAML).await;
        let yaml_id = assert_created(&yaml_reply, "YAML spec");
        assert_eq!(yaml_reply.body["spec"], json_reply.body["spec"], "the same spec in YAML and JSON is the same job spec");

        let manifest_reply = send(&app, "POST", "/v1/jobs", Some(&key), Some("application/yaml"), MANIFEST_YAML).await;
        let manifest_id = assert_created(&manifest_reply, "YAML manifest");
        assert_eq!(manifest_reply.body["name"], "nightly-eval", "a manifest keeps its name: {}", manifest_reply.body);
        assert_eq!(manifest_reply.body["spec"], json_reply.body["spec"]);

        let ids: HashSet<&str> = [&json_id, &yaml_id, &manifest_id].into_iter().map(String::as_str).collect();
        assert_eq!(ids.len(), 3, "three submissions, three jobs");

        for (id, created) in [(&json_id, &json_reply), (&yaml_id, &yaml_reply), (&manifest_id, &manifest_reply)] {
            let read = get_job(&app, &key, id).await;
            assert_eq!(read, created.body, "GET shows the job as the submission answered it");
        }
    }

    async fn the_job_list_pages_newest_first_through_every_job_once(store: Store) {
        let (app, _, key) = app(&store, "team-a").await;
        let mut submitted = Vec::new();
        for _ in 0..5 {
            submitted.push(submit(&app, &key, &sleep_spec(1)).await);
            // Ids carry the submission millisecond: let it pass, so "newest" is well defined.
            clock_passes(api::store::now_ms()).await;
        }

        let mut seen = Vec::new();
        let mut sizes = Vec::new();
        let mut uri = "/v1/jobs?limit=2".to_string();
        loop {
            let (ids, next) = page(&app, &key, &uri).await;
            sizes.push(ids.len());
            seen.extend(ids);
            match next {
                Some(cursor) => uri = format!("/v1/jobs?limit=2&after={cursor}"),
                None => break,
            }
            assert!(sizes.len() <= 5, "paging does not end: pages {sizes:?}, seen {seen:?}");
        }
        assert_eq!(sizes, [2, 2, 1], "5 jobs in pages of 2; the last page has next = null");
        let newest_first: Vec<String> = submitted.iter().rev().cloned().collect();
        assert_eq!(seen, newest_first, "every job exactly once, newest first");
    }

    async fn the_job_list_filters_by_phase(store: Store) {
        let (app, _, key) = app(&store, "team-a").await;
        let kept = submit(&app, &key, &sleep_spec(1)).await;
        let cancelled = submit(&app, &key, &sleep_spec(2)).await;
        let reply = send(&app, "DELETE", &format!("/v1/jobs/{cancelled}"), Some(&key), None, "").await;
        assert_eq!(reply.status, 200, "{}", reply.body);

        assert_eq!(page(&app, &key, "/v1/jobs?phase=Pending").await, (vec![kept], None));
        assert_eq!(page(&app, &key, "/v1/jobs?phase=Cancelled").await, (vec![cancelled], None));
        assert_eq!(page(&app, &key, "/v1/jobs?phase=Running").await, (vec![], None));
    }

    async fn bad_list_parameters_are_rejected_naming_the_parameter(store: Store) {
        let (app, _, key) = app(&store, "team-a").await;
        for (query, field) in [
            ("limit=0", "limit"),
            ("limit=abc", "limit"),
            ("limit=501", "limit"),
            ("phase=Bogus", "phase"),
            ("colour=red", "colour"),
        ] {
            let reply = send(&app, "GET", &format!("/v1/jobs?{query}"), Some(&key), None, "").await;
            assert_eq!(reply.status, 400, "?{query}: {}", reply.body);
            assert_eq!(error_code(&reply), "invalid_query", "?{query}: {}", reply.body);
            assert_eq!(reply.body["error"]["field"], field, "?{query}: {}", reply.body);
        }
    }

    async fn a_tenant_never_sees_or_touches_another_tenants_jobs(store: Store) {
        let (app, _, key_a) = app(&store, "team-a").await;
        let key_b = add_key(&store, "team-b").await;
        let id = submit(&app, &key_a, &sleep_spec(1)).await;

        for (method, uri) in [
            ("GET", format!("/v1/jobs/{id}")),
            ("DELETE", format!("/v1/jobs/{id}")),
            ("GET", format!("/v1/jobs/{id}/events")),
        ] {
            let reply = send(&app, method, &uri, Some(&key_b), None, "").await;
            assert_eq!(reply.status, 404, "{method} {uri} as another tenant: {}", reply.body);
            assert_eq!(error_code(&reply), "not_found", "{method} {uri}: {}", reply.body);
        }
        assert_eq!(page(&app, &key_b, "/v1/jobs").await, (vec![], None), "tenant B lists none of A's jobs");
        assert_eq!(get_job(&app, &key_a, &id).await["status"]["phase"], "Pending", "B's DELETE left A's job alone");
        assert_eq!(page(&app, &key_a, "/v1/jobs").await, (vec![id], None));
    }

    async fn an_unreadable_job_id_is_answered_in_the_error_shape(store: Store) {
        let (app, _, key) = app(&store, "team-a").await;
        // `%FF` decodes to a byte that is not UTF-8.
        for (method, uri) in [("GET", "/v1/jobs/%FF"), ("DELETE", "/v1/jobs/%FF"), ("GET", "/v1/jobs/%FF/events")] {
            let reply = send(&app, method, uri, Some(&key), None, "").await;
            assert_eq!(reply.status, 400, "{method} {uri}: {}", reply.text);
            assert_eq!(error_code(&reply), "invalid_path", "{method} {uri}: {}", reply.text);
        }
    }

    async fn job_routes_need_a_known_api_key(store: Store) {
        let (app, _, key) = app(&store, "team-a").await;
        let id = submit(&app, &key, &sleep_spec(1)).await;
        for (method, uri) in [
            ("GET", "/v1/jobs".to_string()),
            ("POST", "/v1/jobs".to_string()),
            ("GET", format!("/v1/jobs/{id}")),
            ("DELETE", format!("/v1/jobs/{id}")),
            ("GET", format!("/v1/jobs/{id}/events")),
        ] {
            for credentials in [None, Some("agora_not-a-key")] {
                let reply = send(&app, method, &uri, credentials, Some("application/json"), sleep_spec(1).to_string()).await;
                assert_eq!(reply.status, 401, "{method} {uri} with {credentials:?}: {}", reply.body);
                assert_eq!(error_code(&reply), "unauthenticated", "{method} {uri}: {}", reply.body);
            }
        }
        assert_eq!(get_job(&app, &key, &id).await["status"]["phase"], "Pending", "unauthenticated DELETE changed nothing");
        assert_eq!(page(&app, &key, "/v1/jobs").await.0.len(), 1, "unauthenticated POST created nothing");
    }

    async fn bad_submissions_are_refused_with_the_error_shape_and_write_nothing(store: Store) {
        let (app, _, key) = app(&store, "team-a").await;
        let limit = api::HubSettings::default().max_body_bytes;
        let with = |path: &[&str], value: Value| {
            let mut spec = sleep_spec(1);
            let mut at = &mut spec;
            for p in &path[..path.len() - 1] {
                at = &mut at[*p];
            }
            at[path[path.len() - 1]] = value;
            spec.to_string()
        };
        let json = Some("application/json");
        let yaml = Some("application/yaml");
        let cases: Vec<Refusal> = vec![
            ("malformed JSON", json, "{\"kind\": \"Batch\",".into(), 400, "malformed_body", None),
            ("malformed YAML", yaml, "kind: [Batch\nworkload: {".into(), 400, "malformed_body", None),
            ("a YAML stream", yaml, format!("{SPEC_YAML}---\n{SPEC_YAML}"), 400, "malformed_body", None),
            ("a JSON array", json, "[1, 2]".into(), 400, "malformed_body", None),
            ("a YAML scalar", yaml, "just some text".into(), 400, "malformed_body", None),
            ("zero workers", json, with(&["resources", "workers"], json!(0)), 422, "invalid_field", Some("spec.resources.workers")),
            ("a negative price", json, with(&["pricing", "maxPricePerGpuHour"], json!("-1.00")), 422, "invalid_field", Some("spec.pricing.maxPricePerGpuHour")),
            ("an unknown field", json, with(&["colour"], json!("red")), 422, "invalid_field", Some("spec.colour")),
            ("a workload with nothing to run", json, with(&["workload"], json!({"env": [{"name": "A", "value": "1"}]})), 422, "invalid_field", Some("spec.workload")),
            ("a wrong apiVersion", yaml, MANIFEST_YAML.replace("agora.dev/v1alpha1", "batch/v1"), 422, "invalid_field", Some("apiVersion")),
            ("a body over the limit", json, " ".repeat(limit + 1), 413, "body_too_large", None),
            ("XML", Some("application/xml"), "<job/>".into(), 415, "unsupported_media_type", None),
        ];
        for (what, content_type, body, status, code, field) in cases {
            let reply = send(&app, "POST", "/v1/jobs", Some(&key), content_type, body).await;
            assert_eq!(reply.status, status, "{what}: {}", reply.text);
            assert_eq!(error_code(&reply), code, "{what}: {}", reply.body);
            assert_eq!(reply.body["error"]["field"].as_str(), field, "{what}: {}", reply.body);
        }

        assert_eq!(page(&app, &key, "/v1/jobs").await, (vec![], None), "no rejected submission may leave a job");
        let counts = store.job_phase_counts().await.unwrap();
        assert!(counts.iter().all(|(_, n)| *n == 0), "no job row may be written: {counts:?}");
    }

    async fn an_idempotency_key_makes_a_retry_return_the_same_job(store: Store) {
        let (app, _, key_a) = app(&store, "team-a").await;
        let key_b = add_key(&store, "team-b").await;
        let submit_with = |key: String, idempotency: &'static str, spec: Value| {
            let app = app.clone();
            async move {
                let authorization = format!("Bearer {key}");
                let headers = [
                    ("authorization", authorization.as_str()),
                    ("content-type", "application/json"),
                    ("idempotency-key", idempotency),
                ];
                send_with(&app, "POST", "/v1/jobs", &headers, spec.to_string()).await
            }
        };

        let first = submit_with(key_a.clone(), "retry-1", sleep_spec(1)).await;
        let id = assert_created(&first, "first submission");
        let again = submit_with(key_a.clone(), "retry-1", sleep_spec(1)).await;
        assert_eq!(again.status, 200, "a replay answers 200 with the existing job: {}", again.body);
        assert_eq!(again.body["id"], id.as_str(), "a replay returns the same job: {}", again.body);
        assert_eq!(again.header("location"), format!("/v1/jobs/{id}"));

        let different = submit_with(key_a.clone(), "retry-1", sleep_spec(2)).await;
        assert_eq!(different.status, 409, "{}", different.body);
        assert_eq!(error_code(&different), "idempotency_key_reused", "{}", different.body);
        assert_eq!(page(&app, &key_a, "/v1/jobs").await, (vec![id.clone()], None), "one job for one key");

        let other_tenant = submit_with(key_b.clone(), "retry-1", sleep_spec(1)).await;
        let other_id = assert_created(&other_tenant, "another tenant, same key");
        assert_ne!(other_id, id, "keys are per tenant");
        assert_eq!(page(&app, &key_b, "/v1/jobs").await, (vec![other_id], None));
        assert_eq!(page(&app, &key_a, "/v1/jobs").await, (vec![id], None));
        let pending: u64 = store.job_phase_counts().await.unwrap().iter().map(|(_, n)| n).sum();
        assert_eq!(pending, 2, "exactly one row per tenant");
    }

    async fn cancelling_ends_a_job_once_and_leaves_finished_jobs_alone(store: Store) {
        let (app, state, key) = app(&store, "team-a").await;
        let id = submit(&app, &key, &sleep_spec(1)).await;

        let cancelled = send(&app, "DELETE", &format!("/v1/jobs/{id}"), Some(&key), None, "").await;
        assert_eq!(cancelled.status, 200, "{}", cancelled.body);
        assert_eq!(cancelled.body["status"]["phase"], "Cancelled", "{}", cancelled.body);
        let completed = cancelled.body["status"]["completionTime"].clone();
        assert!(completed.is_string(), "a cancelled job has a completionTime: {}", cancelled.body);

        let again = send(&app, "DELETE", &format!("/v1/jobs/{id}"), Some(&key), None, "").await;
        assert_eq!(again.status, 200, "cancelling twice is harmless: {}", again.body);
        assert_eq!(again.body["status"]["phase"], "Cancelled");
        assert_eq!(again.body["status"]["completionTime"], completed, "a second cancel changes nothing");

        let unknown = send(&app, "DELETE", "/v1/jobs/job-00000000000deadbeef", Some(&key), None, "").await;
        assert_eq!(unknown.status, 404, "{}", unknown.body);
        assert_eq!(error_code(&unknown), "not_found");

        let token = register(&app, &registration("gn-a", "eu-west", 1, "1.00")).await;
        let (done, _) = run_to_success(&app, &state, &key, &token).await;
        let refused = send(&app, "DELETE", &format!("/v1/jobs/{done}"), Some(&key), None, "").await;
        assert_eq!(refused.status, 409, "{}", refused.body);
        assert_eq!(error_code(&refused), "job_finished", "{}", refused.body);
        assert_eq!(get_job(&app, &key, &done).await["status"]["phase"], "Succeeded");
    }

    async fn the_event_log_tells_a_jobs_story_in_order(store: Store) {
        let (app, state, key) = app(&store, "team-a").await;
        let token = register(&app, &registration("gn-a", "eu-west", 1, "1.00")).await;
        let (id, _) = run_to_success(&app, &state, &key, &token).await;

        let reply = send(&app, "GET", &format!("/v1/jobs/{id}/events"), Some(&key), None, "").await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        let events = reply.body["items"].as_array().unwrap();
        let story: Vec<(&Value, &str, &str)> = events
            .iter()
            .map(|e| (&e["from"], e["to"].as_str().unwrap(), e["reason"].as_str().unwrap()))
            .collect();
        assert_eq!(
            story,
            [
                (&Value::Null, "Pending", "Submitted"),
                (&json!("Pending"), "Scheduled", "Placed"),
                (&json!("Scheduled"), "Running", "Started"),
                (&json!("Running"), "Succeeded", "Completed"),
            ],
            "{}",
            reply.body
        );
        assert_eq!(events[1]["node"], "gn-a", "the placement names the node: {}", reply.body);
        assert_eq!(events[1]["attempt"], 1);
        assert!(events.iter().all(|e| e["time"].is_string()), "{}", reply.body);
        assert_eq!(reply.body["next"], Value::Null, "one page holds it all: {}", reply.body);

        // Page by page, the same story.
        let mut paged = Vec::new();
        let mut uri = format!("/v1/jobs/{id}/events?limit=3");
        loop {
            let page = send(&app, "GET", &uri, Some(&key), None, "").await;
            assert_eq!(page.status, 200, "{}", page.body);
            let items = page.body["items"].as_array().unwrap();
            assert!(items.len() <= 3, "{}", page.body);
            paged.extend(items.iter().cloned());
            match page.body["next"].as_str() {
                Some(next) => uri = format!("/v1/jobs/{id}/events?limit=3&after={next}"),
                None => break,
            }
        }
        assert_eq!(&paged, events);
        for bad in ["after=abc", "limit=0", "limit=501", "cursor=1"] {
            let reply = send(&app, "GET", &format!("/v1/jobs/{id}/events?{bad}"), Some(&key), None, "").await;
            assert_eq!(reply.status, 400, "{bad}: {}", reply.body);
            assert_eq!(error_code(&reply), "invalid_query", "{bad}: {}", reply.body);
        }
    }

    async fn a_job_no_node_can_run_waits_and_says_why(store: Store) {
        let (app, state, key) = app(&store, "team-a").await;
        let mut incapable = registration("gn-a", "eu-west", 2, "1.00");
        incapable["capabilities"] = json!(["container"]);
        register(&app, &incapable).await;
        let id = submit(&app, &key, &sleep_spec(1)).await;

        assert_eq!(api::scheduling::schedule_once(&state).await.unwrap(), 0);
        let job = get_job(&app, &key, &id).await;
        let status = &job["status"];
        assert_eq!(status["phase"], "Pending", "{job}");
        assert_eq!(status["reason"], "Unschedulable", "{job}");
        let message = status["message"].as_str().unwrap();
        assert!(message.contains("1 node") && message.contains("cannot run builtin:sleep"), "names count and reason: {message}");
        let scheduled = status["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Scheduled").unwrap();
        assert_eq!(scheduled["status"], "False", "{job}");
        assert_eq!(scheduled["reason"], "Unschedulable", "{job}");

        // The node comes back able to run it, but asking more than the job pays.
        register(&app, &registration("gn-a", "eu-west", 2, "9.00")).await;
        assert_eq!(api::scheduling::schedule_once(&state).await.unwrap(), 0);
        let job = get_job(&app, &key, &id).await;
        assert_eq!(job["status"]["phase"], "Pending", "{job}");
        assert_eq!(job["status"]["reason"], "Unschedulable", "{job}");
        let message = job["status"]["message"].as_str().unwrap();
        assert!(message.contains("1 too expensive"), "the explanation follows the fleet: {message}");

        // A job that pays enough is placed on the same node.
        let rich = submit(&app, &key, &priced_spec("10.00")).await;
        assert_eq!(api::scheduling::schedule_once(&state).await.unwrap(), 1);
        assert_eq!(get_job(&app, &key, &rich).await["status"]["phase"], "Scheduled");
        assert_eq!(get_job(&app, &key, &id).await["status"]["phase"], "Pending");
    }
}
