//! The checked-in CRD manifests are what the Helm chart and `kubectl apply -f crds/` install, so they
//! must be exactly what the Rust types generate, and the generated schemas must be ones the API
//! server accepts as they are: structural, and without formats it warns about.

use std::{fs, path::Path};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use serde_json::Value;

use crds::v1alpha1::{ComputeJob, GpuNode};

const REGENERATE: &str = "run `cargo run -p crds --bin crdgen` and commit the result";

#[test]
fn checked_in_manifests_match_the_types() {
    let files = crds::manifests::files().expect("the CRDs serialize to YAML");
    let names: Vec<_> = files.iter().map(|(name, _)| *name).collect();
    assert_eq!(
        names,
        ["computejob.yaml", "gpunode.yaml"],
        "crdgen writes one file per CRD"
    );

    for (name, generated) in files {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(name);
        let checked_in = fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read crds/{name} ({e}); {REGENERATE}"));
        if checked_in != generated {
            let line = first_difference(&checked_in, &generated);
            panic!(
                "crds/{name} is out of date with the types in crds/src (first difference at line {line}); {REGENERATE}"
            );
        }
    }
}

#[test]
fn computejob_names_scope_and_columns() {
    let crd = ComputeJob::crd();
    assert_names(
        &crd,
        "computejobs.agora.dev",
        "ComputeJob",
        "computejobs",
        "cj",
        "Namespaced",
    );
    assert_eq!(
        columns(&crd),
        [
            "Phase",
            "Workers",
            "GPUs",
            "Price",
            "Nodes",
            "Cost",
            "Age",
            "Reason (wide)",
            "Attempts (wide)",
            "Job (wide)"
        ]
    );
}

#[test]
fn gpunode_names_scope_and_columns() {
    let crd = GpuNode::crd();
    assert_names(
        &crd,
        "gpunodes.agora.dev",
        "GpuNode",
        "gpunodes",
        "gn",
        "Cluster",
    );
    assert_eq!(
        columns(&crd),
        [
            "Region",
            "Model",
            "GPUs",
            "Free",
            "Price",
            "Ready",
            "Healthy",
            "Age",
            "TFLOPS (wide)",
            "Simulated (wide)",
            "Operator (wide)"
        ]
    );
}

#[test]
fn schemas_are_structural_and_use_only_formats_kubernetes_knows() {
    for crd in [ComputeJob::crd(), GpuNode::crd()] {
        let name = crd.metadata.name.clone().unwrap_or_default();
        let schema = serde_json::to_value(open_api_v3_schema(&crd)).expect("the schema serializes");
        let mut problems = Vec::new();
        check_structural(&schema, "", false, &mut problems);
        assert!(
            problems.is_empty(),
            "{name}: the API server would refuse or warn about this schema:\n{}",
            problems.join("\n")
        );
    }
}

fn assert_names(
    crd: &CustomResourceDefinition,
    name: &str,
    kind: &str,
    plural: &str,
    short_name: &str,
    scope: &str,
) {
    assert_eq!(crd.metadata.name.as_deref(), Some(name));
    assert_eq!(crd.spec.group, crds::GROUP);
    assert_eq!(crd.spec.names.kind, kind);
    assert_eq!(crd.spec.names.plural, plural);
    assert_eq!(
        crd.spec.names.short_names.as_deref(),
        Some(&[short_name.to_string()][..])
    );
    assert_eq!(
        crd.spec.names.categories.as_deref(),
        Some(&["agora".to_string()][..]),
        "`kubectl get agora`"
    );
    assert_eq!(crd.spec.scope, scope);
    let versions: Vec<_> = crd
        .spec
        .versions
        .iter()
        .map(|v| (v.name.as_str(), v.served, v.storage))
        .collect();
    assert_eq!(
        versions,
        [("v1alpha1", true, true)],
        "{name}: one served storage version"
    );
    let status = crd.spec.versions[0]
        .subresources
        .as_ref()
        .and_then(|s| s.status.as_ref());
    assert!(
        status.is_some(),
        "{name} needs the status subresource, or status writes would race spec writes"
    );
}

/// The `kubectl get` columns, those shown only with `-o wide` marked so.
fn columns(crd: &CustomResourceDefinition) -> Vec<String> {
    let columns = crd.spec.versions[0]
        .additional_printer_columns
        .as_deref()
        .unwrap_or_default();
    columns
        .iter()
        .map(|c| match c.priority {
            Some(p) if p > 0 => format!("{} (wide)", c.name),
            _ => c.name.clone(),
        })
        .collect()
}

fn open_api_v3_schema(
    crd: &CustomResourceDefinition,
) -> &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaProps {
    crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("a derived CRD has an openAPIV3Schema")
}

/// Formats the API server recognizes (k8s.io/apiextensions-apiserver, `validation/formats.go`);
/// since 1.34 any other format draws a warning on every write of the CRD.
const KNOWN_FORMATS: &[&str] = &[
    "int32",
    "int64",
    "float",
    "double",
    "byte",
    "password",
    "date",
    "date-time",
    "datetime",
    "duration",
    "uri",
    "email",
    "hostname",
    "ipv4",
    "ipv6",
    "cidr",
    "mac",
    "uuid",
    "uuid3",
    "uuid4",
    "uuid5",
    "bsonobjectid",
    "isbn",
    "isbn10",
    "isbn13",
    "creditcard",
    "ssn",
    "hexcolor",
    "rgbcolor",
];

/// Keywords a branch of `allOf`/`anyOf`/`oneOf`/`not` may not carry in a structural schema: the
/// shape of the object must be fully specified outside the junctors.
const SHAPE_KEYWORDS: &[&str] = &[
    "type",
    "properties",
    "items",
    "additionalProperties",
    "description",
    "default",
    "nullable",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-int-or-string",
    "x-kubernetes-embedded-resource",
];

/// A small version of the API server's structural-schema check, enough to catch what
/// `schemars` attributes can get wrong.
fn check_structural(node: &Value, at: &str, in_junctor: bool, problems: &mut Vec<String>) {
    let at_or_root = if at.is_empty() { "<root>" } else { at };
    let Some(object) = node.as_object() else {
        problems.push(format!("{at_or_root}: a schema must be an object"));
        return;
    };
    if in_junctor {
        for keyword in SHAPE_KEYWORDS.iter().filter(|k| object.contains_key(**k)) {
            problems.push(format!(
                "{at_or_root}: `{keyword}` inside allOf/anyOf/oneOf/not"
            ));
        }
    } else {
        let open = object.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true))
            || object.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
        if !object.contains_key("type") && !open {
            problems.push(format!("{at_or_root}: no `type`"));
        }
    }
    match object.get("additionalProperties") {
        Some(Value::Bool(false)) => {
            problems.push(format!("{at_or_root}: `additionalProperties: false`"))
        }
        Some(_) if object.contains_key("properties") => {
            problems.push(format!(
                "{at_or_root}: both `properties` and `additionalProperties`"
            ));
        }
        _ => {}
    }
    if object.get("uniqueItems") == Some(&Value::Bool(true)) {
        problems.push(format!(
            "{at_or_root}: `uniqueItems: true` (use x-kubernetes-list-type: set)"
        ));
    }
    if let Some(format) = object.get("format").and_then(Value::as_str)
        && !KNOWN_FORMATS.contains(&format)
    {
        problems.push(format!("{at_or_root}: unrecognized format {format:?}"));
    }
    for bound in ["exclusiveMinimum", "exclusiveMaximum"] {
        if object.get(bound).is_some_and(|v| !v.is_boolean()) {
            problems.push(format!(
                "{at_or_root}: `{bound}` must be a boolean in OpenAPI 3.0"
            ));
        }
    }
    for (name, child) in object
        .get("properties")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        check_structural(child, &format!("{at}.{name}"), in_junctor, problems);
    }
    if let Some(items) = object.get("items") {
        check_structural(items, &format!("{at}[]"), in_junctor, problems);
    }
    if let Some(values @ Value::Object(_)) = object.get("additionalProperties") {
        check_structural(values, &format!("{at}.*"), in_junctor, problems);
    }
    for junctor in ["allOf", "anyOf", "oneOf"] {
        for branch in object
            .get(junctor)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            check_structural(branch, at, true, problems);
        }
    }
    if let Some(branch) = object.get("not") {
        check_structural(branch, at, true, problems);
    }
}

fn first_difference(a: &str, b: &str) -> usize {
    let same = a.lines().zip(b.lines()).take_while(|(x, y)| x == y).count();
    same + 1
}
