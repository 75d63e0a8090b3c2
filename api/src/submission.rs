//! Reading a job submission: JSON or YAML, a whole `ComputeJob` manifest or just its spec, checked
//! against the CRD's own schema so the hub and `kubectl apply` accept exactly the same documents.

use crds::{GROUP, v1alpha1::ComputeJobSpec, validate::SpecValidator};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// A validated submission.
#[derive(Debug)]
pub struct Submission {
    /// `metadata.name` of a manifest.
    pub name: Option<String>,
    pub spec: ComputeJobSpec,
    /// Digest of what was asked (name + spec), to recognise a retried request.
    pub digest: String,
}

/// Media types read as YAML. JSON is YAML too, but JSON bodies get JSON's precise errors.
const YAML_TYPES: [&str; 4] = [
    "application/yaml",
    "application/x-yaml",
    "text/yaml",
    "text/x-yaml",
];

/// Parses and validates a submission body.
pub fn parse(
    body: &[u8],
    content_type: Option<&str>,
    validator: &SpecValidator,
) -> Result<Submission, ApiError> {
    let document = match content_type {
        Some("application/json") => from_json(body)?,
        Some(t) if YAML_TYPES.contains(&t) => from_yaml(body)?,
        None => from_json(body).or_else(|_| from_yaml(body))?,
        Some(other) => {
            return Err(ApiError::UnsupportedMediaType(format!(
                "{other}; send application/json or application/yaml"
            )));
        }
    };
    let Value::Object(mut top) = document else {
        return Err(ApiError::bad_request(
            "malformed_body",
            "the body must be a ComputeJob manifest or its spec (an object)",
        ));
    };

    let (name, spec) = if top.contains_key("apiVersion") {
        let expected = format!("{GROUP}/v1alpha1");
        match top.get("apiVersion") {
            Some(Value::String(v)) if *v == expected => {}
            other => {
                return Err(ApiError::invalid(
                    "apiVersion",
                    format!("must be {expected:?}, got {}", show(other)),
                ));
            }
        }
        match top.get("kind") {
            Some(Value::String(k)) if k == "ComputeJob" => {}
            other => {
                return Err(ApiError::invalid(
                    "kind",
                    format!("must be \"ComputeJob\", got {}", show(other)),
                ));
            }
        }
        if let Some(unknown) = top
            .keys()
            .find(|k| !["apiVersion", "kind", "metadata", "spec", "status"].contains(&k.as_str()))
        {
            return Err(ApiError::invalid(unknown.clone(), "unknown field"));
        }
        let name = manifest_name(top.get("metadata"))?;
        let spec = top
            .remove("spec")
            .ok_or_else(|| ApiError::invalid("spec", "is required"))?;
        (name, spec)
    } else {
        (None, Value::Object(top))
    };

    let mut hasher = Sha256::new();
    hasher.update(name.as_deref().unwrap_or_default().as_bytes());
    hasher.update([0]);
    hasher.update(serde_json::to_vec(&spec).unwrap_or_default());
    let digest = hex::encode(hasher.finalize());

    let spec = validator.validate(&spec).map_err(|errors| {
        let first = errors
            .first()
            .map(|e| e.field.clone())
            .unwrap_or_else(|| "spec".into());
        let message = if errors.len() == 1 {
            errors[0].message.clone()
        } else {
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        };
        ApiError::invalid(first, message)
    })?;
    Ok(Submission { name, spec, digest })
}

fn from_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("malformed_body", format!("invalid JSON: {e}")))
}

fn from_yaml(body: &[u8]) -> Result<Value, ApiError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::bad_request("malformed_body", "the body is not UTF-8"))?;
    let mut documents = serde_yaml::Deserializer::from_str(text);
    let first = documents
        .next()
        .ok_or_else(|| ApiError::bad_request("malformed_body", "empty YAML document"))?;
    let value: Value = serde::Deserialize::deserialize(first)
        .map_err(|e| ApiError::bad_request("malformed_body", format!("invalid YAML: {e}")))?;
    if documents.next().is_some() {
        return Err(ApiError::bad_request(
            "malformed_body",
            "send one ComputeJob per request, not a YAML stream",
        ));
    }
    Ok(value)
}

/// `metadata.name`, which must be a DNS-1123 subdomain as in Kubernetes.
fn manifest_name(metadata: Option<&Value>) -> Result<Option<String>, ApiError> {
    let Some(metadata) = metadata else {
        return Ok(None);
    };
    let Value::Object(meta) = metadata else {
        return Err(ApiError::invalid("metadata", "must be an object"));
    };
    match meta.get("name") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(name)) if is_dns_subdomain(name) => Ok(Some(name.clone())),
        Some(other) => Err(ApiError::invalid(
            "metadata.name",
            format!(
                "must be a lowercase RFC 1123 subdomain (a-z, 0-9, '-', '.'; at most 253 characters), got {}",
                show(Some(other))
            ),
        )),
    }
}

fn is_dns_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn show(value: Option<&Value>) -> String {
    match value {
        None => "nothing".into(),
        Some(v) => {
            let text = v.to_string();
            if text.len() > 80 {
                format!("{}…", &text[..text.floor_char_boundary(80)])
            } else {
                text
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validator() -> SpecValidator {
        SpecValidator::new()
    }

    const SPEC_YAML: &str = "kind: Batch\nworkload: {builtin: {sleep: {durationSeconds: 5}}}\nresources: {workers: 1, gpusPerWorker: 1}\npricing: {maxPricePerGpuHour: \"2.00\"}\n";

    #[test]
    fn a_bare_spec_and_a_manifest_are_the_same_job() {
        let manifest = format!(
            "apiVersion: agora.dev/v1alpha1\nkind: ComputeJob\nmetadata: {{name: smoke}}\nspec:\n{}",
            SPEC_YAML
                .lines()
                .map(|l| format!("  {l}\n"))
                .collect::<String>()
        );
        let a = parse(SPEC_YAML.as_bytes(), Some("application/yaml"), &validator()).unwrap();
        let b = parse(manifest.as_bytes(), None, &validator()).unwrap();
        assert_eq!(a.spec, b.spec);
        assert_eq!(b.name.as_deref(), Some("smoke"));
    }

    #[test]
    fn json_and_yaml_bodies_agree() {
        let yaml: Value = serde_yaml::from_str(SPEC_YAML).unwrap();
        let json = serde_json::to_vec(&yaml).unwrap();
        let a = parse(&json, Some("application/json"), &validator()).unwrap();
        let b = parse(SPEC_YAML.as_bytes(), Some("text/yaml"), &validator()).unwrap();
        assert_eq!(a.spec, b.spec);
        assert_eq!(a.digest, b.digest);
    }

    #[test]
    fn rejects_wrong_api_version_kind_and_name() {
        let err = |body: &str| parse(body.as_bytes(), None, &validator()).unwrap_err();
        let e = err("apiVersion: batch/v1\nkind: ComputeJob\nspec: {}");
        assert!(
            matches!(e, ApiError::Invalid { ref field, .. } if field == "apiVersion"),
            "{e:?}"
        );
        let e = err("apiVersion: agora.dev/v1alpha1\nkind: Job\nspec: {}");
        assert!(
            matches!(e, ApiError::Invalid { ref field, .. } if field == "kind"),
            "{e:?}"
        );
        let e = err(
            "apiVersion: agora.dev/v1alpha1\nkind: ComputeJob\nmetadata: {name: Bad_Name}\nspec: {}",
        );
        assert!(
            matches!(e, ApiError::Invalid { ref field, .. } if field == "metadata.name"),
            "{e:?}"
        );
        let e = err("apiVersion: agora.dev/v1alpha1\nkind: ComputeJob\nmetadata: {name: ok}");
        assert!(
            matches!(e, ApiError::Invalid { ref field, .. } if field == "spec"),
            "{e:?}"
        );
    }

    #[test]
    fn malformed_bodies_are_bad_requests() {
        for (body, ct) in [
            ("{not json", Some("application/json")),
            ("[1, 2]", None),
            ("a: [unclosed", Some("application/yaml")),
            ("kind: Batch\n---\nkind: Batch\n", Some("application/yaml")),
        ] {
            let e = parse(body.as_bytes(), ct, &validator()).unwrap_err();
            assert!(
                matches!(e, ApiError::BadRequest { .. }),
                "{body:?} gave {e:?}"
            );
        }
        let e = parse(b"<xml/>", Some("application/xml"), &validator()).unwrap_err();
        assert!(matches!(e, ApiError::UnsupportedMediaType(_)));
    }

    #[test]
    fn an_invalid_spec_names_the_field() {
        let body = SPEC_YAML.replace("workers: 1", "workers: 0");
        let e = parse(body.as_bytes(), None, &validator()).unwrap_err();
        assert!(
            matches!(e, ApiError::Invalid { ref field, .. } if field == "spec.resources.workers"),
            "{e:?}"
        );
    }
}
