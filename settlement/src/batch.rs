//! The batch of an epoch: the receipts the hub collected in it, reduced to the latest cumulative
//! receipt of each assignment, committed to by one RFC 6962 Merkle root, with what each provider is
//! owed and each payer owes. One `PostBatch` carries the root and the totals, so one transaction
//! settles a whole epoch whatever its number of receipts; each provider can check its share with
//! the inclusion proof of its receipts ([`Batch::proof`]).
//!
//! Rules (docs/settlement.md, "Batches"):
//! - every receipt must be for the batch's network, encode canonically and carry a valid signature
//!   of the node key it is given with — anything else is rejected with a reason, never a panic;
//! - per assignment, the receipt with the highest `sequence` wins (receipts are cumulative), and
//!   only it becomes a leaf; two different receipts with the same sequence, receipts of one
//!   assignment that disagree on who or what (node, job, price, GPUs, start, key, provider,
//!   payer), or a later receipt claiming less time than an earlier one are a **conflict**: the
//!   assignment is left out of the batch and both receipts are reported (a same-sequence or
//!   shrinking pair, both signed by the node, is evidence against it);
//! - leaves are ordered by assignment id (byte order), so the same receipts give the same batch,
//!   root and id in whatever order they arrive;
//! - what an assignment is due in this batch is its latest receipt's amount minus what earlier
//!   batches already settled for it ([`BatchBuilder::settled`]): a cumulative receipt is never paid
//!   twice across epochs. Totals are integer micro-units (u128), per provider and per payer, and
//!   both sum to the same figure.

use std::collections::BTreeMap;

use crate::merkle::{self, Hash, MerkleTree};
use crate::receipt::{Receipt, ReceiptError};

/// A receipt as the node signed it, with the key the node registered (compressed SEC1, hex).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedReceipt {
    pub receipt: Receipt,
    /// `r ‖ s`, hex (see [`Receipt::sign`]).
    pub signature: String,
    /// The node's registered public key, hex.
    pub node_key: String,
}

/// One receipt offered to a batch, with who is paid and who pays.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub signed: SignedReceipt,
    /// The chain address of the node's operator (the staked provider paid for the receipt).
    pub provider: String,
    /// The chain address whose escrow pays for the job.
    pub payer: String,
}

/// The epoch a batch covers (Unix ms), as posted in `PostBatch { period }`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Period {
    pub from_ms: u64,
    pub to_ms: u64,
}

/// What one address is owed or owes in a batch, in micro-units (`PostBatch`'s `Total`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Total {
    pub address: String,
    pub amount: u128,
}

/// Whether the builder checks each receipt's signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signatures {
    /// Verify every signature against its node key (about 10⁴ per second per core).
    Verify,
    /// The receipts were verified when the hub accepted them (it refuses any receipt not signed by
    /// the node's registered key) and come from the hub's own table: do not verify again. The
    /// signatures still travel with the batch, so anyone can re-check them.
    CheckedOnArrival,
}

/// What earlier batches already settled for one assignment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settled {
    /// The sequence of the receipt settled last.
    pub sequence: u64,
    /// Its amount: what the assignment has been paid so far.
    pub amount_micros: u64,
}

/// Why one receipt was not taken into the batch.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("the signature is not the node key's signature of this receipt")]
    Signature,
    #[error("the receipt does not encode: {0}")]
    Encoding(ReceiptError),
    #[error("the receipt is for network {found:?}, the batch for {expected:?}")]
    Network { expected: String, found: String },
    #[error("{field} is empty")]
    Empty { field: &'static str },
    #[error("sequence {sequence} was already settled (up to sequence {settled})")]
    AlreadySettled { sequence: u64, settled: u64 },
}

/// A receipt left out of the batch, and why.
#[derive(Debug, PartialEq, Eq)]
pub struct Rejected {
    pub assignment: String,
    pub sequence: u64,
    pub reason: Rejection,
}

/// How two receipts of one assignment contradict each other.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConflictKind {
    #[error("two different receipts with sequence {0}")]
    SameSequence(u64),
    #[error("the receipts disagree on {0}")]
    Disagree(&'static str),
    #[error("a later receipt claims less time than an earlier one")]
    NotCumulative,
    #[error(
        "the latest receipt is worth {latest} micro-units, less than the {settled} already settled"
    )]
    BelowSettled { latest: u64, settled: u64 },
}

/// An assignment left out of the batch because its receipts contradict each other.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    pub assignment: String,
    pub kind: ConflictKind,
    /// The two receipts that contradict each other (for [`ConflictKind::BelowSettled`], the
    /// latest one twice).
    pub receipts: [SignedReceipt; 2],
}

/// One leaf of a batch: the receipt and what it settles.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    pub signed: SignedReceipt,
    pub provider: String,
    pub payer: String,
    /// The receipt's amount ([`Receipt::amount_micros`]): everything the assignment earned so far.
    pub amount_micros: u64,
    /// What this batch pays for it: `amount_micros` minus what earlier batches settled.
    pub due_micros: u64,
}

/// A built batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    /// `epoch-<from_ms>-<first 16 hex digits of the root>`: the same receipts in the same epoch
    /// give the same id (so posting is idempotent), different receipts a different one.
    pub id: String,
    pub network: String,
    pub period: Period,
    /// One per leaf, in leaf order (by assignment id).
    pub items: Vec<Item>,
    /// The canonical bytes of each item's receipt: the Merkle leaves.
    pub leaves: Vec<Vec<u8>>,
    /// Per provider address (ascending), what it is owed; no zero totals.
    pub provider_totals: Vec<Total>,
    /// Per payer address (ascending), what it owes; no zero totals.
    pub payer_totals: Vec<Total>,
    tree: MerkleTree,
}

/// The builder's answer: the batch and what did not go into it.
#[derive(Debug, PartialEq, Eq)]
pub struct Built {
    pub batch: Batch,
    /// Sorted by assignment and sequence.
    pub rejected: Vec<Rejected>,
    /// Sorted by assignment.
    pub conflicts: Vec<Conflict>,
}

/// A leaf's inclusion proof: what `GET /v1/receipts/{id}/proof` serves (with the batch's `tx`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proof {
    pub batch: String,
    /// The canonical receipt bytes.
    pub leaf: Vec<u8>,
    pub index: u64,
    pub tree_size: u64,
    /// Sibling hashes from the leaf up (RFC 6962 audit path).
    pub path: Vec<Hash>,
    pub root: Hash,
}

impl Proof {
    /// Whether the leaf is in the tree with this root, at this index, by this path.
    pub fn verify(&self) -> bool {
        merkle::verify(
            &self.leaf,
            self.index,
            self.tree_size,
            &self.path,
            &self.root,
        )
    }
}

/// A batch that does not add up ([`Batch::check`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("leaf {index} is not its item's canonical receipt")]
    Leaf { index: usize },
    #[error("leaves are not in strictly ascending assignment order at {index}")]
    Order { index: usize },
    #[error("the root is not the root of the leaves")]
    Root,
    #[error("the {side} totals do not match the items' dues")]
    Totals { side: &'static str },
}

/// Builds the batch of one epoch.
#[derive(Clone, Debug)]
pub struct BatchBuilder {
    network: String,
    period: Period,
    signatures: Signatures,
    settled: BTreeMap<String, Settled>,
}

/// An entry that passed the per-receipt checks, with its canonical bytes.
struct Candidate {
    entry: Entry,
    bytes: Vec<u8>,
}

impl Candidate {
    /// A total order on everything an entry holds, so the input order cannot change the outcome.
    #[allow(clippy::type_complexity)]
    fn order(&self) -> (&str, u64, &[u8], &str, &str, &str, &str) {
        let s = &self.entry.signed;
        (
            &s.receipt.assignment,
            s.receipt.sequence,
            &self.bytes,
            &s.signature,
            &s.node_key,
            &self.entry.provider,
            &self.entry.payer,
        )
    }
}

impl BatchBuilder {
    /// A builder for `network`'s epoch `period`, verifying signatures.
    pub fn new(network: impl Into<String>, period: Period) -> Self {
        Self {
            network: network.into(),
            period,
            signatures: Signatures::Verify,
            settled: BTreeMap::new(),
        }
    }

    /// Sets whether signatures are verified (default: [`Signatures::Verify`]).
    pub fn signatures(mut self, signatures: Signatures) -> Self {
        self.signatures = signatures;
        self
    }

    /// Records what earlier batches settled for `assignment`: receipts up to that sequence are
    /// rejected, and a later one is due only its amount beyond what was paid.
    pub fn settled(mut self, assignment: impl Into<String>, settled: Settled) -> Self {
        self.settled.insert(assignment.into(), settled);
        self
    }

    /// Builds the batch from `entries`, in any order.
    pub fn build(&self, entries: impl IntoIterator<Item = Entry>) -> Built {
        let mut rejected = Vec::new();
        let mut candidates = Vec::new();
        for entry in entries {
            match self.admit(&entry) {
                Ok(bytes) => candidates.push(Candidate { entry, bytes }),
                Err(reason) => rejected.push(Rejected {
                    assignment: entry.signed.receipt.assignment.clone(),
                    sequence: entry.signed.receipt.sequence,
                    reason,
                }),
            }
        }
        // A total order on everything an entry holds: the input order cannot change the outcome.
        candidates.sort_unstable_by(|a, b| a.order().cmp(&b.order()));
        rejected.sort_by(|a, b| {
            (&a.assignment, a.sequence, a.reason.to_string()).cmp(&(
                &b.assignment,
                b.sequence,
                b.reason.to_string(),
            ))
        });

        let mut conflicts = Vec::new();
        let mut items = Vec::new();
        let mut leaves = Vec::new();
        let mut candidates = candidates.into_iter().peekable();
        while let Some(first) = candidates.next() {
            let mut group = vec![first];
            while let Some(next) = candidates.next_if(|c| {
                c.entry.signed.receipt.assignment == group[0].entry.signed.receipt.assignment
            }) {
                group.push(next);
            }
            if let Err(conflict) = self.check_group(&group) {
                conflicts.push(*conflict);
                continue;
            }
            let Some(latest) = group.pop() else { continue };
            let settled = self
                .settled
                .get(&latest.entry.signed.receipt.assignment)
                .map_or(0, |s| s.amount_micros);
            let amount_micros = latest.entry.signed.receipt.amount_micros();
            leaves.push(latest.bytes);
            items.push(Item {
                signed: latest.entry.signed,
                provider: latest.entry.provider,
                payer: latest.entry.payer,
                amount_micros,
                // check_group refused a latest amount below the settled one.
                due_micros: amount_micros.saturating_sub(settled),
            });
        }
        let tree = MerkleTree::from_leaves(&leaves);
        let root = hex::encode(tree.root());
        let provider_totals = totals(items.iter().map(|i| (&i.provider, i.due_micros)));
        let payer_totals = totals(items.iter().map(|i| (&i.payer, i.due_micros)));
        Built {
            batch: Batch {
                id: format!("epoch-{}-{}", self.period.from_ms, &root[..16]),
                network: self.network.clone(),
                period: self.period,
                items,
                leaves,
                provider_totals,
                payer_totals,
                tree,
            },
            rejected,
            conflicts,
        }
    }

    /// The per-receipt checks; the canonical bytes if it passes.
    fn admit(&self, entry: &Entry) -> Result<Vec<u8>, Rejection> {
        let signed = &entry.signed;
        let receipt = &signed.receipt;
        if receipt.network != self.network {
            return Err(Rejection::Network {
                expected: self.network.clone(),
                found: receipt.network.clone(),
            });
        }
        for (field, value) in [
            ("assignment", &receipt.assignment),
            ("provider", &entry.provider),
            ("payer", &entry.payer),
        ] {
            if value.is_empty() {
                return Err(Rejection::Empty { field });
            }
        }
        let bytes = receipt.encode().map_err(Rejection::Encoding)?;
        if let Some(settled) = self.settled.get(&receipt.assignment)
            && receipt.sequence <= settled.sequence
        {
            return Err(Rejection::AlreadySettled {
                sequence: receipt.sequence,
                settled: settled.sequence,
            });
        }
        if self.signatures == Signatures::Verify
            && !receipt.verify(&signed.node_key, &signed.signature)
        {
            return Err(Rejection::Signature);
        }
        Ok(bytes)
    }

    /// The first contradiction among one assignment's receipts (sorted by sequence, then bytes),
    /// if any; the last one is then the winner.
    fn check_group(&self, group: &[Candidate]) -> Result<(), Box<Conflict>> {
        let conflict = |kind, a: &Candidate, b: &Candidate| {
            Box::new(Conflict {
                assignment: a.entry.signed.receipt.assignment.clone(),
                kind,
                receipts: [a.entry.signed.clone(), b.entry.signed.clone()],
            })
        };
        for pair in group.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            let (ra, rb) = (&a.entry.signed.receipt, &b.entry.signed.receipt);
            if ra.sequence == rb.sequence {
                if a.bytes != b.bytes {
                    return Err(conflict(ConflictKind::SameSequence(ra.sequence), a, b));
                }
            } else if rb.until_ms < ra.until_ms || rb.gpu_millis < ra.gpu_millis {
                return Err(conflict(ConflictKind::NotCumulative, a, b));
            }
            for (field, same) in [
                ("node", ra.node == rb.node),
                ("job", ra.job == rb.job),
                (
                    "price",
                    ra.price_micros_per_gpu_hour == rb.price_micros_per_gpu_hour,
                ),
                ("gpus", ra.gpus == rb.gpus),
                ("started_at_ms", ra.started_at_ms == rb.started_at_ms),
                (
                    "node key",
                    a.entry.signed.node_key == b.entry.signed.node_key,
                ),
                ("provider", a.entry.provider == b.entry.provider),
                ("payer", a.entry.payer == b.entry.payer),
            ] {
                if !same {
                    return Err(conflict(ConflictKind::Disagree(field), a, b));
                }
            }
        }
        let Some(latest) = group.last() else {
            return Ok(());
        };
        let receipt = &latest.entry.signed.receipt;
        if let Some(settled) = self.settled.get(&receipt.assignment)
            && receipt.amount_micros() < settled.amount_micros
        {
            let kind = ConflictKind::BelowSettled {
                latest: receipt.amount_micros(),
                settled: settled.amount_micros,
            };
            return Err(conflict(kind, latest, latest));
        }
        Ok(())
    }
}

/// Sums per address, ascending, leaving out zeros.
fn totals<'a>(dues: impl Iterator<Item = (&'a String, u64)>) -> Vec<Total> {
    let mut sums = BTreeMap::<&String, u128>::new();
    for (address, due) in dues {
        *sums.entry(address).or_default() += u128::from(due);
    }
    sums.into_iter()
        .filter(|(_, amount)| *amount > 0)
        .map(|(address, amount)| Total {
            address: address.clone(),
            amount,
        })
        .collect()
}

impl Batch {
    /// The Merkle root.
    pub fn root(&self) -> Hash {
        self.tree.root()
    }

    /// The root as lowercase hex (`PostBatch { root }`).
    pub fn root_hex(&self) -> String {
        hex::encode(self.root())
    }

    /// Receipts in the batch (`PostBatch { receipts }`, the tree size).
    pub fn receipts(&self) -> u64 {
        self.leaves.len() as u64
    }

    /// Whether no receipt made it into the batch (nothing to post).
    pub fn is_empty(&self) -> bool {
        self.leaves.is_empty()
    }

    /// The leaf index of `assignment`'s receipt, if the batch has one.
    pub fn index_of(&self, assignment: &str) -> Option<usize> {
        self.items
            .binary_search_by(|item| item.signed.receipt.assignment.as_str().cmp(assignment))
            .ok()
    }

    /// The inclusion proof of leaf `index`.
    pub fn proof(&self, index: usize) -> Option<Proof> {
        Some(Proof {
            batch: self.id.clone(),
            leaf: self.leaves.get(index)?.clone(),
            index: index as u64,
            tree_size: self.receipts(),
            path: self.tree.proof(index)?,
            root: self.root(),
        })
    }

    /// The inclusion proof of `assignment`'s receipt.
    pub fn proof_for(&self, assignment: &str) -> Option<Proof> {
        self.proof(self.index_of(assignment)?)
    }

    /// Re-derives everything the batch claims from its items — each leaf is its item's canonical
    /// receipt, leaves ascend by assignment, the root is the leaves' root, and the totals are the
    /// sums of the dues (so provider and payer totals are equal) — before it is posted.
    pub fn check(&self) -> Result<(), BatchError> {
        if self.items.len() != self.leaves.len() {
            return Err(BatchError::Leaf {
                index: self.items.len().min(self.leaves.len()),
            });
        }
        for (index, (item, leaf)) in self.items.iter().zip(&self.leaves).enumerate() {
            if item.signed.receipt.encode().as_ref() != Ok(leaf) {
                return Err(BatchError::Leaf { index });
            }
            if index > 0
                && self.items[index - 1].signed.receipt.assignment >= item.signed.receipt.assignment
            {
                return Err(BatchError::Order { index });
            }
        }
        if MerkleTree::from_leaves(&self.leaves).root() != self.root() {
            return Err(BatchError::Root);
        }
        let provider = totals(self.items.iter().map(|i| (&i.provider, i.due_micros)));
        let payer = totals(self.items.iter().map(|i| (&i.payer, i.due_micros)));
        let sum = |t: &[Total]| t.iter().map(|t| t.amount).sum::<u128>();
        let due: u128 = self.items.iter().map(|i| u128::from(i.due_micros)).sum();
        if provider != self.provider_totals || sum(&self.provider_totals) != due {
            return Err(BatchError::Totals { side: "provider" });
        }
        if payer != self.payer_totals || sum(&self.payer_totals) != due {
            return Err(BatchError::Totals { side: "payer" });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use k256::ecdsa::SigningKey;

    use super::*;

    const NETWORK: &str = "agora-devnet-1";
    const PERIOD: Period = Period {
        from_ms: 1_000,
        to_ms: 61_000,
    };

    fn receipt(assignment: &str, sequence: u64, gpu_millis: u64) -> Receipt {
        Receipt {
            network: NETWORK.into(),
            node: "gn-a".into(),
            job: "job-1".into(),
            assignment: assignment.into(),
            sequence,
            price_micros_per_gpu_hour: 2_490_000,
            gpus: 2,
            started_at_ms: 1_000,
            until_ms: 1_000 + gpu_millis.div_ceil(2),
            gpu_millis,
        }
    }

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_slice(&[seed; 32]).unwrap()
    }

    fn public_key(key: &SigningKey) -> String {
        hex::encode(key.verifying_key().to_sec1_point(true).as_bytes())
    }

    fn signed(receipt: Receipt, key: &SigningKey) -> SignedReceipt {
        SignedReceipt {
            signature: receipt.sign(key).unwrap(),
            node_key: public_key(key),
            receipt,
        }
    }

    /// An entry whose signature is not checked ([`Signatures::CheckedOnArrival`] builders).
    fn unsigned(receipt: Receipt, provider: &str, payer: &str) -> Entry {
        Entry {
            signed: SignedReceipt {
                receipt,
                signature: String::new(),
                node_key: String::new(),
            },
            provider: provider.into(),
            payer: payer.into(),
        }
    }

    fn trusting() -> BatchBuilder {
        BatchBuilder::new(NETWORK, PERIOD).signatures(Signatures::CheckedOnArrival)
    }

    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            self.0 >> 33
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }

        fn shuffle<T>(&mut self, items: &mut [T]) {
            for i in (1..items.len()).rev() {
                items.swap(i, self.below(i as u64 + 1) as usize);
            }
        }
    }

    #[test]
    fn latest_receipts_win_totals_add_up_order_does_not_matter_and_every_proof_verifies() {
        let mut rng = Lcg(2026);
        for round in 0..60 {
            let assignments = 1 + rng.below(40);
            let mut entries = Vec::new();
            // What an independent reading of the rules expects: the latest receipt per assignment.
            let mut latest = BTreeMap::<String, Entry>::new();
            let mut superseded = Vec::new();
            for a in 0..assignments {
                let name = format!("asg-{round}-{a:03}");
                let provider = format!("agora1provider{}", rng.below(4));
                let payer = format!("agora1payer{}", rng.below(3));
                let (mut sequence, mut gpu_millis) = (0, 0);
                for _ in 0..1 + rng.below(4) {
                    sequence += 1 + rng.below(3);
                    gpu_millis += rng.below(10_000_000);
                    let entry = unsigned(receipt(&name, sequence, gpu_millis), &provider, &payer);
                    if let Some(earlier) = latest.insert(name.clone(), entry.clone()) {
                        superseded.push(earlier.signed.receipt.encode().unwrap());
                    }
                    entries.push(entry.clone());
                    if rng.below(5) == 0 {
                        entries.push(entry); // a receipt delivered twice
                    }
                }
            }
            rng.shuffle(&mut entries);
            let built = trusting().build(entries.clone());
            assert!(built.rejected.is_empty() && built.conflicts.is_empty());
            let batch = &built.batch;
            batch.check().unwrap();

            let expected: Vec<_> = latest.values().map(|e| e.signed.clone()).collect();
            let got: Vec<_> = batch.items.iter().map(|i| i.signed.clone()).collect();
            assert_eq!(
                got, expected,
                "round {round}: one latest receipt per assignment"
            );
            for old in &superseded {
                assert!(
                    !batch.leaves.contains(old),
                    "a superseded receipt is a leaf"
                );
            }
            let mut providers = BTreeMap::<String, u128>::new();
            let mut payers = BTreeMap::<String, u128>::new();
            for e in latest.values() {
                let amount = u128::from(e.signed.receipt.amount_micros());
                *providers.entry(e.provider.clone()).or_default() += amount;
                *payers.entry(e.payer.clone()).or_default() += amount;
            }
            let as_totals = |m: BTreeMap<String, u128>| {
                m.into_iter()
                    .filter(|(_, amount)| *amount > 0)
                    .map(|(address, amount)| Total { address, amount })
                    .collect::<Vec<_>>()
            };
            let sum = |t: &[Total]| t.iter().map(|t| t.amount).sum::<u128>();
            assert_eq!(batch.provider_totals, as_totals(providers));
            assert_eq!(batch.payer_totals, as_totals(payers));
            assert_eq!(sum(&batch.provider_totals), sum(&batch.payer_totals));

            for (index, item) in batch.items.iter().enumerate() {
                let proof = batch.proof(index).unwrap();
                assert!(proof.verify(), "round {round} leaf {index}");
                assert_eq!(proof.tree_size, batch.receipts());
                assert_eq!(proof.root, batch.root());
                assert_eq!(
                    Receipt::decode(&proof.leaf).unwrap(),
                    item.signed.receipt,
                    "the proven leaf is the receipt"
                );
                assert_eq!(
                    batch.proof_for(&item.signed.receipt.assignment),
                    Some(proof)
                );
            }
            assert_eq!(batch.proof(batch.items.len()), None);
            assert_eq!(batch.proof_for("asg-none"), None);

            rng.shuffle(&mut entries);
            assert_eq!(trusting().build(entries), built, "another input order");
        }
    }

    #[test]
    fn signatures_must_be_the_given_node_keys() {
        let node = key(7);
        let good = Entry {
            signed: signed(receipt("asg-1", 1, 60_000), &node),
            provider: "agora1op".into(),
            payer: "agora1payer".into(),
        };
        let mut other_key = good.clone();
        other_key.signed.node_key = public_key(&key(8));
        other_key.signed.receipt.assignment = "asg-2".into();
        other_key.signed.signature = other_key.signed.receipt.sign(&node).unwrap();
        let mut tampered = good.clone();
        tampered.signed.receipt.assignment = "asg-3".into();
        let mut garbage = good.clone();
        garbage.signed.receipt.assignment = "asg-4".into();
        garbage.signed.signature = "not hex".into();
        garbage.signed.node_key = "02zz".into();
        let mut high_s = good.clone();
        high_s.signed.receipt.assignment = "asg-5".into();
        let signature = k256::ecdsa::Signature::from_slice(
            &hex::decode(high_s.signed.receipt.sign(&node).unwrap()).unwrap(),
        )
        .unwrap();
        let (r, s) = signature.split_scalars();
        let high = k256::ecdsa::Signature::from_scalars(r, -*s).unwrap();
        high_s.signed.signature = hex::encode(high.to_bytes());

        let built = BatchBuilder::new(NETWORK, PERIOD).build([
            good.clone(),
            other_key,
            tampered,
            garbage,
            high_s.clone(),
        ]);
        assert_eq!(built.batch.items.len(), 1);
        assert_eq!(built.batch.items[0].signed, good.signed);
        let reasons: Vec<_> = built
            .rejected
            .iter()
            .map(|r| (r.assignment.as_str(), &r.reason))
            .collect();
        assert_eq!(
            reasons,
            [
                ("asg-2", &Rejection::Signature),
                ("asg-3", &Rejection::Signature),
                ("asg-4", &Rejection::Signature),
                ("asg-5", &Rejection::Signature),
            ]
        );
        // A builder that trusts the hub's arrival check takes what a verifying one refuses.
        let trusted = trusting().build([high_s]);
        assert_eq!(trusted.batch.items.len(), 1);
    }

    #[test]
    fn receipts_for_another_network_without_addresses_or_invalid_are_rejected() {
        let mut foreign = receipt("asg-1", 1, 1_000);
        foreign.network = "agora-mainnet".into();
        let mut greedy = receipt("asg-2", 1, 1_000);
        greedy.gpu_millis = 10_000;
        let built = trusting().build([
            unsigned(foreign, "agora1op", "agora1payer"),
            unsigned(greedy, "agora1op", "agora1payer"),
            unsigned(receipt("asg-3", 1, 1_000), "", "agora1payer"),
            unsigned(receipt("asg-4", 1, 1_000), "agora1op", ""),
        ]);
        assert!(built.batch.is_empty());
        assert_eq!(built.batch.root(), merkle::empty_root());
        assert!(built.batch.provider_totals.is_empty());
        let reasons: Vec<_> = built.rejected.iter().map(|r| &r.reason).collect();
        assert_eq!(
            *reasons[0],
            Rejection::Network {
                expected: NETWORK.into(),
                found: "agora-mainnet".into()
            }
        );
        assert!(matches!(
            *reasons[1],
            Rejection::Encoding(ReceiptError::TooMuchTime { .. })
        ));
        assert_eq!(*reasons[2], Rejection::Empty { field: "provider" });
        assert_eq!(*reasons[3], Rejection::Empty { field: "payer" });
    }

    #[test]
    fn contradicting_receipts_leave_their_assignment_out_and_are_reported() {
        let honest = unsigned(receipt("asg-0", 2, 5_000), "agora1op", "agora1payer");
        let a = unsigned(receipt("asg-1", 4, 5_000), "agora1op", "agora1payer");
        let b = unsigned(receipt("asg-1", 4, 6_000), "agora1op", "agora1payer");
        let moved = unsigned(receipt("asg-2", 1, 5_000), "agora1op", "agora1payer");
        let moved_later = unsigned(receipt("asg-2", 2, 6_000), "agora1other", "agora1payer");
        let shrunk = unsigned(receipt("asg-3", 1, 5_000), "agora1op", "agora1payer");
        let shrunk_later = unsigned(receipt("asg-3", 2, 4_000), "agora1op", "agora1payer");
        let built = trusting().build([
            shrunk_later,
            b.clone(),
            honest.clone(),
            moved_later,
            a.clone(),
            shrunk,
            moved,
        ]);
        assert_eq!(built.batch.items.len(), 1);
        assert_eq!(built.batch.items[0].signed, honest.signed);
        let kinds: Vec<_> = built
            .conflicts
            .iter()
            .map(|c| (c.assignment.as_str(), c.kind.clone()))
            .collect();
        assert_eq!(
            kinds,
            [
                ("asg-1", ConflictKind::SameSequence(4)),
                ("asg-2", ConflictKind::Disagree("provider")),
                ("asg-3", ConflictKind::NotCumulative),
            ]
        );
        assert_eq!(built.conflicts[0].receipts, [a.signed, b.signed]);
        assert_eq!(
            built.batch.provider_totals,
            [Total {
                address: "agora1op".into(),
                amount: u128::from(honest.signed.receipt.amount_micros())
            }]
        );
    }

    #[test]
    fn what_earlier_batches_settled_is_not_paid_again() {
        let first = receipt("asg-1", 2, 3_600_000); // 2.49 = 2,490,000 micro-units
        let later = receipt("asg-1", 3, 5_400_000); // 3.735 = 3,735,000
        let builder = trusting().settled(
            "asg-1",
            Settled {
                sequence: 2,
                amount_micros: first.amount_micros(),
            },
        );
        let built = builder.build([
            unsigned(first.clone(), "agora1op", "agora1payer"),
            unsigned(later.clone(), "agora1op", "agora1payer"),
        ]);
        assert_eq!(
            built.rejected[0].reason,
            Rejection::AlreadySettled {
                sequence: 2,
                settled: 2
            }
        );
        let item = &built.batch.items[0];
        assert_eq!(item.signed.receipt, later);
        assert_eq!(
            (item.amount_micros, item.due_micros),
            (3_735_000, 1_245_000)
        );
        assert_eq!(built.batch.payer_totals[0].amount, 1_245_000);
        built.batch.check().unwrap();

        let below = trusting().settled(
            "asg-1",
            Settled {
                sequence: 1,
                amount_micros: 3_000_000,
            },
        );
        let built = below.build([unsigned(first, "agora1op", "agora1payer")]);
        assert!(built.batch.is_empty());
        assert_eq!(
            built.conflicts[0].kind,
            ConflictKind::BelowSettled {
                latest: 2_490_000,
                settled: 3_000_000
            }
        );
    }

    #[test]
    fn the_id_names_the_epoch_and_the_content() {
        let one = trusting().build([unsigned(receipt("asg-1", 1, 1_000), "agora1op", "agora1p")]);
        let root = one.batch.root_hex();
        assert_eq!(one.batch.id, format!("epoch-1000-{}", &root[..16]));
        let again = trusting().build([unsigned(receipt("asg-1", 1, 1_000), "agora1op", "agora1p")]);
        assert_eq!(again.batch.id, one.batch.id);
        let other = trusting().build([unsigned(receipt("asg-1", 2, 1_000), "agora1op", "agora1p")]);
        assert_ne!(other.batch.id, one.batch.id);
    }

    #[test]
    fn check_catches_a_batch_that_does_not_add_up() {
        let built = trusting().build([
            unsigned(receipt("asg-1", 1, 1_000), "agora1op", "agora1payer"),
            unsigned(receipt("asg-2", 1, 2_000), "agora1op", "agora1payer"),
        ]);
        let mut more = built.batch.clone();
        more.provider_totals[0].amount += 1;
        assert_eq!(more.check(), Err(BatchError::Totals { side: "provider" }));
        let mut swapped = built.batch.clone();
        swapped.leaves.swap(0, 1);
        assert_eq!(swapped.check(), Err(BatchError::Leaf { index: 0 }));
        let mut reordered = built.batch.clone();
        reordered.items.swap(0, 1);
        reordered.leaves.swap(0, 1);
        assert_eq!(reordered.check(), Err(BatchError::Order { index: 1 }));
    }

    /// The batch of the worked example in docs/settlement.md: the documented receipt and two
    /// more, signed by node key `[7; 32]`.
    fn documented_batch() -> Batch {
        let node = key(7);
        let documented = Receipt {
            sequence: 3,
            until_ms: 61_000,
            gpu_millis: 120_000,
            assignment: "asg-job-1-1-0".into(),
            ..receipt("", 0, 0)
        };
        let entries = [
            documented,
            Receipt {
                assignment: "asg-job-1-0-0".into(),
                ..receipt("", 5, 100_000)
            },
            Receipt {
                assignment: "asg-job-2-0-0".into(),
                job: "job-2".into(),
                ..receipt("", 1, 30_000)
            },
        ]
        .map(|r| Entry {
            signed: signed(r, &node),
            provider: "agora1operator".into(),
            payer: "agora1payer".into(),
        });
        let built = BatchBuilder::new(NETWORK, PERIOD).build(entries);
        assert!(built.rejected.is_empty() && built.conflicts.is_empty());
        built.batch
    }

    #[test]
    fn the_documented_proof_is_what_the_builder_proves() {
        let doc = include_str!("../../docs/settlement.md");
        let block = doc
            .split("```")
            .find(|block| block.contains("\"tree_size\""))
            .expect("the proof example in docs/settlement.md");
        let json: serde_json::Value =
            serde_json::from_str(block.trim_start_matches("json")).unwrap();
        let proof = documented_batch().proof_for("asg-job-1-1-0").unwrap();
        assert!(proof.verify());
        let path: Vec<String> = proof.path.iter().map(hex::encode).collect();
        assert_eq!(json["leaf"], hex::encode(&proof.leaf));
        assert_eq!(json["index"], proof.index);
        assert_eq!(json["tree_size"], proof.tree_size);
        assert_eq!(json["path"], serde_json::json!(path));
        assert_eq!(json["root"], hex::encode(proof.root));
        assert_eq!(json["batch"], proof.batch);
    }
}
