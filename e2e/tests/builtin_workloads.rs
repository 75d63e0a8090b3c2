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
    let path = dir.join(format!("{name}.yaml"));
    let manifest = format!(
        "apiVersion: agora.dev/v1alpha1\nkind: ComputeJob\nmetadata:\n  name: {name}\n\
         spec:\n  kind: Batch\n  workload: {{builtin: {builtin}}}\n  \
         resources: {{workers: 1, gpusPerWorker: 1}}\n  \
         pricing: {{maxPricePerGpuHour: \"5.00\"}}\n  maxRuntime: 5m\n"
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
