//! The builtin workloads that need real computation: `matmulBenchmark` (achieved TFLOPS per GPU)
//! and `verifiableMatmul` (a seeded integer matrix product whose output is committed to chunk by
//! chunk, for the verification of work).
//!
//! Each has a CPU reference implementation, which is what simulated nodes and the tests run, and a
//! CUDA path through `cudarc` behind the `cuda` feature ([`cuda`]), which real GPUs run. Simulated
//! GPUs (`GPU-SIM-…`) always get the CPU reference; real GPUs only ever get the CUDA path, and fail
//! with a clear message when the agent was built without `cuda` or the driver or NVRTC library is
//! missing, rather than report a CPU figure as their GPU's. Every result says which one produced it
//! ([`ResultBackend`]).
//!
//! The work is synchronous and long: callers run [`run`] on a blocking thread and stop it through
//! the `cancel` flag, which the loops check between row blocks.

pub mod matmul_benchmark;
pub mod verifiable_matmul;

#[cfg(feature = "cuda")]
pub mod cuda;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use crds::{
    agent::{Assignment, ResultBackend, WorkloadResult},
    v1alpha1::BuiltinWorkload,
};
use tokio_util::sync::CancellationToken;

use crate::executor::{MAX_RUNTIME_EXCEEDED, Outcome};

/// The prefix of simulated GPU UUIDs (see [`crate::inventory::simulated_uuid`]).
const SIMULATED_UUID_PREFIX: &str = "GPU-SIM-";

/// Why a workload produced no result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkloadError {
    /// The cancel flag was raised before it finished.
    #[error("stopped before completion")]
    Cancelled,
    /// Its parameters are out of range (the hub validates them too; this is defence in depth).
    #[error("invalid workload parameters: {0}")]
    Invalid(String),
    /// The GPU path failed (driver, NVRTC compilation, memory, …).
    #[error("CUDA: {0}")]
    Cuda(String),
    /// Not a builtin this module runs.
    #[error("not a matmul workload")]
    NotMatmul,
}

/// Returns [`WorkloadError::Cancelled`] once `cancel` is raised: called between row blocks.
pub(crate) fn check_cancel(cancel: &AtomicBool) -> Result<(), WorkloadError> {
    if cancel.load(Ordering::Relaxed) {
        Err(WorkloadError::Cancelled)
    } else {
        Ok(())
    }
}

/// Whether this module runs `workload` (the other builtins, like `sleep`, live in the executor).
pub fn handles(workload: &BuiltinWorkload) -> bool {
    workload.matmul_benchmark.is_some() || workload.verifiable_matmul.is_some()
}

/// Runs the matmul builtin of `assignment` on a blocking thread (the tokio workers stay free for
/// heartbeats) until it ends, its `maxRuntimeSeconds` passes (`Failed`) or `cancel` fires
/// (`Stopped`). On cancel or timeout the work is told to stop and awaited, which takes at most one
/// row block (CPU) or one kernel (GPU), so the device is free again when the hub hears the worker
/// ended.
pub async fn run_assignment(assignment: &Assignment, cancel: &CancellationToken) -> Outcome {
    run_blocking(assignment, cancel, run).await
}

/// [`run_assignment`] with `work` in place of [`run`] (a simulated cheater's, [`crate::cheat`]):
/// the same thread, limits and cancellation.
pub(crate) async fn run_blocking<F>(
    assignment: &Assignment,
    cancel: &CancellationToken,
    work: F,
) -> Outcome
where
    F: FnOnce(&BuiltinWorkload, &[String], &AtomicBool) -> Result<WorkloadResult, WorkloadError>
        + Send
        + 'static,
{
    let Some(builtin) = assignment.workload.builtin.clone() else {
        return Outcome::failed("not a builtin workload");
    };
    let gpus = assignment.gpus.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let mut task = tokio::task::spawn_blocking({
        let stop = Arc::clone(&stop);
        move || work(&builtin, &gpus, &stop)
    });
    let limit = assignment.max_runtime_seconds.map(Duration::from_secs);
    let deadline = async {
        match limit {
            Some(limit) => tokio::time::sleep(limit).await,
            None => std::future::pending().await,
        }
    };
    let early = tokio::select! {
        biased;
        () = cancel.cancelled() => Outcome::stopped("stopped before completion"),
        () = deadline => Outcome::failed(MAX_RUNTIME_EXCEEDED),
        joined = &mut task => return outcome(joined),
    };
    stop.store(true, Ordering::Relaxed);
    // Whatever it returns now is superseded by the stop; only its end matters.
    let _ = task.await;
    early
}

/// The outcome of a finished run.
fn outcome(
    joined: Result<Result<WorkloadResult, WorkloadError>, tokio::task::JoinError>,
) -> Outcome {
    match joined {
        Ok(Ok(result)) => Outcome {
            result: Some(result),
            ..Outcome::succeeded()
        },
        Ok(Err(WorkloadError::Cancelled)) => Outcome::stopped("stopped before completion"),
        Ok(Err(e)) => Outcome::failed(e.to_string()),
        Err(e) => Outcome::failed(format!("the workload thread ended abnormally: {e}")),
    }
}

/// Runs a matmul builtin on the GPUs `gpus` (the assignment's UUIDs) and returns what the hub is
/// told. Blocking; stops with [`WorkloadError::Cancelled`] soon after `cancel` is raised.
pub fn run(
    workload: &BuiltinWorkload,
    gpus: &[String],
    cancel: &AtomicBool,
) -> Result<WorkloadResult, WorkloadError> {
    let use_cuda = !gpus.is_empty() && !gpus.iter().any(|g| g.starts_with(SIMULATED_UUID_PREFIX));
    if let Some(bench) = &workload.matmul_benchmark {
        let tflops = if use_cuda {
            cuda_benchmark(bench.size, bench.iterations, gpus, cancel)?
        } else {
            matmul_benchmark::run_cpu(bench.size, bench.iterations, cancel)?.tflops
        };
        return Ok(WorkloadResult {
            backend: backend(use_cuda),
            tflops: Some(tflops),
            output_digest: None,
            chunk_commitments: Vec::new(),
            signature: None,
        });
    }
    if let Some(v) = &workload.verifiable_matmul {
        let params = verifiable_matmul::Params::new(v.n, v.chunk_rows, v.seed)
            .map_err(|e| WorkloadError::Invalid(e.to_string()))?;
        if let Some(chunks) = &v.chunks {
            verifiable_matmul::check_chunks(&params, chunks)
                .map_err(|e| WorkloadError::Invalid(e.to_string()))?;
        }
        let output = match (&v.chunks, use_cuda) {
            (None, true) => cuda_verifiable(&params, None, gpus, cancel)?,
            (None, false) => verifiable_matmul::compute_cpu(&params, cancel)?,
            (Some(chunks), true) => cuda_verifiable(&params, Some(chunks), gpus, cancel)?,
            (Some(chunks), false) => {
                verifiable_matmul::compute_chunks_cpu(&params, chunks, cancel)?
            }
        };
        return Ok(verifiable_result(backend(use_cuda), &output));
    }
    Err(WorkloadError::NotMatmul)
}

/// The result of a `verifiableMatmul`: its digest and commitments, hex. The agent signs it before
/// reporting it (`signature`, see [`crate::agent`]).
pub(crate) fn verifiable_result(
    backend: ResultBackend,
    output: &verifiable_matmul::Output,
) -> WorkloadResult {
    WorkloadResult {
        backend,
        tflops: None,
        output_digest: Some(hex::encode(output.digest)),
        chunk_commitments: output.commitments.iter().map(hex::encode).collect(),
        signature: None,
    }
}

fn backend(cuda: bool) -> ResultBackend {
    if cuda {
        ResultBackend::Cuda
    } else {
        ResultBackend::CpuReference
    }
}

/// The mean of the per-GPU figures: every GPU of the worker runs the benchmark in turn.
#[cfg(feature = "cuda")]
fn cuda_benchmark(
    size: u32,
    iterations: u32,
    gpus: &[String],
    cancel: &AtomicBool,
) -> Result<f64, WorkloadError> {
    let ordinals = cuda::ordinals(gpus)?;
    let mut total = 0.0;
    for &ordinal in &ordinals {
        total += cuda::sgemm_benchmark(ordinal, size, iterations, cancel)?.tflops;
    }
    Ok(total / ordinals.len() as f64)
}

/// Real GPUs run the matmul builtins only through CUDA.
#[cfg(not(feature = "cuda"))]
const NO_CUDA: &str = "this agent was built without the `cuda` feature, and real GPUs run the \
                       matmul builtins only through CUDA; rebuild with `--features cuda`";

#[cfg(not(feature = "cuda"))]
fn cuda_benchmark(_: u32, _: u32, _: &[String], _: &AtomicBool) -> Result<f64, WorkloadError> {
    Err(WorkloadError::Cuda(NO_CUDA.into()))
}

/// The product (or, with `chunks`, just those chunks' rows of it) on the worker's first GPU: one
/// output, whatever the number of GPUs.
#[cfg(feature = "cuda")]
fn cuda_verifiable(
    params: &verifiable_matmul::Params,
    chunks: Option<&[u32]>,
    gpus: &[String],
    cancel: &AtomicBool,
) -> Result<verifiable_matmul::Output, WorkloadError> {
    let ordinal = cuda::ordinals(gpus)?[0];
    match chunks {
        None => {
            let c = cuda::verifiable_product(ordinal, params, cancel)?;
            Ok(verifiable_matmul::Output::from_product(params, &c))
        }
        Some(chunks) => {
            let a = verifiable_matmul::input_a_chunks(params, chunks);
            let c = cuda::verifiable_rows(ordinal, params, &a, cancel)?;
            Ok(verifiable_matmul::Output::from_chunk_rows(
                params, chunks, &c,
            ))
        }
    }
}

#[cfg(not(feature = "cuda"))]
fn cuda_verifiable(
    _: &verifiable_matmul::Params,
    _: Option<&[u32]>,
    _: &[String],
    _: &AtomicBool,
) -> Result<verifiable_matmul::Output, WorkloadError> {
    Err(WorkloadError::Cuda(NO_CUDA.into()))
}

/// The seeded input generator, shared with the hub's checks (`verification::matmul::mix`).
pub(crate) use verification::matmul::mix;

#[cfg(test)]
mod tests {
    use crds::{
        agent::WorkerState,
        v1alpha1::{MatmulBenchmarkWorkload, VerifiableMatmulWorkload, Workload},
    };

    use super::*;
    use crate::executor::{ExecutorKind, Executors, tests::assignment};

    fn builtin(builtin: BuiltinWorkload) -> Workload {
        Workload {
            builtin: Some(builtin),
            ..Default::default()
        }
    }

    fn benchmark(size: u32, iterations: u32) -> Workload {
        builtin(BuiltinWorkload {
            matmul_benchmark: Some(MatmulBenchmarkWorkload { size, iterations }),
            ..Default::default()
        })
    }

    fn verifiable(n: u32, chunk_rows: u32, seed: u64) -> Workload {
        builtin(BuiltinWorkload {
            verifiable_matmul: Some(VerifiableMatmulWorkload {
                n,
                chunk_rows,
                seed,
                chunks: None,
            }),
            ..Default::default()
        })
    }

    fn executors() -> Executors {
        Executors::new(&[ExecutorKind::Builtin], std::env::temp_dir())
    }

    #[tokio::test]
    async fn the_executor_runs_the_benchmark_and_reports_tflops() {
        let outcome = executors()
            .run(
                &assignment(benchmark(96, 2), None),
                &[],
                &CancellationToken::new(),
                &crate::executor::CheckpointSink::channel().0,
            )
            .await;
        assert_eq!(outcome.state, WorkerState::Succeeded, "{outcome:?}");
        let report = outcome.to_report(2);
        let result = report.result.expect("a result");
        assert_eq!(result.backend, ResultBackend::CpuReference);
        let tflops = result.tflops.expect("TFLOPS");
        assert!(tflops > 0.0 && tflops.is_finite());
        println!("CPU reference benchmark through the executor: {tflops:.4} TFLOPS at n = 96");
    }

    #[tokio::test]
    async fn the_executor_runs_the_verifiable_product_and_reports_commitments() {
        let outcome = executors()
            .run(
                &assignment(verifiable(48, 16, 5), None),
                &[],
                &CancellationToken::new(),
                &crate::executor::CheckpointSink::channel().0,
            )
            .await;
        assert_eq!(outcome.state, WorkerState::Succeeded, "{outcome:?}");
        let result = outcome.result.expect("a result");
        let params = verifiable_matmul::Params::new(48, 16, 5).unwrap();
        let expected = verifiable_matmul::compute_cpu(&params, &AtomicBool::new(false)).unwrap();
        assert_eq!(result.output_digest, Some(hex::encode(expected.digest)));
        assert_eq!(
            result.chunk_commitments,
            expected
                .commitments
                .iter()
                .map(hex::encode)
                .collect::<Vec<_>>()
        );
        assert_eq!(result.tflops, None);
    }

    #[tokio::test]
    async fn cancelling_stops_a_long_benchmark() {
        let cancel = CancellationToken::new();
        let work = assignment(benchmark(2048, 10_000), None);
        let task = tokio::spawn({
            let cancel = cancel.clone();
            async move {
                executors()
                    .run(
                        &work,
                        &[],
                        &cancel,
                        &crate::executor::CheckpointSink::channel().0,
                    )
                    .await
            }
        });
        tokio::task::yield_now().await;
        cancel.cancel();
        let outcome = task.await.unwrap();
        assert_eq!(outcome.state, WorkerState::Stopped);
        assert_eq!(outcome.result, None);
    }

    #[tokio::test]
    async fn a_benchmark_longer_than_max_runtime_fails() {
        let outcome = executors()
            .run(
                &assignment(benchmark(2048, 10_000), Some(1)),
                &[],
                &CancellationToken::new(),
                &crate::executor::CheckpointSink::channel().0,
            )
            .await;
        assert_eq!(outcome.state, WorkerState::Failed);
        assert_eq!(outcome.message.as_deref(), Some(MAX_RUNTIME_EXCEEDED));
    }

    #[tokio::test]
    async fn parameters_out_of_range_fail_with_the_field_named() {
        let outcome = executors()
            .run(
                &assignment(verifiable(8, 9, 0), None),
                &[],
                &CancellationToken::new(),
                &crate::executor::CheckpointSink::channel().0,
            )
            .await;
        assert_eq!(outcome.state, WorkerState::Failed);
        assert_eq!(
            outcome.message.as_deref(),
            Some("invalid workload parameters: chunkRows must be between 1 and n (8), got 9")
        );
    }

    #[test]
    fn simulated_gpus_get_the_cpu_reference() {
        let work = BuiltinWorkload {
            verifiable_matmul: Some(VerifiableMatmulWorkload {
                n: 32,
                chunk_rows: 8,
                seed: 7,
                chunks: None,
            }),
            ..Default::default()
        };
        let result = run(&work, &["GPU-SIM-0".into()], &AtomicBool::new(false)).unwrap();
        assert_eq!(result.backend, ResultBackend::CpuReference);
        assert_eq!(result.chunk_commitments.len(), 4);
        let params = verifiable_matmul::Params::new(32, 8, 7).unwrap();
        assert_eq!(
            result.chunk_commitments[2],
            hex::encode(verifiable_matmul::recompute_chunk(&params, 2))
        );
    }

    /// `chunks` computes only those chunks (on the CPU reference for simulated GPUs) and reports
    /// exactly their commitments, in order, equal to the full product's; bad ones fail the
    /// worker naming the field.
    #[test]
    fn a_partial_recompute_reports_the_chunks_asked_for() {
        let work = |chunks: Vec<u32>| BuiltinWorkload {
            verifiable_matmul: Some(VerifiableMatmulWorkload {
                n: 32,
                chunk_rows: 8,
                seed: 7,
                chunks: Some(chunks),
            }),
            ..Default::default()
        };
        let gpus = ["GPU-SIM-0".to_string()];
        let result = run(&work(vec![1, 3]), &gpus, &AtomicBool::new(false)).unwrap();
        let params = verifiable_matmul::Params::new(32, 8, 7).unwrap();
        let want = [
            verifiable_matmul::recompute_chunk(&params, 1),
            verifiable_matmul::recompute_chunk(&params, 3),
        ];
        assert_eq!(result.backend, ResultBackend::CpuReference);
        assert_eq!(
            result.chunk_commitments,
            want.iter().map(hex::encode).collect::<Vec<_>>()
        );
        assert_eq!(
            result.output_digest,
            Some(hex::encode(verifiable_matmul::digest(&params, &want)))
        );
        let err = run(&work(vec![4]), &gpus, &AtomicBool::new(false)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid workload parameters: chunks[0] is 4, but n = 32 and chunkRows = 8 make \
             chunks 0 to 3"
        );
    }

    /// A real GPU never gets a CPU figure: without a usable CUDA path (no `cuda` feature, or no
    /// driver as here, or no such device) the run fails saying why.
    #[test]
    fn real_gpus_without_cuda_fail_clearly() {
        let work = BuiltinWorkload {
            matmul_benchmark: Some(MatmulBenchmarkWorkload {
                size: 64,
                iterations: 1,
            }),
            ..Default::default()
        };
        let err = run(
            &work,
            &["GPU-5a1f0c3e-0000-0000-0000-000000000000".into()],
            &AtomicBool::new(false),
        )
        .unwrap_err();
        assert!(matches!(err, WorkloadError::Cuda(_)), "{err}");
        assert!(err.to_string().starts_with("CUDA: "), "{err}");
    }

    #[test]
    fn a_raised_cancel_flag_stops_the_benchmark() {
        let work = BuiltinWorkload {
            matmul_benchmark: Some(MatmulBenchmarkWorkload {
                size: 512,
                iterations: 100,
            }),
            ..Default::default()
        };
        assert_eq!(
            run(&work, &["GPU-SIM-0".into()], &AtomicBool::new(true)),
            Err(WorkloadError::Cancelled)
        );
    }
}
