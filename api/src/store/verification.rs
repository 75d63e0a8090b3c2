//! Verifications (docs/verification.md): one row per checked attempt, advanced by compare-and-set
//! through `sampling → (opening) → recomputing → (tie_breaking) → passed | failed | unverifiable`;
//! `opening` may also decide at once.
//!
//! Every step is written before what it causes: the sample's seed and the verifier job's id (and
//! its exclusions) are recorded before the verifier job is submitted (idempotently, by a key
//! derived from the verification), so a crash at any point neither draws a second sample, which a
//! worker could otherwise hope for, nor submits a second verifier.

use crds::v1alpha1::JobPhase;
use sqlx::{Any, Row, Transaction};

use super::{
    Result, Store, StoreError,
    jobs::{AttemptFailure, fail_attempt, lock_job, transition},
    now_ms,
    rows::JobRow,
};
use crate::lifecycle::{FailureReason, JobTransition};

/// Where a verification is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VerificationState {
    /// Waiting for the sample to be drawn and the verifier job submitted.
    Sampling,
    /// The workers are asked to open their commitments of the sampled chunks (`openings`).
    Opening,
    /// The verifier job recomputes the sample.
    Recomputing,
    /// Worker and verifier disagreed: a third operator's node decides.
    TieBreaking,
    /// The worker's result stood.
    Passed,
    /// The worker's result was wrong: the attempt failed.
    Failed,
    /// The result could not be checked (no comparable output, or the verifier could not run).
    Unverifiable,
}

impl VerificationState {
    pub const ALL: [VerificationState; 7] = [
        VerificationState::Sampling,
        VerificationState::Opening,
        VerificationState::Recomputing,
        VerificationState::TieBreaking,
        VerificationState::Passed,
        VerificationState::Failed,
        VerificationState::Unverifiable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            VerificationState::Sampling => "sampling",
            VerificationState::Opening => "opening",
            VerificationState::Recomputing => "recomputing",
            VerificationState::TieBreaking => "tie_breaking",
            VerificationState::Passed => "passed",
            VerificationState::Failed => "failed",
            VerificationState::Unverifiable => "unverifiable",
        }
    }

    pub fn is_open(self) -> bool {
        matches!(
            self,
            VerificationState::Sampling
                | VerificationState::Opening
                | VerificationState::Recomputing
                | VerificationState::TieBreaking
        )
    }
}

impl std::str::FromStr for VerificationState {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        VerificationState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| format!("unknown verification state {s:?}"))
    }
}

/// A verification as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct VerificationRow {
    pub id: String,
    pub job_id: String,
    pub attempt: u32,
    /// `SpotCheck` or `Redundant`.
    pub mode: String,
    pub state: VerificationState,
    /// The sample's seed, hex; drawn after the worker's result arrived.
    pub seed: Option<String>,
    /// The sampled chunks (SpotCheck).
    pub chunks: Vec<u32>,
    pub verifier_job: Option<String>,
    pub tie_breaker_job: Option<String>,
    /// The outcome and, for a failed check, the evidence.
    pub verdict: Option<serde_json::Value>,
    pub message: Option<String>,
    pub created_at: i64,
    pub decided_at: Option<i64>,
}

const COLUMNS: &str = "id, job_id, attempt, mode, state, seed, chunks, verifier_job, tie_breaker_job, verdict, message, created_at, decided_at";

impl VerificationRow {
    fn from_row(row: &sqlx::any::AnyRow) -> Result<Self> {
        let corrupt =
            |what: &str, e: String| StoreError::Corrupt(format!("verification {what}: {e}"));
        let state: String = row.try_get("state")?;
        let chunks: Option<String> = row.try_get("chunks")?;
        let verdict: Option<String> = row.try_get("verdict")?;
        Ok(Self {
            id: row.try_get("id")?,
            job_id: row.try_get("job_id")?,
            attempt: u32::try_from(row.try_get::<i64, _>("attempt")?)
                .map_err(|e| corrupt("attempt", e.to_string()))?,
            mode: row.try_get("mode")?,
            state: state.parse().map_err(|e| corrupt("state", e))?,
            seed: row.try_get("seed")?,
            chunks: match chunks {
                Some(text) => {
                    serde_json::from_str(&text).map_err(|e| corrupt("chunks", e.to_string()))?
                }
                None => Vec::new(),
            },
            verifier_job: row.try_get("verifier_job")?,
            tie_breaker_job: row.try_get("tie_breaker_job")?,
            verdict: verdict
                .map(|text| serde_json::from_str(&text))
                .transpose()
                .map_err(|e| corrupt("verdict", e.to_string()))?,
            message: row.try_get("message")?,
            created_at: row.try_get("created_at")?,
            decided_at: row.try_get("decided_at")?,
        })
    }
}

/// The verification id of a job's attempt.
pub fn verification_id(job_id: &str, attempt: u32) -> String {
    format!("ver-{job_id}-{attempt}")
}

/// Opens the verification of `job`'s current attempt, in the caller's transaction (the one that
/// moves the job to Verifying).
pub(super) async fn open(
    tx: &mut Transaction<'static, Any>,
    job: &JobRow,
    mode: &str,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO verifications (id, job_id, attempt, mode, state, created_at) \
         VALUES ($1, $2, $3, $4, 'sampling', $5) ON CONFLICT (job_id, attempt) DO NOTHING",
    )
    .bind(verification_id(&job.id, job.attempt))
    .bind(&job.id)
    .bind(i64::from(job.attempt))
    .bind(mode)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// How a sample is checked ([`Store::record_sample`]).
#[derive(Clone, Copy, Debug)]
pub enum SampleCheck<'a> {
    /// By a verifier job on another operator's node.
    Verifier(&'a VerifierPlan),
    /// By the workers opening their commitments to the hub.
    Openings(&'a [super::openings::NewOpening]),
}

/// A verifier (or tie-breaker) job about to be submitted: its id, and the operators whose nodes
/// it must not run on.
#[derive(Clone, Debug)]
pub struct VerifierPlan {
    pub job_id: String,
    pub excluded_operators: Vec<String>,
}

impl Store {
    /// Verifications still deciding, oldest first.
    pub async fn open_verifications(&self, limit: u32) -> Result<Vec<VerificationRow>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM verifications WHERE state IN ('sampling', 'opening', 'recomputing', 'tie_breaking') \
             ORDER BY created_at, id LIMIT $1"
        )))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(VerificationRow::from_row).collect()
    }

    /// A job's verifications, attempt by attempt.
    pub async fn job_verifications(&self, job_id: &str) -> Result<Vec<VerificationRow>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM verifications WHERE job_id = $1 ORDER BY attempt"
        )))
        .bind(job_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(VerificationRow::from_row).collect()
    }

    /// Records the sample (seed, chunks) and what checks it, once: false, changing nothing, if a
    /// sample was recorded before. The check is either a verifier job (its id and exclusions are
    /// recorded; the state stays `sampling` until it is submitted) or openings asked of the
    /// workers (state `opening`; a verifier only if they do not answer in time).
    pub async fn record_sample(
        &self,
        id: &str,
        seed: &str,
        chunks: &[u32],
        check: SampleCheck<'_>,
    ) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let chunks =
            serde_json::to_string(chunks).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let (verifier, next) = match check {
            SampleCheck::Verifier(plan) => (Some(plan), VerificationState::Sampling),
            SampleCheck::Openings(_) => (None, VerificationState::Opening),
        };
        let done = sqlx::query(
            "UPDATE verifications SET seed = $2, chunks = $3, verifier_job = $4, state = $5 \
             WHERE id = $1 AND seed IS NULL AND state = 'sampling'",
        )
        .bind(id)
        .bind(seed)
        .bind(&chunks)
        .bind(verifier.map(|plan| plan.job_id.as_str()))
        .bind(next.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if done == 1 {
            match check {
                SampleCheck::Verifier(plan) => exclude_operators(&mut tx, plan).await?,
                SampleCheck::Openings(openings) => {
                    super::openings::request(&mut tx, id, openings).await?
                }
            }
        }
        tx.commit().await?;
        Ok(done == 1)
    }

    /// Records the verifier job of a verification whose workers did not open their commitments
    /// in time, once: false if one was recorded before.
    pub async fn record_fallback_verifier(
        &self,
        id: &str,
        verifier: &VerifierPlan,
    ) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let done = sqlx::query(
            "UPDATE verifications SET verifier_job = $2 \
             WHERE id = $1 AND verifier_job IS NULL AND state = 'opening'",
        )
        .bind(id)
        .bind(&verifier.job_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if done == 1 {
            exclude_operators(&mut tx, verifier).await?;
        }
        tx.commit().await?;
        Ok(done == 1)
    }

    /// Records the tie-breaker job's id and exclusions, once.
    pub async fn record_tie_breaker(&self, id: &str, tie_breaker: &VerifierPlan) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let done = sqlx::query(
            "UPDATE verifications SET tie_breaker_job = $2 \
             WHERE id = $1 AND tie_breaker_job IS NULL AND state = 'recomputing'",
        )
        .bind(id)
        .bind(&tie_breaker.job_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if done == 1 {
            exclude_operators(&mut tx, tie_breaker).await?;
        }
        tx.commit().await?;
        Ok(done == 1)
    }

    /// Moves a verification from `from` to `to` (compare-and-set); true if it moved.
    pub async fn advance_verification(
        &self,
        id: &str,
        from: VerificationState,
        to: VerificationState,
    ) -> Result<bool> {
        let done = sqlx::query("UPDATE verifications SET state = $3 WHERE id = $1 AND state = $2")
            .bind(id)
            .bind(from.as_str())
            .bind(to.as_str())
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(done == 1)
    }

    /// Decides a verification from `from`: records `outcome` with its verdict and message, and
    /// moves the job on in the same transaction: Succeeded when the result stood (or could not be
    /// checked), the attempt failed (`VerificationFailed`, retried elsewhere if attempts remain)
    /// when it was wrong. False, changing nothing, if the verification or the job moved first.
    pub async fn decide_verification(
        &self,
        row: &VerificationRow,
        from: VerificationState,
        outcome: VerificationState,
        verdict: &serde_json::Value,
        message: &str,
        failed_nodes: &[String],
    ) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let now = now_ms();
        let Some(job) = lock_job(&mut tx, &row.job_id).await? else {
            return Err(StoreError::Corrupt(format!(
                "verification {} of missing job {}",
                row.id, row.job_id
            )));
        };
        let verdict_text =
            serde_json::to_string(verdict).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let done = sqlx::query(
            "UPDATE verifications SET state = $3, verdict = $4, message = $5, decided_at = $6 \
             WHERE id = $1 AND state = $2",
        )
        .bind(&row.id)
        .bind(from.as_str())
        .bind(outcome.as_str())
        .bind(&verdict_text)
        .bind(message)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if done == 0 {
            return Ok(false);
        }
        // A job cancelled meanwhile, or already past this attempt, keeps its phase.
        if job.phase == JobPhase::Verifying && job.attempt == row.attempt {
            match outcome {
                VerificationState::Failed => {
                    let failure = AttemptFailure {
                        reason: FailureReason::VerificationFailed,
                        detail: message.to_string(),
                        nodes: failed_nodes.to_vec(),
                    };
                    fail_attempt(&mut tx, &job, &failure, now).await?;
                }
                _ => {
                    transition(&mut tx, &job, JobTransition::Succeed, message, None, now).await?;
                }
            }
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Nodes of the operators job `job_id` must avoid (see `job_excluded_operators`).
    pub async fn nodes_of_excluded_operators(&self, job_id: &str) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT n.name FROM nodes n JOIN job_excluded_operators x ON x.job_id = $1 \
             AND (x.operator = n.operator_address OR x.operator = 'node:' || n.name) ORDER BY n.name",
        )
        .bind(job_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| Ok(row.try_get::<String, _>("name")?))
            .collect()
    }

    /// Applies `change` to a node's reputation (basis points, 10,000 = spotless).
    pub async fn update_reputation(&self, node: &str, change: impl Fn(u16) -> u16) -> Result<u16> {
        let mut tx = self.write_tx().await?;
        let current: Option<i64> = sqlx::query("SELECT reputation_bps FROM nodes WHERE name = $1")
            .bind(node)
            .fetch_optional(&mut *tx)
            .await?
            .map(|row| row.try_get("reputation_bps"))
            .transpose()?;
        let Some(current) = current else {
            return Ok(0);
        };
        let next = change(u16::try_from(current.clamp(0, 10_000)).unwrap_or(10_000));
        sqlx::query("UPDATE nodes SET reputation_bps = $2 WHERE name = $1")
            .bind(node)
            .bind(i64::from(next))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(next)
    }
}

async fn exclude_operators(tx: &mut Transaction<'static, Any>, plan: &VerifierPlan) -> Result<()> {
    for operator in &plan.excluded_operators {
        sqlx::query(
            "INSERT INTO job_excluded_operators (job_id, operator) VALUES ($1, $2) \
             ON CONFLICT (job_id, operator) DO NOTHING",
        )
        .bind(&plan.job_id)
        .bind(operator)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}
