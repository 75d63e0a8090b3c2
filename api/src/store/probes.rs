//! What agents measure of the network (see `crate::network`): probe addresses set at registration,
//! and RTTs and bandwidths written in batches by each replica's heartbeat flush, read back to
//! build the scheduler's network model and the node view. RTTs are integer microseconds and
//! bandwidths integer kbit/s, like every other value the store keeps (integers and text only).

use std::collections::HashMap;

use sqlx::{AssertSqlSafe, Row};

use super::{Result, Store, placeholders};

/// Most rows one batched statement writes: four or five parameters each, well inside the
/// parameter limits of both engines (SQLite 32,766, PostgreSQL 65,535).
const BATCH: usize = 1_000;

/// One RTT a node measured to a peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RttSample {
    pub from: String,
    pub to: String,
    pub rtt_us: i64,
    /// When the hub received it (Unix ms).
    pub at: i64,
}

/// A node's measurements against the hub; a value it did not report is `None` and leaves the
/// stored one as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinkSample {
    pub node: String,
    pub hub_rtt_us: Option<i64>,
    pub uplink_kbps: Option<i64>,
    pub downlink_kbps: Option<i64>,
    /// When the hub received them (Unix ms).
    pub at: i64,
}

/// A live node, and where its agent answers peer probes if it does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeNode {
    pub name: String,
    pub region: String,
    pub address: Option<String>,
}

impl Store {
    /// Sets (or, with `None`, withdraws) where a node's agent answers peer probes.
    pub async fn set_probe_address(&self, node: &str, address: Option<&str>) -> Result<()> {
        sqlx::query(
            "INSERT INTO node_network (node_name, probe_address) VALUES ($1, $2) \
             ON CONFLICT (node_name) DO UPDATE SET probe_address = excluded.probe_address",
        )
        .bind(node)
        .bind(address)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The probe addresses of those of `nodes` that advertised one, by node name (what a job's
    /// workers are told of where their peers are).
    pub async fn probe_addresses(&self, nodes: &[String]) -> Result<HashMap<String, String>> {
        let mut found = HashMap::new();
        for chunk in nodes.chunks(BATCH) {
            let sql = format!(
                "SELECT node_name, probe_address FROM node_network \
                 WHERE probe_address IS NOT NULL AND node_name IN ({})",
                placeholders(chunk.len(), 1)
            );
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for node in chunk {
                query = query.bind(node.as_str());
            }
            for row in query.fetch_all(&self.pool).await? {
                found.insert(row.try_get("node_name")?, row.try_get("probe_address")?);
            }
        }
        Ok(found)
    }

    /// Every node whose last heartbeat is at or after `alive_since` (Unix ms), with its probe
    /// address, in no particular order.
    pub async fn probe_nodes(&self, alive_since: i64) -> Result<Vec<ProbeNode>> {
        let rows = sqlx::query(
            "SELECT n.name, n.region, p.probe_address FROM nodes n \
             LEFT JOIN node_network p ON p.node_name = n.name WHERE n.last_heartbeat >= $1",
        )
        .bind(alive_since)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(ProbeNode {
                    name: row.try_get("name")?,
                    region: row.try_get("region")?,
                    address: row.try_get("probe_address")?,
                })
            })
            .collect()
    }

    /// Upserts each pair's latest RTT, never replacing a later one (another replica may have
    /// written it), in a few statements for any number of pairs. Rows are written in key order, so
    /// two replicas flushing overlapping batches lock them in the same order. `samples` must hold
    /// each pair once.
    pub async fn record_rtts(&self, samples: &mut [RttSample]) -> Result<()> {
        samples.sort_unstable_by(|a, b| (&a.from, &a.to).cmp(&(&b.from, &b.to)));
        for chunk in samples.chunks(BATCH) {
            let sql = format!(
                "INSERT INTO probe_rtts (from_node, to_node, rtt_us, measured_at) VALUES {} \
                 ON CONFLICT (from_node, to_node) DO UPDATE SET rtt_us = excluded.rtt_us, \
                 measured_at = excluded.measured_at WHERE probe_rtts.measured_at <= excluded.measured_at",
                placeholders(chunk.len(), 4)
            );
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for s in chunk {
                query = query
                    .bind(s.from.as_str())
                    .bind(s.to.as_str())
                    .bind(s.rtt_us)
                    .bind(s.at);
            }
            query.execute(&self.pool).await?;
        }
        Ok(())
    }

    /// Upserts each node's latest measurements against the hub, like [`Store::record_rtts`]; a
    /// value a sample lacks keeps the stored one. `samples` must hold each node once.
    pub async fn record_links(&self, samples: &mut [LinkSample]) -> Result<()> {
        samples.sort_unstable_by(|a, b| a.node.cmp(&b.node));
        for chunk in samples.chunks(BATCH) {
            let sql = format!(
                "INSERT INTO node_network (node_name, hub_rtt_us, uplink_kbps, downlink_kbps, measured_at) \
                 VALUES {} ON CONFLICT (node_name) DO UPDATE SET \
                 hub_rtt_us = COALESCE(excluded.hub_rtt_us, node_network.hub_rtt_us), \
                 uplink_kbps = COALESCE(excluded.uplink_kbps, node_network.uplink_kbps), \
                 downlink_kbps = COALESCE(excluded.downlink_kbps, node_network.downlink_kbps), \
                 measured_at = excluded.measured_at \
                 WHERE node_network.measured_at IS NULL OR node_network.measured_at <= excluded.measured_at",
                placeholders(chunk.len(), 5)
            );
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for s in chunk {
                query = query
                    .bind(s.node.as_str())
                    .bind(s.hub_rtt_us)
                    .bind(s.uplink_kbps)
                    .bind(s.downlink_kbps)
                    .bind(s.at);
            }
            query.execute(&self.pool).await?;
        }
        Ok(())
    }

    /// Forgets RTTs measured before `before` (Unix ms); returns how many.
    pub async fn prune_rtts(&self, before: i64) -> Result<u64> {
        let done = sqlx::query("DELETE FROM probe_rtts WHERE measured_at < $1")
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// Every stored RTT measured after `since` (Unix ms).
    pub async fn rtts_since(&self, since: i64) -> Result<Vec<RttSample>> {
        let rows = sqlx::query(
            "SELECT from_node, to_node, rtt_us, measured_at FROM probe_rtts WHERE measured_at > $1",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(RttSample {
                    from: row.try_get("from_node")?,
                    to: row.try_get("to_node")?,
                    rtt_us: row.try_get("rtt_us")?,
                    at: row.try_get("measured_at")?,
                })
            })
            .collect()
    }

    /// Every node's measurements against the hub taken after `since` (Unix ms).
    pub async fn links_since(&self, since: i64) -> Result<Vec<LinkSample>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {LINK_COLUMNS} FROM node_network WHERE measured_at > $1"
        )))
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(link).collect()
    }

    /// The measurements against the hub of the nodes named, by node (a node that never reported
    /// any has none).
    pub async fn links_of(&self, nodes: &[&str]) -> Result<HashMap<String, LinkSample>> {
        let mut by_node = HashMap::new();
        for chunk in nodes.chunks(BATCH) {
            let list: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT {LINK_COLUMNS} FROM node_network WHERE measured_at IS NOT NULL AND node_name IN ({})",
                list.join(", ")
            );
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for node in chunk {
                query = query.bind(*node);
            }
            for row in query.fetch_all(&self.pool).await? {
                let sample = link(&row)?;
                by_node.insert(sample.node.clone(), sample);
            }
        }
        Ok(by_node)
    }
}

const LINK_COLUMNS: &str = "node_name, hub_rtt_us, uplink_kbps, downlink_kbps, measured_at";

fn link(row: &sqlx::any::AnyRow) -> Result<LinkSample> {
    Ok(LinkSample {
        node: row.try_get("node_name")?,
        hub_rtt_us: row.try_get("hub_rtt_us")?,
        uplink_kbps: row.try_get("uplink_kbps")?,
        downlink_kbps: row.try_get("downlink_kbps")?,
        at: row
            .try_get::<Option<i64>, _>("measured_at")?
            .unwrap_or_default(),
    })
}
