//! Version `v1alpha1` of the `agora.dev` API.

mod computejob;
mod gpunode;

pub use computejob::*;
pub use gpunode::*;
use schemars::{Schema, transform::transform_subschemas};
use serde_json::Value;

/// Rewrites the integer formats `schemars` derives for Rust's unsigned types (`uint32`, `uint64`, …)
/// into the OpenAPI 3.0 formats Kubernetes knows (`int32`, `int64`).
///
/// Since Kubernetes 1.34 the API server answers every CRD write that carries a format it does not
/// recognize with a warning (`Warning: unrecognized format "uint32"`), once per field, on every
/// `kubectl apply` and `helm upgrade`. The value range is kept exact: a `uint32` whose declared
/// maximum fits in 31 bits becomes `int32`; otherwise it becomes `int64` capped at `u32::MAX`, so the
/// API server still rejects what the Rust type could not hold. The `minimum: 0` that `schemars`
/// writes for unsigned types stays.
///
/// It runs as a container `transform` on the top-level spec and status types; `kube` generates CRD
/// schemas with every subschema inlined, so one pass there reaches all nested fields.
pub(crate) fn kubernetes_integer_formats(schema: &mut Schema) {
    if let Some(object) = schema.as_object_mut() {
        let rewritten = match object.get("format").and_then(Value::as_str) {
            Some("uint8" | "uint16" | "int8" | "int16") => Some("int32"),
            Some("uint32") => {
                let maximum = object.get("maximum").and_then(Value::as_f64);
                if maximum.is_some_and(|m| m <= f64::from(i32::MAX)) {
                    Some("int32")
                } else {
                    let cap = maximum.map_or(f64::from(u32::MAX), |m| m.min(f64::from(u32::MAX)));
                    object.insert("maximum".into(), cap.into());
                    Some("int64")
                }
            }
            // Values above i64::MAX cannot be stored by the API server anyway.
            Some("uint64") => Some("int64"),
            _ => None,
        };
        if let Some(format) = rewritten {
            object.insert("format".into(), format.into());
        }
    }
    transform_subschemas(&mut kubernetes_integer_formats, schema);
}
