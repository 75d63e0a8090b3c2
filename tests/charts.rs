//! The hardware owners' Helm chart `charts/agora-node`, checked with the real Helm and Kubernetes'
//! own schemas: `helm lint --strict`, `helm template` with the minimal values an owner sets and with
//! values files that turn every switch (`charts/agora-node/ci/*.yaml`), every rendered object
//! validated by kubernetes-validate for the Kubernetes versions `scripts/test` validates the CRDs
//! for, and the rendered DaemonSet held to what an owner relies on: it registers with the right hub
//! and region under the Kubernetes node's name, its key comes from the Secret (in the agent's own key
//! format) and an upgrade keeps it, it holds no capability, and the kubernetes executor's RBAC names
//! every verb and resource.
//!
//! Helm comes from `scripts/helm-up` through `AGORA_HELM`; without it these tests say so and pass,
//! unless `AGORA_REQUIRE_HELM=1` (set by `scripts/test`), where they fail instead
//! (`tests/common/helm.rs`, shared with the hub chart's `tests/hub_chart.rs`).

mod common;

use std::collections::BTreeSet;

use common::helm::{
    Helm, Rendered, SimulatedCluster, base64_decode, container, env_value, grants, strings,
};
use serde_yaml::Value;

/// What an owner sets on the command line in the five-minute install.
const HUB: &str = "https://hub.example.org:7600";
const REGION: &str = "eu-west";
const MINIMAL: [&str; 3] = [
    "hub.url=https://hub.example.org:7600",
    "region=eu-west",
    "price=2.20",
];

fn helm() -> Option<Helm> {
    Helm::get("charts/agora-node", "agora-node")
}

fn daemonset(rendered: &Rendered) -> &Value {
    rendered.one("DaemonSet")
}

fn agent_container(ds: &Value) -> &Value {
    container(ds, "agent")
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

/// The volume the agent mounts at the directory holding `file`, and the file's name inside it.
fn volume_of<'a>(ds: &'a Value, file: &str) -> (&'a Value, String) {
    common::helm::volume_of(ds, agent_container(ds), file)
}

#[test]
fn lint_strict_passes_with_the_owner_values_and_every_option() {
    let Some(helm) = helm() else { return };
    // Without values too: lint renders with the chart's defaults, where hub.url and region are empty.
    helm.lint(&[], &[]);
    helm.lint(&MINIMAL, &[]);
    for file in ["all-options-values.yaml", "privileged-per-node-values.yaml"] {
        helm.lint(&[], &[file]);
    }
}

#[test]
fn every_rendering_passes_kubernetes_schemas() {
    let Some(helm) = helm() else { return };
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
        let external = rendered.validate(what);
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
    let Some(helm) = helm() else { return };
    let rendered = helm.template(&MINIMAL, &[]);
    let ds = daemonset(&rendered);
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
    let Some(helm) = helm() else { return };
    let rendered = helm.template(&MINIMAL, &[]);
    let ds = daemonset(&rendered);
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
fn an_upgrade_keeps_the_node_key_already_in_the_cluster() {
    let Some(helm) = helm() else { return };
    let installed = helm.template(&MINIMAL, &[]);
    let secret = installed.one("Secret");
    let name = secret["metadata"]["name"].as_str().expect("a name");
    let cluster = SimulatedCluster::with_secrets(vec![(name.to_string(), secret["data"].clone())]);
    let upgraded = helm.template_against(&cluster, &MINIMAL);
    assert_eq!(
        upgraded.one("Secret")["data"],
        secret["data"],
        "the hub binds the nodes' names to the key: an upgrade must keep it"
    );
}

#[test]
fn the_agent_holds_no_capability_and_sees_the_gpus_through_the_nvidia_runtime() {
    let Some(helm) = helm() else { return };
    let rendered = helm.template(&MINIMAL, &[]);
    let ds = daemonset(&rendered);
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
    let Some(helm) = helm() else { return };
    let rendered = helm.template(&[], &["all-options-values.yaml"]);
    let ds = daemonset(&rendered);
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
    // The Node fleet dashboard filters agents by the release's region.
    let relabelings = monitor["spec"]["podMetricsEndpoints"][0]["relabelings"]
        .as_sequence()
        .expect("relabelings");
    assert!(
        relabelings
            .iter()
            .any(|r| r["targetLabel"].as_str() == Some("region")
                && r["replacement"].as_str() == Some(REGION)),
        "{relabelings:?}"
    );
    // The kubernetes executor needs the API: the token is mounted and RBAC granted.
    assert_eq!(pod["automountServiceAccountToken"].as_bool(), Some(true));
}

#[test]
fn the_kubernetes_executor_gets_least_privilege_rbac() {
    let Some(helm) = helm() else { return };
    let rendered = helm.template(&[], &["all-options-values.yaml"]);
    let role = rendered.one("ClusterRole");
    let granted = grants(role);
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
        daemonset(&rendered)["spec"]["template"]["spec"]["serviceAccountName"],
        account["metadata"]["name"]
    );
}

#[test]
fn privileged_and_per_node_keys_only_when_asked() {
    let Some(helm) = helm() else { return };
    let rendered = helm.template(&[], &["privileged-per-node-values.yaml"]);
    let ds = daemonset(&rendered);
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
    let Some(helm) = helm() else { return };
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
