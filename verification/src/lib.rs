//! Agora's verification of work, as pure functions the hub calls: no I/O, no clock, no global
//! randomness, so every decision can be replayed from what the hub recorded.
//!
//! - [`sample`]: which chunks of a committed output a verifier recomputes, drawn from a seed the
//!   hub takes from the OS after the worker's commitments arrived (so the worker could not know
//!   them), deterministic in that seed (so anyone holding it can audit the choice).
//! - [`theory`]: how likely a spot check is to catch a cheater, and what it costs.
//! - [`verdict`]: comparing a worker's commitments with a verifier's, and the tie-break that
//!   decides a dispute, so an honest worker is never slashed because of a verifier's error.
//! - [`reputation`]: the node's score in basis points and how each outcome moves it.
//! - [`matmul`]: the `verifiableMatmul` product modulo a prime, its chunk commitments, and the
//!   checks that need no second node: Freivalds' algorithm and opening committed chunks.
//! - [`evidence`]: what a failed check records, and the compact string the settlement
//!   contract's `Slash { evidence }` carries.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod evidence;
pub mod matmul;
pub mod reputation;
pub mod sample;
pub mod theory;
pub mod verdict;

/// A SHA-256 digest: a chunk commitment or an output digest.
pub type Digest = [u8; 32];

/// A commitment or digest as reports carry it (64 hex digits, either case) read into bytes;
/// `None` for anything else, so the caller names its own field in the error.
pub fn digest_from_hex(text: &str) -> Option<Digest> {
    let mut digest = [0u8; 32];
    hex::decode_to_slice(text, &mut digest).ok()?;
    Some(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_read_from_hex() {
        assert_eq!(digest_from_hex(&"ab".repeat(32)), Some([0xAB; 32]));
        assert_eq!(digest_from_hex(&"AB".repeat(32)), Some([0xAB; 32]));
        assert_eq!(digest_from_hex(&"ab".repeat(31)), None);
        assert_eq!(digest_from_hex(&"ab".repeat(33)), None);
        assert_eq!(digest_from_hex(&"zz".repeat(32)), None);
    }
}
