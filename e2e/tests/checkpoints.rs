//! Checkpoints through real processes: a shell job run by the process executor prints
//! `AGORA_CHECKPOINT {"uri":…,"step":…}` lines, its agent delivers them to the hub, and the retried
//! attempt resumes from the latest (`AGORA_CHECKPOINT_URI`), whether the first attempt was lost
//! with its node (the agent SIGKILLed) or failed by itself while the hub was away (the checkpoint
//! then waits in the agent's outbox, ahead of the final report, until the hub is back).
//!
//! Jobs wait on gate files the test creates, not on clocks; every wait is a poll with a deadline.
//!
//! Needs the binary: `cargo build --bin agora && cargo test -p e2e --test checkpoints`.
#![cfg(unix)]

use std::{
    fs,
    path::{Path, PathBuf},
    time::Duration,
};

use e2e::{
    Api, Backend, Process, ServerHub, ServerOptions, TestDatabase, job_id, placed_node, poll_until,
    wait_ready,
};
use serde_json::{Value, json};

/// Long enough for any placement or state change on loopback, short enough to fail fast.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// The checkpoint attempt 1 reports last, which attempt 2 must resume from.
const URI: &str = "s3://bucket/run/step-1200";
const STEP: u64 = 1200;

/// Starts an agent running `process` work, its state under `<dir>/agent-state/<name>`.
fn process_agent(hub: &ServerHub, name: &str, price: &str) -> Process {
    hub.agent_with(
        name,
        "eu-west",
        "1xL4-24GB",
        price,
        &["--executor", "process"],
    )
}

/// A one-worker job running `script` with `sh -c`, two attempts allowed.
fn shell_job(name: &str, script: &str) -> Value {
    json!({
        "apiVersion": "agora.dev/v1alpha1",
        "kind": "ComputeJob",
        "metadata": {"name": name},
        "spec": {
            "kind": "Batch",
            "workload": {"command": ["sh", "-c"], "args": [script]},
            "resources": {"workers": 1, "gpusPerWorker": 1},
            "pricing": {"maxPricePerGpuHour": "5.00"},
            "retry": {"maxAttempts": 2}
        }
    })
}

/// Attempt 2's part of every job here: it records what it was told to resume from in `resumed`,
/// and succeeds only if it was told something.
fn resume_script(resumed: &Path) -> String {
    format!(
        "printf 'attempt=%s uri=%s' \"$AGORA_ATTEMPT\" \"$AGORA_CHECKPOINT_URI\" > {r}.tmp && \
         mv {r}.tmp {r}; test -n \"$AGORA_CHECKPOINT_URI\"",
        r = resumed.display()
    )
}

/// Shell that waits until `gate` exists, or the test's directory `dir` is gone (a failed test
/// leaves no worker behind).
fn wait_for_gate(gate: &Path, dir: &Path) -> String {
    format!(
        "while [ ! -e {g} ] && [ -d {d} ]; do sleep 0.1; done",
        g = gate.display(),
        d = dir.display()
    )
}

/// The hub's record of the job's latest checkpoint, once it is at `step`.
fn checkpoint_at(api: &Api, id: &str, step: u64, agents: &[&Process]) -> Value {
    poll_until(
        &format!("the hub to record the checkpoint at step {step}"),
        STEP_TIMEOUT,
        || {
            let job = api.job(id)?;
            let checkpoint = &job["status"]["checkpoint"];
            if checkpoint["step"] == step {
                Ok(checkpoint.clone())
            } else {
                let logs: Vec<String> = agents.iter().map(|a| a.log_tail()).collect();
                Err(format!("{:#}\n{}", job["status"], logs.join("\n")))
            }
        },
    )
}

/// The records in the outbox of the agent `name` started by [`process_agent`] in `dir`.
fn outbox(dir: &Path, name: &str) -> Vec<Value> {
    let dir = dir.join("agent-state").join(name).join("outbox");
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    paths
        .iter()
        .filter_map(|p| serde_json::from_slice(&fs::read(p).ok()?).ok())
        .collect()
}

/// The kinds of the outbox records, in delivery order.
fn kinds(records: &[Value]) -> Vec<&str> {
    records
        .iter()
        .map(|r| r["kind"].as_str().unwrap_or("?"))
        .collect()
}

/// What attempt 2 wrote about its resume, once it has.
fn resumed(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

// ------------------------------------------------------------------------------------------------
// 1. The node of a checkpointing worker is lost; the job resumes elsewhere.
// ------------------------------------------------------------------------------------------------

fn a_lost_workers_checkpoint_resumes_the_job_elsewhere(backend: Backend) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let Some(db) = TestDatabase::fresh(backend, dir.path()) else {
        return;
    };
    // A short node timeout, so that the loss is noticed in seconds; heartbeats well within it.
    let options = ServerOptions {
        node_timeout_seconds: 4,
        heartbeat_interval_seconds: 1,
        unlimited: true,
    };
    let hub = ServerHub::start(dir.path(), &db.url, options);
    let api = hub.api();
    let names = ["gn-ckpt-a", "gn-ckpt-b"];
    let mut agents = [
        process_agent(&hub, names[0], "1.00"),
        process_agent(&hub, names[1], "1.50"),
    ];
    wait_ready(&api, &names, STEP_TIMEOUT);

    // Attempt 1 reports two checkpoints (the later wins) and a malformed marker, then keeps
    // running until the test is over; attempt 2 records what it resumes from.
    let gate = dir.path().join("gate");
    let resumed_file = dir.path().join("resumed.txt");
    let script = format!(
        "if [ \"$AGORA_ATTEMPT\" = 1 ]; then \
           echo 'epoch 1 done'; \
           echo 'AGORA_CHECKPOINT {{\"uri\":\"s3://bucket/run/step-600\",\"step\":600}}'; \
           echo 'AGORA_CHECKPOINT {{\"uri\":\"\",\"step\":900}}' >&2; \
           echo 'AGORA_CHECKPOINT {{\"uri\":\"{URI}\",\"step\":{STEP}}}'; \
           {wait}; \
         else {resume}; fi",
        wait = wait_for_gate(&gate, dir.path()),
        resume = resume_script(&resumed_file),
    );
    let id = job_id(&api.submit(&shell_job("resumes-elsewhere", &script)));
    let running = api.wait_for_phase(&id, "Running", STEP_TIMEOUT);
    let victim = placed_node(&running);
    let victim_index = names
        .iter()
        .position(|n| *n == victim)
        .unwrap_or_else(|| panic!("placed on an unknown node {victim}"));
    let survivor = names[1 - victim_index];

    // The hub has the latest checkpoint while the worker still runs, and the agent keeps no copy
    // of a delivered one.
    let recorded = checkpoint_at(&api, &id, STEP, &[&agents[victim_index]]);
    assert_eq!(recorded["uri"], URI, "{recorded:#}");
    assert!(recorded["time"].is_string(), "{recorded:#}");
    poll_until(
        "the delivered checkpoints to leave the outbox",
        STEP_TIMEOUT,
        || match kinds(&outbox(dir.path(), &victim)).as_slice() {
            kinds if !kinds.contains(&"checkpoint") => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    let log = agents[victim_index].stderr();
    assert!(
        log.contains("malformed AGORA_CHECKPOINT line")
            && log.contains("`uri` must be 1 to 2048 bytes, not 0"),
        "the malformed marker is logged, naming the problem\n{}",
        agents[victim_index].log_tail()
    );

    // The node dies with its worker's checkpoint at the hub; attempt 2 runs on the survivor.
    agents[victim_index].kill();
    let done = api.wait_for_phase(&id, "Succeeded", STEP_TIMEOUT * 2);
    assert_eq!(done["status"]["attempts"], 2, "{done:#}");
    assert_eq!(placed_node(&done), survivor, "{done:#}");
    assert_eq!(
        resumed(&resumed_file),
        format!("attempt=2 uri={URI}"),
        "attempt 2 resumes from the reported checkpoint"
    );
    assert_eq!(done["status"]["checkpoint"]["uri"], URI, "{done:#}");
    // Releases the orphaned attempt 1 (its agent was SIGKILLed, its process was not).
    fs::write(&gate, "").expect("opening the gate");
}

#[test]
fn a_lost_workers_checkpoint_resumes_the_job_elsewhere_sqlite() {
    a_lost_workers_checkpoint_resumes_the_job_elsewhere(Backend::Sqlite);
}

#[test]
fn a_lost_workers_checkpoint_resumes_the_job_elsewhere_postgres() {
    a_lost_workers_checkpoint_resumes_the_job_elsewhere(Backend::Postgres);
}

// ------------------------------------------------------------------------------------------------
// 2. A worker checkpoints and fails while the hub is away.
// ------------------------------------------------------------------------------------------------

fn a_checkpoint_waits_for_the_hub_ahead_of_the_failure(backend: Backend) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let Some(db) = TestDatabase::fresh(backend, dir.path()) else {
        return;
    };
    let options = ServerOptions {
        heartbeat_interval_seconds: 1,
        ..ServerOptions::default()
    };
    let mut hub = ServerHub::start(dir.path(), &db.url, options);
    let api = hub.api();
    // The hub places a failed job's next attempt on another node.
    let names = ["gn-ckpt-away-a", "gn-ckpt-away-b"];
    let agents = [
        process_agent(&hub, names[0], "1.00"),
        process_agent(&hub, names[1], "1.50"),
    ];
    wait_ready(&api, &names, STEP_TIMEOUT);

    // Attempt 1 checkpoints once the hub is gone, then fails; attempt 2 resumes elsewhere.
    let checkpoint_gate = dir.path().join("checkpoint-gate");
    let fail_gate = dir.path().join("fail-gate");
    let resumed_file = dir.path().join("resumed.txt");
    let script = format!(
        "if [ \"$AGORA_ATTEMPT\" = 1 ]; then \
           {wait_checkpoint}; \
           echo 'AGORA_CHECKPOINT {{\"uri\":\"{URI}\",\"step\":{STEP}}}'; \
           {wait_fail}; echo 'CUDA error: an illegal memory access' >&2; exit 1; \
         else {resume}; fi",
        wait_checkpoint = wait_for_gate(&checkpoint_gate, dir.path()),
        wait_fail = wait_for_gate(&fail_gate, dir.path()),
        resume = resume_script(&resumed_file),
    );
    let id = job_id(&api.submit(&shell_job("checkpoint-outlives-the-hub", &script)));
    let running = api.wait_for_phase(&id, "Running", STEP_TIMEOUT);
    let name = placed_node(&running);
    let name = name.as_str();
    let agent = &agents[names.iter().position(|n| *n == name).expect("a known node")];

    hub.kill();
    fs::write(&checkpoint_gate, "").expect("opening the checkpoint gate");
    // Undeliverable, the checkpoint waits on disk while the worker runs.
    let kept = poll_until(
        "the agent to keep the checkpoint in its outbox",
        STEP_TIMEOUT,
        || {
            let records = outbox(dir.path(), name);
            match records.iter().find(|r| r["kind"] == "checkpoint") {
                Some(record) => Ok(record.clone()),
                None => Err(format!("{records:#?}\n{}", agent.log_tail())),
            }
        },
    );
    assert_eq!(kept["body"]["uri"], URI, "{kept:#}");
    assert_eq!(kept["body"]["step"], STEP, "{kept:#}");
    assert_eq!(kept["seq"], kept["body"]["seq"], "{kept:#}");

    // The worker fails: its final report queues behind the checkpoint, numbered after it.
    fs::write(&fail_gate, "").expect("opening the fail gate");
    let records = poll_until(
        "the final report to join the checkpoint in the outbox",
        STEP_TIMEOUT,
        || {
            let records = outbox(dir.path(), name);
            if records.iter().any(|r| r["body"]["state"] == "Failed") {
                Ok(records)
            } else {
                Err(format!("{records:#?}\n{}", agent.log_tail()))
            }
        },
    );
    // Usage receipts ride along (the final one just before the report); the report comes last.
    let without_receipts: Vec<&str> = kinds(&records)
        .into_iter()
        .filter(|k| *k != "receipt")
        .collect();
    assert_eq!(without_receipts, ["checkpoint", "status"], "{records:#?}");
    let checkpoint = records
        .iter()
        .find(|r| r["kind"] == "checkpoint")
        .expect("the checkpoint record");
    let status = records.last().expect("the final report");
    assert_eq!(status["kind"], "status", "{records:#?}");
    assert_eq!(checkpoint, &kept, "the same record, still undelivered");
    assert!(
        checkpoint["seq"].as_u64() < status["seq"].as_u64(),
        "the checkpoint is numbered before the final report: {records:#?}"
    );

    // The hub returns: it gets the checkpoint before the failure, and attempt 2 resumes from it.
    hub.start_again();
    let api = hub.api();
    let done = api.wait_for_phase(&id, "Succeeded", STEP_TIMEOUT * 2);
    assert_eq!(done["status"]["attempts"], 2, "{done:#}");
    assert_ne!(placed_node(&done), name, "{done:#}");
    assert_eq!(
        done["status"]["checkpoint"]["uri"],
        URI,
        "{done:#}\n{}",
        agent.log_tail()
    );
    assert_eq!(done["status"]["checkpoint"]["step"], STEP, "{done:#}");
    assert_eq!(resumed(&resumed_file), format!("attempt=2 uri={URI}"));
    poll_until("the outbox to empty", STEP_TIMEOUT, || {
        match outbox(dir.path(), name).as_slice() {
            [] => Ok(()),
            other => Err(format!("{other:#?}")),
        }
    });
}

#[test]
fn a_checkpoint_waits_for_the_hub_ahead_of_the_failure_sqlite() {
    a_checkpoint_waits_for_the_hub_ahead_of_the_failure(Backend::Sqlite);
}

#[test]
fn a_checkpoint_waits_for_the_hub_ahead_of_the_failure_postgres() {
    a_checkpoint_waits_for_the_hub_ahead_of_the_failure(Backend::Postgres);
}

// ------------------------------------------------------------------------------------------------
// 3. The agent is killed with an undelivered checkpoint, and restarted.
// ------------------------------------------------------------------------------------------------

#[test]
fn a_checkpoint_kept_on_disk_is_delivered_after_an_agent_restart() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let db = TestDatabase::fresh(Backend::Sqlite, dir.path()).expect("SQLite");
    let options = ServerOptions {
        heartbeat_interval_seconds: 1,
        ..ServerOptions::default()
    };
    let mut hub = ServerHub::start(dir.path(), &db.url, options);
    let api = hub.api();
    let names = ["gn-ckpt-restart-a", "gn-ckpt-restart-b"];
    let mut agents = [
        process_agent(&hub, names[0], "1.00"),
        process_agent(&hub, names[1], "1.50"),
    ];
    wait_ready(&api, &names, STEP_TIMEOUT);

    // Attempt 1 checkpoints once the hub is gone and keeps running; attempt 2 resumes.
    let checkpoint_gate = dir.path().join("checkpoint-gate");
    let resumed_file = dir.path().join("resumed.txt");
    let script = format!(
        "if [ \"$AGORA_ATTEMPT\" = 1 ]; then \
           {wait_checkpoint}; \
           echo 'AGORA_CHECKPOINT {{\"uri\":\"{URI}\",\"step\":{STEP}}}'; \
           {wait_forever}; \
         else {resume}; fi",
        wait_checkpoint = wait_for_gate(&checkpoint_gate, dir.path()),
        wait_forever = wait_for_gate(&dir.path().join("never"), dir.path()),
        resume = resume_script(&resumed_file),
    );
    let id = job_id(&api.submit(&shell_job("checkpoint-outlives-its-agent", &script)));
    let running = api.wait_for_phase(&id, "Running", STEP_TIMEOUT);
    let victim = placed_node(&running);
    let victim_index = names
        .iter()
        .position(|n| *n == victim)
        .unwrap_or_else(|| panic!("placed on an unknown node {victim}"));

    hub.kill();
    fs::write(&checkpoint_gate, "").expect("opening the checkpoint gate");
    poll_until(
        "the agent to keep the checkpoint in its outbox",
        STEP_TIMEOUT,
        || match kinds(&outbox(dir.path(), &victim)).as_slice() {
            kinds if kinds.contains(&"checkpoint") => Ok(()),
            other => Err(format!("{other:?}\n{}", agents[victim_index].log_tail())),
        },
    );
    // The agent crashes with the checkpoint undelivered, and comes back on the same state.
    agents[victim_index].kill();
    agents[victim_index] = process_agent(&hub, &victim, ["1.00", "1.50"][victim_index]);
    hub.start_again();
    let api = hub.api();

    // The restarted agent delivers the checkpoint, then reports attempt 1 failed by the restart;
    // attempt 2 resumes from the checkpoint on the other node.
    let done = api.wait_for_phase(&id, "Succeeded", STEP_TIMEOUT * 2);
    assert_eq!(done["status"]["attempts"], 2, "{done:#}");
    assert_eq!(
        done["status"]["checkpoint"]["uri"],
        URI,
        "{done:#}\n{}",
        agents[victim_index].log_tail()
    );
    assert_eq!(resumed(&resumed_file), format!("attempt=2 uri={URI}"));
    let log = agents[victim_index].stderr();
    let kept = log
        .find("delivering reports kept from before a restart")
        .expect("the restarted agent delivers what its outbox kept");
    assert!(
        log[kept..].contains("checkpoint delivered to the hub"),
        "{}",
        agents[victim_index].log_tail()
    );
    poll_until(
        "the restarted agent's outbox to empty",
        STEP_TIMEOUT,
        || match outbox(dir.path(), &victim).as_slice() {
            [] => Ok(()),
            other => Err(format!("{other:#?}")),
        },
    );
}
