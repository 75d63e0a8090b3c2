//! The embedded devnet as the hub uses it: the real contract behind `Chain`, a faucet, block time
//! following the clock, an estimated gas per transaction that does not grow with a batch's
//! receipts, and a chain that survives a restart through its state file.

use serde_json::{Value, json};
use settlement::{
    chain::{Chain, ChainError, Coin},
    devnet::{Devnet, DevnetConfig},
};

const DENOM: &str = "uagora";

fn config(window: u64) -> DevnetConfig {
    DevnetConfig {
        challenge_window_seconds: window,
        min_stake: 1_000,
        ..DevnetConfig::default()
    }
}

fn post_batch(id: &str, receipts: u64, provider: &str, payer: &str, amount: u128) -> Value {
    json!({"post_batch": {
        "id": id,
        "root": "ab".repeat(32),
        "period": {"from_ms": 0, "to_ms": 1},
        "receipts": receipts,
        "provider_totals": [{"address": provider, "amount": amount.to_string()}],
        "payer_totals": [{"address": payer, "amount": amount.to_string()}],
    }})
}

async fn funded(devnet: &Devnet, name: &str, amount: u128) -> String {
    let address = devnet.address(name);
    devnet.fund(&address, amount).await.unwrap();
    address
}

#[tokio::test]
async fn a_batch_is_posted_finalized_and_paid_on_the_devnet() {
    let devnet = Devnet::start(config(0)).unwrap();
    assert!(devnet.label().contains("devnet"), "{}", devnet.label());
    assert!(devnet.address("x").starts_with("agora1"));
    let provider = funded(&devnet, "provider", 5_000).await;
    let payer = funded(&devnet, "payer", 1_000_000).await;
    devnet
        .execute_as(
            &provider,
            json!({"bond": {}}),
            vec![Coin::new(DENOM, 1_000)],
        )
        .await
        .unwrap();
    devnet
        .execute_as(
            &payer,
            json!({"deposit": {}}),
            vec![Coin::new(DENOM, 500_000)],
        )
        .await
        .unwrap();
    let stake = devnet
        .query(json!({"stake": {"operator": provider}}))
        .await
        .unwrap();
    assert_eq!(stake["meets_min_stake"], true, "{stake}");

    let posted = devnet
        .execute(post_batch("epoch-1", 3, &provider, &payer, 40_000), vec![])
        .await
        .unwrap();
    assert_eq!(posted.hash.len(), 64);
    assert!(posted.gas_used > 0);
    let finalized = devnet
        .execute(json!({"finalize_batch": {"id": "epoch-1"}}), vec![])
        .await
        .unwrap();
    assert!(finalized.height > posted.height);
    assert_eq!(
        finalized.attribute("wasm-agora_payout", "net"),
        Some("39000")
    );
    // 40,000 less the 2.5% fee, on top of what the faucet gave and the bond took.
    assert_eq!(
        devnet.balance(&provider, DENOM).await.unwrap(),
        5_000 - 1_000 + 39_000
    );
    assert_eq!(
        devnet.balance(devnet.treasury(), DENOM).await.unwrap(),
        1_000
    );

    // Only the settler posts: the same message from anyone else is refused, and says why.
    let error = devnet
        .execute_as(
            &payer,
            post_batch("epoch-2", 1, &provider, &payer, 1),
            vec![],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(error, ChainError::Refused { .. }) && !error.is_retryable(),
        "{error}"
    );
}

#[tokio::test]
async fn gas_per_batch_does_not_grow_with_its_receipts() {
    let devnet = Devnet::start(config(0)).unwrap();
    let provider = funded(&devnet, "provider", 0).await;
    let payer = funded(&devnet, "payer", 10_000_000).await;
    devnet
        .execute_as(
            &payer,
            json!({"deposit": {}}),
            vec![Coin::new(DENOM, 10_000_000)],
        )
        .await
        .unwrap();
    let mut gas = Vec::new();
    for (i, receipts) in [1u64, 1_000_000].into_iter().enumerate() {
        let outcome = devnet
            .execute(
                post_batch(&format!("epoch-{i}"), receipts, &provider, &payer, 100),
                vec![],
            )
            .await
            .unwrap();
        gas.push(outcome.gas_used);
    }
    // The receipt count is a number in the message and the batch record: six digits more
    // (about 40 gas a byte between the transaction and the store), not a million leaves.
    assert!(gas[1] - gas[0] < 1_000, "{gas:?}");
    // Store writes dominate: the batch record and the payer's reservation.
    assert!(gas[0] > 60_000 + 2 * 2_000, "{gas:?}");
}

#[tokio::test]
async fn a_restarted_devnet_keeps_its_chain() {
    let dir = tempfile::tempdir().unwrap();
    let with_file = || DevnetConfig {
        state_file: Some(dir.path().join("devnet.json")),
        ..config(3_600)
    };
    let devnet = Devnet::start(with_file()).unwrap();
    assert!(!devnet.resumed());
    let provider = funded(&devnet, "provider", 1_000).await;
    let payer = funded(&devnet, "payer", 1_000).await;
    devnet
        .execute_as(&payer, json!({"deposit": {}}), vec![Coin::new(DENOM, 700)])
        .await
        .unwrap();
    let posted = devnet
        .execute(post_batch("epoch-1", 1, &provider, &payer, 300), vec![])
        .await
        .unwrap();
    let contract = devnet.contract().to_string();
    drop(devnet);

    let devnet = Devnet::start(with_file()).unwrap();
    assert!(devnet.resumed());
    assert_eq!(devnet.contract(), contract);
    assert_eq!(devnet.balance(&payer, DENOM).await.unwrap(), 300);
    let batch = devnet
        .query(json!({"batch": {"id": "epoch-1"}}))
        .await
        .unwrap();
    assert_eq!(batch["state"], "posted", "{batch}");
    let escrow = devnet
        .query(json!({"escrow": {"payer": payer}}))
        .await
        .unwrap();
    assert_eq!(
        (escrow["balance"].as_str(), escrow["reserved"].as_str()),
        (Some("700"), Some("300"))
    );
    let next = devnet
        .execute_as(&payer, json!({"withdraw": {"amount": "400"}}), vec![])
        .await
        .unwrap();
    assert!(next.height > posted.height, "heights go on after a restart");
    // The window (an hour) is still open after the restart: finalizing is refused.
    let error = devnet
        .execute(json!({"finalize_batch": {"id": "epoch-1"}}), vec![])
        .await
        .unwrap_err();
    assert!(error.to_string().contains("window"), "{error}");
}
