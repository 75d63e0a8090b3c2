//! Starting and stopping a hub: the HTTP(S) server and the scheduling loop over one store.
//!
//! The hub serves HTTPS itself when given a certificate and key (rustls with ring, the same stack
//! as its clients), or plain HTTP for an ingress or proxy that terminates TLS in front of it. Plain
//! HTTP on an address other than loopback needs saying so (`allow_plain_http`): API keys and node
//! tokens are bearer secrets, and a hub that sends them over the network in clear by default is
//! a hub that will, one day, in production.

use std::{
    io,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context, anyhow};
use axum::serve::{IncomingStream, Listener};
use crds::validate::SpecValidator;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{Notify, Semaphore, mpsc, watch},
    task::JoinHandle,
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};

use crate::{
    heartbeats::{self, AgentSessions},
    liveness,
    market::{self, Market},
    metrics::Metrics,
    ratelimit::ClientAddr,
    routes, scheduling,
    state::{AppState, HubSettings},
    store::Store,
};

/// How long a client has to complete the TLS handshake; a connection that stalls in it is dropped
/// rather than holding a slot.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The most TLS handshakes in progress at once: each costs a task and some memory, and a flood of
/// half-open connections must not exhaust the hub. Further connections wait in the kernel's
/// backlog.
const MAX_HANDSHAKES: usize = 1024;

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
    /// Serve HTTPS with this certificate and key; `None` serves plain HTTP.
    pub tls: Option<TlsFiles>,
    /// Serve plain HTTP on a non-loopback address (for an ingress that terminates TLS). Without it
    /// and without `tls`, such an address is refused.
    pub allow_plain_http: bool,
    /// The chain to settle on; `None` settles nowhere: receipts are kept (and batches can be
    /// built later) but nothing is posted, and stake gates nothing.
    pub chain: Option<crate::settling::ChainLink>,
}

/// The PEM files of the hub's TLS identity.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// The certificate chain, leaf first (`BEGIN CERTIFICATE` blocks).
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1 PEM).
    pub key: PathBuf,
}

/// Refuses plain HTTP on an address other than loopback unless `allow_plain_http`, with a message
/// that names both ways out.
pub fn check_transport(
    listen: SocketAddr,
    tls: Option<&TlsFiles>,
    allow_plain_http: bool,
) -> anyhow::Result<()> {
    if tls.is_none() && !allow_plain_http && !listen.ip().is_loopback() {
        anyhow::bail!(
            "refusing to serve plain HTTP on {listen}, which is not a loopback address: API keys \
             and node tokens would cross the network unencrypted. Pass --tls-cert FILE and \
             --tls-key FILE to serve HTTPS, or --allow-plain-http if an ingress or proxy in front \
             of the hub terminates TLS"
        );
    }
    Ok(())
}

/// The TLS acceptor for `files`: TLS 1.2 and 1.3 over ring, HTTP/1.1 by ALPN.
pub fn tls_acceptor(files: &TlsFiles) -> anyhow::Result<TlsAcceptor> {
    let certs = read_certificates(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| {
        anyhow!(
            "reading the TLS key {}: {e} (expected a PEM private key)",
            files.key.display()
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("the TLS provider supports no safe protocol version")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .with_context(|| {
            format!(
                "the TLS key {} does not fit the certificate {}",
                files.key.display(),
                files.cert.display()
            )
        })?;
    // axum serves HTTP/1.1 here; offering h2 would promise what the connection cannot do.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn read_certificates(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow!("reading the TLS certificate {}: {e}", path.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "{} holds no certificate (expected PEM `BEGIN CERTIFICATE` blocks)",
        path.display()
    );
    Ok(certs)
}

/// A listener that hands axum connections whose TLS handshake is done. Handshakes run in tasks
/// of their own, so one slow or malicious client cannot hold up the others.
struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    fn new(listener: TcpListener, acceptor: TlsAcceptor) -> io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        tokio::spawn(accept_tls(listener, acceptor, tx));
        Ok(Self { ready, local })
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accepting task only ends when this receiver is gone, so this is unreachable;
            // waiting forever is the listener's way of having nothing more to give.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}

impl axum::extract::connect_info::Connected<IncomingStream<'_, TlsListener>> for ClientAddr {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        ClientAddr(*stream.remote_addr())
    }
}

/// Accepts TCP connections and completes their handshakes until the [`TlsListener`] is dropped.
async fn accept_tls(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let permit = tokio::select! {
            () = ready.closed() => return,
            permit = handshakes.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
        };
        let (tcp, peer) = tokio::select! {
            () = ready.closed() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    let _ = ready.send((stream, peer)).await;
                }
                // Scanners and clients that do not trust the certificate end here; not the
                // hub's problem, so not above debug.
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
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
        let state = AppState {
            store,
            validator: Arc::new(SpecValidator::new()),
            metrics: Arc::new(Metrics::new()),
            market,
            sessions: Arc::new(AgentSessions::new(&settings)),
            settings: Arc::new(settings),
            wake_scheduler: Arc::new(Notify::new()),
            fleet_changes: Arc::default(),
            arrivals: Arc::default(),
            shutdown,
            chain: None,
            stakes: Arc::default(),
            started_ms: crate::store::now_ms(),
        };
        Ok((state, shutdown_tx))
    }
}

/// A hub that is serving.
pub struct RunningHub {
    addr: SocketAddr,
    https: bool,
    api_key: Option<String>,
    state: AppState,
    shutdown: watch::Sender<bool>,
    server: JoinHandle<std::io::Result<()>>,
    scheduler: JoinHandle<()>,
    pricing: JoinHandle<()>,
    liveness: JoinHandle<()>,
    /// The settlement loop, when the hub settles on a chain.
    settling: Option<JoinHandle<()>>,
    /// The verification loop (crate::verifying).
    verifying: JoinHandle<()>,
    /// Writes buffered heartbeat times (a last time at shutdown) and refreshes the live view.
    heartbeats: JoinHandle<()>,
}

impl RunningHub {
    /// Connects the store (applying migrations), binds the listener and starts serving.
    pub async fn start(config: HubConfig) -> anyhow::Result<Self> {
        // Transport problems are found before the database is touched.
        check_transport(config.listen, config.tls.as_ref(), config.allow_plain_http)?;
        let acceptor = config.tls.as_ref().map(tls_acceptor).transpose()?;
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
        let (mut state, shutdown) = AppState::new(store, config.settings).await?;
        state.chain = config.chain.clone();
        // The client's address reaches the rate limiter as `ConnectInfo<ClientAddr>`.
        let app = routes::router(state.clone()).into_make_service_with_connect_info::<ClientAddr>();
        let mut stop = state.shutdown.clone();
        let stopped = async move {
            let _ = stop.wait_for(|stopping| *stopping).await;
        };
        let https = acceptor.is_some();
        let server = match acceptor {
            None => tokio::spawn(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(stopped)
                    .await
            }),
            Some(acceptor) => {
                let listener = TlsListener::new(listener, acceptor)?;
                tokio::spawn(async move {
                    axum::serve(listener, app)
                        .with_graceful_shutdown(stopped)
                        .await
                })
            }
        };
        let leadership = crate::leader::Leadership::start(&state);
        let scheduler = tokio::spawn(scheduling::run(state.clone(), leadership.clone()));
        let pricing = tokio::spawn(market::run(state.clone(), leadership.clone()));
        let settling = state.chain.clone().map(|link| {
            tokio::spawn(crate::settling::run(
                state.clone(),
                leadership.clone(),
                link,
            ))
        });
        let verifying = tokio::spawn(crate::verifying::run(state.clone(), leadership.clone()));
        let liveness = tokio::spawn(liveness::run(state.clone(), leadership));
        let heartbeats = tokio::spawn(heartbeats::run(state.clone()));
        tracing::info!(%addr, https, "hub serving");
        Ok(Self {
            addr,
            https,
            api_key,
            state,
            shutdown,
            server,
            scheduler,
            pricing,
            liveness,
            settling,
            verifying,
            heartbeats,
        })
    }

    /// The address the hub listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The hub's base URL (by address: with HTTPS, clients use the name the certificate is for).
    pub fn url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// The `default` tenant's API key, when the hub was started with an API key file.
    pub fn api_key(&self) -> Option<&str> {
        self.api_key.as_deref()
    }

    /// The hub's store.
    pub fn store(&self) -> &Store {
        &self.state.store
    }

    /// The hub's state, for components that run in-process and call [`crate::service`].
    pub fn state(&self) -> &AppState {
        &self.state
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
            liveness,
            settling,
            verifying,
            heartbeats,
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
        let _ = liveness.await;
        if let Some(settling) = settling {
            let _ = settling.await;
        }
        let _ = verifying.await;
        let _ = heartbeats.await;
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
