//! The walking skeleton, end to end through real processes: `agora dev` with simulated agents runs
//! the README's quickstart job; a hub with external `agora agent`s places by price, explains why a
//! container job waits, cancels, and survives a restart.
//!
//! Needs the binary: `cargo build --bin agora && cargo test -p e2e`.

use std::{path::Path, time::Duration};

use e2e::{DevHub, Process, node_is_ready, poll_until, timestamp};
use serde_json::Value;

/// The promise: the quickstart reaches Succeeded within its duration plus a few seconds.
/// The bound here is generous so that a loaded CI machine does not fail it; the figure is printed.
const QUICKSTART_SLACK: Duration = Duration::from_secs(10);

/// Long enough for any placement or state change on loopback, short enough to fail fast.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// The first token of the first stdout line that names a job (`job-… submitted (Pending)`).
fn job_id_in(stdout: &str) -> String {
    stdout
        .split_whitespace()
        .find(|word| word.starts_with("job-"))
        .unwrap_or_else(|| panic!("no job id in {stdout:?}"))
        .to_string()
}

/// Writes a ComputeJob manifest with `workload` (a YAML flow mapping) to `dir/name.yaml`.
fn write_job(dir: &Path, name: &str, workload: &str) -> String {
    let path = dir.join(format!("{name}.yaml"));
    let manifest = format!(
        "apiVersion: agora.dev/v1alpha1\n\
         kind: ComputeJob\n\
         metadata:\n  name: {name}\n\
         spec:\n  kind: Batch\n  workload: {workload}\n  \
         resources: {{workers: 1, gpusPerWorker: 1}}\n  \
         pricing: {{maxPricePerGpuHour: \"5.00\"}}\n"
    );
    std::fs::write(&path, manifest).expect("writing a job manifest");
    path.to_string_lossy().into_owned()
}

fn sleep_job(dir: &Path, name: &str, seconds: u32) -> String {
    write_job(
        dir,
        name,
        &format!("{{builtin: {{sleep: {{durationSeconds: {seconds}}}}}}}"),
    )
}

/// `agora job submit FILE -o json` (no wait): the job's id.
fn submit(hub: &DevHub, file: &str) -> String {
    let job = hub.cli(&["job", "submit", file, "-o", "json"]).json();
    job["id"].as_str().expect("a job id").to_string()
}

/// The nodes as `agora node list -o json` shows them.
fn node_list(hub: &DevHub) -> Vec<Value> {
    let list = hub.cli(&["node", "list", "-o", "json"]).json();
    list["items"].as_array().cloned().unwrap_or_default()
}

/// Polls `agora node list` until every node in `names` is listed and Ready.
fn wait_for_ready_nodes(hub: &DevHub, names: &[&str]) -> Vec<Value> {
    poll_until(&format!("nodes {names:?} Ready"), STEP_TIMEOUT, || {
        let nodes = node_list(hub);
        let ready = |name: &&str| {
            nodes
                .iter()
                .any(|n| n["name"] == **name && node_is_ready(n))
        };
        if names.iter().all(ready) {
            Ok(nodes)
        } else {
            Err(format!("{nodes:#?}"))
        }
    })
}

/// `agora job list -o json --all`: (id, phase) of every job, oldest first.
fn job_phases(hub: &DevHub) -> Vec<(String, String)> {
    let list = hub.cli(&["job", "list", "--all", "-o", "json"]).json();
    let mut jobs: Vec<(String, String)> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|j| {
            (
                j["id"].as_str().expect("id").to_string(),
                j["status"]["phase"].as_str().expect("phase").to_string(),
            )
        })
        .collect();
    jobs.sort();
    jobs
}

fn the_node(job: &Value) -> &str {
    job["status"]["placement"]["workers"][0]["node"]
        .as_str()
        .unwrap_or_else(|| panic!("job has no placement: {job:#}"))
}

#[test]
fn quickstart_succeeds_on_a_simulated_agent_within_its_duration() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let hub = DevHub::start(dir.path(), 3);
    // The in-process agents register right after the hub starts; the tour's user finds them there.
    wait_for_ready_nodes(&hub, &["gn-sim-0", "gn-sim-1", "gn-sim-2"]);

    // What the user sees: `submit --wait` polls once a second, so this includes up to 1 s of that.
    let submitted = hub.cli(&["job", "submit", "examples/quickstart.yaml", "--wait"]);
    submitted.assert_success();
    let wall = submitted.elapsed;
    let id = job_id_in(&submitted.stdout);
    let job = hub.cli(&["job", "get", &id, "-o", "json"]).json();
    let status = &job["status"];
    assert_eq!(status["phase"], "Succeeded", "{job:#}");
    let node = the_node(&job);
    assert!(node.starts_with("gn-sim-"), "placed on {node}");

    let duration = job["spec"]["workload"]["builtin"]["sleep"]["durationSeconds"]
        .as_u64()
        .expect("the quickstart is a builtin sleep with durationSeconds");
    let duration = Duration::from_secs(duration);
    let submit_time = timestamp(&status["submitTime"]);
    let start = timestamp(&status["startTime"]);
    let completion = timestamp(&status["completionTime"]);
    let ran = Duration::try_from(completion.duration_since(start)).expect("completion ≥ start");
    assert!(
        ran >= duration,
        "ran {ran:?} (startTime {start} → completionTime {completion}), less than the declared {duration:?}"
    );

    let hub_view = Duration::try_from(completion.duration_since(submit_time)).unwrap_or_default();
    println!(
        "quickstart ({duration:?} sleep): submit → Succeeded took {wall:?} through `agora job submit --wait`; \
         the hub recorded submitTime → completionTime = {hub_view:?}, startTime → completionTime = \
         {ran:?} (on {node})"
    );
    println!("{}", hub.cli(&["job", "list"]).assert_success().stdout);
    assert!(
        wall <= duration + QUICKSTART_SLACK,
        "quickstart took {wall:?} from submission to Succeeded, more than {duration:?} + {QUICKSTART_SLACK:?}"
    );
    assert!(
        hub_view <= duration + QUICKSTART_SLACK,
        "the hub took {hub_view:?} from submitTime to completionTime"
    );
}

#[test]
fn external_agents_place_by_price_explain_cancel_and_survive_a_hub_restart() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let jobs_dir = dir.path();
    let mut hub = DevHub::start(dir.path(), 0);
    let mut pricey: Process = hub.agent("gn-e2e-pricey", "eu-west", "8xH100-80GB", "2.50");
    let mut cheap: Process = hub.agent("gn-e2e-cheap", "us-east", "4xA100-80GB", "1.20");
    let api = hub.api();

    // Both agents register and heartbeat.
    let nodes = wait_for_ready_nodes(&hub, &["gn-e2e-pricey", "gn-e2e-cheap"]);
    assert_eq!(nodes.len(), 2, "{nodes:#?}");

    // A sleep job lands on the cheaper node.
    let short = sleep_job(jobs_dir, "short-sleep", 1);
    let done = hub
        .cli(&["job", "submit", &short, "--wait", "-o", "json"])
        .json();
    assert_eq!(done["status"]["phase"], "Succeeded", "{done:#}");
    assert_eq!(the_node(&done), "gn-e2e-cheap", "{done:#}");
    assert_eq!(
        done["status"]["placement"]["pricePerGpuHour"], "1.20",
        "{done:#}"
    );

    // A container job waits, and says why: simulated agents run only builtin workloads.
    let container = write_job(
        jobs_dir,
        "container",
        "{image: \"ghcr.io/acme/train:1.4\", command: [python, train.py]}",
    );
    let container_id = submit(&hub, &container);
    let waiting = poll_until(
        "the container job to be Unschedulable",
        STEP_TIMEOUT,
        || {
            let job = api.job(&container_id)?;
            if job["status"]["reason"] == "Unschedulable" {
                Ok(job)
            } else {
                Err(job["status"].to_string())
            }
        },
    );
    let status = &waiting["status"];
    assert_eq!(status["phase"], "Pending", "{waiting:#}");
    let message = status["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("2 nodes") && message.contains("cannot run container workloads"),
        "message: {message:?}"
    );
    let shown = hub
        .cli(&["job", "get", &container_id])
        .assert_success()
        .stdout
        .clone();
    assert!(shown.contains("Unschedulable"), "{shown}");

    // Cancelling a running job stops it and frees its GPU.
    let long = sleep_job(jobs_dir, "long-sleep", 600);
    let long_id = submit(&hub, &long);
    let running = api.wait_for_phase(&long_id, "Running", STEP_TIMEOUT);
    let node = the_node(&running).to_string();
    let busy = poll_until("the node to show its GPU allocated", STEP_TIMEOUT, || {
        let n = api.node(&node)?;
        if n["status"]["allocated"] == 1 {
            Ok(n)
        } else {
            Err(n["status"].to_string())
        }
    });
    let capacity = busy["status"]["capacity"].as_u64().expect("capacity");
    assert_eq!(
        busy["status"]["free"].as_u64(),
        Some(capacity - 1),
        "{busy:#}"
    );
    let cancelled = hub
        .cli(&["job", "cancel", &long_id])
        .assert_success()
        .stdout
        .clone();
    assert!(cancelled.contains(&long_id), "{cancelled}");
    api.wait_for_phase(&long_id, "Cancelled", STEP_TIMEOUT);
    poll_until("the node's GPUs to be free again", STEP_TIMEOUT, || {
        let n = api.node(&node)?;
        let s = &n["status"];
        if s["free"].as_u64() == Some(capacity) && s["allocated"] == 0 {
            Ok(())
        } else {
            Err(s.to_string())
        }
    });

    // Restart the hub on the same port and data directory.
    let before = job_phases(&hub);
    assert_eq!(before.len(), 3, "{before:?}");
    let restarting = std::time::Instant::now();
    hub.restart();
    println!("hub restarted and serving in {:?}", restarting.elapsed());
    // The agents may re-register before this; a heartbeat newer than it is one the new hub took.
    let restarted_at = jiff::Timestamp::now();
    let api = hub.api();
    assert_eq!(
        job_phases(&hub),
        before,
        "jobs and phases across the restart"
    );
    for agent in [&mut pricey, &mut cheap] {
        assert!(
            agent.exit_status().is_none(),
            "{} stopped when the hub did\n{}",
            agent.name(),
            agent.log_tail()
        );
    }
    // The agents come back by themselves: a heartbeat newer than the restart.
    for name in ["gn-e2e-pricey", "gn-e2e-cheap"] {
        poll_until(
            &format!("{name} to heartbeat the restarted hub"),
            STEP_TIMEOUT,
            || {
                let n = api.node(name)?;
                let fresh = n["status"]["lastHeartbeat"]
                    .as_str()
                    .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                    .is_some_and(|t| t > restarted_at);
                if fresh && node_is_ready(&n) {
                    Ok(())
                } else {
                    Err(n["status"].to_string())
                }
            },
        );
    }
    println!(
        "both agents heartbeat the restarted hub {:?} after SIGTERM",
        restarting.elapsed()
    );
    wait_for_ready_nodes(&hub, &["gn-e2e-pricey", "gn-e2e-cheap"]);
    let after = hub
        .cli(&["job", "submit", &short, "--wait", "-o", "json"])
        .json();
    assert_eq!(after["status"]["phase"], "Succeeded", "{after:#}");
    assert_eq!(the_node(&after), "gn-e2e-cheap", "{after:#}");
}
