//! Stakes read from the settlement contract gate scheduling: a node whose operator has less than
//! the contract's minimum bonded, is jailed, or has no operator address at all gets no new work,
//! and the job says why. The stakes come from the real contract on the embedded devnet, read the
//! way the hub's settlement loop reads them (`StakeBook::read`). SQLite and PostgreSQL.

mod common;

use api::stakes::StakeBook;
use common::*;
use serde_json::json;
use settlement::{
    chain::{Chain, Coin},
    devnet::{Devnet, DevnetConfig},
};

const MIN_STAKE: u128 = 1_000;

async fn slash(devnet: &Devnet, operator: &str) {
    let msg = json!({"slash": {"operator": operator, "reason": "downtime", "evidence": "missed heartbeats"}});
    devnet
        .execute_as(devnet.admin(), msg, vec![])
        .await
        .unwrap();
}

async fn bond(devnet: &Devnet, operator: &str, amount: u128) {
    devnet.fund(operator, amount).await.unwrap();
    devnet
        .execute_as(
            operator,
            json!({"bond": {}}),
            vec![Coin::new("uagora", amount)],
        )
        .await
        .unwrap();
}

backend_tests! {
    async fn only_nodes_of_staked_unjailed_operators_get_work(store: Store) {
        let devnet = Devnet::start(DevnetConfig { min_stake: MIN_STAKE, jail_seconds: 0, ..DevnetConfig::default() }).unwrap();
        let (app, state, key) = app(&store, "team-a").await;
        let (short, jailed) = (devnet.address("short"), devnet.address("jailed"));
        // Three nodes, cheapest first: one without an operator, one whose operator bonded too
        // little, one whose operator is jailed.
        register(&app, &registration("gn-anonymous", "eu-west", 1, "1.00")).await;
        let mut under = registration("gn-under", "eu-west", 1, "2.00");
        under["operatorAddress"] = json!(short);
        register(&app, &under).await;
        let mut convict = registration("gn-jailed", "eu-west", 1, "3.00");
        convict["operatorAddress"] = json!(jailed);
        register(&app, &convict).await;

        // Both bond the minimum, then get slashed 1% for downtime: below the minimum. Jails
        // last no time at first, so the first operator is only under-staked; then the admin
        // (governance) makes jails last an hour, and the second is jailed as well.
        bond(&devnet, &short, MIN_STAKE).await;
        bond(&devnet, &jailed, MIN_STAKE).await;
        slash(&devnet, &short).await;
        let mut params = devnet.query(json!({"params": {}})).await.unwrap();
        params["jail_seconds"] = json!(3_600);
        devnet
            .execute_as(devnet.admin(), json!({"update_params": {"params": params}}), vec![])
            .await
            .unwrap();
        slash(&devnet, &jailed).await;
        let book = StakeBook::read(&devnet).await.unwrap();
        assert_eq!(book.min_stake, MIN_STAKE);
        assert!(book.operators[&short].bonded < MIN_STAKE && !book.operators[&short].jailed, "{book:?}");
        assert!(book.operators[&jailed].jailed, "{book:?}");
        assert!(state.stakes.replace(book.clone()));
        assert!(!state.stakes.replace(book), "the same book again changes nothing");

        let job = submit(&app, &key, &sleep_spec(60)).await;
        assert_eq!(api::scheduling::schedule_once(&state).await.unwrap(), 0);
        let waiting = get_job(&app, &key, &job).await;
        let message = waiting["status"]["message"].as_str().unwrap_or_default().to_string();
        assert!(message.contains("stake") && message.contains("jailed"), "{waiting:#}");

        // Once the operator's stake is back above the minimum, its node gets the job.
        bond(&devnet, &short, MIN_STAKE).await;
        assert!(state.stakes.replace(StakeBook::read(&devnet).await.unwrap()));
        assert_eq!(api::scheduling::schedule_once(&state).await.unwrap(), 1);
        let placed = get_job(&app, &key, &job).await;
        assert_eq!(placed["status"]["placement"]["workers"][0]["node"], "gn-under", "{placed:#}");
    }

    async fn without_a_chain_stake_gates_nothing(store: Store) {
        let (app, state, key) = app(&store, "team-a").await;
        register(&app, &registration("gn-anonymous", "eu-west", 1, "1.00")).await;
        assert!(state.stakes.snapshot().is_none());
        let job = submit(&app, &key, &sleep_spec(60)).await;
        assert_eq!(api::scheduling::schedule_once(&state).await.unwrap(), 1);
        let placed = get_job(&app, &key, &job).await;
        assert_eq!(placed["status"]["placement"]["workers"][0]["node"], "gn-anonymous", "{placed:#}");
    }
}
