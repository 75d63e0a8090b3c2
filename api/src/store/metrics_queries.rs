//! Reads behind the hub's metrics (see `crate::metrics`) that no other path needs: how long the
//! queue has been waiting. A job waits from its submission or, when an attempt failed and it was
//! put back, from that re-queueing: its `submitted_at` alone would make a retried job look as if it
//! had waited its whole life, and an alert on the oldest wait would fire for every long job that
//! failed once.

use sqlx::Row;

use super::{JobRow, Result, Store};

/// When a Pending job entered the queue this time: `submitted_at` for a job never placed (its
/// attempt is 0, since placing it counts the attempt), otherwise the latest event that moved it
/// into Pending from another phase (the `Retrying` event of a failed attempt). Falls back to
/// `submitted_at` when no such event exists. Shared by both queries below so they agree.
const QUEUED_SINCE: &str = "CASE WHEN j.attempt = 0 THEN j.submitted_at ELSE COALESCE(\
     (SELECT MAX(e.at) FROM job_events e WHERE e.job_id = j.id AND e.to_phase = 'Pending' \
      AND (e.from_phase IS NULL OR e.from_phase <> 'Pending')), \
     j.submitted_at) END";

impl Store {
    /// When the job that has waited longest in the queue entered it (Unix ms), or `None` when no
    /// job is Pending. One statement over the Pending jobs (found through the phase index); the
    /// event look-up runs only for retried ones.
    pub async fn oldest_queued_since(&self) -> Result<Option<i64>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT MIN({QUEUED_SINCE}) AS since FROM jobs j WHERE j.phase = 'Pending'"
        )))
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get::<Option<i64>, _>("since")?)
    }

    /// When `job` (Pending, about to be placed) entered the queue (Unix ms): the start of the wait
    /// the scheduling loop reports to `Metrics::observe_placement`. Costs no statement for a job
    /// never placed before, and one indexed read for a retry.
    pub async fn queued_since(&self, job: &JobRow) -> Result<i64> {
        if job.attempt == 0 {
            return Ok(job.submitted_at);
        }
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {QUEUED_SINCE} AS since FROM jobs j WHERE j.id = $1"
        )))
        .bind(&job.id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            Some(row) => row.try_get::<i64, _>("since")?,
            None => job.submitted_at,
        })
    }
}
