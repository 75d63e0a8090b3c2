//! The `kubernetes` executor's client: creates a worker's objects in the node's own cluster,
//! watches its Pod until it ends, and deletes what it created.
//!
//! Running a worker:
//! 1. create the job's namespace and its NetworkPolicy (either existing already is fine: another
//!    worker of the same job on this node created them), then the worker's Pod;
//! 2. watch the Pod (a `watch` on the single Pod by field selector, re-issued from a fresh `get`
//!    whenever the API server ends it) until its phase is `Succeeded` or `Failed`; a failure's
//!    message names the container's exit code and ends with the log tail (`pods/log` with
//!    `tailLines`, the whole message within [`MAX_MESSAGE_BYTES`]); meanwhile, once the container
//!    started, follow its log (`pods/log?follow=true`) for the checkpoint markers the workload
//!    prints ([`super::follow`]);
//! 3. on cancel (the hub's stop, the agent shutting down) or at `maxRuntimeSeconds`, delete the Pod
//!    at once, with [`KILL_GRACE`] for the workload to exit;
//! 4. whatever the ending, delete the Pod, then the namespace (and with it the NetworkPolicy)
//!    unless another worker of the same job still has a Pod in it: one namespace holds one job's
//!    workers on this node, so the last to end removes it.
//!
//! It uses exactly the verbs the agora-node chart's RBAC grants: namespaces create/get/delete, pods
//! create/get/list/watch/delete, pods/log get, networkpolicies create. An API server error ends
//! the worker `Failed` with a message saying what was refused (for 403, which permission the
//! agent's service account lacks); nothing here panics on what the API server answers.

use std::time::Duration;

use crds::{agent::Assignment, v1alpha1::EnvVar};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::{
    core::v1::{Namespace, Pod},
    networking::v1::NetworkPolicy,
};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, LogParams, PostParams, WatchEvent, WatchParams},
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, warn};

use super::{
    CONTAINER, PodOptions,
    follow::{self, Progress},
    namespace, namespace_name, network_policy, pod,
};
use crate::executor::{
    CheckpointSink, MAX_RUNTIME_EXCEEDED, Outcome, WorkerId,
    process::{KILL_GRACE, MAX_MESSAGE_BYTES, with_tail},
};

/// How many lines of a failed Pod's log are fetched.
pub const LOG_TAIL_LINES: i64 = 200;

/// How long one watch request lasts before the API server ends it and the executor re-issues it.
const WATCH_TIMEOUT_SECONDS: u32 = 290;

/// How long the log is still followed after the Pod ended, for the markers printed last.
const LOG_GRACE: Duration = Duration::from_secs(5);

/// Waiting reasons after which a Pod never starts by itself: the worker fails instead of waiting
/// for its deadline.
const NEVER_STARTS: [&str; 4] = [
    "InvalidImageName",
    "ErrImageNeverPull",
    "CreateContainerConfigError",
    "CreateContainerError",
];

/// The kubernetes executor: a client of the node's cluster and the owner's Pod options.
#[derive(Clone)]
pub struct Executor {
    client: Client,
    options: PodOptions,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Executor {
    /// An executor that talks to the cluster through `client`.
    pub fn new(client: Client, options: PodOptions) -> Self {
        Self { client, options }
    }

    /// An executor for the cluster the agent runs in: the in-cluster service account (or, outside
    /// a cluster, the kubeconfig). Fails with a clear message where neither is found, so an agent
    /// started with `--executor kubernetes` outside a cluster stops at once.
    pub async fn connect(options: PodOptions) -> anyhow::Result<Self> {
        let client = Client::try_default().await.map_err(|e| {
            anyhow::anyhow!(
                "--executor kubernetes: no Kubernetes cluster configuration found (the agent needs \
                 to run in a Pod with a service account, as the agora-node chart deploys it, or \
                 have a kubeconfig): {e}"
            )
        })?;
        Ok(Self::new(client, options))
    }

    /// Runs `assignment`'s container with `env` until it ends, `maxRuntimeSeconds` passes or
    /// `cancel` fires, then deletes what it created. The checkpoints the workload reports on its
    /// log go to `checkpoints`.
    pub async fn run(
        &self,
        assignment: &Assignment,
        env: &[EnvVar],
        cancel: &CancellationToken,
        checkpoints: &CheckpointSink,
    ) -> Outcome {
        let pod = match pod(assignment, env, &self.options) {
            Ok(pod) => pod,
            Err(e) => return Outcome::failed(e.to_string()),
        };
        if cancel.is_cancelled() {
            return Outcome::stopped("stopped before completion");
        }
        let ns = namespace_name(&assignment.job);
        let name = assignment.id.as_str();
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        if let Err(e) = create(&namespaces, &namespace(assignment), "namespaces").await {
            return e;
        }
        let policies: Api<NetworkPolicy> = Api::namespaced(self.client.clone(), &ns);
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let outcome = match create(&policies, &network_policy(assignment), "networkpolicies").await
        {
            Err(e) => e,
            Ok(()) => match pods.create(&PostParams::default(), &pod).await {
                Err(e) => refused(&e, "create", "pods", &format!("the Pod {ns}/{name}")),
                Ok(_) => {
                    info!(namespace = %ns, pod = name, "pod created");
                    let outcome = supervise(
                        &pods,
                        name,
                        assignment.max_runtime_seconds,
                        cancel,
                        checkpoints,
                    )
                    .await;
                    delete_pod(&pods, name).await;
                    outcome
                }
            },
        };
        self.delete_namespace_if_unused(&assignment.job, name).await;
        outcome
    }

    /// After an agent restart, for assignment `id` of `worker` a previous run of the agent
    /// started: deletes its Pod (which outlived the agent) and, when no other worker of the job
    /// is left, the job's namespace, so the worker is never running twice.
    pub async fn clean_up_after_restart(&self, id: &str, worker: &WorkerId) {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &namespace_name(&worker.job));
        delete_pod(&pods, id).await;
        self.delete_namespace_if_unused(&worker.job, id).await;
    }

    /// Deletes `job`'s namespace unless a Pod other than `ended` (which may still be
    /// terminating) is in it.
    async fn delete_namespace_if_unused(&self, job: &str, ended: &str) {
        let ns = namespace_name(job);
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        match pods.list(&ListParams::default()).await {
            Ok(list) if list.items.iter().any(|p| p.name_any() != ended) => {
                info!(namespace = %ns, "other workers of the job remain; keeping the namespace");
                return;
            }
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => return,
            Err(e) => {
                warn!(namespace = %ns, error = %e, "cannot list the namespace's pods; keeping it");
                return;
            }
        }
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        match namespaces.delete(&ns, &DeleteParams::background()).await {
            Ok(_) => info!(namespace = %ns, "namespace deleted"),
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(e) => warn!(namespace = %ns, error = %e, "cannot delete the namespace"),
        }
    }
}

/// Creates `object`; one that exists already is fine (another worker of the job made it).
async fn create<K>(api: &Api<K>, object: &K, resource: &str) -> Result<(), Outcome>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    match api.create(&PostParams::default(), object).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(e) => Err(refused(
            &e,
            "create",
            resource,
            &format!(
                "the {} {}",
                resource.trim_end_matches('s'),
                object.name_any()
            ),
        )),
    }
}

/// The outcome of the API server refusing to `verb` `what` (of kind `resource`).
fn refused(error: &kube::Error, verb: &str, resource: &str, what: &str) -> Outcome {
    match error {
        kube::Error::Api(status) if status.code == 403 => Outcome::failed(format!(
            "the Kubernetes API server refused to {verb} {what} (403 Forbidden): the agent's \
             service account needs permission to `{verb}` `{resource}` (the agora-node chart's \
             RBAC grants it): {}",
            status.message
        )),
        error => Outcome::failed(format!("cannot {verb} {what}: {error}")),
    }
}

/// Waits for the Pod to end, following its log for checkpoints meanwhile; the caller deletes it
/// (at once on cancel or at the runtime limit).
async fn supervise(
    pods: &Api<Pod>,
    name: &str,
    max_runtime_seconds: Option<u64>,
    cancel: &CancellationToken,
    checkpoints: &CheckpointSink,
) -> Outcome {
    let limit = async {
        match max_runtime_seconds {
            Some(seconds) => tokio::time::sleep(Duration::from_secs(seconds)).await,
            None => std::future::pending().await,
        }
    };
    let (progress, watched) = watch::channel(Progress::Waiting);
    let follower = follow::follow(pods.clone(), name.to_string(), watched, checkpoints.clone());
    let mut follower = tokio::spawn(follower.instrument(tracing::Span::current()));
    let ended = tokio::select! {
        ended = wait_for_end(pods, name, &progress) => Ok(ended),
        () = cancel.cancelled() => Err(Outcome::stopped("stopped before completion")),
        () = limit => Err(Outcome::failed(MAX_RUNTIME_EXCEEDED)),
    };
    let ended = match ended {
        Ok(ended) => ended,
        Err(outcome) => {
            follower.abort();
            return outcome;
        }
    };
    // What the workload printed last may still be on its way.
    progress.send_replace(Progress::Ended);
    if tokio::time::timeout(LOG_GRACE, &mut follower)
        .await
        .is_err()
    {
        follower.abort();
    }
    match ended {
        Ok(Ended::Succeeded) => Outcome::succeeded(),
        Ok(Ended::Failed { exit_code, message }) => {
            let failed = Outcome {
                exit_code,
                ..Outcome::failed(message)
            };
            let log = LogParams {
                container: Some(CONTAINER.into()),
                tail_lines: Some(LOG_TAIL_LINES),
                limit_bytes: i64::try_from(MAX_MESSAGE_BYTES).ok(),
                ..LogParams::default()
            };
            match pods.logs(name, &log).await {
                Ok(tail) => with_tail(failed, &tail),
                Err(e) => with_tail(failed, &format!("(the log is unavailable: {e})")),
            }
        }
        Err(e) => refused(&e, "watch", "pods", &format!("the Pod {name}")),
    }
}

/// How a Pod ended.
#[derive(Debug, PartialEq)]
enum Ended {
    Succeeded,
    Failed {
        exit_code: Option<i32>,
        message: String,
    },
}

/// Watches the Pod until it ends: a `get` for its current state and resource version, then a
/// watch from there, again whenever the API server closes the watch. What it sees of the
/// container goes to `progress`.
async fn wait_for_end(
    pods: &Api<Pod>,
    name: &str,
    progress: &watch::Sender<Progress>,
) -> Result<Ended, kube::Error> {
    let params = WatchParams::default()
        .fields(&format!("metadata.name={name}"))
        .timeout(WATCH_TIMEOUT_SECONDS);
    loop {
        let pod = match pods.get(name).await {
            Ok(pod) => pod,
            Err(kube::Error::Api(status)) if status.code == 404 => return Ok(deleted()),
            Err(e) => return Err(e),
        };
        follow::observe(progress, &pod);
        if let Some(ended) = ended(&pod) {
            return Ok(ended);
        }
        let version = pod.resource_version().unwrap_or_else(|| "0".into());
        let mut events = pods.watch(&params, &version).await?.boxed();
        while let Some(event) = events.try_next().await? {
            match event {
                WatchEvent::Added(pod) | WatchEvent::Modified(pod) => {
                    follow::observe(progress, &pod);
                    if let Some(ended) = ended(&pod) {
                        return Ok(ended);
                    }
                }
                WatchEvent::Deleted(_) => return Ok(deleted()),
                WatchEvent::Bookmark(_) => {}
                // 410 Gone: the version is too old to watch from; start again from a `get`.
                WatchEvent::Error(status) if status.code == 410 => break,
                WatchEvent::Error(status) => return Err(kube::Error::Api(status)),
            }
        }
    }
}

fn deleted() -> Ended {
    Ended::Failed {
        exit_code: None,
        message: "the Pod was deleted by someone other than the agent".into(),
    }
}

/// How `pod` ended, if it has.
fn ended(pod: &Pod) -> Option<Ended> {
    let status = pod.status.as_ref()?;
    let container = status
        .container_statuses
        .iter()
        .flatten()
        .find(|c| c.name == CONTAINER);
    let state = container.and_then(|c| c.state.as_ref());
    match status.phase.as_deref() {
        Some("Succeeded") => Some(Ended::Succeeded),
        Some("Failed") => {
            if status.reason.as_deref() == Some("DeadlineExceeded") {
                return Some(Ended::Failed {
                    exit_code: None,
                    message: MAX_RUNTIME_EXCEEDED.into(),
                });
            }
            let terminated = state.and_then(|s| s.terminated.as_ref());
            let exit_code = terminated.map(|t| t.exit_code);
            let why = terminated
                .and_then(|t| t.reason.clone())
                .or_else(|| status.reason.clone())
                .or_else(|| status.message.clone());
            let mut message = match exit_code {
                Some(code) => format!("exited with code {code}"),
                None => "the Pod failed".to_string(),
            };
            if let Some(why) = why {
                message.push_str(&format!(" ({why})"));
            }
            Some(Ended::Failed { exit_code, message })
        }
        _ => {
            let waiting = state.and_then(|s| s.waiting.as_ref())?;
            let reason = waiting.reason.as_deref()?;
            NEVER_STARTS.contains(&reason).then(|| Ended::Failed {
                exit_code: None,
                message: format!(
                    "the container cannot start ({reason}): {}",
                    waiting.message.as_deref().unwrap_or("")
                ),
            })
        }
    }
}

/// Deletes the Pod with [`KILL_GRACE`] for its workload to exit; one already gone is fine.
async fn delete_pod(pods: &Api<Pod>, name: &str) {
    let params = DeleteParams {
        grace_period_seconds: u32::try_from(KILL_GRACE.as_secs()).ok(),
        ..DeleteParams::background()
    };
    match pods.delete(name, &params).await {
        Ok(_) => info!(pod = name, "pod deleted"),
        Err(kube::Error::Api(status)) if status.code == 404 => {}
        Err(e) => warn!(pod = name, error = %e, "cannot delete the pod"),
    }
}

/// Scenarios against a simulated API server (`tower_test`'s mock service under a real
/// `kube::Client`): each test plays the API server's side request by request, checking the exact
/// method, path and body the executor sends, and answering as a cluster would.
#[cfg(test)]
mod tests {
    use crds::{agent::WorkerState, v1alpha1::Workload};
    use http::{Method, Request, Response};
    use kube::client::Body;
    use serde_json::{Value, json};
    use tower_test::mock::{self, Handle, SendResponse};

    use super::*;
    use crate::executor::{checkpoint_marker::Checkpoint, tests::assignment};

    /// The simulated API server's end of the client. The log follow for checkpoint markers
    /// (`pods/log?follow=true`) runs beside the watch, so its requests come in no fixed order
    /// with the others: [`expect`] answers them on the side with `followed_log`, and keeps their
    /// queries in `follows`.
    struct ApiServer {
        handle: Handle<Request<Body>, Response<Body>>,
        followed_log: Vec<u8>,
        follows: Vec<String>,
    }

    /// A client of a simulated API server whose followed Pod log reads `followed_log`.
    fn api_server(followed_log: &[u8]) -> (mock::Mock<Request<Body>, Response<Body>>, ApiServer) {
        let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
        let server = ApiServer {
            handle,
            followed_log: followed_log.to_vec(),
            follows: Vec::new(),
        };
        (service, server)
    }

    const NS: &str = "/api/v1/namespaces";
    const POLICIES: &str = "/apis/networking.k8s.io/v1/namespaces/agora-job-1/networkpolicies";
    const PODS: &str = "/api/v1/namespaces/agora-job-1/pods";
    const POD: &str = "/api/v1/namespaces/agora-job-1/pods/asg-1";

    /// One request the simulated API server received.
    struct Received {
        query: String,
        body: Value,
        send: SendResponse<Response<Body>>,
    }

    impl Received {
        fn reply(self, status: u16, body: &Value) {
            self.reply_bytes(status, serde_json::to_vec(body).unwrap());
        }

        fn reply_bytes(self, status: u16, body: Vec<u8>) {
            self.send.send_response(
                Response::builder()
                    .status(status)
                    .body(Body::from(body))
                    .unwrap(),
            );
        }
    }

    /// Whether `request` follows the worker's log.
    fn is_follow(request: &Request<Body>) -> bool {
        request.uri().path() == format!("{POD}/log")
            && request.uri().query().unwrap_or("").contains("follow=true")
    }

    /// Answers a log follow with the server's `followed_log`.
    fn answer_follow(
        server: &mut ApiServer,
        request: &Request<Body>,
        send: SendResponse<Response<Body>>,
    ) {
        let query = request.uri().query().unwrap_or("").to_string();
        assert!(query.contains("container=worker"), "{query}");
        server.follows.push(query);
        send.send_response(
            Response::builder()
                .status(200)
                .body(Body::from(server.followed_log.clone()))
                .unwrap(),
        );
    }

    /// The executor's next request but log follows (answered on the side), which must be
    /// `method` on `path`.
    async fn expect(server: &mut ApiServer, method: Method, path: &str) -> Received {
        let (request, send) = loop {
            let (request, send) =
                server.handle.next_request().await.unwrap_or_else(|| {
                    panic!("the executor ended without sending {method} {path}")
                });
            if is_follow(&request) {
                answer_follow(server, &request, send);
                continue;
            }
            break (request, send);
        };
        assert_eq!(
            (request.method(), request.uri().path()),
            (&method, path),
            "unexpected request {}",
            request.uri()
        );
        let query = request.uri().query().unwrap_or("").to_string();
        let bytes = request.into_body().collect_bytes().await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        Received { query, body, send }
    }

    fn container_workload() -> Workload {
        Workload {
            image: Some("ghcr.io/x/train:1".into()),
            command: Some(vec!["python".into(), "train.py".into()]),
            ..Default::default()
        }
    }

    fn executor(client: Client) -> Executor {
        Executor::new(
            client,
            PodOptions {
                runtime_class: Some("gvisor".into()),
                ..PodOptions::default()
            },
        )
    }

    fn env() -> Vec<EnvVar> {
        vec![EnvVar {
            name: "AGORA_WORKER_RANK".into(),
            value: "0".into(),
        }]
    }

    /// The Pod as the API server reports it: `phase`, with the container in `state`.
    fn pod_status(version: &str, phase: &str, state: Value) -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "asg-1", "namespace": "agora-job-1", "resourceVersion": version},
            "spec": {"containers": [{"name": "worker", "image": "ghcr.io/x/train:1"}]},
            "status": {
                "phase": phase,
                "containerStatuses": [{
                    "name": "worker", "image": "ghcr.io/x/train:1", "imageID": "",
                    "ready": phase == "Running", "restartCount": 0, "state": state,
                }],
            },
        })
    }

    fn running(version: &str) -> Value {
        pod_status(
            version,
            "Running",
            json!({"running": {"startedAt": "2026-01-01T00:00:00Z"}}),
        )
    }

    fn terminated(version: &str, phase: &str, exit_code: i32, reason: &str) -> Value {
        pod_status(
            version,
            phase,
            json!({"terminated": {"exitCode": exit_code, "reason": reason}}),
        )
    }

    /// Watch events, one JSON object a line, as the API server streams them.
    fn events(events: &[(&str, Value)]) -> Vec<u8> {
        let mut body = Vec::new();
        for (kind, object) in events {
            body.extend(serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap());
            body.push(b'\n');
        }
        body
    }

    fn status(code: u16, reason: &str, message: &str) -> Value {
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code,
        })
    }

    fn pod_list(names: &[&str]) -> Value {
        let items: Vec<Value> = names
            .iter()
            .map(|n| json!({"metadata": {"name": n, "namespace": "agora-job-1"}}))
            .collect();
        json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items})
    }

    /// Namespace, NetworkPolicy and Pod creation, each answered with what was sent (201), or
    /// `namespace_status` for the namespace. Returns the Pod sent.
    async fn creations(server: &mut ApiServer, namespace_status: u16) -> Value {
        let ns = expect(server, Method::POST, NS).await;
        assert_eq!(ns.body["metadata"]["name"], "agora-job-1");
        assert_eq!(
            ns.body["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
            "restricted"
        );
        let body = ns.body.clone();
        if namespace_status == 409 {
            ns.reply(
                409,
                &status(
                    409,
                    "AlreadyExists",
                    "namespaces \"agora-job-1\" already exists",
                ),
            );
        } else {
            ns.reply(201, &body);
        }
        let policy = expect(server, Method::POST, POLICIES).await;
        assert_eq!(
            policy.body["spec"]["policyTypes"],
            json!(["Ingress", "Egress"])
        );
        let body = policy.body.clone();
        policy.reply(201, &body);
        let pod = expect(server, Method::POST, PODS).await;
        let sent = pod.body.clone();
        pod.reply(201, &sent);
        sent
    }

    /// What follows every worker's end: its Pod deleted with the kill grace, and the namespace
    /// deleted when no other worker's Pod is in it.
    async fn clean_up(server: &mut ApiServer, other_pods: bool) {
        let delete = expect(server, Method::DELETE, POD).await;
        assert_eq!(delete.body["gracePeriodSeconds"], 5);
        assert_eq!(delete.body["propagationPolicy"], "Background");
        delete.reply(200, &running("9"));
        let names: &[&str] = if other_pods {
            &["asg-1", "asg-2"]
        } else {
            &["asg-1"]
        };
        expect(server, Method::GET, PODS)
            .await
            .reply(200, &pod_list(names));
        if !other_pods {
            expect(server, Method::DELETE, "/api/v1/namespaces/agora-job-1")
                .await
                .reply(
                    200,
                    &json!({"apiVersion": "v1", "kind": "Namespace",
                            "metadata": {"name": "agora-job-1"}}),
                );
        }
    }

    #[tokio::test]
    async fn a_pod_that_succeeds_is_watched_to_its_end_and_cleaned_up() {
        let (service, mut server) = api_server(b"");
        let work = assignment(container_workload(), Some(3600));
        let run = async {
            executor(Client::new(service, "default"))
                .run(
                    &work,
                    &env(),
                    &CancellationToken::new(),
                    &CheckpointSink::channel().0,
                )
                .await
        };
        let api_server = async {
            let pod = creations(&mut server, 201).await;
            let spec = &pod["spec"];
            assert_eq!(pod["metadata"]["name"], "asg-1");
            assert_eq!(spec["runtimeClassName"], "gvisor");
            assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
            assert_eq!(spec["hostNetwork"], false);
            let container = &spec["containers"][0];
            assert_eq!(container["image"], "ghcr.io/x/train:1");
            assert_eq!(
                container["securityContext"]["capabilities"]["drop"],
                json!(["ALL"])
            );
            assert_eq!(
                container["securityContext"]["allowPrivilegeEscalation"],
                false
            );
            assert_eq!(container["resources"]["limits"]["nvidia.com/gpu"], "1");
            assert_eq!(
                container["env"],
                json!([{"name": "AGORA_WORKER_RANK", "value": "0"}])
            );
            expect(&mut server, Method::GET, POD).await.reply(
                200,
                &pod_status(
                    "5",
                    "Pending",
                    json!({"waiting": {"reason": "ContainerCreating"}}),
                ),
            );
            let watch = expect(&mut server, Method::GET, PODS).await;
            for part in [
                "watch=true",
                "fieldSelector=metadata.name%3Dasg-1",
                "resourceVersion=5",
            ] {
                assert!(watch.query.contains(part), "{part} in {}", watch.query);
            }
            watch.reply_bytes(
                200,
                events(&[
                    ("MODIFIED", running("6")),
                    ("MODIFIED", terminated("7", "Succeeded", 0, "Completed")),
                ]),
            );
            clean_up(&mut server, false).await;
        };
        let (outcome, ()) = tokio::join!(run, api_server);
        assert_eq!(outcome, Outcome::succeeded());
    }

    #[tokio::test]
    async fn checkpoint_markers_on_a_running_pods_log_reach_the_sink() {
        let log = b"epoch 1\nAGORA_CHECKPOINT {\"uri\":\"s3://b/run/step-7\",\"step\":7}\n\
                    AGORA_CHECKPOINT {\"uri\":\"\"}\nepoch 2\n";
        let (service, mut server) = api_server(log);
        let work = assignment(container_workload(), None);
        let (sink, mut latest) = CheckpointSink::channel();
        let run = async {
            executor(Client::new(service, "default"))
                .run(&work, &env(), &CancellationToken::new(), &sink)
                .await
        };
        let api_server = async {
            creations(&mut server, 201).await;
            expect(&mut server, Method::GET, POD)
                .await
                .reply(200, &running("5"));
            // The container runs: the watch and the log follow open together, in either order.
            let mut watch = None;
            while watch.is_none() || server.follows.is_empty() {
                let (request, send) = server.handle.next_request().await.unwrap();
                if is_follow(&request) {
                    answer_follow(&mut server, &request, send);
                } else {
                    assert_eq!(request.uri().path(), PODS, "{}", request.uri());
                    watch = Some(send);
                }
            }
            assert!(
                !server.follows[0].contains("sinceSeconds"),
                "the first follow reads the whole log: {}",
                server.follows[0]
            );
            // The checkpoint arrives while the Pod still runs (its watch is open).
            tokio::time::timeout(Duration::from_secs(10), latest.changed())
                .await
                .expect("a checkpoint within 10 s")
                .unwrap();
            assert_eq!(
                *latest.borrow_and_update(),
                Some(Checkpoint {
                    uri: "s3://b/run/step-7".into(),
                    step: 7
                })
            );
            let events = events(&[("MODIFIED", terminated("6", "Succeeded", 0, "Completed"))]);
            watch.unwrap().send_response(
                Response::builder()
                    .status(200)
                    .body(Body::from(events))
                    .unwrap(),
            );
            clean_up(&mut server, false).await;
            // The log read to its end once the Pod ended, from a little before the last output.
            assert!(
                server.follows.len() >= 2 && server.follows[1].contains("sinceSeconds="),
                "{:?}",
                server.follows
            );
        };
        let (outcome, ()) = tokio::join!(run, api_server);
        assert_eq!(outcome, Outcome::succeeded());
        // The log read again (same lines) and the malformed marker change nothing.
        assert!(!latest.has_changed().unwrap());
    }

    #[tokio::test]
    async fn a_failed_pod_reports_its_exit_code_and_log_tail() {
        let (service, mut server) = api_server(b"");
        let work = assignment(container_workload(), None);
        let run = async {
            executor(Client::new(service, "default"))
                .run(
                    &work,
                    &env(),
                    &CancellationToken::new(),
                    &CheckpointSink::channel().0,
                )
                .await
        };
        let long_log = format!("{}\nTraceback: CUDA out of memory\n", "x".repeat(10_000));
        let api_server = async {
            // The namespace exists already (another worker of the job): that is fine.
            creations(&mut server, 409).await;
            expect(&mut server, Method::GET, POD)
                .await
                .reply(200, &running("5"));
            expect(&mut server, Method::GET, PODS).await.reply_bytes(
                200,
                events(&[("MODIFIED", terminated("6", "Failed", 3, "Error"))]),
            );
            let log = expect(&mut server, Method::GET, &format!("{POD}/log")).await;
            for part in ["container=worker", "tailLines=200", "limitBytes=4096"] {
                assert!(log.query.contains(part), "{part} in {}", log.query);
            }
            log.reply_bytes(200, long_log.clone().into_bytes());
            // Another worker of the job still runs here: the namespace stays.
            clean_up(&mut server, true).await;
        };
        let (outcome, ()) = tokio::join!(run, api_server);
        assert_eq!(outcome.state, WorkerState::Failed);
        assert_eq!(outcome.exit_code, Some(3));
        let message = outcome.message.unwrap();
        assert!(
            message.starts_with("exited with code 3 (Error); last output:\n"),
            "{message}"
        );
        assert!(
            message.ends_with("Traceback: CUDA out of memory"),
            "{message}"
        );
        assert!(message.len() <= MAX_MESSAGE_BYTES, "{}", message.len());
    }

    #[tokio::test]
    async fn cancel_deletes_the_pod_and_the_namespace() {
        let (service, mut server) = api_server(b"");
        let work = assignment(container_workload(), None);
        let cancel = CancellationToken::new();
        let run = async {
            executor(Client::new(service, "default"))
                .run(&work, &env(), &cancel, &CheckpointSink::channel().0)
                .await
        };
        let api_server = async {
            creations(&mut server, 201).await;
            expect(&mut server, Method::GET, POD)
                .await
                .reply(200, &running("5"));
            // The watch is open and nothing happens to the Pod: the hub stops the worker.
            let watch = expect(&mut server, Method::GET, PODS).await;
            cancel.cancel();
            clean_up(&mut server, false).await;
            drop(watch);
        };
        let (outcome, ()) = tokio::join!(run, api_server);
        assert_eq!(outcome, Outcome::stopped("stopped before completion"));
    }

    #[tokio::test]
    async fn a_forbidden_pod_fails_naming_the_missing_permission() {
        let (service, mut server) = api_server(b"");
        let work = assignment(container_workload(), None);
        let run = async {
            executor(Client::new(service, "default"))
                .run(
                    &work,
                    &env(),
                    &CancellationToken::new(),
                    &CheckpointSink::channel().0,
                )
                .await
        };
        let api_server = async {
            let ns = expect(&mut server, Method::POST, NS).await;
            let body = ns.body.clone();
            ns.reply(201, &body);
            let policy = expect(&mut server, Method::POST, POLICIES).await;
            let body = policy.body.clone();
            policy.reply(201, &body);
            expect(&mut server, Method::POST, PODS).await.reply(
                403,
                &status(
                    403,
                    "Forbidden",
                    "pods is forbidden: User \"system:serviceaccount:agora:agora-node\" cannot \
                     create resource \"pods\" in API group \"\" in the namespace \"agora-job-1\"",
                ),
            );
            // No Pod was made; the namespace the worker created goes.
            expect(&mut server, Method::GET, PODS)
                .await
                .reply(200, &pod_list(&[]));
            expect(
                &mut server,
                Method::DELETE,
                "/api/v1/namespaces/agora-job-1",
            )
            .await
            .reply(200, &json!({"metadata": {"name": "agora-job-1"}}));
        };
        let (outcome, ()) = tokio::join!(run, api_server);
        assert_eq!(outcome.state, WorkerState::Failed);
        assert_eq!(outcome.exit_code, None);
        let message = outcome.message.unwrap();
        assert!(
            message.starts_with(
                "the Kubernetes API server refused to create the Pod agora-job-1/asg-1 (403 \
                 Forbidden): the agent's service account needs permission to `create` `pods`"
            ),
            "{message}"
        );
        assert!(
            message.contains("system:serviceaccount:agora:agora-node"),
            "{message}"
        );
    }

    /// Outside a cluster and without a kubeconfig (this machine, CI), `--executor kubernetes`
    /// stops the agent at start with a message saying what it needs.
    #[tokio::test]
    async fn without_a_cluster_configuration_the_executor_says_what_it_needs() {
        let home_config = std::env::var_os("HOME")
            .map(|home| std::path::Path::new(&home).join(".kube/config").exists())
            .unwrap_or(false);
        if home_config
            || std::env::var_os("KUBECONFIG").is_some()
            || std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
        {
            // A machine with a cluster configuration: connecting would succeed; nothing to check.
            return;
        }
        let err = Executor::connect(PodOptions::default())
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("--executor kubernetes: no Kubernetes cluster configuration found"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_workload_without_an_image_is_refused_before_any_request() {
        let (service, _server) = api_server(b"");
        let process = Workload {
            command: Some(vec!["true".into()]),
            ..Default::default()
        };
        let outcome = executor(Client::new(service, "default"))
            .run(
                &assignment(process, None),
                &env(),
                &CancellationToken::new(),
                &CheckpointSink::channel().0,
            )
            .await;
        assert_eq!(
            outcome,
            Outcome::failed(super::super::PodError::NoImage.to_string())
        );
    }
}
