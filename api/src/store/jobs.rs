//! Jobs: submission (idempotent), reads, lists and cancellation; how a failed attempt ends its job
//! or sends it back to Pending for another attempt; the hub's own maxRuntime deadline; and the one
//! way a job's phase changes, [`transition`] (and [`place_attempts`] for placements), each a
//! compare-and-set on the phases a [`JobTransition`] may leave, logged as an event.

use crds::v1alpha1::{ComputeJobSpec, JobPhase};
use sqlx::AssertSqlSafe;
use sqlx::{Any, Row, Transaction};

use super::{
    Backend, Result, Store, StoreError, is_unique_violation, nodes::micros, now_ms, rows::*,
};
use crate::lifecycle::{AssignmentPhase, FailureReason, JobTransition};

/// A job to insert.
#[derive(Clone, Debug)]
pub struct NewJob {
    pub id: String,
    pub tenant_id: String,
    pub name: Option<String>,
    pub spec: ComputeJobSpec,
    pub idempotency_key: Option<String>,
    /// A digest of the request body, to tell a retry from a different request under the same key.
    pub request_hash: String,
}

/// What a submission did.
#[derive(Clone, Debug, PartialEq)]
pub enum SubmitOutcome {
    /// A new job was created.
    Created(JobRow),
    /// The idempotency key was used before with the same body: this is that job.
    Existing(JobRow),
    /// The idempotency key was used before with a different body.
    KeyReused { existing_id: String },
}

/// What a cancellation did.
#[derive(Clone, Debug, PartialEq)]
pub enum CancelOutcome {
    Cancelled(JobRow),
    /// The job had already ended; nothing changed.
    AlreadyFinal(JobRow),
    NotFound,
}

impl Store {
    /// Inserts a job in phase Pending, with its first event, or finds the job an earlier request
    /// under the same idempotency key created.
    pub async fn submit_job(&self, job: NewJob) -> Result<SubmitOutcome> {
        let now = now_ms();
        let spec =
            serde_json::to_string(&job.spec).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        const INSERT_JOB: &str = "INSERT INTO jobs (id, tenant_id, name, spec, phase, reason, message, submitted_at, \
             idempotency_key, request_hash) \
             VALUES ($1, $2, $3, $4, 'Pending', 'Submitted', 'waiting to be scheduled', $5, $6, $7)";
        let inserted = match self.backend {
            // One statement, so no transaction around it: the job and its first event are written
            // by a data-modifying CTE, atomically, and the row comes back in the same round trip.
            // Submissions are the hub's busiest write, and each round trip saved is throughput.
            Backend::Postgres => {
                let sql = format!(
                    "WITH job AS ({INSERT_JOB} RETURNING {JOB_COLUMNS}), \
                     event AS (INSERT INTO job_events (job_id, at, from_phase, to_phase, reason, message, attempt, node) \
                     SELECT id, submitted_at, NULL, 'Pending', 'Submitted', NULL, 0, NULL FROM job) \
                     SELECT {JOB_COLUMNS} FROM job"
                );
                bind_new_job(sqlx::query(AssertSqlSafe(sql)), &job, &spec, now)
                    .fetch_one(&self.pool)
                    .await
                    .map(|row| JobRow::from_row(&row))
            }
            // SQLite has no data-modifying CTEs: the insert and the event share a transaction.
            Backend::Sqlite => {
                let mut tx = self.write_tx().await?;
                let sql = format!("{INSERT_JOB} RETURNING {JOB_COLUMNS}");
                match bind_new_job(sqlx::query(AssertSqlSafe(sql)), &job, &spec, now)
                    .fetch_one(&mut *tx)
                    .await
                {
                    Ok(row) => {
                        insert_event(
                            &mut tx,
                            &job.id,
                            now,
                            None,
                            JobPhase::Pending,
                            "Submitted",
                            None,
                            0,
                            None,
                        )
                        .await?;
                        tx.commit().await?;
                        Ok(JobRow::from_row(&row))
                    }
                    Err(e) => Err(e),
                }
            }
        };
        match inserted {
            Ok(row) => Ok(SubmitOutcome::Created(row?)),
            Err(e) if is_unique_violation(&e) && job.idempotency_key.is_some() => {
                self.existing_for_key(&job).await
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn existing_for_key(&self, job: &NewJob) -> Result<SubmitOutcome> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS}, request_hash FROM jobs WHERE tenant_id = $1 AND idempotency_key = $2"
        )))
        .bind(&job.tenant_id)
        .bind(&job.idempotency_key)
        .fetch_one(&self.pool)
        .await?;
        let hash: Option<String> = sqlx::Row::try_get(&row, "request_hash")?;
        let existing = JobRow::from_row(&row)?;
        Ok(if hash.as_deref() == Some(job.request_hash.as_str()) {
            SubmitOutcome::Existing(existing)
        } else {
            SubmitOutcome::KeyReused {
                existing_id: existing.id,
            }
        })
    }

    /// The job `tenant_id` submitted under the idempotency `key`, if any.
    pub async fn job_for_key(&self, tenant_id: &str, key: &str) -> Result<Option<JobRow>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE tenant_id = $1 AND idempotency_key = $2"
        )))
        .bind(tenant_id)
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(JobRow::from_row).transpose()
    }

    /// A job by id; with a tenant, only that tenant's job.
    pub async fn get_job(&self, tenant_id: Option<&str>, id: &str) -> Result<Option<JobRow>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1 AND ($2 IS NULL OR tenant_id = $2)"
        )))
        .bind(id)
        .bind(tenant_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(JobRow::from_row).transpose()
    }

    /// A page of a tenant's jobs, newest first, and the cursor of the next page.
    pub async fn list_jobs(
        &self,
        tenant_id: &str,
        phase: Option<JobPhase>,
        after: Option<&str>,
        limit: u32,
    ) -> Result<(Vec<JobRow>, Option<String>)> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE tenant_id = $1 AND ($2 IS NULL OR phase = $2) \
             AND ($3 IS NULL OR id < $3) ORDER BY id DESC LIMIT $4"
        )))
        .bind(tenant_id)
        .bind(phase.map(JobPhase::as_str))
        .bind(after)
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.pool)
        .await?;
        let mut jobs = rows
            .iter()
            .map(JobRow::from_row)
            .collect::<Result<Vec<_>>>()?;
        let next = super::cut_page(&mut jobs, limit, |j| j.id.clone());
        Ok((jobs, next))
    }

    /// Pending jobs, oldest first (after the job `after`, when given): the scheduler's queue.
    pub async fn pending_jobs(&self, after: Option<&str>, limit: u32) -> Result<Vec<JobRow>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE phase = 'Pending' AND ($1 IS NULL OR id > $1) \
             ORDER BY id ASC LIMIT $2"
        )))
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(JobRow::from_row).collect()
    }

    /// Nodes `job_id` failed on: the scheduler never places the job there again.
    pub async fn excluded_nodes(&self, job_id: &str) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT node_name FROM job_excluded_nodes WHERE job_id = $1 ORDER BY node_name",
        )
        .bind(job_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| Ok(sqlx::Row::try_get(row, "node_name")?))
            .collect()
    }

    /// Running jobs whose deadline (start + maxRuntime) passed before `now`, oldest deadline first.
    pub async fn overdue_jobs(&self, now: i64, limit: u32) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT id FROM jobs WHERE phase = 'Running' AND deadline_at < $1 ORDER BY deadline_at LIMIT $2",
        )
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| Ok(sqlx::Row::try_get(row, "id")?))
            .collect()
    }

    /// Fails a Running job whose deadline passed before `now` (reason `DeadlineExceeded`, never
    /// retried: another attempt would run just as long) and tells its workers to stop. Returns
    /// false, changing nothing, when the job is no longer Running past its deadline (it ended, or
    /// a new attempt started meanwhile).
    pub async fn expire_job(&self, job_id: &str, now: i64) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let Some(job) = lock_job(&mut tx, job_id).await? else {
            return Ok(false);
        };
        if job.phase != JobPhase::Running || job.deadline_at.is_none_or(|d| d >= now) {
            return Ok(false);
        }
        let limit = job.spec.max_runtime.map_or_else(
            || "its maxRuntime".to_string(),
            |d| format!("maxRuntime {d}"),
        );
        let failure = AttemptFailure {
            reason: FailureReason::DeadlineExceeded,
            detail: format!("the job ran longer than its {limit}; its workers are stopped"),
            nodes: Vec::new(),
        };
        let moved = fail_attempt(&mut tx, &job, &failure, now).await?;
        tx.commit().await?;
        Ok(moved.is_some())
    }

    /// Records the aggregator chosen for a federated job's current placement.
    pub async fn set_aggregator(&self, job_id: &str, node: Option<&str>) -> Result<()> {
        sqlx::query("UPDATE jobs SET aggregator = $2 WHERE id = $1")
            .bind(job_id)
            .bind(node)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records why a pending job still waits (only when the explanation changed).
    pub async fn set_waiting_reason(
        &self,
        job_id: &str,
        reason: &str,
        message: &str,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE jobs SET reason = $2, message = $3 WHERE id = $1 AND phase = 'Pending' \
             AND (reason IS NULL OR reason <> $2 OR message IS NULL OR message <> $3)",
        )
        .bind(job_id)
        .bind(reason)
        .bind(message)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Cancels a tenant's job: a final job is left as it is; live workers are told to stop.
    pub async fn cancel_job(&self, tenant_id: &str, id: &str) -> Result<CancelOutcome> {
        let mut tx = self.write_tx().await?;
        let Some(job) = fetch_job(&mut tx, id)
            .await?
            .filter(|j| j.tenant_id == tenant_id)
        else {
            return Ok(CancelOutcome::NotFound);
        };
        if JobTransition::Cancel.apply(job.phase).is_none() {
            return Ok(CancelOutcome::AlreadyFinal(job));
        }
        let cancelled = transition(
            &mut tx,
            &job,
            JobTransition::Cancel,
            "cancelled by the user",
            None,
            now_ms(),
        )
        .await?;
        if !cancelled {
            // Another writer changed the job between our read and write: report what it is now.
            drop(tx);
            return match self.get_job(Some(tenant_id), id).await? {
                Some(j) if j.phase.is_final() => Ok(CancelOutcome::AlreadyFinal(j)),
                Some(_) => Box::pin(self.cancel_job(tenant_id, id)).await,
                None => Ok(CancelOutcome::NotFound),
            };
        }
        let row = fetch_job(&mut tx, id)
            .await?
            .ok_or_else(|| StoreError::Corrupt("cancelled job vanished".into()))?;
        tx.commit().await?;
        Ok(CancelOutcome::Cancelled(row))
    }

    /// A job's event log, oldest first.
    pub async fn job_events(&self, job_id: &str) -> Result<Vec<EventRow>> {
        let rows = sqlx::query(
            "SELECT at, from_phase, to_phase, reason, message, attempt, node FROM job_events WHERE job_id = $1 ORDER BY id",
        )
        .bind(job_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(EventRow::from_row).collect()
    }

    /// One page of a job's events, oldest first, each with its position: up to `limit` after the
    /// event at position `after` (events are numbered in the order they were written), and the
    /// next page's cursor.
    pub async fn job_events_page(
        &self,
        job_id: &str,
        after: Option<i64>,
        limit: u32,
    ) -> Result<(Vec<(i64, EventRow)>, Option<String>)> {
        let rows = sqlx::query(
            "SELECT id, at, from_phase, to_phase, reason, message, attempt, node FROM job_events \
             WHERE job_id = $1 AND id > $2 ORDER BY id LIMIT $3",
        )
        .bind(job_id)
        .bind(after.unwrap_or(0))
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.pool)
        .await?;
        let mut page = rows
            .iter()
            .map(|row| Ok((row.try_get::<i64, _>("id")?, EventRow::from_row(row)?)))
            .collect::<Result<Vec<_>>>()?;
        let next = super::cut_page(&mut page, limit, |(id, _)| id.to_string());
        Ok((page, next))
    }

    /// Number of jobs in each phase (for metrics).
    pub async fn job_phase_counts(&self) -> Result<Vec<(JobPhase, u64)>> {
        let rows = sqlx::query("SELECT phase, COUNT(*) AS n FROM jobs GROUP BY phase")
            .fetch_all(&self.pool)
            .await?;
        let mut counts = Vec::new();
        for row in rows {
            let phase: String = sqlx::Row::try_get(&row, "phase")?;
            let n: i64 = sqlx::Row::try_get(&row, "n")?;
            counts.push((phase.parse().map_err(StoreError::Corrupt)?, n.max(0) as u64));
        }
        Ok(counts)
    }
}

/// Locks a job's row for the rest of the transaction and reads it. Every writer that moves a job
/// on from its assignments takes the job's row first (then the assignments), so writers on one job
/// apply one after the other, each seeing what the others committed; SQLite's `BEGIN IMMEDIATE`
/// already serializes them, PostgreSQL needs the row lock.
pub(super) async fn lock_job(
    tx: &mut Transaction<'static, Any>,
    id: &str,
) -> Result<Option<JobRow>> {
    sqlx::query("UPDATE jobs SET phase = phase WHERE id = $1")
        .bind(id)
        .execute(&mut **tx)
        .await?;
    fetch_job(tx, id).await
}

pub(super) async fn fetch_job(
    tx: &mut Transaction<'static, Any>,
    id: &str,
) -> Result<Option<JobRow>> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?;
    row.as_ref().map(JobRow::from_row).transpose()
}

/// Marks every live assignment of a job Stopping, so its agent is told to stop it.
pub(super) async fn stop_live_assignments(
    tx: &mut Transaction<'static, Any>,
    job_id: &str,
) -> Result<()> {
    sqlx::query(
        "UPDATE assignments SET state = $2 WHERE job_id = $1 AND state IN ('Assigned', 'Starting', 'Running')",
    )
    .bind(job_id)
    .bind(AssignmentPhase::Stopping.as_str())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Why a job attempt failed, as [`fail_attempt`] records it.
#[derive(Clone, Debug)]
pub(super) struct AttemptFailure {
    /// The machine-readable reason; it also says whether another attempt could do better.
    pub reason: FailureReason,
    /// What happened, for people (`worker 0 on gn-a failed: … (exit code 3)`).
    pub detail: String,
    /// The nodes the attempt failed on; the job is never placed on them again.
    pub nodes: Vec<String>,
}

/// Ends a job's current attempt after `failure`, in the caller's transaction (which holds the job's
/// row, see [`lock_job`]): the failed nodes are excluded from the job's future placements, the
/// attempt's remaining workers are told to stop, and the job either goes back to Pending (reason
/// `Retrying`) when `spec.retry.maxAttempts` allows another attempt, or Failed with the failure's
/// reason. Every change is logged: the failure itself, then the move to Pending or Failed.
/// Returns the phase the job moved to, or None when it was no longer where `job` says (a
/// concurrent writer moved it first, and nothing was changed).
pub(super) async fn fail_attempt(
    tx: &mut Transaction<'static, Any>,
    job: &JobRow,
    failure: &AttemptFailure,
    now: i64,
) -> Result<Option<JobPhase>> {
    if !matches!(
        job.phase,
        JobPhase::Scheduled | JobPhase::Running | JobPhase::Verifying
    ) {
        return Ok(None);
    }
    let max = job.spec.max_attempts();
    // A federated worker must run where its data is: once that node failed, no other can take it.
    let data_site = failure.nodes.iter().find(|node| {
        job.spec
            .placement
            .as_ref()
            .and_then(|p| p.data_locality.as_ref())
            .is_some_and(|sites| sites.iter().any(|s| &s.node == *node))
    });
    let node = failure.nodes.first().map(String::as_str);
    let retryable = failure.reason.retryable();
    if retryable && job.attempt < max && data_site.is_none() {
        let message = format!(
            "attempt {} of {max} failed: {}; attempt {} will be placed on another node",
            job.attempt,
            failure.detail,
            job.attempt + 1
        );
        let step = JobTransition::Retry;
        if !move_job(tx, job, step, &message, now).await? {
            return Ok(None);
        }
        exclude_nodes(tx, job, failure, now).await?;
        // The failure itself, in the phase the job was in, then the move it caused.
        insert_event(
            tx,
            &job.id,
            now,
            Some(job.phase),
            job.phase,
            failure.reason.as_str(),
            Some(&failure.detail),
            job.attempt,
            node,
        )
        .await?;
        insert_event(
            tx,
            &job.id,
            now,
            Some(job.phase),
            step.to(),
            step.reason(),
            Some(&message),
            job.attempt,
            node,
        )
        .await?;
        return Ok(Some(step.to()));
    }
    let message = match data_site {
        Some(site) => format!(
            "{}; not retried: the job's data lives on {site}",
            failure.detail
        ),
        None if retryable && max > 1 => format!(
            "{} (attempt {} of {max}: no attempts left)",
            failure.detail, job.attempt
        ),
        None => failure.detail.clone(),
    };
    let step = JobTransition::Fail(failure.reason);
    let moved = transition(tx, job, step, &message, node, now).await?;
    if moved {
        exclude_nodes(tx, job, failure, now).await?;
    }
    Ok(moved.then_some(step.to()))
}

/// Records the nodes an attempt failed on (the first failure on a node is the one kept).
async fn exclude_nodes(
    tx: &mut Transaction<'static, Any>,
    job: &JobRow,
    failure: &AttemptFailure,
    now: i64,
) -> Result<()> {
    for node in &failure.nodes {
        sqlx::query(
            "INSERT INTO job_excluded_nodes (job_id, node_name, attempt, reason, at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (job_id, node_name) DO NOTHING",
        )
        .bind(&job.id)
        .bind(node)
        .bind(i64::from(job.attempt))
        .bind(failure.reason.as_str())
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Moves `job`, in the phase this transaction read it in, on by `step`, and logs the move as an
/// event. Returns false, changing nothing, when `step` may not leave the job's phase or another
/// writer moved the job first.
pub(super) async fn transition(
    tx: &mut Transaction<'static, Any>,
    job: &JobRow,
    step: JobTransition,
    message: &str,
    node: Option<&str>,
    now: i64,
) -> Result<bool> {
    if !move_job(tx, job, step, message, now).await? {
        return Ok(false);
    }
    insert_event(
        tx,
        &job.id,
        now,
        Some(job.phase),
        step.to(),
        step.reason(),
        Some(message),
        job.attempt,
        node,
    )
    .await?;
    Ok(true)
}

/// `('Scheduled', 'Running')`: the phases `step` may leave, as SQL for a compare-and-set's
/// `phase IN …`, so the database refuses exactly what the type does. Phase names are fixed
/// identifiers, never input.
fn leaves_sql(step: JobTransition) -> String {
    let phases: Vec<String> = step
        .from_phases()
        .iter()
        .map(|phase| format!("'{}'", phase.as_str()))
        .collect();
    format!("({})", phases.join(", "))
}

/// [`transition`] without its event, for a caller that logs more than the move (a retry logs the
/// failure first). The compare-and-set is on the phase `job` was read in and on the phases `step`
/// may leave. A job that starts running gets its maxRuntime deadline; one whose attempt ends
/// without its workers has them told to stop; a retried job's attempt times are cleared.
async fn move_job(
    tx: &mut Transaction<'static, Any>,
    job: &JobRow,
    step: JobTransition,
    message: &str,
    now: i64,
) -> Result<bool> {
    let Some(to) = step.apply(job.phase) else {
        return Ok(false);
    };
    // A job that ends straight from Scheduled (its workers finished before all reported running)
    // still gets a start time, so its conditions and usage read sensibly.
    let started = match step {
        JobTransition::Start => true,
        JobTransition::Succeed | JobTransition::Fail(_) => job.phase == JobPhase::Scheduled,
        _ => false,
    };
    // The placement times go with the attempt: a Pending job is not scheduled, and the next
    // attempt's start (and deadline) are its own.
    let cleared = step == JobTransition::Retry;
    let changed = sqlx::query(AssertSqlSafe(format!(
        "UPDATE jobs SET phase = $3, reason = $4, message = $5, \
         scheduled_at = CASE WHEN $9 = 1 THEN NULL ELSE scheduled_at END, \
         started_at = CASE WHEN $9 = 1 THEN NULL WHEN $6 = 1 THEN COALESCE(started_at, $7) ELSE started_at END, \
         deadline_at = CASE WHEN $9 = 1 THEN NULL ELSE deadline_at END, \
         finished_at = CASE WHEN $8 = 1 THEN $7 ELSE finished_at END \
         WHERE id = $1 AND phase = $2 AND phase IN {}",
        leaves_sql(step)
    )))
    .bind(&job.id)
    .bind(job.phase.as_str())
    .bind(to.as_str())
    .bind(step.reason())
    .bind(message)
    .bind(i64::from(started))
    .bind(now)
    .bind(i64::from(to.is_final()))
    .bind(i64::from(cleared))
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if changed == 0 {
        return Ok(false);
    }
    if step == JobTransition::Start
        && let Some(limit) = job.spec.max_runtime
    {
        let limit_ms =
            i64::try_from(std::time::Duration::from(limit).as_millis()).unwrap_or(i64::MAX);
        // The attempt's start is now unless it was recorded earlier (placement clears it).
        let deadline = job.started_at.unwrap_or(now).saturating_add(limit_ms);
        sqlx::query("UPDATE jobs SET deadline_at = $2 WHERE id = $1")
            .bind(&job.id)
            .bind(deadline)
            .execute(&mut **tx)
            .await?;
    }
    if step.stops_workers() {
        stop_live_assignments(tx, &job.id).await?;
    }
    Ok(true)
}

/// One job's placement, as [`place_attempts`] moves it to Scheduled.
#[derive(Clone, Debug)]
pub(super) struct PlaceAttempt<'a> {
    pub job_id: &'a str,
    /// The attempt the job was read at while Pending (0 before its first placement); the
    /// placement is attempt + 1.
    pub attempt: u32,
    /// The attempt's price per GPU-hour.
    pub price_micros: u64,
    /// What the job's message and event say of the placement (`2 workers on gn-a, gn-b`).
    pub message: &'a str,
    /// The node the event names (the first worker's).
    pub node: Option<&'a str>,
}

/// A job [`place_attempts`] moved to Scheduled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Placed {
    /// The job's checkpoint as the attempt was placed: what its workers resume from.
    pub resume_checkpoint: Option<String>,
}

/// Moves each job of `batch` that is still Pending at its attempt to Scheduled for a new attempt
/// ([`JobTransition::Place`]), in the caller's transaction: one compare-and-set per job (which
/// also clears the previous attempt's times and records the price), then one event per job moved,
/// in multi-row inserts. Returns, per job, None when it was no longer Pending at that attempt
/// (nothing written for it), else the checkpoint its new attempt resumes from. The caller writes
/// the assignments and GPU allocations in the same transaction.
pub(super) async fn place_attempts(
    tx: &mut Transaction<'static, Any>,
    batch: &[PlaceAttempt<'_>],
    now: i64,
) -> Result<Vec<Option<Placed>>> {
    /// Most events one multi-row insert carries (8 parameters each: far inside both engines'
    /// parameter limits).
    const EVENTS_PER_INSERT: usize = 500;
    let step = JobTransition::Place;
    let mut placed = Vec::with_capacity(batch.len());
    for job in batch {
        let row = sqlx::query(AssertSqlSafe(format!(
            "UPDATE jobs SET phase = $3, attempt = attempt + 1, scheduled_at = $4, started_at = NULL, \
             deadline_at = NULL, price_micros = $5, reason = $6, message = $7 \
             WHERE id = $1 AND attempt = $2 AND phase IN {} RETURNING checkpoint_uri",
            leaves_sql(step)
        )))
        .bind(job.job_id)
        .bind(i64::from(job.attempt))
        .bind(step.to().as_str())
        .bind(now)
        .bind(micros(job.price_micros)?)
        .bind(step.reason())
        .bind(job.message)
        .fetch_optional(&mut **tx)
        .await?;
        placed.push(
            row.map(|row| {
                Ok::<_, StoreError>(Placed {
                    resume_checkpoint: row.try_get("checkpoint_uri")?,
                })
            })
            .transpose()?,
        );
    }
    // Place leaves Pending only, so every job its compare-and-set matched was Pending.
    let from = JobPhase::Pending;
    debug_assert_eq!(step.from_phases(), [from]);
    let moved: Vec<&PlaceAttempt<'_>> = batch
        .iter()
        .zip(&placed)
        .filter(|(_, placed)| placed.is_some())
        .map(|(job, _)| job)
        .collect();
    for chunk in moved.chunks(EVENTS_PER_INSERT) {
        let mut query = sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO job_events (job_id, at, from_phase, to_phase, reason, message, attempt, node) VALUES {}",
            super::placeholders(chunk.len(), 8)
        )));
        for job in chunk {
            query = query
                .bind(job.job_id)
                .bind(now)
                .bind(from.as_str())
                .bind(step.to().as_str())
                .bind(step.reason())
                .bind(job.message)
                .bind(i64::from(job.attempt + 1))
                .bind(job.node);
        }
        query.execute(&mut **tx).await?;
    }
    Ok(placed)
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn insert_event(
    tx: &mut Transaction<'static, Any>,
    job_id: &str,
    at: i64,
    from: Option<JobPhase>,
    to: JobPhase,
    reason: &str,
    message: Option<&str>,
    attempt: u32,
    node: Option<&str>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO job_events (job_id, at, from_phase, to_phase, reason, message, attempt, node) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(job_id)
    .bind(at)
    .bind(from.map(JobPhase::as_str))
    .bind(to.as_str())
    .bind(reason)
    .bind(message)
    .bind(i64::from(attempt))
    .bind(node)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Binds a new job's values to [`Store::submit_job`]'s insert, in its parameter order.
fn bind_new_job<'q>(
    query: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments>,
    job: &'q NewJob,
    spec: &'q str,
    now: i64,
) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments> {
    query
        .bind(&job.id)
        .bind(&job.tenant_id)
        .bind(&job.name)
        .bind(spec)
        .bind(now)
        .bind(&job.idempotency_key)
        .bind(&job.request_hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh SQLite store; the directory must outlive it.
    async fn store() -> (Store, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("hub.db").display());
        (Store::connect(&url).await.unwrap(), dir)
    }

    async fn submit(store: &Store, id: &str) {
        let spec = serde_json::from_value(serde_json::json!({
            "kind": "Batch",
            "workload": {"builtin": {"sleep": {"durationSeconds": 1}}},
            "resources": {"workers": 1, "gpusPerWorker": 1},
            "pricing": {"maxPricePerGpuHour": "5.00"}
        }))
        .unwrap();
        let job = NewJob {
            id: id.into(),
            tenant_id: store.ensure_tenant("team-a").await.unwrap(),
            name: None,
            spec,
            idempotency_key: None,
            request_hash: String::new(),
        };
        assert!(matches!(
            store.submit_job(job).await.unwrap(),
            SubmitOutcome::Created(_)
        ));
    }

    fn placement(job_id: &str, attempt: u32) -> PlaceAttempt<'_> {
        PlaceAttempt {
            job_id,
            attempt,
            price_micros: 1_500_000,
            message: "1 worker on gn-a",
            node: Some("gn-a"),
        }
    }

    async fn place(store: &Store, batch: &[PlaceAttempt<'_>]) -> Vec<Option<Placed>> {
        let mut tx = store.write_tx().await.unwrap();
        let placed = place_attempts(&mut tx, batch, 1_000).await.unwrap();
        tx.commit().await.unwrap();
        placed
    }

    #[tokio::test]
    async fn placing_moves_each_pending_job_once_and_logs_the_move() {
        let (store, _dir) = store().await;
        for id in ["job-a", "job-b", "job-c"] {
            submit(&store, id).await;
        }
        sqlx::query("UPDATE jobs SET checkpoint_uri = 's3://ckpt/7', checkpoint_step = 7, checkpoint_at = 1 WHERE id = 'job-c'")
            .execute(&store.pool)
            .await
            .unwrap();

        // job-b was read at an attempt it is no longer at: it is left alone.
        let batch = [
            placement("job-a", 0),
            placement("job-b", 3),
            placement("job-c", 0),
        ];
        let resumes = |placed: Vec<Option<Placed>>| -> Vec<Option<Option<String>>> {
            placed
                .into_iter()
                .map(|p| p.map(|p| p.resume_checkpoint))
                .collect()
        };
        assert_eq!(
            resumes(place(&store, &batch).await),
            [Some(None), None, Some(Some("s3://ckpt/7".to_string()))]
        );

        let a = store.get_job(None, "job-a").await.unwrap().unwrap();
        assert_eq!(
            (a.phase, a.attempt, a.scheduled_at, a.price_micros),
            (JobPhase::Scheduled, 1, Some(1_000), Some(1_500_000))
        );
        assert_eq!(
            (a.reason.as_deref(), a.message.as_deref()),
            (Some("Placed"), Some("1 worker on gn-a"))
        );
        let events = store.job_events("job-a").await.unwrap();
        assert_eq!(events.len(), 2, "{events:?}");
        assert_eq!(
            events[1],
            EventRow {
                at: 1_000,
                from_phase: Some(JobPhase::Pending),
                to_phase: JobPhase::Scheduled,
                reason: "Placed".into(),
                message: Some("1 worker on gn-a".into()),
                attempt: 1,
                node: Some("gn-a".into()),
            }
        );
        let b = store.get_job(None, "job-b").await.unwrap().unwrap();
        assert_eq!((b.phase, b.attempt), (JobPhase::Pending, 0));
        assert_eq!(store.job_events("job-b").await.unwrap().len(), 1);

        // A placement only ever leaves Pending: placing job-a again changes nothing.
        assert_eq!(
            resumes(place(&store, &[placement("job-a", 1)]).await),
            [None]
        );
        assert_eq!(store.job_events("job-a").await.unwrap().len(), 2);
        assert_eq!(
            store.get_job(None, "job-a").await.unwrap().unwrap().attempt,
            1
        );
    }
}
