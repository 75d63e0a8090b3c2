//! What the operator's tests share: a simulated API server that checks each request the operator
//! makes (`tower_test`), and an in-memory hub.

use std::{
    collections::BTreeMap,
    sync::{Mutex, PoisonError},
};

use crds::{
    rest::{Job, JobEvent, JobEventList, Node},
    v1alpha1::{ComputeJobSpec, ComputeJobStatus, JobPhase, Usage},
};
use http::{Method, Request, Response};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::client::Body;
use serde_json::{Value, json};
use tower_test::mock::{Handle, SendResponse};

use crate::hub::{Hub, HubError, Submission};

pub type ApiServer = Handle<Request<Body>, Response<Body>>;

/// A client whose requests go to the returned simulated API server.
pub fn client() -> (kube::Client, ApiServer) {
    let (service, server) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (kube::Client::new(service, "default"), server)
}

/// One request the simulated API server received.
pub struct Received {
    pub query: String,
    pub body: Value,
    send: SendResponse<Response<Body>>,
}

impl Received {
    pub fn reply(self, status: u16, body: &Value) {
        self.send.send_response(
            Response::builder()
                .status(status)
                .body(Body::from(serde_json::to_vec(body).unwrap()))
                .unwrap(),
        );
    }

    /// Answers 200 with the body received (what a create or an apply returns, near enough).
    pub fn echo(self) {
        let body = self.body.clone();
        self.reply(200, &body);
    }
}

/// The operator's next request, which must be `method` on `path`.
pub async fn expect(server: &mut ApiServer, method: Method, path: &str) -> Received {
    let (request, send) = server
        .next_request()
        .await
        .unwrap_or_else(|| panic!("the operator ended without sending {method} {path}"));
    assert_eq!(
        (request.method(), request.uri().path()),
        (&method, path),
        "unexpected request {}",
        request.uri()
    );
    let query = request.uri().query().unwrap_or("").to_string();
    assert!(
        crate::rbac::permits(method.as_str(), path, &query),
        "{method} {path} needs {:?}, which the operator's RBAC (operator::rbac) does not grant",
        crate::rbac::grant_for(method.as_str(), path, &query)
    );
    let bytes = request.into_body().collect_bytes().await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    Received { query, body, send }
}

/// Asserts that the operator sends nothing more (its client is gone).
pub async fn expect_no_more(mut server: ApiServer) {
    if let Some((request, _)) = server.next_request().await {
        panic!("unexpected request {} {}", request.method(), request.uri());
    }
}

/// A `404 Not Found` Status.
pub fn not_found() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"})
}

/// A `409 Conflict` Status.
pub fn conflict() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict", "code": 409, "message": "the object has been modified"})
}

/// The quickstart example's spec.
pub fn spec() -> ComputeJobSpec {
    serde_json::from_value(json!({
        "kind": "Batch",
        "workload": {"builtin": {"sleep": {"durationSeconds": 10}}},
        "resources": {"workers": 1, "gpusPerWorker": 1},
        "pricing": {"maxPricePerGpuHour": "5.00"}
    }))
    .unwrap()
}

fn time(seconds: i64) -> Time {
    Time(jiff::Timestamp::from_second(seconds).unwrap())
}

/// What the in-memory hub holds.
#[derive(Default)]
pub struct HubState {
    pub jobs: BTreeMap<String, Job>,
    pub keys: BTreeMap<(String, String), String>,
    pub events: Vec<(String, JobEvent)>,
    pub submissions: Vec<Submission>,
    pub cancels: Vec<String>,
    pub refuse: Option<HubError>,
    pub nodes: Vec<Node>,
}

/// A hub in memory: jobs move only when a test moves them.
#[derive(Default)]
pub struct FakeHub {
    pub state: Mutex<HubState>,
}

impl FakeHub {
    pub fn state(&self) -> std::sync::MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Moves job `id` to `phase`, logging the event `reason`.
    pub fn advance(&self, id: &str, phase: JobPhase, reason: &str) {
        let mut state = self.state();
        let job = state.jobs.get_mut(id).unwrap();
        let from = job.status.phase;
        job.status.phase = phase;
        job.status.reason = Some(reason.into());
        if phase.is_final() {
            job.status.usage = Some(Usage {
                gpu_seconds: 42,
                cost: "0.06".into(),
            });
        }
        Self::log(&mut state, id, Some(from), phase, reason);
    }

    fn log(state: &mut HubState, id: &str, from: Option<JobPhase>, to: JobPhase, reason: &str) {
        let cursor = (state.events.len() + 1).to_string();
        state.events.push((
            id.to_string(),
            JobEvent {
                cursor,
                time: time(1_700_000_000),
                from,
                to,
                reason: reason.into(),
                message: None,
                attempt: 0,
                node: None,
            },
        ));
    }
}

impl Hub for FakeHub {
    async fn submit(&self, submission: Submission) -> Result<Job, HubError> {
        let mut state = self.state();
        state.submissions.push(submission.clone());
        if let Some(error) = state.refuse.clone() {
            return Err(error);
        }
        let key = (submission.tenant.clone(), submission.key.clone());
        if let Some(id) = state.keys.get(&key) {
            return Ok(state.jobs[id].clone());
        }
        let id = format!("job-{}", state.jobs.len() + 1);
        let job = Job {
            id: id.clone(),
            name: Some(submission.name),
            spec: submission.spec,
            status: ComputeJobStatus {
                phase: JobPhase::Pending,
                conditions: vec![k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
                    type_: "Accepted".into(),
                    status: "True".into(),
                    reason: "Submitted".into(),
                    message: "the hub accepted the job".into(),
                    last_transition_time: time(1_700_000_000),
                    observed_generation: None,
                }],
                job_id: Some(id.clone()),
                ..ComputeJobStatus::default()
            },
            results: Vec::new(),
            receipts: Vec::new(),
        };
        state.jobs.insert(id.clone(), job.clone());
        state.keys.insert(key, id.clone());
        Self::log(&mut state, &id, None, JobPhase::Pending, "Submitted");
        Ok(job)
    }

    async fn job(&self, _tenant: &str, id: &str) -> Result<Job, HubError> {
        self.state()
            .jobs
            .get(id)
            .cloned()
            .ok_or_else(|| HubError::NotFound(format!("job {id}")))
    }

    async fn find(&self, tenant: &str, key: &str) -> Result<Option<Job>, HubError> {
        let state = self.state();
        Ok(state
            .keys
            .get(&(tenant.to_string(), key.to_string()))
            .map(|id| state.jobs[id].clone()))
    }

    async fn cancel(&self, tenant: &str, id: &str) -> Result<Job, HubError> {
        let phase = self.job(tenant, id).await?.status.phase;
        if phase.is_final() && phase != JobPhase::Cancelled {
            return Err(HubError::Conflict {
                code: "job_finished".into(),
                message: format!("job {id} already ended ({phase})"),
            });
        }
        self.state().cancels.push(id.to_string());
        if phase != JobPhase::Cancelled {
            self.advance(id, JobPhase::Cancelled, "Cancelled");
        }
        self.job(tenant, id).await
    }

    async fn events(
        &self,
        _tenant: &str,
        id: &str,
        after: Option<&str>,
    ) -> Result<JobEventList, HubError> {
        let after: usize = after.map_or(0, |a| a.parse().unwrap());
        let items = self
            .state()
            .events
            .iter()
            .filter(|(job, e)| job == id && e.cursor.parse::<usize>().unwrap() > after)
            .map(|(_, e)| e.clone())
            .collect();
        Ok(JobEventList { items, next: None })
    }

    async fn nodes(&self) -> Result<Vec<Node>, HubError> {
        Ok(self.state().nodes.clone())
    }
}
