//! The operator's one error type, with a label for the error counter.

use crate::hub::HubError;

/// What can go wrong in a reconcile or a mirror pass.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Kubernetes API server refused or did not answer a request.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The hub refused or could not serve a request.
    #[error("hub: {0}")]
    Hub(#[from] HubError),
    /// An object could not be turned into what the operator writes.
    #[error("serialization: {0}")]
    Serialization(#[from] serde_json::Error),
}

/// The operator's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The `error` label of `agora_operator_reconcile_errors_total`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(status)) if status.code == 409 => "kube_conflict",
            Error::Kube(kube::Error::Api(status)) if status.code == 403 => "kube_forbidden",
            Error::Kube(_) => "kube",
            Error::Hub(HubError::Unavailable(_)) => "hub_unavailable",
            Error::Hub(_) => "hub",
            Error::Serialization(_) => "serialization",
        }
    }
}
