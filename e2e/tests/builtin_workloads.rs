//! The matmul builtins end to end through real processes: an `agora agent` with a simulated GPU
//! runs `verifiableMatmul` and `matmulBenchmark` on its CPU reference, and the job shows what the
//! worker computed. The expected commitments were computed independently (a short Python script
//! following docs/workloads.md), so the agent, the wire and the hub are checked against the spec.
//!
//! Needs the binary: `cargo build --bin agora && cargo test -p e2e`.

use std::{path::Path, time::Duration};

use e2e::{DevHub, Process};

const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// Submits a one-worker job running `builtin` (a YAML flow mapping) and returns its id.
fn submit(hub: &DevHub, dir: &Path, name: &str, builtin: &str) -> String {
    submit_in(hub, dir, name, builtin, None)
}

/// [`submit`], placed only in `region` when given.
fn submit_in(hub: &DevHub, dir: &Path, name: &str, builtin: &str, region: Option<&str>) -> String {
    let path = dir.join(format!("{name}.yaml"));
    let placement = region
        .map(|r| format!("  placement: {{regions: [{r}]}}\n"))
        .unwrap_or_default();
    let manifest = format!(
        "apiVersion: agora.dev/v1alpha1\nkind: ComputeJob\nmetadata:\n  name: {name}\n\
         spec:\n  kind: Batch\n  workload: {{builtin: {builtin}}}\n  \
         resources: {{workers: 1, gpusPerWorker: 1}}\n  \
         pricing: {{maxPricePerGpuHour: \"5.00\"}}\n  maxRuntime: 5m\n{placement}"
    );
    std::fs::write(&path, manifest).expect("writing the manifest");
    let job = hub
        .cli(&["job", "submit", &path.to_string_lossy(), "-o", "json"])
        .json();
    job["id"].as_str().expect("a job id").to_string()
}

#[test]
fn an_agent_runs_the_matmul_builtins_and_the_job_shows_their_results() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let hub = DevHub::start(dir.path(), 0);
    let mut agent: Process = hub.agent("gn-e2e-matmul", "eu-west", "1xH100-80GB", "1.00");
    let api = hub.api();

    let id = submit(
        &hub,
        dir.path(),
        "verify",
        "{verifiableMatmul: {n: 64, chunkRows: 16, seed: 42}}",
    );
    let job = api.wait_for_phase(&id, "Succeeded", STEP_TIMEOUT);
    let result = &job["results"][0]["result"];
    assert_eq!(job["results"][0]["node"], "gn-e2e-matmul", "{job}");
    assert_eq!(result["backend"], "cpu-reference", "simulated GPU: {job}");
    assert_eq!(
        result["outputDigest"], "13e9ce56588952aff300d75befdfe11bf50e2d86fa9fc8c3d728ba3141654edc",
        "{job}"
    );
    let commitments = result["chunkCommitments"].as_array().expect("commitments");
    assert_eq!(commitments.len(), 4, "{job}");
    assert_eq!(
        commitments[0],
        "1f788927438affaa5663b4062067304c256496e35b5508df86c3de103c67147e"
    );

    let id = submit(
        &hub,
        dir.path(),
        "bench",
        "{matmulBenchmark: {size: 128, iterations: 2}}",
    );
    let job = api.wait_for_phase(&id, "Succeeded", STEP_TIMEOUT);
    let tflops = job["results"][0]["result"]["tflops"]
        .as_f64()
        .unwrap_or_else(|| panic!("a TFLOPS figure: {job}"));
    assert!(tflops > 0.0, "{job}");
    println!("simulated node's CPU reference benchmark: {tflops:.4} TFLOPS at n = 128");
    agent.kill();
}

/// A partial recompute (`chunks`) through a real hub and agent process: the worker computes only
/// the chunks asked for and reports exactly their commitments, equal to the whole product's, each
/// result signed by the node. Then a simulated cheater (`--cheat skip`) on the same product
/// reports commitments that match none of the honest ones, and says in its log that it cheats.
#[test]
fn a_partial_recompute_matches_the_full_product_and_a_cheater_does_not() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let hub = DevHub::start(dir.path(), 0);
    let mut agent: Process = hub.agent("gn-e2e-honest", "eu-west", "1xL4-24GB", "1.00");
    let api = hub.api();
    let commitments = |job: &serde_json::Value| -> Vec<String> {
        job["results"][0]["result"]["chunkCommitments"]
            .as_array()
            .unwrap_or_else(|| panic!("commitments: {job}"))
            .iter()
            .map(|c| c.as_str().expect("hex").to_string())
            .collect()
    };
    // Checks the result's signature as docs/agent-protocol.md states it, byte for byte, against
    // the key in the node's key file.
    let signed_by = |job: &serde_json::Value, node: &str| -> bool {
        use k256::ecdsa::{Signature, SigningKey, signature::Verifier};
        let result = &job["results"][0]["result"];
        let secret = std::fs::read_to_string(dir.path().join(format!("{node}.key"))).unwrap();
        let key = SigningKey::from_slice(&hex::decode(secret.trim()).unwrap()).unwrap();
        let job_id = job["id"].as_str().unwrap();
        let assignment = format!("asg-{}-1-0", job_id.trim_start_matches("job-"));
        let mut message = b"agora-result-v1\0agora-devnet-1\0".to_vec();
        message.extend_from_slice(assignment.as_bytes());
        message.push(0);
        message.extend(hex::decode(result["outputDigest"].as_str().unwrap()).unwrap());
        let signature = result["signature"]
            .as_str()
            .unwrap_or_else(|| panic!("a signed result: {job}"));
        let signature = Signature::from_slice(&hex::decode(signature).unwrap()).unwrap();
        key.verifying_key().verify(&message, &signature).is_ok()
    };

    let full = submit(
        &hub,
        dir.path(),
        "full",
        "{verifiableMatmul: {n: 64, chunkRows: 16, seed: 42}}",
    );
    let full = api.wait_for_phase(&full, "Succeeded", STEP_TIMEOUT);
    let whole = commitments(&full);
    assert_eq!(whole.len(), 4, "{full}");
    assert!(signed_by(&full, "gn-e2e-honest"), "{full}");

    let part = submit(
        &hub,
        dir.path(),
        "part",
        "{verifiableMatmul: {n: 64, chunkRows: 16, seed: 42, chunks: [1, 3]}}",
    );
    let part = api.wait_for_phase(&part, "Succeeded", STEP_TIMEOUT);
    assert_eq!(
        commitments(&part),
        [whole[1].clone(), whole[3].clone()],
        "{part}"
    );
    assert_ne!(
        part["results"][0]["result"]["outputDigest"], full["results"][0]["result"]["outputDigest"],
        "the digest is over the chunks reported"
    );
    assert!(signed_by(&part, "gn-e2e-honest"), "{part}");
    agent.kill();

    let mut cheater = e2e::spawn_agent_with(
        &hub.url,
        dir.path(),
        "gn-e2e-cheater",
        "us-east",
        "1xL4-24GB",
        "1.00",
        &["--cheat", "skip"],
    );
    let lie = submit_in(
        &hub,
        dir.path(),
        "lie",
        "{verifiableMatmul: {n: 64, chunkRows: 16, seed: 42}}",
        Some("us-east"),
    );
    let lie = api.wait_for_phase(&lie, "Succeeded", STEP_TIMEOUT);
    assert_eq!(lie["results"][0]["node"], "gn-e2e-cheater", "{lie}");
    let told = commitments(&lie);
    assert_eq!(told.len(), 4, "{lie}");
    assert!(told.iter().all(|c| !whole.contains(c)), "{lie}");
    assert!(
        signed_by(&lie, "gn-e2e-cheater"),
        "lies are signed too: {lie}"
    );
    assert!(
        !signed_by(&lie, "gn-e2e-honest"),
        "not by another node's key"
    );
    cheater.kill();
    assert!(
        cheater.stderr().contains("SIMULATED CHEATER"),
        "{}",
        cheater.log_tail()
    );
}
