//! Verification end to end, through real processes: `agora dev` (three honest simulated agents,
//! settling on the embedded devnet) and an external agent that cheats on purpose
//! (`--cheat skip`: random chunk commitments, no work) and asks the lowest price, so it gets the
//! job first. The SpotCheck catches it: asked to open its sampled chunks, it cannot show rows that
//! hash to the commitments it made up; the job is re-run and Succeeds elsewhere (where the honest
//! worker's opening passes Freivalds' check, with no second node), the cheater is slashed and
//! jailed on the devnet, and the evidence is visible through the API. A second
//! cheater (`--cheat lie-model:H100-80GB` on simulated L4s) is flagged by the hub from its
//! benchmark score.
//!
//! Needs the binary: `cargo build --bin agora && cargo test -p e2e`.

use std::time::Duration;

use e2e::{DevHub, poll_until, spawn_agent_with};
use serde_json::Value;

/// Long enough for placement, recomputation, a tie-breaker, a retry and a slash on a loaded
/// machine.
const TIMEOUT: Duration = Duration::from_secs(120);

fn write_job(dir: &std::path::Path) -> String {
    let path = dir.join("spot-check.yaml");
    std::fs::write(
        &path,
        "apiVersion: agora.dev/v1alpha1\n\
         kind: ComputeJob\n\
         metadata:\n  name: spot-check\n\
         spec:\n  kind: Batch\n  \
         workload: {builtin: {verifiableMatmul: {n: 64, chunkRows: 4, seed: 5}}}\n  \
         resources: {workers: 1, gpusPerWorker: 1}\n  \
         pricing: {maxPricePerGpuHour: \"5.00\"}\n  \
         verification: {mode: SpotCheck, sampleRate: 0.25}\n  \
         retry: {maxAttempts: 3}\n",
    )
    .expect("writing the job");
    path.to_string_lossy().into_owned()
}

#[test]
fn a_cheater_is_caught_by_spot_check_slashed_and_jailed_and_the_job_succeeds_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let flags = [
        "--settlement-epoch-seconds",
        "2",
        "--devnet-challenge-window-seconds",
        "4",
    ];
    let hub = DevHub::start_with(dir.path(), 3, &flags);
    let api = hub.api();
    let _cheater = spawn_agent_with(
        &hub.url,
        dir.path(),
        "gn-cheat",
        "eu-west",
        "1xH100-80GB",
        "0.10",
        &["--cheat", "skip"],
    );
    // A node that claims H100s but benchmarks like the L4 it is.
    let _liar = spawn_agent_with(
        &hub.url,
        dir.path(),
        "gn-liar",
        "eu-west",
        "1xL4-24GB",
        "3.00",
        &["--cheat", "lie-model:H100-80GB"],
    );
    // The devnet gives the cheater an operator account and bonds its stake, like anyone's.
    let operator = poll_until("the cheater to be staked on the devnet", TIMEOUT, || {
        let node = api.node("gn-cheat")?;
        let operator = node["spec"]["operatorAddress"]
            .as_str()
            .ok_or("no operator address yet")?
            .to_string();
        let account = api.get_ok(&format!("/v1/operators/{operator}"))?;
        if account["meetsMinStake"] == true {
            Ok(operator)
        } else {
            Err(format!("{account}"))
        }
    });

    let job = hub
        .cli(&["job", "submit", &write_job(dir.path()), "-o", "json"])
        .assert_success()
        .json();
    let id = job["id"].as_str().unwrap().to_string();
    let done = api.wait_for_phase(&id, "Succeeded", TIMEOUT);

    // Attempt 1 ran on the cheater and failed verification; a later attempt ran elsewhere.
    let verifications = api.get_ok(&format!("/v1/jobs/{id}/verifications")).unwrap();
    let items = verifications["items"].as_array().unwrap();
    let first = &items[0];
    assert_eq!(first["state"], "failed", "{verifications:#}");
    let evidence = &first["verdict"]["evidence"][0];
    assert_eq!(evidence["node"], "gn-cheat", "{evidence:#}");
    assert_eq!(evidence["kind"], "opening", "{evidence:#}");
    assert!(
        evidence["openingSignature"].is_string(),
        "the cheater signed what it opened: {evidence:#}"
    );
    assert_eq!(evidence["operator"], operator.as_str());
    assert_ne!(evidence["claimed"], evidence["recomputed"], "{evidence:#}");
    assert!(
        evidence["workerSignature"].is_string(),
        "the cheater signed what it claimed: {evidence:#}"
    );
    let last = items.last().unwrap();
    assert_eq!(last["state"], "passed", "{verifications:#}");
    assert_eq!(
        last["verdict"]["checked_by"], "opening",
        "{verifications:#}"
    );
    assert_eq!(last["openings"][0]["state"], "passed", "{verifications:#}");
    assert_ne!(
        done["status"]["placement"]["workers"][0]["node"], "gn-cheat",
        "{done:#}"
    );

    // The slash went to the devnet: stake taken, operator jailed, so no new work.
    let account: Value = poll_until("the cheater slashed and jailed", TIMEOUT, || {
        let account = api.get_ok(&format!("/v1/operators/{operator}"))?;
        if account["jailed"] == true && account["slashed"] != "0" {
            Ok(account)
        } else {
            Err(format!("{account}"))
        }
    });
    let slashes = api
        .get_ok(&format!("/v1/settlement/slashes?operator={operator}"))
        .unwrap();
    assert_eq!(slashes["items"][0]["reason"], "cheating", "{slashes:#}");
    assert_eq!(slashes["items"][0]["state"], "posted", "{slashes:#}");
    assert!(
        account["slashed"]
            .as_str()
            .unwrap()
            .parse::<u128>()
            .unwrap()
            > 0
    );
}
