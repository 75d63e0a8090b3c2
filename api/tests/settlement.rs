//! Settlement in the hub: unsettled receipts with what a batch needs, each epoch's batch recorded
//! with its leaves in one transaction (a receipt settled once, a later one for the rest), batch
//! states moved by compare-and-set, the relayer posting each batch once and finalizing it after its
//! window (against a scripted chain double), and the API a provider checks its pay with. Every test
//! runs on SQLite and on PostgreSQL.

mod common;

use std::{collections::HashMap, sync::Mutex, time::Duration};

use api::{
    relayer::{ChainFailure, ChainFuture, Included, SettlementChain, relay_once},
    store::settlement::{BatchRow, BatchState, NewBatch, NewLeaf},
};
use common::*;
use serde_json::{Value, json};
use settlement::receipt::Receipt;

/// A one-GPU job placed on gn-a, paid by tenant team-a from its payer address: the app, gn-a's
/// token, the assignment's hub record and team-a's API key.
async fn placed(
    store: &api::store::Store,
) -> (axum::Router, String, api::store::AssignmentRow, String) {
    let (app, state, key) = app(store, "team-a").await;
    let mut registration = registration("gn-a", "eu-west", 1, "2.00");
    registration["operatorAddress"] = json!("agora1zqqqqqqqqq");
    let token = register(&app, &registration).await;
    let job = submit(&app, &key, &sleep_spec(60)).await;
    assert_eq!(api::scheduling::schedule_once(&state).await.unwrap(), 1);
    poll(&app, &token).await;
    let row = store.job_assignments(&job, 1).await.unwrap().remove(0);
    let tenant = store.ensure_tenant("team-a").await.unwrap();
    assert!(
        store
            .set_payer_address(&tenant, "agora1yqqqqqqqqq")
            .await
            .unwrap()
    );
    (app, token, row, key)
}

fn batch(id: &str, leaves: Vec<NewLeaf>) -> NewBatch {
    let total: u64 = leaves.iter().map(|l| l.paid_micros).sum();
    let totals =
        |address: &str| -> Value { json!([{"address": address, "amount": total.to_string()}]) };
    NewBatch {
        id: id.into(),
        period_from_ms: 0,
        period_to_ms: 1,
        root: "00".repeat(32),
        provider_totals: totals("agora1zqqqqqqqqq"),
        payer_totals: totals("agora1yqqqqqqqqq"),
        leaves,
    }
}

/// A chain double that records the steps asked of it and fails the ones a test scripts.
#[derive(Default)]
struct ScriptedChain {
    posts: Mutex<Vec<String>>,
    finalizes: Mutex<Vec<String>>,
    /// Failures to answer the next posts with, in order.
    post_failures: Mutex<Vec<ChainFailure>>,
}

impl SettlementChain for ScriptedChain {
    fn post_batch<'a>(&'a self, batch: &'a BatchRow) -> ChainFuture<'a, Included> {
        Box::pin(async move {
            self.posts.lock().unwrap().push(batch.id.clone());
            let mut failures = self.post_failures.lock().unwrap();
            if !failures.is_empty() {
                return Err(failures.remove(0));
            }
            Ok(Included {
                tx: format!("TX-{}", batch.id),
                height: 42,
                payouts: Vec::new(),
            })
        })
    }

    fn finalize_batch<'a>(&'a self, id: &'a str) -> ChainFuture<'a, Included> {
        Box::pin(async move {
            self.finalizes.lock().unwrap().push(id.to_string());
            Ok(Included {
                tx: format!("FIN-{id}"),
                height: 43,
                payouts: Vec::new(),
            })
        })
    }

    fn challenge_window(&self) -> Duration {
        Duration::from_secs(60)
    }

    fn protocol_fee_bps(&self) -> ChainFuture<'_, u16> {
        Box::pin(async { Ok(250) })
    }
}

backend_tests! {
    async fn the_relayer_posts_each_batch_once_and_finalizes_it_after_its_window(store: Store) {
        let (app, token, row, _key) = placed(&store).await;
        let receipt = receipted(&app, &token, &row, 30).await;
        let leaf = NewLeaf {
            assignment_id: row.id.clone(),
            job_id: row.job_id.clone(),
            sequence: receipt.sequence,
            amount_micros: receipt.amount_micros(),
            paid_micros: receipt.amount_micros(),
            body: hex::encode(receipt.encode().unwrap()),
            provider: "agora1zqqqqqqqqq".into(),
            payer: "agora1yqqqqqqqqq".into(),
        };
        assert!(store.record_batch(&batch("epoch-1", vec![leaf])).await.unwrap());
        let chain = ScriptedChain::default();
        chain.post_failures.lock().unwrap().push(ChainFailure::Unavailable("connection refused".into()));
        let mut tries = HashMap::new();
        let t0 = api::store::now_ms();

        // The chain is away: the batch stays built, its failure recorded.
        let pass = relay_once(&store, &chain, t0, &mut tries).await.unwrap();
        assert_eq!((pass.posted, pass.failed), (0, 1));
        let failed = store.batch("epoch-1").await.unwrap().unwrap();
        assert_eq!((failed.state, failed.attempts), (BatchState::Built, 1));
        assert!(failed.last_error.unwrap().contains("connection refused"));
        // Not again before its backoff.
        relay_once(&store, &chain, t0 + 10, &mut tries).await.unwrap();
        assert_eq!(chain.posts.lock().unwrap().len(), 1);

        // Back: posted and confirmed once; later passes do not post it again.
        let pass = relay_once(&store, &chain, t0 + 1_000, &mut tries).await.unwrap();
        assert_eq!(pass.posted, 1);
        let confirmed = store.batch("epoch-1").await.unwrap().unwrap();
        assert_eq!((confirmed.state, confirmed.tx.as_deref(), confirmed.height), (BatchState::Confirmed, Some("TX-epoch-1"), Some(42)));
        relay_once(&store, &chain, t0 + 2_000, &mut tries).await.unwrap();
        assert_eq!(*chain.posts.lock().unwrap(), ["epoch-1", "epoch-1"], "one failed try, one post");
        assert!(chain.finalizes.lock().unwrap().is_empty(), "still in its challenge window");

        // A relayer restarted after the window (no memory of tries) finalizes it, once.
        let posted_at = confirmed.posted_at.unwrap();
        let mut fresh = HashMap::new();
        let pass = relay_once(&store, &chain, posted_at + 60_000, &mut fresh).await.unwrap();
        assert_eq!(pass.finalized, 1);
        relay_once(&store, &chain, posted_at + 120_000, &mut fresh).await.unwrap();
        assert_eq!(*chain.finalizes.lock().unwrap(), ["epoch-1"]);
        let done = store.batch("epoch-1").await.unwrap().unwrap();
        assert_eq!((done.state, done.tx.as_deref()), (BatchState::Final, Some("TX-epoch-1")));
        // The double reports no payout events (as the contract does for a repeated finalization):
        // the payouts are recorded as the contract computes them, with the fee it charges.
        let gross = receipt.amount_micros();
        let fee = gross * 250 / 10_000;
        assert_eq!(
            store.batch_payouts("epoch-1").await.unwrap(),
            [api::store::settlement::Payout { provider: "agora1zqqqqqqqqq".into(), gross, fee, net: gross - fee }]
        );
    }

    async fn a_receipt_is_settled_once_and_a_later_one_only_for_the_rest(store: Store) {
        let (app, token, row, _key) = placed(&store).await;
        let first = receipted(&app, &token, &row, 5).await;
        let now = api::store::now_ms();

        let unsettled = store.unsettled_receipts(now, 100).await.unwrap();
        assert_eq!(unsettled.len(), 1, "{unsettled:?}");
        let pending = &unsettled[0];
        assert_eq!(pending.sequence, 5);
        assert_eq!(pending.amount_micros, first.amount_micros());
        assert_eq!(pending.settled_micros, 0);
        assert_eq!(pending.operator_address.as_deref(), Some("agora1zqqqqqqqqq"));
        assert_eq!(pending.payer_address.as_deref(), Some("agora1yqqqqqqqqq"));
        assert_eq!(pending.node_public_key.as_deref(), Some(public_key_hex(&node_key("gn-a")).as_str()));
        assert_eq!(Receipt::decode(&hex::decode(&pending.body).unwrap()).unwrap(), first);

        let leaf = |receipt: &Receipt, paid: u64| NewLeaf {
            assignment_id: row.id.clone(),
            job_id: row.job_id.clone(),
            sequence: receipt.sequence,
            amount_micros: receipt.amount_micros(),
            paid_micros: paid,
            body: hex::encode(receipt.encode().unwrap()),
            provider: "agora1zqqqqqqqqq".into(),
            payer: "agora1yqqqqqqqqq".into(),
        };
        assert!(store.record_batch(&batch("epoch-1", vec![leaf(&first, first.amount_micros())])).await.unwrap());
        assert!(store.unsettled_receipts(now, 100).await.unwrap().is_empty(), "settled");
        // Another replica building from the same receipts records nothing.
        assert!(!store.record_batch(&batch("epoch-1b", vec![leaf(&first, first.amount_micros())])).await.unwrap());
        assert!(store.batch("epoch-1b").await.unwrap().is_none());

        // The job runs on: the next receipt is settled for what the first did not pay.
        let later = receipted(&app, &token, &row, 20).await;
        let unsettled = store.unsettled_receipts(api::store::now_ms(), 100).await.unwrap();
        assert_eq!(unsettled.len(), 1);
        assert_eq!(unsettled[0].sequence, 20);
        assert_eq!(unsettled[0].settled_micros, first.amount_micros());
        let rest = later.amount_micros() - first.amount_micros();
        assert!(store.record_batch(&batch("epoch-2", vec![leaf(&later, rest)])).await.unwrap());
        let leaves = store.job_leaves(&row.job_id).await.unwrap();
        let paid: u64 = leaves.iter().map(|l| l.paid_micros).sum();
        assert_eq!(paid, later.amount_micros(), "paid in full, once: {leaves:?}");
        assert_eq!(store.batch_leaves("epoch-2").await.unwrap()[0].leaf_index, 0);
    }

    async fn batch_states_move_forward_once(store: Store) {
        let (app, token, row, _key) = placed(&store).await;
        let receipt = receipted(&app, &token, &row, 30).await;
        let leaf = NewLeaf {
            assignment_id: row.id.clone(),
            job_id: row.job_id.clone(),
            sequence: receipt.sequence,
            amount_micros: receipt.amount_micros(),
            paid_micros: receipt.amount_micros(),
            body: hex::encode(receipt.encode().unwrap()),
            provider: "agora1zqqqqqqqqq".into(),
            payer: "agora1yqqqqqqqqq".into(),
        };
        assert!(store.record_batch(&batch("epoch-1", vec![leaf])).await.unwrap());
        let built = store.batch("epoch-1").await.unwrap().unwrap();
        assert_eq!((built.state, built.receipts, built.tx.clone()), (BatchState::Built, 1, None));
        assert_eq!(built.provider_totals[0]["address"], "agora1zqqqqqqqqq");

        store.batch_attempt_failed("epoch-1", "the chain is unreachable").await.unwrap();
        let failed = store.batch("epoch-1").await.unwrap().unwrap();
        assert_eq!((failed.attempts, failed.last_error.as_deref()), (1, Some("the chain is unreachable")));

        assert!(store.advance_batch("epoch-1", BatchState::Built, BatchState::Posted, Some(("ABCD", 7))).await.unwrap());
        assert!(!store.advance_batch("epoch-1", BatchState::Built, BatchState::Posted, Some(("EF01", 8))).await.unwrap(), "posted once");
        let posted = store.batch("epoch-1").await.unwrap().unwrap();
        assert_eq!((posted.state, posted.tx.as_deref(), posted.height), (BatchState::Posted, Some("ABCD"), Some(7)));
        assert!(posted.posted_at.is_some() && posted.last_error.is_none());
        assert!(store.advance_batch("epoch-1", BatchState::Posted, BatchState::Final, None).await.unwrap());
        let done = store.batch("epoch-1").await.unwrap().unwrap();
        assert_eq!((done.state, done.tx.as_deref()), (BatchState::Final, Some("ABCD")), "the tx is kept");
        assert!(done.final_at.is_some());

        let (finals, next) = store.list_batches(Some(BatchState::Final), None, 10).await.unwrap();
        assert_eq!((finals.len(), next), (1, None));
        let (built, _) = store.list_batches(Some(BatchState::Built), None, 10).await.unwrap();
        assert!(built.is_empty());
        let (all, _) = store.list_batches(None, None, 10).await.unwrap();
        assert_eq!(all.len(), 1);
    }

    async fn each_epochs_batch_settles_what_earlier_ones_did_not_pay(store: Store) {
        let (app, token, row, _key) = placed(&store).await;
        let first = receipted(&app, &token, &row, 5).await;
        let period = |from: u64| settlement::batch::Period { from_ms: from, to_ms: api::store::now_ms() as u64 };
        let network = crds::agent::DEFAULT_NETWORK;

        let build = api::settlement::build_batch(&store, network, period(0)).await.unwrap();
        assert_eq!((build.receipts, build.unaddressed, build.rejected), (1, 0, 0), "{build:?}");
        let id = build.batch.expect("a batch");
        let recorded = store.batch(&id).await.unwrap().unwrap();
        assert_eq!(recorded.state, BatchState::Built);
        assert_eq!(recorded.provider_totals, json!([{"address": "agora1zqqqqqqqqq", "amount": first.amount_micros().to_string()}]));
        assert_eq!(recorded.payer_totals, json!([{"address": "agora1yqqqqqqqqq", "amount": first.amount_micros().to_string()}]));
        // The recorded leaves rebuild the recorded root, and each leaf's proof verifies.
        let leaves: Vec<Vec<u8>> = store.batch_leaves(&id).await.unwrap().iter().map(|l| hex::decode(&l.body).unwrap()).collect();
        let tree = settlement::merkle::MerkleTree::from_leaves(&leaves);
        assert_eq!(hex::encode(tree.root()), recorded.root);
        let path = tree.proof(0).unwrap();
        assert!(settlement::merkle::verify(&leaves[0], 0, 1, &path, &tree.root()));
        // Nothing new: no batch.
        let again = api::settlement::build_batch(&store, network, period(1)).await.unwrap();
        assert_eq!(again.batch, None);

        // The job goes on; the next epoch pays the rest, once.
        let later = receipted(&app, &token, &row, 20).await;
        let next = api::settlement::build_batch(&store, network, period(2)).await.unwrap();
        let next_id = next.batch.expect("a second batch");
        let leaf = &store.batch_leaves(&next_id).await.unwrap()[0];
        assert_eq!((leaf.amount_micros, leaf.paid_micros), (later.amount_micros(), later.amount_micros() - first.amount_micros()));
    }

    async fn receipts_without_a_payer_wait(store: Store) {
        let (app, token, row, _key) = placed(&store).await;
        // The tenant has no payer address (any more).
        let tenant = store.ensure_tenant("team-a").await.unwrap();
        assert!(store.clear_payer_address(&tenant).await.unwrap());
        receipted(&app, &token, &row, 5).await;
        let period = settlement::batch::Period { from_ms: 0, to_ms: api::store::now_ms() as u64 };
        let build = api::settlement::build_batch(&store, crds::agent::DEFAULT_NETWORK, period).await.unwrap();
        assert_eq!((build.batch, build.unaddressed), (None, 1));
    }

    async fn providers_check_their_pay_through_the_api(store: Store) {
        let (app, token, row, key) = placed(&store).await;
        let receipt = receipted(&app, &token, &row, 10).await;
        let get = |path: String| {
            let app = app.clone();
            let key = key.clone();
            async move { send(&app, "GET", &path, Some(&key), None, "").await }
        };
        // Not settled yet: listed without a batch, no proof.
        let listed = get(format!("/v1/receipts?job={}", row.job_id)).await;
        assert_eq!(listed.status, 200, "{}", listed.body);
        let id = format!("{}.{}", row.id, receipt.sequence);
        assert_eq!(listed.body["items"], json!([{"id": id, "job": row.job_id, "assignment": row.id, "sequence": 10, "amountMicros": receipt.amount_micros()}]));
        assert_eq!(get(format!("/v1/receipts/{id}/proof")).await.status, 404);

        let period = settlement::batch::Period { from_ms: 0, to_ms: api::store::now_ms() as u64 };
        let batch = api::settlement::build_batch(&store, crds::agent::DEFAULT_NETWORK, period).await.unwrap().batch.unwrap();
        let listed = get(format!("/v1/receipts?job={}", row.job_id)).await;
        assert_eq!(listed.body["items"][0]["batch"], batch.as_str());
        assert_eq!(listed.body["items"][0]["paidMicros"], receipt.amount_micros());
        let shown = get(format!("/v1/settlement/batches/{batch}")).await;
        assert_eq!((shown.body["state"].as_str(), shown.body["receipts"].as_u64()), (Some("built"), Some(1)), "{}", shown.body);

        // Posted and final: the proof names the transaction and checks against the root.
        let chain = ScriptedChain::default();
        let mut tries = HashMap::new();
        relay_once(&store, &chain, api::store::now_ms(), &mut tries).await.unwrap();
        relay_once(&store, &chain, api::store::now_ms() + 61_000, &mut tries).await.unwrap();
        let proof = get(format!("/v1/receipts/{id}/proof")).await;
        assert_eq!(proof.status, 200, "{}", proof.body);
        let p = &proof.body;
        assert_eq!((p["batch"].as_str(), p["tx"].as_str(), p["index"].as_u64(), p["tree_size"].as_u64()), (Some(batch.as_str()), Some(format!("TX-{batch}").as_str()), Some(0), Some(1)));
        let leaf = hex::decode(p["leaf"].as_str().unwrap()).unwrap();
        assert_eq!(Receipt::decode(&leaf).unwrap(), receipt, "the leaf is the signed receipt");
        let root: [u8; 32] = hex::decode(p["root"].as_str().unwrap()).unwrap().try_into().unwrap();
        let path: Vec<[u8; 32]> = p["path"].as_array().unwrap().iter().map(|h| hex::decode(h.as_str().unwrap()).unwrap().try_into().unwrap()).collect();
        assert!(settlement::merkle::verify(&leaf, 0, 1, &path, &root));
        let finals = get("/v1/settlement/batches?state=final".into()).await;
        assert_eq!(finals.body["items"][0]["id"], batch.as_str(), "{}", finals.body);
        assert_eq!(finals.body["items"][0]["tx"], format!("TX-{batch}"));

        // The job's status names the batch and the transaction that settle it.
        let job = get(format!("/v1/jobs/{}", row.job_id)).await;
        assert_eq!(
            job.body["status"]["settlement"],
            json!({"batch": batch, "tx": format!("TX-{batch}")}),
            "{}",
            job.body
        );
        let metrics = send(&app, "GET", "/metrics", None, None, "").await;
        assert!(
            metrics.text.contains("agora_settlement_batches{state=\"final\"} 1")
                && metrics.text.contains("agora_settlement_batches{state=\"built\"} 0"),
            "{}",
            metrics.text
        );

        // Mistakes name what to fix.
        for (path, status, field) in [
            ("/v1/receipts".to_string(), 400, "job"),
            ("/v1/receipts?job=job-nope".to_string(), 404, ""),
            ("/v1/receipts/not-a-receipt/proof".to_string(), 400, "id"),
            ("/v1/settlement/batches?state=paid".to_string(), 400, "state"),
            ("/v1/settlement/batches/epoch-0-none".to_string(), 404, ""),
        ] {
            let reply = get(path.clone()).await;
            assert_eq!(reply.status, status, "{path}: {}", reply.body);
            if !field.is_empty() {
                assert_eq!(reply.body["error"]["field"], field, "{path}: {}", reply.body);
            }
        }
    }
}
