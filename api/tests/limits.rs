//! Tenancy and limits through the router, on both backends: per-key rate limits (a burst, then
//! `429` with `Retry-After`, other keys unaffected, refill), the node tokens' own budget, the
//! per-address budget of anonymous requests and failed authentications, revoked keys, what the
//! key list shows; and the hub's refusal to serve plain HTTP off loopback.

mod common;

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use api::{
    HubSettings,
    ratelimit::{ClientAddr, Rate, RateLimits},
    store::RevokeOutcome,
};
use axum::{
    body::Body,
    extract::ConnectInfo,
    http::{Request, header},
};
use common::*;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

/// Settings with only the given limits (and the rest off).
fn limited(limits: RateLimits) -> HubSettings {
    HubSettings {
        rate_limits: limits,
        ..HubSettings::default()
    }
}

fn rate(per_second: f64, burst: u32) -> Option<Rate> {
    Some(Rate::new(per_second, burst).unwrap())
}

/// Checks a `429`: the API's error shape, code `rate_limited`, and `Retry-After` in whole seconds.
fn assert_rate_limited(reply: &Reply) {
    assert_eq!(reply.status, 429, "{}", reply.text);
    assert_eq!(error_code(reply), "rate_limited");
    let retry_after: u64 = reply
        .header("retry-after")
        .parse()
        .unwrap_or_else(|_| panic!("Retry-After is whole seconds: {:?}", reply.headers));
    assert!(retry_after >= 1, "Retry-After {retry_after}");
}

/// Sends a request as if it came from `from` over a socket (the hub's listener adds the client's
/// address the same way).
async fn send_from(
    app: &axum::Router,
    from: &str,
    method: &str,
    uri: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> Reply {
    let addr: SocketAddr = format!("{from}:40000").parse().unwrap();
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(key) = key {
        request = request.header(header::AUTHORIZATION, format!("Bearer {key}"));
    }
    if body.is_some() {
        request = request.header(header::CONTENT_TYPE, "application/json");
    }
    let mut request = request
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .unwrap();
    request
        .extensions_mut()
        .insert(ConnectInfo(ClientAddr(addr)));
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        headers,
        text: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

backend_tests! {
    async fn a_key_gets_its_burst_then_429_and_other_keys_are_unaffected(store: Store) {
        let settings = limited(RateLimits { api_key: rate(0.5, 3), ..RateLimits::unlimited() });
        let (app, _, key) = app_limited(&store, "team-a", settings).await;
        for i in 0..3 {
            let reply = send(&app, "GET", "/v1/jobs", Some(&key), None, "").await;
            assert_eq!(reply.status, 200, "request {i} of the burst: {}", reply.body);
        }
        let refused = send(&app, "GET", "/v1/jobs", Some(&key), None, "").await;
        assert_rate_limited(&refused);
        // At half a request a second the next token is two seconds away.
        assert_eq!(refused.header("retry-after"), "2");
        // Every route of the API key draws on the same bucket.
        assert_rate_limited(&send(&app, "GET", "/v1/nodes", Some(&key), None, "").await);

        // Another tenant's key, and a second key of the same tenant, have buckets of their own.
        let other = add_key(&store, "team-b").await;
        let second = add_key(&store, "team-a").await;
        for key in [&other, &second] {
            let reply = send(&app, "GET", "/v1/jobs", Some(key), None, "").await;
            assert_eq!(reply.status, 200, "{}", reply.body);
        }
        // Health, readiness, metrics and the API description are never limited.
        for _ in 0..10 {
            for path in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
                let reply = send(&app, "GET", path, Some(&key), None, "").await;
                assert_eq!(reply.status, 200, "{path}: {}", reply.text);
            }
        }
        // Refused requests are counted like any other answer.
        let metrics = send(&app, "GET", "/metrics", None, None, "").await;
        assert!(
            metrics.text.lines().any(|l| l.starts_with("agora_http_requests_total") && l.contains("status=\"429\"")),
            "{}", metrics.text
        );
    }

    async fn a_spent_bucket_refills_at_its_rate(store: Store) {
        // One request, then one more every 100 ms.
        let settings = limited(RateLimits { api_key: rate(10.0, 1), ..RateLimits::unlimited() });
        let (app, _, key) = app_limited(&store, "team-a", settings).await;
        assert_eq!(send(&app, "GET", "/v1/jobs", Some(&key), None, "").await.status, 200);
        let refused = send(&app, "GET", "/v1/jobs", Some(&key), None, "").await;
        assert_rate_limited(&refused);
        assert_eq!(refused.header("retry-after"), "1", "100 ms rounds up to a whole second");
        let started = Instant::now();
        eventually("the bucket to refill", Duration::from_secs(5), || {
            let app = app.clone();
            let key = key.clone();
            async move {
                let reply = send(&app, "GET", "/v1/jobs", Some(&key), None, "").await;
                (reply.status == 200).then_some(())
            }
        })
        .await;
        assert!(started.elapsed() < Duration::from_secs(2), "refilled only after {:?}", started.elapsed());
    }

    async fn node_tokens_have_a_budget_of_their_own(store: Store) {
        let settings = limited(RateLimits {
            api_key: rate(0.1, 1),
            node: rate(0.1, 2),
            ..RateLimits::unlimited()
        });
        let (app, _, key) = app_limited(&store, "team-a", settings).await;
        let token = register(&app, &registration("gn-rl", "eu-west", 1, "1.00")).await;
        for _ in 0..2 {
            let reply = heartbeat(&app, &token, &[]).await;
            assert_eq!(reply.status, 200, "{}", reply.body);
        }
        assert_rate_limited(&heartbeat(&app, &token, &[]).await);
        // The tenant's key was not touched by the node's requests.
        assert_eq!(send(&app, "GET", "/v1/jobs", Some(&key), None, "").await.status, 200);
        assert_rate_limited(&send(&app, "GET", "/v1/jobs", Some(&key), None, "").await);
    }

    async fn anonymous_requests_and_failed_logins_are_limited_per_address(store: Store) {
        let settings = limited(RateLimits { api_key: rate(100.0, 100), anonymous: rate(0.1, 2), ..RateLimits::unlimited() });
        let (app, _, key) = app_limited(&store, "team-a", settings).await;
        let unused = add_key(&store, "team-a").await;
        let challenge = json!({"publicKey": public_key_hex(&node_key("gn-anon"))});
        for _ in 0..2 {
            let reply = send_from(&app, "192.0.2.1", "POST", "/v1/agent/challenge", None, Some(challenge.clone())).await;
            assert_eq!(reply.status, 200, "{}", reply.body);
        }
        let refused = send_from(&app, "192.0.2.1", "POST", "/v1/agent/challenge", None, Some(challenge.clone())).await;
        assert_rate_limited(&refused);
        assert_rate_limited(&send_from(&app, "192.0.2.1", "POST", "/v1/agent/register", None, Some(json!({}))).await);
        // Another address is another budget; the limited one still reaches health checks.
        let reply = send_from(&app, "192.0.2.2", "POST", "/v1/agent/challenge", None, Some(challenge.clone())).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(send_from(&app, "192.0.2.1", "GET", "/healthz", None, None).await.status, 200);

        // Made-up keys are charged to their address: each answers 401 until the budget is gone.
        let reply = send_from(&app, "198.51.100.7", "GET", "/v1/jobs", Some(&key), None).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        for i in 0..2 {
            let made_up = format!("agora_{i:064}");
            let reply = send_from(&app, "198.51.100.7", "GET", "/v1/jobs", Some(&made_up), None).await;
            assert_eq!(reply.status, 401, "{}", reply.body);
        }
        let reply = send_from(&app, "198.51.100.7", "GET", "/v1/jobs", Some("agora_yet-another"), None).await;
        assert_rate_limited(&reply);
        // A key that has worked is not held back by its address's failures; one never seen to
        // work has to wait like any other unproven credential from there.
        assert_rate_limited(&send_from(&app, "198.51.100.7", "GET", "/v1/jobs", Some(&unused), None).await);
        for _ in 0..5 {
            let reply = send_from(&app, "198.51.100.7", "GET", "/v1/jobs", Some(&key), None).await;
            assert_eq!(reply.status, 200, "{}", reply.body);
        }
    }

    async fn a_revoked_key_answers_401_at_once(store: Store) {
        let (app, _, _) = app_limited(&store, "team-a", HubSettings::default()).await;
        let (key, info) = store.create_api_key("team-r").await.unwrap();
        assert!(key.starts_with(&info.prefix) && key.len() > info.prefix.len());
        assert_eq!(send(&app, "GET", "/v1/jobs", Some(&key), None, "").await.status, 200);
        match store.revoke_api_key(&info.prefix).await.unwrap() {
            RevokeOutcome::Revoked(revoked) => {
                assert_eq!(revoked.tenant, "team-r");
                assert!(revoked.revoked_at.is_some());
            }
            other => panic!("{other:?}"),
        }
        let reply = send(&app, "GET", "/v1/jobs", Some(&key), None, "").await;
        assert_eq!(reply.status, 401, "{}", reply.body);
        assert_eq!(error_code(&reply), "unauthenticated");
        // Revoking again keeps the first revocation; presenting the key again does not revive it.
        let first = store.list_api_keys().await.unwrap().into_iter().find(|k| k.prefix == info.prefix).unwrap();
        assert!(matches!(store.revoke_api_key(&info.prefix).await.unwrap(), RevokeOutcome::Revoked(k) if k.revoked_at == first.revoked_at));
        let tenant_id = store.ensure_tenant("team-r").await.unwrap();
        store.add_api_key(&tenant_id, &key).await.unwrap();
        assert_eq!(send(&app, "GET", "/v1/jobs", Some(&key), None, "").await.status, 401);
        assert_eq!(store.revoke_api_key("agora_nope").await.unwrap(), RevokeOutcome::NotFound);
    }

    async fn the_key_list_never_shows_secrets(store: Store) {
        let (a, _) = store.create_api_key("team-a").await.unwrap();
        let (b, b_info) = store.create_api_key("team-b").await.unwrap();
        store.revoke_api_key(&b_info.prefix).await.unwrap();
        let keys = store.list_api_keys().await.unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0].tenant, "team-a");
        assert!(keys[0].revoked_at.is_none());
        assert_eq!(keys[1].tenant, "team-b");
        assert!(keys[1].revoked_at.is_some());
        let table = api::admin::keys_table(&keys);
        for key in [&a, &b] {
            assert!(!table.contains(key.as_str()), "{table}");
            assert!(!table.contains(&api::store::hash_secret(key)), "{table}");
            assert!(table.contains(&key[..api::store::KEY_PREFIX_CHARS]), "{table}");
        }
    }
}

#[tokio::test]
async fn plain_http_off_loopback_is_refused_with_the_ways_out() {
    let err = api::RunningHub::start(api::HubConfig {
        listen: "0.0.0.0:0".parse().unwrap(),
        // Never opened: the transport is checked first.
        database_url: "sqlite:///nonexistent/agora.db".into(),
        settings: HubSettings::default(),
        api_key_file: None,
        tls: None,
        allow_plain_http: false,
        chain: None,
    })
    .await
    .err()
    .expect("a plain-HTTP hub on 0.0.0.0 must not start");
    let message = format!("{err:#}");
    assert!(
        message.contains("refusing to serve plain HTTP on 0.0.0.0:0"),
        "{message}"
    );
    assert!(
        message.contains("--tls-cert FILE and --tls-key FILE"),
        "{message}"
    );
    assert!(message.contains("--allow-plain-http"), "{message}");

    for listen in ["127.0.0.1:7600", "[::1]:7600"] {
        api::server::check_transport(listen.parse().unwrap(), None, false).unwrap();
    }
    api::server::check_transport("0.0.0.0:7600".parse().unwrap(), None, true).unwrap();
}
