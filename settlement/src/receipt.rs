//! Usage receipts: what a node claims it ran for one assignment, in one canonical byte encoding,
//! signed with the node's secp256k1 key.
//!
//! Receipts are **cumulative**: each one states the GPU time of the assignment from its start up
//! to the receipt's time, with a sequence number that grows with every receipt, so the latest
//! receipt of an assignment supersedes all earlier ones and a lost receipt loses nothing. Payment
//! is derived, never stated: `amount = ceil(gpu_millis × price_micros_per_gpu_hour / 3,600,000)`
//! micro-units (see [`Receipt::amount_micros`]), so a receipt cannot claim an amount that does not
//! follow from its own GPU time and price.
//!
//! The encoding is byte for byte in docs/settlement.md. It is binary and fixed (no JSON, no maps,
//! no optional fields) so that a signature covers exactly one byte string per receipt, in any
//! language, and a verifier on chain can rebuild it without a serializer.

use k256::ecdsa::{Signature, SigningKey, VerifyingKey, signature::Signer, signature::Verifier};

/// The first bytes of every encoded receipt: names the purpose and the version, so a receipt
/// signature can never be mistaken for a registration proof (which signs text starting
/// `agora-register-v1`) or for a receipt of another version.
pub const MAGIC: &[u8; 16] = b"agora-receipt-v1";

/// Longest text field, in bytes (names and ids are far shorter; the bound keeps decoding total).
pub const MAX_TEXT: usize = 255;

/// GPU-milliseconds in one GPU-hour: the unit conversion behind [`Receipt::amount_micros`].
const GPU_MILLIS_PER_HOUR: u128 = 3_600_000;

/// One node's cumulative claim for one assignment.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Receipt {
    /// The network the receipt is for (e.g. `agora-devnet-1`): a receipt signed for one network
    /// cannot be replayed on another.
    pub network: String,
    /// The node's name (`gn-…`).
    pub node: String,
    /// The job the assignment belongs to.
    pub job: String,
    /// The assignment (`asg-…`): the unit receipts are cumulative over.
    pub assignment: String,
    /// Grows by at least one with every receipt of the assignment; the highest wins.
    pub sequence: u64,
    /// The agreed price per GPU-hour, in micro-units.
    pub price_micros_per_gpu_hour: u64,
    /// GPUs the assignment holds.
    pub gpus: u32,
    /// When the worker started (Unix ms).
    pub started_at_ms: u64,
    /// The end of the window this receipt covers (Unix ms): `started_at_ms ..= until_ms`.
    pub until_ms: u64,
    /// GPU time from the start to `until_ms`, in GPU-milliseconds; at most
    /// `gpus × (until_ms − started_at_ms)`.
    pub gpu_millis: u64,
}

/// Why bytes are not a receipt, or a receipt is not consistent.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReceiptError {
    #[error("not a receipt: the bytes do not start with {MAGIC:?}")]
    Magic,
    #[error("truncated: {field} is cut short")]
    Truncated { field: &'static str },
    #[error("{field} is longer than {MAX_TEXT} bytes")]
    TooLong { field: &'static str },
    #[error("{field} is not UTF-8")]
    NotUtf8 { field: &'static str },
    #[error("{0} trailing bytes after the receipt")]
    Trailing(usize),
    #[error("the window ends ({until_ms}) before it starts ({started_at_ms})")]
    Window { started_at_ms: u64, until_ms: u64 },
    #[error("{gpu_millis} GPU-ms is more than {gpus} GPUs can run in {window_ms} ms")]
    TooMuchTime {
        gpu_millis: u64,
        gpus: u32,
        window_ms: u64,
    },
}

impl Receipt {
    /// The canonical encoding: [`MAGIC`], then each field in declaration order — text as a one-byte
    /// length and UTF-8 bytes, `u32`/`u64` big-endian.
    pub fn encode(&self) -> Result<Vec<u8>, ReceiptError> {
        self.check()?;
        let mut out = Vec::with_capacity(128);
        out.extend_from_slice(MAGIC);
        for (field, text) in [
            ("network", &self.network),
            ("node", &self.node),
            ("job", &self.job),
            ("assignment", &self.assignment),
        ] {
            let len = u8::try_from(text.len()).map_err(|_| ReceiptError::TooLong { field })?;
            out.push(len);
            out.extend_from_slice(text.as_bytes());
        }
        out.extend_from_slice(&self.sequence.to_be_bytes());
        out.extend_from_slice(&self.price_micros_per_gpu_hour.to_be_bytes());
        out.extend_from_slice(&self.gpus.to_be_bytes());
        out.extend_from_slice(&self.started_at_ms.to_be_bytes());
        out.extend_from_slice(&self.until_ms.to_be_bytes());
        out.extend_from_slice(&self.gpu_millis.to_be_bytes());
        Ok(out)
    }

    /// Reads a receipt from its canonical encoding; every byte must belong to it.
    pub fn decode(bytes: &[u8]) -> Result<Self, ReceiptError> {
        let mut reader = Reader { bytes };
        if reader.take(MAGIC.len(), "magic")? != MAGIC {
            return Err(ReceiptError::Magic);
        }
        let receipt = Self {
            network: reader.text("network")?,
            node: reader.text("node")?,
            job: reader.text("job")?,
            assignment: reader.text("assignment")?,
            sequence: reader.u64("sequence")?,
            price_micros_per_gpu_hour: reader.u64("price_micros_per_gpu_hour")?,
            gpus: u32::from_be_bytes(reader.array("gpus")?),
            started_at_ms: reader.u64("started_at_ms")?,
            until_ms: reader.u64("until_ms")?,
            gpu_millis: reader.u64("gpu_millis")?,
        };
        if !reader.bytes.is_empty() {
            return Err(ReceiptError::Trailing(reader.bytes.len()));
        }
        receipt.check()?;
        Ok(receipt)
    }

    /// What the receipt is worth: its GPU time at its price, rounded up to the micro-unit (the
    /// node is never paid less than a started micro-unit).
    pub fn amount_micros(&self) -> u64 {
        let amount = (u128::from(self.gpu_millis) * u128::from(self.price_micros_per_gpu_hour))
            .div_ceil(GPU_MILLIS_PER_HOUR);
        // gpu_millis ≤ gpus × window and both factors are u64: the quotient fits unless a price
        // is absurd; saturate rather than wrap.
        u64::try_from(amount).unwrap_or(u64::MAX)
    }

    /// Signs the canonical encoding with the node's key: ECDSA over SHA-256, low `s`, `r ‖ s` as
    /// lowercase hex (the same scheme as registration proofs).
    pub fn sign(&self, key: &SigningKey) -> Result<String, ReceiptError> {
        let signature: Signature = key.sign(&self.encode()?);
        Ok(hex::encode(signature.normalize_s().to_bytes()))
    }

    /// Whether `signature` is `public_key`'s (compressed SEC1, hex) signature of this receipt.
    /// High-`s` signatures are refused, so each receipt has one valid signature encoding.
    pub fn verify(&self, public_key: &str, signature: &str) -> bool {
        let (Ok(key), Ok(signature), Ok(message)) = (
            hex::decode(public_key),
            hex::decode(signature),
            self.encode(),
        ) else {
            return false;
        };
        let (Ok(key), Ok(signature)) = (
            VerifyingKey::from_sec1_bytes(&key),
            Signature::from_slice(&signature),
        ) else {
            return false;
        };
        key.verify(&message, &signature).is_ok()
    }

    /// The window is ordered and the GPU time fits in it.
    fn check(&self) -> Result<(), ReceiptError> {
        let Some(window_ms) = self.until_ms.checked_sub(self.started_at_ms) else {
            return Err(ReceiptError::Window {
                started_at_ms: self.started_at_ms,
                until_ms: self.until_ms,
            });
        };
        if u128::from(self.gpu_millis) > u128::from(self.gpus) * u128::from(window_ms) {
            return Err(ReceiptError::TooMuchTime {
                gpu_millis: self.gpu_millis,
                gpus: self.gpus,
                window_ms,
            });
        }
        Ok(())
    }
}

/// A cursor over the bytes still to decode.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], ReceiptError> {
        if self.bytes.len() < n {
            return Err(ReceiptError::Truncated { field });
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], ReceiptError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, field)?);
        Ok(out)
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, ReceiptError> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }

    fn text(&mut self, field: &'static str) -> Result<String, ReceiptError> {
        let len = self.take(1, field)?[0] as usize;
        let bytes = self.take(len, field)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| ReceiptError::NotUtf8 { field })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receipt() -> Receipt {
        Receipt {
            network: "agora-devnet-1".into(),
            node: "gn-a".into(),
            job: "job-1".into(),
            assignment: "asg-job-1-1-0".into(),
            sequence: 3,
            price_micros_per_gpu_hour: 2_490_000,
            gpus: 2,
            started_at_ms: 1_000,
            until_ms: 61_000,
            gpu_millis: 120_000,
        }
    }

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_slice(&[seed; 32]).unwrap()
    }

    fn public_key(key: &SigningKey) -> String {
        hex::encode(key.verifying_key().to_sec1_point(true).as_bytes())
    }

    #[test]
    fn the_encoding_is_byte_exact() {
        let bytes = receipt().encode().unwrap();
        let mut expected = b"agora-receipt-v1".to_vec();
        for text in ["agora-devnet-1", "gn-a", "job-1", "asg-job-1-1-0"] {
            expected.push(text.len() as u8);
            expected.extend_from_slice(text.as_bytes());
        }
        expected.extend_from_slice(&3u64.to_be_bytes());
        expected.extend_from_slice(&2_490_000u64.to_be_bytes());
        expected.extend_from_slice(&2u32.to_be_bytes());
        for n in [1_000u64, 61_000, 120_000] {
            expected.extend_from_slice(&n.to_be_bytes());
        }
        assert_eq!(bytes, expected);
        assert_eq!(
            bytes.len(),
            16 + 1 + 14 + 1 + 4 + 1 + 5 + 1 + 13 + 8 * 5 + 4
        );
    }

    #[test]
    fn the_documented_example_is_what_the_encoder_writes() {
        let doc = include_str!("../../docs/settlement.md");
        let dump = doc
            .split("```")
            .find(|block| block.contains("\"agora-receipt-v1\""))
            .expect("the hex dump in docs/settlement.md");
        let bytes: Vec<u8> = dump
            .lines()
            .flat_map(|line| {
                line.split("  ")
                    .next()
                    .unwrap_or_default()
                    .split_whitespace()
            })
            .map(|byte| u8::from_str_radix(byte, 16).expect("a hex byte"))
            .collect();
        assert_eq!(bytes, receipt().encode().unwrap());
    }

    #[test]
    fn decoding_inverts_encoding_and_refuses_anything_else() {
        let bytes = receipt().encode().unwrap();
        assert_eq!(Receipt::decode(&bytes).unwrap(), receipt());
        for cut in 0..bytes.len() {
            assert!(
                Receipt::decode(&bytes[..cut]).is_err(),
                "a receipt cut at {cut}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(Receipt::decode(&longer), Err(ReceiptError::Trailing(1)));
        let mut other = bytes;
        other[15] = b'2';
        assert_eq!(Receipt::decode(&other), Err(ReceiptError::Magic));
    }

    #[test]
    fn a_receipt_cannot_claim_more_time_than_its_gpus_had() {
        let mut greedy = receipt();
        greedy.gpu_millis = 2 * 60_000 + 1;
        assert!(matches!(
            greedy.encode(),
            Err(ReceiptError::TooMuchTime { .. })
        ));
        let mut backwards = receipt();
        backwards.until_ms = 999;
        assert!(matches!(
            backwards.encode(),
            Err(ReceiptError::Window { .. })
        ));
    }

    #[test]
    fn the_amount_follows_from_time_and_price_rounded_up() {
        // 120,000 GPU-ms = 1/30 GPU-hour at 2.49/h = 0.083 → 83,000 micro-units.
        assert_eq!(receipt().amount_micros(), 83_000);
        let mut one_ms = receipt();
        one_ms.gpu_millis = 1;
        assert_eq!(one_ms.amount_micros(), 1, "a started micro-unit is paid");
    }

    #[test]
    fn only_the_nodes_key_signs_a_receipt_and_any_change_breaks_the_signature() {
        let node = key(7);
        let signature = receipt().sign(&node).unwrap();
        assert!(receipt().verify(&public_key(&node), &signature));
        assert!(
            !receipt().verify(&public_key(&key(8)), &signature),
            "another key"
        );
        let variants = [
            Receipt {
                network: "agora-mainnet".into(),
                ..receipt()
            },
            Receipt {
                node: "gn-b".into(),
                ..receipt()
            },
            Receipt {
                sequence: 4,
                ..receipt()
            },
            Receipt {
                price_micros_per_gpu_hour: 2_500_000,
                ..receipt()
            },
            Receipt {
                gpu_millis: 119_999,
                ..receipt()
            },
            Receipt {
                until_ms: 61_001,
                ..receipt()
            },
        ];
        for changed in variants {
            assert!(
                !changed.verify(&public_key(&node), &signature),
                "{changed:?}"
            );
        }
        assert!(!receipt().verify("zz", &signature));
        assert!(!receipt().verify(&public_key(&node), "00"));
    }
}
