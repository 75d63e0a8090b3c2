//! Which chunks a spot check recomputes.
//!
//! # Why the seed comes last
//!
//! A worker that knew which chunks would be checked could compute those honestly and invent the
//! rest. The hub therefore draws the 32-byte seed from the operating system's CSPRNG only **after**
//! the worker's commitments arrived, and the sample is a function of that seed alone: the worker,
//! having committed, cannot change its answers, and could not have predicted the seed.
//!
//! # Why deterministic in the seed
//!
//! The hub records the seed with the check (and in the evidence of a failed one). Anyone holding
//! it re-derives the same sample with [`sample`], so a node accused by a check can confirm that
//! its chunks were chosen by the documented rule and not picked to frame it.
//!
//! # The algorithm (version 1), for re-implementations
//!
//! 1. **Size**: `k = max(1, ceil(rate × N))`, capped at `N` ([`sample_size`]). The rate is first
//!    rounded to whole parts per million and the ceiling taken in integers, so `0.01 × 1000` is
//!    exactly 10 on every platform (a floating-point ceiling is one too high whenever the product
//!    rounds up: `0.07 × 100` is `7.000000000000001` in f64).
//! 2. **Stream**: 64-bit words from SHA-256 in counter mode: block `c` (c = 0, 1, …) is
//!    `SHA-256("agora verification sample v1\0" ‖ seed ‖ N as u64 LE ‖ c as u64 LE)`, read as four
//!    little-endian u64 words in order.
//! 3. **Uniform below m**: take the next word `x`; accept it if `x ≤ 2⁶⁴ − 1 − ((2⁶⁴ − m) mod m)`
//!    and use `x mod m`, otherwise take the next word (rejection: no modulo bias).
//! 4. **Partial Fisher–Yates** over the identity permutation `0, 1, …, N−1`: for `i` in `0..k`,
//!    `j = i + uniform below (N − i)`, swap positions `i` and `j`, and position `i` is the i-th
//!    chosen chunk. The first `k` positions are the sample, returned **sorted ascending**.
//!
//! `k` is not hashed in, so a larger sample from the same seed contains the smaller one.

use std::collections::HashMap;

use sha2::{Digest as _, Sha256};

/// The seed of one check: 32 bytes from the OS CSPRNG, drawn after the commitments arrived.
pub type Seed = [u8; 32];

/// Domain separation of the counter stream, so its blocks are no other hash in Agora.
const DOMAIN: &[u8] = b"agora verification sample v1\0";

/// Parts per million in a whole: the resolution of the sample rate.
const PPM: u128 = 1_000_000;

/// Why no sample could be drawn; each names the field it is about.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SampleError {
    /// The rate is not a number in (0, 1].
    #[error("sampleRate must be in (0, 1], got {0}")]
    Rate(f64),
    /// There is nothing to sample.
    #[error("chunks must be at least 1, got 0")]
    NoChunks,
    /// More chunks asked for than there are.
    #[error("sample size {k} exceeds the {chunks} chunks")]
    TooMany {
        /// The size asked for.
        k: usize,
        /// The chunks there are.
        chunks: usize,
    },
    /// A recorded seed that is not 64 hex digits.
    #[error("seed must be 64 hex digits (32 bytes), got {0:?}")]
    SeedHex(String),
}

/// How many of `chunks` chunks a check at `rate` recomputes: `max(1, ceil(rate × chunks))`,
/// capped at `chunks`, with the rate rounded to parts per million (step 1 of the module's
/// algorithm). At least one chunk, so every checked job is checked.
pub fn sample_size(chunks: usize, rate: f64) -> Result<usize, SampleError> {
    if !(rate.is_finite() && rate > 0.0 && rate <= 1.0) {
        return Err(SampleError::Rate(rate));
    }
    if chunks == 0 {
        return Err(SampleError::NoChunks);
    }
    let ppm = (rate * 1e6).round() as u128;
    let k = (ppm * chunks as u128).div_ceil(PPM);
    Ok((k as usize).clamp(1, chunks))
}

/// The chunks (indices in `0..chunks`, distinct, ascending) a check at `rate` recomputes for
/// `seed`: [`sample_size`] of them, chosen by [`sample_exact`].
pub fn sample(seed: &Seed, chunks: usize, rate: f64) -> Result<Vec<usize>, SampleError> {
    let k = sample_size(chunks, rate)?;
    sample_exact(seed, chunks, k)
}

/// `k` distinct chunk indices in `0..chunks`, ascending, chosen uniformly among all k-subsets by
/// the seed's counter stream and a partial Fisher–Yates shuffle (steps 2–4 of the module's
/// algorithm). Costs O(k) hashes and memory, whatever `chunks` is.
pub fn sample_exact(seed: &Seed, chunks: usize, k: usize) -> Result<Vec<usize>, SampleError> {
    if chunks == 0 {
        return Err(SampleError::NoChunks);
    }
    if k > chunks {
        return Err(SampleError::TooMany { k, chunks });
    }
    let mut stream = Stream::new(seed, chunks as u64);
    // The permutation, stored sparsely: a missing key i holds i.
    let mut moved: HashMap<usize, usize> = HashMap::with_capacity(2 * k);
    let mut chosen = Vec::with_capacity(k);
    for i in 0..k {
        let j = i + stream.below((chunks - i) as u64) as usize;
        let at_i = moved.get(&i).copied().unwrap_or(i);
        let at_j = moved.get(&j).copied().unwrap_or(j);
        chosen.push(at_j);
        moved.insert(j, at_i);
    }
    chosen.sort_unstable();
    Ok(chosen)
}

/// The seed as the hub records it: 64 lowercase hex digits.
pub fn seed_to_hex(seed: &Seed) -> String {
    hex::encode(seed)
}

/// A recorded seed read back, to re-derive a sample.
pub fn seed_from_hex(text: &str) -> Result<Seed, SampleError> {
    let mut seed = [0u8; 32];
    hex::decode_to_slice(text, &mut seed).map_err(|_| SampleError::SeedHex(text.to_owned()))?;
    Ok(seed)
}

/// SHA-256 in counter mode over the seed: the sample's only source of randomness.
struct Stream {
    prefix: Sha256,
    counter: u64,
    block: [u8; 32],
    used: usize,
}

impl Stream {
    fn new(seed: &Seed, chunks: u64) -> Self {
        let mut prefix = Sha256::new();
        prefix.update(DOMAIN);
        prefix.update(seed);
        prefix.update(chunks.to_le_bytes());
        Self {
            prefix,
            counter: 0,
            block: [0; 32],
            used: 32,
        }
    }

    fn next_u64(&mut self) -> u64 {
        if self.used == 32 {
            let mut hasher = self.prefix.clone();
            hasher.update(self.counter.to_le_bytes());
            self.block = hasher.finalize().into();
            self.counter += 1;
            self.used = 0;
        }
        let word = u64::from_le_bytes(
            self.block[self.used..self.used + 8]
                .try_into()
                .expect("8 bytes"),
        );
        self.used += 8;
        word
    }

    /// Uniform in `0..m` (m ≥ 1), by rejection of the top partial range.
    fn below(&mut self, m: u64) -> u64 {
        let zone = u64::MAX - (u64::MAX - m + 1) % m;
        loop {
            let x = self.next_u64();
            if x <= zone {
                return x % m;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seeds for the property tests: fixed, so the tests never flake, and unrelated to each other.
    fn seed(i: u64) -> Seed {
        Sha256::digest(i.to_le_bytes()).into()
    }

    #[test]
    fn the_sample_size_follows_the_rate() {
        assert_eq!(sample_size(1000, 0.01), Ok(10));
        assert_eq!(sample_size(1000, 0.05), Ok(50));
        assert_eq!(sample_size(1000, 0.1), Ok(100));
        assert_eq!(sample_size(1000, 1.0), Ok(1000));
        // The ceiling: 0.05 × 10 chunks is 0.5, so 1; 0.3 × 7 = 2.1, so 3.
        assert_eq!(sample_size(10, 0.05), Ok(1));
        assert_eq!(sample_size(7, 0.3), Ok(3));
        // At least one, even when the rate rounds to nothing.
        assert_eq!(sample_size(1000, 1e-9), Ok(1));
        assert_eq!(sample_size(1, 0.01), Ok(1));
        // Exact for every decimal rate with up to 6 digits, however f64 rounds the product.
        for chunks in 1..=1024usize {
            for ppm in [1u32, 10_000, 50_000, 100_000, 123_457, 333_333, 999_999] {
                let expected = (ppm as usize * chunks).div_ceil(1_000_000).clamp(1, chunks);
                assert_eq!(
                    sample_size(chunks, f64::from(ppm) / 1e6),
                    Ok(expected),
                    "{ppm} ppm of {chunks}"
                );
            }
        }
    }

    #[test]
    fn bad_rates_and_sizes_are_refused_naming_the_field() {
        for rate in [0.0, -0.1, 1.0001, f64::NAN, f64::INFINITY] {
            let error = sample_size(10, rate).unwrap_err();
            assert!(error.to_string().starts_with("sampleRate"), "{error}");
        }
        assert_eq!(sample_size(0, 0.5), Err(SampleError::NoChunks));
        assert_eq!(
            sample_exact(&seed(0), 3, 4),
            Err(SampleError::TooMany { k: 4, chunks: 3 })
        );
        assert!(
            seed_from_hex("abc")
                .unwrap_err()
                .to_string()
                .starts_with("seed")
        );
    }

    /// Property over many (seed, chunks, rate): k distinct indices in range, sorted, exactly the
    /// size the rate asks for, the same for the same seed.
    #[test]
    fn samples_are_distinct_in_range_sorted_deterministic_and_sized() {
        for case in 0..300u64 {
            let s = seed(case);
            let chunks = 1 + (case as usize * 37) % 1024;
            let rate = [0.01, 0.05, 0.1, 0.5, 1.0][case as usize % 5];
            let chosen = sample(&s, chunks, rate).unwrap();
            assert_eq!(chosen.len(), sample_size(chunks, rate).unwrap());
            assert!(chosen.windows(2).all(|w| w[0] < w[1]), "case {case}");
            assert!(chosen.iter().all(|&c| c < chunks), "case {case}");
            assert_eq!(chosen, sample(&s, chunks, rate).unwrap(), "case {case}");
        }
        // All of them when the rate is 1.
        assert_eq!(
            sample(&seed(1), 50, 1.0).unwrap(),
            (0..50).collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_recorded_seed_re_derives_the_sample() {
        let s = seed(7);
        let recorded = seed_to_hex(&s);
        assert_eq!(recorded.len(), 64);
        assert_eq!(
            sample(&seed_from_hex(&recorded).unwrap(), 1000, 0.05).unwrap(),
            sample(&s, 1000, 0.05).unwrap()
        );
    }

    #[test]
    fn different_seeds_give_different_samples() {
        let samples: Vec<Vec<usize>> = (0..200)
            .map(|i| sample(&seed(i), 1000, 0.01).unwrap())
            .collect();
        let mut distinct = samples.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), samples.len());
        // A one-bit change of the seed changes the sample.
        let mut flipped = seed(3);
        flipped[31] ^= 1;
        assert_ne!(
            sample(&seed(3), 1000, 0.01).unwrap(),
            sample(&flipped, 1000, 0.01).unwrap()
        );
    }

    #[test]
    fn a_larger_sample_from_the_same_seed_contains_the_smaller() {
        let s = seed(11);
        let small = sample_exact(&s, 500, 5).unwrap();
        let large = sample_exact(&s, 500, 50).unwrap();
        assert!(small.iter().all(|c| large.contains(c)));
    }

    /// Fixed output: a change of the algorithm breaks every audit of recorded samples, so it must
    /// show up here. The values were computed independently, by a short Python script following
    /// the module documentation (hashlib's SHA-256, the rejection rule, the shuffle), not copied
    /// from this code's output.
    #[test]
    fn the_algorithm_is_stable() {
        assert_eq!(
            sample(&[0u8; 32], 1000, 0.01).unwrap(),
            [82, 105, 184, 288, 313, 387, 650, 769, 862, 964]
        );
        let counting: Seed = std::array::from_fn(|i| i as u8);
        assert_eq!(
            sample_exact(&counting, 1024, 5).unwrap(),
            [526, 652, 774, 829, 868]
        );
        // The ceiling case of the documentation: 7% of 100 chunks is 7, not 8.
        assert_eq!(sample_size(100, 0.07), Ok(7));
    }

    /// Chi-square of how often each chunk is chosen, over 4,000 fixed seeds (20 chunks, 5 each:
    /// 1,000 expected per chunk). 19 degrees of freedom: the 0.1% critical value is 43.8; a biased
    /// sampler (say, modulo bias or an off-by-one that never picks the last chunk) lands far above.
    #[test]
    fn every_chunk_is_equally_likely() {
        let (chunks, k, seeds) = (20usize, 5usize, 4_000u64);
        let mut counts = vec![0u64; chunks];
        // And the first pick alone, which a broken shuffle step would skew.
        let mut first = vec![0u64; chunks];
        for i in 0..seeds {
            let s = seed(1_000_000 + i);
            for c in sample_exact(&s, chunks, k).unwrap() {
                counts[c] += 1;
            }
            first[sample_exact(&s, chunks, 1).unwrap()[0]] += 1;
        }
        let chi_square = |counts: &[u64], expected: f64| {
            counts
                .iter()
                .map(|&c| (c as f64 - expected).powi(2) / expected)
                .sum::<f64>()
        };
        let all = chi_square(&counts, (seeds as usize * k / chunks) as f64);
        let one = chi_square(&first, seeds as f64 / chunks as f64);
        assert!(all < 43.8, "chi-square {all:.1} over {counts:?}");
        assert!(one < 43.8, "chi-square {one:.1} over {first:?}");
    }

    /// Rejection sampling keeps `below` exact even for a bound that does not divide 2⁶⁴.
    #[test]
    fn the_uniform_draw_stays_below_its_bound() {
        let mut stream = Stream::new(&seed(5), 3);
        for m in [1u64, 2, 3, 7, 1000, u64::MAX / 3 * 2, u64::MAX] {
            for _ in 0..100 {
                assert!(stream.below(m) < m);
            }
        }
    }
}
