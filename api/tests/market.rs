//! The market: base prices that follow utilization, persisted; quotes that price a job without
//! submitting it; placements that pay max(ask, base) and never more than the job's maximum.

mod common;

use api::HubSettings;
use common::*;
use scheduler::pricing::PricingParams;
use serde_json::{Value, json};

/// A sleep job that may pay at most `max` per GPU-hour.
fn priced_spec(max: &str) -> Value {
    let mut spec = sleep_spec(60);
    spec["pricing"]["maxPricePerGpuHour"] = json!(max);
    spec
}

backend_tests! {
    async fn base_prices_rise_with_utilization_and_survive_a_restart(store: Store) {
        let (app, state, key) = app(&store, "team-a").await;
        let prices = send(&app, "GET", "/v1/prices", Some(&key), None, "").await;
        assert_eq!(prices.status, 200, "{}", prices.body);
        assert_eq!(prices.body["items"], json!([]), "nothing priced before the first epoch");
        assert_eq!(prices.body["targetUtilizationBps"], 8000);

        // 2 H100s, both busy: utilization 100% > 80% target, so the base price rises by 12.5%.
        register(&app, &registration("gn-a", "eu-west", 2, "1.00")).await;
        for _ in 0..2 {
            submit(&app, &key, &sleep_spec(60)).await;
        }
        assert_eq!(api::scheduling::schedule_once(&state).await.unwrap(), 2);
        let epoch = api::market::advance_epoch(&state).await.unwrap();
        assert_eq!(epoch.len(), 1);
        assert_eq!(epoch[0].class, "H100-80GB");
        assert_eq!(epoch[0].utilization_bps, 10_000);
        assert_eq!(epoch[0].change_bps, 1_250);
        assert_eq!(epoch[0].base_micros, 11_250, "0.01 floor × 1.125");

        let listed = send(&app, "GET", "/v1/prices", Some(&key), None, "").await;
        assert_eq!(listed.body["items"][0]["gpuClass"], "H100-80GB");
        assert_eq!(listed.body["items"][0]["basePricePerGpuHour"], "0.01125");
        assert_eq!(listed.body["items"][0]["changeBps"], 1250);

        // A new hub over the same database starts where this one left off.
        let (restarted, _, key2) = common::app(&store, "team-b").await;
        let again = send(&restarted, "GET", "/v1/prices", Some(&key2), None, "").await;
        assert_eq!(again.body["items"], listed.body["items"], "prices are persisted");
    }

    async fn a_class_kept_busy_by_earlier_work_holds_its_price_until_jobs_take_it_again(store: Store) {
        let settings = HubSettings { price_epoch: std::time::Duration::from_millis(300), ..HubSettings::default() };
        let (app, state, key) = app_with(&store, "team-a", settings).await;
        register(&app, &registration("gn-a", "eu-west", 2, "1.00")).await;
        submit(&app, &key, &sleep_spec(600)).await;
        assert_eq!(api::scheduling::schedule_once(&state).await.unwrap(), 1);
        // Placed in this epoch: 50% < 80%, the price falls (it starts at the floor, so it stays).
        api::market::advance_epoch(&state).await.unwrap();
        submit(&app, &key, &sleep_spec(600)).await;
        assert_eq!(api::scheduling::schedule_once(&state).await.unwrap(), 1);
        let rose = api::market::advance_epoch(&state).await.unwrap();
        assert_eq!((rose[0].utilization_bps, rose[0].change_bps), (10_000, 1_250), "full, and a job took it");
        // Still full, but only with work placed epochs ago: nobody takes the class at its price
        // any more, so raising it would deter nobody. It holds.
        clock_passes(api::store::now_ms() + 400).await;
        let held = api::market::advance_epoch(&state).await.unwrap();
        assert_eq!((held[0].utilization_bps, held[0].change_bps), (10_000, 0), "{held:?}");
        assert_eq!(held[0].base_micros, rose[0].base_micros);
    }

    async fn a_quote_prices_and_places_without_writing_anything(store: Store) {
        let (app, _, key) = app(&store, "team-a").await;
        register(&app, &registration("gn-cheap", "eu-west", 1, "1.20")).await;
        register(&app, &registration("gn-dear", "eu-west", 4, "2.00")).await;
        let mut spec = sleep_spec(60);
        spec["resources"] = json!({"workers": 1, "gpusPerWorker": 2});
        let quote = send(&app, "POST", "/v1/quotes", Some(&key), Some("application/json"), spec.to_string()).await;
        assert_eq!(quote.status, 200, "{}", quote.body);
        assert_eq!(quote.body["placeable"], true, "{}", quote.body);
        assert_eq!(quote.body["workers"][0]["node"], "gn-dear", "only gn-dear has 2 GPUs: {}", quote.body);
        assert_eq!(quote.body["pricePerGpuHour"], "2.00");
        assert_eq!(quote.body["costPerHour"], "4.00", "2 GPUs × 2.00");

        let too_cheap = send(&app, "POST", "/v1/quotes", Some(&key), Some("application/json"), priced_spec("1.00").to_string()).await;
        assert_eq!(too_cheap.body["placeable"], false, "{}", too_cheap.body);
        assert!(too_cheap.body["message"].as_str().unwrap().contains("2 too expensive"), "{}", too_cheap.body);

        let jobs = send(&app, "GET", "/v1/jobs", Some(&key), None, "").await;
        assert_eq!(jobs.body["items"], json!([]), "a quote submits nothing");
        let node = get_node(&app, &key, "gn-dear").await;
        assert_eq!(node["status"]["free"], 4, "a quote reserves nothing");

        let bad = send(&app, "POST", "/v1/quotes", Some(&key), Some("application/json"), r#"{"kind": "Batch"}"#).await;
        assert_eq!(bad.status, 422, "a quote validates like a submission: {}", bad.body);
    }

    async fn a_job_pays_the_base_price_when_it_is_above_the_ask(store: Store) {
        let settings = HubSettings {
            pricing: PricingParams { initial_micros: 3_000_000, ..PricingParams::default() },
            ..HubSettings::default()
        };
        let (app, state, key) = app_with(&store, "team-a", settings).await;
        register(&app, &registration("gn-a", "eu-west", 2, "1.00")).await;
        let capped = submit(&app, &key, &priced_spec("2.50")).await;
        let paying = submit(&app, &key, &priced_spec("5.00")).await;
        assert_eq!(api::scheduling::schedule_once(&state).await.unwrap(), 1);
        let capped = get_job(&app, &key, &capped).await;
        assert_eq!(capped["status"]["phase"], "Pending", "never above the job's maximum");
        assert!(capped["status"]["message"].as_str().unwrap().contains("too expensive"), "{}", capped["status"]);
        let paying = get_job(&app, &key, &paying).await;
        assert_eq!(paying["status"]["placement"]["pricePerGpuHour"], "3.00", "max(ask 1.00, base 3.00)");
    }

    async fn a_federated_job_runs_on_its_data_sites_with_an_aggregator(store: Store) {
        let (app, state, key) = app(&store, "team-a").await;
        for name in ["gn-hospital-a", "gn-hospital-b", "gn-cheap"] {
            let price = if name == "gn-cheap" { "0.10" } else { "1.00" };
            register(&app, &registration(name, "eu-west", 1, price)).await;
        }
        let mut spec = sleep_spec(60);
        spec["kind"] = json!("Federated");
        spec["resources"] = json!({"workers": 2, "gpusPerWorker": 1});
        spec["placement"] = json!({"dataLocality": [{"node": "gn-hospital-b", "dataset": "scans"}, {"node": "gn-hospital-a"}]});
        let quote = send(&app, "POST", "/v1/quotes", Some(&key), Some("application/json"), spec.to_string()).await;
        assert_eq!(quote.body["placeable"], true, "{}", quote.body);
        assert!(quote.body["aggregator"].is_string(), "{}", quote.body);

        let id = submit(&app, &key, &spec).await;
        assert_eq!(api::scheduling::schedule_once(&state).await.unwrap(), 1);
        let job = get_job(&app, &key, &id).await;
        let placement = &job["status"]["placement"];
        assert_eq!(placement["workers"][0]["node"], "gn-hospital-b", "rank 0 on data site 0, not the cheap node: {placement}");
        assert_eq!(placement["workers"][1]["node"], "gn-hospital-a", "{placement}");
        assert!(placement["aggregator"].is_string(), "an aggregator is chosen: {placement}");

        let elsewhere = json!([{"node": "gn-hospital-a"}, {"node": "gn-not-registered"}]);
        spec["placement"]["dataLocality"] = elsewhere;
        let refused = send(&app, "POST", "/v1/quotes", Some(&key), Some("application/json"), spec.to_string()).await;
        assert_eq!(refused.body["placeable"], false, "{}", refused.body);
        assert!(refused.body["message"].as_str().unwrap().contains("data sites that cannot take their worker"), "{}", refused.body);
    }
}
