//! A typed HTTP client of the agent protocol (`/v1/agent/...`; wire types in [`crds::agent`]).
//!
//! The client does one request per call and never retries: what to do about a failure depends on the
//! call (re-register on a lost token, keep a final report until the hub acknowledges it, drop an
//! assignment the hub no longer knows), so [`ClientError`] sorts failures by what the caller should do,
//! and the [`agent`](crate::agent) decides.

use std::time::Duration;

use anyhow::{Context, bail};
use crds::{
    agent::{
        AssignmentList, ChallengeRequest, ChallengeResponse, CheckpointReport, HeartbeatRequest,
        HeartbeatResponse, PROTOCOL_VERSION, RegisterRequest, RegisterResponse, StatusReport,
    },
    rest::ErrorBody,
};
use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
use serde::de::DeserializeOwned;

pub use crds::agent::PROTOCOL_VERSION_HEADER;

/// The longest long-poll the hub grants, in seconds.
pub const MAX_WAIT_SECONDS: u32 = 30;

/// How long to wait for a TCP/TLS connection to the hub.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long any request but the long-poll may take; past it the hub counts as unreachable.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How long an opening's upload and check may take: 8 MiB at about 1 Mbit/s.
const OPENING_TIMEOUT: Duration = Duration::from_secs(90);

/// Slack on top of a long-poll's wait for the hub to answer it.
const LONG_POLL_SLACK: Duration = Duration::from_secs(15);

/// The largest response body the agent reads; protocol answers are a few KiB, so anything bigger is
/// not the hub talking and must not exhaust the agent's memory.
const MAX_RESPONSE_BYTES: usize = 4 << 20;

/// How much of a non-JSON error body is quoted in an error message.
const MAX_QUOTED_BODY_CHARS: usize = 200;

/// Why an agent protocol call failed, sorted by what the caller should do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// HTTP 401: the token is no longer valid (e.g. the hub's database was reset); register again.
    #[error("the hub no longer accepts this agent's token (HTTP 401)")]
    Unauthorized,
    /// HTTP 409: the hub considers the assignment already final or stopped (`assignment_final`),
    /// or already has this report or a newer one (`stale_report`); treat as acknowledged.
    #[error("the hub reports a conflict (HTTP 409, {code}): {message}")]
    Conflict {
        /// The hub's machine-readable error code.
        code: String,
        /// The hub's explanation.
        message: String,
    },
    /// HTTP 404: the hub does not know the thing asked about (for a status report: drop it).
    #[error("the hub does not know it (HTTP 404): {message}")]
    NotFound {
        /// The hub's explanation.
        message: String,
    },
    /// The hub could not be reached, timed out, failed (5xx, 408, 429) or answered garbage: retry later.
    #[error("the hub is unavailable: {0}")]
    Transient(String),
    /// Any other 4xx: the hub refused the request as such; repeating it will not help.
    #[error("the hub rejected the request (HTTP {status}, {code}): {message}")]
    Rejected {
        /// HTTP status code.
        status: u16,
        /// The hub's machine-readable error code.
        code: String,
        /// The hub's explanation.
        message: String,
        /// The offending field, when the hub names one.
        field: Option<String>,
    },
}

impl ClientError {
    /// Whether repeating the same request later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, ClientError::Transient(_))
    }
}

/// How an agent trusts its connection to the hub.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HubTrust {
    /// PEM certificates of the CA(s) that signed the hub's certificate (`--hub-ca FILE`). When
    /// given, only these are trusted, not the system's roots: a private CA then vouches for the
    /// hub alone. `None` trusts the system's roots.
    pub ca_pem: Option<Vec<u8>>,
    /// Allow `http://` to a hub that is not on loopback (`--allow-plain-http`): the token then
    /// crosses the network in clear, so only on a network the operator trusts.
    pub allow_plain_http: bool,
}

impl HubTrust {
    /// Trust only the CA certificates in the PEM file at `path`.
    pub fn from_ca_file(path: &std::path::Path) -> anyhow::Result<Self> {
        let pem = std::fs::read(path)
            .with_context(|| format!("reading the hub's CA file {}", path.display()))?;
        Ok(Self {
            ca_pem: Some(pem),
            allow_plain_http: false,
        })
    }
}

/// Whether `url` names this machine: `localhost` or a loopback address. Plain HTTP to it never
/// leaves the host.
pub fn is_loopback(url: &Url) -> bool {
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

/// A client of one hub. Cheap to clone (connections are pooled and shared); it holds no token, since
/// the token changes whenever the agent registers again.
#[derive(Clone, Debug)]
pub struct HubClient {
    http: reqwest::Client,
    base: Url,
}

impl HubClient {
    /// A client of the hub at `hub_url` (`https://`, or `http://` on loopback or where `trust`
    /// allows plain HTTP; optionally with a path prefix).
    ///
    /// HTTPS verifies the hub's certificate against the system's trust store (reqwest's
    /// platform verifier), or, when `trust.ca_pem` is given, against those CA certificates only,
    /// and never follows a redirect to plain HTTP.
    pub fn new(hub_url: &str, trust: &HubTrust) -> anyhow::Result<Self> {
        let mut base =
            Url::parse(hub_url).with_context(|| format!("invalid hub URL {hub_url:?}"))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            bail!(
                "invalid hub URL {hub_url:?}: expected http://HOST[:PORT] or https://HOST[:PORT]"
            );
        }
        if base.scheme() == "http" && !trust.allow_plain_http && !is_loopback(&base) {
            bail!(
                "refusing plain HTTP to the hub at {hub_url:?}, which is not a loopback address: \
                 the node token would cross the network unencrypted. Use https:// (with --hub-ca \
                 FILE if the hub's certificate comes from a private CA), or --allow-plain-http on \
                 a network you trust"
            );
        }
        base.set_query(None);
        base.set_fragment(None);
        // reqwest panics when it builds a TLS client with no rustls crypto provider installed; the
        // `agora` binary installs ring at start, and so does this for any other embedder.
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let mut builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("agora-agent/", env!("CARGO_PKG_VERSION")))
            .https_only(base.scheme() == "https");
        if let Some(pem) = &trust.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .context("reading the hub's CA certificates (PEM)")?;
            anyhow::ensure!(
                !certs.is_empty(),
                "the hub's CA file holds no certificate (expected PEM `BEGIN CERTIFICATE` blocks)"
            );
            builder = builder.tls_certs_only(certs);
        }
        let http = builder.build().context("building the HTTP client")?;
        Ok(Self { http, base })
    }

    /// The hub's base URL.
    pub fn hub_url(&self) -> &Url {
        &self.base
    }

    /// `POST /v1/agent/challenge`: a fresh nonce for the node's key to sign into `register`.
    pub async fn challenge(&self, public_key: &str) -> Result<ChallengeResponse, ClientError> {
        let builder = self
            .request(Method::POST, &["challenge"], None)
            .json(&ChallengeRequest {
                public_key: public_key.to_string(),
            });
        decode(&self.send(builder).await?)
    }

    /// `POST /v1/agent/register`: announces the node and gets a token for every later call.
    pub async fn register(
        &self,
        request: &RegisterRequest,
    ) -> Result<RegisterResponse, ClientError> {
        let builder = self
            .request(Method::POST, &["register"], None)
            .json(request);
        decode(&self.send(builder).await?)
    }

    /// `POST /v1/agent/heartbeat`: says the node is alive and what it holds; learns what to stop.
    pub async fn heartbeat(
        &self,
        token: &str,
        request: &HeartbeatRequest,
    ) -> Result<HeartbeatResponse, ClientError> {
        let builder = self
            .request(Method::POST, &["heartbeat"], Some(token))
            .json(request);
        decode(&self.send(builder).await?)
    }

    /// `POST /v1/agent/assignments/{id}/opening`: the rows of the chunks the hub asked this node
    /// to open (u32 little-endian), with the node's `signature` of them; answers the hub's
    /// finding. Given longer than other calls: the body may be megabytes and the hub checks it
    /// before answering.
    pub async fn send_opening(
        &self,
        token: &str,
        assignment: &str,
        rows: Vec<u8>,
        signature: &str,
    ) -> Result<crds::agent::OpeningAnswer, ClientError> {
        let builder = self
            .request(
                Method::POST,
                &["assignments", assignment, "opening"],
                Some(token),
            )
            .timeout(OPENING_TIMEOUT)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .header(crds::agent::OPENING_SIGNATURE_HEADER, signature)
            .body(rows);
        decode(&self.send(builder).await?)
    }

    /// `GET /v1/agent/assignments?waitSeconds=N`: every non-final assignment of the node, waiting up
    /// to `wait_seconds` (at most [`MAX_WAIT_SECONDS`]) while there is none.
    pub async fn assignments(
        &self,
        token: &str,
        wait_seconds: u32,
    ) -> Result<AssignmentList, ClientError> {
        let wait_seconds = wait_seconds.min(MAX_WAIT_SECONDS);
        let mut url = self.url(&["assignments"]);
        url.query_pairs_mut()
            .append_pair("waitSeconds", &wait_seconds.to_string());
        let builder = self
            .http
            .request(Method::GET, url)
            .bearer_auth(token)
            .header(PROTOCOL_VERSION_HEADER, PROTOCOL_VERSION)
            .timeout(Duration::from_secs(u64::from(wait_seconds)) + LONG_POLL_SLACK);
        decode(&self.send(builder).await?)
    }

    /// `POST /v1/agent/assignments/{id}/status`: reports a worker's state. The hub applies a report
    /// once: sent again with the same `seq`, it answers `409` `stale_report`.
    pub async fn report_status(
        &self,
        token: &str,
        assignment: &str,
        report: &StatusReport,
    ) -> Result<(), ClientError> {
        let builder = self
            .request(
                Method::POST,
                &["assignments", assignment, "status"],
                Some(token),
            )
            .json(report);
        self.send(builder).await.map(drop)
    }

    /// `POST /v1/agent/assignments/{id}/checkpoint`: a checkpoint the worker saved. Its `seq` is
    /// shared with the assignment's status reports; the hub answers a retry of one it has (or any
    /// report at or below its highest `seq`) `409` `stale_report`, and one on an assignment that
    /// is over `409` `assignment_final`.
    pub async fn report_checkpoint(
        &self,
        token: &str,
        assignment: &str,
        report: &CheckpointReport,
    ) -> Result<(), ClientError> {
        let builder = self
            .request(
                Method::POST,
                &["assignments", assignment, "checkpoint"],
                Some(token),
            )
            .json(report);
        self.send(builder).await.map(drop)
    }

    /// `POST /v1/agent/assignments/{id}/receipts`: a signed usage receipt. The hub keeps the
    /// highest sequence; an exact replay answers 204, an older one `409` `stale_receipt`.
    pub async fn send_receipt(
        &self,
        token: &str,
        assignment: &str,
        report: &crds::agent::ReceiptReport,
    ) -> Result<(), ClientError> {
        let builder = self
            .request(
                Method::POST,
                &["assignments", assignment, "receipts"],
                Some(token),
            )
            .json(report);
        self.send(builder).await.map(drop)
    }

    /// A request to `/v1/agent/bandwidth` (`?bytes=N` when given) for [`crate::probes`], which
    /// streams its bodies itself (a probe's download is larger than any protocol answer this
    /// client reads).
    pub(crate) fn bandwidth_request(
        &self,
        method: Method,
        token: &str,
        bytes: Option<u64>,
        timeout: Duration,
    ) -> RequestBuilder {
        let mut url = self.url(&["bandwidth"]);
        if let Some(bytes) = bytes {
            url.query_pairs_mut()
                .append_pair("bytes", &bytes.to_string());
        }
        self.http
            .request(method, url)
            .bearer_auth(token)
            .header(PROTOCOL_VERSION_HEADER, PROTOCOL_VERSION)
            .timeout(timeout)
    }

    /// `{base}/v1/agent/{segments…}`, each segment percent-encoded (ids come from the network).
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        // Cannot fail: `new` refused URLs that cannot be a base.
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(["v1", "agent"]).extend(segments);
        }
        url
    }

    fn request(&self, method: Method, segments: &[&str], token: Option<&str>) -> RequestBuilder {
        let builder = self
            .http
            .request(method, self.url(segments))
            .header(PROTOCOL_VERSION_HEADER, PROTOCOL_VERSION)
            .timeout(REQUEST_TIMEOUT);
        match token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    /// Sends a request and returns the body of a 2xx answer; anything else becomes a [`ClientError`].
    async fn send(&self, builder: RequestBuilder) -> Result<Vec<u8>, ClientError> {
        let mut response = builder.send().await.map_err(network_error)?;
        let status = response.status();
        let body = read_body(&mut response).await?;
        if status.is_success() {
            Ok(body)
        } else {
            Err(classify(status, &body))
        }
    }
}

/// The error a non-2xx answer stands for.
pub(crate) async fn error_answer(mut response: Response) -> ClientError {
    let status = response.status();
    match read_body(&mut response).await {
        Ok(body) => classify(status, &body),
        Err(e) => e,
    }
}

/// Reads a response body, refusing one larger than [`MAX_RESPONSE_BYTES`].
async fn read_body(response: &mut Response) -> Result<Vec<u8>, ClientError> {
    if response
        .content_length()
        .is_some_and(|n| n > MAX_RESPONSE_BYTES as u64)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(network_error)? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn too_large() -> ClientError {
    ClientError::Transient(format!(
        "response body larger than {MAX_RESPONSE_BYTES} bytes"
    ))
}

fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, ClientError> {
    serde_json::from_slice(body)
        .map_err(|e| ClientError::Transient(format!("the hub's answer is not valid: {e}")))
}

/// A transport failure, with its causes (reqwest's own message omits them: "connection refused").
pub(crate) fn network_error(error: reqwest::Error) -> ClientError {
    let mut message = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    ClientError::Transient(message)
}

/// Sorts a non-2xx answer, keeping the hub's `{"error": {...}}` explanation when it sent one.
fn classify(status: StatusCode, body: &[u8]) -> ClientError {
    let (code, message, field) = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(ErrorBody { error }) => (error.code, error.message, error.field),
        Err(_) => {
            let text: String = String::from_utf8_lossy(body)
                .chars()
                .take(MAX_QUOTED_BODY_CHARS)
                .collect();
            let text = text.trim();
            let message = if text.is_empty() {
                status
                    .canonical_reason()
                    .unwrap_or("no explanation")
                    .to_string()
            } else {
                text.to_string()
            };
            (String::from("unknown"), message, None)
        }
    };
    match status {
        StatusCode::UNAUTHORIZED => ClientError::Unauthorized,
        StatusCode::NOT_FOUND => ClientError::NotFound { message },
        StatusCode::CONFLICT => ClientError::Conflict { code, message },
        StatusCode::REQUEST_TIMEOUT | StatusCode::TOO_MANY_REQUESTS => {
            ClientError::Transient(format!("HTTP {}: {message}", status.as_u16()))
        }
        s if s.is_server_error() => {
            ClientError::Transient(format!("HTTP {}: {message}", s.as_u16()))
        }
        s => ClientError::Rejected {
            status: s.as_u16(),
            code,
            message,
            field,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn install_crypto() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }

    fn plain() -> HubTrust {
        HubTrust {
            allow_plain_http: true,
            ..HubTrust::default()
        }
    }

    #[test]
    fn plain_http_only_on_loopback_unless_allowed() {
        install_crypto();
        for hub in [
            "http://127.0.0.1:7600",
            "http://127.8.9.10",
            "http://[::1]:7600",
            "http://localhost:7600",
            "http://LOCALHOST.",
            "http://hub.localhost",
            "https://hub.example.com",
        ] {
            assert!(
                HubClient::new(hub, &HubTrust::default()).is_ok(),
                "{hub:?} should be accepted"
            );
        }
        for hub in [
            "http://hub.example.com",
            "http://10.0.0.1:7600",
            "http://0.0.0.0:7600",
            "http://[2001:db8::1]",
            "http://localhost.example.com",
        ] {
            let err = HubClient::new(hub, &HubTrust::default()).unwrap_err();
            assert!(
                err.to_string().contains("--allow-plain-http"),
                "{hub:?}: {err}"
            );
            assert!(HubClient::new(hub, &plain()).is_ok(), "{hub:?}");
        }
    }

    #[test]
    fn a_ca_file_must_hold_a_certificate() {
        install_crypto();
        let trust = HubTrust {
            ca_pem: Some(b"not a certificate".to_vec()),
            allow_plain_http: false,
        };
        let err = HubClient::new("https://hub.example.com", &trust).unwrap_err();
        assert!(err.to_string().contains("no certificate"), "{err}");
    }

    #[test]
    fn builds_urls_under_the_hub_url() {
        install_crypto();
        for hub in [
            "http://127.0.0.1:8080",
            "http://127.0.0.1:8080/",
            "http://127.0.0.1:8080/?x=1",
        ] {
            let c = HubClient::new(hub, &HubTrust::default()).unwrap();
            assert_eq!(
                c.url(&["register"]).as_str(),
                "http://127.0.0.1:8080/v1/agent/register"
            );
        }
        let c = HubClient::new("https://hub.example.com/agora/", &HubTrust::default()).unwrap();
        assert_eq!(
            c.url(&["assignments", "asg-1", "status"]).as_str(),
            "https://hub.example.com/agora/v1/agent/assignments/asg-1/status"
        );
    }

    #[test]
    fn escapes_ids_from_the_network() {
        install_crypto();
        let c = HubClient::new("http://hub", &plain()).unwrap();
        assert_eq!(
            c.url(&["assignments", "../x?y#z", "status"]).as_str(),
            "http://hub/v1/agent/assignments/..%2Fx%3Fy%23z/status"
        );
    }

    #[test]
    fn refuses_bad_hub_urls() {
        install_crypto();
        for hub in [
            "",
            "hub:8080",
            "ftp://hub",
            "mailto:ops@example.com",
            "not a url",
        ] {
            assert!(HubClient::new(hub, &plain()).is_err(), "{hub:?}");
        }
    }

    #[test]
    fn sorts_answers_by_what_to_do() {
        let body =
            br#"{"error":{"code":"invalid_field","message":"name is too long","field":"name"}}"#;
        assert_eq!(
            classify(StatusCode::BAD_REQUEST, body),
            ClientError::Rejected {
                status: 400,
                code: "invalid_field".into(),
                message: "name is too long".into(),
                field: Some("name".into()),
            }
        );
        assert_eq!(
            classify(StatusCode::UNAUTHORIZED, b""),
            ClientError::Unauthorized
        );
        let body = br#"{"error":{"code":"stale_report","message":"seq 2 is not above 3"}}"#;
        assert_eq!(
            classify(StatusCode::CONFLICT, body),
            ClientError::Conflict {
                code: "stale_report".into(),
                message: "seq 2 is not above 3".into()
            }
        );
        assert_eq!(
            classify(StatusCode::NOT_FOUND, b""),
            ClientError::NotFound {
                message: "Not Found".into()
            }
        );
        assert!(classify(StatusCode::BAD_GATEWAY, b"<html>bad gateway</html>").is_transient());
        assert!(classify(StatusCode::SERVICE_UNAVAILABLE, b"").is_transient());
        assert!(classify(StatusCode::TOO_MANY_REQUESTS, b"").is_transient());
        assert!(!classify(StatusCode::FORBIDDEN, b"").is_transient());
    }

    #[test]
    fn quotes_little_of_a_garbage_body() {
        let garbage = vec![b'x'; 10_000];
        match classify(StatusCode::BAD_REQUEST, &garbage) {
            ClientError::Rejected { message, code, .. } => {
                assert_eq!(message.len(), MAX_QUOTED_BODY_CHARS);
                assert_eq!(code, "unknown");
            }
            other => panic!("{other:?}"),
        }
        // Invalid UTF-8 does not panic either.
        assert!(matches!(
            classify(StatusCode::BAD_REQUEST, &[0xff, 0xfe]),
            ClientError::Rejected { .. }
        ));
    }

    #[test]
    fn invalid_answers_are_transient() {
        assert!(
            decode::<HeartbeatResponse>(b"{")
                .unwrap_err()
                .is_transient()
        );
        let ok: HeartbeatResponse =
            decode(br#"{"stop":["asg-1"],"heartbeatIntervalSeconds":5}"#).unwrap();
        assert_eq!(ok.stop, ["asg-1"]);
    }

    #[tokio::test]
    async fn an_unreachable_hub_is_transient() {
        install_crypto();
        // Port 9 (discard) on localhost is closed on any sane test machine.
        let c = HubClient::new("http://127.0.0.1:9", &HubTrust::default()).unwrap();
        let err = c
            .heartbeat("t", &HeartbeatRequest::default())
            .await
            .unwrap_err();
        assert!(err.is_transient(), "{err}");
    }
}
