//! The hub's side of agents' bandwidth probes (`GET`/`POST /v1/agent/bandwidth`): only for
//! registered agents, bounded in size (a 4xx naming `bytes`, or 413) and in concurrency, and exact
//! in the bytes it moves and counts. The upload route takes bodies far above the hub's 1 MiB JSON
//! limit, which every other route keeps. Every test runs on SQLite and on PostgreSQL.

mod common;

use api::HubSettings;
use axum::{
    Router,
    body::{Body, Bytes},
    http::Request,
};
use common::*;
use crds::agent::MAX_BANDWIDTH_PROBE_BYTES;
use http_body_util::BodyExt;
use tower::ServiceExt;

/// A raw answer: status, headers and the body's bytes (a download is not JSON or UTF-8).
struct Raw {
    status: u16,
    headers: axum::http::HeaderMap,
    bytes: Bytes,
}

impl Raw {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.bytes).unwrap_or_default()
    }
}

async fn send_raw(app: &Router, method: &str, uri: &str, token: Option<&str>, body: Body) -> Raw {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = app
        .clone()
        .oneshot(request.body(body).unwrap())
        .await
        .unwrap();
    Raw {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        bytes: response.into_body().collect().await.unwrap().to_bytes(),
    }
}

async fn download(app: &Router, token: &str, query: &str) -> Raw {
    send_raw(
        app,
        "GET",
        &format!("/v1/agent/bandwidth{query}"),
        Some(token),
        Body::empty(),
    )
    .await
}

async fn upload(app: &Router, token: &str, body: Body) -> Raw {
    send_raw(app, "POST", "/v1/agent/bandwidth", Some(token), body).await
}

fn error_field(raw: &Raw) -> String {
    raw.json()["error"]["field"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// `n` bytes sent as a stream of 1 MiB chunks with no `Content-Length`, as a chunked upload is.
fn chunked(n: usize) -> Body {
    let chunks: Vec<Result<Bytes, std::io::Error>> = (0..n.div_ceil(1 << 20))
        .map(|i| Ok(Bytes::from(vec![0xa5; (n - i * (1 << 20)).min(1 << 20)])))
        .collect();
    Body::from_stream(futures::stream::iter(chunks))
}

backend_tests! {
    async fn a_download_is_exactly_the_bytes_asked_for_and_random(store: Store) {
        let (app, _, _) = app(&store, "acme").await;
        let token = register(&app, &registration("gn-bw", "eu-west", 1, "2.00")).await;
        for n in [1u64, 65_537, MAX_BANDWIDTH_PROBE_BYTES] {
            let raw = download(&app, &token, &format!("?bytes={n}")).await;
            assert_eq!(raw.status, 200, "bytes={n}: {:?}", raw.json());
            assert_eq!(raw.bytes.len() as u64, n);
            assert_eq!(raw.headers["content-length"], n.to_string().as_str());
            assert_eq!(raw.headers["content-type"], "application/octet-stream");
        }
        // Random, so that nothing on the way can compress it: every byte value shows up in 1 MiB,
        // and two downloads differ.
        let a = download(&app, &token, "?bytes=1048576").await.bytes;
        let b = download(&app, &token, "?bytes=1048576").await.bytes;
        let mut seen = [false; 256];
        a.iter().for_each(|&byte| seen[byte as usize] = true);
        assert!(seen.iter().all(|&s| s));
        assert_ne!(a, b);
    }

    async fn a_download_outside_the_bounds_is_refused_naming_bytes(store: Store) {
        let (app, _, _) = app(&store, "acme").await;
        let token = register(&app, &registration("gn-bw", "eu-west", 1, "2.00")).await;
        let too_many = format!("?bytes={}", MAX_BANDWIDTH_PROBE_BYTES + 1);
        for (query, status) in [
            ("", 422),
            ("?bytes=0", 422),
            (too_many.as_str(), 422),
            ("?bytes=-5", 400),
            ("?bytes=lots", 400),
        ] {
            let raw = download(&app, &token, query).await;
            assert_eq!(raw.status, status, "{query}: {:?}", raw.json());
            assert_eq!(error_field(&raw), "bytes", "{query}: {:?}", raw.json());
        }
    }

    async fn an_upload_is_counted_exactly_past_the_json_body_limit(store: Store) {
        let (app, state, _) = app(&store, "acme").await;
        let token = register(&app, &registration("gn-bw", "eu-west", 1, "2.00")).await;
        let limit = state.settings.max_body_bytes;
        // Three times the limit every other route keeps, with a Content-Length and without one.
        for body in [Body::from(vec![7u8; 3 * limit]), chunked(3 * limit)] {
            let raw = upload(&app, &token, body).await;
            assert_eq!(raw.status, 200, "{:?}", raw.json());
            let answer = raw.json();
            assert_eq!(answer["bytes"], 3 * limit as u64, "{answer}");
            assert!(answer["timedBytes"].as_u64().unwrap() < 3 * limit as u64, "{answer}");
            assert!(answer["readMicros"].is_u64(), "{answer}");
        }
        // An empty upload is answered too: nothing read, nothing timed.
        let raw = upload(&app, &token, Body::empty()).await;
        assert_eq!(raw.status, 200);
        assert_eq!(raw.json(), serde_json::json!({"bytes": 0, "timedBytes": 0, "readMicros": 0}));
        // The exact bound is accepted.
        let raw = upload(&app, &token, chunked(MAX_BANDWIDTH_PROBE_BYTES as usize)).await;
        assert_eq!(raw.json()["bytes"], MAX_BANDWIDTH_PROBE_BYTES, "{:?}", raw.json());
        // The JSON routes keep their limit.
        let raw = send_raw(&app, "POST", "/v1/agent/heartbeat", Some(&token), Body::from(vec![b' '; 3 * limit])).await;
        assert_eq!(raw.status, 413);
    }

    async fn an_upload_over_the_bound_is_refused(store: Store) {
        let (app, _, _) = app(&store, "acme").await;
        let token = register(&app, &registration("gn-bw", "eu-west", 1, "2.00")).await;
        let over = MAX_BANDWIDTH_PROBE_BYTES as usize + 1;
        // Declared too large: refused before anything is read.
        let raw = upload(&app, &token, Body::from(vec![0u8; over])).await;
        assert_eq!(raw.status, 413, "{:?}", raw.json());
        assert_eq!(raw.json()["error"]["code"], "body_too_large");
        // Streamed without a length: refused once the bound is passed.
        let raw = upload(&app, &token, chunked(over)).await;
        assert_eq!(raw.status, 413, "{:?}", raw.json());
    }

    async fn bandwidth_probes_need_a_node_token(store: Store) {
        let (app, _, api_key) = app(&store, "acme").await;
        for token in [None, Some("agt_not-a-token"), Some(api_key.as_str())] {
            let raw = send_raw(&app, "GET", "/v1/agent/bandwidth?bytes=1024", token, Body::empty()).await;
            assert_eq!(raw.status, 401, "{token:?}");
            assert!(raw.bytes.len() < 1024, "a refused download sends no data");
            let raw = send_raw(&app, "POST", "/v1/agent/bandwidth", token, Body::from(vec![0u8; 1024])).await;
            assert_eq!(raw.status, 401, "{token:?}");
        }
    }

    async fn concurrent_probes_beyond_the_bound_are_told_to_come_back(store: Store) {
        let (app, _, _) = app(&store, "acme").await;
        let token = register(&app, &registration("gn-bw", "eu-west", 1, "2.00")).await;
        // Downloads whose bodies are not read hold their slots.
        let mut held = Vec::new();
        for _ in 0..4 {
            let request = Request::get("/v1/agent/bandwidth?bytes=1048576")
                .header("authorization", format!("Bearer {token}"))
                .body(Body::empty())
                .unwrap();
            let response = app.clone().oneshot(request).await.unwrap();
            assert_eq!(response.status(), 200);
            held.push(response);
        }
        let raw = download(&app, &token, "?bytes=1024").await;
        assert_eq!(raw.status, 503, "{:?}", raw.json());
        assert_eq!(raw.json()["error"]["code"], "bandwidth_busy");
        assert_eq!(raw.headers["retry-after"], "5");
        let raw = upload(&app, &token, Body::from(vec![0u8; 1024])).await;
        assert_eq!(raw.status, 503);
        // A transfer that ends (here: its download dropped) frees its slot.
        drop(held.pop());
        let raw = eventually("a freed slot", std::time::Duration::from_secs(10), || async {
            let raw = download(&app, &token, "?bytes=1024").await;
            (raw.status == 200).then_some(raw)
        })
        .await;
        assert_eq!(raw.bytes.len(), 1024);
    }

    async fn bandwidth_probes_count_against_the_node_rate_limit(store: Store) {
        let settings = HubSettings {
            rate_limits: api::ratelimit::RateLimits {
                node: Some(api::ratelimit::Rate::new(0.001, 3).unwrap()),
                ..api::ratelimit::RateLimits::unlimited()
            },
            ..HubSettings::default()
        };
        let (app, _, _) = app_limited(&store, "acme", settings).await;
        let token = register(&app, &registration("gn-bw", "eu-west", 1, "2.00")).await;
        let mut statuses = Vec::new();
        for _ in 0..6 {
            statuses.push(download(&app, &token, "?bytes=1024").await.status);
        }
        assert_eq!(statuses[0], 200, "{statuses:?}");
        assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    }
}
