//! Openings (docs/verification.md): a SpotCheck's workers asked to show the rows behind the
//! commitments of the sampled chunks. Requested in the same transaction that records the sample
//! (`Store::record_sample`), listed to the worker's node in heartbeat answers while the
//! verification is `opening`, and answered once, by compare-and-set, with the hub's finding.

use crds::agent::OpeningRequest;
use sqlx::{Any, Row, Transaction};

use super::{Result, Store, StoreError, now_ms};

/// An opening to request of one worker.
#[derive(Clone, Debug)]
pub struct NewOpening {
    pub node_name: String,
    pub request: OpeningRequest,
    pub deadline_at: i64,
}

/// Where an opening is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpeningState {
    /// Asked for, not answered.
    Requested,
    /// The rows matched the commitments and passed Freivalds' check.
    Passed,
    /// The rows did not match the commitments, or were not rows of the product.
    Failed,
}

impl OpeningState {
    pub fn as_str(self) -> &'static str {
        match self {
            OpeningState::Requested => "requested",
            OpeningState::Passed => "passed",
            OpeningState::Failed => "failed",
        }
    }

    fn parse(text: &str) -> Result<Self> {
        [Self::Requested, Self::Passed, Self::Failed]
            .into_iter()
            .find(|s| s.as_str() == text)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown opening state {text:?}")))
    }
}

/// An opening as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct OpeningRow {
    pub verification_id: String,
    pub node_name: String,
    pub request: OpeningRequest,
    pub state: OpeningState,
    /// The finding: the challenge when it passed, the evidence when it failed.
    pub detail: Option<serde_json::Value>,
    pub requested_at: i64,
    pub deadline_at: i64,
    pub answered_at: Option<i64>,
}

const COLUMNS: &str =
    "verification_id, node_name, request, state, detail, requested_at, deadline_at, answered_at";

impl OpeningRow {
    fn from_row(row: &sqlx::any::AnyRow) -> Result<Self> {
        let corrupt = |what: &str, e: serde_json::Error| {
            StoreError::Corrupt(format!("verification opening {what}: {e}"))
        };
        let request: String = row.try_get("request")?;
        let detail: Option<String> = row.try_get("detail")?;
        Ok(Self {
            verification_id: row.try_get("verification_id")?,
            node_name: row.try_get("node_name")?,
            request: serde_json::from_str(&request).map_err(|e| corrupt("request", e))?,
            state: OpeningState::parse(&row.try_get::<String, _>("state")?)?,
            detail: detail
                .map(|text| serde_json::from_str(&text))
                .transpose()
                .map_err(|e| corrupt("detail", e))?,
            requested_at: row.try_get("requested_at")?,
            deadline_at: row.try_get("deadline_at")?,
            answered_at: row.try_get("answered_at")?,
        })
    }
}

/// Requests `openings` for verification `id`, in the caller's transaction.
pub(super) async fn request(
    tx: &mut Transaction<'static, Any>,
    id: &str,
    openings: &[NewOpening],
) -> Result<()> {
    let now = now_ms();
    for opening in openings {
        let request = serde_json::to_string(&opening.request)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        sqlx::query(
            "INSERT INTO verification_openings (verification_id, assignment_id, node_name, request, \
             state, requested_at, deadline_at) VALUES ($1, $2, $3, $4, 'requested', $5, $6) \
             ON CONFLICT (verification_id, assignment_id) DO NOTHING",
        )
        .bind(id)
        .bind(&opening.request.assignment)
        .bind(&opening.node_name)
        .bind(&request)
        .bind(now)
        .bind(opening.deadline_at)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

impl Store {
    /// The openings node `node` is asked for now: requested, unanswered, of verifications still
    /// `opening`; at most `limit`, oldest first.
    pub async fn opening_requests(&self, node: &str, limit: usize) -> Result<Vec<OpeningRequest>> {
        let rows = sqlx::query(
            "SELECT o.request FROM verification_openings o \
             JOIN verifications v ON v.id = o.verification_id \
             WHERE o.node_name = $1 AND o.state = 'requested' AND v.state = 'opening' \
             ORDER BY o.requested_at, o.assignment_id LIMIT $2",
        )
        .bind(node)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let text: String = row.try_get("request")?;
                serde_json::from_str(&text)
                    .map_err(|e| StoreError::Corrupt(format!("verification opening request: {e}")))
            })
            .collect()
    }

    /// The opening asked of assignment `assignment` while its verification is still `opening`.
    pub async fn pending_opening(&self, assignment: &str) -> Result<Option<OpeningRow>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {} FROM verification_openings o JOIN verifications v ON v.id = o.verification_id \
             WHERE o.assignment_id = $1 AND v.state = 'opening' ORDER BY o.requested_at DESC LIMIT 1",
            qualified()
        )))
        .bind(assignment)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(OpeningRow::from_row).transpose()
    }

    /// A verification's openings, by assignment.
    pub async fn verification_openings(&self, verification_id: &str) -> Result<Vec<OpeningRow>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM verification_openings WHERE verification_id = $1 \
             ORDER BY assignment_id"
        )))
        .bind(verification_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(OpeningRow::from_row).collect()
    }

    /// Records the hub's finding on an opening, once: false, changing nothing, if it was
    /// answered before.
    pub async fn answer_opening(
        &self,
        verification_id: &str,
        assignment: &str,
        outcome: OpeningState,
        detail: &serde_json::Value,
    ) -> Result<bool> {
        let detail =
            serde_json::to_string(detail).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let done = sqlx::query(
            "UPDATE verification_openings SET state = $3, detail = $4, answered_at = $5 \
             WHERE verification_id = $1 AND assignment_id = $2 AND state = 'requested'",
        )
        .bind(verification_id)
        .bind(assignment)
        .bind(outcome.as_str())
        .bind(&detail)
        .bind(now_ms())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(done == 1)
    }
}

/// [`COLUMNS`] of the `o` alias.
fn qualified() -> String {
    COLUMNS
        .split(", ")
        .map(|c| format!("o.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}
