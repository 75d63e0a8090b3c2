//! `verifiableMatmul`: C = A·B for seeded n×n matrices A and B, with C split into row blocks
//! ("chunks") and a SHA-256 commitment per chunk, plus a digest over all commitments.
//!
//! The pure arithmetic and encodings, shared by the agent that computes the product and the hub
//! that checks it: a verifier that knows the seed can recompute any chunk's rows ([`multiply_rows`]
//! over [`input_a_chunks`] and [`input_b`]) and compare their commitment with the reported one, check
//! a full C in O(n²) with Freivalds' algorithm ([`freivalds`]), or check rows a worker opened
//! against its commitments without recomputing them ([`check_opening`]).
//!
//! # Why integers modulo a prime
//!
//! Floating-point results differ between GPUs, CPUs, compilers and summation orders (fused
//! multiply-add, tiling, tensor cores all round differently), so hashing an f32 C would make honest
//! nodes disagree. The product is therefore computed over the integers modulo the Mersenne prime
//! p = 2³¹ − 1: every entry of A and B is in `[0, p)`, every entry of C is Σₖ aᵢₖ·bₖⱼ mod p. Modular
//! arithmetic is exact and associative, so any summation order on any device gives the same bits.
//! A prime rather than plain wrapping `u32` arithmetic because Freivalds' check then works in a
//! field: a wrong C passes one round with probability at most 1/p, whereas modulo 2³² an error
//! of 2³¹ passes half the rounds.
//!
//! # Canonical encoding
//!
//! A chunk's commitment is `SHA-256("agora verifiable-matmul chunk v1\0" ‖ n ‖ chunkRows ‖ seed ‖
//! chunk index ‖ the chunk's entries row-major)`, all integers little-endian (`n`, `chunkRows`, the
//! index and the entries as u32, `seed` as u64). The parameters are inside so that a commitment
//! cannot be replayed for another job's matrices. The digest is `SHA-256("agora verifiable-matmul
//! digest v1\0" ‖ n ‖ chunkRows ‖ seed ‖ every commitment in chunk order)`.
//!
//! # Partial recompute
//!
//! With `chunks` (ascending, distinct, in range: [`check_chunks`]) a node computes only those
//! chunks (each chunk's rows of A times B: [`input_a_chunks`]) and reports their commitments
//! in that order, with the same digest function over just those commitments. This is how a second
//! node spot-checks a first node's result; each commitment names its chunk index, so the digest
//! binds which chunks were computed too.

use std::{
    ops::Range,
    sync::atomic::{AtomicBool, Ordering},
};

use sha2::{Digest, Sha256};

/// The modulus, p = 2³¹ − 1.
pub const MODULUS: u32 = 2_147_483_647;

/// The largest n: three n×n u32 matrices take 3 GiB at this size, about what a node can be asked to
/// hold for a verification job. The CRD bounds `n` the same way.
pub const MAX_N: u32 = 16_384;

/// The most chunks one product may have: the commitments travel in a status report, so their
/// number is bounded (the CRD refuses parameters with more).
pub const MAX_CHUNKS: u32 = 1024;

/// Tags that make A and B different matrices for the same seed.
const TAG_A: u64 = 0xA;
const TAG_B: u64 = 0xB;

/// A product's parameters, validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    n: u32,
    chunk_rows: u32,
    seed: u64,
}

/// Why parameters were refused; each names its field as the CRD spells it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamsError {
    /// `n` is 0 or above [`MAX_N`].
    #[error("n must be between 1 and {MAX_N}, got {0}")]
    N(u32),
    /// `chunkRows` is 0 or above `n`.
    #[error("chunkRows must be between 1 and n ({n}), got {chunk_rows}")]
    ChunkRows {
        /// The matrix size.
        n: u32,
        /// The refused value.
        chunk_rows: u32,
    },
    /// More than [`MAX_CHUNKS`] chunks.
    #[error("chunkRows {chunk_rows} splits n = {n} into more than {MAX_CHUNKS} chunks")]
    TooManyChunks {
        /// The matrix size.
        n: u32,
        /// The refused value.
        chunk_rows: u32,
    },
    /// `chunks` is an empty list (leave it out for the whole product).
    #[error("chunks must list at least one chunk (leave it out for the whole product)")]
    NoChunks,
    /// An entry of `chunks` is not a chunk of this product.
    #[error(
        "chunks[{at}] is {chunk}, but n = {n} and chunkRows = {chunk_rows} make chunks 0 to {last}"
    )]
    ChunkOutOfRange {
        /// The entry's position in `chunks`.
        at: usize,
        /// The refused value.
        chunk: u32,
        /// The matrix size.
        n: u32,
        /// The rows per chunk.
        chunk_rows: u32,
        /// The highest chunk index.
        last: u32,
    },
    /// `chunks` is not strictly ascending: out of order, or an index repeated.
    #[error(
        "chunks must be ascending without repeats, but chunks[{at}] is {chunk} after {previous}"
    )]
    ChunksNotAscending {
        /// The entry's position in `chunks`.
        at: usize,
        /// The refused value.
        chunk: u32,
        /// The entry before it.
        previous: u32,
    },
}

impl Params {
    /// Checks the ranges the CRD states.
    pub fn new(n: u32, chunk_rows: u32, seed: u64) -> Result<Self, ParamsError> {
        if n == 0 || n > MAX_N {
            return Err(ParamsError::N(n));
        }
        if chunk_rows == 0 || chunk_rows > n {
            return Err(ParamsError::ChunkRows { n, chunk_rows });
        }
        if n.div_ceil(chunk_rows) > MAX_CHUNKS {
            return Err(ParamsError::TooManyChunks { n, chunk_rows });
        }
        Ok(Self {
            n,
            chunk_rows,
            seed,
        })
    }

    /// The matrix dimension.
    pub fn n(&self) -> usize {
        self.n as usize
    }

    /// How many chunks C has (the last one may be shorter).
    pub fn chunks(&self) -> usize {
        self.n.div_ceil(self.chunk_rows) as usize
    }

    /// The rows of chunk `index`.
    pub fn chunk_rows(&self, index: usize) -> Range<usize> {
        let start = index * self.chunk_rows as usize;
        start.min(self.n())..(start + self.chunk_rows as usize).min(self.n())
    }

    fn header(&self, hasher: &mut Sha256) {
        hasher.update(self.n.to_le_bytes());
        hasher.update(self.chunk_rows.to_le_bytes());
        hasher.update(self.seed.to_le_bytes());
    }
}

/// Element `index` (row-major) of the matrix `tag`, in `[0, p)`. The modulo of a 64-bit value
/// biases the distribution by under 2⁻³², which does not matter for test inputs.
fn element(seed: u64, tag: u64, index: usize) -> u32 {
    (mix(seed, tag, index as u64) % u64::from(MODULUS)) as u32
}

/// Deterministic pseudo-random numbers from a seed, addressable by index: element `i` of a matrix
/// is `mix(seed, tag, i)`, so one chunk's rows can be regenerated without the rest (spot checks)
/// and the CPU and GPU paths read identical inputs. The SplitMix64 finalizer (Steele, Lea, Flood,
/// "Fast splittable pseudorandom number generators", 2014): statistically good enough for test
/// matrices, and not meant to be unpredictable.
pub fn mix(seed: u64, tag: u64, index: u64) -> u64 {
    let mut z = seed
        ^ tag.wrapping_mul(0xD1B5_4A32_D192_ED03)
        ^ index.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Rows `rows` of A, row-major.
pub fn input_a_rows(params: &Params, rows: Range<usize>) -> Vec<u32> {
    let n = params.n();
    (rows.start * n..rows.end * n)
        .map(|i| element(params.seed, TAG_A, i))
        .collect()
}

/// All of A, row-major.
pub fn input_a(params: &Params) -> Vec<u32> {
    input_a_rows(params, 0..params.n())
}

/// All of B, row-major.
pub fn input_b(params: &Params) -> Vec<u32> {
    let n = params.n();
    (0..n * n).map(|i| element(params.seed, TAG_B, i)).collect()
}

/// Reduces x modulo p = 2³¹ − 1 by folding the high bits onto the low ones (2³¹ ≡ 1 mod p).
fn reduce(x: u64) -> u32 {
    let p = u64::from(MODULUS);
    let x = (x & p) + (x >> 31);
    let x = (x & p) + (x >> 31);
    let x = x as u32;
    if x >= MODULUS { x - MODULUS } else { x }
}

/// A product stopped because its cancel flag was raised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cancelled")]
pub struct Cancelled;

/// `a_rows` (some rows of A) times B, modulo p: the CPU reference. An accumulator is folded after
/// every product and so stays below 2³³, and 2³³ + (2³¹)² never overflows 64 bits.
pub fn multiply_rows(
    n: usize,
    a_rows: &[u32],
    b: &[u32],
    cancel: &AtomicBool,
) -> Result<Vec<u32>, Cancelled> {
    let p = u64::from(MODULUS);
    let mut c = Vec::with_capacity(a_rows.len());
    let mut acc = vec![0u64; n];
    for a_row in a_rows.chunks_exact(n) {
        if cancel.load(Ordering::Relaxed) {
            return Err(Cancelled);
        }
        acc.fill(0);
        for (k, &aik) in a_row.iter().enumerate() {
            let aik = u64::from(aik);
            for (slot, &bkj) in acc.iter_mut().zip(&b[k * n..(k + 1) * n]) {
                let x = *slot + aik * u64::from(bkj);
                *slot = (x & p) + (x >> 31);
            }
        }
        c.extend(acc.iter().map(|&x| reduce(x)));
    }
    Ok(c)
}

/// The commitment to chunk `index`, whose entries are `rows` (row-major).
pub fn chunk_commitment(params: &Params, index: usize, rows: &[u32]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(b"agora verifiable-matmul chunk v1\0");
    params.header(&mut hasher);
    hasher.update((index as u32).to_le_bytes());
    for value in rows {
        hasher.update(value.to_le_bytes());
    }
    hasher.finalize().into()
}

/// The digest over all chunk commitments, in chunk order.
pub fn digest(params: &Params, commitments: &[[u8; 32]]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(b"agora verifiable-matmul digest v1\0");
    params.header(&mut hasher);
    for commitment in commitments {
        hasher.update(commitment);
    }
    hasher.finalize().into()
}

/// What a worker reports of a product.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    /// One commitment per chunk, in chunk order.
    pub commitments: Vec<[u8; 32]>,
    /// The digest over them.
    pub digest: [u8; 32],
}

impl Output {
    /// Commits to a computed C (n×n, row-major), however it was computed.
    pub fn from_product(params: &Params, c: &[u32]) -> Self {
        let n = params.n();
        let commitments: Vec<[u8; 32]> = (0..params.chunks())
            .map(|i| {
                let rows = params.chunk_rows(i);
                chunk_commitment(params, i, &c[rows.start * n..rows.end * n])
            })
            .collect();
        let digest = digest(params, &commitments);
        Self {
            commitments,
            digest,
        }
    }
}

/// Checks a partial recompute's `chunks` against `params`: at least one, each a chunk of this
/// product, strictly ascending (so at most [`MAX_CHUNKS`]). The CRD's schema and CEL rules say the
/// same; this is the agent's own check of what it is asked to compute.
pub fn check_chunks(params: &Params, chunks: &[u32]) -> Result<(), ParamsError> {
    if chunks.is_empty() {
        return Err(ParamsError::NoChunks);
    }
    let count = params.chunks() as u32;
    for (at, &chunk) in chunks.iter().enumerate() {
        if chunk >= count {
            return Err(ParamsError::ChunkOutOfRange {
                at,
                chunk,
                n: params.n,
                chunk_rows: params.chunk_rows,
                last: count - 1,
            });
        }
        if at > 0 && chunk <= chunks[at - 1] {
            return Err(ParamsError::ChunksNotAscending {
                at,
                chunk,
                previous: chunks[at - 1],
            });
        }
    }
    Ok(())
}

/// Rows of A for each of `chunks` in turn, row-major: the left operand of a partial recompute.
pub fn input_a_chunks(params: &Params, chunks: &[u32]) -> Vec<u32> {
    chunks
        .iter()
        .flat_map(|&k| input_a_rows(params, params.chunk_rows(k as usize)))
        .collect()
}

impl Output {
    /// Commits to `c_rows`, the rows of C of each of `chunks` in turn (row-major, as computed
    /// from [`input_a_chunks`]): one commitment per listed chunk, in that order, and the digest
    /// over them. Call with [`check_chunks`]-valid chunks.
    pub fn from_chunk_rows(params: &Params, chunks: &[u32], c_rows: &[u32]) -> Self {
        let n = params.n();
        let mut offset = 0;
        let commitments: Vec<[u8; 32]> = chunks
            .iter()
            .map(|&k| {
                let len = params.chunk_rows(k as usize).len() * n;
                let commitment =
                    chunk_commitment(params, k as usize, &c_rows[offset..offset + len]);
                offset += len;
                commitment
            })
            .collect();
        let digest = digest(params, &commitments);
        Self {
            commitments,
            digest,
        }
    }
}

/// M·v mod p for an n×n M.
fn mat_vec(n: usize, m: &[u32], v: &[u32]) -> Vec<u32> {
    m.chunks_exact(n).map(|row| dot(row, v)).collect()
}

/// x·y mod p, for entries below p.
fn dot(x: &[u32], y: &[u32]) -> u32 {
    // Eight independent accumulators: one running sum would chain every multiply-add on the one
    // before and keep the CPU's vector units idle; eight lanes let the compiler vectorize the loop
    // (Freivalds' check is three matrix-vector products per round, so this is its whole cost).
    // Each lane is folded after every product, so it stays below 2³³ and adding a product below
    // 2⁶² never overflows.
    const LANES: usize = 8;
    let fold = |s: u64| (s & u64::from(MODULUS)) + (s >> 31);
    let mut acc = [0u64; LANES];
    let mut x_lanes = x.chunks_exact(LANES);
    let mut y_lanes = y.chunks_exact(LANES);
    for (a, b) in (&mut x_lanes).zip(&mut y_lanes) {
        for lane in 0..LANES {
            acc[lane] = fold(acc[lane] + u64::from(a[lane]) * u64::from(b[lane]));
        }
    }
    let tail = x_lanes
        .remainder()
        .iter()
        .zip(y_lanes.remainder())
        .fold(0u64, |sum, (&a, &b)| {
            fold(sum + u64::from(a) * u64::from(b))
        });
    reduce(acc.iter().fold(tail, |sum, &lane| fold(sum + lane)))
}

/// Freivalds' check that `c` = A·B mod p: for `rounds` random vectors r (from `challenge_seed`),
/// A(Br) = Cr. O(n²) per round instead of the product's O(n³). A correct C always passes; a wrong
/// one passes a round with probability at most 1/p, so one round already suffices in practice.
pub fn freivalds(params: &Params, c: &[u32], rounds: u32, challenge_seed: u64) -> bool {
    let n = params.n();
    // An entry outside [0, p) is no residue of an honest product (and could overflow the sums).
    if c.len() != n * n || c.iter().any(|&x| x >= MODULUS) {
        return false;
    }
    let a = input_a(params);
    let b = input_b(params);
    (0..rounds).all(|round| {
        let r: Vec<u32> = (0..n)
            .map(|i| (mix(challenge_seed, u64::from(round), i as u64) % u64::from(MODULUS)) as u32)
            .collect();
        mat_vec(n, &a, &mat_vec(n, &b, &r)) == mat_vec(n, c, &r)
    })
}

/// How many entries of C an opening of `chunks` holds: their rows, n entries each. Call with
/// [`check_chunks`]-valid chunks.
pub fn opening_entries(params: &Params, chunks: &[u32]) -> usize {
    chunks
        .iter()
        .map(|&k| params.chunk_rows(k as usize).len() * params.n())
        .sum()
}

/// What checking a worker's opening found ([`check_opening`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opening {
    /// Every opened chunk hashes to its commitment and its rows are rows of A·B.
    Valid,
    /// The opening is not the shape the chunks ask for: nothing is proven either way.
    Malformed(String),
    /// The rows opened for `chunk` are not the ones the worker committed to: its commitment was
    /// not to a product it can show (a skipped or invented chunk cannot be opened).
    CommitmentMismatch {
        /// The chunk.
        chunk: u32,
        /// The commitment of the rows actually opened.
        opened: [u8; 32],
    },
    /// The opened rows match the commitment but are not rows of A·B: Freivalds' check of `row`
    /// failed, so the worker committed to a wrong product.
    WrongProduct {
        /// The chunk.
        chunk: u32,
        /// The first row (of C) whose check failed.
        row: u32,
        /// C's row times the challenge vector r, mod p.
        c_r: u32,
        /// A's row times B·r, mod p: what C's row times r would be if the row were right.
        a_b_r: u32,
    },
}

/// Checks rows a worker opened against its commitments, without recomputing them: first that
/// each chunk's opened rows hash to the commitment it reported (`claimed[i]` for `chunks[i]`),
/// then, with one round of Freivalds' algorithm over a vector r derived from `challenge` (which
/// the checker draws *after* the rows arrived), that every opened row i satisfies
/// C_i·r = A_i·(B·r) mod p.
///
/// Costs O(n²) for B·r (B is regenerated row by row from the seed, never held: O(n) memory) plus
/// O(n) per opened row, against the O(rows·n²) of recomputing the chunks. A correct row always
/// passes; a wrong one passes with probability at most 1/p ≈ 4.7·10⁻¹⁰, since a nonzero difference
/// vector d has d·r = 0 for at most a 1/p fraction of r over the field.
pub fn check_opening(
    params: &Params,
    chunks: &[u32],
    claimed: &[[u8; 32]],
    rows: &[u32],
    challenge: u64,
) -> Opening {
    if let Err(e) = check_chunks(params, chunks) {
        return Opening::Malformed(e.to_string());
    }
    if claimed.len() != chunks.len() {
        return Opening::Malformed(format!(
            "{} commitments for {} chunks",
            claimed.len(),
            chunks.len()
        ));
    }
    let expected = opening_entries(params, chunks);
    if rows.len() != expected {
        return Opening::Malformed(format!(
            "the opening holds {} entries; chunks {chunks:?} of an n = {} product hold {expected}",
            rows.len(),
            params.n
        ));
    }
    let n = params.n();
    let mut offset = 0;
    let mut opened_rows = Vec::with_capacity(chunks.len());
    for (&chunk, want) in chunks.iter().zip(claimed) {
        let range = params.chunk_rows(chunk as usize);
        let len = range.len() * n;
        let entries = &rows[offset..offset + len];
        let opened = chunk_commitment(params, chunk as usize, entries);
        if &opened != want {
            return Opening::CommitmentMismatch { chunk, opened };
        }
        opened_rows.push((chunk, range, entries));
        offset += len;
    }
    let r: Vec<u32> = (0..n)
        .map(|j| (mix(challenge, 0, j as u64) % u64::from(MODULUS)) as u32)
        .collect();
    let b_r = b_times(params, &r);
    for (chunk, range, entries) in opened_rows {
        for (i, c_row) in range.zip(entries.chunks_exact(n)) {
            // An entry outside [0, p) is no residue an honest product has; folding it would hide
            // that, so it fails as it stands.
            let c_r = if c_row.iter().all(|&x| x < MODULUS) {
                dot(c_row, &r)
            } else {
                u32::MAX
            };
            let a_row = input_a_rows(params, i..i + 1);
            let a_b_r = dot(&a_row, &b_r);
            if c_r != a_b_r {
                return Opening::WrongProduct {
                    chunk,
                    row: i as u32,
                    c_r,
                    a_b_r,
                };
            }
        }
    }
    Opening::Valid
}

/// B·v mod p, generating B one row at a time from the seed.
fn b_times(params: &Params, v: &[u32]) -> Vec<u32> {
    let n = params.n();
    let mut row = vec![0u32; n];
    (0..n)
        .map(|k| {
            for (j, slot) in row.iter_mut().enumerate() {
                *slot = element(params.seed, TAG_B, k * n + j);
            }
            dot(&row, v)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(n: u32, chunk_rows: u32, seed: u64) -> Params {
        Params::new(n, chunk_rows, seed).unwrap()
    }

    fn product(p: &Params) -> Vec<u32> {
        multiply_rows(p.n(), &input_a(p), &input_b(p), &AtomicBool::new(false)).unwrap()
    }

    fn compute_cpu(p: &Params) -> Output {
        Output::from_product(p, &product(p))
    }

    fn compute_chunks_cpu(p: &Params, chunks: &[u32]) -> Output {
        let a = input_a_chunks(p, chunks);
        let c = multiply_rows(p.n(), &a, &input_b(p), &AtomicBool::new(false)).unwrap();
        Output::from_chunk_rows(p, chunks, &c)
    }

    fn recompute_chunk(p: &Params, index: usize) -> [u8; 32] {
        compute_chunks_cpu(p, &[index as u32]).commitments[0]
    }

    /// The plain definition, with a `%` after every step, to check the folding arithmetic.
    fn naive(p: &Params) -> Vec<u32> {
        let (n, a, b) = (p.n(), input_a(p), input_b(p));
        let m = u64::from(MODULUS);
        let mut c = vec![0u32; n * n];
        for i in 0..n {
            for j in 0..n {
                let mut s = 0u64;
                for k in 0..n {
                    s = (s + u64::from(a[i * n + k]) * u64::from(b[k * n + j])) % m;
                }
                c[i * n + j] = s as u32;
            }
        }
        c
    }

    #[test]
    fn the_product_matches_the_definition() {
        for (n, seed) in [(1, 0), (7, 1), (33, 2), (64, 3)] {
            let p = params(n, 1, seed);
            assert_eq!(product(&p), naive(&p), "n = {n}");
        }
    }

    #[test]
    fn reduction_handles_the_extremes() {
        let m = u64::from(MODULUS);
        for x in [
            0,
            1,
            m - 1,
            m,
            m + 1,
            2 * m,
            (m - 1) * (m - 1),
            u64::MAX >> 1,
            u64::MAX,
        ] {
            assert_eq!(u64::from(reduce(x)), x % m, "x = {x}");
        }
    }

    #[test]
    fn inputs_are_deterministic_and_seed_dependent() {
        let p = params(16, 4, 42);
        assert_eq!(input_a(&p), input_a(&params(16, 4, 42)));
        assert_ne!(input_a(&p), input_a(&params(16, 4, 43)));
        assert_ne!(input_a(&p), input_b(&p));
        assert!(input_a(&p).iter().all(|&x| x < MODULUS));
        assert_eq!(input_a_rows(&p, 4..8), input_a(&p)[4 * 16..8 * 16]);
    }

    #[test]
    fn chunks_cover_the_rows_once() {
        let p = params(10, 4, 0);
        assert_eq!(p.chunks(), 3);
        assert_eq!(
            (0..3).map(|i| p.chunk_rows(i)).collect::<Vec<_>>(),
            [0..4, 4..8, 8..10]
        );
    }

    #[test]
    fn a_recomputed_chunk_matches_the_full_output() {
        let p = params(40, 6, 9);
        let out = compute_cpu(&p);
        assert_eq!(out.commitments.len(), 7);
        for i in 0..p.chunks() {
            assert_eq!(recompute_chunk(&p, i), out.commitments[i], "chunk {i}");
        }
        assert_eq!(out.digest, digest(&p, &out.commitments));
    }

    /// Fixed values: a change of the encoding, generator or arithmetic breaks every node's
    /// agreement with verifiers, so it must show up here. The values were computed independently
    /// (a short Python script following the module documentation: SplitMix64 inputs, the textbook
    /// product mod p, SHA-256 over the documented encoding), not copied from this code's output.
    #[test]
    fn the_encoding_is_stable() {
        let p = params(4, 2, 1);
        let out = compute_cpu(&p);
        let c = product(&p);
        assert_eq!(c.len(), 16);
        assert_eq!(out, Output::from_product(&p, &c));
        assert_eq!(c[..4], [1470062292, 305582009, 832304869, 739542438]);
        assert_eq!(
            hex::encode(out.commitments[1]),
            "558af8b2b770de4e8cc5cd163ccddbc59618a68bd490ae2615eed955e5558757"
        );
        assert_eq!(
            hex::encode(out.digest),
            "58567efc072e5b4d1bf564151da008ff4ffc45978b233980cdc61d6b2978961b"
        );
        // Different chunking: different commitments, though C is the same.
        let other = compute_cpu(&params(4, 1, 1));
        assert_ne!(other.digest, out.digest);
    }

    /// Property: for many (n, chunkRows, element, delta), changing one element of C changes
    /// exactly the commitment of the chunk holding it, and the digest.
    #[test]
    fn one_changed_element_changes_exactly_its_chunk() {
        for case in 0..40u64 {
            let n = 1 + (mix(case, 1, 0) % 24) as u32;
            let chunk_rows = 1 + (mix(case, 2, 0) % u64::from(n)) as u32;
            let p = params(n, chunk_rows, case);
            let c = product(&p);
            let honest = Output::from_product(&p, &c);
            let at = (mix(case, 3, 0) % (c.len() as u64)) as usize;
            let delta = 1 + (mix(case, 4, 0) % u64::from(MODULUS - 1)) as u32;
            let mut bad = c.clone();
            bad[at] = (bad[at] + delta) % MODULUS;
            let tampered = Output::from_product(&p, &bad);
            let chunk = (at / p.n()) / chunk_rows as usize;
            for i in 0..p.chunks() {
                assert_eq!(
                    honest.commitments[i] != tampered.commitments[i],
                    i == chunk,
                    "case {case}: n {n}, chunkRows {chunk_rows}, element {at}, chunk {i}"
                );
            }
            assert_ne!(honest.digest, tampered.digest);
        }
    }

    /// Property: Freivalds accepts the true product and rejects it with any single element, or a
    /// whole row, corrupted.
    #[test]
    fn freivalds_accepts_the_product_and_rejects_corruptions() {
        for case in 0..20u64 {
            let n = 1 + (mix(case, 5, 0) % 32) as u32;
            let p = params(n, 1, case);
            let c = product(&p);
            assert!(freivalds(&p, &c, 2, case), "case {case}: honest C refused");
            let at = (mix(case, 6, 0) % (c.len() as u64)) as usize;
            let mut bad = c.clone();
            bad[at] = (bad[at] + 1 + (case as u32)) % MODULUS;
            assert!(!freivalds(&p, &bad, 2, case), "case {case}: element {at}");
            let row = at / p.n();
            let mut bad_row = c.clone();
            for x in &mut bad_row[row * p.n()..(row + 1) * p.n()] {
                *x = (*x + 5) % MODULUS;
            }
            assert!(!freivalds(&p, &bad_row, 1, case), "case {case}: row {row}");
        }
        let p = params(8, 8, 0);
        assert!(!freivalds(&p, &[0; 63], 1, 0), "a C of the wrong size");
    }

    #[test]
    fn parameters_are_bounded() {
        assert_eq!(Params::new(0, 1, 0), Err(ParamsError::N(0)));
        assert_eq!(
            Params::new(MAX_N + 1, 64, 0),
            Err(ParamsError::N(MAX_N + 1))
        );
        assert!(matches!(
            Params::new(8, 9, 0),
            Err(ParamsError::ChunkRows { .. })
        ));
        assert!(matches!(
            Params::new(8, 0, 0),
            Err(ParamsError::ChunkRows { .. })
        ));
        assert!(matches!(
            Params::new(2048, 1, 0),
            Err(ParamsError::TooManyChunks { .. })
        ));
        assert!(Params::new(2048, 2, 0).is_ok());
        assert_eq!(
            ParamsError::ChunkRows {
                n: 8,
                chunk_rows: 9
            }
            .to_string(),
            "chunkRows must be between 1 and n (8), got 9"
        );
    }

    /// A partial recompute's commitments are exactly the full product's for those chunks, in
    /// the order asked, and its digest is the digest function over just them.
    #[test]
    fn chunks_commit_as_in_the_full_product() {
        let p = params(40, 6, 9);
        let full = compute_cpu(&p);
        for chunks in [vec![0], vec![6], vec![1, 4, 6], (0..7).collect()] {
            let part = compute_chunks_cpu(&p, &chunks);
            let want: Vec<[u8; 32]> = chunks
                .iter()
                .map(|&k| full.commitments[k as usize])
                .collect();
            assert_eq!(part.commitments, want, "chunks {chunks:?}");
            assert_eq!(part.digest, digest(&p, &want), "chunks {chunks:?}");
        }
        let all = compute_chunks_cpu(&p, &(0..7).collect::<Vec<_>>());
        assert_eq!(all, full, "every chunk: the whole product's output");
    }

    #[test]
    fn bad_chunks_are_refused_naming_the_field() {
        let p = params(40, 6, 9); // chunks 0 to 6
        assert_eq!(check_chunks(&p, &[0, 6]), Ok(()));
        for (chunks, says) in [
            (vec![], "chunks must list at least one chunk"),
            (
                vec![2, 7],
                "chunks[1] is 7, but n = 40 and chunkRows = 6 make chunks 0 to 6",
            ),
            (
                vec![3, 1],
                "chunks must be ascending without repeats, but chunks[1] is 1 after 3",
            ),
            (vec![1, 1], "chunks[1] is 1 after 1"),
        ] {
            let err = check_chunks(&p, &chunks).unwrap_err().to_string();
            assert!(err.contains(says), "{chunks:?}: {err}");
        }
    }

    #[test]
    fn a_raised_cancel_flag_stops_the_product() {
        let p = params(64, 8, 0);
        assert_eq!(
            multiply_rows(p.n(), &input_a(&p), &input_b(&p), &AtomicBool::new(true)),
            Err(Cancelled)
        );
    }

    /// Opens `chunks` of an honest product: their rows and their commitments.
    fn honest_opening(p: &Params, chunks: &[u32]) -> (Vec<u32>, Vec<[u8; 32]>) {
        let a = input_a_chunks(p, chunks);
        let rows = multiply_rows(p.n(), &a, &input_b(p), &AtomicBool::new(false)).unwrap();
        let claimed = Output::from_chunk_rows(p, chunks, &rows).commitments;
        (rows, claimed)
    }

    #[test]
    fn an_honest_opening_passes_for_any_challenge() {
        for (n, chunk_rows, chunks) in
            [(40, 6, vec![0, 3, 6]), (33, 33, vec![0]), (17, 1, vec![16])]
        {
            let p = params(n, chunk_rows, u64::from(n));
            let (rows, claimed) = honest_opening(&p, &chunks);
            assert_eq!(rows.len(), opening_entries(&p, &chunks));
            for challenge in 0..5 {
                assert_eq!(
                    check_opening(&p, &chunks, &claimed, &rows, challenge),
                    Opening::Valid,
                    "n {n}, chunks {chunks:?}, challenge {challenge}"
                );
            }
        }
    }

    /// A worker that skipped a chunk reported an invented commitment: whatever rows it opens
    /// (here the true ones, its best try), they do not hash to it.
    #[test]
    fn an_invented_commitment_cannot_be_opened() {
        let p = params(40, 6, 9);
        let (rows, mut claimed) = honest_opening(&p, &[1, 4]);
        claimed[1] = [7; 32];
        let found = check_opening(&p, &[1, 4], &claimed, &rows, 3);
        assert_eq!(
            found,
            Opening::CommitmentMismatch {
                chunk: 4,
                opened: recompute_chunk(&p, 4)
            }
        );
    }

    /// Property: a worker that committed to wrong rows (any element changed by any amount, the
    /// commitment made over the wrong rows) opens consistently and is still caught, at the row it
    /// got wrong.
    #[test]
    fn a_committed_wrong_product_fails_freivalds_at_its_row() {
        for case in 0..40u64 {
            let n = 2 + (mix(case, 7, 0) % 30) as u32;
            let chunk_rows = 1 + (mix(case, 8, 0) % u64::from(n)) as u32;
            let p = params(n, chunk_rows, case);
            let chunks: Vec<u32> = (0..p.chunks() as u32).filter(|k| k % 2 == 0).collect();
            let (mut rows, _) = honest_opening(&p, &chunks);
            let at = (mix(case, 9, 0) % rows.len() as u64) as usize;
            let delta = 1 + (mix(case, 10, 0) % u64::from(MODULUS - 1)) as u32;
            rows[at] = (rows[at] + delta) % MODULUS;
            let claimed = Output::from_chunk_rows(&p, &chunks, &rows).commitments;
            let found = check_opening(&p, &chunks, &claimed, &rows, case);
            // The opened rows run chunk after chunk: find which global row `at` is.
            let mut offset = 0;
            let mut want = None;
            for &k in &chunks {
                let range = p.chunk_rows(k as usize);
                let len = range.len() * p.n();
                if at < offset + len {
                    want = Some((k, (range.start + (at - offset) / p.n()) as u32));
                    break;
                }
                offset += len;
            }
            let (chunk, row) = want.unwrap();
            assert!(
                matches!(found, Opening::WrongProduct { chunk: c, row: r, c_r, a_b_r } if c == chunk && r == row && c_r != a_b_r),
                "case {case}: n {n}, chunkRows {chunk_rows}, element {at}: {found:?}"
            );
        }
    }

    #[test]
    fn a_non_residue_entry_fails_even_when_committed() {
        let p = params(16, 4, 2);
        let (mut rows, _) = honest_opening(&p, &[1]);
        // x + p is x again modulo p, but no honest product holds it.
        rows[3] = rows[3].wrapping_add(MODULUS).max(MODULUS);
        let claimed = Output::from_chunk_rows(&p, &[1], &rows).commitments;
        assert!(matches!(
            check_opening(&p, &[1], &claimed, &rows, 0),
            Opening::WrongProduct {
                chunk: 1,
                row: 4,
                ..
            }
        ));
    }

    #[test]
    fn a_malformed_opening_proves_nothing() {
        let p = params(16, 4, 2);
        let (rows, claimed) = honest_opening(&p, &[1, 2]);
        for (chunks, claimed, rows, says) in [
            (
                vec![1, 2],
                claimed.clone(),
                rows[1..].to_vec(),
                "holds 127 entries",
            ),
            (
                vec![1],
                claimed.clone(),
                rows.clone(),
                "2 commitments for 1 chunks",
            ),
            (vec![2, 1], claimed.clone(), rows.clone(), "ascending"),
            (vec![1, 4], claimed.clone(), rows.clone(), "chunks[1] is 4"),
        ] {
            match check_opening(&p, &chunks, &claimed, &rows, 0) {
                Opening::Malformed(why) => assert!(why.contains(says), "{chunks:?}: {why}"),
                other => panic!("{chunks:?}: {other:?}"),
            }
        }
    }
}
