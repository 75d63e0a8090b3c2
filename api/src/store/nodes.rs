//! Nodes: registration (with its challenges), heartbeats and the registry view.

use sqlx::{Any, AssertSqlSafe, Transaction};
use std::collections::HashMap;

use crds::{
    agent::{BenchmarkReport, RegisterRequest},
    v1alpha1::GpuDevice,
};
use sqlx::Row;

use super::{Result, Store, StoreError, now_ms, rows::*};

/// What became of a registration.
#[derive(Debug)]
pub enum Registration {
    /// The node is registered under the new token.
    Registered(NodeRow),
    /// The challenge is unknown, already used, expired or another key's; why, for the agent.
    ChallengeRefused(&'static str),
    /// The name is bound to another public key; nothing changed.
    KeyMismatch,
}

impl Store {
    /// Remembers a registration challenge issued for `public_key`, valid until `expires_at` (Unix
    /// ms), and forgets expired ones: challenges are free to ask for, so the table must not grow
    /// with every request ever made.
    pub async fn issue_challenge(
        &self,
        challenge: &str,
        public_key: &str,
        expires_at: i64,
    ) -> Result<()> {
        let mut tx = self.write_tx().await?;
        sqlx::query("DELETE FROM registration_challenges WHERE expires_at <= $1")
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO registration_challenges (challenge, public_key, expires_at) VALUES ($1, $2, $3)",
        )
        .bind(challenge)
        .bind(public_key)
        .bind(expires_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Registers a node whose signature over `reg.challenge` the caller verified: consumes the
    /// challenge (it must exist, be unexpired and have been issued for `reg.public_key`) and
    /// registers or re-registers the node under `token_hash`, in one transaction, so a challenge
    /// registers at most once even when two requests race with it. Refusals change nothing: a
    /// challenge shown with the wrong key stays usable by its owner.
    pub async fn register_node(
        &self,
        reg: &RegisterRequest,
        token_hash: &str,
    ) -> Result<Registration> {
        let now = now_ms();
        let mut tx = self.write_tx().await?;
        let challenge = sqlx::query(
            "DELETE FROM registration_challenges WHERE challenge = $1 RETURNING public_key, expires_at",
        )
        .bind(&reg.challenge)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(challenge) = challenge else {
            return Ok(Registration::ChallengeRefused(
                "unknown or already used; ask for a new one",
            ));
        };
        if challenge.try_get::<String, _>("public_key")? != reg.public_key {
            return Ok(Registration::ChallengeRefused("issued for another key"));
        }
        if challenge.try_get::<i64, _>("expires_at")? <= now {
            return Ok(Registration::ChallengeRefused("expired; ask for a new one"));
        }
        if !upsert(&mut tx, reg, token_hash, now).await? {
            return Ok(Registration::KeyMismatch);
        }
        tx.commit().await?;
        self.registered(&reg.name).await
    }

    /// Registers a node, or re-registers it under a new token, without a challenge: for callers
    /// that establish the key's possession themselves. The name stays bound to its first key.
    pub async fn upsert_node(
        &self,
        reg: &RegisterRequest,
        token_hash: &str,
    ) -> Result<Registration> {
        let mut tx = self.write_tx().await?;
        if !upsert(&mut tx, reg, token_hash, now_ms()).await? {
            return Ok(Registration::KeyMismatch);
        }
        tx.commit().await?;
        self.registered(&reg.name).await
    }

    async fn registered(&self, name: &str) -> Result<Registration> {
        self.get_node(name)
            .await?
            .map(Registration::Registered)
            .ok_or_else(|| StoreError::Corrupt("registered node vanished".into()))
    }

    /// The public key a node registered with (compressed SEC1, hex), if the node exists and has
    /// one: what its signatures are checked against.
    pub async fn node_public_key(&self, name: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT public_key FROM nodes WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row
            .map(|r| r.try_get::<Option<String>, _>("public_key"))
            .transpose()?
            .flatten())
    }

    /// The node a token was issued to.
    pub async fn node_for_token(&self, token_hash: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT name FROM nodes WHERE token_hash = $1")
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("name")).transpose()?)
    }

    /// Records a heartbeat, and the node's new inventory when it sent one.
    pub async fn record_heartbeat(&self, name: &str, gpus: Option<&[GpuDevice]>) -> Result<()> {
        let now = now_ms();
        match gpus {
            Some(gpus) => {
                sqlx::query("UPDATE nodes SET last_heartbeat = $2, gpus = $3 WHERE name = $1")
                    .bind(name)
                    .bind(now)
                    .bind(to_json(gpus)?)
                    .execute(&self.pool)
                    .await?
            }
            None => {
                sqlx::query("UPDATE nodes SET last_heartbeat = $2 WHERE name = $1")
                    .bind(name)
                    .bind(now)
                    .execute(&self.pool)
                    .await?
            }
        };
        Ok(())
    }

    /// Stores the node's latest benchmark score. Heartbeats carry one rarely (after each
    /// measurement, about once a day), so this direct write does not put the steady-state
    /// heartbeat on the database.
    pub async fn record_benchmark(&self, name: &str, report: &BenchmarkReport) -> Result<()> {
        sqlx::query(
            "UPDATE nodes SET benchmark_tflops_milli = $2, benchmark_at = $3, \
             benchmark_finding = $4 WHERE name = $1",
        )
        .bind(name)
        .bind((report.tflops * 1000.0).round() as i64)
        .bind(report.measured_at)
        .bind(report.finding.as_deref())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// One node with its allocations.
    pub async fn get_node(&self, name: &str) -> Result<Option<NodeRow>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {NODE_COLUMNS} FROM nodes WHERE name = $1"
        )))
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let mut node = NodeRow::from_row(&row)?;
        node.allocated = self
            .allocations(Some(name))
            .await?
            .remove(name)
            .unwrap_or_default();
        Ok(Some(node))
    }

    /// A page of nodes by name, and the cursor of the next page.
    pub async fn list_nodes(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<(Vec<NodeRow>, Option<String>)> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {NODE_COLUMNS} FROM nodes WHERE ($1 IS NULL OR name > $1) ORDER BY name LIMIT $2"
        )))
        .bind(after)
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.pool)
        .await?;
        let mut nodes = rows
            .iter()
            .map(NodeRow::from_row)
            .collect::<Result<Vec<_>>>()?;
        let next = super::cut_page(&mut nodes, limit, |n| n.name.clone());
        self.attach_allocations(&mut nodes).await?;
        Ok((nodes, next))
    }

    /// Every node with its allocations: the scheduler's view of the fleet.
    pub async fn all_nodes(&self) -> Result<Vec<NodeRow>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {NODE_COLUMNS} FROM nodes ORDER BY name"
        )))
        .fetch_all(&self.pool)
        .await?;
        let mut nodes = rows
            .iter()
            .map(NodeRow::from_row)
            .collect::<Result<Vec<_>>>()?;
        self.attach_allocations(&mut nodes).await?;
        Ok(nodes)
    }

    async fn attach_allocations(&self, nodes: &mut [NodeRow]) -> Result<()> {
        let mut allocations = self.allocations(None).await?;
        for node in nodes {
            node.allocated = allocations.remove(&node.name).unwrap_or_default();
        }
        Ok(())
    }

    /// Allocated GPU UUIDs by node, for one node or all.
    async fn allocations(&self, node: Option<&str>) -> Result<HashMap<String, Vec<String>>> {
        let rows = sqlx::query(
            "SELECT node_name, gpu_uuid FROM gpu_allocations WHERE ($1 IS NULL OR node_name = $1) ORDER BY gpu_uuid",
        )
        .bind(node)
        .fetch_all(&self.pool)
        .await?;
        let mut by_node: HashMap<String, Vec<String>> = HashMap::new();
        for row in rows {
            by_node
                .entry(row.try_get("node_name")?)
                .or_default()
                .push(row.try_get("gpu_uuid")?);
        }
        Ok(by_node)
    }
}

/// Inserts or updates the node; false, changing nothing, when the name is bound to another key. The
/// condition is part of the upsert, so two registrations racing for a new name cannot both bind it.
/// A registration without an operator address keeps the one the node had: leaving the flag off
/// an agent's restart must not stop its pay.
async fn upsert(
    tx: &mut Transaction<'static, Any>,
    reg: &RegisterRequest,
    token_hash: &str,
    now: i64,
) -> Result<bool> {
    let done = sqlx::query(
        "INSERT INTO nodes (name, region, operator_address, price_micros, gpus, capabilities, simulated, token_hash, \
         registered_at, last_heartbeat, public_key) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $10) \
         ON CONFLICT (name) DO UPDATE SET region = excluded.region, \
         operator_address = COALESCE(excluded.operator_address, nodes.operator_address), \
         price_micros = excluded.price_micros, gpus = excluded.gpus, capabilities = excluded.capabilities, \
         simulated = excluded.simulated, token_hash = excluded.token_hash, last_heartbeat = excluded.last_heartbeat, \
         public_key = excluded.public_key \
         WHERE nodes.public_key IS NULL OR nodes.public_key = excluded.public_key",
    )
    .bind(&reg.name)
    .bind(&reg.region)
    .bind(&reg.operator_address)
    .bind(micros(reg.price_per_gpu_hour.micros())?)
    .bind(to_json(&reg.gpus)?)
    .bind(to_json(&reg.capabilities)?)
    .bind(i64::from(reg.simulated))
    .bind(token_hash)
    .bind(now)
    .bind(&reg.public_key)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() > 0)
}

fn to_json<T: serde::Serialize + ?Sized>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// Micro-units as the signed integer both engines store.
pub(super) fn micros(value: u64) -> Result<i64> {
    i64::try_from(value)
        .map_err(|_| StoreError::Corrupt(format!("amount {value} exceeds the store's range")))
}
