//! The store's invariants, below the HTTP layer: a GPU is held by one assignment at a time, a
//! placement is all or nothing and only for the attempt it was computed for, and usage is metered
//! in integer units. Every test runs on SQLite and on PostgreSQL.

mod common;

use api::{
    ids,
    lifecycle::AssignmentPhase,
    store::{NewAssignment, NewJob, Placement, Store, SubmitOutcome},
};
use common::*;
use crds::{
    agent::{RegisterRequest, StatusReport, WorkerState},
    v1alpha1::JobPhase,
};
use serde_json::Value;

/// Registers node `name` with `gpus` GPUs (`GPU-SIM-{name}-{i}`) asking `price` per GPU-hour.
async fn add_node(store: &Store, name: &str, gpus: usize, price: &str) {
    let reg: RegisterRequest =
        serde_json::from_value(registration(name, "eu-west", gpus, price)).unwrap();
    store
        .upsert_node(&reg, &format!("token-hash-{name}"))
        .await
        .unwrap();
}

/// Submits `spec` for tenant `team-a` and returns the job's id.
async fn add_job(store: &Store, json: Value) -> String {
    let tenant_id = store.ensure_tenant("team-a").await.unwrap();
    let id = ids::job_id();
    let outcome = store
        .submit_job(NewJob {
            id: id.clone(),
            tenant_id,
            name: None,
            spec: spec(json),
            idempotency_key: None,
            request_hash: "test".into(),
        })
        .await
        .unwrap();
    assert!(matches!(outcome, SubmitOutcome::Created(_)), "{outcome:?}");
    id
}

/// Worker `rank` of `job`'s attempt `attempt` on node `gn-a` holding `gpus` (indices).
fn worker(job: &str, attempt: u32, rank: u32, gpus: &[usize], price_micros: u64) -> NewAssignment {
    NewAssignment {
        id: ids::assignment_id(job, attempt, rank),
        rank,
        node_name: "gn-a".into(),
        gpus: gpus.iter().map(|i| format!("GPU-SIM-gn-a-{i}")).collect(),
        price_micros,
    }
}

/// The GPUs of `gn-a` held by live assignments.
async fn allocated(store: &Store) -> Vec<String> {
    store.get_node("gn-a").await.unwrap().unwrap().allocated
}

/// Asserts that `job` is still waiting as submitted: Pending, never attempted, nothing assigned.
async fn assert_untouched(store: &Store, job: &str) {
    let row = store.get_job(None, job).await.unwrap().unwrap();
    assert_eq!(row.phase, JobPhase::Pending, "{row:?}");
    assert_eq!(row.attempt, 0, "the attempt must not move: {row:?}");
    assert_eq!(row.scheduled_at, None, "{row:?}");
    assert_eq!(row.price_micros, None, "{row:?}");
    for attempt in 0..=5 {
        let rows = store.job_assignments(job, attempt).await.unwrap();
        assert!(rows.is_empty(), "no assignment may be written: {rows:?}");
    }
    let events = store.job_events(job).await.unwrap();
    assert_eq!(events.len(), 1, "only the submission is logged: {events:?}");
}

/// A report of `state` from `gn-a`.
async fn report_state(store: &Store, assignment: &str, state: WorkerState, exit_code: Option<i32>) {
    let report = StatusReport {
        seq: next_seq(assignment),
        state,
        exit_code,
        message: None,
        result: None,
    };
    let outcome = store
        .report_status("gn-a", assignment, &report)
        .await
        .unwrap();
    assert_eq!(outcome, api::store::AssignmentOutcome::Applied, "{state:?}");
}

backend_tests! {
    async fn a_gpu_is_never_allocated_to_two_jobs(store: Store) {
        add_node(&store, "gn-a", 2, "1.00").await;
        let a = add_job(&store, sleep_spec(1)).await;
        let b = add_job(&store, sleep_spec(1)).await;
        assert!(store.place_job(&a, 0, &[worker(&a, 1, 0, &[0], 1_000_000)]).await.unwrap());

        // B's first worker would get the free GPU 1, its second A's GPU 0: all or nothing.
        let both = [worker(&b, 1, 0, &[1], 1_000_000), worker(&b, 1, 1, &[0], 1_000_000)];
        assert!(!store.place_job(&b, 0, &both).await.unwrap(), "GPU 0 is A's; B must not get it");
        assert_untouched(&store, &b).await;
        assert_eq!(allocated(&store).await, ["GPU-SIM-gn-a-0"], "B's refused placement holds no GPU");
        let held: Vec<String> = store.active_assignments("gn-a").await.unwrap().into_iter().map(|a| a.job_id).collect();
        assert_eq!(held, [a.as_str()], "gn-a runs A's worker only");

        // The refused attempt left nothing behind: the same placement on the free GPU alone works.
        assert!(store.place_job(&b, 0, &[worker(&b, 1, 0, &[1], 1_000_000)]).await.unwrap());
        assert_eq!(allocated(&store).await, ["GPU-SIM-gn-a-0", "GPU-SIM-gn-a-1"]);
    }

    async fn a_batch_of_placements_drops_only_those_that_lost_a_race(store: Store) {
        add_node(&store, "gn-a", 4, "1.00").await;
        let a = add_job(&store, sleep_spec(1)).await;
        let b = add_job(&store, sleep_spec(1)).await;
        let c = add_job(&store, sleep_spec(1)).await;
        let d = add_job(&store, sleep_spec(1)).await;
        // Another writer placed A on GPU 0 after the cycle read the fleet.
        assert!(store.place_job(&a, 0, &[worker(&a, 1, 0, &[0], 1_000_000)]).await.unwrap());

        let placement = |job: &str, attempt: u32, gpus: &[usize]| Placement {
            job_id: job.to_string(),
            attempt,
            workers: vec![worker(job, attempt + 1, 0, gpus, 1_000_000)],
        };
        let batch = [
            placement(&b, 0, &[1]),
            placement(&c, 0, &[0]), // A's GPU: lost race
            placement(&a, 0, &[2]), // A is no longer Pending at attempt 0: lost race
            placement(&d, 0, &[3]),
        ];
        assert_eq!(store.place_jobs(&batch, None).await.unwrap(), [true, false, false, true]);

        assert_untouched(&store, &c).await;
        for job in [&b, &d] {
            let row = store.get_job(None, job).await.unwrap().unwrap();
            assert_eq!((row.phase, row.attempt), (JobPhase::Scheduled, 1), "{row:?}");
            let events = store.job_events(job).await.unwrap();
            let last = events.last().unwrap();
            assert_eq!((last.to_phase, last.reason.as_str(), last.attempt), (JobPhase::Scheduled, "Placed", 1), "{events:?}");
            assert_eq!(store.job_assignments(job, 1).await.unwrap().len(), 1);
        }
        assert_eq!(store.job_assignments(&a, 1).await.unwrap()[0].gpus, ["GPU-SIM-gn-a-0"], "A keeps its placement");
        assert_eq!(
            allocated(&store).await,
            ["GPU-SIM-gn-a-0", "GPU-SIM-gn-a-1", "GPU-SIM-gn-a-3"],
            "each GPU is held once; the losers hold none"
        );
    }

    async fn a_placement_for_a_stale_attempt_is_refused(store: Store) {
        add_node(&store, "gn-a", 2, "1.00").await;
        let job = add_job(&store, sleep_spec(1)).await;

        assert!(!store.place_job(&job, 3, &[worker(&job, 4, 0, &[0], 1_000_000)]).await.unwrap(), "the job is at attempt 0, not 3");
        assert_untouched(&store, &job).await;
        assert!(allocated(&store).await.is_empty());

        assert!(store.place_job(&job, 0, &[worker(&job, 1, 0, &[0], 1_000_000)]).await.unwrap());
        // A second scheduler that read the job before that placement tries too, elsewhere.
        let mut late = worker(&job, 1, 0, &[1], 1_000_000);
        late.id = "asg-late".into();
        assert!(!store.place_job(&job, 0, &[late]).await.unwrap(), "the job was already placed at attempt 0");

        let row = store.get_job(None, &job).await.unwrap().unwrap();
        assert_eq!((row.phase, row.attempt), (JobPhase::Scheduled, 1), "{row:?}");
        let rows = store.job_assignments(&job, 1).await.unwrap();
        assert_eq!(rows.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(), [ids::assignment_id(&job, 1, 0)]);
        assert_eq!(allocated(&store).await, ["GPU-SIM-gn-a-0"], "the late placement holds no GPU");
    }

    async fn usage_is_gpu_time_times_price_in_integer_micro_units(store: Store) {
        add_node(&store, "gn-a", 2, "3.60").await;
        let mut json = sleep_spec(1);
        json["resources"]["gpusPerWorker"] = 2.into();
        let job = add_job(&store, json).await;
        let assignment = ids::assignment_id(&job, 1, 0);
        assert!(store.place_job(&job, 0, &[worker(&job, 1, 0, &[0, 1], 3_600_000)]).await.unwrap());

        report_state(&store, &assignment, WorkerState::Running, None).await;
        let started = store.job_assignments(&job, 1).await.unwrap()[0].started_at.expect("started_at once Running");
        // Let some time pass so the usage is not trivially zero.
        clock_passes(started + 20).await;
        report_state(&store, &assignment, WorkerState::Succeeded, Some(0)).await;

        let row = &store.job_assignments(&job, 1).await.unwrap()[0];
        assert_eq!(row.state, AssignmentPhase::Succeeded);
        let (start, end) = (row.started_at.unwrap(), row.finished_at.unwrap());
        let gpu_millis = (end - start) as u64 * 2;
        assert!(gpu_millis >= 40, "ran at least 20 ms on 2 GPUs: {row:?}");
        // 3.60 per GPU-hour is 3_600_000 micro-units per 3_600_000 GPU-ms, rounded up.
        let cost_micros = (3_600_000u128 * u128::from(gpu_millis)).div_ceil(3_600_000) as u64;
        assert_eq!(row.gpu_millis(), gpu_millis);

        let job_row = store.get_job(None, &job).await.unwrap().unwrap();
        assert_eq!(job_row.phase, JobPhase::Succeeded, "{job_row:?}");
        assert_eq!(job_row.gpu_millis, gpu_millis, "{job_row:?}");
        assert_eq!(job_row.cost_micros, cost_micros, "{job_row:?}");
        assert_eq!(job_row.price_micros, Some(3_600_000));
        assert!(allocated(&store).await.is_empty(), "a finished worker frees both GPUs");
    }
}
