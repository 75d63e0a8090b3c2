//! Validation of `ComputeJob` specs against the CRD's own schema, so the hub accepts exactly what
//! `kubectl apply` would: the structural OpenAPI schema (types, bounds, patterns, required fields,
//! unknown fields rejected as under kubectl's default `--validate=strict`) and then the CRD's CEL
//! rules (`x-kubernetes-validations`), evaluated in-process.

use kube::{CustomResourceExt, core::cel};
use serde_json::{Map, Value};

use crate::{
    money::POSITIVE_PRICE_PATTERN,
    v1alpha1::{ComputeJob, ComputeJobSpec},
};

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
    cel_schema: cel::CompiledSchema,
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
        let structural = compile_structural(&strict_json_schema(&spec_schema))
            .expect("the generated CRD schema is a valid JSON Schema");
        Self {
            structural,
            cel_schema: cel::compile_schema(&spec_schema),
            cel: cel::Validator::new(),
        }
    }

    /// Checks a spec given as JSON and returns it typed, or every problem found.
    pub fn validate(&self, spec: &Value) -> Result<ComputeJobSpec, Vec<FieldError>> {
        // A null member means "not set" (every nullable field is an `Option`): drop them first, so
        // `{"image": null}` cannot satisfy "needs an image" and CEL's `has()` sees what serde will.
        let spec = &without_nulls(spec);
        let mut errors: Vec<FieldError> = self
            .structural
            .iter_errors(spec)
            .map(|e| structural_error(spec, &e))
            .collect();
        // Like the API server, CEL only sees objects whose shape is already known to be right, so
        // rules never fail on a missing or mistyped field instead of reporting the real mistake.
        if errors.is_empty()
            && let Err(cel_errors) = self.cel.validate_compiled(&self.cel_schema, spec, None)
        {
            errors.extend(cel_errors.into_vec().into_iter().map(|e| FieldError {
                field: cel_field(&e.field_path),
                message: e.message,
            }));
        }
        if !errors.is_empty() {
            errors.sort_by(|a, b| a.field.cmp(&b.field));
            errors.dedup();
            return Err(errors);
        }
        serde_path_to_error::deserialize(spec).map_err(|e| {
            // serde_path_to_error writes the empty path as ".".
            let path = e.path().to_string();
            vec![FieldError {
                field: join_path("spec", path.trim_start_matches('.')),
                message: e.inner().to_string(),
            }]
        })
    }
}

/// Compiles a schema made by [`strict_json_schema`] as draft 4, the JSON Schema dialect OpenAPI 3.0
/// derives from (boolean `exclusiveMinimum`), with the `regex` crate as pattern engine: like RE2,
/// which the API server uses, it has no look-around or back-references, so a pattern the API server
/// would refuse fails here too instead of silently meaning something else.
pub fn compile_structural(
    schema: &Value,
) -> Result<jsonschema::Validator, Box<jsonschema::ValidationError<'static>>> {
    jsonschema::draft4::options()
        .with_pattern_options(jsonschema::PatternOptions::regex())
        .build(schema)
        .map_err(Box::new)
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
                            .map(|props| {
                                props
                                    .iter()
                                    .map(|(k, v)| (k.clone(), strict_json_schema(v)))
                                    .collect()
                            })
                            .unwrap_or_default(),
                    ),
                    // Enums and defaults are values, not schemas.
                    "enum" | "default" | "x-kubernetes-validations" => value.clone(),
                    _ => strict_json_schema(value),
                };
                out.insert(key.clone(), converted);
            }
            let preserves_unknown =
                map.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
            if map.contains_key("properties")
                && !map.contains_key("additionalProperties")
                && !preserves_unknown
            {
                out.insert("additionalProperties".into(), Value::Bool(false));
            }
            // The API server refuses repeats in a `set` list; draft 4 says it with `uniqueItems`
            // (which a structural CRD schema itself may not use).
            if map.get("x-kubernetes-list-type").and_then(Value::as_str) == Some("set") {
                out.insert("uniqueItems".into(), Value::Bool(true));
            }
            if map.get("nullable") == Some(&Value::Bool(true))
                && let Some(Value::String(ty)) = map.get("type")
            {
                out.insert(
                    "type".into(),
                    Value::Array(vec![Value::String(ty.clone()), "null".into()]),
                );
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(strict_json_schema).collect()),
        other => other.clone(),
    }
}

/// A copy of `value` without object members that are `null`.
///
/// Every nullable field of the spec is an `Option` that treats `null` as absent, and JSON clients
/// commonly send `null` for unset fields; a `required` check or CEL's `has()` would report such a
/// member present although serde reads it as unset.
fn without_nulls(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

/// Maps the `field_path` kube-cel reports for a failed rule to a path from the object root.
///
/// kube-cel appends a rule's `fieldPath` (which starts with a dot) to the path of the node the rule
/// is declared on, and that path is relative to the schema it was given, here the spec's. So a
/// rule on the spec itself yields `.placement.dataLocality`, a rule on `verification` with
/// `fieldPath: .sampleRate` yields `verification.sampleRate`, a rule without `fieldPath` yields
/// the node's path (`workload`, `placement.dataLocality`, or `""` for the spec), and list items
/// appear as `env[0]`.
fn cel_field(path: &str) -> String {
    join_path("spec", path.trim_start_matches('.'))
}

fn structural_error(spec: &Value, e: &jsonschema::ValidationError<'_>) -> FieldError {
    use jsonschema::error::ValidationErrorKind as Kind;
    let base = instance_field(spec, &e.instance_path);
    match &e.kind {
        Kind::AdditionalProperties { unexpected } => FieldError {
            field: join_path(&base, unexpected.first().map_or("", String::as_str)),
            message: format!("unknown field {}", quoted_list(unexpected)),
        },
        Kind::Required { property } => FieldError {
            field: join_path(&base, property.as_str().unwrap_or_default()),
            message: "is required".into(),
        },
        Kind::AnyOf { .. } if base == "spec.workload" => FieldError {
            field: base,
            message: "needs an image, a command or a builtin".into(),
        },
        Kind::MaxProperties { .. } if base == "spec.workload.builtin" => FieldError {
            field: base,
            message: "names more than one builtin workload; choose one".into(),
        },
        Kind::Pattern { pattern } if pattern == POSITIVE_PRICE_PATTERN => FieldError {
            field: base,
            message: format!(
                "must be a positive decimal string such as \"2.50\", got {}",
                e.instance
            ),
        },
        Kind::Pattern { .. } if base == "spec.maxRuntime" => FieldError {
            field: base,
            message: format!(
                "must be a duration such as \"90m\" or \"6h\", got {}",
                e.instance
            ),
        },
        Kind::Minimum { limit } => FieldError {
            field: base,
            message: format!("must be at least {}, got {}", number(limit), e.instance),
        },
        Kind::Maximum { limit } => FieldError {
            field: base,
            message: format!("must be at most {}, got {}", number(limit), e.instance),
        },
        Kind::ExclusiveMinimum { limit } => FieldError {
            field: base,
            message: format!("must be greater than {}, got {}", number(limit), e.instance),
        },
        Kind::ExclusiveMaximum { limit } => FieldError {
            field: base,
            message: format!("must be less than {}, got {}", number(limit), e.instance),
        },
        Kind::UniqueItems => FieldError {
            field: base,
            message: format!("must not list a value twice, got {}", e.instance),
        },
        Kind::Enum { options } => FieldError {
            field: base,
            message: format!("must be one of {options}, got {}", e.instance),
        },
        _ => FieldError {
            field: base,
            message: e.to_string(),
        },
    }
}

/// A schema bound as people write it: `1`, not the `1.0` the generated schema stores.
fn number(limit: &Value) -> String {
    match limit.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
        _ => limit.to_string(),
    }
}

/// The dotted path (`spec.workload.env[0].name`) of the value at a JSON pointer into the spec:
/// the notation of the API server's field errors, and the one kube-cel uses for CEL errors.
fn instance_field(spec: &Value, location: &jsonschema::paths::Location) -> String {
    use jsonschema::paths::LocationSegment;
    let mut field = String::from("spec");
    let mut current = Some(spec);
    for segment in location {
        match segment {
            // A pointer segment of digits is an index only where the value there is a list.
            LocationSegment::Index(index) if current.is_some_and(Value::is_array) => {
                field.push_str(&format!("[{index}]"));
                current = current.and_then(|v| v.get(index));
            }
            LocationSegment::Index(index) => {
                let key = index.to_string();
                field = join_path(&field, &key);
                current = current.and_then(|v| v.get(&key));
            }
            LocationSegment::Property(key) => {
                field = join_path(&field, &key);
                current = current.and_then(|v| v.get(key.as_ref()));
            }
        }
    }
    field
}

fn quoted_list(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("{n:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn join_path(base: &str, rest: &str) -> String {
    match (base.is_empty(), rest.is_empty()) {
        (_, true) => base.to_string(),
        (true, false) => rest.to_string(),
        (false, false) if rest.starts_with('[') => format!("{base}{rest}"),
        (false, false) => format!("{base}.{rest}"),
    }
}

#[cfg(test)]
mod tests {
    use kube::core::cel::cel::{
        Program,
        common::ast::{Expr, IdedExpr},
    };
    use serde_json::json;

    use super::*;
    use crate::v1alpha1::GpuNode;

    fn accepts(schema: &Value, instance: Value) -> bool {
        compile_structural(&strict_json_schema(schema))
            .expect("schema compiles")
            .is_valid(&instance)
    }

    #[test]
    fn nullable_admits_null_and_nothing_else_does() {
        let schema = json!({
            "type": "object",
            "properties": {
                "maybe": {"type": "string", "nullable": true},
                "always": {"type": "string"}
            }
        });
        assert!(
            accepts(&schema, json!({"maybe": null})),
            "a nullable field must accept null"
        );
        assert!(
            accepts(&schema, json!({"maybe": "x"})),
            "a nullable field must still accept its type"
        );
        assert!(
            !accepts(&schema, json!({"maybe": 1})),
            "nullable must not widen the type beyond null"
        );
        assert!(
            !accepts(&schema, json!({"always": null})),
            "a field without nullable must reject null"
        );
    }

    #[test]
    fn objects_with_properties_reject_unknown_fields_at_every_depth() {
        let schema = json!({
            "type": "object",
            "properties": {
                "nested": {"type": "object", "properties": {"a": {"type": "integer"}}},
                "list": {"type": "array", "items": {"type": "object", "properties": {"b": {"type": "integer"}}}}
            }
        });
        let strict = strict_json_schema(&schema);
        assert_eq!(
            strict["additionalProperties"],
            json!(false),
            "root: {strict:#}"
        );
        assert_eq!(
            strict["properties"]["nested"]["additionalProperties"],
            json!(false),
            "nested: {strict:#}"
        );
        assert!(accepts(
            &schema,
            json!({"nested": {"a": 1}, "list": [{"b": 2}]})
        ));
        assert!(
            !accepts(&schema, json!({"typo": 1})),
            "unknown field at the root"
        );
        assert!(
            !accepts(&schema, json!({"nested": {"a": 1, "c": 3}})),
            "unknown field in a nested object"
        );
        assert!(
            !accepts(&schema, json!({"list": [{"b": 2, "c": 3}]})),
            "unknown field in a list item"
        );
    }

    #[test]
    fn maps_keep_their_value_schema_instead_of_rejecting_every_key() {
        let schema = json!({"type": "object", "additionalProperties": {"type": "string"}});
        assert!(
            accepts(&schema, json!({"any": "key"})),
            "a map must accept arbitrary keys"
        );
        assert!(
            !accepts(&schema, json!({"any": 1})),
            "a map must still check its values"
        );
    }

    #[test]
    fn preserve_unknown_fields_is_honoured() {
        let schema = json!({
            "type": "object",
            "properties": {
                "open": {
                    "type": "object",
                    "x-kubernetes-preserve-unknown-fields": true,
                    "properties": {"known": {"type": "integer"}}
                }
            }
        });
        assert!(accepts(
            &schema,
            json!({"open": {"known": 1, "extra": {"deep": true}}})
        ));
        assert!(
            !accepts(&schema, json!({"open": {"known": "one"}})),
            "declared fields are still typed"
        );
        assert!(
            !accepts(&schema, json!({"closed": 1})),
            "only the marked object is open"
        );
    }

    #[test]
    fn values_are_copied_not_converted() {
        // A default or enum value that looks like a schema must not grow `additionalProperties`.
        let schema = json!({
            "type": "object",
            "properties": {"x": {"type": "object", "default": {"properties": {}}}}
        });
        assert_eq!(
            strict_json_schema(&schema)["properties"]["x"]["default"],
            json!({"properties": {}})
        );
    }

    #[test]
    fn the_validator_can_be_shared_between_request_handlers() {
        fn shareable<T: Send + Sync>() {}
        shareable::<SpecValidator>();
    }

    #[test]
    fn list_items_are_named_with_brackets() {
        let spec = json!({
            "kind": "Batch",
            "workload": {"image": "busybox", "env": [{"name": "OK"}, {"name": "1-bad"}]},
            "resources": {},
            "pricing": {"maxPricePerGpuHour": "1.00"}
        });
        let errors = SpecValidator::new().validate(&spec).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].field, "spec.workload.env[1].name");
    }

    #[test]
    fn null_members_count_as_absent_for_cel_as_for_serde() {
        let spec = json!({
            "kind": "Batch",
            "workload": {"image": "busybox", "builtin": null, "command": null},
            "resources": {"workers": 1, "gpu": null},
            "placement": null,
            "pricing": {"maxPricePerGpuHour": "1.00"},
            "verification": {"mode": "Redundant", "sampleRate": null},
            "maxRuntime": null
        });
        let parsed = SpecValidator::new().validate(&spec);
        assert!(
            parsed.is_ok(),
            "nulls for optional fields must be accepted: {parsed:?}"
        );
    }

    #[test]
    fn cel_paths_are_rooted_at_spec() {
        assert_eq!(cel_field(""), "spec");
        assert_eq!(
            cel_field(".placement.dataLocality"),
            "spec.placement.dataLocality"
        );
        assert_eq!(
            cel_field("verification.sampleRate"),
            "spec.verification.sampleRate"
        );
        assert_eq!(cel_field("workload.env[0]"), "spec.workload.env[0]");
    }

    /// What the API server checks when the CRD is written: every rule compiles, uses only `self`
    /// and `oldSelf`, selects only declared fields, has a `fieldPath` that names a declared field,
    /// and sizes or iterates only lists with `maxItems` (its cost estimate is otherwise unbounded).
    #[test]
    fn every_cel_rule_compiles_and_stays_in_its_schema() {
        let mut problems = Vec::new();
        let mut count = 0;
        for (kind, crd) in [
            (
                "ComputeJob",
                serde_json::to_value(ComputeJob::crd()).unwrap(),
            ),
            ("GpuNode", serde_json::to_value(GpuNode::crd()).unwrap()),
        ] {
            let root = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
            let mut rules = Vec::new();
            collect_rules(root, kind, &mut rules);
            for (at, node, rule) in rules {
                count += 1;
                let text = rule["rule"].as_str().unwrap_or_default();
                let program = match Program::compile(text) {
                    Ok(program) => program,
                    Err(e) => {
                        problems.push(format!("{at}: {text:?} does not compile: {e}"));
                        continue;
                    }
                };
                let mut scope = vec![
                    ("self".to_string(), Some(node)),
                    ("oldSelf".to_string(), Some(node)),
                ];
                let mut found = Vec::new();
                check_expr(program.expression(), &mut scope, &mut found);
                problems.extend(found.into_iter().map(|p| format!("{at}: {text:?}: {p}")));
                if let Some(path) = rule.get("fieldPath").and_then(Value::as_str)
                    && resolve_field_path(node, path).is_none()
                {
                    problems.push(format!("{at}: fieldPath {path:?} names no declared field"));
                }
            }
        }
        assert!(
            count >= 6,
            "expected the CRDs' CEL rules, found only {count}"
        );
        assert!(
            problems.is_empty(),
            "CEL rules the API server would refuse:\n{}",
            problems.join("\n")
        );
    }

    /// Every rule with the dotted path and the schema node it is declared on.
    fn collect_rules<'a>(node: &'a Value, at: &str, out: &mut Vec<(String, &'a Value, &'a Value)>) {
        for rule in node
            .get("x-kubernetes-validations")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            out.push((at.to_string(), node, rule));
        }
        for (name, child) in node
            .get("properties")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            collect_rules(child, &format!("{at}.{name}"), out);
        }
        if let Some(items) = node.get("items") {
            collect_rules(items, &format!("{at}[]"), out);
        }
        for junctor in ["allOf", "anyOf", "oneOf"] {
            for branch in node
                .get(junctor)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                collect_rules(branch, at, out);
            }
        }
    }

    fn resolve_field_path<'a>(node: &'a Value, path: &str) -> Option<&'a Value> {
        path.strip_prefix('.')?
            .split('.')
            .try_fold(node, |node, name| node.get("properties")?.get(name))
    }

    /// Walks a rule, resolving `self.a.b` and comprehension variables against the schema; returns
    /// the schema of the expression's value where it is a field of the object.
    fn check_expr<'a>(
        expr: &IdedExpr,
        scope: &mut Vec<(String, Option<&'a Value>)>,
        problems: &mut Vec<String>,
    ) -> Option<&'a Value> {
        match &expr.expr {
            Expr::Ident(name) => match scope.iter().rev().find(|(n, _)| n == name) {
                Some((_, node)) => *node,
                None => {
                    problems.push(format!("uses {name:?}, which is not in scope"));
                    None
                }
            },
            Expr::Select(select) => {
                let parent = check_expr(&select.operand, scope, problems)?;
                if parent.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)) {
                    return None;
                }
                let field = parent.get("properties").and_then(|p| p.get(&select.field));
                if field.is_none() {
                    problems.push(format!(
                        "selects {:?}, which is not a declared field",
                        select.field
                    ));
                }
                field
            }
            Expr::Comprehension(comprehension) => {
                let range = check_expr(&comprehension.iter_range, scope, problems);
                if let Some(list) = range {
                    require_bounded(list, "iterates", problems);
                }
                let depth = scope.len();
                scope.push((
                    comprehension.iter_var.clone(),
                    range.and_then(|list| list.get("items")),
                ));
                scope.push((comprehension.accu_var.clone(), None));
                for part in [
                    &comprehension.accu_init,
                    &comprehension.loop_cond,
                    &comprehension.loop_step,
                    &comprehension.result,
                ] {
                    check_expr(part, scope, problems);
                }
                scope.truncate(depth);
                None
            }
            Expr::Call(call) => {
                let target = call
                    .target
                    .as_ref()
                    .and_then(|t| check_expr(t, scope, problems));
                let args: Vec<_> = call
                    .args
                    .iter()
                    .map(|a| check_expr(a, scope, problems))
                    .collect();
                if call.func_name == "size"
                    && let Some(sized) = target.or(args.first().copied().flatten())
                {
                    require_bounded(sized, "takes the size of", problems);
                }
                None
            }
            Expr::List(list) => {
                for element in &list.elements {
                    check_expr(element, scope, problems);
                }
                None
            }
            _ => None,
        }
    }

    fn require_bounded(node: &Value, verb: &str, problems: &mut Vec<String>) {
        if node.get("type") == Some(&json!("array")) && node.get("maxItems").is_none() {
            problems.push(format!("{verb} a list without maxItems"));
        }
    }
}
