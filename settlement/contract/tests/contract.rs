//! Every message of the settlement contract on a cw-multi-test chain, accepted and refused, each
//! scenario ending with the invariant check (`Suite::check_invariant`).

mod common;

use common::*;
use cosmwasm_std::{Decimal, Uint128, coin};
use settlement_contract::msg::{
    BatchResponse, BatchState, BatchesResponse, ClaimsResponse, ConfigResponse, EscrowResponse,
    EscrowsResponse, ExecuteMsg, NodeResponse, NodesResponse, OperatorResponse, OperatorsResponse,
    Params, QueryMsg, SlashReason, StakeResponse,
};

fn escrow(suite: &Suite, payer: &str) -> EscrowResponse {
    suite.query(&QueryMsg::Escrow {
        payer: suite.addr(payer).into(),
    })
}

fn operator(suite: &Suite, name: &str) -> OperatorResponse {
    suite.query(&QueryMsg::Operator {
        address: suite.addr(name).into(),
    })
}

fn batch(suite: &Suite, id: &str) -> BatchResponse {
    suite.query(&QueryMsg::Batch { id: id.into() })
}

fn register(suite: &mut Suite, operator: &str, node: &str, seed: u8) {
    suite
        .exec(
            operator,
            &ExecuteMsg::RegisterNode {
                node: node.into(),
                pubkey: pubkey(seed),
            },
            0,
        )
        .unwrap();
}

fn assert_err(result: Result<impl std::fmt::Debug, String>, expected: &str) {
    let err = result.expect_err("expected the contract to refuse");
    assert!(
        err.contains(expected),
        "error {err:?} does not contain {expected:?}"
    );
}

#[test]
fn instantiate_refuses_impossible_params_naming_the_field() {
    let mut p = params();
    p.protocol_fee_bps = 10_001;
    assert_err(Suite::try_with(p).map(|_| ()), "params.protocol_fee_bps");
    let mut p = params();
    p.slash_ratios.cheating = Decimal::percent(101);
    assert_err(
        Suite::try_with(p).map(|_| ()),
        "params.slash_ratios.cheating",
    );
    let mut p = params();
    p.denom = String::new();
    assert_err(Suite::try_with(p).map(|_| ()), "params.denom");

    let suite = Suite::new();
    let config: ConfigResponse = suite.query(&QueryMsg::Config {});
    assert_eq!(config.settler, suite.addr("settler").as_str());
    assert_eq!(config.treasury, suite.addr("treasury").as_str());
    let stored: Params = suite.query(&QueryMsg::Params {});
    assert_eq!(stored, params());
    suite.check_invariant();
}

#[test]
fn bond_unbond_and_claim_after_the_unbonding_period() {
    let mut s = Suite::new();
    assert_err(
        s.exec("provider1", &ExecuteMsg::Bond {}, 999),
        "below the minimum stake 1000",
    );
    assert_err(
        s.exec("provider1", &ExecuteMsg::Bond {}, 0),
        "send exactly one coin of uagora, got nothing",
    );
    assert_err(
        s.exec_funds(
            "provider1",
            &ExecuteMsg::Bond {},
            &[coin(5_000, OTHER_DENOM)],
        ),
        "got 5000uother",
    );
    let before = s.balance("provider1");
    s.exec("provider1", &ExecuteMsg::Bond {}, 5_000).unwrap();
    // Topping up below the minimum is fine once the total meets it.
    s.exec("provider1", &ExecuteMsg::Bond {}, 1).unwrap();
    assert_eq!(s.balance("provider1"), before - 5_001);

    assert_err(
        s.exec(
            "provider1",
            &ExecuteMsg::Unbond {
                amount: Uint128::new(5_002),
            },
            0,
        ),
        "only 5001 is bonded",
    );
    assert_err(
        s.exec(
            "provider1",
            &ExecuteMsg::Unbond {
                amount: Uint128::zero(),
            },
            0,
        ),
        "more than zero",
    );
    let res = s
        .exec(
            "provider1",
            &ExecuteMsg::Unbond {
                amount: Uint128::new(2_001),
            },
            0,
        )
        .unwrap();
    assert!(res.has_event(&cosmwasm_std::Event::new("wasm").add_attribute("action", "unbond")));
    let stake: StakeResponse = s.query(&QueryMsg::Stake {
        operator: s.addr("provider1").into(),
    });
    assert_eq!(
        (stake.bonded.u128(), stake.unbonding.u128()),
        (3_000, 2_001)
    );
    assert!(stake.meets_min_stake && !stake.jailed);
    let claims: ClaimsResponse = s.query(&QueryMsg::Claims {
        operator: s.addr("provider1").into(),
    });
    assert_eq!(claims.claims.len(), 1);
    assert_eq!(claims.claims[0].release_at, s.now() + 100);

    s.advance(99);
    assert_err(
        s.exec("provider1", &ExecuteMsg::Claim {}, 0),
        "nothing has matured",
    );
    s.check_invariant();
    s.advance(1);
    s.exec("provider1", &ExecuteMsg::Claim {}, 0).unwrap();
    assert_eq!(s.balance("provider1"), before - 3_000);
    assert_err(
        s.exec("provider1", &ExecuteMsg::Claim {}, 0),
        "never: no claims",
    );
    let t = s.totals();
    assert_eq!(
        (t.stakes.u128(), t.claims_paid.u128(), t.bonded.u128()),
        (5_001, 2_001, 3_000)
    );
    s.check_invariant();
}

#[test]
fn register_node_validates_the_key_and_binds_a_name_to_one_operator() {
    let mut s = Suite::new();
    for (key, expected) in [
        ("zz".repeat(33), "not hex"),
        ("02".repeat(32), "got 32 bytes"),
        (format!("04{}", "11".repeat(32)), "starting 02 or 03"),
        (
            format!("02{}", "ff".repeat(32)),
            "not a point on the secp256k1 curve",
        ),
    ] {
        assert_err(
            s.exec(
                "provider1",
                &ExecuteMsg::RegisterNode {
                    node: "gn-a".into(),
                    pubkey: key,
                },
                0,
            ),
            expected,
        );
    }
    assert_err(
        s.exec(
            "provider1",
            &ExecuteMsg::RegisterNode {
                node: "gn a".into(),
                pubkey: pubkey(1),
            },
            0,
        ),
        "invalid node",
    );
    register(&mut s, "provider1", "gn-a", 1);
    register(&mut s, "provider1", "gn-b", 2);
    assert_err(
        s.exec(
            "provider2",
            &ExecuteMsg::RegisterNode {
                node: "gn-a".into(),
                pubkey: pubkey(3),
            },
            0,
        ),
        "registered to another operator",
    );
    // The owner may rotate the key; the key is stored lowercase.
    let upper = pubkey(0xab).to_uppercase();
    s.exec(
        "provider1",
        &ExecuteMsg::RegisterNode {
            node: "gn-a".into(),
            pubkey: upper,
        },
        0,
    )
    .unwrap();
    let node: NodeResponse = s.query(&QueryMsg::Node {
        node: "gn-a".into(),
    });
    assert_eq!(
        (node.operator.as_str(), node.pubkey),
        (s.addr("provider1").as_str(), pubkey(0xab))
    );
    assert_eq!(operator(&s, "provider1").nodes, vec!["gn-a", "gn-b"]);
    assert_err(
        s.try_query::<NodeResponse>(&QueryMsg::Node {
            node: "gn-z".into(),
        }),
        "gn-z is not registered",
    );
    s.check_invariant();
}

#[test]
fn withdraw_only_what_no_posted_batch_reserves() {
    let mut s = Suite::new();
    assert_err(s.exec("payer1", &ExecuteMsg::Deposit {}, 0), "got nothing");
    assert_err(
        s.exec_funds(
            "payer1",
            &ExecuteMsg::Deposit {},
            &[coin(10, DENOM), coin(10, OTHER_DENOM)],
        ),
        "send exactly one coin",
    );
    s.exec("payer1", &ExecuteMsg::Deposit {}, 10_000).unwrap();
    assert_err(
        s.exec(
            "payer1",
            &ExecuteMsg::Withdraw {
                amount: Uint128::new(10_001),
            },
            0,
        ),
        "only 10000 of the escrow is free",
    );
    s.exec(
        "settler",
        &post_batch(
            "b1",
            [7; 32],
            3,
            vec![total(&s, "provider1", 6_000)],
            vec![total(&s, "payer1", 6_000)],
        ),
        0,
    )
    .unwrap();
    let e = escrow(&s, "payer1");
    assert_eq!(
        (e.balance.u128(), e.reserved.u128(), e.free.u128()),
        (10_000, 6_000, 4_000)
    );
    assert_err(
        s.exec(
            "payer1",
            &ExecuteMsg::Withdraw {
                amount: Uint128::new(4_001),
            },
            0,
        ),
        "(6000 reserved by posted batches)",
    );
    let before = s.balance("payer1");
    s.exec(
        "payer1",
        &ExecuteMsg::Withdraw {
            amount: Uint128::new(4_000),
        },
        0,
    )
    .unwrap();
    assert_eq!(s.balance("payer1"), before + 4_000);
    assert_err(
        s.exec(
            "payer1",
            &ExecuteMsg::Withdraw {
                amount: Uint128::zero(),
            },
            0,
        ),
        "more than zero",
    );
    // Funds sent with a message that takes none are refused, not kept outside every account.
    assert_err(
        s.exec(
            "payer1",
            &ExecuteMsg::Withdraw {
                amount: Uint128::new(1),
            },
            5,
        ),
        "this message takes no funds, got 5uagora",
    );
    assert_err(
        s.exec("provider1", &ExecuteMsg::Claim {}, 5),
        "takes no funds",
    );
    s.check_invariant();
}

#[test]
fn post_batch_is_the_settlers_idempotent_and_covered_by_escrow() {
    let mut s = Suite::new();
    s.exec("payer1", &ExecuteMsg::Deposit {}, 1_000).unwrap();
    s.exec("payer2", &ExecuteMsg::Deposit {}, 500).unwrap();
    let providers = vec![total(&s, "provider1", 900), total(&s, "provider2", 300)];
    let payers = vec![total(&s, "payer1", 700), total(&s, "payer2", 500)];
    let msg = post_batch("epoch-1", [1; 32], 4, providers.clone(), payers.clone());

    assert_err(
        s.exec("stranger", &msg, 0),
        "only the settler may post batches",
    );
    assert_err(s.exec("admin", &msg, 0), "only the settler");
    assert_err(
        s.exec(
            "settler",
            &post_batch(
                "epoch-1",
                [1; 32],
                4,
                providers.clone(),
                vec![total(&s, "payer1", 1_100)],
            ),
            0,
        ),
        "provider totals sum to 1200 but payer totals to 1100",
    );
    let short = vec![total(&s, "payer1", 1_001), total(&s, "payer2", 199)];
    let payer1 = s.addr("payer1");
    assert_err(
        s.exec(
            "settler",
            &post_batch("epoch-1", [1; 32], 4, providers.clone(), short),
            0,
        ),
        &format!("payer {payer1} has 1000 free in escrow, less than its total 1001"),
    );
    assert_err(
        s.exec(
            "settler",
            &ExecuteMsg::PostBatch {
                id: "epoch-1".into(),
                root: "abcd".into(),
                period: settlement_contract::msg::Period {
                    from_ms: 0,
                    to_ms: 1,
                },
                receipts: 4,
                provider_totals: providers.clone(),
                payer_totals: payers.clone(),
            },
            0,
        ),
        "invalid root",
    );
    assert_err(
        s.exec(
            "settler",
            &post_batch("epoch-1", [1; 32], 0, providers.clone(), payers.clone()),
            0,
        ),
        "invalid receipts",
    );
    let to_itself = vec![
        total(&s, "provider1", 900),
        settlement_contract::msg::Total {
            address: s.contract.to_string(),
            amount: Uint128::new(300),
        },
    ];
    assert_err(
        s.exec(
            "settler",
            &post_batch("epoch-1", [1; 32], 4, to_itself, payers.clone()),
            0,
        ),
        "provider_totals[1].address: is this contract",
    );
    let dup = vec![total(&s, "payer1", 600), total(&s, "payer1", 600)];
    assert_err(
        s.exec(
            "settler",
            &post_batch("epoch-1", [1; 32], 4, providers.clone(), dup),
            0,
        ),
        "payer_totals[1]",
    );

    let res = s.exec("settler", &msg, 0).unwrap();
    assert!(
        res.has_event(
            &cosmwasm_std::Event::new("wasm")
                .add_attribute("action", "post_batch")
                .add_attribute("id", "epoch-1")
                .add_attribute("duplicate", "false")
        )
    );
    // Resending the same batch (a relayer retry) changes nothing.
    let res = s.exec("settler", &msg, 0).unwrap();
    assert!(res.has_event(&cosmwasm_std::Event::new("wasm").add_attribute("duplicate", "true")));
    assert_eq!(escrow(&s, "payer1").reserved.u128(), 700);
    assert_eq!(s.totals().reserved.u128(), 1_200);
    // The same id with other content is refused.
    assert_err(
        s.exec(
            "settler",
            &post_batch("epoch-1", [2; 32], 4, providers.clone(), payers.clone()),
            0,
        ),
        "batch epoch-1 was already posted with different content",
    );
    let b = batch(&s, "epoch-1");
    assert_eq!(
        (b.state, b.receipts, b.posted_at),
        (BatchState::Posted, 4, s.now())
    );
    assert_eq!(b.root, hex::encode([1u8; 32]));
    assert_eq!(b.challenge_ends_at, s.now() + 60);
    s.check_invariant();
}

#[test]
fn finalize_after_the_window_pays_providers_less_the_fee_to_the_unit() {
    let mut s = Suite::new();
    s.exec("payer1", &ExecuteMsg::Deposit {}, 5_000).unwrap();
    // 999 at 250 bps: fee floor(24.975) = 24, provider 975; 1 at 250 bps: fee 0, provider 1.
    let providers = vec![total(&s, "provider1", 999), total(&s, "provider2", 1)];
    s.exec(
        "settler",
        &post_batch("b", [3; 32], 2, providers, vec![total(&s, "payer1", 1_000)]),
        0,
    )
    .unwrap();
    s.advance(59);
    assert_err(
        s.exec("stranger", &ExecuteMsg::FinalizeBatch { id: "b".into() }, 0),
        "1 s from now",
    );
    assert_err(
        s.exec(
            "stranger",
            &ExecuteMsg::FinalizeBatch { id: "nope".into() },
            0,
        ),
        "batch nope not found",
    );
    s.advance(1);
    let (p1, p2, treasury) = (
        s.balance("provider1"),
        s.balance("provider2"),
        s.balance("treasury"),
    );
    let res = s
        .exec("stranger", &ExecuteMsg::FinalizeBatch { id: "b".into() }, 0)
        .unwrap();
    assert!(
        res.has_event(
            &cosmwasm_std::Event::new("wasm-agora_payout")
                .add_attribute("provider", s.addr("provider1"))
                .add_attribute("gross", "999")
                .add_attribute("fee", "24")
                .add_attribute("net", "975")
        )
    );
    assert_eq!(s.balance("provider1"), p1 + 975);
    assert_eq!(s.balance("provider2"), p2 + 1);
    assert_eq!(s.balance("treasury"), treasury + 24);
    let e = escrow(&s, "payer1");
    assert_eq!((e.balance.u128(), e.reserved.u128()), (4_000, 0));
    let b = batch(&s, "b");
    assert_eq!(
        (b.state, b.fee, b.closed_at),
        (BatchState::Final, Some(Uint128::new(24)), Some(s.now()))
    );
    let t = s.totals();
    assert_eq!((t.payouts.u128(), t.fees.u128()), (976, 24));
    // Finalizing again (a relayer retry) pays nothing twice.
    s.exec("stranger", &ExecuteMsg::FinalizeBatch { id: "b".into() }, 0)
        .unwrap();
    assert_eq!(s.balance("provider1"), p1 + 975);
    // A final batch cannot be challenged any more.
    let tree = Tree::new(vec![b"x".to_vec(), b"y".to_vec()]);
    assert_err(
        s.exec(
            "stranger",
            &ExecuteMsg::Challenge {
                batch: "b".into(),
                evidence: tree.evidence(0),
            },
            0,
        ),
        "batch b is final, not posted",
    );
    s.check_invariant();
}

/// A batch of three receipts: a valid one of provider1's node `gn-a`, one claiming more GPU time
/// than its GPUs had, and one of `gn-c` (registered to provider2, whom the batch does not credit).
fn challenge_setup() -> (Suite, Tree) {
    let mut s = Suite::new();
    register(&mut s, "provider1", "gn-a", 1);
    register(&mut s, "provider2", "gn-c", 3);
    s.exec("payer1", &ExecuteMsg::Deposit {}, 2_000).unwrap();
    let valid = ReceiptFields {
        node: "gn-a",
        gpus: 2,
        started_at_ms: 1_000,
        until_ms: 61_000,
        gpu_millis: 120_000,
    };
    let too_much = ReceiptFields {
        gpu_millis: 120_001,
        ..valid
    };
    let other = ReceiptFields {
        node: "gn-c",
        ..valid
    };
    let tree = Tree::new(vec![
        encode_receipt(&valid),
        encode_receipt(&too_much),
        encode_receipt(&other),
    ]);
    s.exec(
        "settler",
        &post_batch(
            "c",
            tree.root(),
            tree.size(),
            vec![total(&s, "provider1", 1_500)],
            vec![total(&s, "payer1", 1_500)],
        ),
        0,
    )
    .unwrap();
    (s, tree)
}

#[test]
fn a_valid_included_receipt_or_a_bad_proof_does_not_overturn_a_batch() {
    let (mut s, tree) = challenge_setup();
    assert_err(
        s.exec(
            "stranger",
            &ExecuteMsg::Challenge {
                batch: "c".into(),
                evidence: tree.evidence(0),
            },
            0,
        ),
        "the evidence does not contradict batch c: the receipt is valid and node gn-a is registered",
    );
    let mut wrong_index = tree.evidence(1);
    wrong_index.index = 0;
    assert_err(
        s.exec(
            "stranger",
            &ExecuteMsg::Challenge {
                batch: "c".into(),
                evidence: wrong_index,
            },
            0,
        ),
        "the receipt is not in batch c",
    );
    let mut wrong_size = tree.evidence(1);
    wrong_size.tree_size = 4;
    assert_err(
        s.exec(
            "stranger",
            &ExecuteMsg::Challenge {
                batch: "c".into(),
                evidence: wrong_size,
            },
            0,
        ),
        "tree_size 4 but the batch has 3 receipts",
    );
    let mut short = tree.evidence(1);
    short.proof.pop();
    assert_err(
        s.exec(
            "stranger",
            &ExecuteMsg::Challenge {
                batch: "c".into(),
                evidence: short,
            },
            0,
        ),
        "shorter than the path",
    );
    let mut bad_hex = tree.evidence(1);
    bad_hex.proof[0] = "xyz".into();
    assert_err(
        s.exec(
            "stranger",
            &ExecuteMsg::Challenge {
                batch: "c".into(),
                evidence: bad_hex,
            },
            0,
        ),
        "evidence.proof[0]",
    );
    // A receipt not in the tree, even an invalid one, proves nothing about this batch.
    let mut outsider = tree.evidence(1);
    outsider.receipt = b"not in the tree".to_vec().into();
    assert_err(
        s.exec(
            "stranger",
            &ExecuteMsg::Challenge {
                batch: "c".into(),
                evidence: outsider,
            },
            0,
        ),
        "different root",
    );
    assert_eq!(batch(&s, "c").state, BatchState::Posted);
    s.check_invariant();
}

#[test]
fn an_impossible_receipt_in_the_tree_overturns_the_batch_and_frees_the_escrow() {
    let (mut s, tree) = challenge_setup();
    let res = s
        .exec(
            "stranger",
            &ExecuteMsg::Challenge {
                batch: "c".into(),
                evidence: tree.evidence(1),
            },
            0,
        )
        .unwrap();
    assert!(
        res.has_event(
            &cosmwasm_std::Event::new("wasm")
                .add_attribute("action", "challenge")
                .add_attribute("released", "1500")
        )
    );
    let b = batch(&s, "c");
    assert_eq!(b.state, BatchState::Challenged);
    let reason = b.challenge.unwrap();
    assert!(
        reason.contains("120001 GPU-ms is more than 2 GPUs can run in 60000 ms"),
        "{reason}"
    );
    assert_eq!(escrow(&s, "payer1").reserved.u128(), 0);
    assert_err(
        s.exec(
            "stranger",
            &ExecuteMsg::Challenge {
                batch: "c".into(),
                evidence: tree.evidence(2),
            },
            0,
        ),
        "batch c is challenged, not posted",
    );
    s.advance(60);
    let provider1 = s.balance("provider1");
    assert_err(
        s.exec("stranger", &ExecuteMsg::FinalizeBatch { id: "c".into() }, 0),
        "batch c is challenged",
    );
    assert_eq!(s.balance("provider1"), provider1);
    // The whole escrow is free again.
    s.exec(
        "payer1",
        &ExecuteMsg::Withdraw {
            amount: Uint128::new(2_000),
        },
        0,
    )
    .unwrap();
    s.check_invariant();
}

#[test]
fn a_receipt_of_a_node_the_batch_does_not_credit_overturns_it_within_the_window_only() {
    let (mut s, tree) = challenge_setup();
    s.advance(59);
    s.exec(
        "stranger",
        &ExecuteMsg::Challenge {
            batch: "c".into(),
            evidence: tree.evidence(2),
        },
        0,
    )
    .unwrap();
    let reason = batch(&s, "c").challenge.unwrap();
    assert!(
        reason.contains(&format!(
            "node gn-c is registered to {}, whom the batch does not credit",
            s.addr("provider2")
        )),
        "{reason}"
    );
    s.check_invariant();

    let (mut s, tree) = challenge_setup();
    s.advance(60);
    assert_err(
        s.exec(
            "stranger",
            &ExecuteMsg::Challenge {
                batch: "c".into(),
                evidence: tree.evidence(1),
            },
            0,
        ),
        "challenge window ended",
    );
    s.exec("stranger", &ExecuteMsg::FinalizeBatch { id: "c".into() }, 0)
        .unwrap();
    s.check_invariant();
}

#[test]
fn slash_takes_bonded_then_unbonding_stake_to_the_treasury_and_jails() {
    let mut s = Suite::new();
    s.exec("provider1", &ExecuteMsg::Bond {}, 10_000).unwrap();
    s.exec(
        "provider1",
        &ExecuteMsg::Unbond {
            amount: Uint128::new(3_000),
        },
        0,
    )
    .unwrap();
    s.exec(
        "provider1",
        &ExecuteMsg::Unbond {
            amount: Uint128::new(1_000),
        },
        0,
    )
    .unwrap();
    let operator_addr = s.addr("provider1").to_string();
    let slash = |reason, evidence: &str| ExecuteMsg::Slash {
        operator: operator_addr.clone(),
        reason,
        evidence: evidence.into(),
    };
    let cheating = slash(SlashReason::Cheating, "batch c, leaf 1");
    assert_err(
        s.exec("provider2", &cheating, 0),
        "only the settler or admin may slash",
    );
    assert_err(
        s.exec("settler", &slash(SlashReason::Cheating, " "), 0),
        "invalid evidence",
    );
    assert_err(
        s.exec(
            "settler",
            &slash(SlashReason::Cheating, &"x".repeat(1025)),
            0,
        ),
        "1 to 1024 bytes",
    );

    // 50% of 10,000 (6,000 bonded + 4,000 unbonding) = 5,000, all out of the bonded 6,000.
    let treasury = s.balance("treasury");
    let res = s.exec("settler", &cheating, 0).unwrap();
    assert!(
        res.has_event(
            &cosmwasm_std::Event::new("wasm")
                .add_attribute("action", "slash")
                .add_attribute("reason", "cheating")
                .add_attribute("amount", "5000")
                .add_attribute("from_bonded", "5000")
                .add_attribute("from_unbonding", "0")
        )
    );
    assert_eq!(s.balance("treasury"), treasury + 5_000);
    let op = operator(&s, "provider1");
    assert_eq!(
        (op.bonded.u128(), op.unbonding.u128(), op.slashed.u128()),
        (1_000, 4_000, 5_000)
    );
    assert!(op.jailed && op.jailed_until == s.now() + 3_600);
    s.check_invariant();

    // Fraud takes everything: 1,000 bonded, then the newest claim (1,000), then the older (3,000).
    let res = s
        .exec("admin", &slash(SlashReason::Fraud, "double signing"), 0)
        .unwrap();
    assert!(
        res.has_event(
            &cosmwasm_std::Event::new("wasm")
                .add_attribute("amount", "5000")
                .add_attribute("from_unbonding", "4000")
        )
    );
    let claims: ClaimsResponse = s.query(&QueryMsg::Claims {
        operator: s.addr("provider1").into(),
    });
    assert!(claims.claims.is_empty());
    s.check_invariant();

    // Jailed: no new nodes until the jail ends.
    assert_err(
        s.exec(
            "provider1",
            &ExecuteMsg::RegisterNode {
                node: "gn-j".into(),
                pubkey: pubkey(9),
            },
            0,
        ),
        "is jailed until",
    );
    s.advance(3_600);
    register(&mut s, "provider1", "gn-j", 9);
    assert!(!operator(&s, "provider1").jailed);
    s.check_invariant();
}

#[test]
fn a_partial_slash_reaches_into_the_newest_claim_first() {
    let mut s = Suite::new();
    s.exec("provider1", &ExecuteMsg::Bond {}, 10_000).unwrap();
    s.exec(
        "provider1",
        &ExecuteMsg::Unbond {
            amount: Uint128::new(6_000),
        },
        0,
    )
    .unwrap();
    s.advance(10);
    s.exec(
        "provider1",
        &ExecuteMsg::Unbond {
            amount: Uint128::new(3_000),
        },
        0,
    )
    .unwrap();
    // 1,000 bonded; 50% of 10,000 = 5,000 → 1,000 bonded, 3,000 newest claim, 1,000 of the oldest.
    s.exec(
        "settler",
        &ExecuteMsg::Slash {
            operator: s.addr("provider1").into(),
            reason: SlashReason::Cheating,
            evidence: "batch 9".into(),
        },
        0,
    )
    .unwrap();
    let claims: ClaimsResponse = s.query(&QueryMsg::Claims {
        operator: s.addr("provider1").into(),
    });
    assert_eq!(claims.claims.len(), 1);
    assert_eq!(claims.claims[0].amount.u128(), 5_000);
    s.advance(100);
    let before = s.balance("provider1");
    s.exec("provider1", &ExecuteMsg::Claim {}, 0).unwrap();
    assert_eq!(s.balance("provider1"), before + 5_000);
    s.check_invariant();
}

#[test]
fn only_the_admin_updates_params_and_config_and_the_denom_is_fixed() {
    let mut s = Suite::new();
    let mut p = params();
    p.protocol_fee_bps = 100;
    p.challenge_window_seconds = 5;
    assert_err(
        s.exec(
            "settler",
            &ExecuteMsg::UpdateParams { params: p.clone() },
            0,
        ),
        "only the admin may update params",
    );
    let mut bad = p.clone();
    bad.denom = "uatom".into();
    assert_err(
        s.exec("admin", &ExecuteMsg::UpdateParams { params: bad }, 0),
        "the denom cannot change from uagora",
    );
    let mut bad = p.clone();
    bad.slash_ratios.fraud = Decimal::percent(200);
    assert_err(
        s.exec("admin", &ExecuteMsg::UpdateParams { params: bad }, 0),
        "params.slash_ratios.fraud",
    );
    s.exec("admin", &ExecuteMsg::UpdateParams { params: p.clone() }, 0)
        .unwrap();
    assert_eq!(s.query::<Params>(&QueryMsg::Params {}), p);

    let new_settler = s.addr("stranger");
    assert_err(
        s.exec(
            "settler",
            &ExecuteMsg::UpdateConfig {
                settler: Some(new_settler.to_string()),
                admin: None,
                treasury: None,
            },
            0,
        ),
        "only the admin",
    );
    assert_err(
        s.exec(
            "admin",
            &ExecuteMsg::UpdateConfig {
                settler: Some("not an address".into()),
                admin: None,
                treasury: None,
            },
            0,
        ),
        "invalid settler",
    );
    s.exec(
        "admin",
        &ExecuteMsg::UpdateConfig {
            settler: Some(new_settler.to_string()),
            admin: None,
            treasury: None,
        },
        0,
    )
    .unwrap();
    s.exec("payer1", &ExecuteMsg::Deposit {}, 100).unwrap();
    let msg = post_batch(
        "x",
        [5; 32],
        1,
        vec![total(&s, "provider1", 100)],
        vec![total(&s, "payer1", 100)],
    );
    assert_err(s.exec("settler", &msg, 0), "only the settler");
    s.exec("stranger", &msg, 0).unwrap();
    // The new fee applies at finalization: 1% of 100.
    s.advance(5);
    let treasury = s.balance("treasury");
    s.exec("stranger", &ExecuteMsg::FinalizeBatch { id: "x".into() }, 0)
        .unwrap();
    assert_eq!(s.balance("treasury"), treasury + 1);
    s.check_invariant();
}

#[test]
fn lists_are_paginated_by_key() {
    let mut s = Suite::new();
    for payer in ["payer1", "payer2", "payer3"] {
        s.exec(payer, &ExecuteMsg::Deposit {}, 1_000).unwrap();
    }
    for (i, id) in ["b-1", "b-2", "b-3"].iter().enumerate() {
        let msg = post_batch(
            id,
            [i as u8; 32],
            1,
            vec![total(&s, "provider1", 10)],
            vec![total(&s, "payer1", 10)],
        );
        s.exec("settler", &msg, 0).unwrap();
    }
    let page: BatchesResponse = s.query(&QueryMsg::Batches {
        start_after: None,
        limit: Some(2),
    });
    assert_eq!(
        page.batches
            .iter()
            .map(|b| b.id.as_str())
            .collect::<Vec<_>>(),
        ["b-1", "b-2"]
    );
    let page: BatchesResponse = s.query(&QueryMsg::Batches {
        start_after: Some("b-2".into()),
        limit: None,
    });
    assert_eq!(
        page.batches
            .iter()
            .map(|b| b.id.as_str())
            .collect::<Vec<_>>(),
        ["b-3"]
    );

    let all: EscrowsResponse = s.query(&QueryMsg::Escrows {
        start_after: None,
        limit: None,
    });
    assert_eq!(all.escrows.len(), 3);
    let rest: EscrowsResponse = s.query(&QueryMsg::Escrows {
        start_after: Some(all.escrows[0].payer.clone()),
        limit: Some(5),
    });
    assert_eq!(rest.escrows, all.escrows[1..]);

    register(&mut s, "provider1", "gn-1", 1);
    register(&mut s, "provider2", "gn-2", 2);
    s.exec("provider3", &ExecuteMsg::Bond {}, 1_000).unwrap();
    let nodes: NodesResponse = s.query(&QueryMsg::Nodes {
        start_after: Some("gn-1".into()),
        limit: None,
    });
    assert_eq!(
        nodes
            .nodes
            .iter()
            .map(|n| n.node.as_str())
            .collect::<Vec<_>>(),
        ["gn-2"]
    );
    let ops: OperatorsResponse = s.query(&QueryMsg::Operators {
        start_after: None,
        limit: None,
    });
    assert_eq!(ops.operators.len(), 3);
    s.check_invariant();
}
