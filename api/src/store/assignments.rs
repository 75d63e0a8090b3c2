//! Assignments: what agents run, what they report, the checkpoints they
//! save, and what becomes of work on a node that fell silent.

use sqlx::AssertSqlSafe;
use std::collections::HashSet;

use crds::{
    agent::{CheckpointReport, StatusReport, WorkerState},
    money::Price,
    v1alpha1::JobPhase,
};
use sqlx::{Any, Row, Transaction};

use super::{
    Result, Store, StoreError,
    jobs::{AttemptFailure, fail_attempt, lock_job, transition},
    leases::{Fence, check_fence},
    nodes::micros,
    now_ms,
    rows::*,
};
use crate::lifecycle::{
    AssignmentPhase, FailureReason, JobTransition, ReportEffect, report_effect,
};

/// One worker of a placement, before it is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewAssignment {
    pub id: String,
    pub rank: u32,
    pub node_name: String,
    pub gpus: Vec<String>,
    pub price_micros: u64,
}

/// What an agent's status report did.
#[derive(Clone, Debug, PartialEq)]
pub enum AssignmentOutcome {
    /// The report changed the assignment (and maybe its job).
    Applied,
    /// Nothing to change: a repeat, or progress on an assignment being stopped.
    Unchanged,
    /// The report's `seq` is not above the highest applied for the assignment (`last`): a replay,
    /// or a report overtaken by a newer one. Nothing changed.
    Stale { last: u64 },
    /// The assignment already ended differently.
    Conflict { current: AssignmentPhase },
    /// No such assignment on this node.
    NotFound,
}

/// What a checkpoint report did.
#[derive(Clone, Debug, PartialEq)]
pub enum CheckpointOutcome {
    /// It is the job's checkpoint now.
    Recorded,
    /// The job already has a checkpoint at this step or a later one; only the report's `seq` was
    /// recorded.
    Older,
    /// The report's `seq` is not above the highest applied for the assignment (`last`). Nothing
    /// changed.
    Stale { last: u64 },
    /// The assignment has ended (or was lost): its worker no longer speaks for the job.
    Conflict { current: AssignmentPhase },
    /// No such assignment on this node.
    NotFound,
}

impl Store {
    /// The GPUs of every assignment placed at or after `since_ms`, by node: what the pricing
    /// epoch counts as taken at the class's price.
    pub async fn gpus_placed_since(&self, since_ms: i64) -> Result<Vec<(String, Vec<String>)>> {
        let rows = sqlx::query("SELECT node_name, gpus FROM assignments WHERE created_at >= $1")
            .bind(since_ms)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                let gpus: String = row.try_get("gpus")?;
                let gpus = serde_json::from_str(&gpus)
                    .map_err(|e| StoreError::Corrupt(format!("column gpus: {e}")))?;
                Ok((row.try_get("node_name")?, gpus))
            })
            .collect()
    }
    /// Assignments of a job's attempt, by rank.
    pub async fn job_assignments(&self, job_id: &str, attempt: u32) -> Result<Vec<AssignmentRow>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {ASSIGNMENT_COLUMNS} FROM assignments WHERE job_id = $1 AND attempt = $2 ORDER BY worker_rank"
        )))
        .bind(job_id)
        .bind(i64::from(attempt))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(AssignmentRow::from_row).collect()
    }

    /// Assignments a node should be running (not yet ended, not being stopped).
    pub async fn active_assignments(&self, node: &str) -> Result<Vec<AssignmentRow>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {ASSIGNMENT_COLUMNS} FROM assignments WHERE node_name = $1 \
             AND state IN ('Assigned', 'Starting', 'Running') ORDER BY id"
        )))
        .bind(node)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(AssignmentRow::from_row).collect()
    }

    /// Reconciles what an agent says it holds with what the hub wants, and returns the ids the
    /// agent must stop — ids the hub is stopping, has ended (Lost ones included: the node was
    /// silent for too long and the job moved on), or does not know on this node — and how many
    /// assignments it settled.
    ///
    /// Assignments the agent no longer holds are settled once they are older than `grace_ms` (a
    /// heartbeat may have been composed just before the agent picked new work up): a Stopping one
    /// is Stopped and its GPUs freed; a Starting or Running one failed — the agent restarted or lost
    /// it — so its job does not wait forever for a worker nobody runs (it retries elsewhere while
    /// attempts remain).
    pub async fn reconcile_held(
        &self,
        node: &str,
        held: &[String],
        grace_ms: i64,
    ) -> Result<(Vec<String>, usize)> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {ASSIGNMENT_COLUMNS} FROM assignments WHERE node_name = $1 AND state IN {LIVE}"
        )))
        .bind(node)
        .fetch_all(&self.pool)
        .await?;
        let live = rows
            .iter()
            .map(AssignmentRow::from_row)
            .collect::<Result<Vec<_>>>()?;
        let held_set: HashSet<&str> = held.iter().map(String::as_str).collect();
        let settled_before = now_ms() - grace_ms;
        let mut settled = 0;
        for gone in live.iter().filter(|a| {
            !held_set.contains(a.id.as_str())
                && a.started_at.unwrap_or(a.created_at) < settled_before
        }) {
            match gone.state {
                AssignmentPhase::Stopping => {
                    self.finish_stopping(&gone.id).await?;
                    settled += 1;
                }
                AssignmentPhase::Starting | AssignmentPhase::Running => {
                    settled += 1;
                    // The hub's own finding, not a report: it takes no place in the agent's
                    // sequence of reports.
                    let failed = WorkerChange {
                        state: WorkerState::Failed,
                        exit_code: None,
                        message: Some(
                            "the node's agent no longer runs this worker (it restarted or lost it)",
                        ),
                        seq: None,
                        result: None,
                    };
                    self.change_worker(node, &gone.id, &failed).await?;
                }
                _ => {}
            }
        }
        let keep: HashSet<&str> = live
            .iter()
            .filter(|a| a.state.is_active())
            .map(|a| a.id.as_str())
            .collect();
        let stop = held
            .iter()
            .filter(|id| !keep.contains(id.as_str()))
            .cloned()
            .collect();
        Ok((stop, settled))
    }

    async fn finish_stopping(&self, id: &str) -> Result<()> {
        let mut tx = self.write_tx().await?;
        let changed = sqlx::query(
            "UPDATE assignments SET state = 'Stopped', finished_at = COALESCE(finished_at, $2) \
             WHERE id = $1 AND state = 'Stopping'",
        )
        .bind(id)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed > 0 {
            release_gpus(&mut tx, id).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Applies an agent's report on one of its assignments, and moves the job on when the report
    /// completes a step (all workers running, all succeeded, one failed). A report whose `seq` is
    /// not above the highest applied for the assignment changes nothing ([`AssignmentOutcome::Stale`]);
    /// any other report the hub takes, even one with nothing to change, records its `seq`.
    pub async fn report_status(
        &self,
        node: &str,
        id: &str,
        report: &StatusReport,
    ) -> Result<AssignmentOutcome> {
        let change = WorkerChange {
            state: report.state,
            exit_code: report.exit_code,
            message: report.message.as_deref(),
            seq: Some(report.seq),
            result: report
                .result
                .as_ref()
                .map(serde_json::to_string)
                .transpose()
                .map_err(|e| StoreError::Corrupt(format!("result: {e}")))?,
        };
        self.change_worker(node, id, &change).await
    }

    /// Applies `change` to assignment `id` of `node` (see [`Store::report_status`]).
    async fn change_worker(
        &self,
        node: &str,
        id: &str,
        change: &WorkerChange<'_>,
    ) -> Result<AssignmentOutcome> {
        let seq = change.seq.map(stored_seq).transpose()?;
        let mut tx = self.write_tx().await?;
        // Lock the job's row first (the order placement and cancellation take too: job, then its
        // assignments). Reports on workers of one job then apply one after the other, each reading
        // what the others committed (the last applied `seq` included); on PostgreSQL (READ
        // COMMITTED) two simultaneous reports would otherwise each miss the other's and neither
        // would move the job on. SQLite's BEGIN IMMEDIATE already serializes writers.
        lock_job_of_assignment(&mut tx, id).await?;
        let now = now_ms();
        let Some((assignment, last)) = fetch_reported(&mut tx, node, id).await? else {
            return Ok(AssignmentOutcome::NotFound);
        };
        if let Some(seq) = seq
            && seq <= last
        {
            return Ok(AssignmentOutcome::Stale {
                last: last.unsigned_abs(),
            });
        }
        let target = match report_effect(assignment.state, change.state) {
            ReportEffect::Ignore => {
                if let Some(seq) = seq {
                    record_seq(&mut tx, id, seq).await?;
                    tx.commit().await?;
                }
                return Ok(AssignmentOutcome::Unchanged);
            }
            ReportEffect::Conflict => {
                return Ok(AssignmentOutcome::Conflict {
                    current: assignment.state,
                });
            }
            ReportEffect::Apply(target) => target,
        };
        let changed = sqlx::query(
            "UPDATE assignments SET state = $3, \
             started_at = CASE WHEN $4 = 1 THEN COALESCE(started_at, $5) ELSE started_at END, \
             finished_at = CASE WHEN $6 = 1 THEN $5 ELSE finished_at END, \
             exit_code = COALESCE($7, exit_code), message = COALESCE($8, message), \
             report_seq = COALESCE($9, report_seq), result = COALESCE($10, result) \
             WHERE id = $1 AND state = $2",
        )
        .bind(id)
        .bind(assignment.state.as_str())
        .bind(target.as_str())
        .bind(i64::from(
            target == AssignmentPhase::Running || target.is_final(),
        ))
        .bind(now)
        .bind(i64::from(target.is_final()))
        .bind(change.exit_code.map(i64::from))
        .bind(change.message)
        .bind(seq)
        .bind(change.result.as_deref())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed == 0 {
            // A concurrent writer moved it first; the agent's retry will see the new state.
            return Ok(AssignmentOutcome::Conflict {
                current: assignment.state,
            });
        }
        if target.is_final() {
            release_gpus(&mut tx, id).await?;
        }
        roll_up_job(&mut tx, &assignment.job_id, now).await?;
        tx.commit().await?;
        Ok(AssignmentOutcome::Applied)
    }
}

/// Live assignment states: the agent holds the worker, or is stopping it.
const LIVE: &str = "('Assigned', 'Starting', 'Running', 'Stopping')";

impl Store {
    /// Jobs with live assignments on nodes whose last heartbeat is older than `cutoff`, as
    /// (node, job) pairs: the work [`Store::lose_assignments`] is to settle.
    pub async fn work_on_silent_nodes(&self, cutoff: i64) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT DISTINCT a.node_name, a.job_id FROM assignments a JOIN nodes n ON n.name = a.node_name \
             WHERE a.state IN {LIVE} AND n.last_heartbeat < $1 ORDER BY a.node_name, a.job_id"
        )))
        .bind(cutoff)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("node_name")?, row.try_get("job_id")?)))
            .collect()
    }

    /// Marks every live assignment of `job_id` on `node` Lost, provided the node is still silent
    /// (no heartbeat since `cutoff`), in one transaction: their GPUs are released and, when they
    /// were workers of the job's current attempt, the attempt fails with reason `NodeLost` (the
    /// job retries elsewhere or fails, see [`fail_attempt`]). `silence` says how long the node was
    /// silent, for messages. Returns the ids it marked Lost; none when the node came back first.
    ///
    /// A lost worker's GPU time is counted up to the node's last heartbeat, the last moment anyone
    /// knew it was running.
    pub async fn lose_assignments(
        &self,
        node: &str,
        job_id: &str,
        cutoff: i64,
        silence: &str,
    ) -> Result<Vec<String>> {
        self.lose_assignments_fenced(node, job_id, cutoff, silence, None)
            .await
    }

    /// [`Store::lose_assignments`] under `fence`: marks nothing when the fence's lease has moved on
    /// (the liveness loop's replica is no longer the leader).
    pub async fn lose_assignments_fenced(
        &self,
        node: &str,
        job_id: &str,
        cutoff: i64,
        silence: &str,
        fence: Option<&Fence>,
    ) -> Result<Vec<String>> {
        let mut tx = self.write_tx().await?;
        if !check_fence(&mut tx, fence).await? {
            return Ok(Vec::new());
        }
        if lock_job(&mut tx, job_id).await?.is_none() {
            return Ok(Vec::new());
        }
        // Compare-and-set on the node's silence, which also holds its row until commit: a heartbeat
        // arriving now waits, then finds its assignments Lost and is told to stop them.
        let silent = sqlx::query(
            "UPDATE nodes SET last_heartbeat = last_heartbeat WHERE name = $1 AND last_heartbeat < $2 \
             RETURNING last_heartbeat",
        )
        .bind(node)
        .bind(cutoff)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(silent) = silent else {
            return Ok(Vec::new());
        };
        let last_heartbeat: i64 = silent.try_get("last_heartbeat")?;
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {ASSIGNMENT_COLUMNS} FROM assignments WHERE job_id = $1 AND node_name = $2 \
             AND state IN {LIVE} ORDER BY worker_rank"
        )))
        .bind(job_id)
        .bind(node)
        .fetch_all(&mut *tx)
        .await?;
        let message = format!("no heartbeat for more than {silence}");
        let mut lost = Vec::new();
        for row in &rows {
            let assignment = AssignmentRow::from_row(row)?;
            let finished = assignment
                .started_at
                .map_or(last_heartbeat, |s| s.max(last_heartbeat));
            let changed = sqlx::query(
                "UPDATE assignments SET state = 'Lost', finished_at = $3, message = $4 WHERE id = $1 AND state = $2",
            )
            .bind(&assignment.id)
            .bind(assignment.state.as_str())
            .bind(finished)
            .bind(&message)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if changed > 0 {
                release_gpus(&mut tx, &assignment.id).await?;
                lost.push(assignment.id);
            }
        }
        if !lost.is_empty() {
            roll_up_job(&mut tx, job_id, now_ms()).await?;
        }
        tx.commit().await?;
        Ok(lost)
    }

    /// Records a checkpoint a worker of `node` reported on assignment `id` (report number `seq`)
    /// as its job's latest, unless the job already has one at `step` or later (checkpoints never
    /// go backwards). A report whose `seq` is not above the highest applied for the assignment
    /// changes nothing, as for status reports.
    pub async fn record_checkpoint(
        &self,
        node: &str,
        id: &str,
        report: &CheckpointReport,
    ) -> Result<CheckpointOutcome> {
        let step = i64::try_from(report.step).map_err(|_| {
            StoreError::Corrupt(format!(
                "checkpoint step {} exceeds the store's range",
                report.step
            ))
        })?;
        let seq = stored_seq(report.seq)?;
        let mut tx = self.write_tx().await?;
        lock_job_of_assignment(&mut tx, id).await?;
        let Some((assignment, last)) = fetch_reported(&mut tx, node, id).await? else {
            return Ok(CheckpointOutcome::NotFound);
        };
        if seq <= last {
            return Ok(CheckpointOutcome::Stale {
                last: last.unsigned_abs(),
            });
        }
        if assignment.state.is_final() {
            return Ok(CheckpointOutcome::Conflict {
                current: assignment.state,
            });
        }
        let changed = sqlx::query(
            "UPDATE jobs SET checkpoint_uri = $2, checkpoint_step = $3, checkpoint_at = $4 \
             WHERE id = $1 AND (checkpoint_step IS NULL OR checkpoint_step < $3)",
        )
        .bind(&assignment.job_id)
        .bind(&report.uri)
        .bind(step)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        record_seq(&mut tx, id, seq).await?;
        tx.commit().await?;
        Ok(if changed > 0 {
            CheckpointOutcome::Recorded
        } else {
            CheckpointOutcome::Older
        })
    }
}

/// A worker's state as it changes: an agent's report (with its `seq`), or the hub's own finding
/// (an agent that no longer holds the worker), which has no `seq`.
struct WorkerChange<'a> {
    state: WorkerState,
    exit_code: Option<i32>,
    message: Option<&'a str>,
    seq: Option<u64>,
    /// The workload's result as JSON (`crds::agent::WorkloadResult`), kept once reported.
    result: Option<String>,
}

/// A report's `seq` as the store keeps it (a signed 64-bit integer; the API refuses larger ones).
fn stored_seq(seq: u64) -> Result<i64> {
    i64::try_from(seq)
        .map_err(|_| StoreError::Corrupt(format!("report seq {seq} exceeds the store's range")))
}

/// Assignment `id` of `node` and the highest report `seq` applied to it (0: none yet), read in
/// the caller's transaction after it locked the job's row: every writer of `report_seq` holds that
/// lock, so the number cannot move before the caller commits.
async fn fetch_reported(
    tx: &mut Transaction<'static, Any>,
    node: &str,
    id: &str,
) -> Result<Option<(AssignmentRow, i64)>> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {ASSIGNMENT_COLUMNS}, report_seq FROM assignments WHERE id = $1 AND node_name = $2"
    )))
    .bind(id)
    .bind(node)
    .fetch_optional(&mut **tx)
    .await?;
    row.map(|row| Ok((AssignmentRow::from_row(&row)?, row.try_get("report_seq")?)))
        .transpose()
}

/// Records `seq` as the highest report applied to assignment `id`.
async fn record_seq(tx: &mut Transaction<'static, Any>, id: &str, seq: i64) -> Result<()> {
    sqlx::query("UPDATE assignments SET report_seq = $2 WHERE id = $1")
        .bind(id)
        .bind(seq)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Locks the row of the job assignment `id` belongs to (see [`lock_job`]).
async fn lock_job_of_assignment(tx: &mut Transaction<'static, Any>, id: &str) -> Result<()> {
    sqlx::query(
        "UPDATE jobs SET phase = phase WHERE id = (SELECT job_id FROM assignments WHERE id = $1)",
    )
    .bind(id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn release_gpus(tx: &mut Transaction<'static, Any>, assignment_id: &str) -> Result<()> {
    sqlx::query("DELETE FROM gpu_allocations WHERE assignment_id = $1")
        .bind(assignment_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Derives a job's phase and usage from its assignments after one of them changed: a failed or
/// lost worker of the current attempt fails the attempt (the job retries or fails), all workers
/// succeeded make it Succeeded, all running make a Scheduled job Running.
async fn roll_up_job(tx: &mut Transaction<'static, Any>, job_id: &str, now: i64) -> Result<()> {
    let Some(job) = super::jobs::fetch_job(tx, job_id).await? else {
        return Err(StoreError::Corrupt(format!(
            "assignment of missing job {job_id}"
        )));
    };
    let rows = sqlx::query(AssertSqlSafe(format!("SELECT {ASSIGNMENT_COLUMNS} FROM assignments WHERE job_id = $1 ORDER BY attempt, worker_rank")))
        .bind(job_id)
        .fetch_all(&mut **tx)
        .await?;
    let all = rows
        .iter()
        .map(AssignmentRow::from_row)
        .collect::<Result<Vec<_>>>()?;

    // Usage counts every attempt: a provider ran the failed ones too.
    let gpu_millis: u64 = all.iter().map(AssignmentRow::gpu_millis).sum();
    let cost_micros: u64 = all
        .iter()
        .map(|a| Price::from_micros(a.price_micros).cost_micros(a.gpu_millis()))
        .sum();
    sqlx::query("UPDATE jobs SET gpu_millis = $2, cost_micros = $3 WHERE id = $1")
        .bind(job_id)
        .bind(micros(gpu_millis)?)
        .bind(micros(cost_micros)?)
        .execute(&mut **tx)
        .await?;

    // Only a placed attempt moves its job on. A job that is Pending again (its attempt failed, the
    // rest are being stopped) or has ended takes nothing from the old workers' reports.
    if !matches!(job.phase, JobPhase::Scheduled | JobPhase::Running) {
        return Ok(());
    }
    let current: Vec<&AssignmentRow> = all.iter().filter(|a| a.attempt == job.attempt).collect();
    if current.is_empty() {
        return Ok(());
    }
    if let Some(failure) = attempt_failure(&job, &current) {
        fail_attempt(tx, &job, &failure, now).await?;
        return Ok(());
    }
    let (step, message) = if current
        .iter()
        .all(|a| a.state == AssignmentPhase::Succeeded)
    {
        match verification_mode(&job.spec) {
            // The result is checked before the job Succeeds (crate::verifying).
            Some(mode) => {
                super::verification::open(tx, &job, mode, now).await?;
                (
                    JobTransition::Verify,
                    format!(
                        "all workers exited successfully; {mode} verification of attempt {} started",
                        job.attempt
                    ),
                )
            }
            None => (
                JobTransition::Succeed,
                "all workers exited successfully".to_string(),
            ),
        }
    } else if job.phase == JobPhase::Scheduled
        && current.iter().all(|a| {
            matches!(
                a.state,
                AssignmentPhase::Running | AssignmentPhase::Succeeded
            )
        })
    {
        (
            JobTransition::Start,
            format!("{} worker(s) running", current.len()),
        )
    } else {
        return Ok(());
    };
    transition(tx, &job, step, &message, None, now).await?;
    Ok(())
}

/// The verification the job asked for, if any (`None` mode counts as none).
fn verification_mode(spec: &crds::v1alpha1::ComputeJobSpec) -> Option<&'static str> {
    use crds::v1alpha1::VerificationMode;
    match spec.verification.as_ref()?.mode {
        VerificationMode::None => None,
        VerificationMode::SpotCheck => Some("SpotCheck"),
        VerificationMode::Redundant => Some("Redundant"),
    }
}

/// Why the current attempt failed, if one of its workers failed or was lost.
fn attempt_failure(
    job: &crate::store::JobRow,
    current: &[&AssignmentRow],
) -> Option<AttemptFailure> {
    let first = current
        .iter()
        .find(|a| matches!(a.state, AssignmentPhase::Failed | AssignmentPhase::Lost))?;
    if first.state == AssignmentPhase::Lost {
        let ranks: Vec<String> = current
            .iter()
            .filter(|a| a.state == AssignmentPhase::Lost && a.node_name == first.node_name)
            .map(|a| a.rank.to_string())
            .collect();
        let why = first.message.as_deref().unwrap_or("no heartbeat");
        return Some(AttemptFailure {
            reason: FailureReason::NodeLost,
            detail: format!(
                "node {} was lost ({why}) with worker{} {}",
                first.node_name,
                if ranks.len() == 1 { "" } else { "s" },
                ranks.join(", ")
            ),
            nodes: vec![first.node_name.clone()],
        });
    }
    let detail = first.message.as_deref().unwrap_or("no reason given");
    let code = first
        .exit_code
        .map(|c| format!(" (exit code {c})"))
        .unwrap_or_default();
    // A worker that failed after running for the job's whole maxRuntime was cut off by its agent
    // at the limit: the job ran out of time, which another attempt would too.
    let ran_out = match (job.spec.max_runtime, first.started_at, first.finished_at) {
        (Some(limit), Some(start), Some(end)) => {
            u128::try_from(end.saturating_sub(start)).unwrap_or(0)
                >= std::time::Duration::from(limit).as_millis()
        }
        _ => false,
    };
    if ran_out {
        let limit = job
            .spec
            .max_runtime
            .map(|d| d.to_string())
            .unwrap_or_default();
        return Some(AttemptFailure {
            reason: FailureReason::DeadlineExceeded,
            detail: format!(
                "worker {} on {} ran for the job's whole maxRuntime {limit} and ended: {detail}{code}",
                first.rank, first.node_name
            ),
            nodes: Vec::new(),
        });
    }
    Some(AttemptFailure {
        reason: FailureReason::WorkerFailed,
        detail: format!(
            "worker {} on {} failed: {detail}{code}",
            first.rank, first.node_name
        ),
        nodes: vec![first.node_name.clone()],
    })
}
