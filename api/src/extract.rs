//! Request extractors that answer in the API's error shape instead of axum's plain-text rejections:
//! request bodies (JSON, or YAML for submissions) and the two kinds of credentials.

use axum::{
    body::Bytes,
    extract::{FromRef, FromRequest, FromRequestParts, Request, rejection::BytesRejection},
    http::{StatusCode, header, request::Parts},
};
use serde::de::DeserializeOwned;

use crate::{error::ApiError, state::AppState, store::hash_secret};

/// A JSON body deserialized into `T`; a malformed one is a 400 naming the offending field.
pub struct Json<T>(pub T);

impl<S, T> FromRequest<S> for Json<T>
where
    S: Send + Sync,
    AppState: FromRef<S>,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let body = RawBody::from_request(req, state).await?;
        let mut de = serde_json::Deserializer::from_slice(&body.bytes);
        let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
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
        match state.store.node_for_token(&hash_secret(token)).await? {
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
