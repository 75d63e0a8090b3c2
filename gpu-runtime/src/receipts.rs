//! Usage receipts (docs/settlement.md): while a worker runs, and once when it ends, the agent
//! states the assignment's GPU time so far in a [`Receipt`] signed with the node's key, and queues
//! it in the [`Outbox`] for the hub. Receipts are cumulative from the worker's start, so the latest
//! one delivered is all a payout needs and a receipt lost in between costs nothing.
//!
//! A receipt's `sequence` is the assignment's next report number ([`Started::next_seq`], shared
//! with its status reports and recorded on disk before use), so it grows across agent restarts and
//! the hub never takes a new receipt for a replay of an old one.

use crds::agent::{Assignment, ReceiptReport, UsageReceipt};
use settlement::receipt::Receipt;

use crate::{
    identity::NodeIdentity,
    outbox::{Outbox, Record, Started},
};

/// The kind of an outbox record holding a [`ReceiptReport`].
pub const KIND: &str = "receipt";

/// What every receipt of one running worker shares: all but the sequence and the window's end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Meter {
    network: String,
    node: String,
    job: String,
    assignment: String,
    price_micros_per_gpu_hour: u64,
    gpus: u32,
    started_at_ms: u64,
}

impl Meter {
    /// The meter of `assignment`'s worker, started at `started_at_ms` on node `node`, for the
    /// hub's `network`. `None` when the hub sent no price (a hub older than receipts, which has
    /// nowhere to take them).
    pub fn new(
        network: &str,
        node: &str,
        assignment: &Assignment,
        started_at_ms: u64,
    ) -> Option<Self> {
        let price = assignment.price_per_gpu_hour?;
        Some(Self {
            network: network.to_string(),
            node: node.to_string(),
            job: assignment.job.clone(),
            assignment: assignment.id.clone(),
            price_micros_per_gpu_hour: price.micros(),
            gpus: u32::try_from(assignment.gpus.len()).unwrap_or(u32::MAX),
            started_at_ms,
        })
    }

    /// The receipt numbered `sequence` for the worker's GPU time up to `until_ms`: every assigned
    /// GPU for the whole window (the worker holds them all whether it keeps them busy or not).
    pub fn receipt(&self, sequence: u64, until_ms: u64) -> Receipt {
        let until_ms = until_ms.max(self.started_at_ms);
        Receipt {
            network: self.network.clone(),
            node: self.node.clone(),
            job: self.job.clone(),
            assignment: self.assignment.clone(),
            sequence,
            price_micros_per_gpu_hour: self.price_micros_per_gpu_hour,
            gpus: self.gpus,
            started_at_ms: self.started_at_ms,
            until_ms,
            gpu_millis: u64::from(self.gpus).saturating_mul(until_ms - self.started_at_ms),
        }
    }

    /// Makes the receipt up to `until_ms` under the assignment's next number, signs it with
    /// `identity` and writes it to `outbox`; once this returns, an agent restart still delivers it.
    pub fn issue(
        &self,
        identity: &NodeIdentity,
        started: &Started,
        outbox: &Outbox,
        until_ms: u64,
    ) -> anyhow::Result<Record> {
        let sequence = started.next_seq(&self.assignment)?;
        let receipt = self.receipt(sequence, until_ms);
        let signature = identity.sign(&receipt.encode()?);
        outbox.push(
            &self.assignment,
            sequence,
            KIND,
            &to_wire(&receipt, signature),
        )
    }
}

/// `receipt` and its signature as the hub takes them.
pub fn to_wire(receipt: &Receipt, signature: String) -> ReceiptReport {
    ReceiptReport {
        receipt: UsageReceipt::from(receipt),
        signature,
    }
}

/// Now, in Unix milliseconds: what receipts' windows are measured in.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::WorkerId;
    use crds::money::Price;

    fn assignment(price: Option<Price>) -> Assignment {
        let mut assignment = crate::executor::tests::assignment(
            serde_json::from_value(
                serde_json::json!({"builtin": {"sleep": {"durationSeconds": 1}}}),
            )
            .unwrap(),
            None,
        );
        assignment.gpus = vec!["GPU-SIM-0".into(), "GPU-SIM-1".into()];
        assignment.price_per_gpu_hour = price;
        assignment
    }

    fn open(dir: &std::path::Path) -> (Outbox, Vec<Record>, Started) {
        let (outbox, records) = Outbox::open(&dir.join("outbox")).unwrap();
        (
            outbox,
            records,
            Started::open(&dir.join("started")).unwrap(),
        )
    }

    #[test]
    fn receipts_are_cumulative_signed_and_numbered_on_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let identity = NodeIdentity::generate();
        let assignment = assignment(Some(Price::from_micros(2_490_000)));
        let meter = Meter::new("agora-devnet-1", "gn-a", &assignment, 1_000).unwrap();
        {
            let (outbox, _, started) = open(dir.path());
            started
                .record(&assignment.id, WorkerId::of(&assignment))
                .unwrap();
            // The Running report took number 1.
            assert_eq!(started.next_seq(&assignment.id).unwrap(), 1);
            meter.issue(&identity, &started, &outbox, 61_000).unwrap();
            meter.issue(&identity, &started, &outbox, 121_000).unwrap();
        }
        // The agent restarts; the worker's meter goes on (a resumed assignment's would).
        let (outbox, kept, started) = open(dir.path());
        assert_eq!(kept.len(), 2, "both receipts survived the restart");
        meter.issue(&identity, &started, &outbox, 181_000).unwrap();
        let (_, all, _) = open(dir.path());

        let mut previous: Option<Receipt> = None;
        for record in &all {
            assert_eq!(record.kind, KIND);
            let report: ReceiptReport = serde_json::from_value(record.body.clone()).unwrap();
            let receipt = Receipt::from(&report.receipt);
            assert!(
                receipt.verify(identity.public_key(), &report.signature),
                "signed by the node's key: {receipt:?}"
            );
            assert_eq!(record.seq, receipt.sequence);
            assert_eq!(receipt.started_at_ms, 1_000, "cumulative from the start");
            assert_eq!(
                receipt.gpu_millis,
                2 * (receipt.until_ms - 1_000),
                "both GPUs for the whole window"
            );
            assert_eq!(receipt.price_micros_per_gpu_hour, 2_490_000);
            if let Some(previous) = &previous {
                assert!(
                    receipt.sequence > previous.sequence,
                    "{receipt:?} after {previous:?}"
                );
                assert!(receipt.gpu_millis > previous.gpu_millis);
            }
            previous = Some(receipt);
        }
        let sequences: Vec<u64> = all.iter().map(|r| r.seq).collect();
        assert_eq!(
            sequences,
            [2, 3, 4],
            "numbered after the Running report, across the restart"
        );
        // Two GPUs for three minutes at 2.49/GPU-hour: 0.249.
        assert_eq!(previous.unwrap().amount_micros(), 249_000);
    }

    #[test]
    fn no_price_from_the_hub_means_no_receipts() {
        assert_eq!(
            Meter::new("agora-devnet-1", "gn-a", &assignment(None), 0),
            None
        );
    }

    #[test]
    fn a_clock_stepping_back_claims_nothing_rather_than_failing() {
        let assignment = assignment(Some(Price::from_micros(1_000_000)));
        let meter = Meter::new("agora-devnet-1", "gn-a", &assignment, 5_000).unwrap();
        let receipt = meter.receipt(1, 4_000);
        assert_eq!((receipt.until_ms, receipt.gpu_millis), (5_000, 0));
        assert!(receipt.encode().is_ok());
    }
}
