//! The statements behind the heartbeat path (see `crate::heartbeats`): heartbeat times written in
//! batches, and the fleet's live assignments read in one query.

use sqlx::{AssertSqlSafe, Row};

use super::{Result, Store, placeholders};
use crate::lifecycle::AssignmentPhase;

/// Most nodes one batched heartbeat statement updates: two parameters each, well inside the
/// parameter limits of both engines (SQLite 32,766, PostgreSQL 65,535).
const HEARTBEAT_BATCH: usize = 1_000;

/// A live assignment as the heartbeat path needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveAssignment {
    pub id: String,
    pub node_name: String,
    pub state: AssignmentPhase,
    /// When it was placed, or started when it did (Unix ms): the age the reconciliation's grace
    /// is measured from.
    pub since: i64,
}

impl Store {
    /// Moves each node's `last_heartbeat` forward to the time given for it, never back (a batch
    /// from another replica may have written a later one), in a few statements for any number of
    /// nodes. Rows are updated in name order, so two replicas flushing overlapping batches lock
    /// them in the same order.
    pub async fn record_heartbeats(&self, seen: &mut [(String, i64)]) -> Result<()> {
        seen.sort_unstable();
        for chunk in seen.chunks(HEARTBEAT_BATCH) {
            let sql = format!(
                "WITH seen(name, at) AS (VALUES {}) UPDATE nodes SET last_heartbeat = seen.at FROM seen \
                 WHERE nodes.name = seen.name AND nodes.last_heartbeat < seen.at",
                placeholders(chunk.len(), 2)
            );
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for (name, at) in chunk {
                query = query.bind(name.as_str()).bind(*at);
            }
            query.execute(&self.pool).await?;
        }
        Ok(())
    }

    /// Every live assignment of the fleet (placed and not yet ended, Stopping included).
    pub async fn live_assignments(&self) -> Result<Vec<LiveAssignment>> {
        let rows = sqlx::query(
            "SELECT id, node_name, state, created_at, started_at FROM assignments \
             WHERE state IN ('Assigned', 'Starting', 'Running', 'Stopping')",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let state: String = row.try_get("state")?;
                let created_at: i64 = row.try_get("created_at")?;
                let started_at: Option<i64> = row.try_get("started_at")?;
                Ok(LiveAssignment {
                    id: row.try_get("id")?,
                    node_name: row.try_get("node_name")?,
                    state: state.parse().map_err(super::StoreError::Corrupt)?,
                    since: started_at.unwrap_or(created_at),
                })
            })
            .collect()
    }
}
