//! The agent's durability, through real processes: the process executor running real shell jobs,
//! the hub killed while a job finishes (the agent keeps the final report on disk, even across its
//! own crash meanwhile, and delivers it once the hub is back), and an agent killed mid-job and restarted on the same state directory
//! (the job is never run twice: the old attempt is reported failed and retried on another node).
//! Usage receipts ride along: a running worker's grow at the hub, and the final one waits on disk
//! with the final report while the hub is away.
//!
//! Jobs wait on gate files the test creates, not on clocks, so nothing depends on timing; every
//! wait is a poll with a deadline.
//!
//! Needs the binary: `cargo build --bin agora && cargo test -p e2e --test agent_durability`.
#![cfg(unix)]

use std::{
    fs,
    path::{Path, PathBuf},
    time::Duration,
};

use e2e::{
    Api, Backend, Process, ServerHub, ServerOptions, TestDatabase, agora_command, job_id,
    placed_node, poll_until, wait_ready,
};
use serde_json::{Value, json};

/// Long enough for any placement or state change on loopback, short enough to fail fast.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the hub stays away in the hub-restart test. The issue asks for a minute; a few seconds
/// exercise the same path (the report waits on disk while every delivery fails), and the agent
/// retries with backoff whatever the length.
const HUB_AWAY: Duration = Duration::from_secs(4);

/// The message a restarted agent reports for work its previous run had started.
const RESTARTED: &str = "the agent restarted while running it";

/// Starts `agora agent` with the process executor (and builtin) and its own state directory
/// `<dir>/<name>-state`, keeping key and state across restarts under the same name.
fn process_agent(hub: &ServerHub, dir: &Path, name: &str) -> Process {
    process_agent_with(hub, dir, name, &[])
}

/// [`process_agent`] with `extra` arguments.
fn process_agent_with(hub: &ServerHub, dir: &Path, name: &str, extra: &[&str]) -> Process {
    let key = dir.join(format!("{name}.key"));
    let key = key.to_string_lossy();
    let state = state_dir(dir, name);
    let state = state.to_string_lossy();
    let mut args = vec![
        "agent",
        "--hub",
        &hub.url,
        "--key",
        &key,
        "--name",
        name,
        "--region",
        "eu-west",
        "--simulate-gpus",
        "1xL4-24GB",
        "--price",
        "1.00",
        "--executor",
        "process",
        "--executor",
        "builtin",
        "--state-dir",
        &state,
    ];
    args.extend_from_slice(extra);
    let cmd = agora_command(&args);
    Process::spawn(name, dir, cmd)
}

fn state_dir(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}-state"))
}

/// The node's own part of its state directory (the agent keeps one per node name).
fn node_state(dir: &Path, name: &str) -> PathBuf {
    state_dir(dir, name).join(name)
}

/// A one-worker job running `script` with `sh -c`, with `max_attempts` attempts.
fn shell_job(name: &str, script: &str, max_attempts: u32) -> Value {
    json!({
        "apiVersion": "agora.dev/v1alpha1",
        "kind": "ComputeJob",
        "metadata": {"name": name},
        "spec": {
            "kind": "Batch",
            "workload": {
                "command": ["sh", "-c"],
                "args": [script],
                // A workload may not override what the hub and agent set.
                "env": [
                    {"name": "EPOCHS", "value": "3"},
                    {"name": "AGORA_ATTEMPT", "value": "99"}
                ]
            },
            "resources": {"workers": 1, "gpusPerWorker": 1},
            "pricing": {"maxPricePerGpuHour": "5.00"},
            "retry": {"maxAttempts": max_attempts}
        }
    })
}

/// Waits until `path` exists, saying what it waits for.
fn wait_for_file(path: &Path, what: &str, agents: &[&Process]) {
    poll_until(what, STEP_TIMEOUT, || {
        if path.exists() {
            Ok(())
        } else {
            let logs: Vec<String> = agents.iter().map(|a| a.log_tail()).collect();
            Err(format!("{} missing\n{}", path.display(), logs.join("\n")))
        }
    });
}

/// The records in an agent's outbox.
fn outbox(dir: &Path, name: &str) -> Vec<Value> {
    let Ok(entries) = fs::read_dir(node_state(dir, name).join("outbox")) else {
        return Vec::new();
    };
    let mut records: Vec<(PathBuf, Value)> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .filter_map(|p| {
            let record = serde_json::from_slice(&fs::read(&p).ok()?).ok()?;
            Some((p, record))
        })
        .collect();
    records.sort_by(|a, b| a.0.cmp(&b.0));
    records.into_iter().map(|(_, r)| r).collect()
}

// ------------------------------------------------------------------------------------------------
// 0. Usage receipts while a job runs.
// ------------------------------------------------------------------------------------------------

/// The hub's view of the job's one assignment's latest receipt, once it has one with a `sequence`
/// of at least `at_least`.
fn receipt_at_least(api: &Api, id: &str, at_least: u64, agent: &Process) -> Value {
    poll_until(
        &format!("a receipt numbered {at_least} or more"),
        STEP_TIMEOUT,
        || {
            let job = api.job(id)?;
            match job["receipts"].as_array().map(Vec::as_slice) {
                Some([receipt]) if receipt["sequence"].as_u64() >= Some(at_least) => {
                    Ok(receipt.clone())
                }
                _ => Err(format!("{job:#}\n{}", agent.log_tail())),
            }
        },
    )
}

#[test]
fn a_running_worker_sends_growing_receipts_and_a_final_one() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let Some(db) = TestDatabase::fresh(Backend::Sqlite, dir.path()) else {
        return;
    };
    let mut hub = ServerHub::start(dir.path(), &db.url, ServerOptions::default());
    let api = hub.api();
    let name = "gn-metered";
    let agent = process_agent_with(&hub, dir.path(), name, &["--receipt-interval-seconds", "1"]);
    wait_ready(&api, &[name], STEP_TIMEOUT);
    let gate = dir.path().join("gate");
    let script = format!("while [ ! -e {} ]; do sleep 0.1; done", gate.display());
    let id = job_id(&api.submit(&shell_job("metered", &script, 1)));
    api.wait_for_phase(&id, "Running", STEP_TIMEOUT);

    // While it runs, receipts keep coming, each covering more GPU time than the one before.
    let first = receipt_at_least(&api, &id, 2, &agent);
    let next_sequence = first["sequence"].as_u64().unwrap() + 2;
    let later = receipt_at_least(&api, &id, next_sequence, &agent);
    assert!(
        later["gpuMillis"].as_u64() > first["gpuMillis"].as_u64(),
        "cumulative: {first:#} then {later:#}"
    );
    assert!(later["amountMicros"].as_u64() >= first["amountMicros"].as_u64());

    // The worker ends: its final receipt arrives before the job is Succeeded.
    fs::write(&gate, "").expect("opening the gate");
    let done = api.wait_for_phase(&id, "Succeeded", STEP_TIMEOUT);
    let last = &done["receipts"][0];
    assert!(
        last["sequence"].as_u64() > later["sequence"].as_u64()
            && last["gpuMillis"].as_u64() >= later["gpuMillis"].as_u64(),
        "the final receipt supersedes the running ones: {done:#}"
    );
    hub.kill();
}

// ------------------------------------------------------------------------------------------------
// 1. The hub goes away while a job finishes.
// ------------------------------------------------------------------------------------------------

fn a_final_report_outlives_the_hubs_absence(backend: Backend) {
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
    let name = "gn-durable";
    let mut agent = process_agent(&hub, dir.path(), name);
    wait_ready(&api, &[name], STEP_TIMEOUT);

    // The job writes its environment, then waits for the gate before it exits 0.
    let env_file = dir.path().join("env.txt");
    let gate = dir.path().join("gate");
    let script = format!(
        "env | grep -E '^(AGORA_|CUDA_|EPOCHS=)' | sort > {env}.tmp && mv {env}.tmp {env}; \
         while [ ! -e {gate} ]; do sleep 0.1; done; echo finished",
        env = env_file.display(),
        gate = gate.display()
    );
    let id = job_id(&api.submit(&shell_job("outlives-the-hub", &script, 1)));
    api.wait_for_phase(&id, "Running", STEP_TIMEOUT);
    wait_for_file(&env_file, "the job to write its environment", &[&agent]);

    // The hub goes away, and the job finishes meanwhile: its final usage receipt and its report
    // must wait on disk, in that order.
    hub.kill();
    fs::write(&gate, "").expect("opening the gate");
    let (receipt, kept) = poll_until(
        "the agent to keep the final receipt and report in its outbox",
        STEP_TIMEOUT,
        || match outbox(dir.path(), name).as_slice() {
            [receipt, record] if record["body"]["state"] == "Succeeded" => {
                Ok((receipt.clone(), record.clone()))
            }
            other => Err(format!("{other:#?}\n{}", agent.log_tail())),
        },
    );
    assert_eq!(receipt["kind"], "receipt", "{receipt:#}");
    assert_eq!(receipt["seq"], 2, "Running was report 1: {receipt:#}");
    let claimed = &receipt["body"]["receipt"];
    assert_eq!(claimed["node"], name, "{receipt:#}");
    assert_eq!(claimed["job"], id.as_str(), "{receipt:#}");
    assert_eq!(
        claimed["priceMicrosPerGpuHour"], 1_000_000,
        "the agreed 1.00: {receipt:#}"
    );
    assert_eq!(claimed["gpus"], 1, "{receipt:#}");
    assert!(
        claimed["gpuMillis"].as_u64().is_some_and(|ms| ms > 0),
        "{receipt:#}"
    );
    assert_eq!(kept["kind"], "status", "{kept:#}");
    assert_eq!(kept["seq"], 3, "numbered after the receipt: {kept:#}");
    assert_eq!(kept["body"]["exitCode"], 0, "{kept:#}");
    // The agent itself crashes and comes back while the hub is still away: the report is on disk,
    // not in the dead process.
    agent.kill();
    let agent = process_agent(&hub, dir.path(), name);
    std::thread::sleep(HUB_AWAY);
    assert_eq!(
        outbox(dir.path(), name),
        [receipt.clone(), kept.clone()],
        "the receipt and report stay while the hub is away\n{}",
        agent.log_tail()
    );

    hub.start_again();
    let api = hub.api();
    let done = api.wait_for_phase(&id, "Succeeded", STEP_TIMEOUT * 2);
    assert_eq!(done["status"]["attempts"], 1, "{done:#}");
    assert!(
        agent
            .stderr()
            .contains("delivering reports kept from before a restart"),
        "{}",
        agent.log_tail()
    );
    assert!(
        !agent.stderr().contains(RESTARTED),
        "a finished worker is not reported as cut short by the restart\n{}",
        agent.log_tail()
    );
    poll_until(
        "the delivered report to leave the outbox",
        STEP_TIMEOUT,
        || match outbox(dir.path(), name).as_slice() {
            [] => Ok(()),
            other => Err(format!("{other:#?}")),
        },
    );
    // The hub kept the signed receipt and shows it on the job.
    let job = api.job(&id).expect("the job");
    let shown = &job["receipts"][0];
    assert_eq!(shown["sequence"], 2, "{job:#}");
    assert_eq!(shown["gpuMillis"], claimed["gpuMillis"], "{job:#}");
    assert!(
        shown["amountMicros"].as_u64().is_some_and(|m| m > 0),
        "{job:#}"
    );

    // What the worker saw: the documented environment, the hub's and agent's values winning.
    let env = fs::read_to_string(&env_file).expect("the job's environment");
    let vars: Vec<&str> = env.lines().collect();
    let gpu_uuid = api.node(name).expect("the node")["status"]["gpus"][0]["uuid"]
        .as_str()
        .map(str::to_string);
    let expected = [
        "AGORA_ATTEMPT=1".to_string(),
        format!(
            "AGORA_GPU_UUIDS={}",
            gpu_uuid.as_deref().unwrap_or_else(|| vars
                .iter()
                .find_map(|v| v.strip_prefix("AGORA_GPU_UUIDS="))
                .unwrap_or("?"))
        ),
        format!("AGORA_JOB_ID={id}"),
        // The node advertised no probe address, so its host is unknown.
        "AGORA_PEERS=0=".to_string(),
        "AGORA_WORKER_RANK=0".to_string(),
        "AGORA_WORLD_SIZE=1".to_string(),
        "CUDA_DEVICE_ORDER=PCI_BUS_ID".to_string(),
        "CUDA_VISIBLE_DEVICES=0".to_string(),
        "EPOCHS=3".to_string(),
    ];
    assert_eq!(vars, expected, "the worker's environment:\n{env}");
    assert!(
        vars.iter().any(|v| v.starts_with("AGORA_GPU_UUIDS=GPU-")),
        "{env}"
    );
}

/// How long the hub stays away in the outage test: the minute an agent must ride out.
const HUB_OUTAGE: Duration = Duration::from_secs(60);

/// A job keeps running on its node through a minute-long hub outage, three node timeouts long:
/// the restarted hub counts the node's silence only from its own start, the agent's heartbeats
/// reach it within that grace, and the job ends Succeeded on its first attempt.
fn a_job_runs_on_through_a_minute_long_hub_outage(backend: Backend) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let Some(db) = TestDatabase::fresh(backend, dir.path()) else {
        return;
    };
    let options = ServerOptions {
        heartbeat_interval_seconds: 1,
        ..ServerOptions::default()
    };
    let timeout = Duration::from_secs(options.node_timeout_seconds);
    assert!(
        HUB_OUTAGE > timeout * 2,
        "the outage outlasts the node timeout"
    );
    let mut hub = ServerHub::start(dir.path(), &db.url, options);
    let api = hub.api();
    let name = "gn-outage";
    let agent = process_agent(&hub, dir.path(), name);
    wait_ready(&api, &[name], STEP_TIMEOUT);
    let gate = dir.path().join("gate");
    let script = format!(
        "while [ ! -e {gate} ]; do sleep 0.1; done; echo finished",
        gate = gate.display()
    );
    let id = job_id(&api.submit(&shell_job("outage", &script, 1)));
    api.wait_for_phase(&id, "Running", STEP_TIMEOUT);

    hub.kill();
    std::thread::sleep(HUB_OUTAGE);
    hub.start_again();
    let api = hub.api();
    // Past the restarted hub's first node timeout, the node is Ready again and its work stands.
    std::thread::sleep(timeout + Duration::from_secs(5));
    wait_ready(&api, &[name], STEP_TIMEOUT);
    let running = api.job(&id).expect("the job");
    assert_eq!(
        running["status"]["phase"],
        "Running",
        "{running:#}\n{}",
        agent.log_tail()
    );

    fs::write(&gate, "").expect("opening the gate");
    let done = api.wait_for_phase(&id, "Succeeded", STEP_TIMEOUT);
    assert_eq!(done["status"]["attempts"], 1, "{done:#}");
    let events = api.events(&id).expect("the events");
    assert!(
        !events.iter().any(|e| e["reason"] == "NodeLost"),
        "no work was declared lost: {events:#?}"
    );
    hub.kill();
}

#[test]
fn a_job_runs_on_through_a_minute_long_hub_outage_sqlite() {
    a_job_runs_on_through_a_minute_long_hub_outage(Backend::Sqlite);
}

#[test]
fn a_job_runs_on_through_a_minute_long_hub_outage_postgres() {
    a_job_runs_on_through_a_minute_long_hub_outage(Backend::Postgres);
}

#[test]
fn a_final_report_outlives_the_hubs_absence_sqlite() {
    a_final_report_outlives_the_hubs_absence(Backend::Sqlite);
}

#[test]
fn a_final_report_outlives_the_hubs_absence_postgres() {
    a_final_report_outlives_the_hubs_absence(Backend::Postgres);
}

// ------------------------------------------------------------------------------------------------
// 2. An agent killed mid-job and restarted.
// ------------------------------------------------------------------------------------------------

/// Whether process `pid` is alive (and not a zombie).
fn alive(pid: &str) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| !stat.contains(") Z "))
}

#[test]
fn an_agent_restarted_mid_job_never_runs_it_twice() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let db = TestDatabase::fresh(Backend::Sqlite, dir.path()).expect("SQLite");
    let options = ServerOptions {
        heartbeat_interval_seconds: 1,
        ..ServerOptions::default()
    };
    let hub = ServerHub::start(dir.path(), &db.url, options);
    let api = hub.api();
    let names = ["gn-restart-a", "gn-restart-b"];
    let mut agents = [
        process_agent(&hub, dir.path(), names[0]),
        process_agent(&hub, dir.path(), names[1]),
    ];
    wait_ready(&api, &names, STEP_TIMEOUT);

    // Attempt 1 records its shell's pid and runs until killed; attempt 2 finishes at once. Every
    // start and end is logged to one file, so a second copy of any attempt would show.
    let log = dir.path().join("runs.log");
    let pid_file = dir.path().join("attempt-1.pid");
    let script = format!(
        "echo start $AGORA_ATTEMPT >> {log}; \
         if [ $AGORA_ATTEMPT = 1 ]; then echo $$ > {pid}.tmp && mv {pid}.tmp {pid}; sleep 600; fi; \
         echo end $AGORA_ATTEMPT >> {log}",
        log = log.display(),
        pid = pid_file.display()
    );
    let id = job_id(&api.submit(&shell_job("survives-a-restart", &script, 2)));
    let running = api.wait_for_phase(&id, "Running", STEP_TIMEOUT);
    let victim = placed_node(&running);
    let victim_index = names
        .iter()
        .position(|n| *n == victim)
        .unwrap_or_else(|| panic!("placed on an unknown node {victim}"));
    let survivor = names[1 - victim_index];
    wait_for_file(&pid_file, "attempt 1 to start", &[&agents[victim_index]]);
    let orphan = fs::read_to_string(&pid_file)
        .expect("attempt 1's pid")
        .trim()
        .to_string();

    // SIGKILL: the agent dies, its child does not.
    agents[victim_index].kill();
    assert!(alive(&orphan), "the worker outlives a killed agent");
    agents[victim_index] = process_agent(&hub, dir.path(), &victim);

    let done = api.wait_for_phase(&id, "Succeeded", STEP_TIMEOUT * 2);
    assert_eq!(done["status"]["attempts"], 2, "{done:#}");
    assert_eq!(placed_node(&done), survivor, "{done:#}");
    let runs = fs::read_to_string(&log).expect("the runs log");
    assert_eq!(
        runs.lines().collect::<Vec<_>>(),
        ["start 1", "start 2", "end 2"],
        "each attempt ran once, and attempt 1 never finished"
    );
    poll_until("the old worker to be killed", STEP_TIMEOUT, || {
        if alive(&orphan) {
            Err(format!("{orphan} is alive"))
        } else {
            Ok(())
        }
    });

    // Attempt 1 failed with the restart's message.
    let events = api.events(&id).expect("the event log");
    assert!(
        events
            .iter()
            .any(|e| e["attempt"] == 1
                && e["message"].as_str().is_some_and(|m| m.contains(RESTARTED))),
        "attempt 1 should fail with {RESTARTED:?}: {events:#?}\n{}",
        agents[victim_index].log_tail()
    );
    // And the restarted agent keeps nothing of it.
    poll_until(
        "the restarted agent's outbox to empty",
        STEP_TIMEOUT,
        || match outbox(dir.path(), &victim).as_slice() {
            [] => Ok(()),
            other => Err(format!("{other:#?}")),
        },
    );
    let started: Vec<_> = fs::read_dir(node_state(dir.path(), &victim).join("started"))
        .expect("the started records")
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    assert!(started.is_empty(), "{started:?}");
}
