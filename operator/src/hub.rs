//! What the controllers need of the hub: submit, read, cancel and follow jobs, and list nodes.
//!
//! The `agora` binary implements [`Hub`] over the hub's service in-process, so a ComputeJob is
//! validated, stored and scheduled exactly like a `POST /v1/jobs`.

use std::future::Future;

use crds::{
    rest::{Job, JobEventList, Node},
    v1alpha1::ComputeJobSpec,
};

/// A ComputeJob to submit.
#[derive(Clone, Debug, PartialEq)]
pub struct Submission {
    /// Whose job it is: the CR's namespace, as a tenant of its own ([`tenant_of`]).
    pub tenant: String,
    /// The CR's UID: submitting the same UID again returns the job it created, so a reconcile
    /// repeated after a crash never submits a job twice.
    pub key: String,
    /// The CR's name.
    pub name: String,
    /// The CR's spec.
    pub spec: ComputeJobSpec,
}

/// The tenant that a namespace's ComputeJobs belong to: every namespace is a tenant of its own, so
/// a namespace sees only its own jobs through the hub, as a REST tenant does.
pub fn tenant_of(namespace: &str) -> String {
    format!("k8s-{namespace}")
}

/// Why the hub did not do what was asked.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum HubError {
    /// The request is wrong and asking again cannot help (an invalid spec; `field` names where).
    #[error("{}{message}", field.as_ref().map(|f| format!("{f}: ")).unwrap_or_default())]
    Invalid {
        field: Option<String>,
        message: String,
    },
    /// No such job (for this tenant).
    #[error("not found: {0}")]
    NotFound(String),
    /// The request conflicts with the job's state (`code` is the hub's machine-readable code).
    #[error("{code}: {message}")]
    Conflict { code: String, message: String },
    /// The hub could not serve the request now (its database is away); asking later may work.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

/// The hub, as the controllers see it.
pub trait Hub: Send + Sync + 'static {
    /// Submits a job, or returns the one already submitted with the same `key`.
    fn submit(&self, submission: Submission) -> impl Future<Output = Result<Job, HubError>> + Send;

    /// The job `id` of `tenant`.
    fn job(&self, tenant: &str, id: &str) -> impl Future<Output = Result<Job, HubError>> + Send;

    /// The job `tenant` submitted under `key`, if the hub has one.
    fn find(
        &self,
        tenant: &str,
        key: &str,
    ) -> impl Future<Output = Result<Option<Job>, HubError>> + Send;

    /// Cancels the job `id` of `tenant`; cancelling a cancelled job returns it, one that ended
    /// otherwise is a [`HubError::Conflict`].
    fn cancel(&self, tenant: &str, id: &str) -> impl Future<Output = Result<Job, HubError>> + Send;

    /// A page of the job's lifecycle events after the cursor `after` (from a previous page's
    /// `next`), oldest first.
    fn events(
        &self,
        tenant: &str,
        id: &str,
        after: Option<&str>,
    ) -> impl Future<Output = Result<JobEventList, HubError>> + Send;

    /// Every node in the hub's registry.
    fn nodes(&self) -> impl Future<Output = Result<Vec<Node>, HubError>> + Send;
}
