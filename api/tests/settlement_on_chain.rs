//! The hub's settlement against the real settlement contract, run in-process with cw-multi-test
//! behind the chain client's `Chain` trait: a job's receipt goes into the epoch's batch, the relayer
//! posts it (the contract accepts the hub's `PostBatch` as it is), finalizes it after the challenge
//! window, and the provider is paid what the receipt says minus the protocol fee; the proof the API
//! serves checks against the root the contract holds; the provider's earnings statement matches
//! its balance (also when a finalization is repeated after a crash), and a slash sent through the
//! hub's outbox is taken on chain and shows in the statement. SQLite and PostgreSQL.

mod common;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use api::relayer::{ContractChain, SettlementChain, relay_once};
use common::*;
use cosmwasm_std::{Addr, Decimal, Uint128, coin};
use cw_multi_test::{App, AppBuilder, ContractWrapper, Executor};
use serde_json::{Value, json};
use settlement::chain::{Chain, ChainError, ChainFuture, Coin, TxEvent, TxOutcome};
use settlement_contract::{
    contract::{execute, instantiate, query},
    msg::{ExecuteMsg, InstantiateMsg, Params, SlashRatios},
};

const DENOM: &str = "uagora";
const WINDOW_SECONDS: u64 = 60;
const FEE_BPS: u16 = 250;

/// Work for the thread that owns the contract's world (cw-multi-test's `App` is not `Send`).
type Job = Box<dyn FnOnce(&mut App, &Addr) + Send>;

/// The settlement contract in-process, executing as the hub's settler: the real contract code,
/// without a chain around it (no gas, a block per transaction), on a thread of its own.
struct InProcessContract {
    jobs: Mutex<std::sync::mpsc::Sender<Job>>,
    transactions: Mutex<u64>,
}

impl InProcessContract {
    fn start() -> Self {
        let (jobs, inbox) = std::sync::mpsc::channel::<Job>();
        std::thread::spawn(move || {
            let mut app = AppBuilder::new().build(|router, api, storage| {
                for name in ["provider", "payer"] {
                    router
                        .bank
                        .init_balance(
                            storage,
                            &api.addr_make(name),
                            vec![coin(1_000_000_000, DENOM)],
                        )
                        .unwrap();
                }
            });
            let code = app.store_code(Box::new(ContractWrapper::new(execute, instantiate, query)));
            let api = app.api();
            let msg = InstantiateMsg {
                params: Params {
                    denom: DENOM.into(),
                    min_stake: Uint128::new(1_000),
                    unbonding_seconds: 100,
                    challenge_window_seconds: WINDOW_SECONDS,
                    protocol_fee_bps: FEE_BPS,
                    slash_ratios: SlashRatios {
                        fraud: Decimal::one(),
                        cheating: Decimal::percent(50),
                        downtime: Decimal::percent(1),
                    },
                    jail_seconds: 3_600,
                },
                settler: api.addr_make("settler").to_string(),
                admin: api.addr_make("admin").to_string(),
                treasury: api.addr_make("treasury").to_string(),
            };
            let admin = api.addr_make("admin");
            let contract = app
                .instantiate_contract(code, admin, &msg, &[], "agora-settlement", None)
                .unwrap();
            for job in inbox {
                job(&mut app, &contract);
            }
        });
        Self {
            jobs: Mutex::new(jobs),
            transactions: Mutex::new(0),
        }
    }

    /// Runs `f` on the contract's thread and returns what it returns.
    fn with<R: Send + 'static>(&self, f: impl FnOnce(&mut App, &Addr) -> R + Send + 'static) -> R {
        let (reply, answer) = std::sync::mpsc::channel();
        let job: Job = Box::new(move |app, contract| {
            let _ = reply.send(f(app, contract));
        });
        self.jobs.lock().unwrap().send(job).unwrap();
        answer.recv().unwrap()
    }

    fn address(&self, name: &'static str) -> String {
        self.with(move |app, _| app.api().addr_make(name).to_string())
    }

    /// `msg` from account `name` with `amount` of the denom attached.
    fn execute_as(&self, name: &'static str, msg: ExecuteMsg, amount: u128) {
        self.with(move |app, contract| {
            let sender = app.api().addr_make(name);
            let funds = if amount == 0 {
                vec![]
            } else {
                vec![coin(amount, DENOM)]
            };
            app.execute_contract(sender, contract.clone(), &msg, &funds)
                .unwrap();
        });
    }

    fn balance(&self, name: &'static str) -> u128 {
        self.with(move |app, _| {
            let amount = app
                .wrap()
                .query_balance(app.api().addr_make(name), DENOM)
                .unwrap()
                .amount;
            Uint128::try_from(amount).unwrap().u128()
        })
    }

    fn pass_seconds(&self, seconds: u64) {
        self.with(move |app, _| {
            app.update_block(|block| {
                block.time = block.time.plus_seconds(seconds);
                block.height += 1;
            })
        });
    }
}

impl Chain for InProcessContract {
    fn label(&self) -> String {
        "the settlement contract in-process (test)".into()
    }

    fn execute(&self, msg: Value, funds: Vec<Coin>) -> ChainFuture<'_, TxOutcome> {
        assert!(funds.is_empty(), "the settler attaches no funds");
        let number = {
            let mut count = self.transactions.lock().unwrap();
            *count += 1;
            *count
        };
        let outcome = self.with(move |app, contract| {
            let settler = app.api().addr_make("settler");
            let response = app
                .execute_contract(settler, contract.clone(), &msg, &[])
                .map_err(|e| ChainError::Refused {
                    code: 5,
                    codespace: "wasm".into(),
                    log: e.to_string(),
                    tx: None,
                })?;
            app.update_block(|block| block.height += 1);
            Ok(TxOutcome {
                hash: format!("{number:064X}"),
                height: app.block_info().height,
                gas_wanted: 0,
                gas_used: 0,
                events: response
                    .events
                    .iter()
                    .map(|e| TxEvent {
                        kind: e.ty.clone(),
                        attributes: e
                            .attributes
                            .iter()
                            .map(|a| (a.key.clone(), a.value.clone()))
                            .collect(),
                    })
                    .collect(),
            })
        });
        Box::pin(async move { outcome })
    }

    fn query(&self, msg: Value) -> ChainFuture<'_, Value> {
        let answer = self.with(move |app, contract| {
            app.wrap()
                .query_wasm_smart(contract.clone(), &msg)
                .map_err(|e| ChainError::Refused {
                    code: 0,
                    codespace: String::new(),
                    log: e.to_string(),
                    tx: None,
                })
        });
        Box::pin(async move { answer })
    }
}

backend_tests! {
    async fn a_receipt_is_posted_finalized_and_paid_by_the_contract(store: Store) {
        let chain = Arc::new(InProcessContract::start());
        let (app, state, key) = app(&store, "team-a").await;
        // The node's operator on chain: bonded, with gn-a's key registered; the payer funded.
        let mut registration = registration("gn-a", "eu-west", 1, "2.00");
        registration["operatorAddress"] = json!(chain.address("provider"));
        let token = register(&app, &registration).await;
        chain.execute_as("provider", ExecuteMsg::Bond {}, 1_000);
        let pubkey = public_key_hex(&node_key("gn-a"));
        chain.execute_as("provider", ExecuteMsg::RegisterNode { node: "gn-a".into(), pubkey }, 0);
        chain.execute_as("payer", ExecuteMsg::Deposit {}, 1_000_000);
        let tenant = store.ensure_tenant("team-a").await.unwrap();
        store.set_payer_address(&tenant, &chain.address("payer")).await.unwrap();

        // A job runs and its node sends a receipt.
        let job = submit(&app, &key, &sleep_spec(60)).await;
        assert_eq!(api::scheduling::schedule_once(&state).await.unwrap(), 1);
        poll(&app, &token).await;
        let row = store.job_assignments(&job, 1).await.unwrap().remove(0);
        let receipt = settlement::receipt::Receipt {
            network: crds::agent::DEFAULT_NETWORK.into(),
            node: "gn-a".into(),
            job: row.job_id.clone(),
            assignment: row.id.clone(),
            sequence: 1,
            price_micros_per_gpu_hour: row.price_micros,
            gpus: 1,
            started_at_ms: row.created_at as u64,
            until_ms: row.created_at as u64 + 20_000,
            gpu_millis: 20_000,
        };
        let signature = receipt.sign(&node_key("gn-a")).unwrap();
        let body = receipt_body(&receipt, &signature);
        let path = format!("/v1/agent/assignments/{}/receipts", row.id);
        assert_eq!(send(&app, "POST", &path, Some(&token), Some("application/json"), body.to_string()).await.status, 204);
        let owed = u128::from(receipt.amount_micros());
        assert!(owed > 0);

        // The epoch's batch, posted through the contract.
        let period = settlement::batch::Period { from_ms: 0, to_ms: api::store::now_ms() as u64 };
        let batch = api::settlement::build_batch(&store, crds::agent::DEFAULT_NETWORK, period).await.unwrap().batch.unwrap();
        let contract = ContractChain::connect(chain.clone()).await.unwrap();
        assert_eq!(contract.challenge_window().as_secs(), WINDOW_SECONDS);
        let mut tries = HashMap::new();
        let now = api::store::now_ms();
        let pass = relay_once(&store, &contract, now, &mut tries).await.unwrap();
        assert_eq!((pass.posted, pass.failed), (1, 0), "{:?}", store.batch(&batch).await.unwrap());
        let on_chain = chain.query(json!({"batch": {"id": batch}})).await.unwrap();
        let recorded = store.batch(&batch).await.unwrap().unwrap();
        assert_eq!(on_chain["root"], recorded.root.as_str(), "{on_chain}");
        assert_eq!(on_chain["state"], "posted");
        assert_eq!(on_chain["receipts"], 1);

        // Within the window nothing is paid; after it, the provider gets the receipt's amount
        // minus the protocol fee, the treasury the fee, and the payer's escrow pays both.
        let provider_before = chain.balance("provider");
        chain.pass_seconds(WINDOW_SECONDS + 1);
        let pass = relay_once(&store, &contract, now + (WINDOW_SECONDS as i64 + 1) * 1_000, &mut tries).await.unwrap();
        assert_eq!(pass.finalized, 1);
        assert_eq!(store.batch(&batch).await.unwrap().unwrap().state, api::store::settlement::BatchState::Final);
        let fee = owed * u128::from(FEE_BPS) / 10_000;
        assert_eq!(chain.balance("provider") - provider_before, owed - fee);
        assert_eq!(chain.balance("treasury"), fee);
        let escrow = chain.query(json!({"escrow": {"payer": chain.address("payer")}})).await.unwrap();
        assert_eq!(
            (escrow["balance"].as_str(), escrow["reserved"].as_str()),
            (Some((1_000_000 - owed).to_string().as_str()), Some("0")),
            "the payer paid what the receipt says: {escrow}"
        );

        // The proof the API serves checks against the root on chain.
        let id = format!("{}.1", row.id);
        let proof = send(&app, "GET", &format!("/v1/receipts/{id}/proof"), Some(&key), None, "").await;
        assert_eq!(proof.status, 200, "{}", proof.body);
        assert_eq!(proof.body["root"], on_chain["root"]);
        let leaf = hex::decode(proof.body["leaf"].as_str().unwrap()).unwrap();
        let root: [u8; 32] = hex::decode(proof.body["root"].as_str().unwrap()).unwrap().try_into().unwrap();
        let path: Vec<[u8; 32]> = proof.body["path"].as_array().unwrap().iter()
            .map(|h| hex::decode(h.as_str().unwrap()).unwrap().try_into().unwrap()).collect();
        assert!(settlement::merkle::verify(&leaf, 0, on_chain["receipts"].as_u64().unwrap(), &path, &root));

        // The provider's statement says what the chain paid it, from the contract's payout events.
        let provider = chain.address("provider");
        let paid = chain.balance("provider") - provider_before;
        let around = |now: i64| format!("from={}&to={}", now - 86_400_000, now + 86_400_000);
        let statement_path = format!("/v1/operators/{provider}/statement?{}", around(api::store::now_ms()));
        let statement = send(&app, "GET", &statement_path, Some(&key), None, "").await;
        assert_eq!(statement.status, 200, "{}", statement.body);
        let totals = &statement.body["totals"];
        assert_eq!(totals["gross"], owed.to_string(), "{}", statement.body);
        assert_eq!(totals["fee"], chain.balance("treasury").to_string());
        assert_eq!(totals["net"], paid.to_string());
        assert_eq!((totals["jobs"].as_u64(), totals["gpuMillis"].as_u64()), (Some(1), Some(20_000)));
        assert_eq!(statement.body["denom"], DENOM);
        assert_eq!(statement.body["batches"][0]["postTx"], recorded.tx.unwrap().as_str());

        // The hub crashes after the chain paid the next batch and before it recorded that: the
        // repeat reports no payouts, and the hub records them as the contract computed them.
        let more = settlement::receipt::Receipt { sequence: 2, until_ms: receipt.until_ms + 5_000, gpu_millis: 25_000, ..receipt.clone() };
        let signature = more.sign(&node_key("gn-a")).unwrap();
        let body = receipt_body(&more, &signature);
        let receipts = format!("/v1/agent/assignments/{}/receipts", row.id);
        assert_eq!(send(&app, "POST", &receipts, Some(&token), Some("application/json"), body.to_string()).await.status, 204);
        let period = settlement::batch::Period { from_ms: period.to_ms, to_ms: api::store::now_ms() as u64 + 1 };
        let second = api::settlement::build_batch(&store, crds::agent::DEFAULT_NETWORK, period).await.unwrap().batch.unwrap();
        let now = api::store::now_ms();
        assert_eq!(relay_once(&store, &contract, now, &mut tries).await.unwrap().posted, 1);
        chain.pass_seconds(WINDOW_SECONDS + 1);
        let (provider_before, treasury_before) = (chain.balance("provider"), chain.balance("treasury"));
        chain.execute_as("settler", ExecuteMsg::FinalizeBatch { id: second.clone() }, 0);
        let pass = relay_once(&store, &contract, now + (WINDOW_SECONDS as i64 + 1) * 1_000, &mut tries).await.unwrap();
        assert_eq!(pass.finalized, 1);
        let payouts = store.batch_payouts(&second).await.unwrap();
        let rest = u128::from(more.amount_micros() - receipt.amount_micros());
        assert_eq!(payouts.len(), 1);
        assert_eq!(u128::from(payouts[0].gross), rest);
        assert_eq!(u128::from(payouts[0].net), chain.balance("provider") - provider_before);
        assert_eq!(u128::from(payouts[0].fee), chain.balance("treasury") - treasury_before);

        // A slash through the outbox: the contract takes 1 % of the stake for downtime, and the
        // statement counts it.
        let slash = api::slashing::request_slash(&store, &provider, "downtime", "missed heartbeats").await.unwrap();
        let treasury_before = chain.balance("treasury");
        let slashes = api::slashing::post_slashes(&store, chain.as_ref()).await.unwrap();
        assert_eq!(slashes.posted, 1, "{:?}", store.slash(&slash.id).await.unwrap());
        let taken = chain.balance("treasury") - treasury_before;
        assert_eq!(taken, 10, "1 % of a 1,000 stake");
        let posted = store.slash(&slash.id).await.unwrap().unwrap();
        assert_eq!(posted.amount, Some(taken.to_string()));
        let operator = chain.query(json!({"operator": {"address": provider}})).await.unwrap();
        assert_eq!((operator["slashed"].as_str(), operator["jailed"].as_bool()), (Some("10"), Some(true)), "{operator}");
        assert_eq!(posted.jailed_until, operator["jailed_until"].as_i64());
        let statement_path = format!("/v1/operators/{provider}/statement?{}", around(api::store::now_ms()));
        let statement = send(&app, "GET", &statement_path, Some(&key), None, "").await;
        let totals = &statement.body["totals"];
        let earned = owed + rest;
        let fees = owed * u128::from(FEE_BPS) / 10_000 + u128::from(payouts[0].fee);
        assert_eq!(totals["gross"], earned.to_string(), "{}", statement.body);
        assert_eq!(totals["fee"], fees.to_string());
        assert_eq!(totals["slashes"], "10");
        assert_eq!(totals["net"], (earned - fees - 10).to_string());
        assert_eq!(totals["gpuMillis"], 25_000, "the job's GPU time, once");
        assert_eq!(statement.body["slashes"][0]["tx"], posted.tx.unwrap().as_str());
    }
}
