//! Usage receipts: the latest signed receipt of each assignment, what settlement batches are built
//! from. The route (`routes::agent::receipts`) checks a receipt before it gets here; the store only
//! keeps the highest sequence per assignment, atomically, so two receipts racing on one assignment
//! (on any replica) can never leave the lower one stored.

use sqlx::Row;

use super::{AssignmentRow, Result, Store, StoreError, now_ms, rows::ASSIGNMENT_COLUMNS};
use sqlx::AssertSqlSafe;

/// A checked receipt, ready to store.
#[derive(Debug, Clone)]
pub struct NewReceipt<'a> {
    pub assignment_id: &'a str,
    pub job_id: &'a str,
    pub node_name: &'a str,
    pub sequence: u64,
    pub gpu_millis: u64,
    pub amount_micros: u64,
    pub until_ms: u64,
    /// The canonical encoding, lowercase hex.
    pub body: &'a str,
    pub signature: &'a str,
}

/// What became of a receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReceiptOutcome {
    /// It is now the assignment's latest.
    Stored,
    /// The assignment's latest receipt already is this very receipt (a retry whose answer was
    /// lost); nothing changed.
    Replay,
    /// The assignment's latest receipt has sequence `last`, at least this one's.
    Stale { last: u64 },
}

/// The latest receipt of one assignment, as the job view shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredReceipt {
    pub assignment_id: String,
    pub sequence: u64,
    pub gpu_millis: u64,
    pub amount_micros: u64,
    pub until_ms: u64,
}

/// A u64 as the store keeps it (BIGINT); the route refuses larger values first.
fn stored(value: u64, field: &str) -> Result<i64> {
    i64::try_from(value).map_err(|_| {
        StoreError::Corrupt(format!("receipt {field} {value} exceeds the store's range"))
    })
}

impl Store {
    /// Assignment `id` if it is `node`'s.
    pub async fn node_assignment(&self, node: &str, id: &str) -> Result<Option<AssignmentRow>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {ASSIGNMENT_COLUMNS} FROM assignments WHERE id = $1 AND node_name = $2"
        )))
        .bind(id)
        .bind(node)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| AssignmentRow::from_row(&row)).transpose()
    }

    /// Stores `receipt` as its assignment's latest unless one with an equal or higher sequence is
    /// stored already. One conditional upsert, so concurrent receipts need no lock.
    pub async fn record_receipt(&self, receipt: &NewReceipt<'_>) -> Result<ReceiptOutcome> {
        let sequence = stored(receipt.sequence, "sequence")?;
        let changed = sqlx::query(
            "INSERT INTO receipts (assignment_id, job_id, node_name, sequence, gpu_millis, \
             amount_micros, until_ms, body, signature, received_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (assignment_id) DO UPDATE SET sequence = excluded.sequence, \
             gpu_millis = excluded.gpu_millis, amount_micros = excluded.amount_micros, \
             until_ms = excluded.until_ms, body = excluded.body, signature = excluded.signature, \
             received_at = excluded.received_at \
             WHERE receipts.sequence < excluded.sequence",
        )
        .bind(receipt.assignment_id)
        .bind(receipt.job_id)
        .bind(receipt.node_name)
        .bind(sequence)
        .bind(stored(receipt.gpu_millis, "gpu_millis")?)
        .bind(stored(receipt.amount_micros, "amount_micros")?)
        .bind(stored(receipt.until_ms, "until_ms")?)
        .bind(receipt.body)
        .bind(receipt.signature)
        .bind(now_ms())
        .execute(&self.pool)
        .await?
        .rows_affected();
        if changed > 0 {
            return Ok(ReceiptOutcome::Stored);
        }
        let row = sqlx::query("SELECT sequence, body FROM receipts WHERE assignment_id = $1")
            .bind(receipt.assignment_id)
            .fetch_one(&self.pool)
            .await?;
        let last: i64 = row.try_get("sequence")?;
        let body: String = row.try_get("body")?;
        if last == sequence && body == receipt.body {
            Ok(ReceiptOutcome::Replay)
        } else {
            Ok(ReceiptOutcome::Stale {
                last: last.unsigned_abs(),
            })
        }
    }

    /// The latest receipt of every assignment of `job` that has one.
    pub async fn job_receipts(&self, job: &str) -> Result<Vec<StoredReceipt>> {
        let rows = sqlx::query(
            "SELECT assignment_id, sequence, gpu_millis, amount_micros, until_ms FROM receipts \
             WHERE job_id = $1 ORDER BY assignment_id",
        )
        .bind(job)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let get = |column: &str| -> Result<u64> {
                    let value: i64 = row.try_get(column)?;
                    u64::try_from(value).map_err(|_| {
                        StoreError::Corrupt(format!("receipts.{column}: {value} out of range"))
                    })
                };
                Ok(StoredReceipt {
                    assignment_id: row.try_get("assignment_id")?,
                    sequence: get("sequence")?,
                    gpu_millis: get("gpu_millis")?,
                    amount_micros: get("amount_micros")?,
                    until_ms: get("until_ms")?,
                })
            })
            .collect()
    }
}

impl Store {
    /// The canonical encoding (hex) and signature of `assignment`'s latest receipt: exactly what a
    /// settlement batch commits to and a verifier checks.
    pub async fn receipt_body(&self, assignment: &str) -> Result<Option<(String, String)>> {
        let row = sqlx::query("SELECT body, signature FROM receipts WHERE assignment_id = $1")
            .bind(assignment)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| Ok((row.try_get("body")?, row.try_get("signature")?)))
            .transpose()
    }
}
