//! Network probes: what the agent measures of its network for the hub's scheduler, and the
//! responder its peers measure it against. Everything here is bounded, since it runs on other
//! people's machines and links.
//!
//! - **RTT to peers.** Each heartbeat answer names a few peers (`probeTargets`, each a node with the
//!   `probeAddress` it registered). The agent probes them in the background and reports the results
//!   in the next heartbeat (`network.peers`). A probe is a TCP connection to the peer's responder
//!   and [`SAMPLES`] echoes of a 16-byte frame ([`MAGIC`] + a random nonce) over it; the RTT is the
//!   median echo time. TCP rather than UDP because a TCP responder cannot be used to reflect traffic
//!   at a spoofed address (the handshake proves the source), it passes the same port forwards and
//!   conntrack as any TCP service, and the connection handshake stays out of the samples. The
//!   echo is exactly as large as the request (no amplification), and the responder serves at most
//!   [`MAX_RESPONDER_CONNECTIONS`] connections at once, [`MAX_ECHOES_PER_CONNECTION`] echoes each,
//!   within [`RESPONDER_DEADLINE`]; the prober probes at most [`MAX_CONCURRENT_PROBES`] peers at
//!   once, each within [`CONNECT_TIMEOUT`] + [`SAMPLES`] × [`SAMPLE_TIMEOUT`]. A peer that does not
//!   answer, or answers with another nonce, is simply not reported.
//! - **RTT to the hub.** The heartbeat's own round trip (request sent to answer read, successful
//!   heartbeats only), reported as `hubRttMs`: the median of the last [`HUB_RTT_WINDOW`], so that
//!   the occasional heartbeat that opens a new connection (TCP and TLS handshakes) does not count
//!   as the link's latency. The hub answers heartbeats from memory, so its processing is noise.
//! - **Bandwidth against the hub.** Every `--bandwidth-interval-seconds` the agent downloads
//!   `--bandwidth-probe-bytes` random bytes from `GET /v1/agent/bandwidth` and uploads as many to
//!   `POST /v1/agent/bandwidth`, one after the other (the first time at a random moment within
//!   the first interval, 30 s at most). Each direction is timed from the first chunk
//!   of the body to the last (the agent's clock for the download, the hub's for the upload), over
//!   the bytes after that first chunk, so connection setup, request latency and buffers filled
//!   before anyone looked are not counted. The latest figures ride on every heartbeat
//!   (`uplinkMbps`, `downlinkMbps`) until the next measurement replaces them.
//!
//! Every value reported is within the bounds the hub accepts ([`MAX_RTT_MS`],
//! [`MAX_BANDWIDTH_MBPS`], [`MAX_PROBE_PEERS`]): an out-of-bounds value would make the hub refuse
//! the whole heartbeat, so a broken measurement is dropped here instead.

use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use crds::agent::{
    BandwidthUpload, MAX_BANDWIDTH_MBPS, MAX_BANDWIDTH_PROBE_BYTES, MAX_PROBE_PEERS, MAX_RTT_MS,
    NetworkReport, PeerRtt, ProbeTarget,
};
use rand::RngCore;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::{Semaphore, watch},
    task::JoinSet,
    time::{Instant, timeout},
};
use tracing::{debug, info, warn};

use crate::client::{ClientError, HubClient};

/// The first bytes of every probe frame: tells an Agora probe from anything else sent to the port.
pub const MAGIC: [u8; 4] = *b"AGP1";

/// A probe frame: [`MAGIC`] and a 12-byte random nonce, echoed back unchanged.
pub const FRAME_BYTES: usize = 16;

/// Echoes timed per peer; the RTT reported is their median.
pub const SAMPLES: usize = 5;

/// How long a connection to a peer may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long one echo may take; a slower one ends the peer's probe.
pub const SAMPLE_TIMEOUT: Duration = Duration::from_secs(2);

/// Peers probed at once.
pub const MAX_CONCURRENT_PROBES: usize = 8;

/// Connections the responder serves at once; more are closed at once.
pub const MAX_RESPONDER_CONNECTIONS: usize = 64;

/// Echoes the responder gives one connection (a prober needs [`SAMPLES`]).
pub const MAX_ECHOES_PER_CONNECTION: usize = 8;

/// How long the responder keeps one connection.
pub const RESPONDER_DEADLINE: Duration = Duration::from_secs(5);

/// Heartbeat round trips `hubRttMs` is the median of.
pub const HUB_RTT_WINDOW: usize = 5;

/// How long a bandwidth probe's request may take, each direction. At the default 4 MiB this
/// allows down to about 1 Mbit/s; a slower link is reported as not measured.
pub const BANDWIDTH_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest the first bandwidth probe waits after start (see [`first_bandwidth_delay`]).
const MAX_FIRST_BANDWIDTH_DELAY: Duration = Duration::from_secs(30);

/// What the agent measures and how much traffic it may spend on it (`agora agent` flags).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeConfig {
    /// Where to answer peers' RTT probes (`--probe-listen`); none: peers cannot probe this node.
    pub listen: Option<SocketAddr>,
    /// The `host:port` peers reach the responder at (`--probe-address`), sent at registration.
    /// Behind NAT this is the forwarded public address, which is why it is not derived from
    /// `listen`; none: the hub names this node to no peer.
    pub address: Option<String>,
    /// How often to measure bandwidth against the hub (`--bandwidth-interval-seconds`).
    pub bandwidth_interval: Duration,
    /// Bytes each direction of a bandwidth probe moves (`--bandwidth-probe-bytes`), at most
    /// [`MAX_BANDWIDTH_PROBE_BYTES`]; 0 turns bandwidth probes off.
    pub bandwidth_bytes: u64,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            listen: None,
            address: None,
            bandwidth_interval: Duration::from_secs(600),
            bandwidth_bytes: 4 << 20,
        }
    }
}

impl ProbeConfig {
    /// Refuses settings the hub would refuse or that would make probes meaningless.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.bandwidth_bytes <= MAX_BANDWIDTH_PROBE_BYTES,
            "--bandwidth-probe-bytes {} is above the hub's limit of {MAX_BANDWIDTH_PROBE_BYTES} \
             (16 MiB); 0 turns bandwidth probes off",
            self.bandwidth_bytes
        );
        anyhow::ensure!(
            !self.bandwidth_interval.is_zero(),
            "--bandwidth-interval-seconds must be at least 1"
        );
        if let Some(address) = &self.address {
            let valid = address.rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
            });
            anyhow::ensure!(
                valid,
                "--probe-address {address:?} must be HOST:PORT (an IP address, [IPv6] or a DNS name, and a port)"
            );
        }
        Ok(())
    }
}

/// One bandwidth measurement against the hub, Mbit/s each direction (`None`: not measured).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Bandwidth {
    pub downlink_mbps: Option<f64>,
    pub uplink_mbps: Option<f64>,
}

/// What the agent has measured and not yet reported, and the targets to probe next.
pub struct Network {
    config: ProbeConfig,
    measured: Mutex<Measured>,
    targets: watch::Sender<Vec<ProbeTarget>>,
}

#[derive(Default)]
struct Measured {
    hub_rtts: VecDeque<f64>,
    peers: Vec<PeerRtt>,
    bandwidth: Bandwidth,
}

impl Network {
    pub fn new(config: ProbeConfig) -> Self {
        Self {
            config,
            measured: Mutex::default(),
            targets: watch::Sender::new(Vec::new()),
        }
    }

    fn measured(&self) -> std::sync::MutexGuard<'_, Measured> {
        self.measured.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The report for the next heartbeat: the hub RTT and bandwidth as last measured (repeated until
    /// replaced), and the peer results not reported yet (taken: each is reported once).
    pub fn report(&self) -> NetworkReport {
        let mut measured = self.measured();
        let mut rtts: Vec<f64> = measured.hub_rtts.iter().copied().collect();
        NetworkReport {
            hub_rtt_ms: median(&mut rtts),
            uplink_mbps: measured.bandwidth.uplink_mbps,
            downlink_mbps: measured.bandwidth.downlink_mbps,
            peers: std::mem::take(&mut measured.peers),
        }
    }

    /// Records a successful heartbeat's round trip.
    pub fn hub_round_trip(&self, elapsed: Duration) {
        let Some(ms) = rtt_ms(elapsed) else { return };
        let mut measured = self.measured();
        if measured.hub_rtts.len() == HUB_RTT_WINDOW {
            measured.hub_rtts.pop_front();
        }
        measured.hub_rtts.push_back(ms);
    }

    /// The peers a heartbeat answer named; the next probe round measures them.
    pub fn set_targets(&self, mut targets: Vec<ProbeTarget>) {
        targets.truncate(MAX_PROBE_PEERS);
        self.targets.send_replace(targets);
    }

    /// Probes the targets each heartbeat answer names, as they come, and keeps the results for
    /// the next heartbeat. Never returns.
    pub async fn probe_peers(&self) {
        let mut targets = self.targets.subscribe();
        loop {
            if targets.changed().await.is_err() {
                // Cannot happen while `self` holds the sender.
                return std::future::pending().await;
            }
            let round = targets.borrow_and_update().clone();
            if round.is_empty() {
                continue;
            }
            let results = probe_all(round).await;
            let mut measured = self.measured();
            for result in results {
                // The newest result for a peer replaces one not reported yet.
                measured.peers.retain(|p| p.node != result.node);
                measured.peers.push(result);
            }
            let excess = measured.peers.len().saturating_sub(MAX_PROBE_PEERS);
            measured.peers.drain(..excess);
        }
    }

    /// Measures bandwidth every `bandwidth_interval` with `measure` (given the probe's size), and
    /// keeps the latest figures. Never returns (and does nothing when bandwidth probes are off).
    pub async fn measure_bandwidth<F, Fut>(&self, measure: F)
    where
        F: Fn(u64) -> Fut,
        Fut: Future<Output = Result<Bandwidth, ClientError>>,
    {
        let bytes = self.config.bandwidth_bytes;
        if bytes == 0 {
            return std::future::pending().await;
        }
        tokio::time::sleep(first_bandwidth_delay(self.config.bandwidth_interval)).await;
        loop {
            let started = Instant::now();
            match measure(bytes).await {
                Ok(bandwidth) => {
                    debug!(
                        downlink_mbps = ?bandwidth.downlink_mbps,
                        uplink_mbps = ?bandwidth.uplink_mbps,
                        "measured bandwidth against the hub"
                    );
                    let mut measured = self.measured();
                    // A direction that could not be timed keeps its previous figure.
                    measured.bandwidth = Bandwidth {
                        downlink_mbps: bandwidth.downlink_mbps.or(measured.bandwidth.downlink_mbps),
                        uplink_mbps: bandwidth.uplink_mbps.or(measured.bandwidth.uplink_mbps),
                    };
                }
                Err(e) => {
                    warn!(error = %e, "bandwidth probe against the hub failed; trying again next interval")
                }
            }
            tokio::time::sleep_until(started + self.config.bandwidth_interval).await;
        }
    }
}

/// When the first bandwidth probe runs: at a random moment within the first interval (at most
/// [`MAX_FIRST_BANDWIDTH_DELAY`]), so that a fleet restarted together (a hub upgrade, a power cut)
/// spreads its probes instead of measuring the hub's link all at once, against each other.
fn first_bandwidth_delay(interval: Duration) -> Duration {
    let window = interval.min(MAX_FIRST_BANDWIDTH_DELAY).as_millis().max(1) as u64;
    Duration::from_millis(rand::rng().next_u64() % window)
}

/// `elapsed` in milliseconds, if within what the hub accepts.
fn rtt_ms(elapsed: Duration) -> Option<f64> {
    let ms = elapsed.as_secs_f64() * 1000.0;
    (ms.is_finite() && (0.0..=MAX_RTT_MS).contains(&ms)).then_some(ms)
}

/// `bytes` over `micros` in Mbit/s (bits per microsecond), if measurable and within what the hub
/// accepts (faster is clamped: a figure that high only says "not the bottleneck").
fn mbps(bytes: u64, micros: u64) -> Option<f64> {
    if bytes == 0 || micros == 0 {
        return None;
    }
    let mbps = bytes as f64 * 8.0 / micros as f64;
    mbps.is_finite().then(|| mbps.min(MAX_BANDWIDTH_MBPS))
}

/// The median of `samples` (the mean of the middle two for an even count).
fn median(samples: &mut [f64]) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_by(f64::total_cmp);
    let mid = samples.len() / 2;
    Some(if samples.len() % 2 == 1 {
        samples[mid]
    } else {
        (samples[mid - 1] + samples[mid]) / 2.0
    })
}

/// Probes every target, [`MAX_CONCURRENT_PROBES`] at a time; returns those that answered.
pub async fn probe_all(targets: Vec<ProbeTarget>) -> Vec<PeerRtt> {
    let slots = Arc::new(Semaphore::new(MAX_CONCURRENT_PROBES));
    let mut probes = JoinSet::new();
    for target in targets.into_iter().take(MAX_PROBE_PEERS) {
        let slots = Arc::clone(&slots);
        probes.spawn(async move {
            let _slot = slots.acquire_owned().await;
            match probe(&target.address).await {
                Ok(rtt_ms) => Some(PeerRtt {
                    node: target.node,
                    rtt_ms,
                }),
                Err(e) => {
                    debug!(peer = %target.node, address = %target.address, error = %e, "peer did not answer the probe");
                    None
                }
            }
        });
    }
    let mut results = Vec::new();
    while let Some(result) = probes.join_next().await {
        if let Ok(Some(rtt)) = result {
            results.push(rtt);
        }
    }
    results
}

/// Why a peer probe gave no RTT.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("connecting timed out after {CONNECT_TIMEOUT:?}")]
    ConnectTimeout,
    #[error("no echo within {SAMPLE_TIMEOUT:?}")]
    EchoTimeout,
    #[error("the echo did not carry the nonce sent: not an Agora probe responder")]
    WrongEcho,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The RTT to the responder at `address` (`host:port`) in ms: the median of [`SAMPLES`] echoes over
/// one connection.
pub async fn probe(address: &str) -> Result<f64, ProbeError> {
    let mut stream = timeout(CONNECT_TIMEOUT, TcpStream::connect(address))
        .await
        .map_err(|_| ProbeError::ConnectTimeout)??;
    stream.set_nodelay(true)?;
    let mut samples = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        let mut frame = [0u8; FRAME_BYTES];
        frame[..MAGIC.len()].copy_from_slice(&MAGIC);
        rand::rng().fill_bytes(&mut frame[MAGIC.len()..]);
        let sent = Instant::now();
        let mut echo = [0u8; FRAME_BYTES];
        timeout(SAMPLE_TIMEOUT, async {
            stream.write_all(&frame).await?;
            stream.read_exact(&mut echo).await
        })
        .await
        .map_err(|_| ProbeError::EchoTimeout)??;
        let elapsed = sent.elapsed();
        if echo != frame {
            return Err(ProbeError::WrongEcho);
        }
        samples.extend(rtt_ms(elapsed));
    }
    median(&mut samples).ok_or(ProbeError::EchoTimeout)
}

/// The probe responder (`--probe-listen`), bound and ready to serve.
pub struct Responder {
    listener: TcpListener,
}

impl Responder {
    /// Binds the responder's port; an error (address in use, not permitted) is the agent's to
    /// report at start.
    pub async fn bind(address: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(address).await?;
        info!(address = %listener.local_addr()?, "answering peers' RTT probes");
        Ok(Self { listener })
    }

    /// The bound address (the port, when bound to port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Answers probes until dropped. Never returns.
    pub async fn serve(self) {
        let slots = Arc::new(Semaphore::new(MAX_RESPONDER_CONNECTIONS));
        loop {
            let (stream, peer) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, say: wait rather than spin.
                    warn!(error = %e, "probe responder cannot accept; pausing");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                debug!(%peer, "probe responder busy; closing the connection");
                continue;
            };
            tokio::spawn(async move {
                let _slot = slot;
                if timeout(RESPONDER_DEADLINE, echo(stream)).await.is_err() {
                    debug!(%peer, "probe connection reached its deadline");
                }
            });
        }
    }
}

/// Echoes up to [`MAX_ECHOES_PER_CONNECTION`] probe frames, stopping at anything else.
async fn echo(mut stream: TcpStream) {
    if stream.set_nodelay(true).is_err() {
        return;
    }
    for _ in 0..MAX_ECHOES_PER_CONNECTION {
        let mut frame = [0u8; FRAME_BYTES];
        if stream.read_exact(&mut frame).await.is_err() || frame[..MAGIC.len()] != MAGIC {
            return;
        }
        if stream.write_all(&frame).await.is_err() {
            return;
        }
    }
}

/// Measures download then upload bandwidth against the hub with `bytes` each way, over the
/// agent's own client (its token, TLS trust and connection pool).
pub async fn bandwidth(
    client: &HubClient,
    token: &str,
    bytes: u64,
) -> Result<Bandwidth, ClientError> {
    let downlink_mbps = download(client, token, bytes).await?;
    let uplink_mbps = upload(client, token, bytes).await?;
    Ok(Bandwidth {
        downlink_mbps,
        uplink_mbps,
    })
}

/// `GET /v1/agent/bandwidth?bytes=N`, timed from the body's first chunk to its last.
async fn download(client: &HubClient, token: &str, bytes: u64) -> Result<Option<f64>, ClientError> {
    let mut response = client
        .bandwidth_request(reqwest::Method::GET, token, Some(bytes), BANDWIDTH_TIMEOUT)
        .send()
        .await
        .map_err(crate::client::network_error)?;
    if !response.status().is_success() {
        return Err(crate::client::error_answer(response).await);
    }
    let mut received = 0u64;
    let mut first: Option<(Instant, u64)> = None;
    let mut last = Instant::now();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(crate::client::network_error)?
    {
        last = Instant::now();
        received += chunk.len() as u64;
        if received > bytes {
            break;
        }
        first.get_or_insert((last, received));
    }
    if received != bytes {
        return Err(ClientError::Transient(format!(
            "the bandwidth download brought {received} bytes, not the {bytes} asked for"
        )));
    }
    Ok(first.and_then(|(at, first_bytes)| {
        mbps(
            received - first_bytes,
            last.duration_since(at).as_micros() as u64,
        )
    }))
}

/// `POST /v1/agent/bandwidth` with `bytes` random bytes, timed by the hub.
async fn upload(client: &HubClient, token: &str, bytes: u64) -> Result<Option<f64>, ClientError> {
    let mut body = vec![0u8; bytes as usize];
    rand::rng().fill_bytes(&mut body);
    let response = client
        .bandwidth_request(reqwest::Method::POST, token, None, BANDWIDTH_TIMEOUT)
        .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
        .body(body)
        .send()
        .await
        .map_err(crate::client::network_error)?;
    if !response.status().is_success() {
        return Err(crate::client::error_answer(response).await);
    }
    let answer: BandwidthUpload = response.json().await.map_err(|e| {
        ClientError::Transient(format!("the hub's bandwidth answer is not valid: {e}"))
    })?;
    if answer.bytes != bytes || answer.timed_bytes > answer.bytes {
        return Err(ClientError::Transient(format!(
            "the hub read {} bytes of the {bytes} uploaded",
            answer.bytes
        )));
    }
    Ok(mbps(answer.timed_bytes, answer.read_micros))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn responder() -> SocketAddr {
        let responder = Responder::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let address = responder.local_addr().unwrap();
        tokio::spawn(responder.serve());
        address
    }

    #[tokio::test]
    async fn a_peer_s_rtt_is_measured_against_a_real_responder() {
        let address = responder().await;
        let rtt = probe(&address.to_string()).await.unwrap();
        assert!((0.0..MAX_RTT_MS).contains(&rtt), "{rtt}");
    }

    #[tokio::test]
    async fn only_peers_that_answer_are_reported() {
        let address = responder().await;
        // A port nobody listens on (bound, then closed).
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let closed_address = closed.local_addr().unwrap();
        drop(closed);
        let results = probe_all(vec![
            ProbeTarget {
                node: "gn-up".into(),
                address: address.to_string(),
            },
            ProbeTarget {
                node: "gn-down".into(),
                address: closed_address.to_string(),
            },
        ])
        .await;
        let nodes: Vec<&str> = results.iter().map(|r| r.node.as_str()).collect();
        assert_eq!(nodes, ["gn-up"]);
    }

    #[tokio::test]
    async fn a_service_that_is_not_a_probe_responder_gives_no_rtt() {
        // Answers every connection with 16 bytes of its own, as an unrelated service might.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let _ = stream.write_all(b"HTTP/1.1 400 Bad").await;
            }
        });
        let err = probe(&address.to_string()).await.unwrap_err();
        assert!(matches!(err, ProbeError::WrongEcho), "{err}");
    }

    #[tokio::test]
    async fn the_responder_echoes_only_probe_frames_and_only_as_many_as_allowed() {
        let address = responder().await;
        // Not a probe frame: the connection is closed without a byte back.
        let mut stream = TcpStream::connect(address).await.unwrap();
        stream.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let mut buf = Vec::new();
        assert_eq!(stream.read_to_end(&mut buf).await.unwrap(), 0);
        // Probe frames: echoed, byte for byte, up to the per-connection bound, then closed.
        let mut stream = TcpStream::connect(address).await.unwrap();
        let mut frame = [7u8; FRAME_BYTES];
        frame[..4].copy_from_slice(&MAGIC);
        for _ in 0..MAX_ECHOES_PER_CONNECTION + 2 {
            // Writes after the close may fail; what matters is what comes back.
            let _ = stream.write_all(&frame).await;
        }
        let mut echoed = Vec::new();
        let _ = stream.read_to_end(&mut echoed).await;
        assert_eq!(echoed.len(), MAX_ECHOES_PER_CONNECTION * FRAME_BYTES);
        assert!(echoed.chunks(FRAME_BYTES).all(|c| c == frame));
    }

    #[tokio::test]
    async fn the_responder_closes_connections_beyond_its_bound() {
        let address = responder().await;
        let mut frame = [1u8; FRAME_BYTES];
        frame[..4].copy_from_slice(&MAGIC);
        // Connections are accepted in order: these hold every slot (each waits for a frame).
        let mut held = Vec::new();
        for _ in 0..MAX_RESPONDER_CONNECTIONS {
            held.push(TcpStream::connect(address).await.unwrap());
        }
        let mut refused = TcpStream::connect(address).await.unwrap();
        let _ = refused.write_all(&frame).await;
        let mut buf = Vec::new();
        let _ = refused.read_to_end(&mut buf).await;
        assert!(buf.is_empty(), "a connection beyond the bound was answered");
        // The held ones are served.
        let mut first = held.swap_remove(0);
        first.write_all(&frame).await.unwrap();
        let mut echo = [0u8; FRAME_BYTES];
        first.read_exact(&mut echo).await.unwrap();
        assert_eq!(echo, frame);
    }

    #[test]
    fn measurements_stay_within_what_the_hub_accepts() {
        assert_eq!(rtt_ms(Duration::from_millis(12)), Some(12.0));
        assert_eq!(rtt_ms(Duration::from_secs(61)), None);
        assert_eq!(mbps(1_000_000, 80_000), Some(100.0));
        assert_eq!(mbps(0, 10), None);
        assert_eq!(mbps(10, 0), None);
        assert_eq!(mbps(u64::MAX, 1), Some(MAX_BANDWIDTH_MBPS));
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&mut []), None);
    }

    #[test]
    fn the_report_repeats_hub_figures_and_takes_peer_results() {
        let network = Network::new(ProbeConfig::default());
        assert!(network.report().is_empty());
        for ms in [10, 12, 500, 11, 13, 14] {
            network.hub_round_trip(Duration::from_millis(ms));
        }
        network.measured().peers.push(PeerRtt {
            node: "gn-b".into(),
            rtt_ms: 3.0,
        });
        let first = network.report();
        // The window holds the last five: 12, 500, 11, 13, 14.
        assert_eq!(first.hub_rtt_ms, Some(13.0));
        assert_eq!(first.peers.len(), 1);
        let second = network.report();
        assert_eq!(second.hub_rtt_ms, Some(13.0));
        assert!(second.peers.is_empty());
    }

    #[test]
    fn the_first_bandwidth_probe_comes_within_the_first_interval() {
        for _ in 0..100 {
            assert!(first_bandwidth_delay(Duration::from_secs(2)) < Duration::from_secs(2));
            assert!(first_bandwidth_delay(Duration::from_secs(600)) < MAX_FIRST_BANDWIDTH_DELAY);
        }
    }

    #[test]
    fn probe_settings_are_checked() {
        let ok = ProbeConfig {
            address: Some("[2001:db8::1]:7601".into()),
            ..ProbeConfig::default()
        };
        ok.validate().unwrap();
        for (bad, field) in [
            (
                ProbeConfig {
                    bandwidth_bytes: MAX_BANDWIDTH_PROBE_BYTES + 1,
                    ..ProbeConfig::default()
                },
                "--bandwidth-probe-bytes",
            ),
            (
                ProbeConfig {
                    address: Some("gn-a.example.com".into()),
                    ..ProbeConfig::default()
                },
                "--probe-address",
            ),
            (
                ProbeConfig {
                    bandwidth_interval: Duration::ZERO,
                    ..ProbeConfig::default()
                },
                "--bandwidth-interval-seconds",
            ),
        ] {
            let err = bad.validate().unwrap_err().to_string();
            assert!(err.contains(field), "{err}");
        }
    }
}
