//! A seeded random sequence of every kind of message — most of them valid, many refused — with
//! the invariant checked after each step: whatever the order, the contract's bank balance equals
//! its ledger to the unit and no unit of the denom appears or vanishes.

mod common;

use common::*;
use cosmwasm_std::{Decimal, Uint128};
use settlement_contract::msg::{ExecuteMsg, SlashReason};

/// Knuth's MMIX linear congruential generator: deterministic, no extra crates.
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

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

const PROVIDERS: &[&str] = &["provider1", "provider2", "provider3"];
const PAYERS: &[&str] = &["payer1", "payer2", "payer3"];

fn run(seed: u64, steps: usize) -> [usize; 13] {
    let mut s = Suite::new();
    register_nodes(&mut s);
    let mut rng = Lcg(seed);
    let mut batches: Vec<(String, Tree)> = Vec::new();
    // Successful operations per kind, to show the sequence exercised all of them.
    let mut ok = [0usize; 13];
    for step in 0..steps {
        let kind = rng.below(13) as usize;
        let result = match kind {
            0 => {
                let who = rng.pick(PROVIDERS);
                s.exec(
                    who,
                    &ExecuteMsg::Bond {},
                    500 + u128::from(rng.below(5_000)),
                )
            }
            1 => {
                let who = rng.pick(PROVIDERS);
                let amount = Uint128::new(1 + u128::from(rng.below(3_000)));
                s.exec(who, &ExecuteMsg::Unbond { amount }, 0)
            }
            2 => s.exec(rng.pick(PROVIDERS), &ExecuteMsg::Claim {}, 0),
            3 => {
                let who = rng.pick(PAYERS);
                s.exec(
                    who,
                    &ExecuteMsg::Deposit {},
                    1 + u128::from(rng.below(10_000)),
                )
            }
            4 => {
                let who = rng.pick(PAYERS);
                let amount = Uint128::new(1 + u128::from(rng.below(8_000)));
                s.exec(who, &ExecuteMsg::Withdraw { amount }, 0)
            }
            5 | 6 => {
                // A one-leaf batch: its receipt is valid (node gn-1 of provider1) or claims too
                // much GPU time, so a later challenge may or may not succeed.
                let gpu_millis = if rng.below(3) == 0 { 120_001 } else { 120_000 };
                let receipt = encode_receipt(&ReceiptFields {
                    node: "gn-1",
                    gpus: 2,
                    started_at_ms: 1_000,
                    until_ms: 61_000,
                    gpu_millis,
                });
                let tree = Tree::new(vec![receipt]);
                let id = format!("batch-{step}");
                let a = 1 + u128::from(rng.below(3_000));
                let b = 1 + u128::from(rng.below(3_000));
                let (p1, p2) = (rng.pick(PAYERS), rng.pick(PAYERS));
                let payers = if p1 == p2 {
                    vec![total(&s, p1, a + b)]
                } else {
                    vec![total(&s, p1, a), total(&s, p2, b)]
                };
                let split = 1 + (a + b - 1) * u128::from(rng.below(100)) / 100;
                let providers = if split == a + b {
                    vec![total(&s, "provider1", a + b)]
                } else {
                    vec![
                        total(&s, "provider1", split),
                        total(&s, rng.pick(&PROVIDERS[1..]), a + b - split),
                    ]
                };
                let msg = post_batch(&id, tree.root(), 1, providers, payers);
                let result = s.exec("settler", &msg, 0);
                if result.is_ok() {
                    batches.push((id, tree));
                }
                result
            }
            7 => match batches.get(rng.below(batches.len().max(1) as u64) as usize) {
                Some((id, _)) => {
                    let id = id.clone();
                    s.exec("stranger", &ExecuteMsg::FinalizeBatch { id }, 0)
                }
                None => Err("no batch yet".into()),
            },
            8 => match batches.get(rng.below(batches.len().max(1) as u64) as usize) {
                Some((id, tree)) => {
                    let msg = ExecuteMsg::Challenge {
                        batch: id.clone(),
                        evidence: tree.evidence(0),
                    };
                    s.exec("stranger", &msg, 0)
                }
                None => Err("no batch yet".into()),
            },
            9 => {
                let reason = match rng.below(3) {
                    0 => SlashReason::Fraud,
                    1 => SlashReason::Cheating,
                    _ => SlashReason::Downtime,
                };
                let operator = s.addr(rng.pick(PROVIDERS)).into();
                let msg = ExecuteMsg::Slash {
                    operator,
                    reason,
                    evidence: format!("step {step}"),
                };
                s.exec(
                    if rng.below(2) == 0 {
                        "settler"
                    } else {
                        "admin"
                    },
                    &msg,
                    0,
                )
            }
            10 => {
                // The admin changes the economics mid-flight: fees and windows of batches already
                // posted must still add up.
                let mut p = params();
                p.protocol_fee_bps = rng.below(10_001) as u16;
                p.challenge_window_seconds = 10 + rng.below(110);
                p.unbonding_seconds = rng.below(200);
                p.slash_ratios.downtime = Decimal::permille(rng.below(1_001));
                s.exec("admin", &ExecuteMsg::UpdateParams { params: p }, 0)
            }
            11 => {
                // Funds with a message that takes none: always refused.
                let who = rng.pick(PROVIDERS);
                let result = s.exec(who, &ExecuteMsg::Claim {}, 1 + u128::from(rng.below(100)));
                assert!(result.is_err(), "funds with Claim must be refused");
                Ok(Default::default())
            }
            _ => {
                s.advance(1 + rng.below(90));
                Ok(Default::default())
            }
        };
        if result.is_ok() {
            ok[kind] += 1;
        }
        s.check_invariant();
    }
    ok
}

fn register_nodes(s: &mut Suite) {
    for (i, provider) in PROVIDERS.iter().enumerate() {
        let msg = ExecuteMsg::RegisterNode {
            node: format!("gn-{}", i + 1),
            pubkey: pubkey(i as u8),
        };
        s.exec(provider, &msg, 0).unwrap();
    }
}

#[test]
fn the_invariant_holds_after_every_step_of_random_sequences() {
    let mut ok = [0usize; 13];
    for seed in [1, 7, 2026, 0xfeed, 42, 99] {
        for (total, count) in ok.iter_mut().zip(run(seed, 400)) {
            *total += count;
        }
    }
    println!(
        "successful operations per kind (bond, unbond, claim, deposit, withdraw, post, post, finalize, challenge, slash, update params, refused funds, advance): {ok:?}"
    );
    for (kind, count) in ok.iter().enumerate() {
        assert!(*count > 0, "operation kind {kind} never succeeded: {ok:?}");
    }
}

/// The contract's RFC 9162 verifier accepts the RFC 6962 audit path of every leaf of every tree of
/// 1 to 40 leaves (built independently in tests/common), and refuses it for a neighbouring index or
/// with a flipped bit.
#[test]
fn inclusion_proofs_of_every_leaf_verify_and_tampered_ones_do_not() {
    use settlement_contract::evidence::{hash_from_hex, leaf_hash, verify_inclusion};
    for n in 1..=40usize {
        let tree = Tree::new((0..n).map(|i| format!("leaf {i}").into_bytes()).collect());
        let root = tree.root();
        for i in 0..n {
            let e = tree.evidence(i);
            let proof: Vec<[u8; 32]> = e.proof.iter().map(|h| hash_from_hex(h).unwrap()).collect();
            let leaf = leaf_hash(e.receipt.as_slice());
            assert_eq!(
                verify_inclusion(leaf, e.index, e.tree_size, &proof, &root),
                Ok(()),
                "n={n} i={i}"
            );
            let other = (i as u64 + 1) % n as u64;
            if other != i as u64 {
                assert!(
                    verify_inclusion(leaf, other, e.tree_size, &proof, &root).is_err(),
                    "n={n} i={i}"
                );
            }
            if let Some(first) = proof.first() {
                let mut bad = proof.clone();
                bad[0] = {
                    let mut h = *first;
                    h[31] ^= 1;
                    h
                };
                assert!(
                    verify_inclusion(leaf, e.index, e.tree_size, &bad, &root).is_err(),
                    "n={n} i={i}"
                );
            }
        }
    }
}
