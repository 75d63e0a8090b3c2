//! Request extractors that answer in the API's error shape instead of axum's plain-text rejections:
//! request bodies (JSON, or YAML for submissions), path parameters and the two kinds of credentials.

use axum::{
    body::Bytes,
    extract::{FromRef, FromRequest, FromRequestParts, Request, rejection::BytesRejection},
    http::{StatusCode, header, request::Parts},
};
use std::{
    any::TypeId,
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock},
};

use schemars::JsonSchema;
use serde::de::DeserializeOwned;

use crate::{error::ApiError, state::AppState};

/// A JSON body checked against `T`'s published schema (the one in `/openapi.json`) and then
/// deserialized: malformed JSON is a 400, a document that breaks the schema a 422 naming the field,
/// so the hub accepts exactly what it documents.
pub struct Json<T>(pub T);

impl<S, T> FromRequest<S> for Json<T>
where
    S: Send + Sync,
    AppState: FromRef<S>,
    T: DeserializeOwned + JsonSchema + 'static,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let body = RawBody::from_request(req, state).await?;
        let document: serde_json::Value = serde_json::from_slice(&body.bytes)
            .map_err(|e| ApiError::bad_request("malformed_body", format!("invalid JSON: {e}")))?;
        if let Some(error) = schema_for::<T>().iter_errors(&document).next() {
            let field = field_path(error.instance_path.as_str());
            return Err(ApiError::invalid(field, error.to_string()));
        }
        let value = serde_path_to_error::deserialize(document).map_err(|e| {
            let field = e.path().to_string();
            ApiError::BadRequest {
                code: "malformed_body",
                message: e.inner().to_string(),
                field: (field != ".").then_some(field),
            }
        })?;
        Ok(Json(value))
    }
}

/// A JSON pointer (`/gpus/0/uuid`) in the API's field notation (`gpus[0].uuid`); the body itself is
/// `body`. The agent protocol's documents have no object keys made of digits, so digits are indices.
fn field_path(pointer: &str) -> String {
    let mut field = String::new();
    for segment in pointer.split('/').skip(1) {
        let segment = segment.replace("~1", "/").replace("~0", "~");
        if !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()) {
            field.push_str(&format!("[{segment}]"));
        } else {
            if !field.is_empty() {
                field.push('.');
            }
            field.push_str(&segment);
        }
    }
    if field.is_empty() {
        "body".into()
    } else {
        field
    }
}

/// The compiled JSON Schema of `T`, built once per type.
fn schema_for<T: JsonSchema + 'static>() -> Arc<jsonschema::Validator> {
    static CACHE: OnceLock<Mutex<HashMap<TypeId, Arc<jsonschema::Validator>>>> = OnceLock::new();
    let mut cache = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    cache
        .entry(TypeId::of::<T>())
        .or_insert_with(|| {
            let schema = serde_json::to_value(schemars::schema_for!(T)).expect("schemas serialize");
            Arc::new(
                jsonschema::validator_for(&schema).expect("derived schemas are valid JSON Schema"),
            )
        })
        .clone()
}

/// A path parameter; one that cannot be read (say, not UTF-8 once percent-decoded) is a 400 in the
/// API's error shape rather than axum's plain-text rejection.
pub struct Path<T>(pub T);

impl<S, T> FromRequestParts<S> for Path<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        // No id or name holds a NUL, and PostgreSQL cannot even compare text with one (the query
        // fails): refuse it here rather than answer 500. A NUL reaches a path only as `%00`, and
        // only in a parameter, since no route's fixed part has one.
        if parts.uri.path().to_ascii_lowercase().contains("%00") {
            return Err(ApiError::bad_request(
                "invalid_path",
                "a path parameter must not contain a NUL character (%00)",
            ));
        }
        let axum::extract::Path(value) = axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::bad_request("invalid_path", e.body_text()))?;
        Ok(Path(value))
    }
}

/// A request body with its media type, size-limited by the router's body limit.
pub struct RawBody {
    pub bytes: Bytes,
    pub content_type: Option<String>,
}

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_ascii_lowercase()
            });
        let limit = req
            .extensions()
            .get::<BodyLimit>()
            .map_or(usize::MAX, |l| l.0);
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e: BytesRejection| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::TooLarge { limit }
                } else {
                    ApiError::bad_request("malformed_body", e.body_text())
                }
            })?;
        Ok(RawBody {
            bytes,
            content_type,
        })
    }
}

/// The configured body limit, carried in request extensions so rejections can name it.
#[derive(Clone, Copy, Debug)]
pub struct BodyLimit(pub usize);

/// The tenant an API key authenticates.
#[derive(Clone, Debug)]
pub struct Tenant(pub String);

impl<S> FromRequestParts<S> for Tenant
where
    S: Send + Sync,
    AppState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = AppState::from_ref(state);
        let key = bearer(parts).ok_or_else(|| ApiError::Unauthenticated {
            message: "send an API key as `Authorization: Bearer <key>` (agora dev writes one to DATA_DIR/api-key)".into(),
        })?;
        match state.store.tenant_for_key(key).await? {
            Some(tenant) => Ok(Tenant(tenant)),
            None => Err(ApiError::Unauthenticated {
                message: "unknown API key".into(),
            }),
        }
    }
}

/// The node an agent token was issued to.
#[derive(Clone, Debug)]
pub struct AgentNode(pub String);

impl<S> FromRequestParts<S> for AgentNode
where
    S: Send + Sync,
    AppState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = AppState::from_ref(state);
        let token = bearer(parts).ok_or_else(|| ApiError::Unauthenticated {
            message:
                "send the node token from /v1/agent/register as `Authorization: Bearer <token>`"
                    .into(),
        })?;
        match state.sessions.node_for_token(&state.store, token).await? {
            Some(node) => Ok(AgentNode(node)),
            None => Err(ApiError::Unauthenticated {
                message: "unknown or superseded node token; register again".into(),
            }),
        }
    }
}

fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty()).then(|| token.trim())
}

#[cfg(test)]
mod tests {
    #[test]
    fn pointers_read_as_field_paths() {
        assert_eq!(
            super::field_path("/gpus/0/computeCapability"),
            "gpus[0].computeCapability"
        );
        assert_eq!(
            super::field_path("/assignments/12/id"),
            "assignments[12].id"
        );
        assert_eq!(super::field_path("/name"), "name");
        assert_eq!(super::field_path(""), "body");
    }
}
