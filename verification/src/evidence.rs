//! What a failed check records, and the compact string the settlement contract's
//! `Slash { operator, reason, evidence }` carries (1 to 1024 bytes, docs/settlement.md).
//!
//! The hub keeps the full [`Evidence`] (JSON, served through its API) and posts
//! [`Evidence::to_chain_string`] on chain: a reference anyone can check against the hub's record and
//! re-derive (the sample from the seed, the commitment by recomputing the chunk).
//!
//! # The chain string (version 1)
//!
//! `agora-evidence/v1` followed by space-separated `key=value` pairs in this fixed order, each
//! present only when the evidence has it:
//!
//! `kind job asg node op chunk claimed recomputed tie seed verifier verifier_op tie_node wsig vsig
//! row osig`
//!
//! (`asg` the assignment, `op` the worker's operator, `tie` the tie-breaker's commitment, `seed`
//! the sample seed, `wsig`/`vsig` the worker's and the verifier's result signatures, `row` the row
//! a Freivalds check failed at, `osig` the worker's signature of its opening.) Values are
//! written with every byte outside printable ASCII (`!`…`~`), and `%`, as `%XX` (uppercase hex),
//! so a value never contains a space and the string is plain ASCII.
//!
//! **When it would exceed 1024 bytes** (long ids, DER signatures), the string instead carries
//! `kind`, then `full=` the SHA-256 (hex) of the evidence's compact JSON ([`Evidence::to_json`], the
//! bytes the hub stores and serves), then every other pair, in the same order, that still fits —
//! a pair that does not fit is left out and later, shorter ones are still tried. `full` binds the
//! on-chain string to the complete record; its presence says fields were left out.

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// The contract's bound on `Slash.evidence`, in bytes.
pub const MAX_CHAIN_EVIDENCE: usize = 1024;

/// The first word of every chain string: the format and its version.
pub const CHAIN_PREFIX: &str = "agora-evidence/v1";

/// Which check failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    /// A sampled chunk's commitment disagreed with a verifier's recomputation.
    SpotCheck,
    /// Redundant mode: the output digests of two placements disagreed.
    Redundant,
    /// The node's measured benchmark is far below the GPU model it claims.
    Benchmark,
    /// The worker, asked to open a sampled chunk, showed rows that do not hash to the commitment
    /// it had reported: `recomputed` is the commitment of the rows it opened.
    Opening,
    /// The worker opened rows that match its commitment but are not rows of A·B: Freivalds'
    /// check failed at `row`; `recomputed` says `row=… cr=… abr=… challenge=…`, C's row and A's
    /// row times the challenge vector (`verification::matmul::check_opening`).
    Freivalds,
}

impl CheckKind {
    /// The name used in JSON and in the chain string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SpotCheck => "spot_check",
            Self::Redundant => "redundant",
            Self::Benchmark => "benchmark",
            Self::Opening => "opening",
            Self::Freivalds => "freivalds",
        }
    }
}

/// The record of a failed check. JSON field names are camelCase, as in the rest of the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Evidence {
    /// Which check failed.
    pub kind: CheckKind,
    /// The job.
    pub job: String,
    /// The worker's assignment whose output failed.
    pub assignment: String,
    /// The worker's node.
    pub node: String,
    /// The worker node's operator (the chain address the slash is for).
    pub operator: String,
    /// Spot check: the chunk whose commitment was contradicted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk: Option<u32>,
    /// Spot check: the seed the sample was drawn from, 64 hex digits
    /// ([`crate::sample::seed_from_hex`] re-derives the sample).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_seed: Option<String>,
    /// What the worker reported, hex: the chunk's commitment (spot check), the output digest
    /// (redundant). Benchmark: the GPU model it claims.
    pub claimed: String,
    /// What the verifier computed, hex: the chunk's commitment or the output digest. Benchmark:
    /// the measured FP32 TFLOPS, as a decimal.
    pub recomputed: String,
    /// The verifier's node (spot check), or the second placement's (redundant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verifier_node: Option<String>,
    /// The verifier node's operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verifier_operator: Option<String>,
    /// The tie-breaker's commitment or digest, hex, when a tie-breaker decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tie_breaker: Option<String>,
    /// The tie-breaker's node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tie_breaker_node: Option<String>,
    /// The worker's signature of its result, hex: proof that it reported `claimed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_signature: Option<String>,
    /// The verifier's signature of its recomputation, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verifier_signature: Option<String>,
    /// Freivalds: the first row of C whose check failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row: Option<u32>,
    /// Opening and Freivalds: the worker's signature of the rows it opened, hex
    /// (`crds::agent::opening_message`): proof that it showed them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opening_signature: Option<String>,
}

/// Why evidence is not well formed; names the JSON field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvidenceError {
    /// A field is missing, empty or malformed.
    #[error("{field}: {problem}")]
    Field {
        /// The JSON field name.
        field: &'static str,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// A chain string that is not `agora-evidence/v1 key=value …`.
    #[error("evidence string: {0}")]
    ChainString(String),
}

impl Evidence {
    /// Checks what the chain string and an auditor rely on: identities present, digests as
    /// 64 hex digits where the kind has digests, the two sides actually differing, a spot check
    /// naming its chunk and seed, signatures as hex.
    pub fn check(&self) -> Result<(), EvidenceError> {
        let field = |field, problem| Err(EvidenceError::Field { field, problem });
        for (name, value) in [
            ("job", &self.job),
            ("assignment", &self.assignment),
            ("node", &self.node),
            ("operator", &self.operator),
            ("claimed", &self.claimed),
            ("recomputed", &self.recomputed),
        ] {
            if value.trim().is_empty() {
                return field(name, "must not be empty");
            }
        }
        if self.claimed == self.recomputed {
            return field("recomputed", "equals claimed: nothing failed");
        }
        // Benchmark and Freivalds evidence states its finding in words and numbers.
        let recomputed_is_digest =
            !matches!(self.kind, CheckKind::Benchmark | CheckKind::Freivalds);
        if self.kind != CheckKind::Benchmark {
            for (name, value) in [
                ("claimed", Some(&self.claimed)),
                (
                    "recomputed",
                    recomputed_is_digest.then_some(&self.recomputed),
                ),
                ("tieBreaker", self.tie_breaker.as_ref()),
            ] {
                if value.is_some_and(|v| !is_digest_hex(v)) {
                    return field(name, "must be 64 lowercase hex digits");
                }
            }
        }
        if matches!(
            self.kind,
            CheckKind::SpotCheck | CheckKind::Opening | CheckKind::Freivalds
        ) {
            if self.chunk.is_none() {
                return field("chunk", "a spot check names its chunk");
            }
            if !self.sample_seed.as_deref().is_some_and(is_digest_hex) {
                return field("sampleSeed", "a spot check records its 64-hex-digit seed");
            }
        }
        for (name, value) in [
            ("workerSignature", &self.worker_signature),
            ("verifierSignature", &self.verifier_signature),
            ("openingSignature", &self.opening_signature),
        ] {
            if value
                .as_deref()
                .is_some_and(|v| v.is_empty() || hex::decode(v).is_err())
            {
                return field(name, "must be hex");
            }
        }
        Ok(())
    }

    /// The compact JSON the hub stores and serves; `full=` in a shortened chain string is its
    /// SHA-256.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("strings and integers always serialize")
    }

    /// The `Slash.evidence` string, at most [`MAX_CHAIN_EVIDENCE`] bytes (module docs).
    pub fn to_chain_string(&self) -> String {
        let chunk = self.chunk.map(|c| c.to_string());
        let optional = |v: &Option<String>| v.as_deref().map(str::to_owned);
        let pairs: Vec<(&str, Option<String>)> = vec![
            ("job", Some(self.job.clone())),
            ("asg", Some(self.assignment.clone())),
            ("node", Some(self.node.clone())),
            ("op", Some(self.operator.clone())),
            ("chunk", chunk),
            ("claimed", Some(self.claimed.clone())),
            ("recomputed", Some(self.recomputed.clone())),
            ("tie", optional(&self.tie_breaker)),
            ("seed", optional(&self.sample_seed)),
            ("verifier", optional(&self.verifier_node)),
            ("verifier_op", optional(&self.verifier_operator)),
            ("tie_node", optional(&self.tie_breaker_node)),
            ("wsig", optional(&self.worker_signature)),
            ("vsig", optional(&self.verifier_signature)),
            ("row", self.row.map(|r| r.to_string())),
            ("osig", optional(&self.opening_signature)),
        ];
        let pairs: Vec<String> = pairs
            .into_iter()
            .filter_map(|(key, value)| value.map(|v| format!(" {key}={}", escape(&v))))
            .collect();
        let head = format!("{CHAIN_PREFIX} kind={}", self.kind.as_str());
        let whole: usize = head.len() + pairs.iter().map(String::len).sum::<usize>();
        if whole <= MAX_CHAIN_EVIDENCE {
            return head + &pairs.concat();
        }
        let full = hex::encode(Sha256::digest(self.to_json().as_bytes()));
        let mut out = format!("{head} full={full}");
        for pair in pairs {
            if out.len() + pair.len() <= MAX_CHAIN_EVIDENCE {
                out.push_str(&pair);
            }
        }
        out
    }
}

/// Reads a chain string back into its `(key, value)` pairs, values unescaped: for auditors and the
/// hub's tests.
pub fn parse_chain_string(text: &str) -> Result<Vec<(String, String)>, EvidenceError> {
    let mut words = text.split(' ');
    if words.next() != Some(CHAIN_PREFIX) {
        return Err(EvidenceError::ChainString(format!(
            "does not start with {CHAIN_PREFIX}"
        )));
    }
    words
        .map(|word| {
            let (key, value) = word
                .split_once('=')
                .ok_or_else(|| EvidenceError::ChainString(format!("{word:?} is not key=value")))?;
            Ok((key.to_owned(), unescape(value)?))
        })
        .collect()
}

fn is_digest_hex(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Every byte outside `!`…`~`, and `%`, as `%XX`.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if (b'!'..=b'~').contains(&byte) && byte != b'%' {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn unescape(value: &str) -> Result<String, EvidenceError> {
    let bad = || EvidenceError::ChainString(format!("bad escape in {value:?}"));
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let pair = value.get(i + 1..i + 3).ok_or_else(bad)?;
            out.push(u8::from_str_radix(pair, 16).map_err(|_| bad())?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spot_check() -> Evidence {
        Evidence {
            kind: CheckKind::SpotCheck,
            job: "job-1767225600000-a1b2c3".into(),
            assignment: "job-1767225600000-a1b2c3-a1-r0".into(),
            node: "gn-sim-0".into(),
            operator: "agora1qypqxpq9qcrsszg2pvxq6rs0zqg3yyc5lzv7xu".into(),
            chunk: Some(17),
            sample_seed: Some("5e".repeat(32)),
            claimed: "aa".repeat(32),
            recomputed: "bb".repeat(32),
            verifier_node: Some("gn-sim-1".into()),
            verifier_operator: Some("agora1zg69v7yszg69v7yszg69v7yszg69v7ys8xjsmv".into()),
            tie_breaker: Some("bb".repeat(32)),
            tie_breaker_node: Some("gn-sim-2".into()),
            worker_signature: Some("11".repeat(64)),
            verifier_signature: Some("22".repeat(64)),
            row: None,
            opening_signature: None,
        }
    }

    #[test]
    fn a_typical_spot_check_fits_whole() {
        let evidence = spot_check();
        evidence.check().unwrap();
        let text = evidence.to_chain_string();
        assert!(text.len() <= MAX_CHAIN_EVIDENCE, "{} bytes", text.len());
        assert!(!text.contains("full="));
        let pairs = parse_chain_string(&text).unwrap();
        let get = |key: &str| {
            pairs
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("kind"), Some("spot_check"));
        assert_eq!(get("chunk"), Some("17"));
        assert_eq!(get("claimed"), Some("aa".repeat(32).as_str()));
        assert_eq!(get("recomputed"), Some("bb".repeat(32).as_str()));
        assert_eq!(get("tie"), Some("bb".repeat(32).as_str()));
        assert_eq!(get("wsig"), Some("11".repeat(64).as_str()));
        assert_eq!(get("vsig"), Some("22".repeat(64).as_str()));
        let keys: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "kind",
                "job",
                "asg",
                "node",
                "op",
                "chunk",
                "claimed",
                "recomputed",
                "tie",
                "seed",
                "verifier",
                "verifier_op",
                "tie_node",
                "wsig",
                "vsig"
            ]
        );
    }

    /// Exactly 1024 bytes goes whole; one byte more switches to the hashed form, which still fits,
    /// binds the full JSON and keeps the identities.
    #[test]
    fn the_limit_is_exact() {
        let mut evidence = spot_check();
        let base = evidence.to_chain_string().len();
        evidence
            .job
            .push_str(&"x".repeat(MAX_CHAIN_EVIDENCE - base));
        let at_limit = evidence.to_chain_string();
        assert_eq!(at_limit.len(), MAX_CHAIN_EVIDENCE);
        assert!(!at_limit.contains("full="));

        evidence.job.push('x');
        let over = evidence.to_chain_string();
        assert!(over.len() <= MAX_CHAIN_EVIDENCE, "{} bytes", over.len());
        let pairs = parse_chain_string(&over).unwrap();
        let full = hex::encode(Sha256::digest(evidence.to_json().as_bytes()));
        assert_eq!(pairs[0], ("kind".into(), "spot_check".into()));
        assert_eq!(pairs[1], ("full".into(), full));
        // The long job id still fits here; the signatures at the end are what gives way.
        for key in ["job", "asg", "node", "op", "chunk", "claimed", "recomputed"] {
            assert!(pairs.iter().any(|(k, _)| k == key), "{key} left out");
        }
        assert!(!pairs.iter().any(|(k, _)| k == "vsig"));
    }

    #[test]
    fn a_huge_field_is_left_out_but_the_rest_kept() {
        let mut evidence = spot_check();
        evidence.job = "j".repeat(10_000);
        let text = evidence.to_chain_string();
        assert!(text.len() <= MAX_CHAIN_EVIDENCE);
        let pairs = parse_chain_string(&text).unwrap();
        assert!(!pairs.iter().any(|(k, _)| k == "job"));
        for key in [
            "full",
            "node",
            "op",
            "chunk",
            "claimed",
            "recomputed",
            "vsig",
        ] {
            assert!(pairs.iter().any(|(k, _)| k == key), "{key} left out");
        }
    }

    #[test]
    fn values_are_escaped_to_plain_ascii_and_read_back() {
        let mut evidence = spot_check();
        evidence.job = "a job% with spaces=and ünïcode".into();
        let text = evidence.to_chain_string();
        assert!(text.is_ascii());
        assert!(text.contains("job=a%20job%25%20with%20spaces=and%20%C3%BCn%C3%AFcode"));
        let pairs = parse_chain_string(&text).unwrap();
        assert_eq!(pairs[1], ("job".into(), evidence.job.clone()));
        assert!(parse_chain_string("agora-evidence/v2 kind=x").is_err());
        assert!(parse_chain_string("agora-evidence/v1 kind").is_err());
        assert!(parse_chain_string("agora-evidence/v1 job=%G1").is_err());
        assert!(parse_chain_string("agora-evidence/v1 job=%2").is_err());
    }

    #[test]
    fn the_json_round_trips_with_camel_case_names() {
        let evidence = spot_check();
        let json: serde_json::Value = serde_json::from_str(&evidence.to_json()).unwrap();
        assert_eq!(json["kind"], "spot_check");
        assert_eq!(json["sampleSeed"], "5e".repeat(32));
        assert_eq!(json["tieBreakerNode"], "gn-sim-2");
        let back: Evidence = serde_json::from_value(json).unwrap();
        assert_eq!(back, evidence);
        // A redundant check has no chunk or seed, and they are left out of the JSON.
        let redundant = Evidence {
            kind: CheckKind::Redundant,
            chunk: None,
            sample_seed: None,
            ..spot_check()
        };
        redundant.check().unwrap();
        let json: serde_json::Value = serde_json::from_str(&redundant.to_json()).unwrap();
        assert!(json.get("chunk").is_none() && json.get("sampleSeed").is_none());
        assert!(!redundant.to_chain_string().contains("chunk="));
    }

    #[test]
    fn malformed_evidence_names_the_field() {
        let fails = |change: fn(&mut Evidence), field: &str| {
            let mut evidence = spot_check();
            change(&mut evidence);
            let error = evidence.check().unwrap_err();
            assert!(error.to_string().starts_with(field), "{field}: {error}");
        };
        fails(|e| e.job.clear(), "job");
        fails(|e| e.operator = " ".into(), "operator");
        fails(|e| e.claimed = "AA".repeat(32), "claimed");
        fails(|e| e.recomputed = e.claimed.clone(), "recomputed");
        fails(|e| e.tie_breaker = Some("zz".into()), "tieBreaker");
        fails(|e| e.chunk = None, "chunk");
        fails(|e| e.sample_seed = Some("00".into()), "sampleSeed");
        fails(
            |e| e.worker_signature = Some("xyz".into()),
            "workerSignature",
        );
        fails(
            |e| e.verifier_signature = Some(String::new()),
            "verifierSignature",
        );
        // Benchmark evidence is a model and a figure, not digests.
        let benchmark = Evidence {
            kind: CheckKind::Benchmark,
            chunk: None,
            sample_seed: None,
            claimed: "H100-80GB".into(),
            recomputed: "3.1".into(),
            verifier_node: None,
            verifier_operator: None,
            tie_breaker: None,
            tie_breaker_node: None,
            verifier_signature: None,
            ..spot_check()
        };
        benchmark.check().unwrap();
        assert!(
            benchmark
                .to_chain_string()
                .starts_with("agora-evidence/v1 kind=benchmark job=")
        );
    }

    /// Evidence from an opening names its chunk and seed like a spot check, has no verifier,
    /// and a Freivalds failure states its finding in numbers, not a digest.
    #[test]
    fn opening_and_freivalds_evidence() {
        let opening = Evidence {
            kind: CheckKind::Opening,
            verifier_node: None,
            verifier_operator: None,
            tie_breaker: None,
            tie_breaker_node: None,
            verifier_signature: None,
            opening_signature: Some("33".repeat(64)),
            ..spot_check()
        };
        opening.check().unwrap();
        let text = opening.to_chain_string();
        assert!(
            text.starts_with("agora-evidence/v1 kind=opening job="),
            "{text}"
        );
        assert!(
            text.ends_with(&format!(" osig={}", "33".repeat(64))),
            "{text}"
        );
        let freivalds = Evidence {
            kind: CheckKind::Freivalds,
            recomputed: "row=34 cr=5 abr=6 challenge=00000000000000ff".into(),
            claimed: "aa".repeat(32),
            row: Some(34),
            ..opening.clone()
        };
        freivalds.check().unwrap();
        let pairs = parse_chain_string(&freivalds.to_chain_string()).unwrap();
        assert!(pairs.contains(&("row".into(), "34".into())), "{pairs:?}");
        assert!(
            pairs.contains(&(
                "recomputed".into(),
                "row=34 cr=5 abr=6 challenge=00000000000000ff".into()
            )),
            "{pairs:?}"
        );
        let mut unnamed = opening.clone();
        unnamed.chunk = None;
        assert!(
            unnamed
                .check()
                .unwrap_err()
                .to_string()
                .starts_with("chunk")
        );
        let mut bad = opening;
        bad.opening_signature = Some("nope".into());
        assert!(
            bad.check()
                .unwrap_err()
                .to_string()
                .starts_with("openingSignature")
        );
    }
}
