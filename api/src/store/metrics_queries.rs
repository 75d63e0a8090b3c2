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

/// The dashboards' reads (see `crate::metrics`): totals and breakdowns the database already holds,
/// so every replica reports the same values. Each is an aggregate over its tables; the settlement
/// ones read every receipt and leaf, which a scrape every 15–60 s affords.
impl Store {
    /// Failed jobs by the reason they failed with.
    pub async fn failed_job_reasons(&self) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "SELECT COALESCE(reason, '') AS reason, COUNT(*) AS n FROM jobs \
             WHERE phase = 'Failed' GROUP BY reason",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("reason")?, row.try_get("n")?)))
            .collect()
    }

    /// Failed attempts whose job was sent back to the queue, by the failure's reason. Counted from
    /// the nodes each failure excluded (one row per node, so distinct attempts are counted): every
    /// failed attempt but a Failed job's last one was retried.
    pub async fn retried_attempt_reasons(&self) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "SELECT reason, COUNT(*) AS n FROM (\
               SELECT DISTINCT e.job_id, e.attempt, e.reason FROM job_excluded_nodes e \
               JOIN jobs j ON j.id = e.job_id \
               WHERE NOT (j.phase = 'Failed' AND e.attempt = j.attempt)\
             ) retried GROUP BY reason",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("reason")?, row.try_get("n")?)))
            .collect()
    }

    /// Every GPU held by a live assignment, as (node, GPU UUID, the assignment's price per
    /// GPU-hour in micro-units).
    pub async fn allocated_gpu_prices(&self) -> Result<Vec<(String, String, i64)>> {
        let rows = sqlx::query(
            "SELECT g.node_name, g.gpu_uuid, a.price_micros FROM gpu_allocations g \
             JOIN assignments a ON a.id = g.assignment_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get("node_name")?,
                    row.try_get("gpu_uuid")?,
                    row.try_get("price_micros")?,
                ))
            })
            .collect()
    }

    /// Receipts (the latest of each assignment) by the region of their node and the settlement
    /// state of their latest sequence: `unsettled`, or the state of the batch that holds it. Also
    /// the money in each: a batch state holds what its leaves pay, `unsettled` what is receipted
    /// but in no batch yet. Rows are (region, state, receipts, micro-units).
    pub async fn receipt_settlement(&self) -> Result<Vec<(String, String, i64, i64)>> {
        let counts = sqlx::query(
            "SELECT COALESCE(n.region, '') AS region, COALESCE(b.state, 'unsettled') AS state, \
                    COUNT(*) AS n \
             FROM receipts r \
             LEFT JOIN nodes n ON n.name = r.node_name \
             LEFT JOIN settlement_leaves l ON l.assignment_id = r.assignment_id AND l.sequence = r.sequence \
             LEFT JOIN settlement_batches b ON b.id = l.batch_id \
             GROUP BY 1, 2",
        )
        .fetch_all(&self.pool)
        .await?;
        let batched = sqlx::query(
            "SELECT COALESCE(n.region, '') AS region, b.state AS state, \
                    CAST(SUM(l.paid_micros) AS BIGINT) AS amount \
             FROM settlement_leaves l \
             JOIN settlement_batches b ON b.id = l.batch_id \
             LEFT JOIN receipts r ON r.assignment_id = l.assignment_id \
             LEFT JOIN nodes n ON n.name = r.node_name \
             GROUP BY 1, 2",
        )
        .fetch_all(&self.pool)
        .await?;
        let unsettled = sqlx::query(
            "SELECT COALESCE(n.region, '') AS region, 'unsettled' AS state, \
                    CAST(SUM(r.amount_micros - COALESCE(p.paid, 0)) AS BIGINT) AS amount \
             FROM receipts r \
             LEFT JOIN nodes n ON n.name = r.node_name \
             LEFT JOIN (SELECT assignment_id, SUM(paid_micros) AS paid FROM settlement_leaves \
                        GROUP BY assignment_id) p ON p.assignment_id = r.assignment_id \
             GROUP BY 1",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut out: std::collections::BTreeMap<(String, String), (i64, i64)> = Default::default();
        for row in &counts {
            out.entry((row.try_get("region")?, row.try_get("state")?))
                .or_default()
                .0 = row.try_get("n")?;
        }
        for row in batched.iter().chain(&unsettled) {
            out.entry((row.try_get("region")?, row.try_get("state")?))
                .or_default()
                .1 = row.try_get::<Option<i64>, _>("amount")?.unwrap_or(0);
        }
        Ok(out
            .into_iter()
            .map(|((region, state), (n, amount))| (region, state, n, amount))
            .collect())
    }

    /// What finalized batches paid providers in all: (gross, fee, net) micro-units.
    pub async fn payout_totals(&self) -> Result<(i64, i64, i64)> {
        let row = sqlx::query(
            "SELECT CAST(COALESCE(SUM(gross), 0) AS BIGINT) AS gross, \
                    CAST(COALESCE(SUM(fee), 0) AS BIGINT) AS fee, \
                    CAST(COALESCE(SUM(net), 0) AS BIGINT) AS net \
             FROM settlement_payouts",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok((
            row.try_get("gross")?,
            row.try_get("fee")?,
            row.try_get("net")?,
        ))
    }

    /// Every slash as (state, reason, amount taken: a decimal string of micro-units, once posted).
    /// One row per slash: slashes are rare, and their amounts may exceed 64 bits.
    pub async fn slash_summaries(&self) -> Result<Vec<(String, String, Option<String>)>> {
        let rows = sqlx::query("SELECT state, reason, amount FROM settlement_slashes")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get("state")?,
                    row.try_get("reason")?,
                    row.try_get("amount")?,
                ))
            })
            .collect()
    }
}
