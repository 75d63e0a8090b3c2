//! `agora server --kubernetes`: the operator's controllers in the hub process, reaching the hub
//! through [`InProcessHub`], its [`operator::Hub`] over the hub's service.

use std::{
    collections::HashMap,
    path::Path,
    sync::{Arc, Mutex, PoisonError},
};

use anyhow::Context;
use api::{AppState, error::ApiError, service, submission};
use crds::{
    GROUP,
    rest::{Job, JobEventList, Node},
};
use operator::{Hub, HubError, Submission};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How many events one page reads.
const EVENT_PAGE: u32 = 100;
/// How many nodes one page reads.
const NODE_PAGE: u32 = 500;

/// Where a pod finds its own namespace.
const SERVICE_ACCOUNT_NAMESPACE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// The hub as the operator sees it: the same service the REST routes call.
pub struct InProcessHub {
    state: AppState,
    /// Tenant ids by name, once ensured in the store.
    tenants: Mutex<HashMap<String, String>>,
}

impl InProcessHub {
    pub fn new(state: AppState) -> Self {
        Self {
            state,
            tenants: Mutex::default(),
        }
    }

    /// The id of the tenant called `name`, created on first use.
    async fn tenant(&self, name: &str) -> Result<String, HubError> {
        let known = self
            .tenants
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned();
        if let Some(id) = known {
            return Ok(id);
        }
        let id = self
            .state
            .store
            .ensure_tenant(name)
            .await
            .map_err(|e| HubError::Unavailable(e.to_string()))?;
        self.tenants
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.to_string(), id.clone());
        Ok(id)
    }
}

/// The operator's view of a hub error: whether asking again can help.
fn hub_error(error: ApiError) -> HubError {
    match error {
        ApiError::BadRequest { message, field, .. } => HubError::Invalid { field, message },
        ApiError::Invalid { field, message } => HubError::Invalid {
            field: Some(field),
            message,
        },
        ApiError::TooLarge { .. } | ApiError::UnsupportedMediaType(_) => HubError::Invalid {
            field: None,
            message: error.to_string(),
        },
        ApiError::NotFound(what) => HubError::NotFound(what),
        ApiError::Conflict { code, message } => HubError::Conflict {
            code: code.to_string(),
            message,
        },
        // The store failed (the database is away): worth another try.
        other => HubError::Unavailable(other.to_string()),
    }
}

impl Hub for InProcessHub {
    async fn submit(&self, submission: Submission) -> Result<Job, HubError> {
        let tenant = self.tenant(&submission.tenant).await?;
        // The same document `kubectl apply` sent, validated as `POST /v1/jobs` validates it.
        let manifest = serde_json::json!({
            "apiVersion": format!("{GROUP}/v1alpha1"),
            "kind": "ComputeJob",
            "metadata": { "name": submission.name },
            "spec": submission.spec,
        });
        let body = serde_json::to_vec(&manifest).map_err(|e| HubError::Invalid {
            field: Some("spec".into()),
            message: e.to_string(),
        })?;
        let parsed = submission::parse(&body, Some("application/json"), &self.state.validator)
            .map_err(hub_error)?;
        let (_, job) = service::submit(&self.state, &tenant, Some(submission.key), parsed)
            .await
            .map_err(hub_error)?;
        Ok(job)
    }

    async fn job(&self, tenant: &str, id: &str) -> Result<Job, HubError> {
        let tenant = self.tenant(tenant).await?;
        service::job(&self.state, &tenant, id)
            .await
            .map_err(hub_error)
    }

    async fn find(&self, tenant: &str, key: &str) -> Result<Option<Job>, HubError> {
        let tenant = self.tenant(tenant).await?;
        service::job_for_key(&self.state, &tenant, key)
            .await
            .map_err(hub_error)
    }

    async fn cancel(&self, tenant: &str, id: &str) -> Result<Job, HubError> {
        let tenant = self.tenant(tenant).await?;
        service::cancel(&self.state, &tenant, id)
            .await
            .map_err(hub_error)
    }

    async fn events(
        &self,
        tenant: &str,
        id: &str,
        after: Option<&str>,
    ) -> Result<JobEventList, HubError> {
        let tenant = self.tenant(tenant).await?;
        let after = after
            .map(|a| {
                a.parse::<i64>().map_err(|_| HubError::Invalid {
                    field: Some("status.eventCursor".into()),
                    message: format!("{a:?} is not an event cursor"),
                })
            })
            .transpose()?;
        service::events(&self.state, &tenant, id, after, EVENT_PAGE)
            .await
            .map_err(hub_error)
    }

    async fn nodes(&self) -> Result<Vec<Node>, HubError> {
        let mut nodes = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let (page, next) = service::nodes(&self.state, after.as_deref(), NODE_PAGE)
                .await
                .map_err(hub_error)?;
            nodes.extend(page);
            match next {
                Some(cursor) => after = Some(cursor),
                None => return Ok(nodes),
            }
        }
    }
}

/// Where the operator runs and who it is.
pub struct Settings {
    /// The namespace of the operator's Lease; the pod's own when not given.
    pub namespace: Option<String>,
    /// The Lease's name.
    pub lease: String,
    /// This replica's name in the Lease.
    pub identity: String,
}

/// The cluster the operator will run against.
pub struct Cluster {
    client: kube::Client,
    config: operator::Config,
}

impl Cluster {
    /// Connects to the cluster (in-cluster configuration, or `KUBECONFIG`), before the hub
    /// starts, so that a hub asked to run the operator never runs without it.
    pub async fn connect(settings: Settings) -> anyhow::Result<Self> {
        let client = kube::Client::try_default().await.context(
            "--kubernetes: cannot reach the cluster's API server (no in-cluster service account \
             and no usable KUBECONFIG)",
        )?;
        let namespace = match settings.namespace {
            Some(namespace) => namespace,
            None => own_namespace(Path::new(SERVICE_ACCOUNT_NAMESPACE))?,
        };
        let mut config = operator::Config::new(namespace, settings.identity);
        config.lease.name = settings.lease;
        Ok(Self { client, config })
    }

    /// Starts the operator over the hub's `state`; it runs until the returned token is
    /// cancelled. Its metrics are served with the hub's.
    pub fn start(self, state: AppState) -> (JoinHandle<()>, CancellationToken) {
        let mut registry = api::metrics::Metrics::component_registry();
        let metrics = operator::metrics::Metrics::register(&mut registry);
        state.metrics.add_component(registry);
        let config = self.config;
        tracing::info!(
            namespace = %config.lease.namespace,
            lease = %config.lease.name,
            identity = %config.lease.identity,
            "operator starting"
        );
        let stop = CancellationToken::new();
        let hub = Arc::new(InProcessHub::new(state));
        let task = tokio::spawn(operator::run(
            self.client,
            hub,
            config,
            metrics,
            stop.clone(),
        ));
        (task, stop)
    }
}

/// The namespace this pod runs in.
fn own_namespace(file: &Path) -> anyhow::Result<String> {
    let namespace = std::fs::read_to_string(file).with_context(|| {
        format!(
            "--kubernetes needs the namespace of the operator's Lease: pass \
             --kubernetes-namespace (AGORA_KUBERNETES_NAMESPACE) outside a pod ({} is not readable)",
            file.display()
        )
    })?;
    Ok(namespace.trim().to_string())
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddr};

    use crds::v1alpha1::{ComputeJobSpec, JobPhase};

    use super::*;

    async fn hub(dir: &Path) -> api::RunningHub {
        api::RunningHub::start(api::HubConfig {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            database_url: format!("sqlite://{}", dir.join("hub.db").display()),
            settings: api::HubSettings::default(),
            api_key_file: None,
            tls: None,
            allow_plain_http: false,
            chain: None,
        })
        .await
        .unwrap()
    }

    fn spec() -> ComputeJobSpec {
        serde_json::from_value(serde_json::json!({
            "kind": "Batch",
            "workload": {"builtin": {"sleep": {"durationSeconds": 10}}},
            "resources": {"workers": 1, "gpusPerWorker": 1},
            "pricing": {"maxPricePerGpuHour": "5.00"}
        }))
        .unwrap()
    }

    fn submission(namespace: &str, uid: &str, spec: ComputeJobSpec) -> Submission {
        Submission {
            tenant: operator::hub::tenant_of(namespace),
            key: uid.into(),
            name: "train".into(),
            spec,
        }
    }

    #[tokio::test]
    async fn a_computejob_is_one_job_per_uid_seen_only_from_its_namespace() {
        let dir = tempfile::tempdir().unwrap();
        let running = hub(dir.path()).await;
        let hub = InProcessHub::new(running.state().clone());

        let job = hub
            .submit(submission("team-a", "uid-1", spec()))
            .await
            .unwrap();
        assert_eq!(job.name.as_deref(), Some("train"));
        assert_eq!(job.status.phase, JobPhase::Pending);
        assert_eq!(job.status.job_id.as_deref(), Some(job.id.as_str()));
        let again = hub
            .submit(submission("team-a", "uid-1", spec()))
            .await
            .unwrap();
        assert_eq!(
            again.id, job.id,
            "a repeated submission of one UID is the same job"
        );
        let other = hub
            .submit(submission("team-a", "uid-2", spec()))
            .await
            .unwrap();
        assert_ne!(other.id, job.id);

        let tenant_a = operator::hub::tenant_of("team-a");
        let tenant_b = operator::hub::tenant_of("team-b");
        assert_eq!(hub.job(&tenant_a, &job.id).await.unwrap().id, job.id);
        assert!(matches!(
            hub.job(&tenant_b, &job.id).await,
            Err(HubError::NotFound(_))
        ));
        assert_eq!(
            hub.find(&tenant_a, "uid-1").await.unwrap().map(|j| j.id),
            Some(job.id.clone())
        );
        assert_eq!(hub.find(&tenant_b, "uid-1").await.unwrap(), None);
        running.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn an_invalid_spec_is_refused_naming_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let running = hub(dir.path()).await;
        let hub = InProcessHub::new(running.state().clone());
        let mut bad = spec();
        bad.resources.workers = 0;
        match hub.submit(submission("team-a", "uid-1", bad)).await {
            Err(HubError::Invalid { field, message }) => {
                assert_eq!(
                    field.as_deref(),
                    Some("spec.resources.workers"),
                    "{message}"
                );
            }
            other => panic!("expected Invalid, got {other:?}"),
        }
        let tenant = operator::hub::tenant_of("team-a");
        assert_eq!(
            hub.find(&tenant, "uid-1").await.unwrap(),
            None,
            "nothing stored"
        );
        running.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn events_are_read_from_a_cursor_and_cancel_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let running = hub(dir.path()).await;
        let hub = InProcessHub::new(running.state().clone());
        let tenant = operator::hub::tenant_of("team-a");
        let job = hub
            .submit(submission("team-a", "uid-1", spec()))
            .await
            .unwrap();

        let first = hub.events(&tenant, &job.id, None).await.unwrap();
        assert_eq!(first.items.len(), 1);
        assert_eq!(first.items[0].reason, "Submitted");
        let cursor = first.items[0].cursor.clone();
        assert!(
            hub.events(&tenant, &job.id, Some(&cursor))
                .await
                .unwrap()
                .items
                .is_empty()
        );

        let cancelled = hub.cancel(&tenant, &job.id).await.unwrap();
        assert_eq!(cancelled.status.phase, JobPhase::Cancelled);
        assert_eq!(
            hub.cancel(&tenant, &job.id).await.unwrap().status.phase,
            JobPhase::Cancelled
        );
        let after = hub.events(&tenant, &job.id, Some(&cursor)).await.unwrap();
        assert_eq!(
            after.items.iter().map(|e| e.to).collect::<Vec<_>>(),
            [JobPhase::Cancelled]
        );
        assert!(matches!(
            hub.events(&tenant, &job.id, Some("not-a-cursor")).await,
            Err(HubError::Invalid { .. })
        ));
        assert!(hub.nodes().await.unwrap().is_empty());
        running.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn the_operators_metrics_are_served_with_the_hubs() {
        let dir = tempfile::tempdir().unwrap();
        let running = hub(dir.path()).await;
        // A cluster that does not answer: the operator keeps trying the Lease, never leads.
        let client =
            kube::Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap()))
                .unwrap();
        let cluster = Cluster {
            client,
            config: operator::Config::new("agora".into(), "hub-0".into()),
        };
        let (task, stop) = cluster.start(running.state().clone());
        let text = running
            .state()
            .metrics
            .render(running.store(), &api::metrics::Scrape::new(20_000))
            .await
            .unwrap();
        assert!(text.contains("agora_operator_leader 0"), "{text}");
        assert!(
            text.contains("agora_jobs_submitted_total"),
            "the hub's own metrics stay"
        );
        stop.cancel();
        task.await.unwrap();
        running.shutdown().await.unwrap();
    }
}
