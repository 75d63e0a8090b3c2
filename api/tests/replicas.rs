//! Several hub replicas on one database: exactly one leads (runs the scheduling, pricing and
//! liveness loops), leadership moves at once when the leader stops and after the lease's TTL when
//! it dies or loses the database, a leader that lost the lease writes nothing (fencing), and two
//! replicas hammered with submissions at once place every job once on GPUs nobody else holds.
//!
//! Each hub here has its own connection pool to the shared database, as separate processes would.
//! Every test runs on SQLite and on PostgreSQL.

mod common;

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering},
    },
    time::Duration,
};

use api::{
    AppState, HubSettings, ids,
    leader::{LEASE, Leadership},
    scheduling,
    store::{Backend, Fence, NewAssignment, NewJob, Store, SubmitOutcome, now_ms},
};
use axum::Router;
use common::*;
use crds::agent::RegisterRequest;
use futures::StreamExt;
use scheduler::pricing::ClassPrice;
use sqlx::Row;
use tokio::{sync::watch, time::Instant};

/// A database several hubs share: its URL, and what keeps it alive for the test.
struct SharedDb {
    url: String,
    _dir: Option<tempfile::TempDir>,
}

/// A new, empty database on `backend`, or `None` when PostgreSQL is not configured (and not
/// required), like `common::fresh_store` but handing out the URL so each hub connects on its own.
async fn shared_db(backend: Backend) -> Option<SharedDb> {
    match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().expect("temporary directory");
            let url = format!("sqlite://{}", dir.path().join("hub.db").display());
            Some(SharedDb {
                url,
                _dir: Some(dir),
            })
        }
        Backend::Postgres => {
            let Ok(admin_url) = std::env::var("AGORA_TEST_POSTGRES_URL") else {
                assert_ne!(
                    std::env::var("AGORA_REQUIRE_POSTGRES").as_deref(),
                    Ok("1"),
                    "AGORA_REQUIRE_POSTGRES=1 but AGORA_TEST_POSTGRES_URL is not set; run ./scripts/test"
                );
                eprintln!(
                    "PostgreSQL not configured (AGORA_TEST_POSTGRES_URL); skipping the PostgreSQL variant"
                );
                return None;
            };
            static COUNTER: AtomicU32 = AtomicU32::new(0);
            sqlx::any::install_default_drivers();
            let name = format!(
                "agora_r_{}_{}_{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed),
                rand::random::<u32>()
            );
            let mut admin = <sqlx::AnyConnection as sqlx::Connection>::connect(&admin_url)
                .await
                .expect("connect to PostgreSQL");
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&mut admin)
                .await
                .expect("create database");
            let base = admin_url
                .rsplit_once('/')
                .map_or(admin_url.as_str(), |(base, _)| base);
            Some(SharedDb {
                url: format!("{base}/{name}"),
                _dir: None,
            })
        }
    }
}

/// Declares `sqlite` and `postgres` variants of an async test taking the shared database's URL.
macro_rules! replica_tests {
    ($(async fn $name:ident($url:ident: &str) $body:block)*) => {
        $(
            mod $name {
                #[allow(unused_imports)]
                use super::*;

                async fn run($url: &str) $body

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    let db = shared_db(api::store::Backend::Sqlite).await.unwrap();
                    run(&db.url).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    if let Some(db) = shared_db(api::store::Backend::Postgres).await {
                        run(&db.url).await;
                    }
                }
            }
        )*
    };
}

/// One replica: its own pool on the shared database, its state and router, and the sender that
/// shuts it down (which makes its campaign release the lease).
struct Hub {
    store: Store,
    state: AppState,
    app: Router,
    stop: watch::Sender<bool>,
}

/// A replica over `url` campaigning as `holder` with a short lease (renewed every `renew_ms`,
/// lasting `ttl_ms`). Its campaign starts with [`Leadership::start`], when the test says.
async fn hub(url: &str, holder: &str, ttl_ms: u64, renew_ms: u64) -> Hub {
    let settings = HubSettings {
        lease_ttl: Duration::from_millis(ttl_ms),
        lease_renew: Duration::from_millis(renew_ms),
        ..HubSettings::default()
    };
    hub_with(url, holder, settings).await
}

/// A replica named `holder` with the given tunables (rate limits off).
async fn hub_with(url: &str, holder: &str, settings: HubSettings) -> Hub {
    let store = Store::connect(url)
        .await
        .expect("connect the replica's store");
    let settings = HubSettings {
        lease_holder: Some(holder.to_string()),
        rate_limits: api::ratelimit::RateLimits::unlimited(),
        ..settings
    };
    let (state, stop) = AppState::new(store.clone(), settings).await.unwrap();
    let app = api::routes::router(state.clone());
    Hub {
        store,
        state,
        app,
        stop,
    }
}

/// Registers node `name` with `gpus` GPUs (`GPU-SIM-{name}-{i}`) directly in the store.
async fn add_node(store: &Store, name: &str, gpus: usize) {
    let reg: RegisterRequest =
        serde_json::from_value(registration(name, "eu-west", gpus, "1.00")).unwrap();
    store
        .upsert_node(&reg, &format!("token-hash-{name}"))
        .await
        .unwrap();
}

/// A 1-GPU sleep job of tenant `team-a`, directly in the store.
async fn add_job(store: &Store) -> String {
    let tenant_id = store.ensure_tenant("team-a").await.unwrap();
    let id = ids::job_id();
    let outcome = store
        .submit_job(NewJob {
            id: id.clone(),
            tenant_id,
            name: None,
            spec: spec(sleep_spec(60)),
            idempotency_key: None,
            request_hash: "test".into(),
        })
        .await
        .unwrap();
    assert!(matches!(outcome, SubmitOutcome::Created(_)), "{outcome:?}");
    id
}

fn fence(lease: &str, holder: &str, epoch: i64) -> Fence {
    Fence {
        lease: lease.into(),
        holder: holder.into(),
        epoch,
    }
}

/// Waits until exactly one of `a` and `b` leads, and returns which (0 for `a`, 1 for `b`).
async fn one_leader(a: &Leadership, b: &Leadership) -> usize {
    eventually(
        "exactly one replica to lead",
        Duration::from_secs(10),
        || async {
            match (a.is_leader(), b.is_leader()) {
                (true, false) => Some(0),
                (false, true) => Some(1),
                _ => None,
            }
        },
    )
    .await
}

replica_tests! {
    async fn the_lease_has_one_holder_and_its_epoch_fences_writes(url: &str) {
        let one = Store::connect(url).await.unwrap();
        let two = Store::connect(url).await.unwrap();
        let ttl = Duration::from_millis(500);
        // Times are explicit, so expiry needs no waiting; release expires a lease at the real
        // now, so they start there.
        let t = now_ms();
        assert_eq!(one.try_acquire("t", "a", t, ttl).await.unwrap(), Some(1), "a free lease is taken at epoch 1");
        assert_eq!(two.try_acquire("t", "b", t + 100, ttl).await.unwrap(), None, "a's lease runs until t+500");
        assert_eq!(one.try_acquire("t", "a", t + 400, ttl).await.unwrap(), Some(1), "a renewal keeps the epoch");
        assert_eq!(two.try_acquire("t", "b", t + 800, ttl).await.unwrap(), None, "renewed until t+900");
        assert_eq!(two.try_acquire("t", "b", t + 900, ttl).await.unwrap(), Some(2), "expired: b takes it, epoch moves on");
        assert_eq!(one.try_acquire("t", "a", t + 950, ttl).await.unwrap(), None, "a lost it");
        let lease = one.lease("t").await.unwrap().expect("the lease");
        assert_eq!((lease.holder.as_str(), lease.epoch, lease.expires_at), ("b", 2, t + 1400));
        assert_eq!(one.lease("other").await.unwrap(), None);

        // Writes under a's old fence, or with b's epoch but not b's name, change nothing.
        add_node(&one, "gn-a", 2).await;
        let job = add_job(&one).await;
        let worker = NewAssignment {
            id: ids::assignment_id(&job, 1, 0),
            rank: 0,
            node_name: "gn-a".into(),
            gpus: vec!["GPU-SIM-gn-a-0".into()],
            price_micros: 1_000_000,
        };
        for stale in [fence("t", "a", 1), fence("t", "a", 2), fence("t", "b", 1), fence("u", "b", 2)] {
            assert!(!one.place_job_fenced(&job, 0, std::slice::from_ref(&worker), Some(&stale)).await.unwrap(), "placed under {stale:?}");
        }
        let unplaced = one.get_job(None, &job).await.unwrap().expect("the job");
        assert_eq!((unplaced.phase.as_str(), unplaced.attempt), ("Pending", 0), "a fenced-out placement writes nothing");
        assert!(one.job_assignments(&job, 1).await.unwrap().is_empty());
        assert!(one.all_nodes().await.unwrap()[0].allocated.is_empty(), "no GPU allocated");
        assert!(two.place_job_fenced(&job, 0, std::slice::from_ref(&worker), Some(&fence("t", "b", 2))).await.unwrap(), "b's fence holds");
        assert_eq!(one.job_assignments(&job, 1).await.unwrap().len(), 1);

        // Lost workers and prices are fenced too. A cutoff in the future makes gn-a count as silent.
        let cutoff = now_ms() + 60_000;
        let stale = fence("t", "a", 1);
        assert!(one.lose_assignments_fenced("gn-a", &job, cutoff, "a minute", Some(&stale)).await.unwrap().is_empty());
        assert_eq!(one.job_assignments(&job, 1).await.unwrap()[0].state.as_str(), "Assigned");
        let prices = [ClassPrice { class: "H100-80GB".into(), base_micros: 2_000_000, utilization_bps: 9_000, change_bps: 100 }];
        assert!(!one.save_prices_fenced(&prices, Some(&stale)).await.unwrap());
        assert!(one.load_prices().await.unwrap().is_empty(), "fenced-out prices are not saved");
        assert!(two.save_prices_fenced(&prices, Some(&fence("t", "b", 2))).await.unwrap());
        assert_eq!(one.load_prices().await.unwrap(), prices);
        let lost = two.lose_assignments_fenced("gn-a", &job, cutoff, "a minute", Some(&fence("t", "b", 2))).await.unwrap();
        assert_eq!(lost, vec![worker.id.clone()]);

        // Releasing: only the holder can, and the next taker need not wait for the TTL.
        assert!(!one.release("t", "a").await.unwrap(), "a does not hold it");
        assert!(two.release("t", "b").await.unwrap());
        assert!(!two.release("t", "b").await.unwrap(), "released once");
        assert_eq!(one.try_acquire("t", "a", now_ms(), ttl).await.unwrap(), Some(3), "taken at once after the release");
    }

    async fn one_replica_leads_and_hands_over_at_once_when_it_stops(url: &str) {
        // A long TTL: a takeover within it can only come from the release.
        let hubs = [hub(url, "hub-a", 5_000, 50).await, hub(url, "hub-b", 5_000, 50).await];
        let mut leads = [Leadership::start(&hubs[0].state), Leadership::start(&hubs[1].state)];
        let first = one_leader(&leads[0], &leads[1]).await;
        let other = 1 - first;
        let epoch = leads[first].epoch().expect("the leader's epoch");
        let lease = hubs[other].store.lease(LEASE).await.unwrap().expect("the lease");
        assert_eq!((lease.holder.as_str(), lease.epoch), (leads[first].holder(), epoch));
        assert_eq!(leads[other].fence(), None, "a follower has no fence");
        assert_eq!(leads[first].fence().map(|f| f.epoch), Some(epoch));

        // Renewals keep the same leader and epoch; the follower never leads meanwhile.
        let watch_until = Instant::now() + Duration::from_millis(400);
        while Instant::now() < watch_until {
            assert_eq!(leads[first].epoch(), Some(epoch), "the leader keeps its epoch");
            assert!(!leads[other].is_leader(), "never two leaders");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        let stopped_at = Instant::now();
        hubs[first].stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), leads[first].stopped()).await.expect("the campaign ends on shutdown");
        assert!(!leads[first].is_leader());
        let next = eventually("the follower to take over", Duration::from_secs(10), || async { leads[other].epoch() }).await;
        assert!(next > epoch, "epoch {next} after {epoch}");
        assert!(stopped_at.elapsed() < Duration::from_secs(3), "took {:?}: the lease was released, not left to expire", stopped_at.elapsed());
        let lease = hubs[first].store.lease(LEASE).await.unwrap().expect("the lease");
        assert_eq!((lease.holder.as_str(), lease.epoch), (leads[other].holder(), next));
    }

    async fn a_job_submitted_to_a_follower_is_placed_without_waiting_for_the_interval(url: &str) {
        // An hour between scheduling cycles: only the leader's watch on the queue can place the
        // job in time, since the follower's wake-up does not reach another process.
        let settings = || HubSettings {
            lease_ttl: Duration::from_millis(1_000),
            lease_renew: Duration::from_millis(100),
            schedule_interval: Duration::from_secs(3_600),
            ..HubSettings::default()
        };
        let leader = hub_with(url, "hub-a", settings()).await;
        let lead = Leadership::start(&leader.state);
        eventually("hub-a to lead", Duration::from_secs(10), || async { lead.epoch() }).await;
        let follower = hub_with(url, "hub-b", settings()).await;
        let follows = Leadership::start(&follower.state);
        let loops = [
            tokio::spawn(scheduling::run(leader.state.clone(), lead.clone())),
            tokio::spawn(scheduling::run(follower.state.clone(), follows.clone())),
        ];
        add_node(&follower.store, "gn-a", 1).await;
        // The leader's first cycle has run (nothing to place) before the job arrives.
        tokio::time::sleep(Duration::from_millis(300)).await;

        let key = add_key(&follower.store, "team-a").await;
        let job = submit(&follower.app, &key, &sleep_spec(60)).await;
        let submitted = Instant::now();
        let placed = eventually("the job to be placed", Duration::from_secs(10), || async {
            let row = leader.store.get_job(None, &job).await.unwrap().expect("the job");
            (row.phase.as_str() == "Scheduled").then_some(submitted.elapsed())
        })
        .await;
        assert!(placed < Duration::from_secs(2), "placed after {placed:?}");
        for hub in [&leader, &follower] {
            hub.stop.send(true).unwrap();
        }
        for handle in loops {
            tokio::time::timeout(Duration::from_secs(10), handle).await.expect("the loops stop").unwrap();
        }
    }

    async fn a_backlog_that_fits_nowhere_does_not_hold_up_the_jobs_behind_it(url: &str) {
        // More jobs that fit no node than one cycle reads (256), then one that fits: the loop
        // pages past the backlog instead of re-reading its head. An hour between cycles, so only
        // the loop's own paging can place the job in time.
        let settings = HubSettings { schedule_interval: Duration::from_secs(3_600), ..HubSettings::default() };
        let hub = hub_with(url, "hub-a", settings).await;
        add_node(&hub.store, "gn-a", 1).await;
        let key = add_key(&hub.store, "team-a").await;
        let mut unfit = sleep_spec(60);
        unfit["resources"]["gpu"] = serde_json::json!({"models": ["B200-192GB"]});
        let backlog: Vec<String> = futures::stream::iter(0..300)
            .then(|_| submit(&hub.app, &key, &unfit))
            .collect()
            .await;
        let lead = Leadership::start(&hub.state);
        eventually("hub-a to lead", Duration::from_secs(10), || async { lead.epoch() }).await;
        let running = tokio::spawn(scheduling::run(hub.state.clone(), lead.clone()));
        let job = submit(&hub.app, &key, &sleep_spec(60)).await;
        eventually("the job behind the backlog to be placed", Duration::from_secs(10), || async {
            let row = hub.store.get_job(None, &job).await.unwrap().expect("the job");
            (row.phase.as_str() == "Scheduled").then_some(())
        })
        .await;
        // The backlog waits, each job saying why (the last ones are explained just after the
        // placement is written).
        for id in [&backlog[0], &backlog[299]] {
            eventually("the backlog to be explained", Duration::from_secs(10), || async {
                let row = hub.store.get_job(None, id).await.unwrap().expect("a backlog job");
                (row.phase.as_str() == "Pending" && row.reason.as_deref() == Some("Unschedulable")).then_some(())
            })
            .await;
        }
        hub.stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(10), running).await.expect("the loop stops").unwrap();
    }

    async fn a_crashed_leader_is_replaced_after_its_ttl(url: &str) {
        let a = hub(url, "hub-a", 1_000, 100).await;
        let b = hub(url, "hub-b", 1_000, 100).await;
        let lead_a = Leadership::start(&a.state);
        eventually("hub-a to lead", Duration::from_secs(10), || async { lead_a.epoch() }).await;
        let mut lead_b = Leadership::start(&b.state);
        // Dropping every handle ends the campaign without releasing, as a crash would.
        let crashed_at = Instant::now();
        let old = lead_a.epoch().unwrap();
        drop(lead_a);
        let next = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Some(epoch) = lead_b.epoch() {
                    return epoch;
                }
                lead_b.changed().await;
            }
        })
        .await
        .expect("hub-b takes over once the lease expires");
        assert!(next > old);
        assert!(crashed_at.elapsed() >= Duration::from_millis(500), "took over after {:?}, before the lease could expire", crashed_at.elapsed());
        assert_eq!(b.store.lease(LEASE).await.unwrap().unwrap().holder, "hub-b");
    }

    async fn a_leader_cut_off_from_the_database_steps_down_before_its_successor_leads(url: &str) {
        let a = hub(url, "hub-a", 1_000, 100).await;
        let b = hub(url, "hub-b", 1_000, 100).await;
        let lead_a = Leadership::start(&a.state);
        let old = eventually("hub-a to lead", Duration::from_secs(10), || async { lead_a.epoch() }).await;
        let lead_b = Leadership::start(&b.state);
        let mut a_epoch = lead_a.subscribe();
        let a_down = tokio::spawn(async move {
            let _ = a_epoch.wait_for(Option::is_none).await;
            Instant::now()
        });
        let mut b_epoch = lead_b.subscribe();
        let b_up = tokio::spawn(async move {
            let _ = b_epoch.wait_for(Option::is_some).await;
            Instant::now()
        });
        // hub-a's pool closes: its renewals fail from now on, as in a partition.
        let cut_at = Instant::now();
        a.store.close().await;
        let a_down = tokio::time::timeout(Duration::from_secs(10), a_down).await.expect("hub-a steps down").unwrap();
        let b_up = tokio::time::timeout(Duration::from_secs(10), b_up).await.expect("hub-b takes over").unwrap();
        assert!(a_down < b_up, "hub-a stepped down {:?} after hub-b took over", a_down - b_up);
        assert!(a_down - cut_at < Duration::from_millis(1_000), "hub-a led on for {:?} without the database", a_down - cut_at);
        assert!(lead_b.epoch().unwrap() > old);
        assert!(!lead_a.is_leader());
    }

    async fn two_replicas_hammered_at_once_place_every_job_once(url: &str) {
        let hubs = Arc::new([hub(url, "hub-a", 3_000, 100).await, hub(url, "hub-b", 3_000, 100).await]);
        let key = add_key(&hubs[0].store, "team-a").await;
        let leads = [Leadership::start(&hubs[0].state), Leadership::start(&hubs[1].state)];
        let first = one_leader(&leads[0], &leads[1]).await;
        let second = 1 - first;
        let old_fence = leads[first].fence().expect("the leader's fence");

        // Phase 1: submissions through both routers and registrations, while both replicas run
        // scheduling cycles as their loops would; only the leader may place.
        let (ids_1, placed_1) = hammer(&hubs, &leads, &key, 0..100, &["gn-0", "gn-1"], None).await;
        assert_eq!(placed_1[second], 0, "the follower placed jobs");

        // The leader stops (releasing the lease); the other replica takes over.
        hubs[first].stop.send(true).unwrap();
        let epoch = eventually("the second replica to lead", Duration::from_secs(10), || async { leads[second].epoch() }).await;
        assert!(epoch > old_fence.epoch);
        assert!(!leads[first].is_leader());

        // Phase 2: the same, while the old leader keeps running cycles under its old fence, as a
        // stalled leader would that has not noticed; none of its placements may land.
        let (ids_2, placed_2) = hammer(&hubs, &leads, &key, 100..200, &["gn-2", "gn-3"], Some((first, old_fence))).await;
        assert_eq!(placed_2[first], 0, "the old leader placed jobs under its stale fence");
        // Last cycles by the leader, until nothing more fits.
        let mut placed = placed_1[first] + placed_2[second];
        loop {
            match scheduling::schedule_if_leader(&hubs[second].state, &leads[second]).await.unwrap() {
                Some(0) => break,
                Some(n) => placed += n,
                None => panic!("the second replica stopped leading"),
            }
        }

        let submitted: HashSet<String> = ids_1.into_iter().chain(ids_2).collect();
        assert_eq!(submitted.len(), 200, "every submission got its own id");
        check_invariants(url, &submitted, placed).await;
    }

    async fn two_running_hubs_serve_and_one_runs_the_loops(url: &str) {
        let start = |holder: &str| {
            let settings = HubSettings {
                schedule_interval: Duration::from_millis(50),
                lease_ttl: Duration::from_secs(5),
                lease_renew: Duration::from_millis(100),
                lease_holder: Some(holder.to_string()),
                rate_limits: api::ratelimit::RateLimits::unlimited(),
                ..HubSettings::default()
            };
            api::RunningHub::start(api::HubConfig {
                listen: "127.0.0.1:0".parse().unwrap(),
                database_url: url.to_string(),
                settings,
                api_key_file: None,
                tls: None,
                allow_plain_http: false,
                chain: None,
            })
        };
        let mut running = vec![start("hub-a").await.unwrap(), start("hub-b").await.unwrap()];
        // Requests go through a third router on its own pool, which runs no loops: whatever
        // gets placed, a running hub's leader placed.
        let client = hub(url, "client", 5_000, 100).await;
        let key = add_key(&client.store, "team-a").await;
        register(&client.app, &registration("gn-a", "eu-west", 2, "1.00")).await;
        let holder = eventually("a running hub to lead", Duration::from_secs(10), || async {
            client.store.lease(LEASE).await.unwrap().map(|lease| lease.holder)
        })
        .await;
        let first = usize::from(holder == "hub-b");

        // Plain HTTP on loopback; reqwest still wants a TLS provider chosen to build a client.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::new();
        for hub in &running {
            let ready = http.get(format!("{}/readyz", hub.url())).send().await.unwrap();
            assert_eq!(ready.status(), 200, "every replica serves");
        }
        let metrics = http.get(format!("{}/metrics", running[first].url())).send().await.unwrap().text().await.unwrap();
        assert!(metrics.contains(&format!("agora_leader{{holder=\"{holder}\"}} 1")), "{metrics}");

        let job = submit(&client.app, &key, &sleep_spec(60)).await;
        scheduled(&client, &key, &job).await;

        let leader = running.remove(first);
        let stopped_at = Instant::now();
        leader.shutdown().await.unwrap();
        let next = eventually("the other hub to take the lease", Duration::from_secs(10), || async {
            client.store.lease(LEASE).await.unwrap().filter(|lease| lease.holder != holder && lease.expires_at > now_ms())
        })
        .await;
        assert!(stopped_at.elapsed() < Duration::from_secs(4), "the lease was released at shutdown, not left to expire");
        let job = submit(&client.app, &key, &sleep_spec(60)).await;
        scheduled(&client, &key, &job).await;
        let metrics = http.get(format!("{}/metrics", running[0].url())).send().await.unwrap().text().await.unwrap();
        assert!(metrics.contains(&format!("agora_leader{{holder=\"{}\"}} 1", next.holder)), "{metrics}");
        running.remove(0).shutdown().await.unwrap();
    }
}

/// Waits until `job` is Scheduled, as `client`'s API shows it.
async fn scheduled(client: &Hub, key: &str, job: &str) {
    eventually("the job to be placed", Duration::from_secs(10), || async {
        (get_job(&client.app, key, job).await["status"]["phase"] == "Scheduled").then_some(())
    })
    .await
}

/// Submits the jobs numbered `jobs` (alternating between the two replicas' routers, several at
/// once) and registers `nodes` (8 GPUs each, alternating too), while each replica runs scheduling
/// cycles as its loop would — and, with `stale`, replica `stale.0` also runs cycles under that old
/// fence. Returns the submitted ids and the jobs each replica placed (under the stale fence for
/// replica `stale.0`, when given).
async fn hammer(
    hubs: &Arc<[Hub; 2]>,
    leads: &[Leadership; 2],
    key: &str,
    jobs: std::ops::Range<usize>,
    nodes: &[&str],
    stale: Option<(usize, Fence)>,
) -> (Vec<String>, [usize; 2]) {
    let done = Arc::new(AtomicBool::new(false));
    let placed = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
    let mut cycles = Vec::new();
    for replica in 0..2 {
        let (hubs, done, placed, lead) = (
            hubs.clone(),
            done.clone(),
            placed.clone(),
            leads[replica].clone(),
        );
        let stale = stale
            .clone()
            .filter(|(r, _)| *r == replica)
            .map(|(_, fence)| fence);
        cycles.push(tokio::spawn(async move {
            let state = &hubs[replica].state;
            while !done.load(Ordering::SeqCst) {
                let n = match &stale {
                    Some(fence) => scheduling::schedule_fenced(state, Some(fence))
                        .await
                        .unwrap(),
                    None => scheduling::schedule_if_leader(state, &lead)
                        .await
                        .unwrap()
                        .unwrap_or(0),
                };
                placed[replica].fetch_add(n, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }));
    }
    let registrations = async {
        for (i, node) in nodes.iter().enumerate() {
            register(&hubs[i % 2].app, &registration(node, "eu-west", 8, "1.00")).await;
        }
    };
    let spec = sleep_spec(60);
    let submissions = futures::stream::iter(jobs)
        .map(|i| submit(&hubs[i % 2].app, key, &spec))
        .buffer_unordered(8)
        .collect::<Vec<String>>();
    let ((), ids) = tokio::join!(registrations, submissions);
    // A few more cycles once everything is in, so both replicas see the whole fleet and queue.
    tokio::time::sleep(Duration::from_millis(200)).await;
    done.store(true, Ordering::SeqCst);
    for cycle in cycles {
        cycle.await.expect("a scheduling task panicked");
    }
    (
        ids,
        [
            placed[0].load(Ordering::SeqCst),
            placed[1].load(Ordering::SeqCst),
        ],
    )
}

/// What must hold after the hammer, read straight from the database: every submitted job exists
/// once; each placed job has assignments of exactly one attempt (its first), one per worker; no
/// GPU is in two assignments; the allocations are exactly the assigned GPUs; every GPU is used
/// (32 GPUs, 200 one-GPU jobs); and the placements counted by the replicas are those in the store.
async fn check_invariants(url: &str, submitted: &HashSet<String>, placed: usize) {
    sqlx::any::install_default_drivers();
    let db = sqlx::AnyPool::connect(url)
        .await
        .expect("an inspection pool");
    let jobs = sqlx::query("SELECT id, phase, attempt FROM jobs")
        .fetch_all(&db)
        .await
        .unwrap();
    let mut phases: HashMap<String, (String, i64)> = HashMap::new();
    for row in &jobs {
        let id: String = row.get("id");
        assert!(
            phases
                .insert(id.clone(), (row.get("phase"), row.get("attempt")))
                .is_none(),
            "job {id} twice"
        );
    }
    let stored: HashSet<String> = phases.keys().cloned().collect();
    assert_eq!(
        &stored, submitted,
        "the stored jobs are exactly the submitted ones"
    );

    let rows = sqlx::query("SELECT job_id, attempt, node_name, gpus FROM assignments")
        .fetch_all(&db)
        .await
        .unwrap();
    let mut gpus = HashSet::new();
    let mut attempts: HashMap<String, HashSet<i64>> = HashMap::new();
    for row in &rows {
        let job: String = row.get("job_id");
        let node: String = row.get("node_name");
        let held: Vec<String> = serde_json::from_str(&row.get::<String, _>("gpus")).unwrap();
        for gpu in held {
            assert!(
                gpus.insert((node.clone(), gpu.clone())),
                "GPU {gpu} of {node} assigned twice"
            );
        }
        attempts.entry(job).or_default().insert(row.get("attempt"));
    }
    for (job, (phase, attempt)) in &phases {
        match attempts.get(job) {
            Some(seen) => {
                assert_eq!(
                    seen,
                    &HashSet::from([1]),
                    "job {job} has assignments of attempts {seen:?}"
                );
                assert_eq!(
                    (phase.as_str(), *attempt),
                    ("Scheduled", 1),
                    "placed job {job}"
                );
            }
            None => assert_eq!(
                (phase.as_str(), *attempt),
                ("Pending", 0),
                "unplaced job {job}"
            ),
        }
    }
    assert_eq!(rows.len(), attempts.len(), "one worker per placed job");
    let allocations: i64 = sqlx::query("SELECT COUNT(*) AS n FROM gpu_allocations")
        .fetch_one(&db)
        .await
        .unwrap()
        .get("n");
    assert_eq!(
        usize::try_from(allocations).unwrap(),
        gpus.len(),
        "allocations are the assigned GPUs"
    );
    assert_eq!(gpus.len(), 32, "every GPU of the 4 nodes is in use");
    assert_eq!(
        attempts.len(),
        placed,
        "the placements the replicas counted are the stored ones"
    );
    db.close().await;
}
