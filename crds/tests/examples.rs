//! The manifests in `examples/` are the first thing users copy, and the mistakes below are the first
//! ones they make. Each example must be accepted both by the hub ([`SpecValidator`]) and by the API
//! server's schema check, and each mistake must be rejected with an error on the field to fix.

use std::{collections::BTreeMap, fs, path::PathBuf};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use serde_json::{Value, json};

use crds::{
    v1alpha1::{ComputeJob, GpuNode},
    validate::{FieldError, SpecValidator, compile_structural, strict_json_schema},
};

const COMPUTE_JOB_EXAMPLES: &[&str] = &[
    "quickstart.yaml",
    "inference.yaml",
    "training-gang.yaml",
    "batch.yaml",
    "federated.yaml",
];

fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

fn load(name: &str) -> Value {
    let path = examples_dir().join(name);
    let text =
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("examples/{name} is not YAML: {e}"))
}

/// The CRD's whole-object schema as the API server applies it: strict about unknown fields, and
/// with `apiVersion`, `kind` and `metadata`, which the API server validates itself and admits at
/// the root of every custom resource without the CRD declaring them.
fn api_server_schema(crd: &CustomResourceDefinition) -> jsonschema::Validator {
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref());
    let mut schema = serde_json::to_value(schema.expect("a derived CRD has a schema")).unwrap();
    let root = schema["properties"]
        .as_object_mut()
        .expect("the root schema declares properties");
    root.entry("apiVersion")
        .or_insert(json!({"type": "string"}));
    root.entry("kind").or_insert(json!({"type": "string"}));
    root.entry("metadata").or_insert(json!({"type": "object"}));
    compile_structural(&strict_json_schema(&schema)).expect("the CRD schema compiles")
}

fn schema_errors(validator: &jsonschema::Validator, object: &Value) -> Vec<String> {
    validator
        .iter_errors(object)
        .map(|e| format!("{}: {e}", e.instance_path))
        .collect()
}

#[test]
fn every_example_is_listed_here() {
    let mut on_disk: Vec<String> = fs::read_dir(examples_dir())
        .expect("examples/ exists")
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".yaml"))
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = COMPUTE_JOB_EXAMPLES.iter().map(|s| s.to_string()).collect();
    listed.push("gpunode.yaml".into());
    listed.sort();
    assert_eq!(
        on_disk, listed,
        "a new example needs a line in COMPUTE_JOB_EXAMPLES (or its own test)"
    );
}

#[test]
fn compute_job_examples_are_accepted_by_the_hub_and_the_api_server() {
    let hub = SpecValidator::new();
    let api_server = api_server_schema(&ComputeJob::crd());
    let mut kinds = BTreeMap::new();
    for name in COMPUTE_JOB_EXAMPLES {
        let manifest = load(name);
        assert_eq!(
            manifest["apiVersion"], "agora.dev/v1alpha1",
            "examples/{name}"
        );
        assert_eq!(manifest["kind"], "ComputeJob", "examples/{name}");
        assert!(
            manifest["metadata"]["name"].is_string(),
            "examples/{name} needs metadata.name"
        );

        let spec = hub.validate(&manifest["spec"]).unwrap_or_else(|errors| {
            panic!("the hub rejects examples/{name}:\n{}", lines(&errors));
        });
        let errors = schema_errors(&api_server, &manifest);
        assert!(
            errors.is_empty(),
            "the CRD schema rejects examples/{name}:\n{}",
            errors.join("\n")
        );
        let job: ComputeJob = serde_json::from_value(manifest).unwrap_or_else(|e| {
            panic!("examples/{name} does not deserialize into ComputeJob: {e}")
        });
        assert_eq!(
            job.spec, spec,
            "examples/{name}: the hub's typed spec differs from the manifest's"
        );
        kinds.insert(name.to_string(), job.spec.kind);
    }
    // The examples exist to show every kind of job.
    let mut shown: Vec<_> = kinds.values().map(|k| format!("{k:?}")).collect();
    shown.sort();
    shown.dedup();
    assert_eq!(shown, ["Batch", "Federated", "Inference", "Training"]);
}

#[test]
fn gpunode_example_matches_the_gpunode_crd() {
    let manifest = load("gpunode.yaml");
    assert_eq!(manifest["apiVersion"], "agora.dev/v1alpha1");
    assert_eq!(manifest["kind"], "GpuNode");
    let errors = schema_errors(&api_server_schema(&GpuNode::crd()), &manifest);
    assert!(
        errors.is_empty(),
        "the CRD schema rejects examples/gpunode.yaml:\n{}",
        errors.join("\n")
    );
    let node: GpuNode =
        serde_json::from_value(manifest).expect("examples/gpunode.yaml deserializes into GpuNode");
    let status = node.status.expect("the example shows the status");
    assert_eq!(
        status.gpus.len(),
        status.capacity as usize,
        "capacity counts the listed GPUs"
    );
    assert_eq!(
        status.free,
        status.allocatable - status.allocated,
        "free = allocatable - allocated"
    );
}

/// Where a rule lives decides who enforces it: `Schema` rules are OpenAPI keywords (and so also
/// fail the whole-object schema check below), `Cel` rules are `x-kubernetes-validations`.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Layer {
    Schema,
    Cel,
}

struct Mistake {
    what: &'static str,
    edit: fn(&mut Value),
    field: &'static str,
    says: &'static str,
    layer: Layer,
}

/// A valid container job that each mistake changes in one place.
fn valid_spec() -> Value {
    json!({
        "kind": "Batch",
        "workload": {"image": "ghcr.io/acme/embed:1.0", "command": ["python", "embed.py"]},
        "resources": {"workers": 2, "gpusPerWorker": 1},
        "pricing": {"maxPricePerGpuHour": "1.50"}
    })
}

fn federated(spec: &mut Value, sites: &[&str]) {
    spec["kind"] = json!("Federated");
    let sites: Vec<_> = sites.iter().map(|node| json!({"node": node})).collect();
    spec["placement"] = json!({"dataLocality": sites});
}

const MISTAKES: &[Mistake] = &[
    Mistake {
        what: "pipeline stages that do not divide the workers",
        edit: |s| s["resources"]["pipelineStages"] = json!(3),
        field: "spec.resources.pipelineStages",
        says: "multiple of pipelineStages",
        layer: Layer::Cel,
    },
    Mistake {
        what: "communication volumes that are not decimals",
        edit: |s| {
            s["resources"]["communication"] = json!({"activationsGB": "lots", "gradientsGB": "2"})
        },
        field: "spec.resources.communication.activationsGB",
        says: "does not match",
        layer: Layer::Schema,
    },
    Mistake {
        what: "a workload with only env",
        edit: |s| s["workload"] = json!({"env": [{"name": "A", "value": "1"}]}),
        field: "spec.workload",
        says: "needs an image, a command or a builtin",
        layer: Layer::Schema,
    },
    Mistake {
        what: "zero workers",
        edit: |s| s["resources"]["workers"] = json!(0),
        field: "spec.resources.workers",
        says: "must be at least 1, got 0",
        layer: Layer::Schema,
    },
    Mistake {
        what: "a negative price",
        edit: |s| s["pricing"]["maxPricePerGpuHour"] = json!("-1.00"),
        field: "spec.pricing.maxPricePerGpuHour",
        says: "positive decimal string",
        layer: Layer::Schema,
    },
    Mistake {
        what: "a zero price",
        edit: |s| s["pricing"]["maxPricePerGpuHour"] = json!("0"),
        field: "spec.pricing.maxPricePerGpuHour",
        says: "positive decimal string",
        layer: Layer::Schema,
    },
    Mistake {
        what: "a price as a number",
        edit: |s| s["pricing"]["maxPricePerGpuHour"] = json!(2.5),
        field: "spec.pricing.maxPricePerGpuHour",
        says: "not of type",
        layer: Layer::Schema,
    },
    Mistake {
        what: "no pricing",
        edit: |s| drop(s.as_object_mut().unwrap().remove("pricing")),
        field: "spec.pricing",
        says: "is required",
        layer: Layer::Schema,
    },
    Mistake {
        what: "an unknown field",
        edit: |s| s["resources"]["gpuCount"] = json!(8),
        field: "spec.resources.gpuCount",
        says: "unknown field \"gpuCount\"",
        layer: Layer::Schema,
    },
    Mistake {
        what: "17 GPUs per worker",
        edit: |s| s["resources"]["gpusPerWorker"] = json!(17),
        field: "spec.resources.gpusPerWorker",
        says: "must be at most 16, got 17",
        layer: Layer::Schema,
    },
    Mistake {
        what: "an empty GPU model name",
        edit: |s| s["resources"]["gpu"] = json!({"models": ["H100-80GB", ""]}),
        field: "spec.resources.gpu.models[1]",
        says: "shorter than 1 character",
        layer: Layer::Schema,
    },
    Mistake {
        what: "a sample rate of 0",
        edit: |s| s["verification"] = json!({"mode": "SpotCheck", "sampleRate": 0}),
        field: "spec.verification.sampleRate",
        says: "must be greater than 0, got 0",
        layer: Layer::Schema,
    },
    Mistake {
        what: "a sample rate above 1",
        edit: |s| s["verification"] = json!({"mode": "SpotCheck", "sampleRate": 1.5}),
        field: "spec.verification.sampleRate",
        says: "must be at most 1, got 1.5",
        layer: Layer::Schema,
    },
    Mistake {
        what: "a sample rate for Redundant verification",
        edit: |s| s["verification"] = json!({"mode": "Redundant", "sampleRate": 0.1}),
        field: "spec.verification.sampleRate",
        says: "only allowed for mode SpotCheck",
        layer: Layer::Cel,
    },
    Mistake {
        what: "data locality on a Batch job",
        edit: |s| s["placement"] = json!({"dataLocality": [{"node": "gn-a"}, {"node": "gn-b"}]}),
        field: "spec.placement.dataLocality",
        says: "only allowed for kind Federated",
        layer: Layer::Cel,
    },
    Mistake {
        what: "a Federated job without data locality",
        edit: |s| s["kind"] = json!("Federated"),
        field: "spec.placement.dataLocality",
        says: "exactly one entry per worker",
        layer: Layer::Cel,
    },
    Mistake {
        what: "a Federated job with more sites than workers",
        edit: |s| federated(s, &["gn-a", "gn-b", "gn-c"]),
        field: "spec.placement.dataLocality",
        says: "exactly one entry per worker",
        layer: Layer::Cel,
    },
    Mistake {
        what: "a Federated job with one node listed twice",
        edit: |s| federated(s, &["gn-a", "gn-a"]),
        field: "spec.placement.dataLocality",
        says: "must be a different node",
        layer: Layer::Cel,
    },
    Mistake {
        what: "a builtin together with an image",
        edit: |s| s["workload"]["builtin"] = json!({"sleep": {"durationSeconds": 5}}),
        field: "spec.workload",
        says: "takes no image, command or args",
        layer: Layer::Cel,
    },
    Mistake {
        what: "two builtins at once",
        edit: |s| {
            s["workload"] =
                json!({"builtin": {"sleep": {"durationSeconds": 5}, "matmulBenchmark": {}}});
        },
        field: "spec.workload.builtin",
        says: "more than one builtin",
        layer: Layer::Schema,
    },
    Mistake {
        what: "a zero maximum run time",
        edit: |s| s["maxRuntime"] = json!("0s"),
        field: "spec.maxRuntime",
        says: "at least 1s",
        layer: Layer::Cel,
    },
    Mistake {
        what: "a maximum run time that is not a duration",
        edit: |s| s["maxRuntime"] = json!("banana"),
        field: "spec.maxRuntime",
        says: "must be a duration",
        layer: Layer::Schema,
    },
];

#[test]
fn the_valid_spec_the_mistakes_start_from_is_valid() {
    let result = SpecValidator::new().validate(&valid_spec());
    assert!(
        result.is_ok(),
        "the baseline must pass, or every mistake below passes vacuously: {result:?}"
    );
}

#[test]
fn typical_mistakes_are_rejected_on_the_field_to_fix() {
    let hub = SpecValidator::new();
    let api_server = api_server_schema(&ComputeJob::crd());
    let mut failures = Vec::new();
    for mistake in MISTAKES {
        let mut spec = valid_spec();
        (mistake.edit)(&mut spec);

        match hub.validate(&spec) {
            Ok(_) => failures.push(format!("{}: accepted", mistake.what)),
            Err(errors) => match errors.iter().find(|e| e.field == mistake.field) {
                None => failures.push(format!(
                    "{}: no error on {}; got:\n    {}",
                    mistake.what,
                    mistake.field,
                    lines(&errors).replace('\n', "\n    ")
                )),
                Some(error) if !error.message.contains(mistake.says) => failures.push(format!(
                    "{}: the error on {} should say {:?}, says {:?}",
                    mistake.what, mistake.field, mistake.says, error.message
                )),
                Some(_) => {}
            },
        }

        let object = json!({"apiVersion": "agora.dev/v1alpha1", "kind": "ComputeJob", "metadata": {"name": "x"}, "spec": spec});
        let schema_rejects = !schema_errors(&api_server, &object).is_empty();
        if schema_rejects != (mistake.layer == Layer::Schema) {
            failures.push(format!(
                "{}: expected a {:?} rule, but the OpenAPI schema {} it",
                mistake.what,
                mistake.layer,
                if schema_rejects { "rejects" } else { "accepts" }
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} mistakes:\n{}",
        failures.len(),
        MISTAKES.len(),
        failures.join("\n")
    );
}

fn lines(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}
