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

/// How the client trusts its connection to the hub.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HubTrust {
    /// PEM certificates of the CA(s) that signed the hub's certificate (`--hub-ca FILE`); when
    /// given, only these are trusted, not the system's roots. `None` trusts the system's roots.
    pub ca_pem: Option<Vec<u8>>,
    /// Allow `http://` to a hub that is not on loopback (`--allow-plain-http`): the API key then
    /// crosses the network in clear.
    pub allow_plain_http: bool,
}

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
    ///
    /// Trusts the system's roots, and refuses plain HTTP to a hub that is not on loopback; see
    /// [`HubClient::with_trust`].
    pub fn new(base_url: &str, api_key: Option<String>) -> Result<Self> {
        Self::with_trust(base_url, api_key, &HubTrust::default())
    }

    /// Like [`HubClient::new`], trusting what `trust` says: HTTPS is verified against the
    /// system's trust store (reqwest's platform verifier) or only against `trust.ca_pem`, and
    /// never follows a redirect to plain HTTP; plain HTTP to another machine needs
    /// `trust.allow_plain_http`, since the API key would travel in clear.
    pub fn with_trust(base_url: &str, api_key: Option<String>, trust: &HubTrust) -> Result<Self> {
        let base = parse_base_url(base_url)?;
        if base.scheme() == "http" && !trust.allow_plain_http && !is_loopback(&base) {
            return Err(ClientError::InvalidUrl {
                url: base_url.to_string(),
                reason:
                    "plain http:// to a hub that is not on this machine would send the API key \
                         unencrypted; use https:// (with --hub-ca FILE for a private CA), or pass \
                         --allow-plain-http on a network you trust"
                        .into(),
            });
        }
        let mut builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("agora/", env!("CARGO_PKG_VERSION")))
            .https_only(base.scheme() == "https");
        if let Some(pem) = &trust.ca_pem {
            let certs =
                reqwest::Certificate::from_pem_bundle(pem).map_err(|e| ClientError::InvalidCa {
                    reason: root_cause(&e),
                })?;
            if certs.is_empty() {
                return Err(ClientError::InvalidCa {
                    reason: "no PEM certificate (`BEGIN CERTIFICATE` block) in it".into(),
                });
            }
            builder = builder.tls_certs_only(certs);
        }
        let http = builder.build().map_err(|e| ClientError::InvalidCa {
            reason: root_cause(&e),
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
        } else if is_tls_error(err) {
            ClientError::Tls {
                url,
                cause: root_cause(err),
            }
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

/// Whether `url` names this machine (`localhost` or a loopback address), where plain HTTP never
/// leaves the host.
fn is_loopback(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return ip.is_loopback();
    }
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    host == "localhost" || host.ends_with(".localhost")
}

/// Whether a transport error is TLS failing (an untrusted or mismatched certificate, mostly)
/// rather than no hub being there: whether rustls' error is somewhere in the chain.
fn is_tls_error(err: &reqwest::Error) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if is_rustls_error(e) {
            return true;
        }
        cur = e.source();
    }
    false
}

/// Whether `e` is rustls' error, or an `io::Error` around it: the connector nests it in two
/// `io::Error`s, and an `io::Error`'s `source()` skips its payload, so they are opened here.
fn is_rustls_error(e: &(dyn std::error::Error + 'static)) -> bool {
    if e.is::<rustls::Error>() {
        return true;
    }
    if let Some(io) = e.downcast_ref::<std::io::Error>() {
        return io.get_ref().is_some_and(|inner| is_rustls_error(inner));
    }
    false
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

    /// A client of a made-up hub over plain HTTP (no request is sent).
    fn plain(base: &str, api_key: Option<String>) -> Result<HubClient> {
        let trust = HubTrust {
            allow_plain_http: true,
            ..HubTrust::default()
        };
        HubClient::with_trust(base, api_key, &trust)
    }

    #[test]
    fn plain_http_is_for_this_machine_unless_allowed() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        for local in ["http://127.0.0.1:7600", "localhost:7600", "http://[::1]:1"] {
            assert!(HubClient::new(local, None).is_ok(), "{local}");
        }
        for remote in [
            "http://hub.example:7600",
            "hub.example:7600",
            "http://10.1.2.3",
        ] {
            let err = HubClient::new(remote, None).unwrap_err();
            assert!(
                matches!(err, ClientError::InvalidUrl { .. })
                    && err.to_string().contains("--allow-plain-http"),
                "{remote}: {err}"
            );
            assert!(plain(remote, None).is_ok(), "{remote}");
        }
        assert!(HubClient::new("https://hub.example", None).is_ok());
    }

    #[test]
    fn a_ca_without_certificates_is_refused() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let trust = HubTrust {
            ca_pem: Some(b"hello".to_vec()),
            allow_plain_http: false,
        };
        let err = HubClient::with_trust("https://hub.example", None, &trust).unwrap_err();
        assert!(matches!(err, ClientError::InvalidCa { .. }), "{err}");
    }

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
        let client = plain("http://h", Some("  \n".into())).unwrap();
        assert!(client.api_key.is_none());
        let client = plain("http://h", Some("k1\n".into())).unwrap();
        assert_eq!(client.api_key.as_deref(), Some("k1"));
    }

    #[test]
    fn error_bodies_become_api_errors() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = plain("http://h", Some("k".into())).unwrap();
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
        let client = plain("http://h", None).unwrap();
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
