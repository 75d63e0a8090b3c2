//! API-server scenarios of the ComputeJob controller: each test runs one reconcile against a
//! simulated API server that checks every request, and an in-memory hub.

use std::sync::Arc;

use crds::v1alpha1::JobPhase;
use http::Method;
use serde_json::{Value, json};

use super::*;
use crate::fixtures::{self, ApiServer, FakeHub, expect, expect_no_more};

const OBJECT: &str = "/apis/agora.dev/v1alpha1/namespaces/team-a/computejobs/train";
const STATUS: &str = "/apis/agora.dev/v1alpha1/namespaces/team-a/computejobs/train/status";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/team-a/events";
const UID: &str = "5f1e0c1a-0000-4000-8000-000000000001";

fn object(finalizers: &[&str], status: Option<Value>, spec: Value) -> Arc<DynamicObject> {
    let mut object = json!({
        "apiVersion": "agora.dev/v1alpha1",
        "kind": "ComputeJob",
        "metadata": {
            "name": "train",
            "namespace": "team-a",
            "uid": UID,
            "generation": 1,
            "resourceVersion": "7",
            "finalizers": finalizers,
        },
        "spec": spec,
    });
    if let Some(status) = status {
        object["status"] = status;
    }
    Arc::new(serde_json::from_value(object).unwrap())
}

fn spec_json() -> Value {
    serde_json::to_value(fixtures::spec()).unwrap()
}

fn context(hub: &Arc<FakeHub>) -> (Arc<Context<FakeHub>>, ApiServer) {
    let (client, server) = fixtures::client();
    let ctx = Context::new(
        client,
        Arc::clone(hub),
        Metrics::unregistered(),
        "hub-0".into(),
        Duration::from_secs(2),
    );
    (Arc::new(ctx), server)
}

/// Runs one reconcile in the background; the test plays the API server meanwhile.
fn start(
    object: Arc<DynamicObject>,
    ctx: &Arc<Context<FakeHub>>,
) -> tokio::task::JoinHandle<Result<Action>> {
    tokio::spawn(reconcile(object, Arc::clone(ctx)))
}

/// The status the hub's job shows for `phase` at cursor `cursor`, as the operator last wrote it.
async fn submitted(hub: &Arc<FakeHub>) -> Value {
    hub.submit(crate::hub::Submission {
        tenant: "k8s-team-a".into(),
        key: UID.into(),
        name: "train".into(),
        spec: fixtures::spec(),
    })
    .await
    .unwrap();
    json!({"phase": "Pending", "jobId": "job-1", "eventCursor": "1", "observedGeneration": 1})
}

#[tokio::test]
async fn a_new_computejob_gets_the_finalizer_before_anything_is_submitted() {
    let hub = Arc::new(FakeHub::default());
    let (ctx, mut server) = context(&hub);
    let task = start(object(&[], None, spec_json()), &ctx);

    let patch = expect(&mut server, Method::PATCH, OBJECT).await;
    assert_eq!(
        patch.body,
        json!({"metadata": {"finalizers": [FINALIZER], "resourceVersion": "7"}}),
        "the finalizer goes on with the version read, so a concurrent change is not overwritten"
    );
    patch.echo();
    assert_eq!(task.await.unwrap().unwrap(), Action::await_change());
    assert!(hub.state().submissions.is_empty());
    drop(ctx);
    expect_no_more(server).await;
}

#[tokio::test]
async fn a_computejob_is_submitted_once_and_its_job_mirrored_into_the_status() {
    let hub = Arc::new(FakeHub::default());
    let (ctx, mut server) = context(&hub);
    let task = start(object(&[FINALIZER], None, spec_json()), &ctx);

    let event = expect(&mut server, Method::POST, EVENTS).await;
    assert_eq!(event.body["reason"], "Submitted");
    assert_eq!(event.body["type"], "Normal");
    assert_eq!(event.body["regarding"]["name"], "train");
    assert_eq!(event.body["regarding"]["uid"], UID);
    assert_eq!(event.body["reportingController"], "agora-operator");
    assert_eq!(event.body["reportingInstance"], "hub-0");
    event.echo();

    let status = expect(&mut server, Method::PATCH, STATUS).await;
    assert!(
        status.query.contains("fieldManager=agora-operator") && status.query.contains("force=true"),
        "server-side apply as the operator: {}",
        status.query
    );
    let written = &status.body["status"];
    assert_eq!(written["jobId"], "job-1");
    assert_eq!(written["phase"], "Pending");
    assert_eq!(written["observedGeneration"], 1);
    assert_eq!(written["eventCursor"], "1");
    assert_eq!(written["conditions"][0]["type"], "Accepted");
    assert_eq!(written["conditions"][0]["status"], "True");
    assert_eq!(written["conditions"][0]["observedGeneration"], 1);
    status.echo();

    assert_eq!(
        task.await.unwrap().unwrap(),
        Action::requeue(Duration::from_secs(2)),
        "a job still running is read again at the poll interval"
    );
    let submissions = hub.state().submissions.clone();
    assert_eq!(submissions.len(), 1);
    assert_eq!(submissions[0].tenant, "k8s-team-a");
    assert_eq!(submissions[0].key, UID, "idempotent by the object's UID");
    assert_eq!(submissions[0].name, "train");
    drop(ctx);
    expect_no_more(server).await;
}

#[tokio::test]
async fn an_unchanged_job_writes_nothing_and_new_events_become_kubernetes_events() {
    let hub = Arc::new(FakeHub::default());
    let status = submitted(&hub).await;
    let mut first = hub.job("k8s-team-a", "job-1").await.unwrap().status;
    first.job_id = Some("job-1".into());
    first.event_cursor = Some("1".into());
    first.observed_generation = Some(1);
    for c in &mut first.conditions {
        c.observed_generation = Some(1);
    }
    let current = serde_json::to_value(&first).unwrap();
    assert_eq!(current["jobId"], status["jobId"]);

    // Nothing happened on the hub: nothing is written.
    let (ctx, server) = context(&hub);
    let action = start(
        object(&[FINALIZER], Some(current.clone()), spec_json()),
        &ctx,
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(2)));
    drop(ctx);
    expect_no_more(server).await;

    // The node was lost: a Warning Event, and the status moves on.
    hub.advance("job-1", JobPhase::Scheduled, "Placed");
    hub.advance("job-1", JobPhase::Pending, "NodeLost");
    let (ctx, mut server) = context(&hub);
    let task = start(object(&[FINALIZER], Some(current), spec_json()), &ctx);
    let placed = expect(&mut server, Method::POST, EVENTS).await;
    assert_eq!(
        (&placed.body["reason"], &placed.body["type"]),
        (&json!("Placed"), &json!("Normal"))
    );
    placed.echo();
    let lost = expect(&mut server, Method::POST, EVENTS).await;
    assert_eq!(
        (&lost.body["reason"], &lost.body["type"]),
        (&json!("NodeLost"), &json!("Warning"))
    );
    lost.echo();
    let patch = expect(&mut server, Method::PATCH, STATUS).await;
    assert_eq!(patch.body["status"]["eventCursor"], "3");
    patch.echo();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn deleting_cancels_the_job_and_keeps_the_object_until_its_final_usage_is_written() {
    let hub = Arc::new(FakeHub::default());
    let current = submitted(&hub).await;
    hub.advance("job-1", JobPhase::Running, "Started");
    let mut deleted = (*object(&["other.io/keep", FINALIZER], Some(current), spec_json())).clone();
    deleted.metadata.deletion_timestamp = Some(fixtures_time());
    let (ctx, mut server) = context(&hub);
    let task = start(Arc::new(deleted), &ctx);

    for reason in ["Started", "Cancelled"] {
        let event = expect(&mut server, Method::POST, EVENTS).await;
        assert_eq!(event.body["reason"], reason);
        event.echo();
    }
    let status = expect(&mut server, Method::PATCH, STATUS).await;
    assert_eq!(status.body["status"]["phase"], "Cancelled");
    assert_eq!(
        status.body["status"]["usage"],
        json!({"gpuSeconds": 42, "cost": "0.06"}),
        "the final usage is written before the object goes"
    );
    status.echo();
    let release = expect(&mut server, Method::PATCH, OBJECT).await;
    assert_eq!(
        release.body["metadata"]["finalizers"],
        json!(["other.io/keep"]),
        "only the operator's own finalizer is removed"
    );
    release.echo();
    assert_eq!(task.await.unwrap().unwrap(), Action::await_change());
    assert_eq!(hub.state().cancels, ["job-1"]);
}

#[tokio::test]
async fn deleting_an_object_whose_job_id_was_never_recorded_still_cancels_its_job() {
    let hub = Arc::new(FakeHub::default());
    // Submitted, but the operator crashed before writing the status.
    submitted(&hub).await;
    let mut deleted = (*object(&[FINALIZER], None, spec_json())).clone();
    deleted.metadata.deletion_timestamp = Some(fixtures_time());
    let (ctx, mut server) = context(&hub);
    let task = start(Arc::new(deleted), &ctx);
    for _ in 0..2 {
        expect(&mut server, Method::POST, EVENTS).await.echo();
    }
    expect(&mut server, Method::PATCH, STATUS).await.echo();
    expect(&mut server, Method::PATCH, OBJECT).await.echo();
    task.await.unwrap().unwrap();
    assert_eq!(hub.state().cancels, ["job-1"]);
}

#[tokio::test]
async fn an_object_that_is_not_a_valid_computejob_is_reported_and_nothing_crashes() {
    let hub = Arc::new(FakeHub::default());
    let mut spec = spec_json();
    spec["resources"]["workers"] = json!("two");
    let (ctx, mut server) = context(&hub);
    let task = start(object(&[FINALIZER], None, spec.clone()), &ctx);

    let event = expect(&mut server, Method::POST, EVENTS).await;
    assert_eq!(event.body["type"], "Warning");
    assert_eq!(event.body["reason"], "InvalidObject");
    let note = event.body["note"].as_str().unwrap().to_string();
    assert!(note.contains("spec.resources.workers"), "{note}");
    event.echo();
    let status = expect(&mut server, Method::PATCH, STATUS).await;
    let written = status.body["status"].clone();
    assert_eq!(written["conditions"][0]["type"], "Accepted");
    assert_eq!(written["conditions"][0]["status"], "False");
    assert_eq!(written["conditions"][0]["reason"], "InvalidObject");
    status.echo();
    assert_eq!(task.await.unwrap().unwrap(), Action::await_change());
    assert!(hub.state().submissions.is_empty());
    drop(ctx);
    expect_no_more(server).await;

    // Reconciled again as it is: reported once, not again.
    let (ctx, server) = context(&hub);
    start(object(&[FINALIZER], Some(written), spec), &ctx)
        .await
        .unwrap()
        .unwrap();
    drop(ctx);
    expect_no_more(server).await;
}

#[tokio::test]
async fn a_spec_the_hub_refuses_is_reported_and_not_submitted_again_until_it_changes() {
    let hub = Arc::new(FakeHub::default());
    hub.state().refuse = Some(HubError::Invalid {
        field: Some("spec.gpu.models[0]".into()),
        message: "unknown GPU model \"H900\"".into(),
    });
    let (ctx, mut server) = context(&hub);
    let task = start(object(&[FINALIZER], None, spec_json()), &ctx);
    let event = expect(&mut server, Method::POST, EVENTS).await;
    assert_eq!(event.body["reason"], "Rejected");
    assert!(
        event.body["note"]
            .as_str()
            .unwrap()
            .contains("spec.gpu.models[0]: unknown GPU model")
    );
    event.echo();
    let status = expect(&mut server, Method::PATCH, STATUS).await;
    let written = status.body["status"].clone();
    assert_eq!(written["conditions"][0]["reason"], "Rejected");
    status.echo();
    task.await.unwrap().unwrap();
    drop(ctx);
    expect_no_more(server).await;

    let (ctx, server) = context(&hub);
    start(object(&[FINALIZER], Some(written), spec_json()), &ctx)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        hub.state().submissions.len(),
        1,
        "same generation: not again"
    );
    drop(ctx);
    expect_no_more(server).await;
}

#[tokio::test]
async fn a_spec_changed_after_submission_is_refused_with_a_condition() {
    let hub = Arc::new(FakeHub::default());
    let current = submitted(&hub).await;
    let mut changed = spec_json();
    changed["resources"]["gpusPerWorker"] = json!(8);
    let (ctx, mut server) = context(&hub);
    let task = start(object(&[FINALIZER], Some(current), changed), &ctx);
    let event = expect(&mut server, Method::POST, EVENTS).await;
    assert_eq!(event.body["reason"], "SpecChanged");
    assert_eq!(event.body["type"], "Warning");
    event.echo();
    let status = expect(&mut server, Method::PATCH, STATUS).await;
    let conditions = status.body["status"]["conditions"]
        .as_array()
        .unwrap()
        .clone();
    let changed = conditions
        .iter()
        .find(|c| c["type"] == "SpecChanged")
        .expect("a SpecChanged condition");
    assert_eq!(changed["status"], "True");
    assert!(
        changed["message"]
            .as_str()
            .unwrap()
            .contains("Delete the ComputeJob and create it again")
    );
    status.echo();
    task.await.unwrap().unwrap();
    assert_eq!(hub.state().submissions.len(), 1);
}

#[tokio::test]
async fn api_errors_back_off_per_object() {
    let hub = Arc::new(FakeHub::default());
    let (ctx, mut server) = context(&hub);
    let object = object(&[], None, spec_json());
    let task = start(Arc::clone(&object), &ctx);
    expect(&mut server, Method::PATCH, OBJECT)
        .await
        .reply(409, &fixtures::conflict());
    let error = task.await.unwrap().unwrap_err();
    assert_eq!(error.metric_label(), "kube_conflict");
    assert_eq!(ctx.metrics.errors(COMPUTEJOB, "kube_conflict"), 1);
    let delays: Vec<Action> = (0..3)
        .map(|_| error_policy(Arc::clone(&object), &error, Arc::clone(&ctx)))
        .collect();
    assert_eq!(
        delays,
        [1, 2, 4].map(|s| Action::requeue(Duration::from_secs(s)))
    );
    assert_eq!(backoff(30), MAX_BACKOFF);
}

fn fixtures_time() -> Time {
    Time(jiff::Timestamp::from_second(1_700_000_100).unwrap())
}
