//! The network as the hub learns it from its agents: which peers each node should probe, the
//! measurements heartbeats bring back, and the scheduler's network model built from them.
//!
//! # The heartbeat side (every replica, in memory)
//!
//! A heartbeat may report the node's RTT to the hub, its bandwidth against the hub, RTTs to peers
//! the hub named, and GPU telemetry; its answer names up to `HubSettings::probe_targets` (K)
//! peers to probe before the next one. None of it touches the database on the heartbeat path:
//! measurements wait in a buffer, one entry per pair and per node (the latest), and the
//! heartbeat flush ([`crate::heartbeats::run`]) writes them in a few multi-row upserts. A
//! measurement within 10 % of what this replica last wrote for its pair or node is not written
//! again for [`REWRITE_EVERY`], so a stable network costs the database next to nothing. Telemetry
//! stays in memory (the latest per node, shown on the node view). Probe targets are chosen from a
//! snapshot of the live nodes with a probe address, re-read every [`TARGETS_REFRESH`].
//!
//! # Who probes whom
//!
//! Each node has a **pool** of up to 4K peers: up to 2K of its own region and up to 2K of other
//! regions. Within a region, nodes sorted by name form a ring and every node's same-region pool is
//! the ring shifted by the same offsets, so every node is probed by as many peers as it probes, and
//! offsets are drawn from the first half of the ring when they fit there, so a pair is measured
//! from one side only. Other-region pools shift a node's position in the fleet's list, which
//! spreads a region's probes evenly over the others. Offsets come from a fixed seed and the
//! current [`POOL_EPOCH`], so pools are the same on every replica and change every epoch: over
//! time a node measures many more peers than one pool holds. Each heartbeat names the K pool
//! members this replica named least recently (never-named ones first), so a pool is covered every
//! 4 heartbeats. A pool is bounded, so so are the measurements a node can produce.
//!
//! Results are kept only for peers in the node's pool, this epoch's or the last, or named to it in
//! one of its last two answers; others — unknown nodes, nodes the hub did not name, the node
//! itself — are ignored. Pools being the same on every replica, a result is accepted whichever
//! replica named the target and whichever receives the result. A node can only report on pairs it
//! is part of, a bounded number of them; what it reports about them is believed (see "Trust" in
//! `scheduler::network`).
//!
//! # The scheduler side (the leader, and quotes)
//!
//! [`NetworkState::network`] gives the scheduler a [`HubNetwork`]: a
//! [`scheduler::network::NetworkModel`] fed with the stored RTTs and bandwidths and
//! Vivaldi-fitted, falling back to the region rule ([`SAME_REGION_MS`] within a node's own region,
//! unknown elsewhere) for nodes that have no measurement. The model is kept across fleet reloads
//! and fed only rows measured since the last read; it is refitted when a node gets its first
//! measurement and every [`REFIT_EVERY`] otherwise, on a blocking thread, and a restarted hub
//! rebuilds it from the stored rows (the last [`RETENTION`]).

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use crds::{
    agent::{
        GpuTelemetry, HeartbeatRequest, MAX_BANDWIDTH_MBPS, MAX_PROBE_PEERS, MAX_RTT_MS,
        NetworkReport, ProbeTarget,
    },
    rest::{Node, NodeTelemetry},
    v1alpha1::NodeNetwork,
};
use scheduler::{
    Index, Network, NodeKey,
    network::{NetworkModel, REFIT_PASSES},
};

use crate::{
    error::{ApiError, ApiResult},
    state::HubSettings,
    store::{
        NodeRow, Result, Store,
        probes::{LinkSample, ProbeNode, RttSample},
    },
};

/// The RTT the region rule gives a node to its own region's users and to another node of its
/// region (the intra-region figure of the reference topologies).
pub const SAME_REGION_MS: f64 = 5.0;

/// How long probe pools last before they rotate.
pub const POOL_EPOCH: Duration = Duration::from_secs(3600);

/// How old a stored RTT may be and still count; older rows are deleted by the flush.
pub const RETENTION: Duration = Duration::from_secs(6 * 3600);

/// How often the snapshot of probe targets is re-read. A node that registers is probed this late
/// at most.
pub const TARGETS_REFRESH: Duration = Duration::from_secs(5);

/// How often the model is refitted from all its measurements while new ones arrive (in between,
/// new samples move coordinates online and region summaries are recomputed).
pub const REFIT_EVERY: Duration = Duration::from_secs(30);

/// How long the model answers without reading new measurements, unless this replica flushed
/// some since: the scheduling loop reloads its fleet at most once a second, quotes may ask more.
const MODEL_MAX_AGE: Duration = Duration::from_secs(1);

/// How far back each read of new measurements reaches behind the latest one read: other
/// replicas flush what they received up to a flush interval (½ s) late, or a few flushes late
/// when the database hiccups, with clocks that may differ a little. Rows already fed are
/// recognised by their time and not fed twice; a row written later than this behind the others
/// (a replica that could not write for longer) waits for the pair's next change or rewrite.
const READ_OVERLAP_MS: i64 = 10_000;

/// How often old RTT rows are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// How long a measurement that stays close to the one written ([`unchanged`]) goes unwritten.
/// Well inside [`RETENTION`], so a stable pair is never pruned.
pub const REWRITE_EVERY: Duration = Duration::from_secs(600);

/// Below this an RTT change (µs) is noise, whatever the relative change.
const RTT_SLACK_US: i64 = 200;

/// Below this a bandwidth change (kbit/s) is noise, whatever the relative change.
const BANDWIDTH_SLACK_KBPS: i64 = 1_000;

/// The seed of probe pools. Fixed, so that every replica computes the same pools.
const POOL_SEED: u64 = 0x6167_6f72_615f_7031;

/// The seed of the Vivaldi fit (its only randomness: directions for coinciding coordinates).
const MODEL_SEED: u64 = 2004;

/// A pool holds this many peers per side (same region, other regions) per probe target asked.
const POOL_PER_TARGET: usize = 2;

/// What the hub knows of the network, on one replica. Cheap to share; every method takes `&self`.
pub struct NetworkState {
    /// Probe targets per heartbeat (K); 0 turns probing off.
    probe_targets: usize,
    node_timeout_ms: i64,
    snapshot: RwLock<Arc<Snapshot>>,
    snapshot_read: Mutex<Option<Instant>>,
    rotations: Mutex<HashMap<String, Rotation>>,
    pending: Mutex<Pending>,
    telemetry: Mutex<HashMap<String, Arc<Reading>>>,
    pruned: Mutex<Option<Instant>>,
    /// Bumped by every flush that wrote measurements: the model reads them at its next use.
    flushes: AtomicU64,
    model: tokio::sync::Mutex<ModelBuilder>,
}

/// Measurements received and not yet written, the latest per pair and per node, and what this
/// replica last wrote of each.
#[derive(Default)]
struct Pending {
    rtts: HashMap<(String, String), RttSample>,
    links: HashMap<String, LinkSample>,
    /// By pair: the RTT (µs) written and when it was measured.
    written_rtts: HashMap<(String, String), (i64, i64)>,
    written_links: HashMap<String, LinkSample>,
}

/// A node's latest GPU readings.
struct Reading {
    at: i64,
    gpus: Vec<GpuTelemetry>,
}

impl NetworkState {
    pub fn new(settings: &HubSettings) -> Self {
        Self {
            probe_targets: (settings.probe_targets as usize).min(MAX_PROBE_PEERS),
            node_timeout_ms: settings.node_timeout.as_millis() as i64,
            snapshot: RwLock::default(),
            snapshot_read: Mutex::default(),
            rotations: Mutex::default(),
            pending: Mutex::default(),
            telemetry: Mutex::default(),
            pruned: Mutex::default(),
            flushes: AtomicU64::new(0),
            model: tokio::sync::Mutex::new(ModelBuilder::default()),
        }
    }

    /// Takes in what a heartbeat of `node` reports (the caller validated it with [`validate`])
    /// and answers the peers it should probe next. Memory only.
    pub fn heartbeat(&self, node: &str, req: &HeartbeatRequest, now: i64) -> Vec<ProbeTarget> {
        let snapshot = self
            .snapshot
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let (k, epoch) = (self.probe_targets, epoch_of(now));
        let members: Vec<&Target> = pool(&snapshot, node, k, epoch, POOL_SEED)
            .into_iter()
            .map(|i| &snapshot.targets[i])
            .collect();
        let names: Vec<&str> = members.iter().map(|t| t.name.as_str()).collect();
        let report = &req.network;
        // Results may answer the previous epoch's pool, named just before it rotated.
        let previous: Vec<&str> = if report.peers.is_empty() {
            Vec::new()
        } else {
            pool(&snapshot, node, k, epoch.saturating_sub(1), POOL_SEED)
                .into_iter()
                .map(|i| snapshot.targets[i].name.as_str())
                .collect()
        };
        let (accepted, chosen) = {
            let mut rotations = lock(&self.rotations);
            if !rotations.contains_key(node) {
                rotations.insert(node.to_string(), Rotation::default());
            }
            let rotation = rotations.get_mut(node).expect("inserted above");
            let eligible: HashSet<&str> = if report.peers.is_empty() {
                HashSet::new()
            } else {
                rotation
                    .recently_named()
                    .chain(names.iter().copied())
                    .chain(previous.iter().copied())
                    .collect()
            };
            let mut seen = HashSet::new();
            let accepted: Vec<(String, f64)> = report
                .peers
                .iter()
                .filter(|p| p.node != node && eligible.contains(p.node.as_str()))
                .filter(|p| seen.insert(p.node.as_str()))
                .map(|p| (p.node.clone(), p.rtt_ms))
                .collect();
            (accepted, rotation.next(&names, k))
        };
        if !report.is_empty() {
            self.buffer(node, report, &accepted, now);
        }
        if !req.telemetry.is_empty() {
            lock(&self.telemetry).insert(
                node.to_string(),
                Arc::new(Reading {
                    at: now,
                    gpus: req.telemetry.gpus.clone(),
                }),
            );
        }
        chosen
            .into_iter()
            .map(|i| ProbeTarget {
                node: members[i].name.clone(),
                address: members[i].address.clone(),
            })
            .collect()
    }

    /// Keeps a heartbeat's accepted measurements for the next flush, replacing older unwritten
    /// ones of the same pair or node. A measurement close to what this replica last wrote for
    /// its pair or node ([`unchanged`]) is not written again until that is [`REWRITE_EVERY`]
    /// old: a stable network then costs the database (and the model's reads) next to nothing.
    fn buffer(&self, node: &str, report: &NetworkReport, peers: &[(String, f64)], now: i64) {
        let rewrite_after = now - REWRITE_EVERY.as_millis() as i64;
        let mut pending = lock(&self.pending);
        let Pending {
            rtts,
            links,
            written_rtts,
            written_links,
        } = &mut *pending;
        for (peer, rtt_ms) in peers {
            let key = (node.to_string(), peer.clone());
            let rtt_us = micros(*rtt_ms);
            let unchanged_since_written = !rtts.contains_key(&key)
                && written_rtts.get(&key).is_some_and(|&(old, at)| {
                    at > rewrite_after && unchanged(Some(rtt_us), Some(old), RTT_SLACK_US)
                });
            if !unchanged_since_written {
                rtts.insert(
                    key,
                    RttSample {
                        from: node.to_string(),
                        to: peer.clone(),
                        rtt_us,
                        at: now,
                    },
                );
            }
        }
        let sample = LinkSample {
            node: node.to_string(),
            hub_rtt_us: report.hub_rtt_ms.map(micros),
            uplink_kbps: report.uplink_mbps.map(kbps),
            downlink_kbps: report.downlink_mbps.map(kbps),
            at: now,
        };
        if sample.hub_rtt_us.is_none()
            && sample.uplink_kbps.is_none()
            && sample.downlink_kbps.is_none()
        {
            return;
        }
        if let Some(link) = links.get_mut(node) {
            // A value this report lacks keeps the one an earlier, unwritten report gave.
            link.hub_rtt_us = sample.hub_rtt_us.or(link.hub_rtt_us);
            link.uplink_kbps = sample.uplink_kbps.or(link.uplink_kbps);
            link.downlink_kbps = sample.downlink_kbps.or(link.downlink_kbps);
            link.at = now;
            return;
        }
        let unchanged_since_written = written_links.get(node).is_some_and(|w| {
            w.at > rewrite_after
                && unchanged(sample.hub_rtt_us, w.hub_rtt_us, RTT_SLACK_US)
                && unchanged(sample.uplink_kbps, w.uplink_kbps, BANDWIDTH_SLACK_KBPS)
                && unchanged(sample.downlink_kbps, w.downlink_kbps, BANDWIDTH_SLACK_KBPS)
        });
        if !unchanged_since_written {
            links.insert(node.to_string(), sample);
        }
    }

    /// Notes what a flush wrote, for [`NetworkState::buffer`] to compare later samples with.
    fn wrote(&self, rtts: &[RttSample], links: &[LinkSample]) {
        let mut pending = lock(&self.pending);
        for s in rtts {
            pending
                .written_rtts
                .insert((s.from.clone(), s.to.clone()), (s.rtt_us, s.at));
        }
        for s in links {
            let written = pending
                .written_links
                .entry(s.node.clone())
                .or_insert_with(|| s.clone());
            written.hub_rtt_us = s.hub_rtt_us.or(written.hub_rtt_us);
            written.uplink_kbps = s.uplink_kbps.or(written.uplink_kbps);
            written.downlink_kbps = s.downlink_kbps.or(written.downlink_kbps);
            written.at = s.at;
        }
    }

    /// Writes buffered measurements, and deletes RTTs past [`RETENTION`] every [`PRUNE_EVERY`].
    /// A failed write keeps them for the next flush (unless newer ones arrived meanwhile).
    pub async fn flush(&self, store: &Store) -> Result<()> {
        let (mut rtts, mut links): (Vec<_>, Vec<_>) = {
            let mut pending = lock(&self.pending);
            (
                std::mem::take(&mut pending.rtts).into_values().collect(),
                std::mem::take(&mut pending.links).into_values().collect(),
            )
        };
        let written = async {
            if !rtts.is_empty() {
                store.record_rtts(&mut rtts).await?;
            }
            if !links.is_empty() {
                store.record_links(&mut links).await?;
            }
            Ok(())
        }
        .await;
        if let Err(e) = written {
            let mut pending = lock(&self.pending);
            for s in rtts {
                pending
                    .rtts
                    .entry((s.from.clone(), s.to.clone()))
                    .or_insert(s);
            }
            for s in links {
                pending.links.entry(s.node.clone()).or_insert(s);
            }
            return Err(e);
        }
        if !rtts.is_empty() || !links.is_empty() {
            self.wrote(&rtts, &links);
            self.flushes.fetch_add(1, Ordering::Relaxed);
        }
        let prune = lock(&self.pruned).is_none_or(|at| at.elapsed() >= PRUNE_EVERY);
        if prune {
            let now = crate::store::now_ms();
            store.prune_rtts(now - RETENTION.as_millis() as i64).await?;
            // What was written longer ago than REWRITE_EVERY is written again anyway.
            let rewrite_after = now - REWRITE_EVERY.as_millis() as i64;
            let mut pending = lock(&self.pending);
            pending
                .written_rtts
                .retain(|_, (_, at)| *at > rewrite_after);
            pending.written_links.retain(|_, w| w.at > rewrite_after);
            drop(pending);
            *lock(&self.pruned) = Some(Instant::now());
        }
        Ok(())
    }

    /// Whether the snapshot of probe targets is due for [`NetworkState::refresh`].
    pub fn refresh_due(&self) -> bool {
        lock(&self.snapshot_read).is_none_or(|at| at.elapsed() >= TARGETS_REFRESH)
    }

    /// Re-reads the live nodes and their probe addresses, and forgets what this replica keeps of
    /// nodes that are no longer live (their rotations and telemetry).
    pub async fn refresh(&self, store: &Store) -> Result<()> {
        let alive_since = crate::store::now_ms() - self.node_timeout_ms;
        let snapshot = Arc::new(Snapshot::new(store.probe_nodes(alive_since).await?));
        lock(&self.rotations).retain(|node, _| snapshot.regions.contains_key(node));
        lock(&self.telemetry).retain(|node, _| snapshot.regions.contains_key(node));
        *self.snapshot.write().unwrap_or_else(|e| e.into_inner()) = snapshot;
        *lock(&self.snapshot_read) = Some(Instant::now());
        Ok(())
    }

    /// Adds to `nodes` what the hub measured of their network (`status.network`, from the store)
    /// and what their agents reported lately (`telemetry`: the hub RTT from the store, GPU
    /// readings from this replica's memory).
    pub async fn annotate(&self, store: &Store, nodes: &mut [Node]) -> Result<()> {
        let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
        let links = store.links_of(&names).await?;
        let readings = lock(&self.telemetry);
        for node in nodes {
            let link = links.get(&node.name);
            if let Some(link) = link
                && (link.uplink_kbps.is_some() || link.downlink_kbps.is_some())
            {
                node.status.network = Some(NodeNetwork {
                    uplink_mbps: link.uplink_kbps.map(mbps),
                    downlink_mbps: link.downlink_kbps.map(mbps),
                    coordinates: Vec::new(),
                });
            }
            let reading = readings.get(&node.name);
            let hub_rtt_ms = link.and_then(|l| l.hub_rtt_us).map(|us| us as f64 / 1000.0);
            if hub_rtt_ms.is_some() || reading.is_some() {
                node.telemetry = Some(NodeTelemetry {
                    hub_rtt_ms,
                    time: reading.map(|r| crate::views::time(r.at)),
                    gpus: reading.map(|r| r.gpus.clone()).unwrap_or_default(),
                });
            }
        }
        Ok(())
    }

    /// The network for a fleet just read from the store (`rows`, indexed as `index`): the model
    /// brought up to date with the measurements stored since its last use, if it is older than
    /// a second or this replica flushed some since.
    pub async fn network(
        &self,
        store: &Store,
        rows: &[NodeRow],
        index: &Index,
    ) -> Result<HubNetwork> {
        let flushes = self.flushes.load(Ordering::Relaxed);
        let mut builder = self.model.lock().await;
        let fresh = builder
            .updated
            .is_some_and(|(at, seen)| at.elapsed() < MODEL_MAX_AGE && seen == flushes);
        if !fresh {
            builder.update(store, rows, flushes).await?;
        }
        Ok(HubNetwork::new(builder.fitted.clone(), index))
    }
}

/// Checks what a heartbeat's schema cannot say about its measurements and telemetry: each GPU
/// once in the telemetry. (Ranges and list lengths are the schema's, checked before this.)
pub fn validate(req: &HeartbeatRequest) -> ApiResult<()> {
    let mut seen = HashSet::new();
    if let Some(i) = req
        .telemetry
        .gpus
        .iter()
        .position(|g| !seen.insert(g.uuid.as_str()))
    {
        return Err(ApiError::invalid(
            format!("telemetry.gpus[{i}].uuid"),
            "must be unique within the heartbeat",
        ));
    }
    Ok(())
}

/// Checks a registration's `probeAddress` beyond its schema: a socket address (IPv6 in brackets)
/// with a port from 1 to 65535 whose IP a peer can send to, or a DNS name (labels of 1 to 63
/// letters, digits and inner hyphens, 253 characters at most, not ending in a numeric label) with
/// such a port.
pub fn validate_probe_address(address: &str) -> ApiResult<()> {
    let invalid = |why: &str| ApiError::invalid("probeAddress", why.to_string());
    if let Ok(socket) = address.parse::<SocketAddr>() {
        let ip = socket.ip();
        if socket.port() == 0 {
            return Err(invalid("the port must be 1 to 65535"));
        }
        if ip.is_unspecified() || ip.is_multicast() {
            return Err(invalid(
                "must be an address peers can reach, not an unspecified or multicast one",
            ));
        }
        return Ok(());
    }
    let Some((host, port)) = address.rsplit_once(':') else {
        return Err(invalid("must be host:port"));
    };
    if !port.parse::<u16>().is_ok_and(|p| p > 0) {
        return Err(invalid("the port must be 1 to 65535"));
    }
    let label_ok = |label: &str| {
        (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    let labels: Vec<&str> = host.split('.').collect();
    let numeric_tld = labels
        .last()
        .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()));
    if host.len() > 253 || !labels.iter().all(|l| label_ok(l)) || numeric_tld {
        return Err(invalid(
            "must be an IP address or a DNS name (IPv6 addresses in brackets), then :port",
        ));
    }
    Ok(())
}

/// The live nodes as probe selection sees them.
#[derive(Default)]
struct Snapshot {
    /// Nodes with a probe address, by (region, name) in byte order, so a region is one span.
    targets: Vec<Target>,
    /// Span of each region in `targets`.
    spans: HashMap<String, (usize, usize)>,
    /// Position in `targets` by name.
    positions: HashMap<String, usize>,
    /// Every live node's region, with or without a probe address.
    regions: HashMap<String, String>,
}

struct Target {
    name: String,
    region: String,
    address: String,
}

impl Snapshot {
    fn new(nodes: Vec<ProbeNode>) -> Self {
        let regions = nodes
            .iter()
            .map(|n| (n.name.clone(), n.region.clone()))
            .collect();
        let mut targets: Vec<Target> = nodes
            .into_iter()
            .filter_map(|n| {
                Some(Target {
                    address: n.address?,
                    name: n.name,
                    region: n.region,
                })
            })
            .collect();
        targets.sort_unstable_by(|a, b| (&a.region, &a.name).cmp(&(&b.region, &b.name)));
        let mut spans: HashMap<String, (usize, usize)> = HashMap::new();
        for (i, t) in targets.iter().enumerate() {
            spans.entry(t.region.clone()).or_insert((i, i)).1 = i + 1;
        }
        let positions = targets
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Self {
            targets,
            spans,
            positions,
            regions,
        }
    }
}

/// The pool of `node` in `epoch` (see the module docs), as positions in `snapshot.targets`:
/// same-region peers first, then peers of other regions. Never the node itself; empty when
/// `k` is 0. O(pool²) for the draw of distinct offsets, independent of the fleet's size.
fn pool(snapshot: &Snapshot, node: &str, k: usize, epoch: u64, seed: u64) -> Vec<usize> {
    let n = snapshot.targets.len();
    if k == 0 || n == 0 {
        return Vec::new();
    }
    let per_side = POOL_PER_TARGET * k;
    let region = snapshot.regions.get(node).map_or("", String::as_str);
    let (start, end) = snapshot.spans.get(region).copied().unwrap_or((0, 0));
    // Its place in its region's span (always there: both come from the same rows).
    let own = snapshot
        .positions
        .get(node)
        .copied()
        .filter(|i| (start..end).contains(i));
    let region_salt = fnv1a(region);
    // Where the node stands when it has no place of its own (no probe address).
    let home = fnv1a(node) as usize;
    let mut peers = Vec::with_capacity(2 * per_side);

    // Same region: a ring of the region's members, shifted by offsets shared by the region.
    let len = end - start;
    if len > 0 {
        let (base, lowest) = match own {
            Some(i) => (i - start, 1),
            None => (home % len, 0),
        };
        let available = len - lowest;
        let count = per_side.min(available);
        // Offsets up to half the ring never pair two nodes from both sides.
        let half = (len - 1) / 2;
        let highest = if own.is_some() && count <= half {
            half + 1
        } else {
            len
        };
        let salt = mix(region_salt ^ 0x5a);
        for offset in offsets(seed, epoch, salt, count, lowest, highest) {
            peers.push(start + (base + offset) % len);
        }
    }

    // Other regions: the fleet's list without the node's region, from the node's position.
    let len = n - (end - start);
    if len > 0 {
        let base = own.unwrap_or(home) % len;
        let count = per_side.min(len);
        let salt = mix(region_salt ^ 0x0e);
        for offset in offsets(seed, epoch, salt, count, 0, len) {
            let p = (base + offset) % len;
            peers.push(if p < start { p } else { p + (end - start) });
        }
    }
    peers
}

/// `count` distinct offsets in `lowest..highest` (all of them when the range is no larger),
/// drawn from `seed`, `epoch` and `salt`.
fn offsets(
    seed: u64,
    epoch: u64,
    salt: u64,
    count: usize,
    lowest: usize,
    highest: usize,
) -> Vec<usize> {
    let range = highest.saturating_sub(lowest);
    if count >= range {
        return (lowest..highest).collect();
    }
    let mut drawn: Vec<usize> = Vec::with_capacity(count);
    for j in 0..count as u64 {
        let mut offset = (mix(seed ^ mix(epoch ^ mix(salt ^ j))) % range as u64) as usize;
        while drawn.contains(&(lowest + offset)) {
            offset = (offset + 1) % range;
        }
        drawn.push(lowest + offset);
    }
    drawn
}

/// Which pool members this replica named to a node, and when (in the node's heartbeats).
#[derive(Default)]
struct Rotation {
    heartbeats: u64,
    named: HashMap<String, u64>,
}

impl Rotation {
    /// The `k` members of `pool` named least recently (never-named first, then in pool order),
    /// as positions in `pool`; counts the heartbeat and remembers them as named now.
    fn next(&mut self, pool: &[&str], k: usize) -> Vec<usize> {
        self.heartbeats += 1;
        let mut order: Vec<usize> = (0..pool.len()).collect();
        order.sort_by_key(|&i| (self.named.get(pool[i]).copied().unwrap_or(0), i));
        order.truncate(k);
        // Forget peers that left the pool, so the map stays the pool's size.
        self.named.retain(|name, _| pool.contains(&name.as_str()));
        for &i in &order {
            self.named.insert(pool[i].to_string(), self.heartbeats);
        }
        order
    }

    /// The peers named in the node's last two answers: a result may arrive one heartbeat late.
    fn recently_named(&self) -> impl Iterator<Item = &str> {
        let since = self.heartbeats.saturating_sub(1).max(1);
        self.named
            .iter()
            .filter(move |(_, at)| **at >= since)
            .map(|(name, _)| name.as_str())
    }
}

/// The scheduler's network model and what it knows of each node.
#[derive(Clone)]
struct Fitted {
    model: NetworkModel,
    /// Model key by node name: assigned once, never reused.
    keys: HashMap<String, NodeKey>,
    /// By model key: the node has an RTT measurement (its coordinate means something).
    measured: Vec<bool>,
    /// By model key: both of the node's bandwidths are known.
    banded: Vec<bool>,
}

impl Default for Fitted {
    fn default() -> Self {
        Self {
            model: NetworkModel::new(MODEL_SEED),
            keys: HashMap::new(),
            measured: Vec::new(),
            banded: Vec::new(),
        }
    }
}

/// What one round of feeding changed.
#[derive(Debug, Default, PartialEq, Eq)]
struct Fed {
    samples: usize,
    /// Nodes that got their first RTT measurement.
    newly_measured: usize,
}

impl Fitted {
    /// Adds every node of `nodes` (name, region) not yet in the model and moves those whose
    /// region changed; then feeds the bandwidths of `links` and the RTTs of `rtts` (in time
    /// order) not fed before (`fed`: the time of the last sample fed per directed pair). Rows of
    /// unknown nodes are skipped.
    fn feed<'a>(
        &mut self,
        nodes: impl IntoIterator<Item = (&'a str, &'a str)>,
        links: &[LinkSample],
        rtts: &mut [RttSample],
        fed: &mut HashMap<(NodeKey, NodeKey), i64>,
    ) -> Fed {
        for (name, region) in nodes {
            let next = self.keys.len() as NodeKey;
            let key = *self.keys.entry(name.to_string()).or_insert(next);
            self.model.add_node(key, region);
            if self.measured.len() <= key as usize {
                self.measured.resize(key as usize + 1, false);
                self.banded.resize(key as usize + 1, false);
            }
        }
        for link in links {
            let (Some(&key), Some(up), Some(down)) = (
                self.keys.get(&link.node),
                link.uplink_kbps,
                link.downlink_kbps,
            ) else {
                continue;
            };
            // Refused values (0: nothing got through) leave what the model had.
            if self.model.set_bandwidth(key, mbps_f(up), mbps_f(down)) {
                self.banded[key as usize] = true;
            }
        }
        rtts.sort_unstable_by(|a, b| (a.at, &a.from, &a.to).cmp(&(b.at, &b.from, &b.to)));
        let mut done = Fed::default();
        for s in rtts.iter() {
            let (Some(&a), Some(&b)) = (self.keys.get(&s.from), self.keys.get(&s.to)) else {
                continue;
            };
            if fed.get(&(a, b)).is_some_and(|&at| at >= s.at) {
                continue;
            }
            fed.insert((a, b), s.at);
            if !self.model.observe_rtt(a, b, s.rtt_us as f64 / 1000.0) {
                continue;
            }
            done.samples += 1;
            for key in [a, b] {
                if !std::mem::replace(&mut self.measured[key as usize], true) {
                    done.newly_measured += 1;
                }
            }
        }
        done
    }
}

/// The model as the hub keeps it between uses.
#[derive(Default)]
struct ModelBuilder {
    fitted: Arc<Fitted>,
    fed: HashMap<(NodeKey, NodeKey), i64>,
    /// The latest measurement time read, RTTs and links.
    rtts_read: i64,
    links_read: i64,
    refitted: Option<Instant>,
    /// When the model last read the store, and the flush count it had seen.
    updated: Option<(Instant, u64)>,
}

impl ModelBuilder {
    /// Reads the measurements stored since the last read (with [`READ_OVERLAP_MS`]), feeds them,
    /// and refits or refreshes the model.
    async fn update(&mut self, store: &Store, rows: &[NodeRow], flushes: u64) -> Result<()> {
        let now = crate::store::now_ms();
        let oldest = now - RETENTION.as_millis() as i64;
        let mut rtts = store
            .rtts_since((self.rtts_read - READ_OVERLAP_MS).max(oldest))
            .await?;
        let links = store.links_since(self.links_read - READ_OVERLAP_MS).await?;
        self.rtts_read = rtts.iter().map(|s| s.at).fold(self.rtts_read, i64::max);
        self.links_read = links.iter().map(|s| s.at).fold(self.links_read, i64::max);
        let mut fitted = Arc::unwrap_or_clone(std::mem::take(&mut self.fitted));
        let fed = fitted.feed(
            rows.iter().map(|r| (r.name.as_str(), r.region.as_str())),
            &links,
            &mut rtts,
            &mut self.fed,
        );
        let refit = fed.newly_measured > 0
            || (fed.samples > 0 && self.refitted.is_none_or(|at| at.elapsed() >= REFIT_EVERY));
        if refit {
            // Milliseconds at a thousand nodes, a fraction of a second at ten thousand: off the
            // async workers.
            match tokio::task::spawn_blocking(move || {
                fitted.model.refit(REFIT_PASSES);
                fitted
            })
            .await
            {
                Ok(done) => fitted = done,
                Err(e) => {
                    // The model went with the failed task: start over from the stored rows.
                    tracing::warn!(error = %e, "refitting the network model failed; rebuilding it");
                    *self = Self::default();
                    return Ok(());
                }
            }
            self.refitted = Some(Instant::now());
        } else if fed.samples > 0 {
            fitted.model.refresh();
        }
        self.fitted = Arc::new(fitted);
        self.updated = Some((Instant::now(), flushes));
        Ok(())
    }
}

/// The network the scheduler places on: the fitted model where nodes have measurements, the
/// region rule where they have none.
pub struct HubNetwork {
    fitted: Arc<Fitted>,
    /// By index key: the model key of a node with RTT measurements.
    measured: Vec<Option<NodeKey>>,
    /// By index key: the model key of a node whose bandwidths are known.
    banded: Vec<Option<NodeKey>>,
    /// By index key: the node's region.
    regions: Vec<String>,
}

impl HubNetwork {
    /// The network over `index`'s nodes. O(nodes).
    fn new(fitted: Arc<Fitted>, index: &Index) -> Self {
        let slots = index.iter().map(|(k, _)| k as usize + 1).max().unwrap_or(0);
        let mut measured = vec![None; slots];
        let mut banded = vec![None; slots];
        let mut regions = vec![String::new(); slots];
        for (key, entry) in index.iter() {
            let i = key as usize;
            regions[i] = entry.node.region.clone();
            if let Some(&m) = fitted.keys.get(&entry.node.name) {
                let m_i = m as usize;
                measured[i] = fitted
                    .measured
                    .get(m_i)
                    .copied()
                    .unwrap_or(false)
                    .then_some(m);
                banded[i] = fitted
                    .banded
                    .get(m_i)
                    .copied()
                    .unwrap_or(false)
                    .then_some(m);
            }
        }
        Self {
            fitted,
            measured,
            banded,
            regions,
        }
    }

    fn region(&self, node: NodeKey) -> Option<&str> {
        self.regions.get(node as usize).map(String::as_str)
    }

    fn model_key(keys: &[Option<NodeKey>], node: NodeKey) -> Option<NodeKey> {
        keys.get(node as usize).copied().flatten()
    }
}

impl Network for HubNetwork {
    /// The model's estimate for a measured node and a region with measured members; otherwise
    /// [`SAME_REGION_MS`] to the node's own region and unknown elsewhere.
    fn rtt_to_region_ms(&self, node: NodeKey, region: &str) -> Option<f64> {
        Self::model_key(&self.measured, node)
            .and_then(|m| self.fitted.model.rtt_to_region_ms(m, region))
            .or_else(|| (self.region(node) == Some(region)).then_some(SAME_REGION_MS))
    }

    /// The measured pair, or the coordinate estimate when both nodes have measurements;
    /// otherwise [`SAME_REGION_MS`] within a region and unknown (infinite) across regions.
    fn rtt_ms(&self, a: NodeKey, b: NodeKey) -> f64 {
        if a == b {
            return 0.0;
        }
        if let (Some(x), Some(y)) = (
            Self::model_key(&self.measured, a),
            Self::model_key(&self.measured, b),
        ) {
            return self.fitted.model.rtt_ms(x, y);
        }
        if self.region(a) == self.region(b) {
            SAME_REGION_MS
        } else {
            f64::INFINITY
        }
    }

    /// `min(uplink(a), downlink(b))` when both nodes' bandwidths were measured, else 0 (unknown).
    fn bandwidth_mbps(&self, a: NodeKey, b: NodeKey) -> f64 {
        match (
            Self::model_key(&self.banded, a),
            Self::model_key(&self.banded, b),
        ) {
            (Some(x), Some(y)) => self.fitted.model.bandwidth_mbps(x, y),
            _ => 0.0,
        }
    }
}

/// Whether `new` says nothing `old` did not: absent (the report lacks it), or within 10 % or
/// `slack` of it.
fn unchanged(new: Option<i64>, old: Option<i64>, slack: i64) -> bool {
    match (new, old) {
        (None, _) => true,
        (Some(new), Some(old)) => new.abs_diff(old) <= (old.unsigned_abs() / 10).max(slack as u64),
        (Some(_), None) => false,
    }
}

/// The pool epoch a time (Unix ms) falls in.
fn epoch_of(now_ms: i64) -> u64 {
    (now_ms.max(0) as u64) / POOL_EPOCH.as_millis() as u64
}

/// Milliseconds (a measurement the schema bounded to 0–[`MAX_RTT_MS`]) as whole microseconds, at
/// least 1: the model needs a positive RTT, and a sub-microsecond one is below any probe's
/// resolution.
fn micros(ms: f64) -> i64 {
    (ms.clamp(0.0, MAX_RTT_MS) * 1000.0).round().max(1.0) as i64
}

/// Mbit/s (bounded by the schema to 0–[`MAX_BANDWIDTH_MBPS`]) as whole kbit/s.
fn kbps(mbps: f64) -> i64 {
    (mbps.clamp(0.0, MAX_BANDWIDTH_MBPS) * 1000.0).round() as i64
}

/// Stored kbit/s as the node view's whole Mbit/s.
fn mbps(kbps: i64) -> u32 {
    u32::try_from(kbps.max(0) / 1000).unwrap_or(u32::MAX)
}

/// Stored kbit/s as the model's Mbit/s.
fn mbps_f(kbps: i64) -> f64 {
    kbps as f64 / 1000.0
}

/// SplitMix64's finalizer: a well-mixed, deterministic 64-bit hash of a 64-bit value.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// FNV-1a of a string: stable across processes and platforms, unlike the standard hasher.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use scheduler::NodeView;

    use super::*;

    /// A snapshot of `regions` (name, nodes) whose nodes are `{region}-{i}`, every one with a
    /// probe address unless listed in `silent`.
    fn snapshot(regions: &[(&str, usize)], silent: &[&str]) -> Snapshot {
        let mut nodes = Vec::new();
        for (region, count) in regions {
            for i in 0..*count {
                let name = format!("{region}-{i}");
                nodes.push(ProbeNode {
                    address: (!silent.contains(&name.as_str())).then(|| format!("{name}:7070")),
                    name,
                    region: region.to_string(),
                });
            }
        }
        Snapshot::new(nodes)
    }

    fn names(snapshot: &Snapshot, pool: &[usize]) -> Vec<String> {
        pool.iter()
            .map(|&i| snapshot.targets[i].name.clone())
            .collect()
    }

    fn region_of<'a>(snapshot: &'a Snapshot, name: &str) -> &'a str {
        &snapshot.regions[name]
    }

    #[test]
    fn a_pool_holds_distinct_peers_with_probe_addresses_never_the_node_itself() {
        let snap = snapshot(&[("eu", 12), ("us", 7), ("ap", 3)], &["eu-3", "us-0"]);
        for node in snap.regions.keys() {
            for k in [1, 4, 16] {
                let pool = names(&snap, &pool(&snap, node, k, 7, 1));
                assert!(!pool.contains(node), "{node} probes itself: {pool:?}");
                assert!(!pool.iter().any(|p| p == "eu-3" || p == "us-0"), "{pool:?}");
                let distinct: HashSet<&String> = pool.iter().collect();
                assert_eq!(distinct.len(), pool.len(), "{node}: {pool:?}");
                assert!(pool.len() <= 4 * k);
            }
        }
    }

    #[test]
    fn a_pool_mixes_same_region_peers_and_peers_of_other_regions() {
        let snap = snapshot(&[("eu", 30), ("us", 30), ("ap", 30)], &[]);
        let pool = names(&snap, &pool(&snap, "eu-4", 4, 0, 1));
        let same = pool.iter().filter(|p| p.starts_with("eu-")).count();
        assert_eq!((same, pool.len() - same), (8, 8), "{pool:?}");
        // Same-region peers first.
        assert!(pool[..8].iter().all(|p| p.starts_with("eu-")), "{pool:?}");
        let others: HashSet<&str> = pool[8..].iter().map(|p| region_of(&snap, p)).collect();
        assert_eq!(others, HashSet::from(["us", "ap"]), "{pool:?}");
    }

    #[test]
    fn small_fleets_probe_everyone_they_can_and_k_zero_probes_nobody() {
        let snap = snapshot(&[("eu", 2), ("us", 1)], &[]);
        let mut pool = names(&snap, &pool(&snap, "eu-0", 4, 0, 1));
        pool.sort();
        assert_eq!(pool, ["eu-1", "us-0"]);
        assert!(pool_of(&snapshot(&[("eu", 1)], &[]), "eu-0", 4).is_empty());
        assert!(pool_of(&snap, "eu-0", 0).is_empty());
        assert!(pool_of(&Snapshot::default(), "eu-0", 4).is_empty());
    }

    fn pool_of(snap: &Snapshot, node: &str, k: usize) -> Vec<usize> {
        pool(snap, node, k, 0, 1)
    }

    #[test]
    fn a_node_without_a_probe_address_probes_others_and_is_never_probed() {
        let snap = snapshot(&[("eu", 10), ("us", 10)], &["eu-0"]);
        let pool = names(&snap, &pool(&snap, "eu-0", 2, 0, 1));
        assert_eq!(pool.len(), 8, "{pool:?}");
        assert_eq!(pool.iter().filter(|p| p.starts_with("eu-")).count(), 4);
        for node in snap.regions.keys() {
            assert!(!names(&snap, &pool_of(&snap, node, 2)).contains(&"eu-0".to_string()));
        }
        // A node the snapshot does not know yet (registered since) probes other regions' nodes.
        assert_eq!(pool_of(&snap, "gn-new", 2).len(), 4);
    }

    #[test]
    fn within_a_region_every_node_is_probed_as_often_as_it_probes_and_each_pair_from_one_side() {
        let snap = snapshot(&[("eu", 40), ("us", 25)], &[]);
        let mut probed: HashMap<String, usize> = HashMap::new();
        let mut pairs = HashSet::new();
        for i in 0..40 {
            let node = format!("eu-{i}");
            for peer in names(&snap, &pool_of(&snap, &node, 4)) {
                if peer.starts_with("eu-") {
                    *probed.entry(peer.clone()).or_default() += 1;
                    assert!(
                        !pairs.contains(&(peer.clone(), node.clone())),
                        "{node} and {peer} both probe each other"
                    );
                    pairs.insert((node.clone(), peer));
                }
            }
        }
        assert_eq!(probed.len(), 40);
        assert!(probed.values().all(|&n| n == 8), "{probed:?}");
        // Across regions the load spreads too: every eu node is probed by some us node.
        let mut from_us: HashMap<String, usize> = HashMap::new();
        for i in 0..25 {
            for peer in names(&snap, &pool_of(&snap, &format!("us-{i}"), 4)) {
                if peer.starts_with("eu-") {
                    *from_us.entry(peer).or_default() += 1;
                }
            }
        }
        assert_eq!(from_us.values().sum::<usize>(), 25 * 8);
        assert!(
            from_us.values().all(|&n| (4..=6).contains(&n)),
            "{from_us:?}"
        );
    }

    #[test]
    fn pools_are_deterministic_given_the_seed_and_rotate_with_the_epoch() {
        let snap = snapshot(&[("eu", 100), ("us", 100), ("ap", 100)], &[]);
        assert_eq!(pool(&snap, "eu-7", 4, 3, 42), pool(&snap, "eu-7", 4, 3, 42));
        assert_ne!(pool(&snap, "eu-7", 4, 3, 42), pool(&snap, "eu-7", 4, 3, 43));
        assert_ne!(pool(&snap, "eu-7", 4, 3, 42), pool(&snap, "eu-7", 4, 4, 42));
        // Over a day of epochs a node probes many more peers than one pool holds: in its region,
        // the half of the ring ahead of it (the half behind probes it), and anywhere else.
        let mut probed = HashSet::new();
        for epoch in 0..24 {
            probed.extend(names(&snap, &pool(&snap, "eu-7", 4, epoch, 42)));
        }
        let same = probed.iter().filter(|p| p.starts_with("eu-")).count();
        assert!(same >= 45, "{same} of 49 same-region peers over 24 epochs");
        assert!(probed.len() - same >= 100, "{probed:?}");
    }

    #[test]
    fn each_heartbeat_names_the_k_peers_named_least_recently() {
        let pool = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"];
        let mut rotation = Rotation::default();
        let mut named = Vec::new();
        for _ in 0..3 {
            let chosen = rotation.next(&pool, 4);
            assert!(chosen.len() <= 4);
            named.extend(chosen.iter().map(|&i| pool[i]));
        }
        // Never-named first: three heartbeats cover the ten members, then the oldest come back.
        assert_eq!(&named[..10], &pool);
        assert_eq!(&named[10..], ["a", "b"]);
        let chosen: Vec<&str> = rotation.next(&pool, 4).iter().map(|&i| pool[i]).collect();
        assert_eq!(chosen, ["c", "d", "e", "f"]);
        // Results may come from the last two answers.
        let mut recent: Vec<&str> = rotation.recently_named().collect();
        recent.sort_unstable();
        assert_eq!(recent, ["a", "b", "c", "d", "e", "f", "i", "j"]);
        rotation.next(&pool, 4);
        let mut recent: Vec<&str> = rotation.recently_named().collect();
        recent.sort_unstable();
        assert_eq!(recent, ["a", "b", "c", "d", "e", "f", "g", "h"]);
        // A member that left the pool is forgotten; a new one goes first.
        let chosen: Vec<&str> = rotation
            .next(&["b", "c", "new"], 1)
            .iter()
            .map(|&i| ["b", "c", "new"][i])
            .collect();
        assert_eq!(chosen, ["new"]);
        assert!(!rotation.named.contains_key("a"));
    }

    #[test]
    fn probe_addresses_are_socket_addresses_or_dns_names_with_a_port() {
        for good in [
            "10.0.0.7:7070",
            "[2001:db8::1]:7070",
            "[::1]:9",
            "127.0.0.1:7070",
            "gn-a.example.com:7070",
            "localhost:1",
        ] {
            assert!(validate_probe_address(good).is_ok(), "{good}");
        }
        for bad in [
            "10.0.0.7",
            "10.0.0.7:0",
            "10.0.0.7:65536",
            "0.0.0.0:7070",
            "[::]:7070",
            "224.0.0.1:7070",
            "999.1.1.1:7070",
            "-bad.example.com:7070",
            "a..b:7070",
            "under_score.example:7070",
            ":7070",
            "2001:db8::1:7070",
        ] {
            assert!(validate_probe_address(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn results_count_for_the_node_s_pool_only_whichever_replica_named_them() {
        let state = NetworkState::new(&HubSettings::default());
        *state.snapshot.write().unwrap() = Arc::new(snapshot(&[("eu", 50), ("us", 50)], &[]));
        let everyone: Vec<crds::agent::PeerRtt> = (0..50)
            .flat_map(|i| [format!("eu-{i}"), format!("us-{i}")])
            .chain(["gn-unknown".to_string()])
            .map(|node| crds::agent::PeerRtt { node, rtt_ms: 7.0 })
            .collect();
        let req = HeartbeatRequest {
            network: NetworkReport {
                peers: everyone,
                ..NetworkReport::default()
            },
            ..HeartbeatRequest::default()
        };
        // This replica never named anything to eu-3: its pool (this epoch's and the last) counts.
        let now = 5 * POOL_EPOCH.as_millis() as i64 + 1;
        state.heartbeat("eu-3", &req, now);
        let (rtts, _) = pending(&state);
        let kept: HashSet<String> = rtts.into_iter().map(|(_, to, _)| to).collect();
        let snap = state.snapshot.read().unwrap().clone();
        let pools: HashSet<String> = [4, 5]
            .into_iter()
            .flat_map(|epoch| names(&snap, &pool(&snap, "eu-3", 4, epoch, POOL_SEED)))
            .collect();
        assert_eq!(kept, pools);
        assert!((16..=32).contains(&kept.len()), "{kept:?}");
    }

    fn report(hub_rtt_ms: Option<f64>, uplink_mbps: Option<f64>) -> NetworkReport {
        NetworkReport {
            hub_rtt_ms,
            uplink_mbps,
            ..NetworkReport::default()
        }
    }

    /// What the next flush would write: (pairs, nodes).
    fn pending(state: &NetworkState) -> (Vec<(String, String, i64)>, Vec<LinkSample>) {
        let pending = lock(&state.pending);
        let mut rtts: Vec<_> = pending
            .rtts
            .values()
            .map(|s| (s.from.clone(), s.to.clone(), s.rtt_us))
            .collect();
        rtts.sort();
        (rtts, pending.links.values().cloned().collect())
    }

    /// Takes what a flush would write and notes it written.
    fn flushed(state: &NetworkState) {
        let (rtts, links) = {
            let mut pending = lock(&state.pending);
            (
                std::mem::take(&mut pending.rtts)
                    .into_values()
                    .collect::<Vec<_>>(),
                std::mem::take(&mut pending.links)
                    .into_values()
                    .collect::<Vec<_>>(),
            )
        };
        state.wrote(&rtts, &links);
    }

    #[test]
    fn the_latest_measurement_waits_for_the_flush_and_an_unchanged_one_is_not_written_again() {
        let state = NetworkState::new(&HubSettings::default());
        let peer = |ms: f64| vec![("gn-b".to_string(), ms)];
        state.buffer("gn-a", &report(Some(10.0), Some(100.0)), &peer(3.0), 1_000);
        state.buffer("gn-a", &report(Some(12.0), None), &peer(3.5), 2_000);
        let (rtts, links) = pending(&state);
        assert_eq!(rtts, [("gn-a".into(), "gn-b".into(), 3_500)]);
        // The later report lacks the uplink: the earlier one's stays.
        assert_eq!(
            links,
            [LinkSample {
                node: "gn-a".into(),
                hub_rtt_us: Some(12_000),
                uplink_kbps: Some(100_000),
                downlink_kbps: None,
                at: 2_000
            }]
        );
        flushed(&state);

        // Within 10 % (or noise) of what was written: nothing to write.
        state.buffer("gn-a", &report(Some(12.5), Some(104.0)), &peer(3.6), 3_000);
        assert_eq!(pending(&state), (vec![], vec![]));
        // A real change is written, and only what changed needs to be.
        state.buffer("gn-a", &report(Some(30.0), None), &peer(3.6), 4_000);
        state.buffer("gn-a", &report(None, None), &peer(9.0), 4_000);
        let (rtts, links) = pending(&state);
        assert_eq!(rtts, [("gn-a".into(), "gn-b".into(), 9_000)]);
        assert_eq!(links[0].hub_rtt_us, Some(30_000));
        flushed(&state);
        // Unchanged but old: written again, so the stored row stays fresh.
        let later = 4_000 + REWRITE_EVERY.as_millis() as i64 + 1;
        state.buffer("gn-a", &report(None, None), &peer(9.0), later);
        assert_eq!(pending(&state).0.len(), 1);
    }

    #[test]
    fn measurements_are_stored_in_whole_units_with_a_floor_on_rtts() {
        assert_eq!(micros(3.0), 3_000);
        assert_eq!(micros(0.0004), 1);
        assert_eq!(micros(0.0), 1);
        assert_eq!(micros(MAX_RTT_MS), 60_000_000);
        assert_eq!(kbps(940.5), 940_500);
        assert_eq!(mbps(940_500), 940);
    }

    fn view(name: &str, region: &str) -> NodeView {
        NodeView {
            name: name.into(),
            region: region.into(),
            ready: true,
            ..NodeView::default()
        }
    }

    fn sample(from: &str, to: &str, ms: f64, at: i64) -> RttSample {
        RttSample {
            from: from.into(),
            to: to.into(),
            rtt_us: micros(ms),
            at,
        }
    }

    /// The model over `views` fed with `rtts` and `links`, refitted like the hub does.
    fn network(views: &[NodeView], rtts: &mut [RttSample], links: &[LinkSample]) -> HubNetwork {
        let mut index = Index::new();
        index.reset(views.iter().cloned());
        let mut fitted = Fitted::default();
        fitted.feed(
            views.iter().map(|v| (v.name.as_str(), v.region.as_str())),
            links,
            rtts,
            &mut HashMap::new(),
        );
        fitted.model.refit(REFIT_PASSES);
        HubNetwork::new(Arc::new(fitted), &index)
    }

    fn key(views: &[NodeView], name: &str) -> NodeKey {
        let mut index = Index::new();
        index.reset(views.iter().cloned());
        index.key(name).unwrap()
    }

    #[test]
    fn measured_nodes_are_placed_by_the_model_and_unmeasured_ones_by_their_region() {
        let views = [
            view("x-1", "x"),
            view("x-2", "x"),
            view("a", "y"),
            view("b", "y"),
            view("c", "y"),
        ];
        let mut rtts = [
            sample("x-1", "x-2", 2.0, 1),
            sample("b", "x-1", 3.0, 1),
            sample("b", "x-2", 3.0, 1),
            sample("a", "x-1", 80.0, 1),
            sample("a", "x-2", 80.0, 1),
        ];
        let net = network(&views, &mut rtts, &[]);
        let [x1, a, b, c] = ["x-1", "a", "b", "c"].map(|n| key(&views, n));
        let to_x = |k| net.rtt_to_region_ms(k, "x").unwrap_or(f64::NAN);
        assert!(to_x(b) < 20.0, "b is {} ms from x", to_x(b));
        assert!(to_x(a) > 60.0, "a is {} ms from x", to_x(a));
        assert_eq!(net.rtt_ms(b, x1), 3.0, "a measured pair is its measurement");
        // c measured nothing: the region rule, as before measurements.
        assert_eq!(net.rtt_to_region_ms(c, "y"), Some(SAME_REGION_MS));
        assert_eq!(net.rtt_to_region_ms(c, "x"), None);
        assert_eq!(net.rtt_ms(c, b), SAME_REGION_MS);
        assert_eq!(net.rtt_ms(c, x1), f64::INFINITY);
        // No bandwidth reported: unknown.
        assert_eq!(net.bandwidth_mbps(a, b), 0.0);
    }

    #[test]
    fn without_measurements_the_network_is_the_region_rule() {
        let views = [view("x-1", "x"), view("a", "y"), view("b", "y")];
        let net = network(&views, &mut [], &[]);
        let [x1, a, b] = ["x-1", "a", "b"].map(|n| key(&views, n));
        assert_eq!(net.rtt_to_region_ms(a, "y"), Some(SAME_REGION_MS));
        assert_eq!(net.rtt_to_region_ms(a, "x"), None);
        assert_eq!(net.rtt_ms(a, b), SAME_REGION_MS);
        assert_eq!(net.rtt_ms(a, a), 0.0);
        assert_eq!(net.rtt_ms(a, x1), f64::INFINITY);
        assert_eq!(net.bandwidth_mbps(a, b), 0.0);
    }

    #[test]
    fn bandwidth_counts_once_both_ends_reported_theirs() {
        let views = [view("a", "y"), view("b", "y"), view("c", "y")];
        let link = |node: &str, up: Option<i64>, down: Option<i64>| LinkSample {
            node: node.into(),
            uplink_kbps: up,
            downlink_kbps: down,
            ..LinkSample::default()
        };
        let links = [
            link("a", Some(100_000), Some(900_000)),
            link("b", Some(50_000), Some(300_000)),
            link("c", Some(50_000), None),
        ];
        let net = network(&views, &mut [], &links);
        let [a, b, c] = ["a", "b", "c"].map(|n| key(&views, n));
        assert_eq!(net.bandwidth_mbps(a, b), 100.0);
        assert_eq!(net.bandwidth_mbps(b, a), 50.0);
        assert_eq!(net.bandwidth_mbps(a, c), 0.0);
    }

    #[test]
    fn samples_are_fed_once_and_rows_of_unknown_nodes_skipped() {
        let mut fitted = Fitted::default();
        let nodes = [("a", "y"), ("b", "y")];
        let mut fed = HashMap::new();
        let mut rtts = vec![sample("a", "b", 4.0, 10), sample("a", "gone", 4.0, 10)];
        let first = fitted.feed(nodes, &[], &mut rtts, &mut fed);
        assert_eq!(
            first,
            Fed {
                samples: 1,
                newly_measured: 2
            }
        );
        // Read again (the overlap of the next read): not fed twice.
        let again = fitted.feed(nodes, &[], &mut rtts, &mut fed);
        assert_eq!(again, Fed::default());
        let mut later = vec![sample("a", "b", 5.0, 11)];
        let newer = fitted.feed(nodes, &[], &mut later, &mut fed);
        assert_eq!(
            newer,
            Fed {
                samples: 1,
                newly_measured: 0
            }
        );
    }

    /// What the network adds to a heartbeat: 1,000 nodes with probe addresses in 8 regions, K = 4;
    /// a heartbeat with no report, and one with 4 peer results and the hub measurements.
    /// `cargo test -p api --release --lib what_a_heartbeat -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement, not a check; run it in release"]
    fn what_a_heartbeat_costs_the_network_state() {
        let regions: Vec<(String, usize)> = (0..8).map(|r| (format!("r{r}"), 125)).collect();
        let regions: Vec<(&str, usize)> = regions.iter().map(|(r, n)| (r.as_str(), *n)).collect();
        let state = NetworkState::new(&HubSettings::default());
        *state.snapshot.write().unwrap() = Arc::new(snapshot(&regions, &[]));
        let nodes: Vec<String> = state
            .snapshot
            .read()
            .unwrap()
            .regions
            .keys()
            .cloned()
            .collect();
        let plain = HeartbeatRequest::default();
        let rounds = 20;
        let started = Instant::now();
        for round in 0..rounds {
            for node in &nodes {
                state.heartbeat(node, &plain, round);
            }
        }
        let per_plain = started.elapsed() / (rounds as u32 * nodes.len() as u32);
        let started = Instant::now();
        for round in 0..rounds {
            for node in &nodes {
                let targets = state.heartbeat(node, &plain, round);
                let reported = HeartbeatRequest {
                    network: NetworkReport {
                        hub_rtt_ms: Some(10.0 + round as f64),
                        peers: targets
                            .iter()
                            .map(|t| crds::agent::PeerRtt {
                                node: t.node.clone(),
                                rtt_ms: 20.0 + round as f64,
                            })
                            .collect(),
                        ..NetworkReport::default()
                    },
                    ..HeartbeatRequest::default()
                };
                state.heartbeat(node, &reported, round);
            }
        }
        let per_pair = started.elapsed() / (rounds as u32 * nodes.len() as u32);
        println!(
            "a heartbeat without a report: {per_plain:?}; one answered with targets plus one \
             reporting 4 peers: {per_pair:?}; pending: {} pairs",
            lock(&state.pending).rtts.len()
        );
    }

    /// The cost of building the model from scratch, as a hub that starts (or a new leader) does:
    /// 1,000 nodes in 8 regions, 8 measured peers each. `cargo test -p api --release --lib
    /// building_the_model -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement, not a check; run it in release"]
    fn building_the_model_for_a_thousand_nodes() {
        // The scheduler crate's synthetic world: DT-FM's world-wide region RTTs plus a last mile.
        let world = scheduler::network::synthetic::World::generate(1000, 7);
        let views: Vec<NodeView> = (0..1000)
            .map(|i| view(&format!("gn-{i}"), world.region_name(i)))
            .collect();
        let mut rtts = Vec::new();
        for i in 0..1000usize {
            for j in 1..=8usize {
                let peer = (i + j * 37) % 1000;
                let ms = world.true_rtt(i, peer);
                rtts.push(sample(
                    &format!("gn-{i}"),
                    &format!("gn-{peer}"),
                    ms,
                    i as i64,
                ));
            }
        }
        let mut index = Index::new();
        index.reset(views.iter().cloned());
        let started = Instant::now();
        let mut fitted = Fitted::default();
        let fed = fitted.feed(
            views.iter().map(|v| (v.name.as_str(), v.region.as_str())),
            &[],
            &mut rtts,
            &mut HashMap::new(),
        );
        let fed_in = started.elapsed();
        fitted.model.refit(REFIT_PASSES);
        let refit_in = started.elapsed() - fed_in;
        let fitted = Arc::new(fitted);
        let adapter = Instant::now();
        let net = HubNetwork::new(fitted.clone(), &index);
        let adapter_in = adapter.elapsed();
        let clone = Instant::now();
        let copy = (*fitted).clone();
        let clone_in = clone.elapsed();
        println!(
            "{} samples: fed in {fed_in:?}, refit ({REFIT_PASSES} passes) in {refit_in:?}, \
             scheduler view in {adapter_in:?}, copy-on-write clone in {clone_in:?}",
            fed.samples
        );
        assert_eq!(copy.keys.len(), 1000);
        assert!(net.rtt_to_region_ms(0, world.region_name(0)).is_some());
    }
}
