//! Test harness: every store and API test runs against SQLite and against PostgreSQL.
//!
//! `backend_tests!` turns one async test body into a `sqlite` and a `postgres` test. SQLite lives in
//! a temporary directory; PostgreSQL gets a fresh database per test, created through the server
//! named by `AGORA_TEST_POSTGRES_URL` (`scripts/test` starts one and sets it). Without that variable
//! the PostgreSQL tests say so and pass, unless `AGORA_REQUIRE_POSTGRES=1` (set by `scripts/test`
//! and CI), where they fail instead.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};

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
    let (state, shutdown) = AppState::new(store.clone(), HubSettings::default());
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
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(key) = key {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    if let Some(ct) = content_type {
        request = request.header("content-type", ct);
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
    }
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

/// A registration of a simulated node with `gpus` H100s in `region` asking `price`.
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
    serde_json::json!({
        "name": name,
        "region": region,
        "pricePerGpuHour": price,
        "gpus": devices,
        "capabilities": ["builtin:sleep"],
        "simulated": true
    })
}
