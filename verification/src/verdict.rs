//! Comparing a worker's digests with a verifier's, and deciding disputes with a tie-breaker.
//!
//! # The rule
//!
//! A mismatch between a worker and a verifier proves only that **one of them** is wrong: a faulty
//! or dishonest verifier looks exactly like a cheating worker. So a mismatch is never a slash by
//! itself; it is a [`Check::Dispute`], and a third node of yet another operator (the tie-breaker)
//! recomputes the disputed chunks. Then, per chunk ([`resolve`]):
//!
//! - the tie-breaker agrees with the worker → the **verifier** was wrong (the worker is cleared);
//! - the tie-breaker agrees with the verifier → the **worker** was wrong (evidence, slash);
//! - the tie-breaker agrees with neither → **unresolved**: nobody is slashed on that chunk (at least
//!   two of the three are wrong and the digests cannot say which); the hub re-runs the work.
//!
//! An honest worker is therefore slashed only if the verifier **and** the tie-breaker, nodes of two
//! other operators, return the same wrong commitment — for a deterministic product they would have
//! to collude, since independent errors give different digests.
//!
//! Redundant mode is the same rule over whole-output digests: two placements, and on a mismatch a
//! third decides ([`resolve_redundant`]).

use serde::{Deserialize, Serialize};

use crate::Digest;

/// Why two sets of digests could not be compared; each names the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerdictError {
    /// The verifier returned a different number of commitments than chunks were sampled.
    #[error("recomputed has {recomputed} commitments for {sampled} sampled chunks")]
    Count {
        /// Chunks sampled.
        sampled: usize,
        /// Commitments the verifier returned.
        recomputed: usize,
    },
    /// A sampled chunk the worker has no commitment for.
    #[error("sample names chunk {chunk}, but claimed has {claimed} commitments")]
    Chunk {
        /// The sampled index.
        chunk: usize,
        /// Commitments the worker reported.
        claimed: usize,
    },
}

/// The result of comparing two sides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    /// Every compared digest agreed.
    Passed,
    /// These chunks disagreed (ascending; for Redundant mode, chunk 0 stands for the output
    /// digest): a tie-breaker decides.
    Dispute {
        /// The disagreeing chunks.
        chunks: Vec<usize>,
    },
}

/// Compares the worker's `claimed` commitments (all of them, in chunk order) with the verifier's
/// `recomputed` ones for the `sampled` chunks (in the order of `sampled`).
pub fn compare(
    sampled: &[usize],
    claimed: &[Digest],
    recomputed: &[Digest],
) -> Result<Check, VerdictError> {
    if sampled.len() != recomputed.len() {
        return Err(VerdictError::Count {
            sampled: sampled.len(),
            recomputed: recomputed.len(),
        });
    }
    let mut disputed = Vec::new();
    for (&chunk, theirs) in sampled.iter().zip(recomputed) {
        let ours = claimed.get(chunk).ok_or(VerdictError::Chunk {
            chunk,
            claimed: claimed.len(),
        })?;
        if ours != theirs {
            disputed.push(chunk);
        }
    }
    disputed.sort_unstable();
    disputed.dedup();
    Ok(if disputed.is_empty() {
        Check::Passed
    } else {
        Check::Dispute { chunks: disputed }
    })
}

/// Compares the output digests of Redundant mode's two placements.
pub fn compare_redundant(first: &Digest, second: &Digest) -> Check {
    if first == second {
        Check::Passed
    } else {
        Check::Dispute { chunks: vec![0] }
    }
}

/// Who a tie-breaker found at fault on one disputed digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resolution {
    /// Worker and verifier agree: there was nothing to decide.
    NoDispute,
    /// The tie-breaker agrees with the verifier: the worker's commitment is wrong.
    WorkerFaulty,
    /// The tie-breaker agrees with the worker: the verifier's recomputation is wrong.
    VerifierFaulty,
    /// The tie-breaker agrees with neither: nobody is slashed; the work is re-run.
    Unresolved,
}

/// Decides one disputed digest: the side the tie-breaker agrees with wins (module docs).
pub fn resolve(claimed: &Digest, verifier: &Digest, tie_breaker: &Digest) -> Resolution {
    if claimed == verifier {
        Resolution::NoDispute
    } else if tie_breaker == claimed {
        Resolution::VerifierFaulty
    } else if tie_breaker == verifier {
        Resolution::WorkerFaulty
    } else {
        Resolution::Unresolved
    }
}

/// One disputed chunk with the three commitments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkDispute {
    /// The chunk index.
    pub chunk: usize,
    /// The worker's commitment.
    pub claimed: Digest,
    /// The verifier's.
    pub verifier: Digest,
    /// The tie-breaker's.
    pub tie_breaker: Digest,
}

/// The outcome of a spot check's dispute over all its disputed chunks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// Chunks on which the tie-breaker sided with the verifier.
    pub worker_faulty: Vec<usize>,
    /// Chunks on which the tie-breaker sided with the worker.
    pub verifier_faulty: Vec<usize>,
    /// Chunks on which it sided with neither.
    pub unresolved: Vec<usize>,
}

impl Verdict {
    /// Whether the worker is to be slashed: the tie-breaker confirmed at least one of the
    /// verifier's contradictions. Evidence cites one of [`Verdict::worker_faulty`].
    pub fn slash_worker(&self) -> bool {
        !self.worker_faulty.is_empty()
    }

    /// Whether the verifier recomputed wrongly: the tie-breaker confirmed the worker on at least
    /// one chunk.
    pub fn verifier_at_fault(&self) -> bool {
        !self.verifier_faulty.is_empty()
    }
}

/// Resolves every disputed chunk of a spot check ([`resolve`] each) and sorts the chunks by who
/// was at fault. A worker and a verifier may both be at fault on different chunks; chunks on which
/// the sides agree are left out.
pub fn resolve_spot_check(disputes: &[ChunkDispute]) -> Verdict {
    let mut verdict = Verdict::default();
    for d in disputes {
        match resolve(&d.claimed, &d.verifier, &d.tie_breaker) {
            Resolution::NoDispute => {}
            Resolution::WorkerFaulty => verdict.worker_faulty.push(d.chunk),
            Resolution::VerifierFaulty => verdict.verifier_faulty.push(d.chunk),
            Resolution::Unresolved => verdict.unresolved.push(d.chunk),
        }
    }
    for chunks in [
        &mut verdict.worker_faulty,
        &mut verdict.verifier_faulty,
        &mut verdict.unresolved,
    ] {
        chunks.sort_unstable();
        chunks.dedup();
    }
    verdict
}

/// Who a third placement found at fault in Redundant mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RedundantResolution {
    /// The two placements agree.
    NoDispute,
    /// The third agrees with the second: the first placement's output is wrong.
    FirstFaulty,
    /// The third agrees with the first: the second placement's output is wrong.
    SecondFaulty,
    /// The third agrees with neither: nobody is slashed; the work is re-run.
    Unresolved,
}

/// Decides Redundant mode's mismatch by a third placement's digest: the same rule as [`resolve`],
/// with the two placements in the roles of worker and verifier.
pub fn resolve_redundant(first: &Digest, second: &Digest, third: &Digest) -> RedundantResolution {
    match resolve(first, second, third) {
        Resolution::NoDispute => RedundantResolution::NoDispute,
        Resolution::WorkerFaulty => RedundantResolution::FirstFaulty,
        Resolution::VerifierFaulty => RedundantResolution::SecondFaulty,
        Resolution::Unresolved => RedundantResolution::Unresolved,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Digest = [0xA; 32];
    const B: Digest = [0xB; 32];
    const C: Digest = [0xC; 32];

    #[test]
    fn agreeing_commitments_pass() {
        let claimed = [A, B, C, A];
        assert_eq!(compare(&[1, 3], &claimed, &[B, A]), Ok(Check::Passed));
        assert_eq!(compare(&[], &claimed, &[]), Ok(Check::Passed));
    }

    #[test]
    fn a_mismatch_is_a_dispute_never_a_verdict() {
        let claimed = [A, B, C, A];
        assert_eq!(
            compare(&[0, 2, 3], &claimed, &[A, A, B]),
            Ok(Check::Dispute { chunks: vec![2, 3] })
        );
        // The order of the sample does not matter; the disputed chunks come out sorted.
        assert_eq!(
            compare(&[3, 0], &claimed, &[B, C]),
            Ok(Check::Dispute { chunks: vec![0, 3] })
        );
    }

    #[test]
    fn malformed_comparisons_name_the_field() {
        let claimed = [A, B];
        let count = compare(&[0, 1], &claimed, &[A]).unwrap_err();
        assert_eq!(
            count,
            VerdictError::Count {
                sampled: 2,
                recomputed: 1
            }
        );
        assert!(count.to_string().starts_with("recomputed"));
        let chunk = compare(&[5], &claimed, &[A]).unwrap_err();
        assert_eq!(
            chunk,
            VerdictError::Chunk {
                chunk: 5,
                claimed: 2
            }
        );
        assert!(chunk.to_string().starts_with("sample"));
    }

    #[test]
    fn the_side_the_tie_breaker_agrees_with_wins() {
        assert_eq!(resolve(&A, &A, &C), Resolution::NoDispute);
        assert_eq!(resolve(&A, &B, &B), Resolution::WorkerFaulty);
        assert_eq!(resolve(&A, &B, &A), Resolution::VerifierFaulty);
        assert_eq!(resolve(&A, &B, &C), Resolution::Unresolved);
    }

    /// The guarantee: whatever a single faulty verifier returns, an honest worker (whose
    /// commitment the honest tie-breaker reproduces) is never found at fault.
    #[test]
    fn an_honest_worker_is_never_faulted_by_a_wrong_verifier() {
        let honest = A;
        for verifier in [A, B, C, [0; 32], [0xFF; 32]] {
            let resolution = resolve(&honest, &verifier, &honest);
            assert_ne!(
                resolution,
                Resolution::WorkerFaulty,
                "verifier {verifier:?}"
            );
            assert_eq!(resolution == Resolution::VerifierFaulty, verifier != honest);
        }
    }

    #[test]
    fn a_spot_check_dispute_sorts_the_chunks_by_fault() {
        let disputes = [
            ChunkDispute {
                chunk: 9,
                claimed: A,
                verifier: B,
                tie_breaker: B,
            },
            ChunkDispute {
                chunk: 2,
                claimed: A,
                verifier: B,
                tie_breaker: B,
            },
            ChunkDispute {
                chunk: 4,
                claimed: A,
                verifier: B,
                tie_breaker: A,
            },
            ChunkDispute {
                chunk: 5,
                claimed: A,
                verifier: B,
                tie_breaker: C,
            },
            ChunkDispute {
                chunk: 6,
                claimed: C,
                verifier: C,
                tie_breaker: A,
            },
        ];
        let verdict = resolve_spot_check(&disputes);
        assert_eq!(
            verdict,
            Verdict {
                worker_faulty: vec![2, 9],
                verifier_faulty: vec![4],
                unresolved: vec![5],
            }
        );
        assert!(verdict.slash_worker());
        assert!(verdict.verifier_at_fault());

        // Only the verifier at fault: the worker is cleared.
        let cleared = resolve_spot_check(&disputes[2..3]);
        assert!(!cleared.slash_worker());
        assert!(cleared.verifier_at_fault());
        // Only unresolved: nobody.
        let open = resolve_spot_check(&disputes[3..4]);
        assert!(!open.slash_worker() && !open.verifier_at_fault());
        assert_eq!(resolve_spot_check(&[]), Verdict::default());
    }

    #[test]
    fn redundant_mode_uses_the_same_rule() {
        assert_eq!(compare_redundant(&A, &A), Check::Passed);
        assert_eq!(
            compare_redundant(&A, &B),
            Check::Dispute { chunks: vec![0] }
        );
        assert_eq!(
            resolve_redundant(&A, &A, &B),
            RedundantResolution::NoDispute
        );
        assert_eq!(
            resolve_redundant(&A, &B, &B),
            RedundantResolution::FirstFaulty
        );
        assert_eq!(
            resolve_redundant(&A, &B, &A),
            RedundantResolution::SecondFaulty
        );
        assert_eq!(
            resolve_redundant(&A, &B, &C),
            RedundantResolution::Unresolved
        );
    }

    #[test]
    fn verdicts_serialize_for_the_hubs_records() {
        assert_eq!(
            serde_json::to_value(Check::Dispute { chunks: vec![3] }).unwrap(),
            serde_json::json!({"dispute": {"chunks": [3]}})
        );
        assert_eq!(
            serde_json::to_value(Resolution::VerifierFaulty).unwrap(),
            "verifier_faulty"
        );
    }
}
