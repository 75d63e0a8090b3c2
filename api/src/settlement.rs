//! Building settlement batches from the receipts the hub kept (docs/settlement.md).
//!
//! Once per epoch the leader takes every receipt received by the epoch's end that no batch has
//! settled yet, builds one batch of them ([`settlement::batch::BatchBuilder`]: the latest receipt
//! per assignment, each paying what earlier batches did not), and records it with its leaves in
//! the store, in one transaction, before anything goes to the chain ([`crate::relayer`] posts it).
//! A receipt whose node has no operator address, or whose tenant has no payer address, cannot be
//! settled yet: it is left for a later epoch and counted, so an operator can see who to ask.

use serde_json::{Value, json};
use settlement::{
    batch::{BatchBuilder, Entry, Period, Settled, Signatures, SignedReceipt, Total},
    receipt::Receipt,
};

use crate::store::{
    Store, StoreError,
    settlement::{NewBatch, NewLeaf},
};

/// Most receipts one batch settles; the rest wait for the next epoch (a batch is one
/// transaction whatever its size, but its leaves are one database transaction too).
pub const MAX_BATCH_RECEIPTS: u32 = 100_000;

/// Most addresses (providers and payers together) one batch pays or charges. Finalizing a batch
/// sends one bank transfer per provider, and a transaction's gas has a ceiling (the chain's block
/// gas limit, the relayer's own limit): the devnet estimates about 17,000 gas per provider to
/// finalize and 5,000 per address to post (`agora bench settlement`), so 250 addresses stay near
/// 5,000,000 gas with room for the contract's own execution. Receipts do not count: a batch of
/// any number of receipts is one root. Parties beyond the cap go into another batch of the same
/// epoch.
pub const MAX_BATCH_PARTIES: usize = 250;

/// What one build did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Build {
    /// The batch recorded, if there was anything to settle.
    pub batch: Option<String>,
    /// Receipts in it.
    pub receipts: usize,
    /// Receipts left for later: no operator or payer address yet.
    pub unaddressed: usize,
    /// Receipts the builder refused (their reasons are logged).
    pub rejected: usize,
    /// Receipts left for another batch of the same epoch (this one reached
    /// [`MAX_BATCH_PARTIES`] or [`MAX_BATCH_RECEIPTS`]): build again.
    pub more: usize,
}

/// Builds and records the batch of epoch `period` on `network` from the unsettled receipts
/// received by the epoch's end.
pub async fn build_batch(
    store: &Store,
    network: &str,
    period: Period,
) -> Result<Build, StoreError> {
    let until = i64::try_from(period.to_ms).unwrap_or(i64::MAX);
    let unsettled = store.unsettled_receipts(until, MAX_BATCH_RECEIPTS).await?;
    let mut build = Build::default();
    if unsettled.len() == MAX_BATCH_RECEIPTS as usize {
        build.more = 1;
    }
    let mut parties: std::collections::HashSet<(bool, String)> = std::collections::HashSet::new();
    let mut builder = BatchBuilder::new(network, period).signatures(Signatures::CheckedOnArrival);
    let mut entries = Vec::with_capacity(unsettled.len());
    for pending in unsettled {
        let (Some(provider), Some(payer), Some(node_key)) = (
            pending.operator_address,
            pending.payer_address,
            pending.node_public_key,
        ) else {
            build.unaddressed += 1;
            continue;
        };
        let new_parties = [(true, &provider), (false, &payer)]
            .into_iter()
            .filter(|(side, address)| !parties.contains(&(*side, (*address).clone())))
            .count();
        if parties.len() + new_parties > MAX_BATCH_PARTIES {
            build.more += 1;
            continue;
        }
        parties.insert((true, provider.clone()));
        parties.insert((false, payer.clone()));
        let receipt = match hex::decode(&pending.body)
            .ok()
            .and_then(|bytes| Receipt::decode(&bytes).ok())
        {
            Some(receipt) => receipt,
            None => {
                // The hub stored only receipts it decoded; a row that does not is damage.
                return Err(StoreError::Corrupt(format!(
                    "the receipt of {} does not decode",
                    pending.assignment_id
                )));
            }
        };
        if pending.settled_sequence > 0 {
            builder = builder.settled(
                pending.assignment_id.clone(),
                Settled {
                    sequence: pending.settled_sequence,
                    amount_micros: pending.settled_micros,
                },
            );
        }
        entries.push((
            pending.job_id,
            Entry {
                signed: SignedReceipt {
                    receipt,
                    signature: pending.signature,
                    node_key,
                },
                provider,
                payer,
            },
        ));
    }
    let jobs: std::collections::HashMap<String, String> = entries
        .iter()
        .map(|(job, entry)| (entry.signed.receipt.assignment.clone(), job.clone()))
        .collect();
    let built = builder.build(entries.into_iter().map(|(_, entry)| entry));
    for rejected in &built.rejected {
        tracing::warn!(assignment = %rejected.assignment, sequence = rejected.sequence, reason = %rejected.reason, "receipt left out of the batch");
    }
    build.rejected = built.rejected.len() + built.conflicts.len();
    let batch = built.batch;
    if batch.is_empty() {
        return Ok(build);
    }
    let leaves = batch
        .items
        .iter()
        .zip(&batch.leaves)
        .map(|(item, leaf)| NewLeaf {
            assignment_id: item.signed.receipt.assignment.clone(),
            job_id: jobs
                .get(&item.signed.receipt.assignment)
                .cloned()
                .unwrap_or_else(|| item.signed.receipt.job.clone()),
            sequence: item.signed.receipt.sequence,
            amount_micros: item.amount_micros,
            paid_micros: item.due_micros,
            body: hex::encode(leaf),
            provider: item.provider.clone(),
            payer: item.payer.clone(),
        })
        .collect::<Vec<_>>();
    let record = NewBatch {
        id: batch.id.clone(),
        period_from_ms: period.from_ms,
        period_to_ms: period.to_ms,
        root: batch.root_hex(),
        provider_totals: totals(&batch.provider_totals),
        payer_totals: totals(&batch.payer_totals),
        leaves,
    };
    if store.record_batch(&record).await? {
        tracing::info!(batch = %record.id, receipts = record.leaves.len(), unaddressed = build.unaddressed, "settlement batch built");
        build.receipts = record.leaves.len();
        build.batch = Some(record.id);
    }
    Ok(build)
}

/// Totals as the store and the API keep them: amounts as decimal strings (they are u128).
fn totals(totals: &[Total]) -> Value {
    Value::Array(
        totals
            .iter()
            .map(|t| json!({"address": t.address, "amount": t.amount.to_string()}))
            .collect(),
    )
}
