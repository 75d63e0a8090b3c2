//! What an operator scrapes: `/metrics` in the Prometheus text format with the hub's state and
//! request counters (labelled by route template, never by id), and the health endpoints.

mod common;

use std::{collections::BTreeMap, time::Duration};

use api::{
    HubSettings, liveness,
    metrics::{Metrics, Scrape},
    scheduling,
    store::now_ms,
};
use common::*;
use serde_json::json;

/// The `/metrics` text, asserting the Prometheus text content type.
async fn scrape(app: &axum::Router) -> String {
    let reply = send(app, "GET", "/metrics", None, None, "").await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert!(
        reply.header("content-type").starts_with("text/plain"),
        "Prometheus text format, got {:?}",
        reply.header("content-type")
    );
    reply.text
}

/// One sample of the text exposition: a series name, its labels and its value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Every sample in `text`, parsed as the Prometheus text format writes them: `name value` or
/// `name{label="value",…} value`, label values with `\\`, `\"` and `\n` escaped. Comment lines
/// (`# HELP`, `# TYPE`, `# EOF`) are skipped; a line that does not parse fails the test.
fn samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|line| parse_sample(line).unwrap_or_else(|| panic!("not a sample line: {line:?}")))
        .collect()
}

fn parse_sample(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' '])?;
    let name = line[..name_end].to_string();
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(after) = rest.strip_prefix('{') {
        let mut chars = after.char_indices();
        let mut key = String::new();
        loop {
            let (i, c) = chars.next()?;
            match c {
                '}' => {
                    rest = &after[i + 1..];
                    break;
                }
                ',' => {}
                '=' => {
                    if chars.next()?.1 != '"' {
                        return None;
                    }
                    let mut value = String::new();
                    loop {
                        match chars.next()?.1 {
                            '"' => break,
                            '\\' => match chars.next()?.1 {
                                'n' => value.push('\n'),
                                other => value.push(other),
                            },
                            other => value.push(other),
                        }
                    }
                    labels.insert(std::mem::take(&mut key), value);
                }
                other => key.push(other),
            }
        }
    }
    let mut fields = rest.split_whitespace();
    let value = match fields.next()? {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// Whether a sample has every label of `wanted` with that value (`le` compared as a number, so
/// `("le", "60")` finds `le="60.0"`).
fn has_labels(sample: &Sample, wanted: &[(&str, &str)]) -> bool {
    wanted.iter().all(|(k, v)| {
        sample.labels.get(*k).is_some_and(|have| {
            have == v
                || (*k == "le"
                    && have
                        .parse::<f64>()
                        .ok()
                        .zip(v.parse::<f64>().ok())
                        .is_some_and(|(a, b)| a == b))
        })
    })
}

/// The value of the one sample named `name` whose labels include `labels`; `None` when there is
/// none, and a failed test when several match (the labels given are not enough to tell).
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let found: Vec<Sample> = samples(text)
        .into_iter()
        .filter(|s| s.name == name && has_labels(s, labels))
        .collect();
    assert!(
        found.len() <= 1,
        "several {name} series match {labels:?}: {found:?}"
    );
    found.first().map(|s| s.value)
}

/// The sum of every sample named `name` whose labels include `labels` (0 when none), as
/// `sum(name{labels})` would be.
fn total(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    samples(text)
        .iter()
        .filter(|s| s.name == name && has_labels(s, labels))
        .map(|s| s.value)
        .sum()
}

/// The type `# TYPE` declares for the metric family `family`.
fn metric_type<'a>(text: &'a str, family: &str) -> Option<&'a str> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix("# TYPE ")?;
        let (name, kind) = rest.split_once(' ')?;
        (name == family).then_some(kind)
    })
}

/// A node timeout short enough to wait out, long enough that a node the test keeps heartbeating
/// never looks silent between two steps.
const NODE_TIMEOUT: Duration = Duration::from_millis(600);

fn short_timeouts() -> HubSettings {
    HubSettings {
        node_timeout: NODE_TIMEOUT,
        heartbeat_interval: Duration::from_millis(100),
        ..HubSettings::default()
    }
}

backend_tests! {
    async fn metrics_show_jobs_gpus_and_requests_by_route(store: Store) {
        let (app, _, key) = app(&store, "team-a").await;
        let before = scrape(&app).await;
        assert_eq!(sample(&before, "agora_jobs", &[("phase", "Pending")]), Some(0.0), "{before}");
        assert_eq!(sample(&before, "agora_jobs_submitted_total", &[]), Some(0.0), "{before}");

        let id = submit(&app, &key, &sleep_spec(1)).await;
        register(&app, &registration("gn-a", "eu-west", 2, "1.00")).await;
        get_job(&app, &key, &id).await;

        let text = scrape(&app).await;
        assert!(text.lines().any(|l| l == "agora_jobs{phase=\"Pending\"} 1"), "{text}");
        assert!(text.lines().any(|l| l == "agora_jobs_submitted_total 1"), "{text}");
        let free = sample(&text, "agora_gpus", &[("region", "eu-west"), ("model", "H100-80GB"), ("state", "free")]);
        assert_eq!(free, Some(2.0), "{text}");
        assert_eq!(sample(&text, "agora_nodes", &[("region", "eu-west"), ("state", "Ready")]), Some(1.0), "{text}");
        assert_eq!(sample(&text, "agora_nodes", &[("region", "eu-west"), ("ready", "true")]), Some(1.0), "the ready label stays for existing dashboards: {text}");

        let read = [("method", "GET"), ("route", "/v1/jobs/{id}"), ("status", "200")];
        assert_eq!(sample(&text, "agora_http_requests_total", &read), Some(1.0), "{text}");
        let submitted = [("method", "POST"), ("route", "/v1/jobs"), ("status", "201")];
        assert_eq!(sample(&text, "agora_http_requests_total", &submitted), Some(1.0), "{text}");
        assert!(!text.contains(&id), "a job id must never become a label value: {text}");
    }

    async fn health_and_readiness_answer_ok(store: Store) {
        let (app, _, _) = app(&store, "team-a").await;
        let health = send(&app, "GET", "/healthz", None, None, "").await;
        assert_eq!(health.status, 200, "{}", health.text);
        let ready = send(&app, "GET", "/readyz", None, None, "").await;
        assert_eq!(ready.status, 200, "the database answers: {}", ready.text);
    }

    async fn the_queue_shows_what_waits_and_for_how_long(store: Store) {
        let (app, state, key) = app(&store, "team-a").await;
        let empty = scrape(&app).await;
        for (family, kind) in [
            ("agora_queue_length", "gauge"),
            ("agora_queue_oldest_wait_seconds", "gauge"),
            ("agora_job_queue_wait_seconds", "histogram"),
            ("agora_placement_duration_seconds", "histogram"),
            ("agora_nodes_lost_total", "counter"),
            ("agora_assignments_lost_total", "counter"),
        ] {
            assert_eq!(metric_type(&empty, family), Some(kind), "{family}: {empty}");
        }
        assert_eq!(sample(&empty, "agora_queue_length", &[]), Some(0.0), "{empty}");
        assert_eq!(sample(&empty, "agora_queue_oldest_wait_seconds", &[]), Some(0.0), "an empty queue waits for nothing: {empty}");
        assert_eq!(sample(&empty, "agora_job_queue_wait_seconds_count", &[]), Some(0.0), "{empty}");

        // Three jobs and no node: all three wait.
        for _ in 0..3 {
            submit(&app, &key, &sleep_spec(60)).await;
        }
        clock_passes(now_ms() + 5).await;
        let waiting = scrape(&app).await;
        assert_eq!(sample(&waiting, "agora_queue_length", &[]), Some(3.0), "{waiting}");
        assert_eq!(sample(&waiting, "agora_jobs", &[("phase", "Pending")]), Some(3.0), "{waiting}");
        let oldest = sample(&waiting, "agora_queue_oldest_wait_seconds", &[]).unwrap();
        assert!(oldest > 0.0 && oldest < 60.0, "the first job has waited since it was submitted: {oldest}");

        // A node with two GPUs takes two of them; the third still waits.
        register(&app, &registration("gn-a", "eu-west", 2, "1.00")).await;
        assert_eq!(scheduling::schedule_once(&state).await.unwrap(), 2);
        let placed = scrape(&app).await;
        assert_eq!(sample(&placed, "agora_queue_length", &[]), Some(1.0), "{placed}");
        let still = sample(&placed, "agora_queue_oldest_wait_seconds", &[]).unwrap();
        assert!(still > 0.0, "the third job still waits: {placed}");
        // Each placement is observed once: its wait in the queue and the time to decide it.
        let observed = sample(&placed, "agora_job_queue_wait_seconds_count", &[]).unwrap();
        assert_eq!(observed, 2.0, "one wait per placed job: {placed}");
        assert_eq!(sample(&placed, "agora_placement_duration_seconds_count", &[]), Some(observed), "{placed}");
    }

    async fn observe_placement_feeds_the_wait_and_latency_histograms(store: Store) {
        let metrics = Metrics::new();
        metrics.observe_placement(Duration::from_millis(40), Duration::from_micros(800));
        metrics.observe_placement(Duration::from_secs(90), Duration::from_millis(3));
        let text = metrics.render(&store, &Scrape::new(20_000)).await.unwrap();

        let wait = "agora_job_queue_wait_seconds";
        assert_eq!(sample(&text, &format!("{wait}_count"), &[]), Some(2.0), "{text}");
        let sum = sample(&text, &format!("{wait}_sum"), &[]).unwrap();
        assert!((sum - 90.04).abs() < 1e-9, "{sum}");
        // Buckets fit both: milliseconds for an idle hub, minutes for a full one.
        for (le, n) in [("0.025", 0.0), ("0.05", 1.0), ("60", 1.0), ("120", 2.0), ("+Inf", 2.0)] {
            assert_eq!(sample(&text, &format!("{wait}_bucket"), &[("le", le)]), Some(n), "le={le}: {text}");
        }
        let took = "agora_placement_duration_seconds";
        assert_eq!(sample(&text, &format!("{took}_count"), &[]), Some(2.0), "{text}");
        for (le, n) in [("0.0005", 0.0), ("0.001", 1.0), ("0.002", 1.0), ("0.004", 2.0)] {
            assert_eq!(sample(&text, &format!("{took}_bucket"), &[("le", le)]), Some(n), "le={le}: {text}");
        }
    }

    async fn a_silent_node_ages_is_lost_once_and_its_job_waits_from_the_loss(store: Store) {
        let (app, state, key) = app_with(&store, "team-a", short_timeouts()).await;
        let silent = register(&app, &registration("gn-a", "eu-west", 1, "1.00")).await;
        let mut spec = sleep_spec(60);
        spec["retry"] = json!({"maxAttempts": 3});
        let job = submit(&app, &key, &spec).await;
        assert_eq!(scheduling::schedule_once(&state).await.unwrap(), 1);
        let assignment = assignment_of(&poll(&app, &silent).await, &job);
        assert_eq!(report(&app, &silent, &assignment, "Running", None, None).await.status, 204);
        // Registered after the placement, so the job went to gn-a; gn-b keeps heartbeating.
        let alive = register(&app, &registration("gn-b", "us-east", 1, "1.00")).await;
        let before = scrape(&app).await;
        assert_eq!(sample(&before, "agora_nodes_lost_total", &[]), Some(0.0), "{before}");
        assert_eq!(sample(&before, "agora_queue_length", &[]), Some(0.0), "{before}");

        // gn-a falls silent until the sweep declares its work lost.
        eventually("gn-a's work to be lost", Duration::from_secs(20), || async {
            assert_eq!(heartbeat(&app, &alive, &[]).await.status, 200);
            let sweep = liveness::sweep_once(&state).await.unwrap();
            (sweep.lost > 0).then_some(())
        })
        .await;
        assert_eq!(heartbeat(&app, &alive, &[]).await.status, 200);
        let lost = scrape(&app).await;
        assert_eq!(sample(&lost, "agora_nodes_lost_total", &[]), Some(1.0), "{lost}");
        assert_eq!(sample(&lost, "agora_assignments_lost_total", &[]), Some(1.0), "{lost}");
        assert_eq!(sample(&lost, "agora_nodes", &[("region", "eu-west"), ("state", "NotReady")]), Some(1.0), "{lost}");
        assert_eq!(sample(&lost, "agora_nodes", &[("region", "us-east"), ("state", "Ready")]), Some(1.0), "{lost}");

        // Heartbeat age: one observation per node, the silent one older than the node timeout.
        let age = "agora_node_heartbeat_age_seconds";
        assert_eq!(metric_type(&lost, age), Some("histogram"), "{lost}");
        let timeout = NODE_TIMEOUT.as_secs_f64();
        assert_eq!(total(&lost, &format!("{age}_count"), &[]), 2.0, "{lost}");
        let silent_labels = [("region", "eu-west"), ("state", "NotReady")];
        assert_eq!(sample(&lost, &format!("{age}_count"), &silent_labels), Some(1.0), "{lost}");
        let silent_age = sample(&lost, &format!("{age}_sum"), &silent_labels).unwrap();
        assert!(silent_age > timeout, "the silent node's age passed the timeout: {silent_age} in {lost}");
        let live_labels = [("region", "us-east"), ("state", "Ready")];
        let live_age = sample(&lost, &format!("{age}_sum"), &live_labels).unwrap();
        assert!(live_age <= timeout, "the live node heartbeats: {live_age} in {lost}");
        assert_eq!(sample(&lost, &format!("{age}_bucket"), &[("state", "Ready"), ("le", "+Inf")]), Some(1.0), "{lost}");

        // The job is queued again, and waits from the loss, not from its submission.
        let row = store.get_job(None, &job).await.unwrap().unwrap();
        assert_eq!((row.phase.as_str(), row.attempt), ("Pending", 1), "{row:?}");
        let requeued = store.job_events(&job).await.unwrap().into_iter().rev().find(|e| e.reason == "Retrying").unwrap().at;
        assert_eq!(store.queued_since(&row).await.unwrap(), requeued);
        assert!(requeued > row.submitted_at, "re-queued after its submission: {requeued} vs {}", row.submitted_at);
        assert_eq!(store.oldest_queued_since().await.unwrap(), Some(requeued));
        assert_eq!(sample(&lost, "agora_queue_length", &[]), Some(1.0), "{lost}");
        let oldest = sample(&lost, "agora_queue_oldest_wait_seconds", &[]).unwrap();
        let since_submission = (now_ms() - row.submitted_at) as f64 / 1000.0;
        let gap = (requeued - row.submitted_at) as f64 / 1000.0;
        assert!(oldest + gap <= since_submission + 0.001, "waiting {oldest} s since the loss, not {since_submission} s since submission");

        // Another sweep finds nothing new: the node is counted once.
        assert_eq!(liveness::sweep_once(&state).await.unwrap(), liveness::Sweep::default());
        assert_eq!(heartbeat(&app, &alive, &[]).await.status, 200);
        assert_eq!(scheduling::schedule_once(&state).await.unwrap(), 1, "the retry goes to gn-b");
        let after = scrape(&app).await;
        assert_eq!(sample(&after, "agora_nodes_lost_total", &[]), Some(1.0), "{after}");
        assert_eq!(sample(&after, "agora_queue_length", &[]), Some(0.0), "{after}");
        assert_eq!(sample(&after, "agora_queue_oldest_wait_seconds", &[]), Some(0.0), "{after}");
    }

    async fn failures_and_retries_are_counted_by_reason_from_the_database(store: Store) {
        let (app, state, key) = app(&store, "team-a").await;
        let empty = scrape(&app).await;
        assert_eq!(metric_type(&empty, "agora_job_failures_total"), Some("counter"), "{empty}");
        assert_eq!(metric_type(&empty, "agora_job_retries_total"), Some("counter"), "{empty}");
        // Every reason is there before anything failed, so a rate over it reads 0, not nothing.
        for reason in ["WorkerFailed", "NodeLost", "DeadlineExceeded", "VerificationFailed"] {
            assert_eq!(sample(&empty, "agora_job_failures_total", &[("reason", reason)]), Some(0.0), "{empty}");
        }
        assert_eq!(sample(&empty, "agora_job_retries_total", &[("reason", "WorkerFailed")]), Some(0.0), "{empty}");
        assert_eq!(sample(&empty, "agora_job_retries_total", &[("reason", "DeadlineExceeded")]), None, "never retried: {empty}");

        let a = register(&app, &registration("gn-a", "eu-west", 1, "1.00")).await;
        let b = register(&app, &registration("gn-b", "us-east", 1, "1.50")).await;
        let mut spec = sleep_spec(60);
        spec["retry"] = json!({"maxAttempts": 2});
        let job = submit(&app, &key, &spec).await;

        // Attempt 1 fails on gn-a: the job is retried.
        assert_eq!(scheduling::schedule_once(&state).await.unwrap(), 1);
        let first = assignment_of(&poll(&app, &a).await, &job);
        assert_eq!(report(&app, &a, &first, "Failed", Some(3), Some("boom")).await.status, 204);
        let retried = scrape(&app).await;
        assert_eq!(sample(&retried, "agora_job_retries_total", &[("reason", "WorkerFailed")]), Some(1.0), "{retried}");
        assert_eq!(total(&retried, "agora_job_failures_total", &[]), 0.0, "not failed yet: {retried}");

        // Attempt 2 fails on gn-b, the last one allowed: the job fails.
        assert_eq!(scheduling::schedule_once(&state).await.unwrap(), 1);
        let second = assignment_of(&poll(&app, &b).await, &job);
        assert_eq!(report(&app, &b, &second, "Failed", Some(3), Some("boom")).await.status, 204);
        let failed = scrape(&app).await;
        assert_eq!(get_job(&app, &key, &job).await["status"]["phase"], "Failed");
        assert_eq!(sample(&failed, "agora_job_failures_total", &[("reason", "WorkerFailed")]), Some(1.0), "{failed}");
        assert_eq!(sample(&failed, "agora_job_retries_total", &[("reason", "WorkerFailed")]), Some(1.0), "the last attempt is a failure, not a retry: {failed}");
        assert_eq!(total(&failed, "agora_job_failures_total", &[]), 1.0, "{failed}");
    }

    async fn the_market_shows_base_effective_and_placed_prices_and_utilization_by_class(store: Store) {
        let (app, state, key) = app(&store, "team-a").await;
        let empty = scrape(&app).await;
        assert_eq!(sample(&empty, "agora_market_target_utilization_ratio", &[]), Some(0.8), "{empty}");
        assert_eq!(total(&empty, "agora_market_base_price_micros", &[]), 0.0, "no class yet: {empty}");

        register(&app, &registration("gn-a", "eu-west", 2, "1.00")).await;
        register(&app, &registration("gn-b", "us-east", 1, "1.50")).await;
        let class = [("class", "H100-80GB")];
        let offered = scrape(&app).await;
        // A class not priced by an epoch yet is at the initial price (the floor by default).
        assert_eq!(sample(&offered, "agora_market_base_price_micros", &class), Some(10_000.0), "{offered}");
        assert_eq!(sample(&offered, "agora_market_effective_price_micros", &class), Some(1_000_000.0), "the cheapest free ask: {offered}");
        assert_eq!(sample(&offered, "agora_market_utilization_ratio", &class), Some(0.0), "{offered}");
        assert_eq!(sample(&offered, "agora_market_placed_price_micros", &class), None, "nothing placed: {offered}");
        assert_eq!(sample(&offered, "agora_market_epoch_utilization_ratio", &class), None, "no epoch yet: {offered}");

        // Two one-GPU jobs take gn-a's two GPUs at its ask; gn-b's is the cheapest left.
        submit(&app, &key, &sleep_spec(60)).await;
        submit(&app, &key, &sleep_spec(60)).await;
        assert_eq!(scheduling::schedule_once(&state).await.unwrap(), 2);
        let placed = scrape(&app).await;
        assert_eq!(sample(&placed, "agora_market_placed_price_micros", &class), Some(1_000_000.0), "{placed}");
        assert_eq!(sample(&placed, "agora_market_effective_price_micros", &class), Some(1_500_000.0), "{placed}");
        let utilization = sample(&placed, "agora_market_utilization_ratio", &class).unwrap();
        assert!((utilization - 2.0 / 3.0).abs() < 1e-9, "{placed}");

        // An epoch at 2/3 utilization, under the 80 % target: the price stays at its floor, and
        // the epoch's sample is shown.
        api::market::advance_epoch(&state).await.unwrap();
        let epoch = scrape(&app).await;
        let sampled = sample(&epoch, "agora_market_epoch_utilization_ratio", &class).unwrap();
        assert!((sampled - 0.6667).abs() < 1e-9, "basis points, rounded: {epoch}");
        assert_eq!(sample(&epoch, "agora_market_base_price_micros", &class), Some(10_000.0), "{epoch}");
    }

    async fn settlement_shows_receipts_and_money_by_region_and_state(store: Store) {
        let (app, state, key) = app(&store, "team-a").await;
        let mut node = registration("gn-a", "eu-west", 1, "2.00");
        node["operatorAddress"] = json!("agora1zqqqqqqqqq");
        let token = register(&app, &node).await;
        let job = submit(&app, &key, &sleep_spec(60)).await;
        assert_eq!(scheduling::schedule_once(&state).await.unwrap(), 1);
        poll(&app, &token).await;
        let row = store.job_assignments(&job, 1).await.unwrap().remove(0);
        let empty = scrape(&app).await;
        assert_eq!(total(&empty, "agora_settlement_receipts", &[]), 0.0, "{empty}");
        for kind in ["gross", "fee", "net"] {
            assert_eq!(sample(&empty, "agora_settlement_payouts_micros_total", &[("kind", kind)]), Some(0.0), "{empty}");
        }
        assert_eq!(sample(&empty, "agora_settlement_slashes", &[("state", "pending"), ("reason", "fraud")]), Some(0.0), "{empty}");
        assert_eq!(sample(&empty, "agora_stake_bonded_micros", &[]), None, "no chain, no stakes: {empty}");

        let first = receipted(&app, &token, &row, 5).await;
        let eu = |state: &'static str| [("region", "eu-west"), ("state", state)];
        let unsettled = scrape(&app).await;
        assert_eq!(sample(&unsettled, "agora_settlement_receipts", &eu("unsettled")), Some(1.0), "{unsettled}");
        assert_eq!(sample(&unsettled, "agora_settlement_amount_micros", &eu("unsettled")), Some(first.amount_micros() as f64), "{unsettled}");

        // A batch settles the first receipt; a later one is receipted for more.
        let leaf = api::store::settlement::NewLeaf {
            assignment_id: row.id.clone(),
            job_id: row.job_id.clone(),
            sequence: first.sequence,
            amount_micros: first.amount_micros(),
            paid_micros: first.amount_micros(),
            body: hex::encode(first.encode().unwrap()),
            provider: "agora1zqqqqqqqqq".into(),
            payer: "agora1yqqqqqqqqq".into(),
        };
        let totals = json!([{"address": "agora1zqqqqqqqqq", "amount": first.amount_micros().to_string()}]);
        let batch = api::store::settlement::NewBatch {
            id: "epoch-1".into(),
            period_from_ms: 0,
            period_to_ms: 1,
            root: "00".repeat(32),
            provider_totals: totals.clone(),
            payer_totals: totals,
            leaves: vec![leaf],
        };
        assert!(store.record_batch(&batch).await.unwrap());
        let built = scrape(&app).await;
        assert_eq!(sample(&built, "agora_settlement_receipts", &eu("built")), Some(1.0), "{built}");
        assert_eq!(sample(&built, "agora_settlement_receipts", &eu("unsettled")), Some(0.0), "{built}");
        assert_eq!(sample(&built, "agora_settlement_amount_micros", &eu("built")), Some(first.amount_micros() as f64), "{built}");
        assert_eq!(sample(&built, "agora_settlement_amount_micros", &eu("unsettled")), Some(0.0), "all receipted money is in a batch: {built}");

        let later = receipted(&app, &token, &row, 20).await;
        let rest = later.amount_micros() - first.amount_micros();
        let more = scrape(&app).await;
        assert_eq!(sample(&more, "agora_settlement_receipts", &eu("unsettled")), Some(1.0), "the latest receipt is in no batch: {more}");
        assert_eq!(sample(&more, "agora_settlement_receipts", &eu("built")), Some(0.0), "the batch holds an earlier sequence only: {more}");
        assert_eq!(sample(&more, "agora_settlement_amount_micros", &eu("built")), Some(first.amount_micros() as f64), "{more}");
        assert_eq!(sample(&more, "agora_settlement_amount_micros", &eu("unsettled")), Some(rest as f64), "{more}");

        // A slash asked of the contract shows as pending, by reason.
        store
            .insert_slash(&api::store::settlement::NewSlash {
                id: "slash-1".into(),
                operator: "agora1zqqqqqqqqq".into(),
                reason: "cheating".into(),
                evidence: "{}".into(),
            })
            .await
            .unwrap();
        let slashed = scrape(&app).await;
        assert_eq!(sample(&slashed, "agora_settlement_slashes", &[("state", "pending"), ("reason", "cheating")]), Some(1.0), "{slashed}");
        assert_eq!(total(&slashed, "agora_settlement_slashes", &[]), 1.0, "{slashed}");
    }
}
