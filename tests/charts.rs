//! The hardware owners' Helm chart `charts/agora-node`, checked with the real Helm and Kubernetes'
//! own schemas: `helm lint --strict`, `helm template` with the minimal values an owner sets and with
//! values files that turn every switch (`charts/agora-node/ci/*.yaml`), every rendered object
//! validated by kubernetes-validate for the Kubernetes versions `scripts/test` validates the CRDs
//! for, and the rendered DaemonSet held to what an owner relies on: it registers with the right hub
//! and region under the Kubernetes node's name, its key comes from the Secret (in the agent's own key
//! format), it holds no capability, and the kubernetes executor's RBAC names every verb and resource.
//!
//! Helm comes from `scripts/helm-up` through `AGORA_HELM`; without it these tests say so and pass,
//! unless `AGORA_REQUIRE_HELM=1` (set by `scripts/test`), where they fail instead.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
};

use serde_yaml::Value;

/// The Kubernetes versions `scripts/test` validates the CRDs against: the oldest and newest supported.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.33.0", "1.37.0"];

/// What an owner sets on the command line in the five-minute install.
const HUB: &str = "https://hub.example.org:7600";
const REGION: &str = "eu-west";
const MINIMAL: [&str; 3] = [
    "hub.url=https://hub.example.org:7600",
    "region=eu-west",
    "price=2.20",
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn chart() -> PathBuf {
    repo().join("charts/agora-node")
}

fn required() -> bool {
    std::env::var("AGORA_REQUIRE_HELM").as_deref() == Ok("1")
}

/// The Helm binary named by `AGORA_HELM`, or `None` (the test then passes saying why) when it is not
/// set and not required.
fn helm_binary() -> Option<PathBuf> {
    match std::env::var_os("AGORA_HELM") {
        Some(path) => {
            let path = PathBuf::from(path);
            assert!(
                path.is_file(),
                "AGORA_HELM={} is not a file; run scripts/helm-up",
                path.display()
            );
            Some(path)
        }
        None if required() => {
            panic!(
                "AGORA_REQUIRE_HELM=1 but AGORA_HELM is not set; export AGORA_HELM=$(scripts/helm-up)"
            )
        }
        None => {
            eprintln!(
                "Helm not configured (AGORA_HELM=$(scripts/helm-up)); skipping the chart test"
            );
            None
        }
    }
}

struct Run {
    success: bool,
    stdout: String,
    stderr: String,
}

/// Helm with its cache, configuration and data in a fresh temporary directory, so a run neither
/// reads nor changes the user's Helm set-up.
struct Helm {
    binary: PathBuf,
    home: tempfile::TempDir,
}

impl Helm {
    fn get() -> Option<Self> {
        Some(Self {
            binary: helm_binary()?,
            home: tempfile::tempdir().expect("temporary Helm home"),
        })
    }

    fn run(&self, args: &[&str]) -> Run {
        let home = self.home.path();
        let out = Command::new(&self.binary)
            .args(args)
            .current_dir(repo())
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_DATA_HOME", home.join("data"))
            .env_remove("KUBECONFIG")
            .output()
            .expect("running helm");
        Run {
            success: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `helm template` of the chart with `--set` values and values files; the run, unchecked.
    fn try_template(&self, sets: &[&str], files: &[&str]) -> Run {
        let chart = chart();
        let mut args = vec![
            "template",
            "agora-node",
            chart.to_str().expect("UTF-8 path"),
            "--namespace",
            "agora-system",
        ];
        for set in sets {
            args.extend(["--set", set]);
        }
        let files: Vec<String> = files
            .iter()
            .map(|f| chart.join("ci").join(f).display().to_string())
            .collect();
        for file in &files {
            args.extend(["--values", file.as_str()]);
        }
        self.run(&args)
    }

    /// The rendered manifests, or a panic with Helm's error.
    fn template(&self, sets: &[&str], files: &[&str]) -> Rendered {
        let run = self.try_template(sets, files);
        assert!(
            run.success,
            "helm template {sets:?} {files:?} failed:\n{}",
            run.stderr
        );
        Rendered::parse(&run.stdout)
    }
}

/// The objects of one `helm template` run, in order, with the YAML text they came from.
struct Rendered {
    yaml: String,
    objects: Vec<Value>,
    /// Each object's own text as Helm printed it: what is validated, so that no re-encoding can
    /// change what Kubernetes would read (YAML 1.1 and 1.2 disagree on some scalars).
    texts: Vec<String>,
}

impl Rendered {
    fn parse(yaml: &str) -> Self {
        let mut objects = Vec::new();
        let mut texts = Vec::new();
        for text in yaml.split("\n---\n") {
            let object: Value = serde_yaml::from_str(text).expect("helm printed valid YAML");
            if !object.is_null() {
                objects.push(object);
                texts.push(text.to_string());
            }
        }
        Self {
            yaml: yaml.to_string(),
            objects,
            texts,
        }
    }

    fn of_kind(&self, kind: &str) -> Vec<&Value> {
        self.objects
            .iter()
            .filter(|o| o["kind"].as_str() == Some(kind))
            .collect()
    }

    fn one(&self, kind: &str) -> &Value {
        let found = self.of_kind(kind);
        assert_eq!(
            found.len(),
            1,
            "expected one {kind}, rendered:\n{}",
            self.yaml
        );
        found[0]
    }

    fn daemonset(&self) -> &Value {
        self.one("DaemonSet")
    }
}

fn agent_container(ds: &Value) -> &Value {
    let containers = ds["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .expect("containers");
    containers
        .iter()
        .find(|c| c["name"].as_str() == Some("agent"))
        .expect("the agent container")
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|s| {
            s.iter()
                .map(|x| x.as_str().expect("a string").to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn args(ds: &Value) -> Vec<String> {
    strings(&agent_container(ds)["args"])
}

/// The value of `--flag=value` in the agent's arguments.
fn flag(ds: &Value, name: &str) -> Option<String> {
    let prefix = format!("--{name}=");
    args(ds)
        .iter()
        .find_map(|a| a.strip_prefix(&prefix).map(str::to_string))
}

fn env_value<'a>(container: &'a Value, name: &str) -> Option<&'a Value> {
    container["env"]
        .as_sequence()?
        .iter()
        .find(|e| e["name"].as_str() == Some(name))
}

/// The volume mounted at the directory holding `file`, and the file's name inside it.
fn volume_of<'a>(ds: &'a Value, file: &str) -> (&'a Value, String) {
    let pod = &ds["spec"]["template"]["spec"];
    let path = Path::new(file);
    let dir = path.parent().expect("a directory").to_str().expect("UTF-8");
    let mount = agent_container(ds)["volumeMounts"]
        .as_sequence()
        .expect("volume mounts")
        .iter()
        .find(|m| m["mountPath"].as_str() == Some(dir))
        .unwrap_or_else(|| panic!("nothing is mounted at {dir}"));
    let volume = pod["volumes"]
        .as_sequence()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("the mounted volume");
    let name = path.file_name().expect("a file").to_str().expect("UTF-8");
    (volume, name.to_string())
}

/// Standard base64 (the encoding of a Secret's `data`), for reading the generated key.
fn base64_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes().filter(|&c| c != b'=') {
        let digit = ALPHABET
            .iter()
            .position(|&a| a == c)
            .unwrap_or_else(|| panic!("{text:?} is not base64"));
        acc = (acc << 6) | digit as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// Runs kubernetes-validate over every object Kubernetes itself defines, for each supported version,
/// and fails on any error or on an object it has no schema for. PodMonitor (a Prometheus Operator
/// CRD, not in Kubernetes' schemas) is returned for the caller's own checks.
fn validate<'a>(rendered: &'a Rendered, what: &str) -> Vec<&'a Value> {
    let mut external = Vec::new();
    let mut core = Vec::new();
    for (object, text) in rendered.objects.iter().zip(&rendered.texts) {
        let api_version = object["apiVersion"].as_str().unwrap_or_default();
        if api_version.starts_with("monitoring.coreos.com/") {
            external.push(object);
        } else {
            core.push(text.as_str());
        }
    }
    let dir = tempfile::tempdir().expect("temporary directory");
    let file = dir.path().join("rendered.yaml");
    std::fs::write(&file, core.join("\n---\n")).expect("writing the manifests");
    let validator = std::env::var("AGORA_KUBERNETES_VALIDATE")
        .unwrap_or_else(|_| "kubernetes-validate".to_string());
    for version in KUBERNETES_VERSIONS {
        let out = match Command::new(&validator)
            .args(["--strict", "-k", version])
            .arg(&file)
            .output()
        {
            Ok(out) => out,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required() => {
                eprintln!(
                    "kubernetes-validate not installed (scripts/test installs it); skipping schema validation"
                );
                return external;
            }
            Err(e) => panic!("running {validator}: {e} (scripts/test installs it from PyPI)"),
        };
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && !stdout.contains("WARN") && !stderr.contains("WARN"),
            "{what}: kubernetes-validate {version} refused the rendered manifests:\n{stdout}{stderr}"
        );
        let passed = stdout.matches(" passed for resource ").count();
        assert_eq!(
            passed,
            core.len(),
            "{what}: kubernetes-validate {version} checked {passed} of {} objects:\n{stdout}",
            core.len()
        );
    }
    external
}

#[test]
fn lint_strict_passes_with_the_owner_values_and_every_option() {
    let Some(helm) = Helm::get() else { return };
    let chart = chart();
    let chart = chart.to_str().expect("UTF-8 path");
    let sets = MINIMAL.join(",");
    // Without values too: lint renders with the chart's defaults, where hub.url and region are empty.
    let mut runs = vec![
        helm.run(&["lint", "--strict", chart]),
        helm.run(&["lint", "--strict", chart, "--set", &sets]),
    ];
    for file in ["all-options-values.yaml", "privileged-per-node-values.yaml"] {
        let file = repo().join("charts/agora-node/ci").join(file);
        runs.push(helm.run(&[
            "lint",
            "--strict",
            chart,
            "-f",
            file.to_str().expect("UTF-8"),
        ]));
    }
    for run in runs {
        assert!(
            run.success && run.stdout.contains("0 chart(s) failed"),
            "helm lint --strict failed:\n{}{}",
            run.stdout,
            run.stderr
        );
    }
}

#[test]
fn every_rendering_passes_kubernetes_schemas() {
    let Some(helm) = Helm::get() else { return };
    let renderings = [
        ("owner values", helm.template(&MINIMAL, &[])),
        (
            "all options",
            helm.template(&[], &["all-options-values.yaml"]),
        ),
        (
            "privileged, per-node key",
            helm.template(&[], &["privileged-per-node-values.yaml"]),
        ),
    ];
    for (what, rendered) in &renderings {
        let external = validate(rendered, what);
        for object in external {
            assert_eq!(
                object["kind"].as_str(),
                Some("PodMonitor"),
                "{what}: an object outside Kubernetes' schemas: {object:?}"
            );
        }
    }
}

#[test]
fn the_agent_registers_with_the_owners_hub_under_the_kubernetes_node_name() {
    let Some(helm) = Helm::get() else { return };
    let rendered = helm.template(&MINIMAL, &[]);
    let ds = rendered.daemonset();
    let container = agent_container(ds);
    assert_eq!(strings(&container["command"]), ["agora"]);
    assert!(args(ds).contains(&"agent".to_string()), "{:?}", args(ds));
    assert_eq!(flag(ds, "hub").as_deref(), Some(HUB));
    assert_eq!(flag(ds, "region").as_deref(), Some(REGION));
    assert_eq!(flag(ds, "price").as_deref(), Some("2.20"));
    assert_eq!(flag(ds, "executor").as_deref(), Some("builtin"));
    assert_eq!(flag(ds, "operator-address"), None, "not set, not passed");
    // The name survives pod restarts: the kubelet expands $(NODE_NAME) from the node's own name.
    assert_eq!(flag(ds, "name").as_deref(), Some("gn-$(NODE_NAME)"));
    let node_name = env_value(container, "NODE_NAME").expect("NODE_NAME");
    assert_eq!(
        node_name["valueFrom"]["fieldRef"]["fieldPath"].as_str(),
        Some("spec.nodeName")
    );
    // Reports and receipts not yet delivered outlive the pod: the state is on the node.
    let state_dir = flag(ds, "state-dir").expect("--state-dir");
    let (state, _) = volume_of(ds, &format!("{state_dir}/x"));
    assert_eq!(
        state["hostPath"]["path"].as_str(),
        Some("/var/lib/agora-node")
    );
    assert!(flag(ds, "metrics-listen").is_some_and(|a| a.ends_with(":9400")));
    assert!(
        flag(ds, "simulate-gpus").is_none(),
        "real GPUs unless asked"
    );
}

#[test]
fn the_key_comes_from_a_generated_secret_in_the_agents_own_format() {
    let Some(helm) = Helm::get() else { return };
    let rendered = helm.template(&MINIMAL, &[]);
    let ds = rendered.daemonset();
    let key_path = flag(ds, "key").expect("--key");
    let (volume, file) = volume_of(ds, &key_path);
    let secret = rendered.one("Secret");
    assert_eq!(volume["secret"]["secretName"], secret["metadata"]["name"]);
    assert_eq!(
        volume["secret"]["defaultMode"].as_u64(),
        Some(0o400),
        "the key is readable by its owner only"
    );
    let item = &volume["secret"]["items"][0];
    assert_eq!(item["path"].as_str(), Some(file.as_str()));
    assert_eq!(
        secret["metadata"]["annotations"]["helm.sh/resource-policy"].as_str(),
        Some("keep"),
        "helm uninstall must not delete the key the node names are bound to"
    );
    let data = secret["data"][item["key"].as_str().expect("item key")]
        .as_str()
        .expect("the key's data");
    let dir = tempfile::tempdir().expect("temporary directory");
    let key_file = dir.path().join("node.key");
    std::fs::write(&key_file, base64_decode(data)).expect("writing the key");
    let identity = gpu_runtime::identity::NodeIdentity::load(&key_file)
        .expect("the agent accepts the chart's generated key");
    assert_eq!(identity.public_key().len(), 66);
    // A new install gets a new key, never a fixed one baked into the chart.
    let again = helm.template(&MINIMAL, &[]);
    assert_ne!(again.one("Secret")["data"], secret["data"]);
}

#[test]
fn the_agent_holds_no_capability_and_sees_the_gpus_through_the_nvidia_runtime() {
    let Some(helm) = Helm::get() else { return };
    let rendered = helm.template(&MINIMAL, &[]);
    let ds = rendered.daemonset();
    let pod = &ds["spec"]["template"]["spec"];
    let container = agent_container(ds);
    let sc = &container["securityContext"];
    assert_eq!(strings(&sc["capabilities"]["drop"]), ["ALL"]);
    assert!(sc["capabilities"]["add"].is_null(), "{sc:?}");
    assert_eq!(sc["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert!(sc["privileged"].is_null() || sc["privileged"].as_bool() == Some(false));
    assert_eq!(
        sc["seccompProfile"]["type"].as_str(),
        Some("RuntimeDefault")
    );
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"].as_str(),
        Some("RuntimeDefault")
    );
    for host in ["hostNetwork", "hostPID", "hostIPC"] {
        assert!(pod[host].is_null(), "{host} is set");
    }
    assert_eq!(pod["automountServiceAccountToken"].as_bool(), Some(false));
    assert!(
        rendered.of_kind("ClusterRole").is_empty(),
        "RBAC is off by default"
    );
    // NVML through the NVIDIA runtime, without taking an nvidia.com/gpu away from the jobs.
    assert_eq!(pod["runtimeClassName"].as_str(), Some("nvidia"));
    let env = |name| env_value(container, name).and_then(|e| e["value"].as_str());
    assert_eq!(env("NVIDIA_VISIBLE_DEVICES"), Some("all"));
    assert_eq!(env("NVIDIA_DRIVER_CAPABILITIES"), Some("utility,compute"));
    assert!(
        !rendered.yaml.contains("nvidia.com/gpu:"),
        "the agent requests no GPU"
    );
    assert_eq!(
        pod["nodeSelector"]["nvidia.com/gpu.present"].as_str(),
        Some("true")
    );
    let tolerations = pod["tolerations"].as_sequence().expect("tolerations");
    assert!(
        tolerations
            .iter()
            .any(|t| t["key"].as_str() == Some("nvidia.com/gpu"))
    );
}

#[test]
fn every_option_renders_as_documented() {
    let Some(helm) = Helm::get() else { return };
    let rendered = helm.template(&[], &["all-options-values.yaml"]);
    let ds = rendered.daemonset();
    let pod = &ds["spec"]["template"]["spec"];
    let container = agent_container(ds);
    let all_args = args(ds);
    for expected in [
        "--executor=builtin",
        "--executor=process",
        "--executor=kubernetes",
        "--job-runtime-class=gvisor",
        "--job-cpu=7500m",
        "--job-memory=60Gi",
        "--receipt-interval-seconds=30",
        "--benchmark-interval-seconds=0",
        "--simulate-gpus=2xH100-80GB",
        "--operator-address=cosmos1qyqszqgpqyqszqgpqyqszqgpqyqszqgp2cyq8z",
        "--probe-listen=0.0.0.0:7171",
        "--probe-address=203.0.113.7:7171",
        "--metrics-listen=0.0.0.0:9500",
        "--allow-plain-http",
    ] {
        assert!(
            all_args.iter().any(|a| a == expected),
            "{expected} missing from {all_args:?}"
        );
    }
    // The owner's existing Secret, under its own key name; no Secret of the chart's.
    let (volume, _) = volume_of(ds, &flag(ds, "key").expect("--key"));
    assert_eq!(volume["secret"]["secretName"].as_str(), Some("my-node-key"));
    assert_eq!(
        volume["secret"]["items"][0]["key"].as_str(),
        Some("key.hex")
    );
    assert!(rendered.of_kind("Secret").is_empty());
    // The hub's CA from the chart's ConfigMap.
    let (ca, _) = volume_of(ds, &flag(ds, "hub-ca").expect("--hub-ca"));
    let config_map = rendered.one("ConfigMap");
    assert_eq!(ca["configMap"]["name"], config_map["metadata"]["name"]);
    assert!(
        config_map["data"]["ca.crt"]
            .as_str()
            .is_some_and(|pem| pem.starts_with("-----BEGIN CERTIFICATE-----"))
    );
    // Simulated GPUs on a cluster without them: nothing that only GPU nodes have.
    assert!(pod["runtimeClassName"].is_null());
    assert!(env_value(container, "NVIDIA_VISIBLE_DEVICES").is_none());
    assert!(pod["nodeSelector"]["nvidia.com/gpu.present"].is_null());
    assert_eq!(
        pod["nodeSelector"]["agora.example.org/pool"].as_str(),
        Some("home")
    );
    assert_eq!(
        container["image"].as_str(),
        Some(
            "ghcr.io/agora/agora@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
        )
    );
    // Prometheus finds the agents: the Service and the PodMonitor select the agent pods' labels and
    // name the container's metrics port.
    let pod_labels = &ds["spec"]["template"]["metadata"]["labels"];
    let selects_pods = |selector: &Value| {
        let selector = selector.as_mapping().expect("a selector");
        !selector.is_empty() && selector.iter().all(|(k, v)| &pod_labels[k] == v)
    };
    let service = rendered.one("Service");
    assert!(selects_pods(&service["spec"]["selector"]));
    let monitor = rendered.one("PodMonitor");
    assert!(selects_pods(&monitor["spec"]["selector"]["matchLabels"]));
    assert_eq!(
        monitor["metadata"]["labels"]["release"].as_str(),
        Some("prometheus")
    );
    let ports = container["ports"].as_sequence().expect("ports");
    let metrics = ports
        .iter()
        .find(|p| p["name"].as_str() == Some("metrics"))
        .expect("a metrics port");
    assert_eq!(metrics["containerPort"].as_u64(), Some(9500));
    assert_eq!(
        monitor["spec"]["podMetricsEndpoints"][0]["port"].as_str(),
        Some("metrics")
    );
    // The kubernetes executor needs the API: the token is mounted and RBAC granted.
    assert_eq!(pod["automountServiceAccountToken"].as_bool(), Some(true));
}

#[test]
fn the_kubernetes_executor_gets_least_privilege_rbac() {
    let Some(helm) = Helm::get() else { return };
    let rendered = helm.template(&[], &["all-options-values.yaml"]);
    let role = rendered.one("ClusterRole");
    let mut granted = BTreeSet::new();
    for rule in role["rules"].as_sequence().expect("rules") {
        let groups = strings(&rule["apiGroups"]);
        let resources = strings(&rule["resources"]);
        let verbs = strings(&rule["verbs"]);
        assert!(
            rule["nonResourceURLs"].is_null() && rule["resourceNames"].is_null(),
            "{rule:?}"
        );
        for part in groups.iter().chain(&resources).chain(&verbs) {
            assert!(!part.contains('*'), "wildcard in {rule:?}");
        }
        for group in &groups {
            for resource in &resources {
                for verb in &verbs {
                    granted.insert(format!("{group}/{resource}:{verb}"));
                }
            }
        }
    }
    let expected: BTreeSet<String> = [
        "/namespaces:create",
        "/namespaces:get",
        "/namespaces:delete",
        "/pods:create",
        "/pods:get",
        "/pods:list",
        "/pods:watch",
        "/pods:delete",
        "/pods/log:get",
        "networking.k8s.io/networkpolicies:create",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(granted, expected, "exactly the executor's needs");
    let binding = rendered.one("ClusterRoleBinding");
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    let account = rendered.one("ServiceAccount");
    let subject = &binding["subjects"][0];
    assert_eq!(subject["kind"].as_str(), Some("ServiceAccount"));
    assert_eq!(subject["name"], account["metadata"]["name"]);
    assert_eq!(subject["namespace"].as_str(), Some("agora-system"));
    assert_eq!(
        rendered.daemonset()["spec"]["template"]["spec"]["serviceAccountName"],
        account["metadata"]["name"]
    );
}

#[test]
fn privileged_and_per_node_keys_only_when_asked() {
    let Some(helm) = Helm::get() else { return };
    let rendered = helm.template(&[], &["privileged-per-node-values.yaml"]);
    let ds = rendered.daemonset();
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(
        agent_container(ds)["securityContext"]["privileged"].as_bool(),
        Some(true)
    );
    assert_eq!(pod["runtimeClassName"].as_str(), Some("nvidia-cdi"));
    // Each node's key lives in its own state directory on the node; the chart makes no Secret.
    assert!(rendered.of_kind("Secret").is_empty());
    let (volume, file) = volume_of(ds, &flag(ds, "key").expect("--key"));
    assert_eq!(file, "node.key");
    assert_eq!(volume["hostPath"]["path"].as_str(), Some("/srv/agora-node"));
    // A YAML number is passed in the agent's price format, never as 1.5e+00 or the like.
    assert_eq!(flag(ds, "price").as_deref(), Some("1.500000"));
    let (ca, _) = volume_of(ds, &flag(ds, "hub-ca").expect("--hub-ca"));
    assert_eq!(ca["configMap"]["name"].as_str(), Some("hub-ca"));
    assert!(rendered.of_kind("ConfigMap").is_empty());
    assert_eq!(pod["serviceAccountName"].as_str(), Some("agora-agent"));
    assert!(rendered.of_kind("ServiceAccount").is_empty());
    assert!(agent_container(ds)["livenessProbe"].is_null());
    assert!(flag(ds, "metrics-listen").is_none());
}

#[test]
fn mistakes_fail_naming_the_value_to_fix() {
    let Some(helm) = Helm::get() else { return };
    let cases: [(&[&str], &str); 8] = [
        (&[], "hub.url is required"),
        (&["region=eu-west"], "hub.url"),
        (&["hub.url=https://hub.example.org"], "region"),
        (&["hub.url=hub.example.org", "region=eu-west"], "hub.url"),
        (&[MINIMAL[0], MINIMAL[1], "price=2.2.0"], "price"),
        (
            &[MINIMAL[0], MINIMAL[1], "executors={builtin,docker}"],
            "executors",
        ),
        (
            &[MINIMAL[0], MINIMAL[1], "executors={builtin,kubernetes}"],
            "rbac.kubernetesExecutor",
        ),
        (
            &[
                MINIMAL[0],
                MINIMAL[1],
                "nodeKey.mode=perNode",
                "state.type=emptyDir",
            ],
            "state.type=hostPath",
        ),
    ];
    for (sets, field) in cases {
        let run = helm.try_template(sets, &[]);
        assert!(!run.success, "{sets:?} rendered:\n{}", run.stdout);
        assert!(
            run.stderr.contains(field),
            "{sets:?}: the error does not name {field}:\n{}",
            run.stderr
        );
    }
}
