//! Earnings statements and slashes in the hub: a provider's statement counts the batches that
//! went final in its period (income counts when paid), with the fee as the contract computes it
//! and each job's GPU time once however many batches settle it; the CSV says the same as the
//! JSON; the slash outbox posts, refuses and retries as the chain answers. The chain here is a
//! scripted double (the real contract is in `settlement_on_chain.rs`). SQLite and PostgreSQL.

mod common;

use std::{collections::HashMap, sync::Mutex, time::Duration};

use api::{
    relayer::{ChainFailure, ChainFuture, Included, SettlementChain, relay_once},
    store::settlement::{BatchRow, BatchState, Payout, SlashState},
};
use common::*;
use serde_json::{Value, json};
use settlement::chain::{Chain, ChainError, Coin, TxEvent, TxOutcome};

const PROVIDER: &str = "agora1zqqqqqqqqq";
const PAYER: &str = "agora1yqqqqqqqqq";
const FEE_BPS: u16 = 250;

/// A one-GPU job placed on gn-a (operated by PROVIDER), paid by team-a from PAYER: the app,
/// gn-a's token, the assignment and team-a's API key.
async fn placed(
    store: &api::store::Store,
) -> (axum::Router, String, api::store::AssignmentRow, String) {
    let (app, state, key) = app(store, "team-a").await;
    let mut registration = registration("gn-a", "eu-west", 1, "2.00");
    registration["operatorAddress"] = json!(PROVIDER);
    let token = register(&app, &registration).await;
    let job = submit(&app, &key, &sleep_spec(600)).await;
    assert_eq!(api::scheduling::schedule_once(&state).await.unwrap(), 1);
    poll(&app, &token).await;
    let row = store.job_assignments(&job, 1).await.unwrap().remove(0);
    let tenant = store.ensure_tenant("team-a").await.unwrap();
    assert!(store.set_payer_address(&tenant, PAYER).await.unwrap());
    (app, token, row, key)
}

/// A chain double that takes every step at once and, like the contract repeating a
/// finalization, reports no payout events: the relayer computes them with the fee it reads.
struct ScriptedChain;

impl SettlementChain for ScriptedChain {
    fn post_batch<'a>(&'a self, batch: &'a BatchRow) -> ChainFuture<'a, Included> {
        Box::pin(async move {
            Ok(Included {
                tx: format!("POST-{}", batch.id),
                height: 1,
                payouts: Vec::new(),
            })
        })
    }

    fn finalize_batch<'a>(&'a self, id: &'a str) -> ChainFuture<'a, Included> {
        Box::pin(async move {
            Ok(Included {
                tx: format!("FIN-{id}"),
                height: 2,
                payouts: Vec::new(),
            })
        })
    }

    fn challenge_window(&self) -> Duration {
        Duration::ZERO
    }

    fn protocol_fee_bps(&self) -> ChainFuture<'_, u16> {
        Box::pin(async { Ok(FEE_BPS) })
    }
}

/// Builds the epoch's batch of everything received so far, posts and finalizes it; returns it as
/// recorded, final.
async fn settle_epoch(store: &api::store::Store) -> BatchRow {
    let period = settlement::batch::Period {
        from_ms: 0,
        to_ms: api::store::now_ms() as u64,
    };
    let id = api::settlement::build_batch(store, crds::agent::DEFAULT_NETWORK, period)
        .await
        .unwrap()
        .batch
        .expect("a batch");
    let mut tries = HashMap::new();
    // A second on: the batch's window (none here) is over once it is posted.
    let pass = relay_once(
        store,
        &ScriptedChain,
        api::store::now_ms() + 1_000,
        &mut tries,
    )
    .await
    .unwrap();
    assert_eq!((pass.posted, pass.finalized, pass.failed), (1, 1, 0));
    let batch = store.batch(&id).await.unwrap().unwrap();
    assert_eq!(batch.state, BatchState::Final);
    batch
}

/// The fee the contract charges on `gross`.
fn fee(gross: u64) -> u64 {
    gross * u64::from(FEE_BPS) / 10_000
}

/// Parses RFC 4180 CSV as `to_csv` writes it (CRLF rows, quoted fields doubled).
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let (mut row, mut field, mut quoted, mut chars) =
        (Vec::new(), String::new(), false, text.chars().peekable());
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\r') => {}
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => field.push(c),
        }
    }
    rows
}

/// The rows of `csv` as maps by header.
fn csv_records(csv: &str) -> Vec<HashMap<String, String>> {
    let rows = parse_csv(csv);
    let header = rows[0].clone();
    rows[1..]
        .iter()
        .map(|row| {
            assert_eq!(row.len(), header.len(), "{row:?}");
            header.iter().cloned().zip(row.iter().cloned()).collect()
        })
        .collect()
}

fn number(value: &Value) -> u128 {
    value
        .as_str()
        .expect("amounts are strings")
        .parse()
        .unwrap()
}

/// A chain double for slashes: answers each `execute` with the next scripted result and records
/// the messages.
#[derive(Default)]
struct SlashChain {
    answers: Mutex<Vec<Result<TxOutcome, ChainError>>>,
    sent: Mutex<Vec<Value>>,
}

impl Chain for SlashChain {
    fn label(&self) -> String {
        "a scripted chain (test)".into()
    }

    fn execute(
        &self,
        msg: Value,
        _funds: Vec<Coin>,
    ) -> settlement::chain::ChainFuture<'_, TxOutcome> {
        self.sent.lock().unwrap().push(msg);
        let answer = self.answers.lock().unwrap().remove(0);
        Box::pin(async move { answer })
    }

    fn query(&self, _msg: Value) -> settlement::chain::ChainFuture<'_, Value> {
        Box::pin(async { Ok(Value::Null) })
    }
}

fn slashed(amount: &str, hash: &str) -> Result<TxOutcome, ChainError> {
    Ok(TxOutcome {
        hash: hash.into(),
        height: 9,
        gas_wanted: 0,
        gas_used: 0,
        events: vec![TxEvent {
            kind: "wasm".into(),
            attributes: [
                ("action", "slash"),
                ("operator", PROVIDER),
                ("reason", "downtime"),
                ("amount", amount),
                ("jailed_until", "1800000000"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        }],
    })
}

backend_tests! {
    async fn a_statement_counts_the_batches_final_in_its_period_once_each(store: Store) {
        let (app, token, row, key) = placed(&store).await;
        // The job's first 10 s are settled in one batch, its next 15 s in another, later (receipts
        // cover no time beyond now).
        let first = receipted(&app, &token, &row, 10).await;
        let early = settle_epoch(&store).await;
        clock_passes(early.final_at.unwrap()).await;
        let later = receipted(&app, &token, &row, 25).await;
        let late = settle_epoch(&store).await;
        let (t1, t2) = (early.final_at.unwrap(), late.final_at.unwrap());
        assert!(t1 < t2);
        let gross1 = first.amount_micros();
        let gross2 = later.amount_micros() - first.amount_micros();
        assert!(gross1 > 0 && gross2 > 0);

        // The payouts were recorded with the batch, the fee exactly as the contract's.
        assert_eq!(
            store.batch_payouts(&early.id).await.unwrap(),
            [Payout { provider: PROVIDER.into(), gross: gross1, fee: fee(gross1), net: gross1 - fee(gross1) }]
        );

        let statement = |query: String| {
            let (app, key) = (app.clone(), key.clone());
            async move {
                let reply = send(&app, "GET", &format!("/v1/operators/{PROVIDER}/statement?{query}"), Some(&key), None, "").await;
                assert_eq!(reply.status, 200, "{query}: {}", reply.body);
                reply.body
            }
        };

        // A period ending when the second batch went final holds only the first.
        let only_first = statement(format!("from={t1}&to={t2}")).await;
        let totals = &only_first["totals"];
        assert_eq!(number(&totals["gross"]), u128::from(gross1), "{only_first}");
        assert_eq!(number(&totals["fee"]), u128::from(fee(gross1)));
        assert_eq!(number(&totals["net"]), u128::from(gross1 - fee(gross1)));
        assert_eq!((totals["jobs"].as_u64(), totals["gpuMillis"].as_u64()), (Some(1), Some(10_000)));
        assert_eq!(only_first["batches"].as_array().unwrap().len(), 1);
        assert_eq!(only_first["batches"][0]["batch"], early.id.as_str());
        assert_eq!(only_first["batches"][0]["postTx"], format!("POST-{}", early.id));
        assert_eq!(only_first["batches"][0]["finalizeTx"], format!("FIN-{}", early.id));

        // A period from the second: only it, and only the GPU time its receipt adds.
        let only_second = statement(format!("from={t2}&to={}", t2 + 1)).await;
        assert_eq!(number(&only_second["totals"]["gross"]), u128::from(gross2), "{only_second}");
        assert_eq!(only_second["totals"]["gpuMillis"], 15_000);

        // Both: the job's 25 s count once, its gross is the receipt's whole amount, fees per batch.
        let both = statement(format!("from={t1}&to={}", t2 + 1)).await;
        let totals = &both["totals"];
        assert_eq!(number(&totals["gross"]), u128::from(later.amount_micros()), "{both}");
        assert_eq!(number(&totals["fee"]), u128::from(fee(gross1) + fee(gross2)));
        assert_eq!(number(&totals["slashes"]), 0);
        assert_eq!(number(&totals["net"]), u128::from(later.amount_micros() - fee(gross1) - fee(gross2)));
        assert_eq!((totals["jobs"].as_u64(), totals["gpuMillis"].as_u64(), totals["gpuHours"].as_str()), (Some(1), Some(25_000), Some("0.007")));
        assert_eq!(both["jobs"], json!([{
            "job": row.job_id, "node": "gn-a", "gpuMillis": 25_000, "gpuHours": "0.007",
            "gross": later.amount_micros().to_string(), "batches": [early.id, late.id],
        }]));
        assert!(both.get("denom").is_none(), "this chain did not say its denom");

        // The same as CSV, by format or by Accept: the numbers parse back the same.
        let path = format!("/v1/operators/{PROVIDER}/statement?from={t1}&to={}", t2 + 1);
        let csv = send(&app, "GET", &format!("{path}&format=csv"), Some(&key), None, "").await;
        assert_eq!(csv.status, 200, "{}", csv.text);
        assert!(csv.header("content-type").starts_with("text/csv"), "{:?}", csv.headers);
        let accept = send_with(&app, "GET", &path, &[("authorization", &format!("Bearer {key}")), ("accept", "text/csv")], "").await;
        assert_eq!(accept.text, csv.text);
        let records = csv_records(&csv.text);
        let kinds: Vec<&str> = records.iter().map(|r| r["kind"].as_str()).collect();
        assert_eq!(kinds, ["job", "batch", "batch", "total"], "{}", csv.text);
        let sum = |kind: &str, column: &str| -> u128 {
            records.iter().filter(|r| r["kind"] == kind).map(|r| r[column].parse::<u128>().unwrap()).sum()
        };
        assert_eq!(sum("job", "gross_micros"), number(&totals["gross"]));
        assert_eq!(sum("job", "gpu_millis"), 25_000);
        assert_eq!(sum("batch", "gross_micros"), number(&totals["gross"]));
        assert_eq!(sum("batch", "fee_micros"), number(&totals["fee"]));
        assert_eq!(sum("batch", "net_micros"), number(&totals["net"]));
        let total = records.last().unwrap();
        for (column, field) in [("gross_micros", "gross"), ("fee_micros", "fee"), ("slash_micros", "slashes"), ("net_micros", "net")] {
            assert_eq!(total[column].parse::<u128>().unwrap(), number(&totals[field]), "{column}");
        }
        assert_eq!(records[0]["batches"], format!("{} {}", early.id, late.id));

        // The current month by default; nothing for someone else (a zero statement, not a 404).
        let month = statement(String::new()).await;
        assert!(month["from"].as_str().unwrap().ends_with("-01T00:00:00Z"), "{month}");
        let nobody = send(&app, "GET", "/v1/operators/agora1qqqqqqqqqq/statement", Some(&key), None, "").await;
        assert_eq!(nobody.status, 200, "{}", nobody.body);
        assert_eq!(nobody.body["totals"], json!({"jobs": 0, "gpuMillis": 0, "gpuHours": "0.000", "gross": "0", "fee": "0", "slashes": "0", "net": "0"}));

        // Mistakes name what to fix; no key, no statement.
        for (query, field) in [
            (format!("/v1/operators/{PROVIDER}/statement?from=yesterday"), "from"),
            (format!("/v1/operators/{PROVIDER}/statement?from={t2}&to={t1}"), "to"),
            (format!("/v1/operators/{PROVIDER}/statement?format=pdf"), "format"),
            (format!("/v1/operators/{PROVIDER}/statement?since=0"), "since"),
            ("/v1/operators/Not-An-Address/statement".to_string(), "address"),
        ] {
            let reply = send(&app, "GET", &query, Some(&key), None, "").await;
            assert_eq!(reply.status, 400, "{query}: {}", reply.body);
            assert_eq!(reply.body["error"]["field"], field, "{query}: {}", reply.body);
        }
        let anonymous = send(&app, "GET", &format!("/v1/operators/{PROVIDER}/statement"), None, None, "").await;
        assert_eq!(anonymous.status, 401);
    }

    async fn the_slash_outbox_posts_refuses_and_retries_as_the_chain_answers(store: Store) {
        let (app, _state, key) = app(&store, "team-a").await;
        // Bad requests are refused, naming the field.
        for (operator, reason, evidence, field) in [
            ("not an address", "fraud", "batch epoch-1 leaf 3", "operator"),
            (PROVIDER, "laziness", "batch epoch-1 leaf 3", "reason"),
            (PROVIDER, "fraud", "  ", "evidence"),
            (PROVIDER, "fraud", &"x".repeat(1025), "evidence"),
        ] {
            match api::slashing::request_slash(&store, operator, reason, evidence).await {
                Err(api::slashing::SlashRequestError::Invalid { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }

        // Slash ids sort by when they were asked for: one per millisecond, to send them in order.
        let downtime = api::slashing::request_slash(&store, PROVIDER, "downtime", "missed heartbeats 10:00-11:00").await.unwrap();
        clock_passes(downtime.requested_at).await;
        let cheating = api::slashing::request_slash(&store, PROVIDER, "cheating", "batch epoch-1 leaf 0").await.unwrap();
        clock_passes(cheating.requested_at).await;
        let other = api::slashing::request_slash(&store, "agora1qqqqqqqqqq", "fraud", "batch epoch-2 leaf 1").await.unwrap();
        assert_eq!(downtime.state, SlashState::Pending);

        // The chain is away for the first: it stays pending; the contract refuses the second
        // (no stake); the third is sent but not seen in time: not sent again.
        let chain = SlashChain::default();
        chain.answers.lock().unwrap().extend([
            Err(ChainError::Unreachable { url: "http://127.0.0.1:1".into(), method: "broadcast_tx_sync", reason: "connection refused".into() }),
            Err(ChainError::Refused { code: 5, codespace: "wasm".into(), log: "operator has no stake".into(), tx: Some("AB".into()) }),
            Err(ChainError::InclusionTimeout { hash: "CD".into(), waited: Duration::from_secs(30) }),
        ]);
        let pass = api::slashing::post_slashes(&store, &chain).await.unwrap();
        assert_eq!((pass.posted, pass.failed, pass.retrying), (0, 2, 1));
        assert_eq!(chain.sent.lock().unwrap()[0], json!({"slash": {"operator": PROVIDER, "reason": "downtime", "evidence": "missed heartbeats 10:00-11:00"}}));
        let waiting = store.slash(&downtime.id).await.unwrap().unwrap();
        assert_eq!((waiting.state, waiting.attempts), (SlashState::Pending, 1));
        assert!(waiting.last_error.unwrap().contains("connection refused"));
        let refused = store.slash(&cheating.id).await.unwrap().unwrap();
        assert_eq!(refused.state, SlashState::Failed);
        assert!(refused.last_error.unwrap().contains("operator has no stake"));
        let unknown = store.slash(&other.id).await.unwrap().unwrap();
        assert_eq!(unknown.state, SlashState::Failed);
        assert!(unknown.last_error.unwrap().contains("CD"));

        // Back: the pending one is posted with what the contract took; nothing else is resent.
        chain.answers.lock().unwrap().push(slashed("10", "EF"));
        let pass = api::slashing::post_slashes(&store, &chain).await.unwrap();
        assert_eq!((pass.posted, pass.failed, pass.retrying), (1, 0, 0));
        assert_eq!(chain.sent.lock().unwrap().len(), 4);
        let posted = store.slash(&downtime.id).await.unwrap().unwrap();
        assert_eq!((posted.state, posted.amount.as_deref(), posted.tx.as_deref(), posted.jailed_until), (SlashState::Posted, Some("10"), Some("EF"), Some(1_800_000_000)));
        assert_eq!(api::slashing::post_slashes(&store, &chain).await.unwrap(), Default::default());

        // The API lists them, by operator; the statement counts the slash in its period.
        let mine = send(&app, "GET", &format!("/v1/settlement/slashes?operator={PROVIDER}"), Some(&key), None, "").await;
        assert_eq!(mine.status, 200, "{}", mine.body);
        let items = mine.body["items"].as_array().unwrap();
        let mut states: Vec<&str> = items.iter().map(|s| s["state"].as_str().unwrap()).collect();
        states.sort();
        assert_eq!(states, ["failed", "posted"]);
        let shown = items.iter().find(|s| s["id"] == downtime.id.as_str()).unwrap();
        assert_eq!(shown["amount"], "10");
        assert_eq!(shown["jailedUntil"], "2027-01-15T08:00:00Z");
        let failed = send(&app, "GET", "/v1/settlement/slashes?state=failed", Some(&key), None, "").await;
        assert_eq!(failed.body["items"].as_array().unwrap().len(), 2, "{}", failed.body);
        for query in ["operator=nope", "state=done"] {
            let reply = send(&app, "GET", &format!("/v1/settlement/slashes?{query}"), Some(&key), None, "").await;
            assert_eq!(reply.status, 400, "{query}");
        }
        let at = posted.posted_at.unwrap();
        let statement = send(&app, "GET", &format!("/v1/operators/{PROVIDER}/statement?from={at}&to={}", at + 1), Some(&key), None, "").await;
        assert_eq!(statement.body["totals"]["slashes"], "10", "{}", statement.body);
        assert_eq!(statement.body["totals"]["net"], "-10");
        assert_eq!(statement.body["slashes"][0]["tx"], "EF");
        assert_eq!(statement.body["slashes"][0]["reason"], "downtime");
    }

    async fn a_failed_fee_read_leaves_the_batch_to_finalize_later(store: Store) {
        // The finalization's payouts cannot be computed (the chain is away when the fee is read):
        // the batch is not marked final without them, and a later pass records both.
        struct FeeAway(Mutex<bool>);
        impl SettlementChain for FeeAway {
            fn post_batch<'a>(&'a self, batch: &'a BatchRow) -> ChainFuture<'a, Included> {
                ScriptedChain.post_batch(batch)
            }
            fn finalize_batch<'a>(&'a self, id: &'a str) -> ChainFuture<'a, Included> {
                ScriptedChain.finalize_batch(id)
            }
            fn challenge_window(&self) -> Duration {
                Duration::ZERO
            }
            fn protocol_fee_bps(&self) -> ChainFuture<'_, u16> {
                let away = std::mem::replace(&mut *self.0.lock().unwrap(), false);
                Box::pin(async move {
                    if away { Err(ChainFailure::Unavailable("timed out".into())) } else { Ok(FEE_BPS) }
                })
            }
        }
        let (app, token, row, _key) = placed(&store).await;
        let receipt = receipted(&app, &token, &row, 30).await;
        let period = settlement::batch::Period { from_ms: 0, to_ms: api::store::now_ms() as u64 };
        let id = api::settlement::build_batch(&store, crds::agent::DEFAULT_NETWORK, period).await.unwrap().batch.unwrap();
        let chain = FeeAway(Mutex::new(true));
        let mut tries = HashMap::new();
        let pass = relay_once(&store, &chain, api::store::now_ms() + 1_000, &mut tries).await.unwrap();
        assert_eq!((pass.posted, pass.finalized, pass.failed), (1, 0, 1));
        let waiting = store.batch(&id).await.unwrap().unwrap();
        assert_eq!(waiting.state, BatchState::Confirmed);
        assert!(store.batch_payouts(&id).await.unwrap().is_empty());
        let pass = relay_once(&store, &chain, api::store::now_ms() + 10_000, &mut tries).await.unwrap();
        assert_eq!(pass.finalized, 1);
        let gross = receipt.amount_micros();
        assert_eq!(
            store.batch_payouts(&id).await.unwrap(),
            [Payout { provider: PROVIDER.into(), gross, fee: fee(gross), net: gross - fee(gross) }]
        );
    }
}
