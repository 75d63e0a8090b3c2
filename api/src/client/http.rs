//! [`HubClient`]: typed calls to the hub's `/v1` REST API over reqwest.
//!
//! The client is deliberately thin: one method per endpoint, wire types from `crds::rest`, and
//! every failure mapped to a [`ClientError`] that a person can act on.

use std::time::Duration;

use crds::{
    rest::{ErrorBody, Job, List, Node},
    v1alpha1::JobPhase,
};
use reqwest::{Method, RequestBuilder, StatusCode, Url, header};
use serde::de::DeserializeOwned;

use super::error::{ApiError, ClientError, Result, root_cause};

/// How long to wait for a TCP connection: a hub on the same machine or network answers in
/// milliseconds, so a longer wait only delays the "is it running?" message.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Upper bound for a whole request; every endpoint the CLI uses answers from the store at once.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How much of a non-API error body to quote: enough to recognise an HTML error page or a proxy's
/// message, not so much that it floods the terminal.
const BODY_EXCERPT_CHARS: usize = 200;

/// Media type of a YAML request body.
pub const CONTENT_TYPE_YAML: &str = "application/yaml";

/// Media type of a JSON request body.
pub const CONTENT_TYPE_JSON: &str = "application/json";

/// A client of one hub, authenticated with one API key.
#[derive(Clone, Debug)]
pub struct HubClient {
    http: reqwest::Client,
    base: Url,
    api_key: Option<String>,
}

impl HubClient {
    /// A client for the hub at `base_url` (e.g. `http://127.0.0.1:7600`, optionally with a path
    /// prefix when the hub sits behind a proxy). An empty API key counts as none, so that an
    /// exported but empty `AGORA_API_KEY` gives the "no API key" advice rather than a bad header.
    ///
    /// HTTPS needs a rustls crypto provider installed in the process (the `agora` binary installs
    /// ring at start).
    pub fn new(base_url: &str, api_key: Option<String>) -> Result<Self> {
        let base = parse_base_url(base_url)?;
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("agora/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::Transport {
                url: base.to_string(),
                cause: root_cause(&e),
            })?;
        let api_key = api_key
            .map(|k| k.trim().to_string())
            .filter(|k| !k.is_empty());
        Ok(Self {
            http,
            base,
            api_key,
        })
    }

    /// The hub's base URL, as used in messages.
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    /// Submits a job: `body` is a ComputeJob manifest or just its spec, as YAML or JSON per
    /// `content_type`. With an idempotency key, a retried submission returns the job created by the
    /// first instead of creating a second one.
    pub async fn submit(
        &self,
        body: Vec<u8>,
        content_type: &str,
        idempotency_key: Option<&str>,
    ) -> Result<Job> {
        let mut req = self
            .request(Method::POST, &["v1", "jobs"], &[])
            .header(header::CONTENT_TYPE, content_type)
            .body(body);
        if let Some(key) = idempotency_key {
            req = req.header("Idempotency-Key", key);
        }
        self.send(req).await
    }

    /// One job by id.
    pub async fn get_job(&self, id: &str) -> Result<Job> {
        self.send(self.request(Method::GET, &["v1", "jobs", id], &[]))
            .await
    }

    /// One page of jobs, newest first, optionally only those in `phase`. Pass the page's `next`
    /// back as `after` for the following page.
    pub async fn list_jobs(
        &self,
        phase: Option<JobPhase>,
        limit: Option<u32>,
        after: Option<&str>,
    ) -> Result<List<Job>> {
        let limit = limit.map(|l| l.to_string());
        let mut query = Vec::new();
        if let Some(l) = &limit {
            query.push(("limit", l.as_str()));
        }
        if let Some(a) = after {
            query.push(("after", a));
        }
        if let Some(p) = phase {
            query.push(("phase", p.as_str()));
        }
        self.send(self.request(Method::GET, &["v1", "jobs"], &query))
            .await
    }

    /// Cancels a job; the answer is the job as it is after cancellation.
    pub async fn cancel_job(&self, id: &str) -> Result<Job> {
        self.send(self.request(Method::DELETE, &["v1", "jobs", id], &[]))
            .await
    }

    /// One page of nodes. Pass the page's `next` back as `after` for the following page.
    pub async fn list_nodes(&self, limit: Option<u32>, after: Option<&str>) -> Result<List<Node>> {
        let limit = limit.map(|l| l.to_string());
        let mut query = Vec::new();
        if let Some(l) = &limit {
            query.push(("limit", l.as_str()));
        }
        if let Some(a) = after {
            query.push(("after", a));
        }
        self.send(self.request(Method::GET, &["v1", "nodes"], &query))
            .await
    }

    /// A request to `base/segments…?query`. Path segments are percent-encoded one by one, so an id
    /// with a `/` or `?` cannot address another endpoint.
    fn request(&self, method: Method, segments: &[&str], query: &[(&str, &str)]) -> RequestBuilder {
        let url = endpoint_url(&self.base, segments, query);
        let req = self
            .http
            .request(method, url)
            .header(header::ACCEPT, CONTENT_TYPE_JSON);
        match &self.api_key {
            Some(key) => req.bearer_auth(key),
            None => req,
        }
    }

    /// Sends a request and decodes a success body as `T` or an error body as [`ApiError`].
    async fn send<T: DeserializeOwned>(&self, req: RequestBuilder) -> Result<T> {
        let resp = req.send().await.map_err(|e| self.transport_error(&e))?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| self.transport_error(&e))?;
        if status.is_success() {
            serde_json::from_slice(&body).map_err(|e| ClientError::UnexpectedResponse {
                url: self.base.to_string(),
                status: status.as_u16(),
                detail: format!(
                    "the body is not the expected JSON ({e}): {}",
                    excerpt(&body)
                ),
            })
        } else {
            Err(self.error_from_body(status, &body))
        }
    }

    /// Turns an error answer into an [`ApiError`] when it is in the API's format.
    fn error_from_body(&self, status: StatusCode, body: &[u8]) -> ClientError {
        match serde_json::from_slice::<ErrorBody>(body) {
            Ok(ErrorBody { error }) => ClientError::Api(ApiError {
                status: status.as_u16(),
                code: error.code,
                message: error.message,
                field: error.field,
                key_sent: self.api_key.is_some(),
            }),
            // A 401 from whatever answered still means "no or wrong key"; give the key advice.
            Err(_) if status == StatusCode::UNAUTHORIZED => ClientError::Api(ApiError {
                status: status.as_u16(),
                code: "unauthorized".into(),
                message: "the hub asked for an API key".into(),
                field: None,
                key_sent: self.api_key.is_some(),
            }),
            Err(_) => ClientError::UnexpectedResponse {
                url: self.base.to_string(),
                status: status.as_u16(),
                detail: if body.is_empty() {
                    status
                        .canonical_reason()
                        .unwrap_or("no explanation")
                        .to_string()
                } else {
                    excerpt(body)
                },
            },
        }
    }

    fn transport_error(&self, err: &reqwest::Error) -> ClientError {
        let url = self.base.to_string();
        if err.is_timeout() {
            let seconds = if err.is_connect() {
                CONNECT_TIMEOUT
            } else {
                REQUEST_TIMEOUT
            }
            .as_secs();
            ClientError::Timeout { url, seconds }
        } else if err.is_connect() {
            ClientError::Unreachable {
                url,
                cause: root_cause(err),
            }
        } else {
            ClientError::Transport {
                url,
                cause: root_cause(err),
            }
        }
    }
}

/// Parses and checks `--hub`; a bare `host:port` gets `http://` so that `--hub 127.0.0.1:7600`
/// works as people type it.
fn parse_base_url(base_url: &str) -> Result<Url> {
    let trimmed = base_url.trim();
    let invalid = |reason: String| ClientError::InvalidUrl {
        url: base_url.to_string(),
        reason,
    };
    let with_scheme = if trimmed.contains("://") {
        trimmed.to_string()
    } else {
        format!("http://{trimmed}")
    };
    let url = Url::parse(&with_scheme).map_err(|e| invalid(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(format!(
            "scheme {:?} is not http or https",
            url.scheme()
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("no host".into()));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("a hub URL takes no query or fragment".into()));
    }
    Ok(url)
}

/// `base` with `segments` appended (each percent-encoded) and `query` set.
fn endpoint_url(base: &Url, segments: &[&str], query: &[(&str, &str)]) -> Url {
    let mut url = base.clone();
    // `parse_base_url` only accepts http(s) URLs, which can always take path segments; were it
    // not so, the base URL is used as it is and the hub's 404 says what went wrong.
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().extend(segments);
    }
    if !query.is_empty() {
        url.query_pairs_mut().extend_pairs(query);
    }
    url
}

/// The start of a body, as text, for error messages.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let mut out: String = text.chars().take(BODY_EXCERPT_CHARS).collect();
    if text.chars().count() > BODY_EXCERPT_CHARS {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(base: &str, segments: &[&str], query: &[(&str, &str)]) -> String {
        endpoint_url(&parse_base_url(base).unwrap(), segments, query).to_string()
    }

    #[test]
    fn endpoints_are_joined_to_the_base_url() {
        assert_eq!(
            url("http://127.0.0.1:7600", &["v1", "jobs"], &[]),
            "http://127.0.0.1:7600/v1/jobs"
        );
        assert_eq!(
            url("https://hub.example/agora/", &["v1", "jobs", "job-1"], &[]),
            "https://hub.example/agora/v1/jobs/job-1"
        );
    }

    #[test]
    fn a_bare_host_and_port_is_http() {
        assert_eq!(
            url("127.0.0.1:7600", &["v1", "nodes"], &[]),
            "http://127.0.0.1:7600/v1/nodes"
        );
    }

    #[test]
    fn ids_and_cursors_are_escaped() {
        assert_eq!(
            url("http://h", &["v1", "jobs", "../nodes?x"], &[]),
            "http://h/v1/jobs/..%2Fnodes%3Fx"
        );
        assert_eq!(
            url(
                "http://h",
                &["v1", "jobs"],
                &[("limit", "5"), ("after", "a b&c"), ("phase", "Running")]
            ),
            "http://h/v1/jobs?limit=5&after=a+b%26c&phase=Running"
        );
    }

    #[test]
    fn unusable_hub_urls_are_refused_before_any_request() {
        for bad in ["ftp://h", "http://", "http://h/?x=1", "not a url"] {
            let err = HubClient::new(bad, None).unwrap_err();
            assert!(
                matches!(err, ClientError::InvalidUrl { .. }),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn an_empty_api_key_counts_as_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = HubClient::new("http://h", Some("  \n".into())).unwrap();
        assert!(client.api_key.is_none());
        let client = HubClient::new("http://h", Some("k1\n".into())).unwrap();
        assert_eq!(client.api_key.as_deref(), Some("k1"));
    }

    #[test]
    fn error_bodies_become_api_errors() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = HubClient::new("http://h", Some("k".into())).unwrap();
        let body = br#"{"error":{"code":"invalid_field","message":"must be \u2265 1","field":"spec.resources.workers"}}"#;
        let err = client.error_from_body(StatusCode::UNPROCESSABLE_ENTITY, body);
        assert_eq!(
            err.to_string(),
            "hub refused the request (422 invalid_field): spec.resources.workers: must be ≥ 1"
        );
    }

    #[test]
    fn a_foreign_error_page_is_quoted_not_misread() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = HubClient::new("http://h", None).unwrap();
        let err = client.error_from_body(StatusCode::BAD_GATEWAY, b"<html>bad gateway</html>");
        assert_eq!(
            err.to_string(),
            "unexpected answer from the hub at http://h/ (HTTP 502): <html>bad gateway</html>"
        );
        let err = client.error_from_body(StatusCode::UNAUTHORIZED, b"");
        assert!(
            err.to_string()
                .contains("no API key was given: set AGORA_API_KEY"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_closed_port_is_reported_as_unreachable() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        // Bind then drop a listener so the port is very likely closed.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let client = HubClient::new(&format!("http://127.0.0.1:{port}"), None).unwrap();
        let err = client.get_job("job-1").await.unwrap_err();
        assert!(matches!(err, ClientError::Unreachable { .. }), "{err:?}");
        assert!(
            err.to_string().ends_with("is `agora dev` running?"),
            "{err}"
        );
    }
}
