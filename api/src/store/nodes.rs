//! Nodes: registration, heartbeats and the registry view.

use sqlx::AssertSqlSafe;
use std::collections::HashMap;

use crds::{agent::RegisterRequest, v1alpha1::GpuDevice};
use sqlx::Row;

use super::{Result, Store, StoreError, now_ms, rows::*};

impl Store {
    /// Registers a node, or re-registers it under a new token (an agent restart); returns it.
    pub async fn upsert_node(&self, reg: &RegisterRequest, token_hash: &str) -> Result<NodeRow> {
        let now = now_ms();
        let gpus = to_json(&reg.gpus)?;
        let capabilities = to_json(&reg.capabilities)?;
        sqlx::query(
            "INSERT INTO nodes (name, region, operator_address, price_micros, gpus, capabilities, simulated, token_hash, \
             registered_at, last_heartbeat) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) \
             ON CONFLICT (name) DO UPDATE SET region = excluded.region, operator_address = excluded.operator_address, \
             price_micros = excluded.price_micros, gpus = excluded.gpus, capabilities = excluded.capabilities, \
             simulated = excluded.simulated, token_hash = excluded.token_hash, last_heartbeat = excluded.last_heartbeat",
        )
        .bind(&reg.name)
        .bind(&reg.region)
        .bind(&reg.operator_address)
        .bind(micros(reg.price_per_gpu_hour.micros())?)
        .bind(gpus)
        .bind(capabilities)
        .bind(i64::from(reg.simulated))
        .bind(token_hash)
        .bind(now)
        .execute(&self.pool)
        .await?;
        self.get_node(&reg.name)
            .await?
            .ok_or_else(|| StoreError::Corrupt("registered node vanished".into()))
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

fn to_json<T: serde::Serialize + ?Sized>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// Micro-units as the signed integer both engines store.
pub(super) fn micros(value: u64) -> Result<i64> {
    i64::try_from(value)
        .map_err(|_| StoreError::Corrupt(format!("amount {value} exceeds the store's range")))
}
