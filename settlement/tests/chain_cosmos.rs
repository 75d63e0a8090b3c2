//! The Cosmos chain client against a minimal CometBFT 0.38 JSON-RPC double on loopback.
//!
//! There is no Cosmos node on this machine. The double (`RpcDouble`, a real HTTP server) answers
//! `abci_query` (account, simulate, smart query), `broadcast_tx_sync` and `tx` in the JSON shapes
//! CometBFT 0.38 uses, keeps an account sequence that it checks every transaction against the way
//! the SDK's ante handler does, and records every byte the client sent. The tests decode those
//! bytes (cosmrs, prost) and verify the signature with an independent secp256k1 implementation
//! (k256 0.14, not the k256 0.13 cosmrs signs with) over the SignDoc they rebuild from the
//! expected chain id and account number.
#![cfg(feature = "chain")]

use axum::Json;
use axum::extract::State;
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use cosmrs::proto::cosmos::auth::v1beta1::{
    BaseAccount, QueryAccountRequest, QueryAccountResponse,
};
use cosmrs::proto::cosmos::bank::v1beta1::{QueryBalanceRequest, QueryBalanceResponse};
use cosmrs::proto::cosmos::base::abci::v1beta1::{GasInfo, Result as AbciResult};
use cosmrs::proto::cosmos::base::v1beta1::Coin as ProtoCoin;
use cosmrs::proto::cosmos::tx::v1beta1::{SignDoc, SimulateRequest, SimulateResponse, TxRaw};
use cosmrs::proto::cosmwasm::wasm::v1::{
    MsgExecuteContract, QuerySmartContractStateRequest, QuerySmartContractStateResponse,
};
use cosmrs::proto::traits::Message;
use k256::ecdsa::signature::Verifier;
use serde_json::{Value, json};
use settlement::chain::cosmos::{CosmosChain, CosmosConfig, GasLimit};
use settlement::chain::{Chain, ChainError, Coin, SettlerKey};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const CHAIN_ID: &str = "agora-local-1";
const ACCOUNT_NUMBER: u64 = 7;
const SETTLER_KEY: &str = "8088c2ed2149c34f6d6533b774da4e1692eb5cb426fdbaef6898eeda489630b7";
/// A contract address of wasmd's usual length (32 bytes), prefix `wasm`.
fn contract_address() -> String {
    cosmrs::AccountId::new("wasm", &[0x42; 32])
        .unwrap()
        .to_string()
}

/// What the double answers (set per test) and what it saw.
#[derive(Default)]
struct Ledger {
    // --- chain state ---
    account_exists: bool,
    sequence: u64,
    height: u64,
    /// Transactions in blocks, by uppercase hex hash: (height, bytes).
    blocks: HashMap<String, (u64, Vec<u8>)>,
    // --- script ---
    /// Another sender's transactions land right after each of the first N account reads.
    interleave_after_reads: u32,
    /// Transactions of this key waiting in the mempool: CheckTx expects a sequence this much
    /// ahead of the committed one the account query shows.
    pending_in_mempool: u64,
    /// CheckTx refuses every transaction with (code, codespace, log).
    check_tx_failure: Option<(u32, String, String)>,
    /// Transactions go into blocks but fail there with (code, codespace, log).
    deliver_failure: Option<(u32, String, String)>,
    /// Accepted transactions never reach a block.
    never_include: bool,
    /// `tx` answers "not found" this many times before a transaction shows up.
    not_found_polls: u32,
    /// Simulation: gas used, or a failure (code, codespace, log).
    simulate_gas: u64,
    simulate_failure: Option<(u32, String, String)>,
    /// The contract's answer to smart queries, or its error message.
    smart_answer: Value,
    smart_failure: Option<String>,
    // --- recorded ---
    account_reads: u32,
    broadcasts: Vec<Vec<u8>>,
    simulations: Vec<Vec<u8>>,
    smart_queries: Vec<(String, Value)>,
    tx_polls: u32,
}

type Shared = Arc<Mutex<Ledger>>;

struct RpcDouble {
    url: String,
    ledger: Shared,
    settler: String,
}

impl RpcDouble {
    async fn start(script: impl FnOnce(&mut Ledger)) -> Self {
        let mut ledger = Ledger {
            account_exists: true,
            sequence: 5,
            height: 100,
            ..Ledger::default()
        };
        script(&mut ledger);
        let ledger = Arc::new(Mutex::new(ledger));
        let app = axum::Router::new()
            .route("/", post(rpc))
            .with_state(ledger.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let settler = key().address().to_string();
        Self {
            url,
            ledger,
            settler,
        }
    }

    fn config(&self) -> CosmosConfig {
        let mut config = CosmosConfig::new(&self.url, CHAIN_ID, contract_address(), "0.025uagora");
        config.gas = GasLimit::Fixed(333_333);
        config.poll_interval = Duration::from_millis(5);
        config.inclusion_timeout = Duration::from_secs(5);
        config
    }

    fn client(&self, change: impl FnOnce(&mut CosmosConfig)) -> Arc<dyn Chain> {
        let mut config = self.config();
        change(&mut config);
        Arc::new(CosmosChain::new(config, key()).unwrap())
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap()
    }
}

fn key() -> SettlerKey {
    SettlerKey::from_hex(SETTLER_KEY, "wasm").unwrap()
}

fn tx_hash(bytes: &[u8]) -> String {
    hex::encode_upper(Sha256::digest(bytes))
}

fn sequence_of(tx: &[u8]) -> u64 {
    let tx = cosmrs::Tx::from_bytes(tx).unwrap();
    tx.auth_info.signer_infos[0].sequence
}

/// One JSON-RPC endpoint, as CometBFT serves it (POST `/`, the method in the body).
async fn rpc(State(ledger): State<Shared>, Json(request): Json<Value>) -> Json<Value> {
    let id = request["id"].clone();
    let params = &request["params"];
    let mut ledger = ledger.lock().unwrap();
    let answer = match request["method"].as_str().unwrap_or_default() {
        "abci_query" => Ok(abci_query(&mut ledger, params)),
        "broadcast_tx_sync" => Ok(broadcast(&mut ledger, params)),
        "tx" => tx(&mut ledger, params),
        other => Err(json!({"code": -32601, "message": "Method not found", "data": other})),
    };
    Json(match answer {
        Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
        Err(error) => json!({"jsonrpc": "2.0", "id": id, "error": error}),
    })
}

fn query_answer(value: Result<Vec<u8>, (u32, String, String)>, height: u64) -> Value {
    let (code, codespace, log, value) = match value {
        Ok(bytes) => (0, String::new(), String::new(), json!(BASE64.encode(bytes))),
        Err((code, codespace, log)) => (code, codespace, log, Value::Null),
    };
    json!({"response": {"code": code, "log": log, "info": "", "index": "0", "key": null,
        "value": value, "proofOps": null, "height": height.to_string(), "codespace": codespace}})
}

fn mismatch(expected: u64, got: u64) -> (u32, String, String) {
    let log = format!(
        "account sequence mismatch, expected {expected}, got {got}: incorrect account sequence"
    );
    (32, "sdk".into(), log)
}

fn abci_query(ledger: &mut Ledger, params: &Value) -> Value {
    let data = hex::decode(params["data"].as_str().unwrap()).unwrap();
    let height = ledger.height;
    let answer = match params["path"].as_str().unwrap() {
        "/cosmos.auth.v1beta1.Query/Account" => {
            let request = QueryAccountRequest::decode(data.as_slice()).unwrap();
            ledger.account_reads += 1;
            let answer = if ledger.account_exists {
                let account = BaseAccount {
                    address: request.address,
                    pub_key: None,
                    account_number: ACCOUNT_NUMBER,
                    sequence: ledger.sequence,
                };
                let any = cosmrs::Any {
                    type_url: "/cosmos.auth.v1beta1.BaseAccount".into(),
                    value: account.encode_to_vec(),
                };
                Ok(QueryAccountResponse { account: Some(any) }.encode_to_vec())
            } else {
                let log = format!(
                    "rpc error: code = NotFound desc = account {} not found: key not found",
                    request.address
                );
                Err((22, "sdk".into(), log))
            };
            if ledger.account_reads <= ledger.interleave_after_reads {
                ledger.sequence += 1; // someone else's transaction with this key lands
            }
            answer
        }
        "/cosmos.tx.v1beta1.Service/Simulate" => {
            let request = SimulateRequest::decode(data.as_slice()).unwrap();
            let sequence = sequence_of(&request.tx_bytes);
            ledger.simulations.push(request.tx_bytes);
            if sequence != ledger.sequence {
                Err(mismatch(ledger.sequence, sequence))
            } else if let Some(failure) = ledger.simulate_failure.clone() {
                Err(failure)
            } else {
                let response = SimulateResponse {
                    gas_info: Some(GasInfo {
                        gas_wanted: 0,
                        gas_used: ledger.simulate_gas,
                    }),
                    result: Some(AbciResult::default()),
                };
                Ok(response.encode_to_vec())
            }
        }
        "/cosmwasm.wasm.v1.Query/SmartContractState" => {
            let request = QuerySmartContractStateRequest::decode(data.as_slice()).unwrap();
            let query = serde_json::from_slice(&request.query_data).unwrap();
            ledger.smart_queries.push((request.address, query));
            match &ledger.smart_failure {
                Some(message) => Err((
                    9,
                    "wasm".into(),
                    format!("{message}: query wasm contract failed"),
                )),
                None => {
                    let data = serde_json::to_vec(&ledger.smart_answer).unwrap();
                    Ok(QuerySmartContractStateResponse { data }.encode_to_vec())
                }
            }
        }
        "/cosmos.bank.v1beta1.Query/Balance" => {
            // The bank module answers every address, with no coin for one it never saw.
            let request = QueryBalanceRequest::decode(data.as_slice()).unwrap();
            let balance = (request.address == "wasm1provider").then(|| ProtoCoin {
                denom: request.denom.clone(),
                amount: "340282366920938463463374607431768211455".into(),
            });
            Ok(QueryBalanceResponse { balance }.encode_to_vec())
        }
        other => Err((6, "sdk".into(), format!("unknown query path {other}"))),
    };
    query_answer(answer, height)
}

fn broadcast(ledger: &mut Ledger, params: &Value) -> Value {
    let bytes = BASE64.decode(params["tx"].as_str().unwrap()).unwrap();
    let hash = tx_hash(&bytes);
    let sequence = sequence_of(&bytes);
    ledger.broadcasts.push(bytes.clone());
    let refusal = if let Some(failure) = ledger.check_tx_failure.clone() {
        Some(failure)
    } else if sequence != ledger.sequence + ledger.pending_in_mempool {
        Some(mismatch(
            ledger.sequence + ledger.pending_in_mempool,
            sequence,
        ))
    } else {
        None
    };
    let (code, codespace, log) = refusal.unwrap_or_default();
    if code == 0 {
        ledger.sequence += 1; // CheckTx passed: the sequence is used, whatever the block says
        if !ledger.never_include {
            ledger.height += 1;
            let height = ledger.height;
            ledger.blocks.insert(hash.clone(), (height, bytes));
        }
    }
    json!({"code": code, "data": "", "log": log, "codespace": codespace, "hash": hash})
}

fn tx(ledger: &mut Ledger, params: &Value) -> Result<Value, Value> {
    let hash = hex::encode_upper(BASE64.decode(params["hash"].as_str().unwrap()).unwrap());
    ledger.tx_polls += 1;
    let not_found = json!({"code": -32603, "message": "Internal error",
        "data": format!("tx ({hash}) not found")});
    if ledger.tx_polls <= ledger.not_found_polls {
        return Err(not_found);
    }
    let Some((height, bytes)) = ledger.blocks.get(&hash).cloned() else {
        return Err(not_found);
    };
    let gas_wanted = cosmrs::Tx::from_bytes(&bytes)
        .unwrap()
        .auth_info
        .fee
        .gas_limit;
    let contract = contract_address();
    let (code, codespace, log, events) = match &ledger.deliver_failure {
        Some((code, codespace, log)) => (*code, codespace.clone(), log.clone(), json!([])),
        None => (
            0,
            String::new(),
            String::new(),
            json!([
                {"type": "tx", "attributes": [
                    {"key": "fee", "value": "8334uagora", "index": true}]},
                {"type": "message", "attributes": [
                    {"key": "action", "value": "/cosmwasm.wasm.v1.MsgExecuteContract", "index": true},
                    {"key": "module", "value": "wasm", "index": true}]},
                {"type": "wasm", "attributes": [
                    {"key": "_contract_address", "value": contract, "index": true},
                    {"key": "action", "value": "post_batch", "index": true},
                    {"key": "batch", "value": "epoch-42", "index": true}]},
            ]),
        ),
    };
    Ok(json!({
        "hash": hash,
        "height": height.to_string(),
        "index": 0,
        "tx_result": {
            "code": code, "data": null, "log": log, "info": "",
            "gas_wanted": gas_wanted.to_string(), "gas_used": "123456",
            "events": events, "codespace": codespace
        },
        "tx": BASE64.encode(&bytes),
    }))
}

fn post_batch() -> Value {
    json!({"post_batch": {"id": "epoch-42", "root": "ab".repeat(32),
        "period": {"from_ms": 0, "to_ms": 60_000}, "receipts": 3,
        "provider_totals": [{"address": "wasm1provider", "amount": "1000"}],
        "payer_totals": [{"address": "wasm1payer", "amount": "1000"}]}})
}

/// Everything a signed transaction says, checked field by field; the signature is verified over
/// the SignDoc rebuilt from `chain_id` and `account_number`, so either being wrong fails here.
fn check_signed(
    bytes: &[u8],
    sequence: u64,
    gas: u64,
    fee: u128,
    msg: &Value,
    funds: &[(&str, u128)],
) {
    let raw = TxRaw::decode(bytes).unwrap();
    let tx = cosmrs::Tx::from_bytes(bytes).unwrap();
    let key = key();

    // The signature: one, by the settler's key, over SIGN_MODE_DIRECT's SignDoc, low-s.
    let sign_doc = SignDoc {
        body_bytes: raw.body_bytes.clone(),
        auth_info_bytes: raw.auth_info_bytes.clone(),
        chain_id: CHAIN_ID.into(),
        account_number: ACCOUNT_NUMBER,
    }
    .encode_to_vec();
    assert_eq!(raw.signatures.len(), 1);
    let verifying =
        k256::ecdsa::VerifyingKey::from_sec1_bytes(&key.public_key().to_bytes()).unwrap();
    let signature = k256::ecdsa::Signature::from_slice(&raw.signatures[0]).unwrap();
    assert!(signature.normalize_s() == signature, "high-s signature");
    verifying
        .verify(&sign_doc, &signature)
        .expect("signature over the SignDoc");

    // Auth info: one direct-mode signer with the settler's public key and the sequence.
    let signer = &tx.auth_info.signer_infos[0];
    assert_eq!(tx.auth_info.signer_infos.len(), 1);
    assert_eq!(signer.sequence, sequence);
    assert_eq!(
        signer.public_key.as_ref().and_then(|k| k.single()),
        Some(&key.public_key())
    );
    assert_eq!(
        signer.mode_info,
        cosmrs::tx::ModeInfo::single(cosmrs::tx::SignMode::Direct)
    );
    // Fee: gas limit × price, rounded up, in the gas price's denom.
    assert_eq!(tx.auth_info.fee.gas_limit, gas);
    assert_eq!(tx.auth_info.fee.amount.len(), 1);
    assert_eq!(tx.auth_info.fee.amount[0].amount, fee);
    assert_eq!(tx.auth_info.fee.amount[0].denom.as_ref(), "uagora");

    // Body: exactly one MsgExecuteContract from the settler to the contract, JSON as given.
    assert_eq!(tx.body.messages.len(), 1);
    assert_eq!(
        tx.body.messages[0].type_url,
        "/cosmwasm.wasm.v1.MsgExecuteContract"
    );
    assert_eq!(tx.body.memo, "");
    let execute = MsgExecuteContract::decode(tx.body.messages[0].value.as_slice()).unwrap();
    assert_eq!(execute.sender, key.address().to_string());
    assert_eq!(execute.contract, contract_address());
    assert_eq!(&serde_json::from_slice::<Value>(&execute.msg).unwrap(), msg);
    let sent: Vec<(String, String)> = execute
        .funds
        .iter()
        .map(|c| (c.denom.clone(), c.amount.clone()))
        .collect();
    let expected: Vec<(String, String)> = funds
        .iter()
        .map(|(denom, amount)| (denom.to_string(), amount.to_string()))
        .collect();
    assert_eq!(sent, expected);
}

#[tokio::test]
async fn a_posted_batch_is_signed_correctly_broadcast_and_reported_once_in_a_block() {
    let double = RpcDouble::start(|ledger| ledger.not_found_polls = 2).await;
    let chain = double.client(|_| {});

    let outcome = chain.execute(post_batch(), vec![]).await.unwrap();

    let ledger = double.ledger();
    assert_eq!(ledger.broadcasts.len(), 1);
    let sent = &ledger.broadcasts[0];
    // 333,333 gas × 0.025 = 8,333.325 → 8,334 uagora.
    check_signed(sent, 5, 333_333, 8_334, &post_batch(), &[]);
    assert_eq!(outcome.hash, tx_hash(sent));
    assert_eq!(outcome.height, 101);
    assert_eq!((outcome.gas_wanted, outcome.gas_used), (333_333, 123_456));
    assert_eq!(outcome.attribute("wasm", "action"), Some("post_batch"));
    assert_eq!(outcome.attribute("wasm", "batch"), Some("epoch-42"));
    assert_eq!(
        outcome.attribute("wasm", "_contract_address"),
        Some(contract_address().as_str())
    );
    assert_eq!(outcome.events.len(), 3);
    assert_eq!(ledger.tx_polls, 3, "polled through two 'not found' answers");
    assert_eq!(ledger.sequence, 6);
}

#[tokio::test]
async fn funds_are_sent_sorted_by_denom_and_bad_funds_are_refused_before_signing() {
    let double = RpcDouble::start(|_| {}).await;
    let chain = double.client(|_| {});
    let deposit = json!({"deposit": {}});
    let funds = vec![
        Coin::new("uatom", 7),
        Coin::new("uagora", 5_000_000_000_000_000_000_000),
    ];
    chain.execute(deposit.clone(), funds).await.unwrap();
    let sent = double.ledger().broadcasts[0].clone();
    check_signed(
        &sent,
        5,
        333_333,
        8_334,
        &deposit,
        &[("uagora", 5_000_000_000_000_000_000_000), ("uatom", 7)],
    );

    for (funds, says) in [
        (vec![Coin::new("uagora", 0)], "zero uagora"),
        (
            vec![Coin::new("uagora", 1), Coin::new("uagora", 2)],
            "uagora appears twice",
        ),
        (vec![Coin::new("u", 1)], "u"),
    ] {
        let error = chain.execute(deposit.clone(), funds).await.unwrap_err();
        assert!(
            matches!(error, ChainError::Invalid { field: "funds", .. }),
            "{error:?}"
        );
        assert!(error.to_string().contains(says), "{error}");
    }
    assert_eq!(double.ledger().broadcasts.len(), 1, "nothing else was sent");
}

#[tokio::test]
async fn a_sequence_mismatch_rereads_the_account_and_retries_with_the_new_sequence() {
    // Another transaction from the same key lands between the first read and the broadcast.
    let double = RpcDouble::start(|ledger| ledger.interleave_after_reads = 1).await;
    let chain = double.client(|_| {});

    let outcome = chain.execute(post_batch(), vec![]).await.unwrap();

    let ledger = double.ledger();
    assert_eq!(ledger.account_reads, 2);
    assert_eq!(ledger.broadcasts.len(), 2);
    assert_eq!(
        sequence_of(&ledger.broadcasts[0]),
        5,
        "first try: the sequence first read"
    );
    // The retried transaction carries the new sequence and is otherwise the same, validly signed.
    check_signed(&ledger.broadcasts[1], 6, 333_333, 8_334, &post_batch(), &[]);
    assert_eq!(outcome.hash, tx_hash(&ledger.broadcasts[1]));
    assert!(!ledger.blocks.contains_key(&tx_hash(&ledger.broadcasts[0])));
    assert_eq!(ledger.sequence, 7);
}

#[tokio::test]
async fn a_transaction_of_ours_still_in_the_mempool_is_counted_from_the_chains_expected_sequence() {
    // An earlier transaction timed out waiting for a block but is still in the mempool: the
    // committed account says 5, CheckTx expects 6. Re-reading alone would never get there.
    let double = RpcDouble::start(|ledger| ledger.pending_in_mempool = 1).await;
    let chain = double.client(|_| {});

    chain.execute(post_batch(), vec![]).await.unwrap();

    let ledger = double.ledger();
    assert_eq!(ledger.broadcasts.len(), 2);
    assert_eq!(sequence_of(&ledger.broadcasts[0]), 5);
    check_signed(&ledger.broadcasts[1], 6, 333_333, 8_334, &post_batch(), &[]);
}

#[tokio::test]
async fn a_sequence_that_keeps_moving_gives_up_after_the_configured_retries_as_retryable() {
    let double = RpcDouble::start(|ledger| ledger.interleave_after_reads = u32::MAX).await;
    let chain = double.client(|config| config.sequence_retries = 2);

    let error = chain.execute(post_batch(), vec![]).await.unwrap_err();

    assert!(error.is_retryable(), "{error:?}");
    let ChainError::SequenceMismatch { attempts, log } = &error else {
        panic!("{error:?}")
    };
    assert_eq!(*attempts, 3);
    assert!(log.contains("account sequence mismatch"), "{log}");
    let ledger = double.ledger();
    assert_eq!(ledger.broadcasts.len(), 3);
    assert!(ledger.blocks.is_empty());
}

#[tokio::test]
async fn a_check_tx_failure_surfaces_the_chains_log_as_a_refusal() {
    let log = "insufficient fees; got: 10uagora required: 8334uagora: insufficient fee";
    let double =
        RpcDouble::start(|ledger| ledger.check_tx_failure = Some((13, "sdk".into(), log.into())))
            .await;
    let chain = double.client(|_| {});

    let error = chain.execute(post_batch(), vec![]).await.unwrap_err();

    assert!(!error.is_retryable());
    let ChainError::Refused {
        code,
        codespace,
        log: got,
        tx,
    } = &error
    else {
        panic!("{error:?}")
    };
    assert_eq!(
        (*code, codespace.as_str(), got.as_str(), tx),
        (13, "sdk", log, &None)
    );
    assert!(error.to_string().contains(log), "{error}");
    let ledger = double.ledger();
    assert_eq!(ledger.broadcasts.len(), 1, "a refusal is not retried");
    assert_eq!(ledger.tx_polls, 0, "nothing to wait for");
}

#[tokio::test]
async fn a_contract_error_in_the_block_is_a_refusal_naming_the_transaction() {
    let log = "failed to execute message; message index: 0: batch epoch-42 exists with a different root: execute wasm contract failed";
    let double =
        RpcDouble::start(|ledger| ledger.deliver_failure = Some((5, "wasm".into(), log.into())))
            .await;
    let chain = double.client(|_| {});

    let error = chain.execute(post_batch(), vec![]).await.unwrap_err();

    assert!(!error.is_retryable());
    let sent = double.ledger().broadcasts[0].clone();
    let ChainError::Refused {
        code, log: got, tx, ..
    } = &error
    else {
        panic!("{error:?}")
    };
    assert_eq!((*code, got.as_str()), (5, log));
    assert_eq!(tx.as_deref(), Some(tx_hash(&sent).as_str()));
}

#[tokio::test]
async fn a_transaction_not_included_in_time_is_a_retryable_timeout_with_its_hash() {
    let double = RpcDouble::start(|ledger| ledger.never_include = true).await;
    let chain = double.client(|config| config.inclusion_timeout = Duration::from_millis(200));

    let error = chain.execute(post_batch(), vec![]).await.unwrap_err();

    assert!(error.is_retryable(), "{error:?}");
    let sent = double.ledger().broadcasts[0].clone();
    let ChainError::InclusionTimeout { hash, .. } = &error else {
        panic!("{error:?}")
    };
    assert_eq!(hash, &tx_hash(&sent));
    assert!(double.ledger().tx_polls >= 2, "looked more than once");
}

#[tokio::test]
async fn simulated_gas_sets_the_limit_and_fee_and_a_simulated_refusal_costs_nothing() {
    let double = RpcDouble::start(|ledger| ledger.simulate_gas = 100_000).await;
    let chain = double.client(|config| {
        config.gas = GasLimit::Simulate {
            adjustment: 1.5,
            max: 1_000_000,
        }
    });

    chain.execute(post_batch(), vec![]).await.unwrap();
    {
        let ledger = double.ledger();
        assert_eq!(ledger.simulations.len(), 1);
        // 100,000 used × 1.5 = 150,000 gas; × 0.025 = 3,750 uagora.
        check_signed(&ledger.broadcasts[0], 5, 150_000, 3_750, &post_batch(), &[]);
    }

    let log =
        "failed to execute message; message index: 0: Unauthorized: execute wasm contract failed";
    double.ledger().simulate_failure = Some((5, "wasm".into(), log.into()));
    let error = chain.execute(post_batch(), vec![]).await.unwrap_err();
    let ChainError::Refused {
        log: got, tx: None, ..
    } = &error
    else {
        panic!("{error:?}")
    };
    assert_eq!(got, log);
    assert_eq!(
        double.ledger().broadcasts.len(),
        1,
        "refused in simulation: never broadcast"
    );

    // The simulated gas is capped by the maximum.
    let double = RpcDouble::start(|ledger| ledger.simulate_gas = 900_000).await;
    let chain = double.client(|config| {
        config.gas = GasLimit::Simulate {
            adjustment: 1.5,
            max: 1_000_000,
        }
    });
    chain.execute(post_batch(), vec![]).await.unwrap();
    check_signed(
        &double.ledger().broadcasts[0],
        5,
        1_000_000,
        25_000,
        &post_batch(),
        &[],
    );
}

#[tokio::test]
async fn bank_balances_are_read_as_whole_u128_amounts() {
    let double = RpcDouble::start(|_| {}).await;
    let chain = double.client(|_| {});
    assert_eq!(
        chain.balance("wasm1provider", "uagora").await.unwrap(),
        u128::MAX,
        "no float or u64 on the way"
    );
    assert_eq!(chain.balance("wasm1nobody", "uagora").await.unwrap(), 0);
}

#[tokio::test]
async fn smart_queries_send_the_json_to_the_contract_and_return_its_answer() {
    let answer = json!({"stake": "5000000", "jailed_until": null, "nodes": ["gn-a"]});
    let double = RpcDouble::start(|ledger| ledger.smart_answer = answer.clone()).await;
    let chain = double.client(|_| {});
    let query = json!({"operator": {"address": "wasm1operator"}});

    assert_eq!(chain.query(query.clone()).await.unwrap(), answer);
    // The typed helpers go through the same path.
    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Operator {
        stake: String,
        nodes: Vec<String>,
    }
    let typed: Operator = chain.query_typed(&query).await.unwrap();
    assert_eq!(
        typed,
        Operator {
            stake: "5000000".into(),
            nodes: vec!["gn-a".into()]
        }
    );
    let ledger = double.ledger();
    assert_eq!(
        ledger.smart_queries,
        vec![
            (contract_address(), query.clone()),
            (contract_address(), query)
        ]
    );
    assert!(ledger.broadcasts.is_empty());
}

#[tokio::test]
async fn a_failed_query_carries_the_contracts_message() {
    let double = RpcDouble::start(|ledger| {
        ledger.smart_failure = Some("Generic error: batch epoch-9 not known".into())
    })
    .await;
    let error = double
        .client(|_| {})
        .query(json!({"batch": {"id": "epoch-9"}}))
        .await
        .unwrap_err();
    assert!(!error.is_retryable());
    assert!(
        error.to_string().contains("batch epoch-9 not known"),
        "{error}"
    );
}

#[tokio::test]
async fn an_unfunded_settler_account_is_reported_as_such() {
    let double = RpcDouble::start(|ledger| ledger.account_exists = false).await;
    let error = double
        .client(|_| {})
        .execute(post_batch(), vec![])
        .await
        .unwrap_err();
    let ChainError::AccountMissing { address } = &error else {
        panic!("{error:?}")
    };
    assert_eq!(address, &double.settler);
    assert!(error.is_retryable(), "funding the key fixes it");
    assert!(double.ledger().broadcasts.is_empty());
}

#[tokio::test]
async fn an_unreachable_rpc_endpoint_is_a_retryable_error_naming_it() {
    // A port that was just free: nothing listens there.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let config = CosmosConfig::new(&url, CHAIN_ID, contract_address(), "0.025uagora");
    let chain = CosmosChain::new(config, key()).unwrap();

    let error = chain.execute(post_batch(), vec![]).await.unwrap_err();

    assert!(error.is_retryable(), "{error:?}");
    assert!(
        matches!(
            error,
            ChainError::Unreachable {
                method: "abci_query",
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains(&url), "{error}");
    assert!(
        chain
            .query(json!({"params": {}}))
            .await
            .unwrap_err()
            .is_retryable()
    );
}

#[test]
fn bad_settings_are_refused_naming_the_setting() {
    let good = || {
        CosmosConfig::new(
            "http://127.0.0.1:26657",
            CHAIN_ID,
            contract_address(),
            "0.025uagora",
        )
    };
    type Change = fn(&mut CosmosConfig);
    let cases: [(&str, Change); 5] = [
        ("chain RPC URL", |c| c.rpc_url = "127.0.0.1 26657".into()),
        ("chain id", |c| c.chain_id = "".into()),
        ("chain contract", |c| c.contract = "not-an-address".into()),
        ("gas price", |c| c.gas_price = "0.025".into()),
        ("gas adjustment", |c| {
            c.gas = GasLimit::Simulate {
                adjustment: 0.5,
                max: 1,
            }
        }),
    ];
    for (field, change) in cases {
        let mut config = good();
        change(&mut config);
        match CosmosChain::new(config, key()) {
            Err(ChainError::Invalid { field: got, .. }) => assert_eq!(got, field),
            Err(other) => panic!("{field}: {other:?}"),
            Ok(_) => panic!("{field}: accepted"),
        }
    }
    let chain = CosmosChain::new(good(), key()).unwrap();
    assert_eq!(chain.sender(), key().address());
    // From a key file, the address takes the contract's prefix.
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("settler.key");
    std::fs::write(&key_file, SETTLER_KEY).unwrap();
    let from_file = CosmosChain::with_key_file(good(), &key_file).unwrap();
    assert_eq!(from_file.sender(), key().address());
    let mut cosmos = good();
    cosmos.contract = cosmrs::AccountId::new("cosmos", &[0x42; 32])
        .unwrap()
        .to_string();
    let on_hub = CosmosChain::with_key_file(cosmos, &key_file).unwrap();
    assert_eq!(
        on_hub.sender().as_ref(),
        "cosmos1r5v5srda7xfth3hn2s26txvrcrntldjumt8mhl"
    );
    assert!(chain.label().contains(CHAIN_ID));
}
