//! What a challenge proves on chain, without signatures: that a leaf is in a batch's RFC 6962
//! Merkle tree, and what that leaf says. The receipt decoder is a minimal re-implementation of
//! `settlement::receipt` (docs/settlement.md, "Usage receipts"): the contract must build for wasm32
//! without k256, and it only needs the fields a contradiction is judged on.

use sha2::{Digest, Sha256};

/// The first bytes of every canonical receipt.
const MAGIC: &[u8; 16] = b"agora-receipt-v1";

/// Longer proofs cannot belong to a tree of at most 2^64 leaves.
pub const MAX_PROOF: usize = 64;

/// The receipt fields a challenge is judged on.
#[derive(Debug, PartialEq, Eq)]
pub struct Receipt {
    pub node: String,
    pub gpus: u32,
    pub started_at_ms: u64,
    pub until_ms: u64,
    pub gpu_millis: u64,
}

/// Decodes canonical receipt bytes, rejecting what the format forbids (wrong magic, truncation,
/// trailing bytes, non-UTF-8 text, a window ending before it starts, more GPU time than the GPUs
/// had). The error says what is wrong: it is the challenge's reason when the leaf is in the batch.
pub fn decode_receipt(bytes: &[u8]) -> Result<Receipt, String> {
    let mut reader = Reader { rest: bytes };
    if reader.take(MAGIC.len(), "magic")? != MAGIC {
        return Err("not a receipt: wrong magic".into());
    }
    let mut node = String::new();
    for field in ["network", "node", "job", "assignment"] {
        let len = usize::from(reader.take(1, field)?[0]);
        let text = std::str::from_utf8(reader.take(len, field)?)
            .map_err(|_| format!("{field} is not UTF-8"))?;
        if field == "node" {
            node = text.to_owned();
        }
    }
    let _sequence = reader.u64("sequence")?;
    let _price = reader.u64("price_micros_per_gpu_hour")?;
    let gpus = u32::from_be_bytes(reader.array("gpus")?);
    let started_at_ms = reader.u64("started_at_ms")?;
    let until_ms = reader.u64("until_ms")?;
    let gpu_millis = reader.u64("gpu_millis")?;
    if !reader.rest.is_empty() {
        return Err(format!("{} trailing bytes", reader.rest.len()));
    }
    let Some(window_ms) = until_ms.checked_sub(started_at_ms) else {
        return Err(format!(
            "the window ends ({until_ms}) before it starts ({started_at_ms})"
        ));
    };
    if u128::from(gpu_millis) > u128::from(gpus) * u128::from(window_ms) {
        return Err(format!(
            "{gpu_millis} GPU-ms is more than {gpus} GPUs can run in {window_ms} ms"
        ));
    }
    Ok(Receipt {
        node,
        gpus,
        started_at_ms,
        until_ms,
        gpu_millis,
    })
}

/// A cursor over the bytes still to decode.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &str) -> Result<&'a [u8], String> {
        if self.rest.len() < n {
            return Err(format!("truncated at {field}"));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, field: &str) -> Result<[u8; N], String> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, field)?);
        Ok(out)
    }

    fn u64(&mut self, field: &str) -> Result<u64, String> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }
}

/// RFC 6962 leaf hash: SHA-256(0x00 ‖ bytes).
pub fn leaf_hash(bytes: &[u8]) -> [u8; 32] {
    Sha256::new()
        .chain_update([0u8])
        .chain_update(bytes)
        .finalize()
        .into()
}

/// RFC 6962 interior node hash: SHA-256(0x01 ‖ left ‖ right).
pub fn node_hash(left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    Sha256::new()
        .chain_update([1u8])
        .chain_update(left)
        .chain_update(right)
        .finalize()
        .into()
}

/// Verifies an inclusion proof (sibling hashes from the leaf up) of the leaf at `index` in a tree
/// of `tree_size` leaves with root `root`: the algorithm of RFC 9162 §2.1.3.2, which also rejects a
/// proof of the wrong length for that index and size.
pub fn verify_inclusion(
    leaf: [u8; 32],
    index: u64,
    tree_size: u64,
    proof: &[[u8; 32]],
    root: &[u8; 32],
) -> Result<(), String> {
    if index >= tree_size {
        return Err(format!("index {index} is not below tree_size {tree_size}"));
    }
    let (mut fnode, mut snode) = (index, tree_size - 1);
    let mut hash = leaf;
    for sibling in proof {
        if snode == 0 {
            return Err("the proof is longer than the path to the root".into());
        }
        if fnode & 1 == 1 || fnode == snode {
            hash = node_hash(sibling, &hash);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            hash = node_hash(&hash, sibling);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err("the proof is shorter than the path to the root".into());
    }
    if &hash != root {
        return Err("the proof leads to a different root".into());
    }
    Ok(())
}

/// 32 bytes from hex (either case).
pub fn hash_from_hex(text: &str) -> Option<[u8; 32]> {
    let bytes = hex::decode(text).ok()?;
    bytes.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The 100-byte example of docs/settlement.md decodes, and a byte more or a claim beyond the
    /// GPUs' time does not.
    #[test]
    fn decodes_the_documented_example_and_refuses_what_the_format_forbids() {
        let mut bytes = b"agora-receipt-v1".to_vec();
        for text in ["agora-devnet-1", "gn-a", "job-1", "asg-job-1-1-0"] {
            bytes.push(text.len() as u8);
            bytes.extend_from_slice(text.as_bytes());
        }
        bytes.extend_from_slice(&3u64.to_be_bytes());
        bytes.extend_from_slice(&2_490_000u64.to_be_bytes());
        bytes.extend_from_slice(&2u32.to_be_bytes());
        bytes.extend_from_slice(&1_000u64.to_be_bytes());
        bytes.extend_from_slice(&61_000u64.to_be_bytes());
        let mut too_much = bytes.clone();
        bytes.extend_from_slice(&120_000u64.to_be_bytes());
        assert_eq!(bytes.len(), 100);
        let receipt = decode_receipt(&bytes).unwrap();
        assert_eq!(receipt.node, "gn-a");
        assert_eq!((receipt.gpus, receipt.gpu_millis), (2, 120_000));

        too_much.extend_from_slice(&120_001u64.to_be_bytes());
        assert!(
            decode_receipt(&too_much)
                .unwrap_err()
                .contains("more than 2 GPUs")
        );
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(decode_receipt(&trailing).unwrap_err().contains("trailing"));
        assert!(
            decode_receipt(&bytes[..99])
                .unwrap_err()
                .contains("truncated")
        );
    }

    /// A single-leaf tree's root is the leaf hash, with an empty proof.
    #[test]
    fn single_leaf_tree() {
        let leaf = leaf_hash(b"x");
        assert!(verify_inclusion(leaf, 0, 1, &[], &leaf).is_ok());
        assert!(verify_inclusion(leaf, 1, 1, &[], &leaf).is_err());
        assert!(verify_inclusion(leaf, 0, 2, &[], &leaf).is_err());
    }
}
