//! Runs the operator: the leader election, and while this replica leads, the ComputeJob
//! controller and the GpuNode mirror.

use std::{sync::Arc, time::Duration};

use kube::Client;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    computejob::{self, Context},
    gpunode::Mirror,
    hub::Hub,
    leader::{self, LeaseConfig},
    metrics::{GPUNODE, Metrics},
};

/// How the operator runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// The Lease, and this replica's name in it.
    pub lease: LeaseConfig,
    /// How often a running job is re-read from the hub.
    pub job_poll: Duration,
    /// How often the GpuNode mirror runs.
    pub mirror_interval: Duration,
    /// How stale a mirrored `lastHeartbeat` may get (see [`crate::gpunode`]).
    pub heartbeat_resolution: Duration,
}

impl Config {
    /// The defaults for a replica named `identity` whose Lease lives in `namespace`.
    pub fn new(namespace: String, identity: String) -> Self {
        Self {
            lease: LeaseConfig {
                namespace,
                name: "agora-operator".into(),
                identity,
                ttl: Duration::from_secs(15),
                renew: Duration::from_secs(5),
            },
            job_poll: Duration::from_secs(2),
            mirror_interval: Duration::from_secs(5),
            heartbeat_resolution: Duration::from_secs(60),
        }
    }
}

/// Runs the operator until `stop` fires: elects, and runs the controllers while leading.
pub async fn run<H: Hub>(
    client: Client,
    hub: Arc<H>,
    config: Config,
    metrics: Metrics,
    stop: CancellationToken,
) {
    let (leading_tx, mut leading) = watch::channel(false);
    let election = tokio::spawn(leader::elect(
        client.clone(),
        config.lease.clone(),
        leading_tx,
        stop.clone(),
    ));
    loop {
        // Wait to lead.
        tokio::select! {
            () = stop.cancelled() => break,
            changed = leading.wait_for(|l| *l) => if changed.is_err() { break },
        }
        metrics.set_leader(true);
        let term = stop.child_token();
        let controllers = {
            let ctx = Arc::new(Context::new(
                client.clone(),
                Arc::clone(&hub),
                metrics.clone(),
                config.lease.identity.clone(),
                config.job_poll,
            ));
            let computejobs = tokio::spawn(computejob::run(ctx, term.clone()));
            let mirror = tokio::spawn(mirror_loop(
                Mirror::new(
                    client.clone(),
                    Arc::clone(&hub),
                    config.heartbeat_resolution,
                ),
                config.mirror_interval,
                metrics.clone(),
                term.clone(),
            ));
            (computejobs, mirror)
        };
        // Lead until the lease is lost or the operator stops.
        tokio::select! {
            () = stop.cancelled() => {}
            _ = leading.wait_for(|l| !*l) => info!("lost the lease; controllers stop"),
        }
        term.cancel();
        let (computejobs, mirror) = controllers;
        for task in [computejobs, mirror] {
            if let Err(e) = task.await {
                warn!(error = %e, "a controller task ended abnormally");
            }
        }
        metrics.set_leader(false);
    }
    let _ = election.await;
}

/// Runs mirror passes every `interval` until `stop` fires.
async fn mirror_loop<H: Hub>(
    mirror: Mirror<H>,
    interval: Duration,
    metrics: Metrics,
    stop: CancellationToken,
) {
    info!("GpuNode mirror started");
    loop {
        let started = std::time::Instant::now();
        // A pass waiting on the API server does not hold up a step-down: its writes are
        // idempotent applies, and the next leader's first pass finishes the job.
        let result = tokio::select! {
            () = stop.cancelled() => break,
            result = mirror.pass() => result,
        };
        let error = result.as_ref().err();
        if let Some(e) = error {
            warn!(error = %e, "GpuNode mirror pass failed");
        }
        metrics.reconciled(
            GPUNODE,
            started.elapsed(),
            error.map(crate::Error::metric_label),
        );
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(interval) => {}
        }
    }
    info!("GpuNode mirror stopped");
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use http::{Request, Response};
    use kube::client::Body;
    use serde_json::{Value, json};

    use super::*;
    use crate::fixtures::{self, FakeHub};

    fn reply(send: tower_test::mock::SendResponse<Response<Body>>, status: u16, body: &Value) {
        send.send_response(
            Response::builder()
                .status(status)
                .body(Body::from(serde_json::to_vec(body).unwrap()))
                .unwrap(),
        );
    }

    async fn body(request: Request<Body>) -> Value {
        let bytes = request.into_body().collect_bytes().await.unwrap();
        serde_json::from_slice(&bytes).unwrap_or(Value::Null)
    }

    /// A whole run: the replica writes nothing before it holds the Lease, then runs both
    /// controllers, and releases the Lease when stopped.
    #[tokio::test]
    async fn the_controllers_run_only_under_the_lease_which_is_released_at_shutdown() {
        let (client, mut server) = fixtures::client();
        let mut config = Config::new("agora".into(), "hub-0".into());
        config.mirror_interval = Duration::from_millis(50);
        let metrics = Metrics::unregistered();
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(
            client,
            Arc::new(FakeHub::default()),
            config,
            metrics.clone(),
            stop.clone(),
        ));

        let lease_path = "/apis/coordination.k8s.io/v1/namespaces/agora/leases/agora-operator";
        let mut leading = false;
        let mut seen = BTreeSet::new();
        // Watches are held open, as an API server does.
        let mut open_watches = Vec::new();
        let mut lease: Option<Value> = None;
        loop {
            let (request, send) = server.next_request().await.expect("a request");
            let method = request.method().as_str().to_string();
            let path = request.uri().path().to_string();
            let query = request.uri().query().unwrap_or("").to_string();
            assert!(
                crate::rbac::permits(&method, &path, &query),
                "{method} {path} is not in the operator's RBAC"
            );
            if !path.contains("/leases") {
                assert!(leading, "{method} {path} before holding the Lease");
                seen.insert(format!("{method} {path}"));
            }
            match (method.as_str(), path.as_str()) {
                ("GET", p) if p == lease_path => match &lease {
                    None => reply(send, 404, &fixtures::not_found()),
                    Some(l) => reply(send, 200, l),
                },
                ("POST", "/apis/coordination.k8s.io/v1/namespaces/agora/leases") => {
                    let mut created = body(request).await;
                    created["metadata"]["resourceVersion"] = json!("1");
                    lease = Some(created.clone());
                    leading = true;
                    reply(send, 201, &created);
                }
                ("PUT", p) if p == lease_path => {
                    let replaced = body(request).await;
                    let holder = replaced["spec"]["holderIdentity"].clone();
                    lease = Some(replaced.clone());
                    reply(send, 200, &replaced);
                    if holder.is_null() {
                        break;
                    }
                }
                ("GET", "/apis/agora.dev/v1alpha1/computejobs") if query.contains("watch=true") => {
                    open_watches.push(send);
                }
                ("GET", "/apis/agora.dev/v1alpha1/computejobs") => reply(
                    send,
                    200,
                    &json!({"apiVersion": "agora.dev/v1alpha1", "kind": "ComputeJobList",
                            "metadata": {"resourceVersion": "1"}, "items": []}),
                ),
                ("GET", "/apis/agora.dev/v1alpha1/gpunodes") => {
                    reply(
                        send,
                        200,
                        &json!({"apiVersion": "agora.dev/v1alpha1", "kind": "GpuNodeList",
                                "metadata": {"resourceVersion": "1"}, "items": []}),
                    );
                    // Both controllers asked: stop.
                    if seen.iter().any(|s| s.contains("computejobs")) && !stop.is_cancelled() {
                        stop.cancel();
                    }
                }
                other => panic!("unexpected request {other:?}"),
            }
        }
        task.await.unwrap();
        drop(open_watches);
        assert!(
            seen.contains("GET /apis/agora.dev/v1alpha1/computejobs"),
            "{seen:?}"
        );
        assert!(
            seen.contains("GET /apis/agora.dev/v1alpha1/gpunodes"),
            "{seen:?}"
        );
        assert_eq!(metrics.queue_depth(crate::metrics::COMPUTEJOB), 0);
        assert_eq!(
            lease.unwrap()["spec"]["holderIdentity"],
            Value::Null,
            "released for the next replica"
        );
    }
}
