//! The `verifiableMatmul` builtin's parameters: what the hub (and `kubectl apply`, through the same
//! schema and CEL rules) accepts and refuses; and the wire form of a workload result.

use crds::{
    agent::{ResultBackend, StatusReport, WorkloadResult},
    validate::SpecValidator,
};
use serde_json::{Value, json};

fn spec(builtin: Value) -> Value {
    json!({
        "kind": "Batch",
        "workload": {"builtin": builtin},
        "resources": {"workers": 1, "gpusPerWorker": 1},
        "pricing": {"maxPricePerGpuHour": "5.00"}
    })
}

/// The refusal of `builtin`: (field, message) of its first error.
fn refusal(builtin: Value) -> (String, String) {
    let errors = SpecValidator::new()
        .validate(&spec(builtin.clone()))
        .expect_err(&format!("{builtin} must be refused"));
    (errors[0].field.clone(), errors[0].message.clone())
}

#[test]
fn a_verifiable_matmul_is_accepted_with_its_capability() {
    let parsed = SpecValidator::new()
        .validate(&spec(
            json!({"verifiableMatmul": {"n": 4096, "chunkRows": 256, "seed": 42}}),
        ))
        .unwrap();
    let v = parsed
        .workload
        .builtin
        .as_ref()
        .unwrap()
        .verifiable_matmul
        .as_ref()
        .unwrap();
    assert_eq!((v.n, v.chunk_rows, v.seed), (4096, 256, 42));
    assert_eq!(parsed.workload.capability(), "builtin:verifiableMatmul");
    // The seed defaults to 0; the largest size with single-row chunks up to the chunk limit.
    for ok in [
        json!({"verifiableMatmul": {"n": 1, "chunkRows": 1}}),
        json!({"verifiableMatmul": {"n": 1024, "chunkRows": 1}}),
        json!({"verifiableMatmul": {"n": 16384, "chunkRows": 16}}),
        json!({"verifiableMatmul": {"n": 8, "chunkRows": 8, "seed": 9007199254740991u64}}),
    ] {
        assert!(
            SpecValidator::new().validate(&spec(ok.clone())).is_ok(),
            "{ok}"
        );
    }
}

#[test]
fn out_of_range_parameters_are_refused_naming_the_field() {
    let base = "spec.workload.builtin.verifiableMatmul";
    for (builtin, field, says) in [
        (
            json!({"verifiableMatmul": {"n": 0, "chunkRows": 1}}),
            "n",
            "",
        ),
        (
            json!({"verifiableMatmul": {"n": 16385, "chunkRows": 64}}),
            "n",
            "",
        ),
        (
            json!({"verifiableMatmul": {"n": 8, "chunkRows": 9}}),
            "chunkRows",
            "at most n",
        ),
        (
            json!({"verifiableMatmul": {"n": 8, "chunkRows": 0}}),
            "chunkRows",
            "",
        ),
        (
            json!({"verifiableMatmul": {"n": 1025, "chunkRows": 1}}),
            "chunkRows",
            "at most 1024 chunks",
        ),
        (
            json!({"verifiableMatmul": {"n": 8, "chunkRows": 8, "seed": 9007199254740992u64}}),
            "seed",
            "",
        ),
        (
            json!({"verifiableMatmul": {"n": 8, "chunkRows": 8, "rows": 1}}),
            "",
            "",
        ),
    ] {
        let (got_field, message) = refusal(builtin.clone());
        let want = if field.is_empty() {
            base.to_string()
        } else {
            format!("{base}.{field}")
        };
        assert!(
            got_field.starts_with(&want),
            "{builtin}: field {got_field}, want {want}"
        );
        assert!(message.contains(says), "{builtin}: {message}");
    }
    let (field, message) = refusal(json!({
        "sleep": {"durationSeconds": 5},
        "verifiableMatmul": {"n": 8, "chunkRows": 8}
    }));
    assert_eq!(field, "spec.workload.builtin");
    assert!(message.contains("more than one builtin"), "{message}");
}

fn result() -> WorkloadResult {
    WorkloadResult {
        backend: ResultBackend::Cuda,
        tflops: Some(40.0),
        output_digest: Some("0f".repeat(32)),
        chunk_commitments: vec!["a1".repeat(32); 3],
        signature: Some("5e".repeat(64)),
    }
}

#[test]
fn a_result_travels_in_camel_case() {
    let report: StatusReport = serde_json::from_value(json!({
        "seq": 3, "state": "Succeeded", "exitCode": 0,
        "result": {"backend": "cpu-reference", "tflops": 0.02}
    }))
    .unwrap();
    assert_eq!(
        report.result.as_ref().unwrap().backend,
        ResultBackend::CpuReference
    );
    assert_eq!(
        serde_json::to_value(result()).unwrap(),
        json!({
            "backend": "cuda", "tflops": 40.0,
            "outputDigest": "0f".repeat(32), "chunkCommitments": vec!["a1".repeat(32); 3],
            "signature": "5e".repeat(64)
        })
    );
    // Unknown fields are refused: a result is data the hub stores.
    assert!(serde_json::from_value::<WorkloadResult>(json!({"backend": "cuda", "x": 1})).is_err());
}

/// `chunks` asks for a partial recompute: accepted when sorted, distinct and in range; anything
/// else is refused naming `chunks`, with the reason.
#[test]
fn chunks_of_a_partial_recompute_are_checked() {
    let parsed = SpecValidator::new()
        .validate(&spec(
            json!({"verifiableMatmul": {"n": 64, "chunkRows": 16, "seed": 1, "chunks": [0, 3]}}),
        ))
        .unwrap();
    let v = parsed.workload.builtin.unwrap().verifiable_matmul.unwrap();
    assert_eq!(v.chunks, Some(vec![0, 3]));
    // Without `chunks`, the whole product, as before.
    let whole = SpecValidator::new()
        .validate(&spec(
            json!({"verifiableMatmul": {"n": 64, "chunkRows": 16}}),
        ))
        .unwrap();
    assert_eq!(
        whole
            .workload
            .builtin
            .unwrap()
            .verifiable_matmul
            .unwrap()
            .chunks,
        None
    );
    let field = "spec.workload.builtin.verifiableMatmul.chunks";
    for (chunks, says) in [
        // 64 rows in chunks of 16: chunks 0 to 3.
        (json!([1, 4]), "below the number of chunks"),
        (json!([2, 1]), "sorted"),
        (json!([1, 1]), "twice"),
        (json!([]), ""),
        (json!([-1]), ""),
    ] {
        let builtin = json!({"verifiableMatmul": {"n": 64, "chunkRows": 16, "chunks": chunks}});
        let (got, message) = refusal(builtin.clone());
        assert!(got.starts_with(field), "{builtin}: field {got}");
        assert!(message.contains(says), "{builtin}: {message}");
    }
}

#[test]
fn a_result_without_a_signature_still_parses() {
    let old: WorkloadResult = serde_json::from_value(json!({
        "backend": "cpu-reference", "outputDigest": "0f".repeat(32),
        "chunkCommitments": ["a1".repeat(32)]
    }))
    .unwrap();
    assert_eq!(old.signature, None);
}
