//! The API's one error type and its one JSON shape: `{"error": {"code", "message", "field"}}`.

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
};
use crds::rest::{ErrorBody, ErrorDetail};

use crate::store::StoreError;

/// Everything a handler can answer with instead of success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not JSON/YAML, or not the expected shape at all.
    #[error("{message}")]
    BadRequest {
        code: &'static str,
        message: String,
        field: Option<String>,
    },
    /// The body parsed but a field is invalid.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("missing or unknown credentials")]
    Unauthenticated { message: String },
    /// A proof was refused (a registration's challenge or signature): 401, naming the field at fault.
    #[error("{field}: {message}")]
    Unproven {
        code: &'static str,
        message: String,
        field: &'static str,
    },
    #[error("{0} not found")]
    NotFound(String),
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error("request body larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("unsupported media type {0:?}")]
    UnsupportedMediaType(String),
    #[error("no such route")]
    NoRoute,
    #[error("this route does not take that method")]
    MethodNotAllowed,
    /// Something the answer depends on is not there: no chain configured, or the chain did not
    /// answer (503, with a code saying which).
    #[error("{message}")]
    Unavailable { code: &'static str, message: String },
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest {
            code,
            message: message.into(),
            field: None,
        }
    }

    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::Conflict {
            code,
            message: message.into(),
        }
    }

    /// The HTTP status and machine-readable code of this error.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, code),
            ApiError::Invalid { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_field"),
            ApiError::Unauthenticated { .. } => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            ApiError::Unproven { code, .. } => (StatusCode::UNAUTHORIZED, code),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Conflict { code, .. } => (StatusCode::CONFLICT, code),
            ApiError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            ApiError::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::NoRoute => (StatusCode::NOT_FOUND, "no_such_route"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::Unavailable { code, .. } => (StatusCode::SERVICE_UNAVAILABLE, code),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        ApiError::Internal(err.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let (message, field) = match &self {
            ApiError::Internal(cause) => {
                // The cause is for the operator's logs, not for the caller.
                tracing::error!(%cause, "request failed");
                (
                    "internal error; the hub's log has the details".to_string(),
                    None,
                )
            }
            ApiError::BadRequest { message, field, .. } => (message.clone(), field.clone()),
            ApiError::Invalid { field, message } => (message.clone(), Some(field.clone())),
            ApiError::Unauthenticated { message } => (message.clone(), None),
            ApiError::Unproven { message, field, .. } => {
                (message.clone(), Some((*field).to_string()))
            }
            ApiError::Conflict { message, .. } => (message.clone(), None),
            ApiError::Unavailable { message, .. } => (message.clone(), None),
            other => (other.to_string(), None),
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code: code.to_string(),
                message,
                field,
            },
        };
        (status, axum::Json(body)).into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
