//! The OpenAPI document: the checked-in copy is current, every documented operation is routed,
//! every schema reference resolves, and the submission body is the CRD's own spec schema.

mod common;

use common::*;
use serde_json::Value;

/// The checked-in document, as `agora openapi` writes it (pretty JSON and a newline).
const CHECKED_IN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.json");

/// The JSON pointer of the first place where `a` and `b` differ, if they do.
fn first_difference(a: &Value, b: &Value, at: String) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => x
            .keys()
            .chain(y.keys().filter(|k| !x.contains_key(*k)))
            .find_map(|k| match (x.get(k), y.get(k)) {
                (Some(p), Some(q)) => first_difference(p, q, format!("{at}/{k}")),
                _ => Some(format!("{at}/{k}")),
            }),
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (p, q))| first_difference(p, q, format!("{at}/{i}"))),
        _ => (a != b).then_some(at),
    }
}

#[test]
fn the_checked_in_document_is_current() {
    let text = std::fs::read_to_string(CHECKED_IN).unwrap_or_else(|e| {
        panic!("reading {CHECKED_IN}: {e}; run `cargo run -- openapi > docs/openapi.json`")
    });
    let checked_in: Value =
        serde_json::from_str(&text).expect("docs/openapi.json is not valid JSON");
    // Compared as JSON values: key order and whitespace are not the document's content.
    if let Some(at) = first_difference(&checked_in, &api::openapi::document(), String::new()) {
        panic!(
            "docs/openapi.json is stale: run `cargo run -- openapi > docs/openapi.json` (first difference at {at:?})"
        );
    }
}

/// Every `$ref` in `value`.
fn refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(target)) = map.get("$ref") {
                out.push(target);
            }
            map.values().for_each(|v| refs(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

#[test]
fn every_reference_resolves_to_a_component_schema() {
    let doc = api::openapi::document();
    let schemas = doc["components"]["schemas"]
        .as_object()
        .expect("components.schemas");
    let mut found = Vec::new();
    refs(&doc, &mut found);
    assert!(
        found.len() >= 10,
        "the document should reference its schemas: {found:?}"
    );
    let broken: Vec<&&str> = found
        .iter()
        .filter(|r| {
            r.strip_prefix("#/components/schemas/")
                .map(|name| name.replace("~1", "/").replace("~0", "~"))
                .is_none_or(|name| !schemas.contains_key(&name))
        })
        .collect();
    assert!(
        broken.is_empty(),
        "references to no schema: {broken:?}; schemas: {:?}",
        schemas.keys().collect::<Vec<_>>()
    );
}

#[test]
fn a_submission_is_the_same_spec_schema_a_job_shows() {
    let doc = api::openapi::document();
    let job_spec = &doc["components"]["schemas"]["Job"]["properties"]["spec"]["$ref"];
    assert_eq!(
        job_spec, "#/components/schemas/ComputeJobSpec",
        "Job.spec: {doc:#}"
    );
    let content = &doc["paths"]["/v1/jobs"]["post"]["requestBody"]["content"];
    for media in ["application/json", "application/yaml"] {
        let forms = content[media]["schema"]["oneOf"]
            .as_array()
            .unwrap_or_else(|| panic!("submitJob {media}: a manifest or a spec: {content:#}"));
        let mut specs = Vec::new();
        for form in forms {
            refs(form, &mut specs);
        }
        assert_eq!(
            specs,
            [job_spec.as_str().unwrap(); 2],
            "submitJob {media}: both the manifest's spec and the bare spec are Job.spec's schema"
        );
    }
    assert!(
        doc["components"]["schemas"]["ComputeJobSpec"]["properties"]["resources"].is_object(),
        "ComputeJobSpec is the real spec schema"
    );
}

backend_tests! {
    async fn every_documented_operation_is_routed(store: Store) {
        let (app, _, _) = app(&store, "team-a").await;
        // The check can fail: a made-up route and a wrong method are recognised as such.
        let missing = send(&app, "GET", "/v1/nope", None, None, "").await;
        assert_eq!(missing.body["error"]["code"], "no_such_route", "{}", missing.text);
        let wrong = send(&app, "PUT", "/v1/jobs", None, None, "").await;
        assert_eq!(wrong.body["error"]["code"], "method_not_allowed", "{}", wrong.text);

        assert!(api::openapi::OPERATIONS.len() >= 10);
        for op in api::openapi::OPERATIONS {
            let path: String = op
                .path
                .split('/')
                .map(|s| if s.starts_with('{') && s.ends_with('}') { "x" } else { s })
                .collect::<Vec<_>>()
                .join("/");
            let method = op.method.to_ascii_uppercase();
            let reply = send(&app, &method, &path, None, Some("application/json"), "{}").await;
            let code = reply.body["error"]["code"].as_str().unwrap_or_default();
            assert!(
                !["no_such_route", "method_not_allowed"].contains(&code),
                "{} ({method} {}) is documented but not routed: {} {}",
                op.id, op.path, reply.status, reply.text
            );
        }
    }
}
