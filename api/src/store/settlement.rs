//! Settlement batches and their leaves: the relayer's outbox (docs/settlement.md).
//!
//! A batch is recorded with all its leaves in one transaction, before anything is posted. Each
//! receipt `(assignment, sequence)` can be a leaf of one batch only (a unique constraint), so two
//! replicas building at once cannot settle a receipt twice: the second transaction fails and
//! records nothing. A batch's state then moves `built → posted → confirmed → final` (or
//! `challenged`) by compare-and-set, each step recorded after the chain did it; a crash between
//! the chain and the record repeats the step, which the contract takes idempotently (a batch id is
//! accepted once).

use sqlx::{AssertSqlSafe, Row};

use super::{Result, Store, StoreError, cut_page, is_unique_violation, now_ms, placeholders};

/// Where a batch is on its way to the chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BatchState {
    /// Recorded here, not yet accepted by the chain.
    Built,
    /// Accepted by the chain (the transaction that posted it is known).
    Posted,
    /// The posting transaction is in a block.
    Confirmed,
    /// Finalized after its challenge window: the providers are paid.
    Final,
    /// A challenge proved it wrong: it will never be finalized.
    Challenged,
}

impl BatchState {
    /// Every state, in order.
    pub const ALL: [BatchState; 5] = [
        BatchState::Built,
        BatchState::Posted,
        BatchState::Confirmed,
        BatchState::Final,
        BatchState::Challenged,
    ];

    /// The state's name in the store and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            BatchState::Built => "built",
            BatchState::Posted => "posted",
            BatchState::Confirmed => "confirmed",
            BatchState::Final => "final",
            BatchState::Challenged => "challenged",
        }
    }
}

impl std::str::FromStr for BatchState {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        BatchState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| format!("unknown batch state {s:?}"))
    }
}

/// A receipt not yet (fully) settled, with what a batch needs to settle it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnsettledReceipt {
    pub assignment_id: String,
    pub job_id: String,
    pub node_name: String,
    pub sequence: u64,
    /// The receipt's cumulative amount, in micro-units.
    pub amount_micros: u64,
    /// What earlier batches paid for the assignment, in micro-units, and the sequence of the
    /// receipt they settled last (0 and 0 when none did).
    pub settled_micros: u64,
    pub settled_sequence: u64,
    /// The canonical encoding (hex) and its signature.
    pub body: String,
    pub signature: String,
    /// The node's registered public key (hex), if it has one.
    pub node_public_key: Option<String>,
    /// The chain address of the node's operator: who is paid.
    pub operator_address: Option<String>,
    /// The chain address of the job's tenant: who pays.
    pub payer_address: Option<String>,
}

/// One leaf of a batch to record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewLeaf {
    pub assignment_id: String,
    pub job_id: String,
    pub sequence: u64,
    pub amount_micros: u64,
    pub paid_micros: u64,
    pub body: String,
    /// The chain address paid for it (the node's operator).
    pub provider: String,
    /// The chain address that pays for it (the job's tenant).
    pub payer: String,
}

/// A batch to record, its leaves in tree order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewBatch {
    pub id: String,
    pub period_from_ms: u64,
    pub period_to_ms: u64,
    pub root: String,
    /// `[{"address", "amount"}]`, amounts as decimal strings of micro-units.
    pub provider_totals: serde_json::Value,
    pub payer_totals: serde_json::Value,
    pub leaves: Vec<NewLeaf>,
}

/// A recorded batch.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchRow {
    pub id: String,
    pub period_from_ms: i64,
    pub period_to_ms: i64,
    pub root: String,
    pub receipts: i64,
    pub provider_totals: serde_json::Value,
    pub payer_totals: serde_json::Value,
    pub state: BatchState,
    pub tx: Option<String>,
    pub height: Option<i64>,
    pub built_at: i64,
    pub posted_at: Option<i64>,
    pub final_at: Option<i64>,
    pub attempts: i64,
    pub last_error: Option<String>,
}

/// Where one receipt was settled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettledLeaf {
    pub batch_id: String,
    pub leaf_index: u64,
    pub assignment_id: String,
    pub job_id: String,
    pub sequence: u64,
    pub amount_micros: u64,
    pub paid_micros: u64,
    pub body: String,
    /// Who it pays and who pays it; `None` for leaves recorded before the store kept them.
    pub provider: Option<String>,
    pub payer: Option<String>,
}

const BATCH_COLUMNS: &str = "id, period_from_ms, period_to_ms, root, receipts, provider_totals, \
     payer_totals, state, tx, height, built_at, posted_at, final_at, attempts, last_error";

const LEAF_COLUMNS: &str = "batch_id, leaf_index, assignment_id, job_id, sequence, amount_micros, \
     paid_micros, body, provider, payer";

fn stored(value: u64, field: &str) -> Result<i64> {
    i64::try_from(value)
        .map_err(|_| StoreError::Corrupt(format!("{field} {value} exceeds the store's range")))
}

fn unsigned(value: i64, field: &str) -> Result<u64> {
    u64::try_from(value)
        .map_err(|_| StoreError::Corrupt(format!("{field} {value} is negative in the store")))
}

fn batch_row(row: &sqlx::any::AnyRow) -> Result<BatchRow> {
    let json = |column: &str| -> Result<serde_json::Value> {
        let text: String = row.try_get(column)?;
        serde_json::from_str(&text)
            .map_err(|e| StoreError::Corrupt(format!("settlement_batches.{column}: {e}")))
    };
    let state: String = row.try_get("state")?;
    Ok(BatchRow {
        id: row.try_get("id")?,
        period_from_ms: row.try_get("period_from_ms")?,
        period_to_ms: row.try_get("period_to_ms")?,
        root: row.try_get("root")?,
        receipts: row.try_get("receipts")?,
        provider_totals: json("provider_totals")?,
        payer_totals: json("payer_totals")?,
        state: state.parse().map_err(StoreError::Corrupt)?,
        tx: row.try_get("tx")?,
        height: row.try_get("height")?,
        built_at: row.try_get("built_at")?,
        posted_at: row.try_get("posted_at")?,
        final_at: row.try_get("final_at")?,
        attempts: row.try_get("attempts")?,
        last_error: row.try_get("last_error")?,
    })
}

fn leaf_row(row: &sqlx::any::AnyRow) -> Result<SettledLeaf> {
    Ok(SettledLeaf {
        batch_id: row.try_get("batch_id")?,
        leaf_index: unsigned(row.try_get("leaf_index")?, "leaf_index")?,
        assignment_id: row.try_get("assignment_id")?,
        job_id: row.try_get("job_id")?,
        sequence: unsigned(row.try_get("sequence")?, "sequence")?,
        amount_micros: unsigned(row.try_get("amount_micros")?, "amount_micros")?,
        paid_micros: unsigned(row.try_get("paid_micros")?, "paid_micros")?,
        body: row.try_get("body")?,
        provider: row.try_get("provider")?,
        payer: row.try_get("payer")?,
    })
}

impl Store {
    /// Up to `limit` receipts received at or before `until_ms` whose latest sequence no batch has
    /// settled yet, oldest assignment first, each with what earlier batches paid for its
    /// assignment and the addresses a batch needs.
    pub async fn unsettled_receipts(
        &self,
        until_ms: i64,
        limit: u32,
    ) -> Result<Vec<UnsettledReceipt>> {
        let rows = sqlx::query(
            "SELECT r.assignment_id, r.job_id, r.node_name, r.sequence, r.amount_micros, r.body, \
                    r.signature, n.public_key, n.operator_address, t.payer_address, \
                    (SELECT MAX(l.amount_micros) FROM settlement_leaves l \
                      WHERE l.assignment_id = r.assignment_id) AS settled, \
                    (SELECT MAX(l.sequence) FROM settlement_leaves l \
                      WHERE l.assignment_id = r.assignment_id) AS settled_sequence \
             FROM receipts r \
             JOIN nodes n ON n.name = r.node_name \
             JOIN jobs j ON j.id = r.job_id \
             JOIN tenants t ON t.id = j.tenant_id \
             WHERE r.received_at <= $1 \
               AND NOT EXISTS (SELECT 1 FROM settlement_leaves l \
                               WHERE l.assignment_id = r.assignment_id AND l.sequence >= r.sequence) \
             ORDER BY r.assignment_id LIMIT $2",
        )
        .bind(until_ms)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let settled: Option<i64> = row.try_get("settled")?;
                let settled_sequence: Option<i64> = row.try_get("settled_sequence")?;
                Ok(UnsettledReceipt {
                    assignment_id: row.try_get("assignment_id")?,
                    job_id: row.try_get("job_id")?,
                    node_name: row.try_get("node_name")?,
                    sequence: unsigned(row.try_get("sequence")?, "sequence")?,
                    amount_micros: unsigned(row.try_get("amount_micros")?, "amount_micros")?,
                    settled_micros: unsigned(settled.unwrap_or(0), "settled")?,
                    settled_sequence: unsigned(settled_sequence.unwrap_or(0), "settled_sequence")?,
                    body: row.try_get("body")?,
                    signature: row.try_get("signature")?,
                    node_public_key: row.try_get("public_key")?,
                    operator_address: row.try_get("operator_address")?,
                    payer_address: row.try_get("payer_address")?,
                })
            })
            .collect()
    }

    /// Records `batch` and its leaves in one transaction, in state `built`. False, recording
    /// nothing, when one of its receipts is already a leaf of another batch (another replica
    /// settled it first) or a batch with its id exists.
    pub async fn record_batch(&self, batch: &NewBatch) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let inserted = sqlx::query(
            "INSERT INTO settlement_batches (id, period_from_ms, period_to_ms, root, receipts, \
             provider_totals, payer_totals, state, built_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'built', $8)",
        )
        .bind(&batch.id)
        .bind(stored(batch.period_from_ms, "period_from_ms")?)
        .bind(stored(batch.period_to_ms, "period_to_ms")?)
        .bind(&batch.root)
        .bind(stored(batch.leaves.len() as u64, "receipts")?)
        .bind(batch.provider_totals.to_string())
        .bind(batch.payer_totals.to_string())
        .bind(now_ms())
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => return Ok(false),
            Err(e) => return Err(e.into()),
        }
        // Parameters per statement stay well under both engines' limits.
        const CHUNK: usize = 1000;
        for (number, chunk) in batch.leaves.chunks(CHUNK).enumerate() {
            let first = number * CHUNK;
            let sql = format!(
                "INSERT INTO settlement_leaves ({LEAF_COLUMNS}) VALUES {}",
                placeholders(chunk.len(), 10)
            );
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for (offset, leaf) in chunk.iter().enumerate() {
                query = query
                    .bind(&batch.id)
                    .bind(stored((first + offset) as u64, "leaf_index")?)
                    .bind(&leaf.assignment_id)
                    .bind(&leaf.job_id)
                    .bind(stored(leaf.sequence, "sequence")?)
                    .bind(stored(leaf.amount_micros, "amount_micros")?)
                    .bind(stored(leaf.paid_micros, "paid_micros")?)
                    .bind(&leaf.body)
                    .bind(&leaf.provider)
                    .bind(&leaf.payer);
            }
            match query.execute(&mut *tx).await {
                Ok(_) => {}
                Err(e) if is_unique_violation(&e) => return Ok(false),
                Err(e) => return Err(e.into()),
            }
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Batch `id`.
    pub async fn batch(&self, id: &str) -> Result<Option<BatchRow>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {BATCH_COLUMNS} FROM settlement_batches WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(batch_row).transpose()
    }

    /// A page of batches by id (ids grow with their period), optionally only those in `state`.
    pub async fn list_batches(
        &self,
        state: Option<BatchState>,
        after: Option<&str>,
        limit: u32,
    ) -> Result<(Vec<BatchRow>, Option<String>)> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {BATCH_COLUMNS} FROM settlement_batches \
             WHERE ($1 = '' OR state = $1) AND id > $2 ORDER BY id LIMIT $3"
        )))
        .bind(state.map_or("", BatchState::as_str))
        .bind(after.unwrap_or(""))
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.pool)
        .await?;
        let mut batches = rows.iter().map(batch_row).collect::<Result<Vec<_>>>()?;
        let next = cut_page(&mut batches, limit, |b| b.id.clone());
        Ok((batches, next))
    }

    /// Moves batch `id` from `from` to `to` (compare-and-set), recording the posting transaction
    /// and height when given, and the time of the step; false if the batch was not in `from`.
    pub async fn advance_batch(
        &self,
        id: &str,
        from: BatchState,
        to: BatchState,
        tx: Option<(&str, u64)>,
    ) -> Result<bool> {
        let now = now_ms();
        let (hash, height) = match tx {
            Some((hash, height)) => (Some(hash.to_string()), Some(stored(height, "height")?)),
            None => (None, None),
        };
        let done = sqlx::query(
            "UPDATE settlement_batches SET state = $1, \
                tx = COALESCE($2, tx), height = COALESCE($3, height), \
                posted_at = CASE WHEN $1 = 'posted' THEN $4 ELSE posted_at END, \
                final_at = CASE WHEN $1 = 'final' THEN $4 ELSE final_at END, \
                last_error = NULL \
             WHERE id = $5 AND state = $6",
        )
        .bind(to.as_str())
        .bind(hash)
        .bind(height)
        .bind(now)
        .bind(id)
        .bind(from.as_str())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records a failed step of batch `id` (it stays in its state, to be tried again).
    pub async fn batch_attempt_failed(&self, id: &str, error: &str) -> Result<()> {
        sqlx::query(
            "UPDATE settlement_batches SET attempts = attempts + 1, last_error = $1 WHERE id = $2",
        )
        .bind(error)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The leaves of batch `id`, in tree order.
    pub async fn batch_leaves(&self, id: &str) -> Result<Vec<SettledLeaf>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {LEAF_COLUMNS} FROM settlement_leaves WHERE batch_id = $1 ORDER BY leaf_index"
        )))
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(leaf_row).collect()
    }

    /// Every leaf that settled part of job `job`, oldest batch first.
    pub async fn job_leaves(&self, job: &str) -> Result<Vec<SettledLeaf>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {LEAF_COLUMNS} FROM settlement_leaves WHERE job_id = $1 \
             ORDER BY assignment_id, sequence"
        )))
        .bind(job)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(leaf_row).collect()
    }

    /// The leaf that settled receipt `sequence` of `assignment`, if a batch did.
    pub async fn settled_leaf(
        &self,
        assignment: &str,
        sequence: u64,
    ) -> Result<Option<SettledLeaf>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {LEAF_COLUMNS} FROM settlement_leaves WHERE assignment_id = $1 AND sequence = $2"
        )))
        .bind(assignment)
        .bind(stored(sequence, "sequence")?)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(leaf_row).transpose()
    }

    /// How many batches are in each state (for metrics).
    pub async fn batch_state_counts(&self) -> Result<Vec<(BatchState, i64)>> {
        let rows =
            sqlx::query("SELECT state, COUNT(*) AS n FROM settlement_batches GROUP BY state")
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|row| {
                let state: String = row.try_get("state")?;
                Ok((
                    state.parse().map_err(StoreError::Corrupt)?,
                    row.try_get("n")?,
                ))
            })
            .collect()
    }

    /// Forgets tenant `tenant_id`'s payer address: its receipts wait until it has one again.
    pub async fn clear_payer_address(&self, tenant_id: &str) -> Result<bool> {
        let done = sqlx::query("UPDATE tenants SET payer_address = NULL WHERE id = $1")
            .bind(tenant_id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Sets the chain address tenant `tenant_id` pays from.
    pub async fn set_payer_address(&self, tenant_id: &str, address: &str) -> Result<bool> {
        let done = sqlx::query("UPDATE tenants SET payer_address = $1 WHERE id = $2")
            .bind(address)
            .bind(tenant_id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }
}

/// What a finalized batch paid one provider, in micro-units (`net = gross − fee`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payout {
    pub provider: String,
    pub gross: u64,
    pub fee: u64,
    pub net: u64,
}

/// A provider's payout from one final batch, with the batch's references, for its statement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PayoutLine {
    pub batch_id: String,
    pub period_from_ms: i64,
    pub period_to_ms: i64,
    /// The transaction that posted the batch.
    pub post_tx: Option<String>,
    /// When the hub recorded the batch final (Unix ms).
    pub final_at: i64,
    pub gross: u64,
    pub fee: u64,
    pub net: u64,
    /// The `FinalizeBatch` transaction and the denom paid in, where known.
    pub finalize_tx: Option<String>,
    pub denom: Option<String>,
}

/// Where a slash is in its outbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SlashState {
    /// Asked for, not yet taken by the contract.
    Pending,
    /// The contract slashed (the amount and transaction are recorded).
    Posted,
    /// The contract refused it (its reason is in `last_error`), or its outcome is unknown and it
    /// must not be sent again blindly.
    Failed,
}

impl SlashState {
    /// Every state, in order.
    pub const ALL: [SlashState; 3] = [SlashState::Pending, SlashState::Posted, SlashState::Failed];

    /// The state's name in the store and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            SlashState::Pending => "pending",
            SlashState::Posted => "posted",
            SlashState::Failed => "failed",
        }
    }
}

impl std::str::FromStr for SlashState {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        SlashState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| format!("unknown slash state {s:?}"))
    }
}

/// A slash to queue (already validated by [`crate::slashing::request_slash`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewSlash {
    pub id: String,
    pub operator: String,
    pub reason: String,
    pub evidence: String,
}

/// A slash in the outbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlashRow {
    pub id: String,
    pub operator: String,
    pub reason: String,
    pub evidence: String,
    pub state: SlashState,
    /// What the contract took, in micro-units (a decimal string: stakes may exceed 64 bits).
    pub amount: Option<String>,
    /// Until when (Unix seconds, chain time) the operator is jailed.
    pub jailed_until: Option<i64>,
    pub tx: Option<String>,
    pub height: Option<i64>,
    pub requested_at: i64,
    pub posted_at: Option<i64>,
    pub attempts: i64,
    pub last_error: Option<String>,
}

/// What the contract did for a posted slash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlashDone {
    /// `None` if the transaction's events did not say (it is logged).
    pub amount: Option<String>,
    pub jailed_until: Option<i64>,
    pub tx: String,
    pub height: u64,
}

const SLASH_COLUMNS: &str = "id, operator, reason, evidence, state, amount, jailed_until, tx, \
     height, requested_at, posted_at, attempts, last_error";

fn slash_row(row: &sqlx::any::AnyRow) -> Result<SlashRow> {
    let state: String = row.try_get("state")?;
    Ok(SlashRow {
        id: row.try_get("id")?,
        operator: row.try_get("operator")?,
        reason: row.try_get("reason")?,
        evidence: row.try_get("evidence")?,
        state: state.parse().map_err(StoreError::Corrupt)?,
        amount: row.try_get("amount")?,
        jailed_until: row.try_get("jailed_until")?,
        tx: row.try_get("tx")?,
        height: row.try_get("height")?,
        requested_at: row.try_get("requested_at")?,
        posted_at: row.try_get("posted_at")?,
        attempts: row.try_get("attempts")?,
        last_error: row.try_get("last_error")?,
    })
}

impl Store {
    /// Records the payouts of batch `id`'s `FinalizeBatch` (transaction `tx`) and moves the batch
    /// from `confirmed` to `final`, in one transaction, so a final batch always has its payouts.
    /// A payout already recorded is kept (another replica recorded the same finalization). False
    /// if the batch was not `confirmed`.
    pub async fn finalize_batch(
        &self,
        id: &str,
        tx: (&str, u64),
        payouts: &[Payout],
        denom: Option<&str>,
    ) -> Result<bool> {
        let now = now_ms();
        let height = stored(tx.1, "height")?;
        let mut db = self.write_tx().await?;
        for payout in payouts {
            sqlx::query(
                "INSERT INTO settlement_payouts \
                 (batch_id, provider, gross, fee, net, denom, tx, height, recorded_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                 ON CONFLICT (batch_id, provider) DO NOTHING",
            )
            .bind(id)
            .bind(&payout.provider)
            .bind(stored(payout.gross, "gross")?)
            .bind(stored(payout.fee, "fee")?)
            .bind(stored(payout.net, "net")?)
            .bind(denom)
            .bind(tx.0)
            .bind(height)
            .bind(now)
            .execute(&mut *db)
            .await?;
        }
        let done = sqlx::query(
            "UPDATE settlement_batches SET state = 'final', final_at = $1, last_error = NULL \
             WHERE id = $2 AND state = 'confirmed'",
        )
        .bind(now)
        .bind(id)
        .execute(&mut *db)
        .await?;
        db.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// The payouts of batch `id`, by provider.
    pub async fn batch_payouts(&self, id: &str) -> Result<Vec<Payout>> {
        let rows = sqlx::query(
            "SELECT provider, gross, fee, net FROM settlement_payouts WHERE batch_id = $1 \
             ORDER BY provider",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(Payout {
                    provider: row.try_get("provider")?,
                    gross: unsigned(row.try_get("gross")?, "gross")?,
                    fee: unsigned(row.try_get("fee")?, "fee")?,
                    net: unsigned(row.try_get("net")?, "net")?,
                })
            })
            .collect()
    }

    /// What `provider` was paid by the batches recorded final in `[from_ms, to_ms)`, in the order
    /// they went final.
    pub async fn operator_payouts(
        &self,
        provider: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<PayoutLine>> {
        let rows = sqlx::query(
            "SELECT p.batch_id, b.period_from_ms, b.period_to_ms, b.tx AS post_tx, b.final_at, \
                    p.gross, p.fee, p.net, p.tx AS finalize_tx, p.denom \
             FROM settlement_payouts p JOIN settlement_batches b ON b.id = p.batch_id \
             WHERE p.provider = $1 AND b.state = 'final' AND b.final_at >= $2 AND b.final_at < $3 \
             ORDER BY b.final_at, p.batch_id",
        )
        .bind(provider)
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(PayoutLine {
                    batch_id: row.try_get("batch_id")?,
                    period_from_ms: row.try_get("period_from_ms")?,
                    period_to_ms: row.try_get("period_to_ms")?,
                    post_tx: row.try_get("post_tx")?,
                    final_at: row.try_get("final_at")?,
                    gross: unsigned(row.try_get("gross")?, "gross")?,
                    fee: unsigned(row.try_get("fee")?, "fee")?,
                    net: unsigned(row.try_get("net")?, "net")?,
                    finalize_tx: row.try_get("finalize_tx")?,
                    denom: row.try_get("denom")?,
                })
            })
            .collect()
    }

    /// The leaves paying `provider` in the batches recorded final in `[from_ms, to_ms)`, each with
    /// the body of the previous settled leaf of its assignment (whatever batch settled it), whose
    /// cumulative GPU time the leaf's own includes.
    pub async fn operator_leaves(
        &self,
        provider: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<(SettledLeaf, Option<String>)>> {
        let rows = sqlx::query(
            "SELECT l.batch_id, l.leaf_index, l.assignment_id, l.job_id, l.sequence, \
                    l.amount_micros, l.paid_micros, l.body, l.provider, l.payer, \
                    (SELECT q.body FROM settlement_leaves q \
                      WHERE q.assignment_id = l.assignment_id AND q.sequence < l.sequence \
                      ORDER BY q.sequence DESC LIMIT 1) AS previous_body \
             FROM settlement_leaves l JOIN settlement_batches b ON b.id = l.batch_id \
             WHERE l.provider = $1 AND b.state = 'final' AND b.final_at >= $2 AND b.final_at < $3 \
             ORDER BY l.job_id, l.assignment_id, l.sequence",
        )
        .bind(provider)
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| Ok((leaf_row(row)?, row.try_get("previous_body")?)))
            .collect()
    }

    /// Queues slash `slash` as `pending`.
    pub async fn insert_slash(&self, slash: &NewSlash) -> Result<SlashRow> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO settlement_slashes (id, operator, reason, evidence, state, requested_at) \
             VALUES ($1, $2, $3, $4, 'pending', $5)",
        )
        .bind(&slash.id)
        .bind(&slash.operator)
        .bind(&slash.reason)
        .bind(&slash.evidence)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(SlashRow {
            id: slash.id.clone(),
            operator: slash.operator.clone(),
            reason: slash.reason.clone(),
            evidence: slash.evidence.clone(),
            state: SlashState::Pending,
            amount: None,
            jailed_until: None,
            tx: None,
            height: None,
            requested_at: now,
            posted_at: None,
            attempts: 0,
            last_error: None,
        })
    }

    /// Slash `id`.
    pub async fn slash(&self, id: &str) -> Result<Option<SlashRow>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {SLASH_COLUMNS} FROM settlement_slashes WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(slash_row).transpose()
    }

    /// A page of slashes by id (ids grow with the time they were asked for), optionally only
    /// those of `operator` and only those in `state`.
    pub async fn list_slashes(
        &self,
        operator: Option<&str>,
        state: Option<SlashState>,
        after: Option<&str>,
        limit: u32,
    ) -> Result<(Vec<SlashRow>, Option<String>)> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {SLASH_COLUMNS} FROM settlement_slashes \
             WHERE ($1 = '' OR operator = $1) AND ($2 = '' OR state = $2) AND id > $3 \
             ORDER BY id LIMIT $4"
        )))
        .bind(operator.unwrap_or(""))
        .bind(state.map_or("", SlashState::as_str))
        .bind(after.unwrap_or(""))
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.pool)
        .await?;
        let mut slashes = rows.iter().map(slash_row).collect::<Result<Vec<_>>>()?;
        let next = cut_page(&mut slashes, limit, |s| s.id.clone());
        Ok((slashes, next))
    }

    /// The slashes of `operator` the contract took in `[from_ms, to_ms)` (by when the hub recorded
    /// them), oldest first.
    pub async fn operator_slashes(
        &self,
        operator: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<SlashRow>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {SLASH_COLUMNS} FROM settlement_slashes \
             WHERE operator = $1 AND state = 'posted' AND posted_at >= $2 AND posted_at < $3 \
             ORDER BY posted_at, id"
        )))
        .bind(operator)
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(slash_row).collect()
    }

    /// Records that the contract took pending slash `id` (compare-and-set); false if it was not
    /// pending.
    pub async fn slash_posted(&self, id: &str, done: &SlashDone) -> Result<bool> {
        let result = sqlx::query(
            "UPDATE settlement_slashes SET state = 'posted', amount = $1, jailed_until = $2, \
                tx = $3, height = $4, posted_at = $5, attempts = attempts + 1, last_error = NULL \
             WHERE id = $6 AND state = 'pending'",
        )
        .bind(&done.amount)
        .bind(done.jailed_until)
        .bind(&done.tx)
        .bind(stored(done.height, "height")?)
        .bind(now_ms())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() == 1)
    }

    /// Records a try of pending slash `id` that failed: with `give_up` it becomes `failed` (not
    /// sent again), otherwise it stays `pending` for the next pass.
    pub async fn slash_attempt_failed(&self, id: &str, error: &str, give_up: bool) -> Result<()> {
        sqlx::query(
            "UPDATE settlement_slashes SET attempts = attempts + 1, last_error = $1, \
                state = CASE WHEN $2 = 1 THEN 'failed' ELSE state END \
             WHERE id = $3 AND state = 'pending'",
        )
        .bind(error)
        .bind(i64::from(give_up))
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
