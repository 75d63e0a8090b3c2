//! `verifiableMatmul`: C = A·B for seeded n×n matrices A and B modulo the prime 2³¹ − 1, with C
//! split into row blocks ("chunks") and a SHA-256 commitment per chunk, plus a digest over all
//! commitments. The arithmetic, the inputs and the encodings live in `verification::matmul`
//! (re-exported here), shared with the hub that checks results; this module runs the product on
//! the node's CPU and turns a raised cancel flag into the workload's error.
//!
//! With `chunks` (ascending, distinct, in range: [`check_chunks`]) a node computes only those
//! chunks ([`compute_chunks_cpu`]) and reports their commitments in that order: how a second node
//! spot-checks a first one. [`open_chunks_cpu`] computes the same rows and returns them as they
//! are: how a worker opens its own commitments for the hub's Freivalds check.

use std::sync::atomic::AtomicBool;

pub use verification::matmul::*;

use super::WorkloadError;

fn cancelled(_: Cancelled) -> WorkloadError {
    WorkloadError::Cancelled
}

/// The rows of C of each of `chunks` in turn, row-major: `chunks`' rows of A times B on the CPU.
/// Costs a fraction `chunks.len() / params.chunks()` of the whole product.
pub fn open_chunks_cpu(
    params: &Params,
    chunks: &[u32],
    cancel: &AtomicBool,
) -> Result<Vec<u32>, WorkloadError> {
    check_chunks(params, chunks).map_err(|e| WorkloadError::Invalid(e.to_string()))?;
    let a = input_a_chunks(params, chunks);
    let b = input_b(params);
    multiply_rows(params.n(), &a, &b, cancel).map_err(cancelled)
}

/// Only the chunks `chunks` of the product on the CPU, committed ([`Output::from_chunk_rows`]).
pub fn compute_chunks_cpu(
    params: &Params,
    chunks: &[u32],
    cancel: &AtomicBool,
) -> Result<Output, WorkloadError> {
    let c = open_chunks_cpu(params, chunks, cancel)?;
    Ok(Output::from_chunk_rows(params, chunks, &c))
}

/// The whole product on the CPU, committed.
pub fn compute_cpu(params: &Params, cancel: &AtomicBool) -> Result<Output, WorkloadError> {
    let c = product_cpu(params, cancel)?;
    Ok(Output::from_product(params, &c))
}

/// C = A·B mod p on the CPU, row-major.
pub fn product_cpu(params: &Params, cancel: &AtomicBool) -> Result<Vec<u32>, WorkloadError> {
    let a = input_a(params);
    let b = input_b(params);
    multiply_rows(params.n(), &a, &b, cancel).map_err(cancelled)
}

/// Recomputes chunk `index` alone from the seed and returns its commitment: what a verifier
/// compares with the reported one.
///
/// # Panics
/// When `index` is not below [`Params::chunks`].
pub fn recompute_chunk(params: &Params, index: usize) -> [u8; 32] {
    assert!(index < params.chunks(), "chunk {index} out of range");
    compute_chunks_cpu(params, &[index as u32], &AtomicBool::new(false))
        .expect("an unraised flag never cancels")
        .commitments[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_recompute_refuses_bad_chunks_naming_the_field() {
        let p = Params::new(40, 6, 9).unwrap();
        for chunks in [vec![], vec![2, 7], vec![3, 1]] {
            let err = compute_chunks_cpu(&p, &chunks, &AtomicBool::new(false)).unwrap_err();
            assert!(err.to_string().contains("chunks"), "{chunks:?}: {err}");
        }
    }

    /// What a worker opens is what it committed to, and passes the hub's check.
    #[test]
    fn opened_chunks_are_the_committed_rows() {
        let p = Params::new(40, 6, 9).unwrap();
        let never = AtomicBool::new(false);
        let full = compute_cpu(&p, &never).unwrap();
        let rows = open_chunks_cpu(&p, &[2, 5], &never).unwrap();
        let claimed = [full.commitments[2], full.commitments[5]];
        assert_eq!(
            check_opening(&p, &[2, 5], &claimed, &rows, 11),
            Opening::Valid
        );
    }

    #[test]
    fn a_raised_cancel_flag_stops_the_product() {
        let p = Params::new(64, 8, 0).unwrap();
        assert_eq!(
            product_cpu(&p, &AtomicBool::new(true)),
            Err(WorkloadError::Cancelled)
        );
    }
}
