//! `agora bench settlement`: the cost of settling receipts in Merkle batches, on one core (every
//! phase runs on the calling thread). Synthetic receipts — one per assignment, 1,000 nodes each of
//! its own operator, 100 payers, labelled `agora-bench-1` — go through the real batch builder,
//! tree and proofs of the `settlement` crate. Targets (issue 7): ≥ 100,000 receipts batched and
//! proven per second on one core, a 1,000,000-receipt batch built in under 10 s, one transaction
//! per epoch whatever its number of receipts.
//!
//! Figures (`--json` keys):
//! - `receipts_per_s`: receipts batched and proven per second — the hub's batching path: building
//!   the batch from receipts whose signatures the hub checked on arrival (encoding, ordering,
//!   latest-receipt rule, totals, Merkle tree) plus every receipt's inclusion proof, over the
//!   large batch. Signing is each node's work and verification happens on arrival, so neither is
//!   in this figure; `receipts_per_s_with_signatures` adds both (sign, then build with signature
//!   verification, then prove) on a smaller sample.
//! - `batch_1m_ms`: building the 1,000,000-receipt batch, signature checks excluded (present only
//!   at the default `--receipts`; `batch_build_ms` is the same phase at any size).
//! - `receipts_per_tx`: receipts settled by the one `PostBatch` that carries the whole epoch.
//! - `devnet_gas_per_batch`: the large batch posted and finalized on the embedded devnet (the
//!   real contract), gas estimated at Cosmos SDK and wasmd prices without the Wasm instructions'
//!   own gas (`settlement::devnet::gas`); beside it the smallest batch (one receipt, one
//!   provider, one payer): gas follows the number of providers and payers, not of receipts.
//! - Baselines measured in the same run: encoding and SHA-256-hashing every receipt once (the
//!   least any commitment to each receipt costs), and naive proving (rebuilding the tree for each
//!   proof) on a small batch.

use std::{hint::black_box, time::Instant};

use anyhow::Context;
use k256::ecdsa::SigningKey;
use settlement::{
    batch::{Batch, BatchBuilder, Entry, Period, Signatures, SignedReceipt},
    merkle::{self, MerkleTree},
    receipt::Receipt,
};

/// Receipts batched and proven per second on one core (issue 7).
pub const RECEIPTS_PER_S_TARGET: f64 = 100_000.0;
/// Build time of a 1,000,000-receipt batch, ms (issue 7).
pub const BATCH_1M_MS_TARGET: f64 = 10_000.0;
/// The network the synthetic receipts are for: a name no real network has.
const NETWORK: &str = "agora-bench-1";
/// Nodes (each of its own operator, the provider paid) and payers of the synthetic receipts.
const NODES: u64 = 1_000;
const PAYERS: u64 = 100;
/// Proofs verified in the client-side phase.
const VERIFIED_PROOFS: usize = 100_000;

#[derive(clap::Args, Debug)]
pub struct SettlementBenchArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Receipts in the large batch (`batch_1m_ms` is reported at the default only).
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub receipts: u64,
    /// Receipts signed, then batched with signature verification (ECDSA: about 10⁴ per second).
    #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub signed: u64,
    /// Receipts in the naive baseline (each proof rebuilds the tree: quadratic time).
    #[arg(long, default_value_t = 2_000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub naive: u64,
}

pub async fn run(args: SettlementBenchArgs) -> anyhow::Result<()> {
    let progress = |what: &str| {
        if !args.json {
            eprintln!("{what}…");
        }
    };
    let period = Period {
        from_ms: 1_767_225_600_000,
        to_ms: 1_767_229_200_000,
    };
    let n = usize::try_from(args.receipts)?;

    progress(&format!("generating {n} synthetic receipts"));
    let entries = synthetic_entries(n, 2026);

    progress("baseline: encoding and hashing every receipt once");
    let started = Instant::now();
    let mut digest = [0u8; 32];
    for entry in &entries {
        let leaf = merkle::leaf_hash(&entry.signed.receipt.encode()?);
        digest[0] ^= leaf[0];
    }
    black_box(digest);
    let hash_s = started.elapsed().as_secs_f64();

    progress(&format!("building the {n}-receipt batch"));
    let builder = BatchBuilder::new(NETWORK, period).signatures(Signatures::CheckedOnArrival);
    let started = Instant::now();
    let built = builder.build(entries);
    let build_s = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        built.rejected.is_empty() && built.conflicts.is_empty(),
        "the synthetic receipts were not all taken: {} rejected, {} conflicts",
        built.rejected.len(),
        built.conflicts.len()
    );
    let batch = built.batch;

    progress("proving every receipt");
    let started = Instant::now();
    let mut path_hashes = 0usize;
    for index in 0..n {
        let proof = batch.proof(index).context("a leaf without a proof")?;
        path_hashes += black_box(proof).path.len();
    }
    let prove_s = started.elapsed().as_secs_f64();

    progress("verifying proofs as a provider would");
    let sample = VERIFIED_PROOFS.min(n);
    let started = Instant::now();
    for index in (0..sample).map(|i| i * (n / sample)) {
        let proof = batch.proof(index).context("a leaf without a proof")?;
        anyhow::ensure!(proof.verify(), "the proof of leaf {index} does not verify");
    }
    let verify_s = started.elapsed().as_secs_f64();

    progress("re-checking the batch before posting");
    let started = Instant::now();
    batch.check()?;
    let check_s = started.elapsed().as_secs_f64();
    let post_batch_bytes = post_batch_message(&batch)?.len();

    let signed = usize::try_from(args.signed)?;
    progress(&format!(
        "signing {signed} receipts, batching them with signature checks, proving"
    ));
    let (sign_s, signed_build_s, signed_prove_s) = signed_phase(signed, period)?;

    progress("posting and finalizing the batch on the embedded devnet");
    let gas = devnet_gas(&batch).await?;
    let smallest = devnet_gas(&smallest_batch(period)?).await?;

    let naive = usize::try_from(args.naive)?;
    progress(&format!(
        "naive baseline: {naive} proofs, rebuilding the tree for each"
    ));
    let leaves = &batch.leaves[..naive.min(n)];
    let started = Instant::now();
    for index in 0..leaves.len() {
        let tree = MerkleTree::from_leaves(leaves);
        black_box(tree.proof(index));
    }
    let naive_s = started.elapsed().as_secs_f64();

    let per_s = |count: usize, seconds: f64| count as f64 / seconds.max(f64::MIN_POSITIVE);
    let receipts_per_s = per_s(n, build_s + prove_s);
    let naive_per_s = per_s(leaves.len(), naive_s);
    let hash_per_s = per_s(n, hash_s);
    let report = serde_json::json!({
        "receipts_per_s": receipts_per_s,
        "receipts_per_s_target": RECEIPTS_PER_S_TARGET,
        "batch_1m_ms": (n == 1_000_000).then_some(build_s * 1e3),
        "batch_1m_ms_target": BATCH_1M_MS_TARGET,
        "batch_signatures": "checked on arrival by the hub: not verified again in batch_1m_ms / receipts_per_s",
        "receipts_per_tx": batch.receipts(),
        "batch_receipts": batch.receipts(),
        "batch_build_ms": build_s * 1e3,
        "prove_all_ms": prove_s * 1e3,
        "proof_hashes_mean": path_hashes as f64 / n as f64,
        "proof_verify_per_s": per_s(sample, verify_s),
        "batch_check_ms": check_s * 1e3,
        "post_batch_msg_bytes": post_batch_bytes,
        "provider_totals": batch.provider_totals.len(),
        "payer_totals": batch.payer_totals.len(),
        "signed_receipts": signed,
        "sign_per_s": per_s(signed, sign_s),
        "verify_build_per_s": per_s(signed, signed_build_s),
        "receipts_per_s_with_signatures": per_s(signed, sign_s + signed_build_s + signed_prove_s),
        "baseline_hash_once_per_s": hash_per_s,
        "baseline_naive_prove_per_s": naive_per_s,
        "baseline_naive_receipts": leaves.len(),
        "ratio_vs_naive": receipts_per_s / naive_per_s.max(f64::MIN_POSITIVE),
        "ratio_vs_hash_once": receipts_per_s / hash_per_s.max(f64::MIN_POSITIVE),
        "devnet_gas_per_batch": gas.post + gas.finalize,
        "devnet_gas_post_batch": gas.post,
        "devnet_gas_finalize_batch": gas.finalize,
        "devnet_gas_per_receipt": (gas.post + gas.finalize) as f64 / n as f64,
        "devnet_gas_smallest_batch": smallest.post + smallest.finalize,
        "devnet_gas_note": GAS_NOTE,
        "cores": 1,
        "network": NETWORK,
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "Settlement batches on one core: {n} synthetic receipts ({NODES} nodes, {PAYERS} payers); signatures checked on arrival"
    );
    println!("{:<40} {:>14}  target", "", "measured");
    println!(
        "{:<40} {:>14.0}  ≥ {RECEIPTS_PER_S_TARGET:.0}",
        "receipts batched + proven /s", receipts_per_s
    );
    println!(
        "{:<40} {:>14.1}  < {BATCH_1M_MS_TARGET:.0} for 1,000,000",
        format!("batch build ms ({n} receipts)"),
        build_s * 1e3
    );
    println!("{:<40} {:>14.1}", "proving every receipt ms", prove_s * 1e3);
    println!(
        "{:<40} {:>14}  the whole epoch",
        "receipts per PostBatch transaction",
        batch.receipts()
    );
    println!("{:<40} {:>14}", "PostBatch message bytes", post_batch_bytes);
    println!(
        "{:<40} {:>14.0}",
        "proofs verified /s (provider side)",
        per_s(sample, verify_s)
    );
    println!(
        "{:<40} {:>14.1}",
        "batch re-check before posting ms",
        check_s * 1e3
    );
    println!(
        "{:<40} {:>14.0}",
        format!("with signing + verification /s ({signed})"),
        per_s(signed, sign_s + signed_build_s + signed_prove_s)
    );
    println!(
        "{:<40} {:>14.0}",
        "  of which signing alone /s",
        per_s(signed, sign_s)
    );
    println!(
        "{:<40} {:>14.0}  ours at {:.2}× of it",
        "baseline: hash every receipt once /s",
        hash_per_s,
        receipts_per_s / hash_per_s.max(f64::MIN_POSITIVE)
    );
    println!(
        "{:<40} {:>14.0}  {:.0}× ours faster",
        format!("baseline: naive proofs /s ({})", leaves.len()),
        naive_per_s,
        receipts_per_s / naive_per_s.max(f64::MIN_POSITIVE)
    );
    println!(
        "{:<40} {:>14}  post {} + finalize {}",
        format!("devnet gas per batch ({n} receipts)"),
        gas.post + gas.finalize,
        gas.post,
        gas.finalize
    );
    println!(
        "{:<40} {:>14}  1 receipt, 1 provider, 1 payer",
        "devnet gas, smallest batch",
        smallest.post + smallest.finalize
    );
    println!("  ({GAS_NOTE})");
    Ok(())
}

/// `n` receipts of distinct assignments, in a seeded random order (the builder sorts them).
fn synthetic_entries(n: usize, seed: u64) -> Vec<Entry> {
    let mut entries: Vec<Entry> = (0..n as u64)
        .map(|i| {
            let node = i % NODES;
            let gpus = 1 + (i % 8) as u32;
            let window_ms = 60_000 + i % 3_600_000;
            Entry {
                signed: SignedReceipt {
                    receipt: Receipt {
                        network: NETWORK.into(),
                        node: format!("gn-bench-{node:04}"),
                        job: format!("job-bench-{:07}", i / 2),
                        assignment: format!("asg-bench-{i:08}"),
                        sequence: 1 + i % 60,
                        price_micros_per_gpu_hour: 1_000_000 + (i % 2_000) * 1_000,
                        gpus,
                        started_at_ms: 1_767_225_600_000,
                        until_ms: 1_767_225_600_000 + window_ms,
                        gpu_millis: u64::from(gpus) * window_ms,
                    },
                    signature: String::new(),
                    node_key: String::new(),
                },
                provider: format!("agora1benchoperator{node:04}"),
                payer: format!("agora1benchpayer{:03}", i % PAYERS),
            }
        })
        .collect();
    let mut state = seed;
    for i in (1..entries.len()).rev() {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        entries.swap(i, ((state >> 33) % (i as u64 + 1)) as usize);
    }
    entries
}

/// Signs `n` receipts with one node key, builds their batch verifying every signature, proves
/// every receipt: the seconds of each step.
fn signed_phase(n: usize, period: Period) -> anyhow::Result<(f64, f64, f64)> {
    let key = SigningKey::from_slice(&[7; 32])?;
    let node_key = hex::encode(key.verifying_key().to_sec1_point(true).as_bytes());
    let mut entries = synthetic_entries(n, 7);
    let started = Instant::now();
    for entry in &mut entries {
        entry.signed.signature = entry.signed.receipt.sign(&key)?;
    }
    let sign_s = started.elapsed().as_secs_f64();
    for entry in &mut entries {
        entry.signed.node_key.clone_from(&node_key);
    }
    let started = Instant::now();
    let built = BatchBuilder::new(NETWORK, period).build(entries);
    let build_s = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        built.rejected.is_empty() && built.batch.receipts() == n as u64,
        "signed receipts were rejected: {:?}",
        built.rejected.first()
    );
    let started = Instant::now();
    for index in 0..n {
        black_box(built.batch.proof(index));
    }
    Ok((sign_s, build_s, started.elapsed().as_secs_f64()))
}

/// The `PostBatch` execute message of the batch, as the settler would send it (amounts as
/// decimal strings, as CosmWasm's `Uint128` is written): its size depends on the number of
/// addresses paid and paying, not on the number of receipts.
/// What the devnet gas figures are, and are not.
const GAS_NOTE: &str = "estimated: store accesses, transaction bytes, signature and wasmd per-call costs at Cosmos SDK / wasmd prices, without the Wasm instructions' own gas";

/// Gas of one batch's two transactions on the devnet.
struct BatchGas {
    post: u64,
    finalize: u64,
}

/// Posts `batch` to a fresh devnet (its synthetic addresses mapped to devnet accounts, each payer's
/// escrow funded) and finalizes it, and returns the estimated gas of both transactions.
async fn devnet_gas(batch: &Batch) -> anyhow::Result<BatchGas> {
    use settlement::{
        chain::{Chain, Coin},
        devnet::{Devnet, DevnetConfig},
    };
    let devnet = Devnet::start(DevnetConfig {
        challenge_window_seconds: 0,
        ..DevnetConfig::default()
    })?;
    let totals = |totals: &[settlement::batch::Total]| {
        totals
            .iter()
            .map(|t| serde_json::json!({"address": devnet.address(&t.address), "amount": t.amount.to_string()}))
            .collect::<Vec<_>>()
    };
    for payer in &batch.payer_totals {
        let address = devnet.address(&payer.address);
        devnet.fund(&address, payer.amount).await?;
        let deposit = vec![Coin::new(devnet.denom(), payer.amount)];
        devnet
            .execute_as(&address, serde_json::json!({"deposit": {}}), deposit)
            .await?;
    }
    let post = serde_json::json!({"post_batch": {
        "id": batch.id,
        "root": batch.root_hex(),
        "period": {"from_ms": batch.period.from_ms, "to_ms": batch.period.to_ms},
        "receipts": batch.receipts(),
        "provider_totals": totals(&batch.provider_totals),
        "payer_totals": totals(&batch.payer_totals),
    }});
    let posted = devnet.execute(post, vec![]).await?;
    let finalized = devnet
        .execute(
            serde_json::json!({"finalize_batch": {"id": batch.id}}),
            vec![],
        )
        .await?;
    Ok(BatchGas {
        post: posted.gas_used,
        finalize: finalized.gas_used,
    })
}

/// A batch of one receipt: one provider, one payer.
fn smallest_batch(period: Period) -> anyhow::Result<Batch> {
    let built = BatchBuilder::new(NETWORK, period)
        .signatures(Signatures::CheckedOnArrival)
        .build(synthetic_entries(1, 7));
    anyhow::ensure!(built.rejected.is_empty(), "the one receipt was refused");
    Ok(built.batch)
}

fn post_batch_message(batch: &Batch) -> anyhow::Result<String> {
    let totals = |totals: &[settlement::batch::Total]| {
        totals
            .iter()
            .map(|t| serde_json::json!({ "address": t.address, "amount": t.amount.to_string() }))
            .collect::<Vec<_>>()
    };
    Ok(serde_json::to_string(&serde_json::json!({
        "post_batch": {
            "id": batch.id,
            "root": batch.root_hex(),
            "period": { "from_ms": batch.period.from_ms, "to_ms": batch.period.to_ms },
            "receipts": batch.receipts(),
            "provider_totals": totals(&batch.provider_totals),
            "payer_totals": totals(&batch.payer_totals),
        }
    }))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_synthetic_receipts_make_one_balanced_batch_and_a_post_batch_message() {
        let entries = synthetic_entries(500, 1);
        let built = BatchBuilder::new(
            NETWORK,
            Period {
                from_ms: 0,
                to_ms: 1,
            },
        )
        .signatures(Signatures::CheckedOnArrival)
        .build(entries);
        assert!(built.rejected.is_empty() && built.conflicts.is_empty());
        built.batch.check().unwrap();
        assert_eq!(built.batch.receipts(), 500);
        assert_eq!(built.batch.provider_totals.len(), 500);
        assert_eq!(built.batch.payer_totals.len(), PAYERS as usize);
        let message: serde_json::Value =
            serde_json::from_str(&post_batch_message(&built.batch).unwrap()).unwrap();
        assert_eq!(message["post_batch"]["receipts"], 500);
        assert_eq!(message["post_batch"]["root"], built.batch.root_hex());
        let paid: u128 = built.batch.payer_totals.iter().map(|t| t.amount).sum();
        let owed: u128 = message["post_batch"]["provider_totals"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["amount"].as_str().unwrap().parse::<u128>().unwrap())
            .sum();
        assert_eq!(paid, owed);
    }
}
