//! Simulated cheaters, for testing verification: `agora agent --simulate-gpus SPEC --cheat MODE`.
//!
//! A deliberately dishonest node lets the tests and `agora bench verify` show that the hub catches
//! cheating — and only cheating — without trusting what nodes say. The modes:
//!
//! - `skip`: does no matrix work for a `verifiableMatmul`; reports a random commitment for every
//!   chunk (the right number, a consistent digest, correctly signed) and finishes at once;
//! - `partial:F` (F in (0, 1]): each chunk independently is skipped with probability F (a made-up
//!   commitment in its place), the others computed honestly. Which chunks is decided by a hash
//!   of the assignment id and the chunk index ([`corrupted`]), so a rerun of the same assignment
//!   cheats on the same chunks, and a sampler that checks k chunks misses with probability
//!   exactly (1 − F)^k;
//! - `lie-model:MODEL`: registers its simulated GPUs as MODEL (name, memory and compute
//!   capability, from the model table), while its benchmark score stays its real model's
//!   ([`crate::benchmark`]) and it never reports a finding against the model it claims.
//!
//! Other workloads (`sleep`, `matmulBenchmark`) run honestly in every mode.
//!
//! Cheaters are **marked** for the humans reading logs and tests: a warning at start, `agentVersion`
//! ending in ` (simulated cheater: MODE)`, a log line per cheated result, and the metric
//! `agora_agent_simulated_cheater{mode="…"} 1`. The hub must never rely on these marks: what it
//! detects, it detects from the results and the benchmark alone. Only simulated nodes may cheat
//! (the command line refuses `--cheat` without `--simulate-gpus`).

use std::{fmt, future::Future, str::FromStr, sync::atomic::AtomicBool};

use crds::{
    agent::{Assignment, ResultBackend, WorkloadResult},
    v1alpha1::{GpuDevice, VerifiableMatmulWorkload},
};
use rand::RngCore;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::{
    executor::Outcome,
    inventory::{GpuModel, known_model},
    workloads::{
        self, WorkloadError,
        verifiable_matmul::{self, Output, Params},
    },
};

/// How a simulated node cheats (`--cheat MODE`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum CheatMode {
    /// `skip`: no matrix work, random commitments.
    Skip,
    /// `partial:F`: each chunk skipped with probability F, the rest computed.
    Partial(f64),
    /// `lie-model:MODEL`: advertises its GPUs as MODEL.
    LieModel(&'static GpuModel),
}

/// Why a `--cheat` value was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CheatError {
    /// Not one of the modes.
    #[error(
        "unknown cheat mode {0:?}: expected `skip`, `partial:F` (F in (0, 1]) or `lie-model:MODEL`"
    )]
    Unknown(String),
    /// `partial:` without a fraction in (0, 1].
    #[error("partial:F needs a fraction F with 0 < F <= 1, got {0:?}")]
    Fraction(String),
    /// `lie-model:` naming no known model.
    #[error("lie-model:MODEL needs a known GPU model (e.g. H100-80GB), got {0:?}")]
    Model(String),
}

impl FromStr for CheatMode {
    type Err = CheatError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "skip" {
            return Ok(Self::Skip);
        }
        if let Some(fraction) = s.strip_prefix("partial:") {
            return match fraction.parse::<f64>() {
                Ok(f) if f > 0.0 && f <= 1.0 => Ok(Self::Partial(f)),
                _ => Err(CheatError::Fraction(fraction.to_string())),
            };
        }
        if let Some(model) = s.strip_prefix("lie-model:") {
            return known_model(model)
                .map(Self::LieModel)
                .ok_or_else(|| CheatError::Model(model.to_string()));
        }
        Err(CheatError::Unknown(s.to_string()))
    }
}

impl fmt::Display for CheatMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Skip => write!(f, "skip"),
            Self::Partial(fraction) => write!(f, "partial:{fraction}"),
            Self::LieModel(model) => write!(f, "lie-model:{}", model.name),
        }
    }
}

impl CheatMode {
    /// What the agent's version says after its own (` (simulated cheater: partial:0.1)`).
    pub fn version_suffix(&self) -> String {
        format!(" (simulated cheater: {self})")
    }

    /// The inventory the node tells the hub about: for `lie-model`, every GPU relabelled as the
    /// claimed model (its name, memory and compute capability); otherwise the real one.
    pub fn advertise(&self, mut gpus: Vec<GpuDevice>) -> Vec<GpuDevice> {
        if let Self::LieModel(model) = self {
            for gpu in &mut gpus {
                gpu.model = model.name.to_string();
                gpu.memory_gib = model.memory_gib;
                gpu.compute_capability = model.compute_capability.to_string();
            }
        }
        gpus
    }

    /// Logs the warning a cheater starts with.
    pub fn warn_at_start(&self) {
        warn!(
            cheat = %self,
            "THIS NODE IS A SIMULATED CHEATER (--cheat {self}): it reports wrong results or a false \
             GPU model on purpose, to test the hub's verification; never use it for real work"
        );
    }
}

/// Runs `assignment` as a cheater in `cheat` mode would, or `honest` (the executor's run, not
/// started unless used) when the node does not cheat or the mode leaves this workload alone.
pub async fn or_honest(
    cheat: Option<CheatMode>,
    assignment: &Assignment,
    stop: &CancellationToken,
    honest: impl Future<Output = Outcome>,
) -> Outcome {
    let cheats_here = matches!(cheat, Some(CheatMode::Skip | CheatMode::Partial(_)))
        && assignment
            .workload
            .builtin
            .as_ref()
            .is_some_and(|b| b.verifiable_matmul.is_some());
    let (true, Some(mode)) = (cheats_here, cheat) else {
        return honest.await;
    };
    let id = assignment.id.clone();
    workloads::run_blocking(assignment, stop, move |builtin, _gpus, cancel| {
        let work = builtin
            .verifiable_matmul
            .as_ref()
            .ok_or(WorkloadError::NotMatmul)?;
        verifiable(mode, work, &id, cancel)
    })
    .await
}

/// What a cheater in `mode` reports for a `verifiableMatmul` of assignment `assignment`: honest
/// commitments for the chunks it computes, made-up ones for the others, and the digest over them
/// all (a consistent lie: only recomputing a chunk exposes it). Honest when `mode` is `lie-model`.
pub fn verifiable(
    mode: CheatMode,
    work: &VerifiableMatmulWorkload,
    assignment: &str,
    cancel: &AtomicBool,
) -> Result<WorkloadResult, WorkloadError> {
    let invalid = |e: verifiable_matmul::ParamsError| WorkloadError::Invalid(e.to_string());
    let params = Params::new(work.n, work.chunk_rows, work.seed).map_err(invalid)?;
    let chunks: Vec<u32> = match &work.chunks {
        Some(chunks) => {
            verifiable_matmul::check_chunks(&params, chunks).map_err(invalid)?;
            chunks.clone()
        }
        None => (0..params.chunks() as u32).collect(),
    };
    let skipped = |chunk: u32| match mode {
        CheatMode::Skip => true,
        CheatMode::Partial(fraction) => corrupted(fraction, assignment, chunk),
        CheatMode::LieModel(_) => false,
    };
    let computed: Vec<u32> = chunks.iter().copied().filter(|&k| !skipped(k)).collect();
    let mut honest = if computed.is_empty() {
        Vec::new()
    } else {
        verifiable_matmul::compute_chunks_cpu(&params, &computed, cancel)?.commitments
    }
    .into_iter();
    let commitments: Vec<[u8; 32]> = chunks
        .iter()
        .map(|&k| match mode {
            _ if !skipped(k) => honest
                .next()
                .expect("one honest commitment per computed chunk"),
            CheatMode::Skip => random_commitment(),
            _ => made_up_commitment(assignment, k),
        })
        .collect();
    let digest = verifiable_matmul::digest(&params, &commitments);
    warn!(
        cheat = %mode,
        chunks = chunks.len(),
        skipped = chunks.len() - computed.len(),
        "simulated cheater: reporting made-up commitments for the chunks it skipped"
    );
    Ok(workloads::verifiable_result(
        ResultBackend::CpuReference,
        &Output {
            commitments,
            digest,
        },
    ))
}

/// Whether a `partial:fraction` cheater skips `chunk` of `assignment`: a uniform number in [0, 1)
/// from SHA-256(`agora simulated cheater v1\0` ‖ assignment ‖ 0 ‖ chunk, u32 little-endian) is
/// below `fraction`. Independent per chunk, the same on every rerun of the assignment.
pub fn corrupted(fraction: f64, assignment: &str, chunk: u32) -> bool {
    let hash = cheat_hash(b"skip", assignment, chunk);
    let bits = u64::from_le_bytes(hash[..8].try_into().expect("8 of 32 bytes")) >> 11;
    (bits as f64 / (1u64 << 53) as f64) < fraction
}

/// The commitment a `partial` cheater reports for a chunk it skipped: reproducible, and equal to
/// an honest one only with probability 2⁻²⁵⁶.
fn made_up_commitment(assignment: &str, chunk: u32) -> [u8; 32] {
    cheat_hash(b"commitment", assignment, chunk)
}

fn cheat_hash(purpose: &[u8], assignment: &str, chunk: u32) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(b"agora simulated cheater v1\0");
    hasher.update(purpose);
    hasher.update([0]);
    hasher.update(assignment.as_bytes());
    hasher.update([0]);
    hasher.update(chunk.to_le_bytes());
    hasher.finalize().into()
}

fn random_commitment() -> [u8; 32] {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn work(n: u32, chunk_rows: u32, chunks: Option<Vec<u32>>) -> VerifiableMatmulWorkload {
        VerifiableMatmulWorkload {
            n,
            chunk_rows,
            seed: 3,
            chunks,
        }
    }

    fn honest(work: &VerifiableMatmulWorkload) -> Vec<String> {
        let params = Params::new(work.n, work.chunk_rows, work.seed).unwrap();
        let chunks = work
            .chunks
            .clone()
            .unwrap_or_else(|| (0..params.chunks() as u32).collect());
        verifiable_matmul::compute_chunks_cpu(&params, &chunks, &AtomicBool::new(false))
            .unwrap()
            .commitments
            .iter()
            .map(hex::encode)
            .collect()
    }

    fn never() -> AtomicBool {
        AtomicBool::new(false)
    }

    #[test]
    fn modes_parse_and_print_as_typed() {
        for text in ["skip", "partial:0.1", "partial:1", "lie-model:H100-80GB"] {
            assert_eq!(text.parse::<CheatMode>().unwrap().to_string(), text);
        }
        assert_eq!(
            "partial:0.1".parse::<CheatMode>().unwrap().version_suffix(),
            " (simulated cheater: partial:0.1)"
        );
        for (bad, says) in [
            ("lazy", "unknown cheat mode"),
            ("partial:0", "0 < F <= 1"),
            ("partial:1.5", "0 < F <= 1"),
            ("partial:NaN", "0 < F <= 1"),
            ("partial:", "0 < F <= 1"),
            ("lie-model:H900-1TB", "known GPU model"),
        ] {
            let err = bad.parse::<CheatMode>().unwrap_err().to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    /// `skip`: the right number of commitments, a digest consistent with them, none of them the
    /// product's.
    #[test]
    fn skip_reports_random_commitments() {
        let w = work(32, 4, None);
        let result = verifiable(CheatMode::Skip, &w, "asg-1", &never()).unwrap();
        let truth = honest(&w);
        assert_eq!(result.chunk_commitments.len(), truth.len());
        for (got, want) in result.chunk_commitments.iter().zip(&truth) {
            assert_ne!(got, want);
        }
        let params = Params::new(32, 4, 3).unwrap();
        let commitments: Vec<[u8; 32]> = result
            .chunk_commitments
            .iter()
            .map(|c| hex::decode(c).unwrap().try_into().unwrap())
            .collect();
        assert_eq!(
            result.output_digest,
            Some(hex::encode(verifiable_matmul::digest(
                &params,
                &commitments
            )))
        );
        // A spot check's chunks: the same lie.
        let w = work(32, 4, Some(vec![2, 5]));
        let result = verifiable(CheatMode::Skip, &w, "asg-2", &never()).unwrap();
        assert_eq!(result.chunk_commitments.len(), 2);
        assert_ne!(result.chunk_commitments, honest(&w));
    }

    /// `partial:F` corrupts about F of the chunks, exactly the chunks [`corrupted`] names, the
    /// same ones on a rerun, and computes the others honestly.
    #[test]
    fn partial_corrupts_a_seeded_fraction_of_the_chunks() {
        // 1024 chunks of one row.
        let w = work(1024, 1, None);
        let truth = honest(&w);
        let mode = CheatMode::Partial(0.25);
        let result = verifiable(mode, &w, "asg-job-9-1-0", &never()).unwrap();
        let wrong: Vec<u32> = (0..1024)
            .filter(|&k| result.chunk_commitments[k as usize] != truth[k as usize])
            .collect();
        let named: Vec<u32> = (0..1024)
            .filter(|&k| corrupted(0.25, "asg-job-9-1-0", k))
            .collect();
        assert_eq!(wrong, named);
        // Binomial(1024, 0.25): mean 256, standard deviation 13.9; 5 of them either way.
        assert!(
            (186..=326).contains(&wrong.len()),
            "{} corrupted",
            wrong.len()
        );
        let again = verifiable(mode, &w, "asg-job-9-1-0", &never()).unwrap();
        assert_eq!(
            again, result,
            "a rerun of the assignment cheats the same way"
        );
        let other = verifiable(mode, &w, "asg-job-9-2-0", &never()).unwrap();
        assert_ne!(other.chunk_commitments, result.chunk_commitments);
        // F = 1 skips every chunk.
        assert!((0..1024).all(|k| corrupted(1.0, "asg-x", k)));
    }

    /// Over many assignments the per-chunk skip rate is F, and a sampler checking k chunks misses
    /// the cheater at the rate (1 − F)^k: the property `agora bench verify` measures.
    #[test]
    fn the_skip_rate_matches_the_fraction() {
        let (fraction, k, trials) = (0.1, 10u32, 4000);
        let mut skipped = 0u32;
        let mut missed = 0u32;
        for t in 0..trials {
            let id = format!("asg-trial-{t}");
            let hits = (0..k).filter(|&c| corrupted(fraction, &id, c)).count() as u32;
            skipped += hits;
            missed += u32::from(hits == 0);
        }
        let rate = f64::from(skipped) / f64::from(trials * k);
        // 40,000 Bernoulli(0.1) draws: standard error 0.0015.
        assert!((rate - fraction).abs() < 0.006, "skip rate {rate}");
        let miss = f64::from(missed) / f64::from(trials);
        let theory = (1.0 - fraction).powi(k as i32);
        // 4,000 trials of p = 0.349: standard error 0.0075.
        assert!(
            (miss - theory).abs() < 0.03,
            "missed {miss}, theory {theory}"
        );
    }

    #[test]
    fn lie_model_relabels_the_inventory_and_leaves_results_honest() {
        let mode: CheatMode = "lie-model:H100-80GB".parse().unwrap();
        let real = crate::inventory::simulated("2xL4-24GB", "gn-liar").unwrap();
        let told = mode.advertise(real.clone());
        assert!(told.iter().all(|g| g.model == "H100-80GB"
            && g.memory_gib == 80
            && g.compute_capability == "9.0"
            && g.simulated));
        assert_eq!(
            told.iter().map(|g| &g.uuid).collect::<Vec<_>>(),
            real.iter().map(|g| &g.uuid).collect::<Vec<_>>()
        );
        // Its real class's benchmark figure, far below what the claimed model does.
        let score = crate::benchmark::simulated_report(&real, 1).unwrap();
        assert_eq!(score.tflops, 30.3);
        assert_eq!(score.finding, None, "a cheater never reports itself");
        let claimed = known_model("H100-80GB")
            .unwrap()
            .fp32_peak_tflops()
            .unwrap();
        assert!(
            score.tflops < 0.6 * claimed,
            "{} vs {claimed}",
            score.tflops
        );
        // Its matrix work is honest.
        let w = work(16, 4, None);
        let result = verifiable(mode, &w, "asg-1", &never()).unwrap();
        assert_eq!(result.chunk_commitments, honest(&w));
        assert_eq!(CheatMode::Skip.advertise(real.clone()), real);
    }
}
