//! Leases: how several hub replicas on one database agree which of them runs the background loops,
//! and the fencing tokens that keep a replica which lost the lease from writing as if it had it.
//!
//! A lease is one row: who holds it, until when, and an epoch that grows by one whenever the holder
//! changes. Taking and renewing are the same single statement (an upsert whose update only applies
//! when the lease has expired or is already ours), so two replicas racing for it cannot both win,
//! on either engine. Expiry uses the callers' clocks, so replicas need clocks that agree to well
//! within the lease's TTL; correctness does not depend on it, because the writes that matter carry
//! a [`Fence`] that the database checks against the epoch it holds now.

use std::time::Duration;

use sqlx::{Any, Row, Transaction};

use super::{Result, Store};

/// Proof of leadership carried by a write: the write applies only while lease `lease` is still
/// held by `holder` at `epoch`. A replica that lost the lease (and maybe does not know it yet)
/// writes with an epoch the table no longer has, and its write changes nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fence {
    pub lease: String,
    pub holder: String,
    pub epoch: i64,
}

/// A lease as the database holds it now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub holder: String,
    pub epoch: i64,
    /// Unix milliseconds; from then on anyone may take it.
    pub expires_at: i64,
}

impl Store {
    /// Takes lease `name` for `holder`, or renews it, until `now + ttl` (Unix milliseconds), and
    /// returns its epoch; `None` when someone else holds it and it has not expired.
    ///
    /// One statement does it all, so it is atomic on both engines: the insert creates the lease at
    /// epoch 1, and on conflict the update applies only when the lease has expired or is already
    /// `holder`'s. The epoch moves on only when the holder changes — a renewal keeps it — which is
    /// what makes it a fencing token. On PostgreSQL the statement waits for any transaction that
    /// holds the lease's row through [`check_fence`], so an epoch never moves under a fenced write.
    pub async fn try_acquire(
        &self,
        name: &str,
        holder: &str,
        now: i64,
        ttl: Duration,
    ) -> Result<Option<i64>> {
        let ttl = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        let row = sqlx::query(
            "INSERT INTO leases (name, holder, epoch, expires_at) VALUES ($1, $2, 1, $4) \
             ON CONFLICT (name) DO UPDATE SET \
             epoch = CASE WHEN leases.holder = excluded.holder THEN leases.epoch ELSE leases.epoch + 1 END, \
             holder = excluded.holder, expires_at = excluded.expires_at \
             WHERE leases.expires_at <= $3 OR leases.holder = $2 \
             RETURNING epoch",
        )
        .bind(name)
        .bind(holder)
        .bind(now)
        .bind(now.saturating_add(ttl))
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            Some(row) => Some(row.try_get("epoch")?),
            None => None,
        })
    }

    /// Gives lease `name` up if `holder` has it, by expiring it now, so a successor takes it on its
    /// next try instead of waiting out the TTL. The epoch stays: the successor's takes it on.
    /// Returns whether `holder` had it.
    pub async fn release(&self, name: &str, holder: &str) -> Result<bool> {
        let released = sqlx::query(
            "UPDATE leases SET expires_at = $3 WHERE name = $1 AND holder = $2 AND expires_at > $3",
        )
        .bind(name)
        .bind(holder)
        .bind(super::now_ms())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(released > 0)
    }

    /// Lease `name` as it is now, expired or not; `None` if nobody ever took it.
    pub async fn lease(&self, name: &str) -> Result<Option<Lease>> {
        let row = sqlx::query("SELECT holder, epoch, expires_at FROM leases WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| {
            Ok(Lease {
                holder: row.try_get("holder")?,
                epoch: row.try_get("epoch")?,
                expires_at: row.try_get("expires_at")?,
            })
        })
        .transpose()
    }
}

/// Whether a write transaction may go on under `fence` (always, without one). Call it first in the
/// transaction: it is a no-op update of the lease's row, so on PostgreSQL it also locks that row
/// until commit and a successor's [`Store::try_acquire`] waits for the write to finish — the write
/// is then entirely before the new epoch, never interleaved with the new leader's. (SQLite's
/// `BEGIN IMMEDIATE` already runs one writer at a time.) Lease row first in every fenced
/// transaction keeps the lock order the same everywhere.
pub(super) async fn check_fence(
    tx: &mut Transaction<'static, Any>,
    fence: Option<&Fence>,
) -> Result<bool> {
    let Some(fence) = fence else {
        return Ok(true);
    };
    let held = sqlx::query(
        "UPDATE leases SET epoch = epoch WHERE name = $1 AND holder = $2 AND epoch = $3",
    )
    .bind(&fence.lease)
    .bind(&fence.holder)
    .bind(fence.epoch)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(held > 0)
}
