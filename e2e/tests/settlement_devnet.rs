//! Settlement end to end on the embedded devnet, through the real `agora dev` process: a finished
//! job's receipt lands in a batch that is posted, then final after the challenge window; its
//! Merkle proof checks out against the batch's root (verified here with an independent RFC 6962
//! implementation); the provider's bank balance on the devnet grows by exactly the batch's pay
//! less the protocol fee; and a restarted `agora dev` finds its chain as it left it.
//!
//! Needs the binary: `cargo build --bin agora && cargo test -p e2e`.

use std::time::Duration;

use e2e::{DevHub, poll_until};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Epoch and challenge window in seconds: short, so the test takes seconds, not minutes.
const EPOCH: &str = "2";
const WINDOW: &str = "4";

/// Long enough for a batch to be built, posted and finalized on a loaded machine.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(90);

fn hash(parts: &[&[u8]]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part);
    }
    hasher.finalize().into()
}

/// RFC 6962 §2.1.1 inclusion proof verification, written from the RFC for this test (the hub's
/// own implementation is not used, so the two check each other).
fn verify(leaf: &[u8], index: u64, size: u64, path: &[[u8; 32]], root: &[u8; 32]) -> bool {
    if index >= size {
        return false;
    }
    let (mut fn_, mut sn) = (index, size - 1);
    let mut r = hash(&[&[0], leaf]);
    for p in path {
        if sn == 0 {
            return false;
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = hash(&[&[1], p, &r]);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            r = hash(&[&[1], &r, p]);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    sn == 0 && &r == root
}

fn hex32(value: &Value) -> [u8; 32] {
    hex::decode(value.as_str().expect("hex"))
        .expect("hex")
        .try_into()
        .expect("32 bytes")
}

fn amount(value: &Value) -> u128 {
    value
        .as_str()
        .unwrap_or_else(|| panic!("an amount string, got {value}"))
        .parse()
        .expect("an integer amount")
}

#[test]
fn a_finished_job_is_paid_on_the_devnet_with_a_proof_anyone_can_check() {
    let dir = tempfile::tempdir().unwrap();
    let flags = [
        "--settlement-epoch-seconds",
        EPOCH,
        "--devnet-challenge-window-seconds",
        WINDOW,
    ];
    let mut hub = DevHub::start_with(dir.path(), 1, &flags);
    let api = hub.api();

    let chain = api.get_ok("/v1/settlement/chain").unwrap();
    assert_eq!(chain["devnet"], true, "{chain}");
    assert!(
        chain["label"].as_str().unwrap().contains("devnet"),
        "the devnet says it is one: {chain}"
    );
    let fee_bps = u128::from(chain["params"]["protocol_fee_bps"].as_u64().unwrap());
    let min_stake = amount(&chain["params"]["min_stake"]);

    // The quickstart job (ten seconds of one GPU) on the one simulated node.
    let job = hub
        .cli(&[
            "job",
            "submit",
            "examples/quickstart.yaml",
            "--wait",
            "-o",
            "json",
        ])
        .assert_success()
        .json();
    let job_id = job["id"].as_str().unwrap().to_string();
    assert_eq!(job["status"]["phase"], "Succeeded", "{job:#}");
    // `agora dev --agents 1` runs one simulated node.
    let node = "gn-sim-0";

    // Its receipt goes into a batch; the batch is posted, then final once the window is over.
    let receipt = poll_until("the job's receipt in a batch", SETTLE_TIMEOUT, || {
        let list = api.get_ok(&format!("/v1/receipts?job={job_id}"))?;
        list["items"]
            .as_array()
            .and_then(|items| items.iter().find(|r| r["batch"].is_string()).cloned())
            .ok_or_else(|| format!("{list}"))
    });
    let batch_id = receipt["batch"].as_str().unwrap().to_string();
    let mut states = Vec::new();
    let batch = poll_until("the batch to go final", SETTLE_TIMEOUT, || {
        let batch = api.get_ok(&format!("/v1/settlement/batches/{batch_id}"))?;
        let state = batch["state"].as_str().unwrap_or_default().to_string();
        if states.last() != Some(&state) {
            states.push(state.clone());
        }
        if state == "final" {
            Ok(batch)
        } else {
            Err(format!("{batch}"))
        }
    });
    assert!(
        states.len() >= 2 && states.contains(&"confirmed".to_string()),
        "the batch was seen posted on chain before it went final: {states:?}"
    );
    assert!(batch["tx"].is_string(), "{batch}");

    // The proof the API serves checks against the batch's root.
    let receipt_id = receipt["id"].as_str().unwrap();
    let proof = api
        .get_ok(&format!("/v1/receipts/{receipt_id}/proof"))
        .unwrap();
    assert_eq!(proof["root"], batch["root"]);
    assert_eq!(proof["batch"], batch_id.as_str());
    let leaf = hex::decode(proof["leaf"].as_str().unwrap()).unwrap();
    let path: Vec<[u8; 32]> = proof["path"]
        .as_array()
        .unwrap()
        .iter()
        .map(hex32)
        .collect();
    let root = hex32(&proof["root"]);
    let (index, size) = (
        proof["index"].as_u64().unwrap(),
        proof["tree_size"].as_u64().unwrap(),
    );
    assert!(verify(&leaf, index, size, &path, &root), "{proof:#}");
    let mut tampered = leaf.clone();
    tampered[leaf.len() - 1] ^= 1;
    assert!(!verify(&tampered, index, size, &path, &root));

    // The provider: bonded from the devnet faucet, paid exactly the batch's amount less the fee.
    let operator = api.node(node).unwrap()["spec"]["operatorAddress"]
        .as_str()
        .expect("the devnet gave the node an operator address")
        .to_string();
    let gross: u128 = batch["providerTotals"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["address"] == operator.as_str())
        .map(|t| amount(&t["amount"]))
        .sum();
    assert!(gross > 0, "the batch pays the node's operator: {batch}");
    let net = gross - gross * fee_bps / 10_000;
    let account = api.get_ok(&format!("/v1/operators/{operator}")).unwrap();
    assert_eq!(amount(&account["balance"]), net, "{account}");
    assert_eq!(amount(&account["bonded"]), min_stake, "{account}");
    assert_eq!(account["meetsMinStake"], true);
    assert!(
        account["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n == node),
        "the node's key is registered to its operator: {account}"
    );

    // The contract's books balance to the unit.
    let totals = &api.get_ok("/v1/settlement/chain").unwrap()["totals"];
    assert_eq!(totals["held"], totals["balance"], "{totals}");
    assert_eq!(amount(&totals["payouts"]), net);
    assert_eq!(amount(&totals["fees"]), gross - net);

    // A restarted `agora dev` finds its chain as it left it.
    hub.restart();
    let api = hub.api();
    let account = api.get_ok(&format!("/v1/operators/{operator}")).unwrap();
    assert_eq!(amount(&account["balance"]), net, "{account}");
    let after = &api.get_ok("/v1/settlement/chain").unwrap()["totals"];
    assert_eq!(after, totals);
}
