//! Assignments: placing a job attempt, what agents run, and what they report.

use sqlx::AssertSqlSafe;
use std::collections::HashSet;

use crds::{agent::StatusReport, money::Price, v1alpha1::JobPhase};
use sqlx::{Any, Transaction};

use super::{
    Result, Store, StoreError, is_unique_violation,
    jobs::{fetch_job, insert_event, stop_live_assignments},
    nodes::micros,
    now_ms,
    rows::*,
};
use crate::lifecycle::{AssignmentPhase, ReportEffect, job_transition_allowed, report_effect};

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
    /// The assignment already ended differently.
    Conflict { current: AssignmentPhase },
    /// No such assignment on this node.
    NotFound,
}

impl Store {
    /// Writes a placement for a Pending job in one transaction: the job becomes Scheduled with a new
    /// attempt, each worker gets an assignment, each GPU an allocation. Returns false, writing
    /// nothing, if the job is no longer Pending at `attempt` or a GPU was taken meanwhile.
    pub async fn place_job(
        &self,
        job_id: &str,
        attempt: u32,
        workers: &[NewAssignment],
    ) -> Result<bool> {
        let now = now_ms();
        let price = workers.iter().map(|w| w.price_micros).max().unwrap_or(0);
        let nodes: Vec<&str> = {
            let mut seen = HashSet::new();
            workers
                .iter()
                .map(|w| w.node_name.as_str())
                .filter(|n| seen.insert(*n))
                .collect()
        };
        let message = format!(
            "{} worker{} on {}",
            workers.len(),
            if workers.len() == 1 { "" } else { "s" },
            nodes.join(", ")
        );
        let mut tx = self.write_tx().await?;
        let moved = sqlx::query(
            "UPDATE jobs SET phase = 'Scheduled', attempt = attempt + 1, scheduled_at = $3, started_at = NULL, \
             price_micros = $4, reason = 'Placed', message = $5 WHERE id = $1 AND phase = 'Pending' AND attempt = $2",
        )
        .bind(job_id)
        .bind(i64::from(attempt))
        .bind(now)
        .bind(micros(price)?)
        .bind(&message)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if moved == 0 {
            return Ok(false);
        }
        let new_attempt = attempt + 1;
        for worker in workers {
            sqlx::query(
                "INSERT INTO assignments (id, job_id, attempt, worker_rank, node_name, gpus, price_micros, state, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 'Assigned', $8)",
            )
            .bind(&worker.id)
            .bind(job_id)
            .bind(i64::from(new_attempt))
            .bind(i64::from(worker.rank))
            .bind(&worker.node_name)
            .bind(serde_json::to_string(&worker.gpus).map_err(|e| StoreError::Corrupt(e.to_string()))?)
            .bind(micros(worker.price_micros)?)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            for gpu in &worker.gpus {
                let allocated =
                    sqlx::query("INSERT INTO gpu_allocations (node_name, gpu_uuid, assignment_id) VALUES ($1, $2, $3)")
                        .bind(&worker.node_name)
                        .bind(gpu)
                        .bind(&worker.id)
                        .execute(&mut *tx)
                        .await;
                match allocated {
                    Ok(_) => {}
                    // Someone else holds this GPU now: give up the whole placement.
                    Err(e) if is_unique_violation(&e) => return Ok(false),
                    Err(e) => return Err(e.into()),
                }
            }
        }
        insert_event(
            &mut tx,
            job_id,
            now,
            Some(JobPhase::Pending),
            JobPhase::Scheduled,
            "Placed",
            Some(&message),
            new_attempt,
            nodes.first().copied(),
        )
        .await?;
        tx.commit().await?;
        Ok(true)
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
    /// agent must stop: ids the hub is stopping, has ended, or does not know on this node.
    ///
    /// Assignments the agent no longer holds are settled once they are older than `grace_ms` (a
    /// heartbeat may have been composed just before the agent picked new work up): a Stopping one
    /// is Stopped and its GPUs freed; a Starting or Running one failed — the agent restarted or lost
    /// it — so its job does not wait forever for a worker nobody runs.
    pub async fn reconcile_held(
        &self,
        node: &str,
        held: &[String],
        grace_ms: i64,
    ) -> Result<Vec<String>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {ASSIGNMENT_COLUMNS} FROM assignments WHERE node_name = $1 \
             AND state IN ('Assigned', 'Starting', 'Running', 'Stopping')"
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
        for gone in live.iter().filter(|a| {
            !held_set.contains(a.id.as_str())
                && a.started_at.unwrap_or(a.created_at) < settled_before
        }) {
            match gone.state {
                AssignmentPhase::Stopping => self.finish_stopping(&gone.id).await?,
                AssignmentPhase::Starting | AssignmentPhase::Running => {
                    let report = StatusReport {
                        state: crds::agent::WorkerState::Failed,
                        exit_code: None,
                        message: Some(
                            "the node's agent no longer runs this worker (it restarted or lost it)"
                                .into(),
                        ),
                    };
                    self.report_status(node, &gone.id, &report).await?;
                }
                _ => {}
            }
        }
        let keep: HashSet<&str> = live
            .iter()
            .filter(|a| a.state.is_active())
            .map(|a| a.id.as_str())
            .collect();
        Ok(held
            .iter()
            .filter(|id| !keep.contains(id.as_str()))
            .cloned()
            .collect())
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
    /// completes a step (all workers running, all succeeded, one failed).
    pub async fn report_status(
        &self,
        node: &str,
        id: &str,
        report: &StatusReport,
    ) -> Result<AssignmentOutcome> {
        let mut tx = self.write_tx().await?;
        // Lock the job's row first (the order place_job and cancel_job take: job, then its
        // assignments). Reports on workers of one job then apply one after the other, each reading
        // what the others committed; on PostgreSQL (READ COMMITTED) two simultaneous reports would
        // otherwise each miss the other's and neither would move the job on. SQLite's
        // BEGIN IMMEDIATE already serializes writers.
        sqlx::query(
            "UPDATE jobs SET phase = phase WHERE id = (SELECT job_id FROM assignments WHERE id = $1)",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        let now = now_ms();
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {ASSIGNMENT_COLUMNS} FROM assignments WHERE id = $1 AND node_name = $2"
        )))
        .bind(id)
        .bind(node)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(assignment) = row.as_ref().map(AssignmentRow::from_row).transpose()? else {
            return Ok(AssignmentOutcome::NotFound);
        };
        let target = match report_effect(assignment.state, report.state) {
            ReportEffect::Ignore => return Ok(AssignmentOutcome::Unchanged),
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
             exit_code = COALESCE($7, exit_code), message = COALESCE($8, message) \
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
        .bind(report.exit_code.map(i64::from))
        .bind(report.message.as_deref())
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

async fn release_gpus(tx: &mut Transaction<'static, Any>, assignment_id: &str) -> Result<()> {
    sqlx::query("DELETE FROM gpu_allocations WHERE assignment_id = $1")
        .bind(assignment_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Derives a job's phase and usage from its assignments after one of them changed.
async fn roll_up_job(tx: &mut Transaction<'static, Any>, job_id: &str, now: i64) -> Result<()> {
    let Some(job) = fetch_job(tx, job_id).await? else {
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

    let current: Vec<&AssignmentRow> = all.iter().filter(|a| a.attempt == job.attempt).collect();
    let failed = current.iter().find(|a| a.state == AssignmentPhase::Failed);
    let (to, reason, message, node) = if let Some(f) = failed {
        let detail = f.message.as_deref().unwrap_or("no reason given");
        let code = f
            .exit_code
            .map(|c| format!(" (exit code {c})"))
            .unwrap_or_default();
        (
            JobPhase::Failed,
            "WorkerFailed",
            format!(
                "worker {} on {} failed: {detail}{code}",
                f.rank, f.node_name
            ),
            Some(f.node_name.as_str()),
        )
    } else if !current.is_empty()
        && current
            .iter()
            .all(|a| a.state == AssignmentPhase::Succeeded)
    {
        (
            JobPhase::Succeeded,
            "Completed",
            "all workers exited successfully".to_string(),
            None,
        )
    } else if job.phase == JobPhase::Scheduled
        && !current.is_empty()
        && current.iter().all(|a| {
            matches!(
                a.state,
                AssignmentPhase::Running | AssignmentPhase::Succeeded
            )
        })
    {
        (
            JobPhase::Running,
            "Started",
            format!("{} worker(s) running", current.len()),
            None,
        )
    } else {
        return Ok(());
    };
    if to == job.phase || !job_transition_allowed(job.phase, to) {
        return Ok(());
    }
    let started = to == JobPhase::Running
        || (to.is_final() && job.started_at.is_none() && job.phase == JobPhase::Scheduled);
    let changed = sqlx::query(
        "UPDATE jobs SET phase = $3, reason = $4, message = $5, \
         started_at = CASE WHEN $6 = 1 THEN COALESCE(started_at, $7) ELSE started_at END, \
         finished_at = CASE WHEN $8 = 1 THEN $7 ELSE finished_at END WHERE id = $1 AND phase = $2",
    )
    .bind(job_id)
    .bind(job.phase.as_str())
    .bind(to.as_str())
    .bind(reason)
    .bind(&message)
    .bind(i64::from(started))
    .bind(now)
    .bind(i64::from(to.is_final()))
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if changed == 0 {
        return Ok(());
    }
    if to == JobPhase::Failed {
        stop_live_assignments(tx, job_id).await?;
    }
    insert_event(
        tx,
        job_id,
        now,
        Some(job.phase),
        to,
        reason,
        Some(&message),
        job.attempt,
        node,
    )
    .await
}
