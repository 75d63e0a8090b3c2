//! Starting and stopping a hub: the HTTP server and the scheduling loop over one store.

use std::{net::SocketAddr, sync::Arc};

use anyhow::Context;
use crds::validate::SpecValidator;
use tokio::{
    net::TcpListener,
    sync::{Notify, watch},
    task::JoinHandle,
};

use crate::{
    market::{self, Market},
    metrics::Metrics,
    routes, scheduling,
    state::{AppState, HubSettings},
    store::Store,
};

/// Where a hub listens and keeps its state.
#[derive(Clone, Debug)]
pub struct HubConfig {
    pub listen: SocketAddr,
    /// `sqlite://PATH` or `postgres://…`.
    pub database_url: String,
    pub settings: HubSettings,
    /// A file holding the API key of the `default` tenant, created with a new key if missing. The
    /// key is in place before the hub serves, so `/readyz` answering means the key works.
    pub api_key_file: Option<std::path::PathBuf>,
}

impl AppState {
    /// State over `store` (its saved prices loaded), and the sender that shuts everything using it
    /// down.
    pub async fn new(
        store: Store,
        settings: HubSettings,
    ) -> anyhow::Result<(Self, watch::Sender<bool>)> {
        let market = Arc::new(Market::load(&store, settings.pricing).await?);
        let (shutdown_tx, shutdown) = watch::channel(false);
        let (assignments_changed, _) = watch::channel(0u64);
        let state = AppState {
            store,
            validator: Arc::new(SpecValidator::new()),
            metrics: Arc::new(Metrics::new()),
            settings: Arc::new(settings),
            market,
            wake_scheduler: Arc::new(Notify::new()),
            assignments_changed: Arc::new(assignments_changed),
            shutdown,
        };
        Ok((state, shutdown_tx))
    }
}

/// A hub that is serving.
pub struct RunningHub {
    addr: SocketAddr,
    api_key: Option<String>,
    state: AppState,
    shutdown: watch::Sender<bool>,
    server: JoinHandle<std::io::Result<()>>,
    scheduler: JoinHandle<()>,
    pricing: JoinHandle<()>,
}

impl RunningHub {
    /// Connects the store (applying migrations), binds the listener and starts serving.
    pub async fn start(config: HubConfig) -> anyhow::Result<Self> {
        let store = Store::connect(&config.database_url)
            .await
            .with_context(|| format!("opening the database at {}", redact(&config.database_url)))?;
        let api_key = match &config.api_key_file {
            Some(file) => Some(crate::bootstrap::ensure_api_key(&store, "default", file).await?),
            None => None,
        };
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("listening on {}", config.listen))?;
        let addr = listener.local_addr()?;
        let (state, shutdown) = AppState::new(store, config.settings).await?;
        let app = routes::router(state.clone());
        let mut stop = state.shutdown.clone();
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|stopping| *stopping).await;
                })
                .await
        });
        let scheduler = tokio::spawn(scheduling::run(state.clone()));
        let pricing = tokio::spawn(market::run(state.clone()));
        tracing::info!(%addr, "hub serving");
        Ok(Self {
            addr,
            api_key,
            state,
            shutdown,
            server,
            scheduler,
            pricing,
        })
    }

    /// The address the hub listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The hub's base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The `default` tenant's API key, when the hub was started with an API key file.
    pub fn api_key(&self) -> Option<&str> {
        self.api_key.as_deref()
    }

    /// The hub's store.
    pub fn store(&self) -> &Store {
        &self.state.store
    }

    /// Runs until the server stops on its own (an error) or `signal` completes, then shuts down.
    pub async fn serve_until(
        self,
        signal: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        tokio::pin!(signal);
        let Self {
            state,
            shutdown,
            mut server,
            scheduler,
            pricing,
            ..
        } = self;
        let early = tokio::select! {
            result = &mut server => Some(result),
            _ = &mut signal => None,
        };
        let _ = shutdown.send(true);
        let served = match early {
            Some(result) => result,
            None => server.await,
        };
        let _ = scheduler.await;
        let _ = pricing.await;
        state.store.close().await;
        served
            .context("the HTTP server task panicked")?
            .context("the HTTP server failed")
    }

    /// Stops serving: open long-polls end, in-flight requests finish, the store closes.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.serve_until(async {}).await
    }
}

/// A database URL without its password, for logs and errors.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_never_reach_logs() {
        assert_eq!(
            super::redact("postgres://agora:s3cret@db:5432/agora"),
            "postgres://agora:***@db:5432/agora"
        );
        assert_eq!(super::redact("sqlite:///tmp/x.db"), "sqlite:///tmp/x.db");
    }
}
