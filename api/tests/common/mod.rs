//! Test harness: every store and API test runs against SQLite and against PostgreSQL.
//!
//! `backend_tests!` turns one async test body into a `sqlite` and a `postgres` test. SQLite lives in
//! a temporary directory; PostgreSQL gets a fresh database per test, created through the server
//! named by `AGORA_TEST_POSTGRES_URL` (`scripts/test` starts one and sets it). Without that variable
//! the PostgreSQL tests say so and pass, unless `AGORA_REQUIRE_POSTGRES=1` (set by `scripts/test`
//! and CI), where they fail instead.
#![allow(dead_code)]

use std::{
    collections::HashMap,
    sync::{
        Mutex,
        atomic::{AtomicU32, Ordering},
    },
};

use api::{
    AppState, HubSettings,
    store::{Backend, Store},
};
use axum::{Router, body::Body, http::Request};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

/// A store for one test; keeps its temporary directory alive.
pub struct TestStore {
    pub store: Store,
    _dir: Option<tempfile::TempDir>,
}

/// A fresh, migrated store on `backend`, or `None` when PostgreSQL is not configured (and not required).
pub async fn fresh_store(backend: Backend) -> Option<TestStore> {
    match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().expect("temporary directory");
            let url = format!("sqlite://{}", dir.path().join("hub.db").display());
            Some(TestStore {
                store: Store::connect(&url).await.expect("SQLite store"),
                _dir: Some(dir),
            })
        }
        Backend::Postgres => {
            let Ok(admin_url) = std::env::var("AGORA_TEST_POSTGRES_URL") else {
                if std::env::var("AGORA_REQUIRE_POSTGRES").as_deref() == Ok("1") {
                    panic!(
                        "AGORA_REQUIRE_POSTGRES=1 but AGORA_TEST_POSTGRES_URL is not set; run ./scripts/test"
                    );
                }
                eprintln!(
                    "PostgreSQL not configured (AGORA_TEST_POSTGRES_URL); skipping the PostgreSQL variant"
                );
                return None;
            };
            let url = create_database(&admin_url).await;
            Some(TestStore {
                store: Store::connect(&url).await.expect("PostgreSQL store"),
                _dir: None,
            })
        }
    }
}

/// Creates an empty database next to the one `admin_url` names and returns its URL.
async fn create_database(admin_url: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    sqlx::any::install_default_drivers();
    let name = format!(
        "agora_t_{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        rand::random::<u32>()
    );
    let mut admin = <sqlx::AnyConnection as sqlx::Connection>::connect(admin_url)
        .await
        .expect("connect to PostgreSQL");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .expect("create database");
    let base = admin_url
        .rsplit_once('/')
        .map_or(admin_url, |(base, _)| base);
    format!("{base}/{name}")
}

/// Declares `sqlite` and `postgres` variants of an async test taking a [`Store`].
#[macro_export]
macro_rules! backend_tests {
    ($(async fn $name:ident($store:ident: Store) $body:block)*) => {
        $(
            mod $name {
                #[allow(unused_imports)]
                use super::*;

                async fn run($store: api::store::Store) $body

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    let fresh = $crate::common::fresh_store(api::store::Backend::Sqlite).await.unwrap();
                    run(fresh.store.clone()).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    if let Some(fresh) = $crate::common::fresh_store(api::store::Backend::Postgres).await {
                        run(fresh.store.clone()).await;
                    }
                }
            }
        )*
    };
}

/// A hub's router over `store` with an API key for tenant `tenant`; returns (router, state, key).
pub async fn app(store: &Store, tenant: &str) -> (Router, AppState, String) {
    app_with(store, tenant, HubSettings::default()).await
}

/// Like [`app`], with the hub's tunables given (a short node timeout, heartbeat interval, …).
///
/// Rate limits are off: these tests poll in tight loops by design (see [`eventually`]), faster
/// than any real client. Tests of the limits themselves use [`app_limited`].
pub async fn app_with(
    store: &Store,
    tenant: &str,
    settings: HubSettings,
) -> (Router, AppState, String) {
    let settings = HubSettings {
        rate_limits: api::ratelimit::RateLimits::unlimited(),
        ..settings
    };
    app_limited(store, tenant, settings).await
}

/// Like [`app_with`], with the rate limits in `settings` enforced.
pub async fn app_limited(
    store: &Store,
    tenant: &str,
    settings: HubSettings,
) -> (Router, AppState, String) {
    let (state, shutdown) = AppState::new(store.clone(), settings).await.unwrap();
    // Keep the shutdown sender alive for the router's lifetime.
    std::mem::forget(shutdown);
    let key = add_key(store, tenant).await;
    (api::routes::router(state.clone()), state, key)
}

/// A new API key for `tenant`.
pub async fn add_key(store: &Store, tenant: &str) -> String {
    let key = api::ids::secret("agora_");
    let tenant_id = store.ensure_tenant(tenant).await.unwrap();
    store.add_api_key(&tenant_id, &key).await.unwrap();
    key
}

/// A response's status and JSON body (Null when empty or not JSON).
pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub headers: axum::http::HeaderMap,
    /// The body as text, for answers that are not JSON (`/metrics`).
    pub text: String,
}

impl Reply {
    /// A response header as text ("" when absent).
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
}

/// Sends one request through the router.
pub async fn send(
    app: &Router,
    method: &str,
    uri: &str,
    key: Option<&str>,
    content_type: Option<&str>,
    body: impl Into<Body>,
) -> Reply {
    let authorization = key.map(|key| format!("Bearer {key}"));
    let mut headers = Vec::new();
    if let Some(authorization) = &authorization {
        headers.push(("authorization", authorization.as_str()));
    }
    if let Some(ct) = content_type {
        headers.push(("content-type", ct));
    }
    send_with(app, method, uri, &headers, body).await
}

/// Sends one request with exactly these headers (`Idempotency-Key`, `agora-protocol-version`, …).
pub async fn send_with(
    app: &Router,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: impl Into<Body>,
) -> Reply {
    let mut request = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = app
        .clone()
        .oneshot(request.body(body.into()).unwrap())
        .await
        .unwrap();
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

/// Submits `spec` as JSON for `key`'s tenant and returns the new job's id.
pub async fn submit(app: &Router, key: &str, spec: &Value) -> String {
    let reply = send(
        app,
        "POST",
        "/v1/jobs",
        Some(key),
        Some("application/json"),
        spec.to_string(),
    )
    .await;
    assert_eq!(reply.status, 201, "submitting {spec}: {}", reply.body);
    reply.body["id"].as_str().expect("a job id").to_string()
}

/// A job as `key`'s tenant sees it (asserting that it is found).
pub async fn get_job(app: &Router, key: &str, id: &str) -> Value {
    let reply = send(app, "GET", &format!("/v1/jobs/{id}"), Some(key), None, "").await;
    assert_eq!(reply.status, 200, "GET job {id}: {}", reply.body);
    reply.body
}

/// A node as the API shows it (asserting that it is found).
pub async fn get_node(app: &Router, key: &str, name: &str) -> Value {
    let reply = send(
        app,
        "GET",
        &format!("/v1/nodes/{name}"),
        Some(key),
        None,
        "",
    )
    .await;
    assert_eq!(reply.status, 200, "GET node {name}: {}", reply.body);
    reply.body
}

/// The test key of node `name`: the same for every test and run (SHA-256 of the name as the secret),
/// so a test that registers a name twice presents the same key, as a real agent would.
pub fn node_key(name: &str) -> k256::ecdsa::SigningKey {
    use sha2::Digest;
    let secret = sha2::Sha256::digest(format!("agora-test-node-key/{name}"));
    k256::ecdsa::SigningKey::from_slice(&secret).expect("a valid secret key")
}

/// A key's public half as the agent protocol spells it: compressed SEC1, lowercase hex.
pub fn public_key_hex(key: &k256::ecdsa::SigningKey) -> String {
    hex::encode(key.verifying_key().to_sec1_point(true).as_bytes())
}

/// `message` signed as agents sign: ECDSA over SHA-256, low s, `r ‖ s` as hex.
pub fn sign(key: &k256::ecdsa::SigningKey, message: &[u8]) -> String {
    use k256::ecdsa::signature::Signer;
    let signature: k256::ecdsa::Signature = key.sign(message);
    hex::encode(signature.to_bytes())
}

/// Asks the hub for a registration challenge for `public_key`.
pub async fn challenge(app: &Router, public_key: &str) -> Reply {
    let body = serde_json::json!({ "publicKey": public_key });
    send(
        app,
        "POST",
        "/v1/agent/challenge",
        None,
        Some("application/json"),
        body.to_string(),
    )
    .await
}

/// `registration` with `key`'s public key and its signature over `challenge`.
pub fn sign_with(registration: &Value, key: &k256::ecdsa::SigningKey, challenge: &str) -> Value {
    let mut signed = registration.clone();
    let message = crds::agent::register_message(
        challenge,
        registration["name"].as_str().unwrap_or_default(),
        registration["operatorAddress"].as_str(),
    );
    signed["publicKey"] = public_key_hex(key).into();
    signed["challenge"] = challenge.into();
    signed["signature"] = sign(key, message.as_bytes()).into();
    signed
}

/// `registration` signed by `key` over a fresh challenge from the hub.
pub async fn signed_by(app: &Router, registration: &Value, key: &k256::ecdsa::SigningKey) -> Value {
    let reply = challenge(app, &public_key_hex(key)).await;
    assert_eq!(reply.status, 200, "asking for a challenge: {}", reply.body);
    let nonce = reply.body["challenge"].as_str().expect("a challenge");
    sign_with(registration, key, nonce)
}

/// `registration` signed over a fresh challenge by its node's test key ([`node_key`]).
pub async fn signed(app: &Router, registration: &Value) -> Value {
    let name = registration["name"].as_str().unwrap_or_default();
    signed_by(app, registration, &node_key(name)).await
}

/// Sends a registration as it is (already signed, or deliberately not).
pub async fn send_registration(app: &Router, registration: &Value) -> Reply {
    send(
        app,
        "POST",
        "/v1/agent/register",
        None,
        Some("application/json"),
        registration.to_string(),
    )
    .await
}

/// Registers the node `registration` describes, proving its test key ([`node_key`]) over a fresh
/// challenge, and returns its token.
pub async fn register(app: &Router, registration: &Value) -> String {
    let reply = send_registration(app, &signed(app, registration).await).await;
    assert_eq!(
        reply.status, 200,
        "registering {registration}: {}",
        reply.body
    );
    reply.body["token"]
        .as_str()
        .expect("a node token")
        .to_string()
}

/// The node's live assignments, answered at once (`waitSeconds=0`).
pub async fn poll(app: &Router, token: &str) -> Vec<Value> {
    let reply = send(
        app,
        "GET",
        "/v1/agent/assignments?waitSeconds=0",
        Some(token),
        None,
        "",
    )
    .await;
    assert_eq!(reply.status, 200, "polling assignments: {}", reply.body);
    reply.body["items"]
        .as_array()
        .expect("an item list")
        .clone()
}

/// The next report number (`seq`) on `assignment`, counted as an agent counts them: from 1, one
/// more for every status or checkpoint report the tests send on it. Assignment ids embed their
/// job's id, unique across tests, so one counter serves every test of the process.
pub fn next_seq(assignment: &str) -> u64 {
    static SEQS: Mutex<Option<HashMap<String, u64>>> = Mutex::new(None);
    let mut seqs = SEQS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let seq = seqs
        .get_or_insert_with(HashMap::new)
        .entry(assignment.to_string())
        .or_default();
    *seq += 1;
    *seq
}

/// Reports a worker's `state` on `assignment`, with an exit code and a message when given, as
/// the assignment's next report ([`next_seq`]).
pub async fn report(
    app: &Router,
    token: &str,
    assignment: &str,
    state: &str,
    exit_code: Option<i32>,
    message: Option<&str>,
) -> Reply {
    let seq = next_seq(assignment);
    report_seq(app, token, assignment, seq, state, exit_code, message).await
}

/// Reports a worker's `state` on `assignment` as report number `seq`.
pub async fn report_seq(
    app: &Router,
    token: &str,
    assignment: &str,
    seq: u64,
    state: &str,
    exit_code: Option<i32>,
    message: Option<&str>,
) -> Reply {
    let body =
        serde_json::json!({"seq": seq, "state": state, "exitCode": exit_code, "message": message});
    send(
        app,
        "POST",
        &format!("/v1/agent/assignments/{assignment}/status"),
        Some(token),
        Some("application/json"),
        body.to_string(),
    )
    .await
}

/// A heartbeat saying the node runs exactly the assignments in `held`.
pub async fn heartbeat(app: &Router, token: &str, held: &[&str]) -> Reply {
    let assignments: Vec<Value> = held
        .iter()
        .map(|id| serde_json::json!({"id": id, "state": "Running"}))
        .collect();
    send_heartbeat(
        app,
        token,
        &serde_json::json!({ "assignments": assignments }),
    )
    .await
}

/// Posts `body` as a heartbeat, as it is.
pub async fn send_heartbeat(app: &Router, token: &str, body: &Value) -> Reply {
    send(
        app,
        "POST",
        "/v1/agent/heartbeat",
        Some(token),
        Some("application/json"),
        body.to_string(),
    )
    .await
}

/// Posts `body` as a checkpoint report on `assignment`, as it is.
pub async fn send_checkpoint(app: &Router, token: &str, assignment: &str, body: &Value) -> Reply {
    send(
        app,
        "POST",
        &format!("/v1/agent/assignments/{assignment}/checkpoint"),
        Some(token),
        Some("application/json"),
        body.to_string(),
    )
    .await
}

/// Submits a 1-GPU sleep job, has the scheduler place it on the node holding `token` (the only
/// node that fits) and reports it Running, then Succeeded. Returns (job id, assignment id).
pub async fn run_to_success(
    app: &Router,
    state: &AppState,
    key: &str,
    token: &str,
) -> (String, String) {
    let job = submit(app, key, &sleep_spec(1)).await;
    let placed = api::scheduling::schedule_once(state).await.unwrap();
    assert_eq!(placed, 1, "the job should be placed");
    let assignment = assignment_of(&poll(app, token).await, &job);
    for (state, code) in [("Running", None), ("Succeeded", Some(0))] {
        let reply = report(app, token, &assignment, state, code, None).await;
        assert_eq!(reply.status, 204, "reporting {state}: {}", reply.body);
    }
    (job, assignment)
}

/// Runs the node's assignment of `job` (placed already) to success, reporting the builtin
/// workload's `result` (a `WorkloadResult` as JSON) with its final report; returns the assignment.
pub async fn finish_with_result(app: &Router, token: &str, job: &str, result: Value) -> String {
    let assignment = assignment_of(&poll(app, token).await, job);
    let running = report(app, token, &assignment, "Running", None, None).await;
    assert_eq!(running.status, 204, "reporting Running: {}", running.body);
    let reply = report_result(app, token, &assignment, &result).await;
    assert_eq!(reply.status, 204, "reporting the result: {}", reply.body);
    assignment
}

/// Reports `assignment` Succeeded (exit 0) with `result` as its next report.
pub async fn report_result(app: &Router, token: &str, assignment: &str, result: &Value) -> Reply {
    let body = serde_json::json!({
        "seq": next_seq(assignment), "state": "Succeeded", "exitCode": 0, "result": result
    });
    send(
        app,
        "POST",
        &format!("/v1/agent/assignments/{assignment}/status"),
        Some(token),
        Some("application/json"),
        body.to_string(),
    )
    .await
}

/// The id of `job`'s assignment among polled `items`.
pub fn assignment_of(items: &[Value], job: &str) -> String {
    items
        .iter()
        .find(|a| a["job"] == job)
        .and_then(|a| a["id"].as_str())
        .unwrap_or_else(|| panic!("no assignment of {job} in {items:?}"))
        .to_string()
}

/// Calls `check` every few milliseconds until it yields a value; panics naming `what` once
/// `timeout` has passed. The way to wait for something, instead of sleeping.
pub async fn eventually<T, F, Fut>(what: &str, timeout: std::time::Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// Waits until the store's clock (Unix milliseconds) is past `ms`, so later timestamps differ.
pub async fn clock_passes(ms: i64) {
    eventually(
        "the clock to advance",
        std::time::Duration::from_secs(5),
        || async { (api::store::now_ms() > ms).then_some(()) },
    )
    .await
}

/// The error code of an error reply, asserting the API's one error shape
/// `{"error": {"code", "message", "field"?}}` with a non-empty message.
pub fn error_code(reply: &Reply) -> &str {
    let error = &reply.body["error"];
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "not the API's error shape (status {}): {}",
        reply.status,
        reply.text
    );
    error["code"].as_str().unwrap_or_default()
}

/// The `ComputeJobSpec` a JSON spec describes (for store-level tests).
pub fn spec(json: Value) -> crds::v1alpha1::ComputeJobSpec {
    serde_json::from_value(json).expect("a valid spec")
}

/// A minimal valid spec (JSON) running the sleep builtin.
pub fn sleep_spec(seconds: u32) -> Value {
    serde_json::json!({
        "kind": "Batch",
        "workload": {"builtin": {"sleep": {"durationSeconds": seconds}}},
        "resources": {"workers": 1, "gpusPerWorker": 1},
        "pricing": {"maxPricePerGpuHour": "5.00"}
    })
}

/// A registration of a simulated node with `gpus` H100s in `region` asking `price`, by the node's
/// test key ([`node_key`]), not yet signed.
pub fn registration(name: &str, region: &str, gpus: usize, price: &str) -> Value {
    let devices: Vec<Value> = (0..gpus)
        .map(|i| {
            serde_json::json!({
                "uuid": format!("GPU-SIM-{name}-{i}"),
                "model": "H100-80GB",
                "memoryGiB": 80,
                "computeCapability": "9.0",
                "healthy": true,
                "simulated": true
            })
        })
        .collect();
    // The proof is a placeholder of the right shape: [`register`] and [`signed`] replace it with a
    // signature over a challenge from the hub.
    serde_json::json!({
        "name": name,
        "region": region,
        "pricePerGpuHour": price,
        "gpus": devices,
        "capabilities": ["builtin:sleep"],
        "simulated": true,
        "publicKey": public_key_hex(&node_key(name)),
        "challenge": "00".repeat(32),
        "signature": "00".repeat(64)
    })
}

/// The wire body of `receipt` with `signature` (`POST /v1/agent/assignments/{id}/receipts`), as
/// the agent sends it.
pub fn receipt_body(receipt: &settlement::receipt::Receipt, signature: &str) -> Value {
    serde_json::to_value(crds::agent::ReceiptReport {
        receipt: receipt.into(),
        signature: signature.to_string(),
    })
    .expect("a receipt report serializes")
}

/// gn-a's signed, cumulative receipt for `row` covering its first `seconds`, sent to the hub.
pub async fn receipted(
    app: &axum::Router,
    token: &str,
    row: &api::store::AssignmentRow,
    seconds: u64,
) -> settlement::receipt::Receipt {
    let started = row.created_at as u64;
    let receipt = settlement::receipt::Receipt {
        network: crds::agent::DEFAULT_NETWORK.into(),
        node: "gn-a".into(),
        job: row.job_id.clone(),
        assignment: row.id.clone(),
        sequence: seconds,
        price_micros_per_gpu_hour: row.price_micros,
        gpus: 1,
        started_at_ms: started,
        until_ms: started + 1_000 * seconds,
        gpu_millis: 1_000 * seconds,
    };
    let signature = receipt.sign(&node_key("gn-a")).unwrap();
    let body = receipt_body(&receipt, &signature);
    let path = format!("/v1/agent/assignments/{}/receipts", row.id);
    let reply = send(
        app,
        "POST",
        &path,
        Some(token),
        Some("application/json"),
        body.to_string(),
    )
    .await;
    assert_eq!(reply.status, 204, "{}", reply.body);
    receipt
}
