//! Validation of `ComputeJob` specs against the CRD's own schema, so the hub accepts exactly what
//! `kubectl apply` would: the structural OpenAPI schema (types, bounds, patterns, required fields,
//! unknown fields rejected as under kubectl's default `--validate=strict`) and then the CRD's CEL
//! rules (`x-kubernetes-validations`), evaluated in-process.

use kube::{CustomResourceExt, core::cel};
use serde_json::{Map, Value};

use crate::v1alpha1::{ComputeJob, ComputeJobSpec};

/// One problem with one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path from the object root, e.g. `spec.resources.workers`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Validates ComputeJob specs; build once and share (compiling the schema is not free).
pub struct SpecValidator {
    structural: jsonschema::Validator,
    cel_schema: Value,
    cel: cel::Validator,
}

impl std::fmt::Debug for SpecValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpecValidator").finish_non_exhaustive()
    }
}

impl Default for SpecValidator {
    fn default() -> Self {
        Self::new()
    }
}

impl SpecValidator {
    /// A validator for the `spec` of the generated `ComputeJob` CRD.
    pub fn new() -> Self {
        let spec_schema = spec_schema();
        let strict = strict_json_schema(&spec_schema);
        let structural = jsonschema::draft4::new(&strict).expect("the generated CRD schema is a valid JSON Schema");
        Self { structural, cel_schema: spec_schema, cel: cel::Validator::new() }
    }

    /// Checks a spec given as JSON and returns it typed, or every problem found.
    pub fn validate(&self, spec: &Value) -> Result<ComputeJobSpec, Vec<FieldError>> {
        let mut errors: Vec<FieldError> = self.structural.iter_errors(spec).map(|e| structural_error(&e)).collect();
        if errors.is_empty() {
            if let Err(cel_errors) = self.cel.validate(&self.cel_schema, spec, None) {
                errors.extend(cel_errors.into_vec().into_iter().map(|e| FieldError {
                    field: join_path("spec", e.field_path.trim_start_matches('.')),
                    message: e.message,
                }));
            }
        }
        if !errors.is_empty() {
            errors.sort_by(|a, b| a.field.cmp(&b.field));
            errors.dedup();
            return Err(errors);
        }
        serde_path_to_error::deserialize(spec).map_err(|e| {
            vec![FieldError { field: join_path("spec", &e.path().to_string()), message: e.inner().to_string() }]
        })
    }
}

/// The `openAPIV3Schema` of the ComputeJob CRD's `spec`.
pub fn spec_schema() -> Value {
    let crd = serde_json::to_value(ComputeJob::crd()).expect("CRDs serialize");
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"].clone()
}

/// Turns a structural CRD schema (OpenAPI 3.0 dialect) into a draft-4 JSON Schema with the API
/// server's strict semantics: objects with declared properties reject unknown fields, and
/// `nullable: true` admits null.
pub fn strict_json_schema(schema: &Value) -> Value {
    match schema {
        Value::Object(map) => {
            let mut out = Map::new();
            for (key, value) in map {
                let converted = match key.as_str() {
                    // Maps of sub-schemas: convert each sub-schema, not the map itself.
                    "properties" => Value::Object(
                        value
                            .as_object()
                            .map(|props| props.iter().map(|(k, v)| (k.clone(), strict_json_schema(v))).collect())
                            .unwrap_or_default(),
                    ),
                    // Enums and defaults are values, not schemas.
                    "enum" | "default" | "x-kubernetes-validations" => value.clone(),
                    _ => strict_json_schema(value),
                };
                out.insert(key.clone(), converted);
            }
            let preserves_unknown = map.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
            if map.contains_key("properties") && !map.contains_key("additionalProperties") && !preserves_unknown {
                out.insert("additionalProperties".into(), Value::Bool(false));
            }
            if map.get("nullable") == Some(&Value::Bool(true)) {
                if let Some(Value::String(ty)) = map.get("type") {
                    out.insert("type".into(), Value::Array(vec![Value::String(ty.clone()), "null".into()]));
                }
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(strict_json_schema).collect()),
        other => other.clone(),
    }
}

fn structural_error(e: &jsonschema::ValidationError<'_>) -> FieldError {
    let pointer = e.instance_path.as_str();
    let path: String = pointer.split('/').filter(|s| !s.is_empty()).collect::<Vec<_>>().join(".");
    let base = join_path("spec", &path);
    match &e.kind {
        jsonschema::error::ValidationErrorKind::AdditionalProperties { unexpected } => FieldError {
            field: join_path(&base, unexpected.first().map_or("", String::as_str)),
            message: format!("unknown field {}", quoted_list(unexpected)),
        },
        jsonschema::error::ValidationErrorKind::Required { property } => FieldError {
            field: join_path(&base, property.as_str().unwrap_or_default()),
            message: "is required".into(),
        },
        jsonschema::error::ValidationErrorKind::AnyOf { .. } if path.ends_with("workload") => {
            FieldError { field: base, message: "needs an image, a command or a builtin".into() }
        }
        _ => FieldError { field: base, message: e.to_string() },
    }
}

fn quoted_list(names: &[String]) -> String {
    names.iter().map(|n| format!("{n:?}")).collect::<Vec<_>>().join(", ")
}

fn join_path(base: &str, rest: &str) -> String {
    match (base.is_empty(), rest.is_empty()) {
        (_, true) => base.to_string(),
        (true, false) => rest.to_string(),
        (false, false) => format!("{base}.{rest}"),
    }
}
