//! The network operators' Helm chart `charts/agora` (the hub, `agora server --kubernetes`), checked
//! with the real Helm and Kubernetes' own schemas: `helm lint --strict` and `helm template` with the
//! one value an operator must set and with every values file in `charts/agora/ci/`, every rendered
//! object (the CRDs included) validated by kubernetes-validate, and the rendering held to what an
//! operator relies on: the database URL reaches the hub from its Secret only, the operator's RBAC is
//! exactly what it uses, the hub runs non-root on a read-only file system without capabilities,
//! probes, replicas and disruption budget, the generated API key is one the hub accepts and an
//! upgrade keeps it (rendered against a simulated API server that answers Helm's `lookup`: no real
//! one runs on these machines), and the chart's CRDs are the generated ones.
//!
//! Helm comes from `scripts/helm-up` through `AGORA_HELM` (`tests/common/helm.rs`); without it
//! these tests say so and pass, unless `AGORA_REQUIRE_HELM=1` (set by `scripts/test`).

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    process::Command,
};

use common::helm::{
    Helm, NAMESPACE, Rendered, SimulatedCluster, base64_decode, container, env_value, grants, repo,
    strings, volume_of,
};
use serde_yaml::Value;

/// The one value an operator must set (the Secret holding the database URL).
const DATABASE_SECRET: &str = "agora-database";
const REQUIRED: [&str; 1] = ["database.existingSecret=agora-database"];

fn helm() -> Option<Helm> {
    Helm::get("charts/agora", "agora")
}

fn chart() -> PathBuf {
    repo().join("charts/agora")
}

/// Every values file in the chart's `ci/`: a new one is linted and validated without a test change.
fn ci_files() -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(chart().join("ci"))
        .expect("charts/agora/ci")
        .map(|e| {
            e.expect("a ci entry")
                .file_name()
                .into_string()
                .expect("UTF-8")
        })
        .filter(|name| name.ends_with(".yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 2, "ci/ holds the values files: {files:?}");
    files
}

fn deployment(rendered: &Rendered) -> &Value {
    rendered.one("Deployment")
}

fn hub(rendered: &Rendered) -> &Value {
    container(deployment(rendered), "hub")
}

fn pod(rendered: &Rendered) -> &Value {
    &deployment(rendered)["spec"]["template"]["spec"]
}

/// The plain value of the hub's environment variable `name` (None when absent or from a source).
fn env<'a>(rendered: &'a Rendered, name: &str) -> Option<&'a str> {
    env_value(hub(rendered), name).and_then(|e| e["value"].as_str())
}

fn args(rendered: &Rendered) -> Vec<String> {
    strings(&hub(rendered)["args"])
}

/// Whether every `(key, value)` of `selector` is among the hub pods' labels.
fn selects_hub_pods(rendered: &Rendered, selector: &Value) -> bool {
    let labels = &deployment(rendered)["spec"]["template"]["metadata"]["labels"];
    let selector = selector.as_mapping().expect("a selector");
    !selector.is_empty() && selector.iter().all(|(k, v)| &labels[k] == v)
}

#[test]
fn lint_strict_passes_with_the_required_value_and_every_ci_file() {
    let Some(helm) = helm() else { return };
    // Lint renders with the chart's defaults too, where the database Secret is not yet named.
    helm.lint(&[], &[]);
    helm.lint(&REQUIRED, &[]);
    for file in ci_files() {
        helm.lint(&[], &[&file]);
    }
}

#[test]
fn every_rendering_passes_kubernetes_schemas() {
    let Some(helm) = helm() else { return };
    let mut renderings = vec![(
        "required value only".to_string(),
        helm.template(&REQUIRED, &[]),
    )];
    for file in ci_files() {
        renderings.push((file.clone(), helm.template(&[], &[&file])));
    }
    for (what, rendered) in &renderings {
        // The CRDs are validated as CustomResourceDefinitions like every other object.
        assert_eq!(rendered.of_kind("CustomResourceDefinition").len(), 2);
        for object in rendered.validate(what) {
            assert!(
                matches!(
                    object["kind"].as_str(),
                    Some("ServiceMonitor" | "PrometheusRule")
                ),
                "{what}: an object outside Kubernetes' schemas: {object:?}"
            );
        }
    }
}

#[test]
fn the_database_url_comes_from_the_secret_and_never_appears_in_clear() {
    let Some(helm) = helm() else { return };
    for (sets, files, secret, key) in [
        (&REQUIRED[..], &[][..], DATABASE_SECRET, "url"),
        (
            &[][..],
            &["all-options-values.yaml"][..],
            "hub-database",
            "postgres-url",
        ),
    ] {
        let rendered = helm.template(sets, files);
        let url = env_value(hub(&rendered), "AGORA_DATABASE_URL").expect("AGORA_DATABASE_URL");
        assert!(
            url["value"].is_null(),
            "the URL is never a plain value: {url:?}"
        );
        let from = &url["valueFrom"]["secretKeyRef"];
        assert_eq!(from["name"].as_str(), Some(secret));
        assert_eq!(from["key"].as_str(), Some(key));
        assert!(
            !args(&rendered)
                .iter()
                .any(|a| a.starts_with("--database-url")),
            "{:?}",
            args(&rendered)
        );
        for scheme in ["postgres://", "postgresql://", "sqlite:"] {
            assert!(
                !rendered.yaml.contains(scheme),
                "a database URL in the manifests"
            );
        }
        // The chart never creates the database Secret: the operator's password stays theirs.
        assert!(
            rendered
                .of_kind("Secret")
                .iter()
                .all(|s| s["metadata"]["name"].as_str() != Some(secret))
        );
    }
}

#[test]
fn mistakes_fail_naming_the_value_to_fix() {
    let Some(helm) = helm() else { return };
    let cases: [(&[&str], &str); 11] = [
        (
            &[],
            "database.existingSecret is required: the Secret holding the hub's PostgreSQL URL",
        ),
        (&["replicas=3"], "database.existingSecret is required"),
        (&[REQUIRED[0], "replica=3"], "replica is not allowed"),
        (&[REQUIRED[0], "replicas=0"], "replicas"),
        (&[REQUIRED[0], "chain.mode=ethereum"], "chain.mode"),
        (&[REQUIRED[0], "chain.mode=cosmos"], "chain.rpcUrl"),
        (
            &[
                REQUIRED[0],
                "chain.mode=cosmos",
                "chain.rpcUrl=https://rpc.example.org",
                "chain.contract=cosmos14hj2tavq8fpesdwxxcu44rty3hh90vhujrvcmstl4zr3txmfvw9s4hmalr",
                "chain.keySecret.name=key",
            ],
            "chain.mode=cosmos needs chain.chainId",
        ),
        (
            &[REQUIRED[0], "chain.mode=embedded"],
            "set replicas=1 (now 2), or chain.mode=cosmos",
        ),
        (
            &[REQUIRED[0], "server.apiKeyLimit=lots"],
            "server.apiKeyLimit",
        ),
        (
            &[REQUIRED[0], "server.heartbeatIntervalSeconds=20"],
            "server.heartbeatIntervalSeconds (20) must be shorter than server.nodeTimeoutSeconds (20)",
        ),
        (
            &[REQUIRED[0], "serviceAccount.create=false"],
            "set serviceAccount.create=true or serviceAccount.name",
        ),
    ];
    for (sets, message) in cases {
        let run = helm.try_template(sets, &[]);
        assert!(!run.success, "{sets:?} rendered:\n{}", run.stdout);
        assert!(
            run.stderr.contains(message),
            "{sets:?}: the error does not say {message:?}:\n{}",
            run.stderr
        );
    }
}

#[test]
fn the_operator_gets_exactly_the_rbac_it_uses_and_no_wildcard() {
    let Some(helm) = helm() else { return };
    let rendered = helm.template(&REQUIRED, &[]);
    let set = |grants: &[&str]| {
        grants
            .iter()
            .map(|g| g.to_string())
            .collect::<BTreeSet<_>>()
    };
    // The operator's own list of what it needs, which its API scenarios check every request
    // against: the chart grants exactly that.
    let cluster_role = rendered.one("ClusterRole");
    assert_eq!(
        grants(cluster_role),
        set(operator::rbac::CLUSTER),
        "exactly the operator's needs, cluster-wide"
    );
    // The Lease only in the hub's own namespace.
    let role = rendered.one("Role");
    assert_eq!(role["metadata"]["namespace"].as_str(), Some(NAMESPACE));
    assert_eq!(grants(role), set(operator::rbac::NAMESPACED));
    let account = rendered.one("ServiceAccount");
    assert_eq!(
        pod(&rendered)["serviceAccountName"],
        account["metadata"]["name"]
    );
    assert_eq!(
        pod(&rendered)["automountServiceAccountToken"].as_bool(),
        Some(true),
        "the operator needs its token"
    );
    for (binding, role, kind) in [
        (
            rendered.one("ClusterRoleBinding"),
            cluster_role,
            "ClusterRole",
        ),
        (rendered.one("RoleBinding"), role, "Role"),
    ] {
        assert_eq!(binding["roleRef"]["kind"].as_str(), Some(kind));
        assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
        let subjects = binding["subjects"].as_sequence().expect("subjects");
        assert_eq!(subjects.len(), 1, "{subjects:?}");
        assert_eq!(subjects[0]["kind"].as_str(), Some("ServiceAccount"));
        assert_eq!(subjects[0]["name"], account["metadata"]["name"]);
        assert_eq!(subjects[0]["namespace"].as_str(), Some(NAMESPACE));
    }
    // Nothing else grants anything.
    for kind in ["ClusterRole", "Role", "ClusterRoleBinding", "RoleBinding"] {
        assert_eq!(rendered.of_kind(kind).len(), 1, "{kind}");
    }
}

#[test]
fn the_hub_runs_non_root_on_a_read_only_file_system_without_capabilities() {
    let Some(helm) = helm() else { return };
    let rendered = helm.template(&REQUIRED, &[]);
    let pod = pod(&rendered);
    let psc = &pod["securityContext"];
    assert_eq!(psc["runAsNonRoot"].as_bool(), Some(true));
    assert_eq!(psc["runAsUser"].as_u64(), Some(65532));
    assert_eq!(
        psc["seccompProfile"]["type"].as_str(),
        Some("RuntimeDefault")
    );
    let sc = &hub(&rendered)["securityContext"];
    assert_eq!(sc["runAsNonRoot"].as_bool(), Some(true));
    assert_eq!(sc["runAsUser"].as_u64(), Some(65532));
    assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(sc["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert_eq!(strings(&sc["capabilities"]["drop"]), ["ALL"]);
    assert!(sc["capabilities"]["add"].is_null(), "{sc:?}");
    assert!(sc["privileged"].is_null(), "{sc:?}");
    assert_eq!(
        sc["seccompProfile"]["type"].as_str(),
        Some("RuntimeDefault")
    );
    for host in ["hostNetwork", "hostPID", "hostIPC"] {
        assert!(pod[host].is_null(), "{host} is set");
    }
    // The mounted secrets are readable by the hub's group (fsGroup) and nobody else.
    assert_eq!(psc["fsGroup"].as_u64(), Some(65532));
    for volume in pod["volumes"].as_sequence().expect("volumes") {
        assert!(volume["hostPath"].is_null(), "{volume:?}");
        if !volume["secret"].is_null() {
            assert_eq!(
                volume["secret"]["defaultMode"].as_u64(),
                Some(0o440),
                "{volume:?}"
            );
        }
    }
    for mount in hub(&rendered)["volumeMounts"]
        .as_sequence()
        .expect("mounts")
    {
        assert_eq!(mount["readOnly"].as_bool(), Some(true), "{mount:?}");
    }
}

#[test]
fn probes_ask_the_hub_on_its_http_port() {
    let Some(helm) = helm() else { return };
    let rendered = helm.template(&REQUIRED, &[]);
    let hub = hub(&rendered);
    for (probe, path) in [
        ("startupProbe", "/healthz"),
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
    ] {
        let get = &hub[probe]["httpGet"];
        assert_eq!(get["path"].as_str(), Some(path), "{probe}");
        assert_eq!(get["port"].as_str(), Some("http"), "{probe}");
        assert_eq!(get["scheme"].as_str(), Some("HTTP"), "{probe}");
    }
    let ports = hub["ports"].as_sequence().expect("ports");
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0]["name"].as_str(), Some("http"));
    assert_eq!(ports[0]["containerPort"].as_u64(), Some(7600));
    assert_eq!(env(&rendered, "AGORA_LISTEN"), Some("0.0.0.0:7600"));
    // Plain HTTP by default, said explicitly, for a TLS-terminating ingress in front.
    assert_eq!(env(&rendered, "AGORA_ALLOW_PLAIN_HTTP"), Some("true"));
    assert!(env_value(hub, "AGORA_TLS_CERT").is_none());
    let service = rendered.one("Service");
    assert!(selects_hub_pods(&rendered, &service["spec"]["selector"]));
    let port = &service["spec"]["ports"][0];
    assert_eq!(port["name"].as_str(), Some("http"));
    assert_eq!(port["port"].as_u64(), Some(7600));
    assert_eq!(port["targetPort"].as_str(), Some("http"));
}

#[test]
fn two_replicas_spread_over_nodes_keep_one_up_through_disruptions_and_upgrades() {
    let Some(helm) = helm() else { return };
    let rendered = helm.template(&REQUIRED, &[]);
    let spec = &deployment(&rendered)["spec"];
    assert_eq!(spec["replicas"].as_u64(), Some(2));
    assert_eq!(spec["strategy"]["type"].as_str(), Some("RollingUpdate"));
    assert_eq!(
        spec["strategy"]["rollingUpdate"]["maxUnavailable"].as_u64(),
        Some(0)
    );
    let pdb = rendered.one("PodDisruptionBudget");
    assert_eq!(pdb["spec"]["maxUnavailable"].as_u64(), Some(1));
    assert!(selects_hub_pods(
        &rendered,
        &pdb["spec"]["selector"]["matchLabels"]
    ));
    let spread = pod(&rendered)["topologySpreadConstraints"]
        .as_sequence()
        .expect("topology spread");
    assert_eq!(spread.len(), 1);
    assert_eq!(
        spread[0]["topologyKey"].as_str(),
        Some("kubernetes.io/hostname")
    );
    assert!(selects_hub_pods(
        &rendered,
        &spread[0]["labelSelector"]["matchLabels"]
    ));
    // One replica: a budget could only block drains or allow everything, so there is none.
    let single = helm.template(&[], &["single-replica-values.yaml"]);
    assert_eq!(deployment(&single)["spec"]["replicas"].as_u64(), Some(1));
    assert!(single.of_kind("PodDisruptionBudget").is_empty());
}

#[test]
fn the_hub_runs_the_operator_under_its_pod_identity() {
    let Some(helm) = helm() else { return };
    let rendered = helm.template(&REQUIRED, &[]);
    let hub = hub(&rendered);
    assert_eq!(strings(&hub["command"]), ["agora"]);
    assert_eq!(args(&rendered), ["--log-json", "server", "--kubernetes"]);
    let field = |name| {
        env_value(hub, name)
            .and_then(|e| e["valueFrom"]["fieldRef"]["fieldPath"].as_str())
            .unwrap_or_else(|| panic!("{name} from the downward API"))
    };
    assert_eq!(
        pod(&rendered)["enableServiceLinks"].as_bool(),
        Some(false),
        "no AGORA_PORT and the like from the Service named agora"
    );
    assert_eq!(field("AGORA_REPLICA_NAME"), "metadata.name");
    assert_eq!(field("AGORA_KUBERNETES_NAMESPACE"), "metadata.namespace");
    assert_eq!(
        env(&rendered, "AGORA_KUBERNETES_LEASE"),
        Some("agora-operator")
    );
    assert_eq!(env(&rendered, "AGORA_CHAIN"), Some("none"));
    assert!(env_value(hub, "AGORA_CHAIN_KEY_FILE").is_none());
    assert!(env_value(hub, "AGORA_SETTLEMENT_EPOCH_SECONDS").is_none());
    // The hub's defaults, passed explicitly so `kubectl describe` shows them.
    for (name, value) in [
        ("AGORA_NODE_TIMEOUT_SECONDS", "20"),
        ("AGORA_HEARTBEAT_INTERVAL_SECONDS", "5"),
        ("AGORA_LEASE_TTL_SECONDS", "10"),
        ("AGORA_LEASE_RENEW_SECONDS", "2"),
        ("AGORA_PROBE_TARGETS", "4"),
        ("AGORA_NETWORK", "agora-devnet-1"),
        ("AGORA_API_KEY_LIMIT", "50/100"),
        ("AGORA_NODE_LIMIT", "200/400"),
        ("AGORA_ANONYMOUS_LIMIT", "5/20"),
        ("AGORA_LOG", "info"),
    ] {
        assert_eq!(env(&rendered, name), Some(value), "{name}");
    }
    // The image is the release the chart was made for.
    let chart: Value = serde_yaml::from_str(
        &std::fs::read_to_string(chart().join("Chart.yaml")).expect("Chart.yaml"),
    )
    .expect("Chart.yaml is YAML");
    let app_version = chart["appVersion"].as_str().expect("appVersion");
    assert_eq!(
        hub["image"].as_str(),
        Some(format!("ghcr.io/agora/agora:{app_version}").as_str())
    );
}

/// Every `AGORA_*` variable the chart sets must be one `agora server` reads: a misspelt name would
/// be ignored silently and the hub would run on its default. The operator's and settlement's
/// variables are checked as soon as `agora server --help` lists `--kubernetes` and `--chain`.
#[test]
fn every_variable_the_chart_sets_is_one_the_hub_reads() {
    let Some(helm) = helm() else { return };
    let help = Command::new(env!("CARGO_BIN_EXE_agora"))
        .args(["server", "--help"])
        .output()
        .expect("running agora server --help");
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    assert!(help.contains("AGORA_DATABASE_URL"), "{help}");
    let pending: BTreeMap<&str, &[&str]> = [
        (
            "--kubernetes",
            &["AGORA_KUBERNETES_NAMESPACE", "AGORA_KUBERNETES_LEASE"][..],
        ),
        (
            "--chain",
            &[
                "AGORA_CHAIN",
                "AGORA_CHAIN_RPC_URL",
                "AGORA_CHAIN_CONTRACT",
                "AGORA_CHAIN_KEY_FILE",
                "AGORA_CHAIN_ID",
                "AGORA_CHAIN_GAS_PRICE",
                "AGORA_SETTLEMENT_EPOCH_SECONDS",
            ][..],
        ),
    ]
    .into_iter()
    .collect();
    let not_yet: BTreeSet<&str> = pending
        .iter()
        .filter(|(flag, _)| {
            !help.contains(&format!("{flag} ")) && !help.contains(&format!("{flag}\n"))
        })
        .flat_map(|(_, names)| names.iter().copied())
        .collect();
    let mut renderings = vec![(
        "required value only".to_string(),
        helm.template(&REQUIRED, &[]),
    )];
    for file in ci_files() {
        renderings.push((file.clone(), helm.template(&[], &[&file])));
    }
    for (what, rendered) in &renderings {
        for entry in hub(rendered)["env"].as_sequence().expect("env") {
            let name = entry["name"].as_str().expect("a name");
            if !name.starts_with("AGORA_") || not_yet.contains(name) {
                continue;
            }
            // `[env: NAME=]`, or `[env: NAME]` where the value is hidden.
            assert!(
                help.contains(&format!("env: {name}=")) || help.contains(&format!("env: {name}]")),
                "{what}: the chart sets {name}, which `agora server --help` does not list"
            );
        }
    }
}

#[test]
fn the_generated_api_key_is_one_the_hub_accepts_and_outlives_uninstall() {
    let Some(helm) = helm() else { return };
    let rendered = helm.template(&REQUIRED, &[]);
    let key_file = env(&rendered, "AGORA_API_KEY_FILE").expect("AGORA_API_KEY_FILE");
    let (volume, file) = volume_of(deployment(&rendered), hub(&rendered), key_file);
    let secret = rendered.one("Secret");
    assert_eq!(volume["secret"]["secretName"], secret["metadata"]["name"]);
    let item = &volume["secret"]["items"][0];
    assert_eq!(item["path"].as_str(), Some(file.as_str()));
    assert_eq!(
        secret["metadata"]["annotations"]["helm.sh/resource-policy"].as_str(),
        Some("keep"),
        "helm uninstall must not delete the key its users hold"
    );
    let data = secret["data"][item["key"].as_str().expect("item key")]
        .as_str()
        .expect("the key's data");
    let key = String::from_utf8(base64_decode(data)).expect("UTF-8");
    // The format of `agora admin key create`: recognisable if leaked.
    let hex = key.strip_prefix("agora_").expect("an agora_ key");
    assert!(
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{key:?}"
    );
    // The hub takes the mounted file as the default tenant's key.
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join(&file);
    std::fs::write(&path, &key).expect("writing the key file");
    let db = format!("sqlite://{}", dir.path().join("hub.db").display());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let store = api::store::Store::connect(&db).await.expect("the store");
        let loaded = api::bootstrap::ensure_api_key(&store, "default", &path)
            .await
            .expect("the hub accepts the chart's key file");
        assert_eq!(loaded, key);
        assert!(
            store.tenant_for_key(&key).await.expect("lookup").is_some(),
            "the key authenticates the default tenant"
        );
    });
    // A new install gets a new key, never a fixed one baked into the chart.
    let again = helm.template(&REQUIRED, &[]);
    assert_ne!(again.one("Secret")["data"], secret["data"]);
}

#[test]
fn an_upgrade_keeps_the_api_key_already_in_the_cluster() {
    let Some(helm) = helm() else { return };
    let installed = helm.template(&REQUIRED, &[]);
    let secret = installed.one("Secret");
    let name = secret["metadata"]["name"]
        .as_str()
        .expect("a name")
        .to_string();
    let upgrade = |cluster: &SimulatedCluster| {
        helm.template_against(cluster, &REQUIRED).one("Secret")["data"].clone()
    };
    // The cluster holds the installed Secret: the upgrade renders the same key.
    let cluster = SimulatedCluster::with_secrets(vec![(name.clone(), secret["data"].clone())]);
    assert_eq!(upgrade(&cluster), secret["data"]);
    // A Secret without the key (emptied by hand): a new key rather than an empty file.
    let mut other_key = serde_yaml::Mapping::new();
    other_key.insert("other".into(), "c3RhbGU=".into());
    let cluster = SimulatedCluster::with_secrets(vec![(name, Value::Mapping(other_key))]);
    let data = upgrade(&cluster);
    assert_ne!(data, secret["data"]);
    assert!(
        data["api-key"].as_str().is_some_and(|k| !k.is_empty()),
        "{data:?}"
    );
}

#[test]
fn every_option_renders_as_documented() {
    let Some(helm) = helm() else { return };
    let rendered = helm.template(&[], &["all-options-values.yaml"]);
    let deployment = deployment(&rendered);
    let hub = hub(&rendered);
    let pod = pod(&rendered);
    assert_eq!(deployment["metadata"]["name"].as_str(), Some("agora-hub"));
    assert_eq!(deployment["spec"]["replicas"].as_u64(), Some(3));
    // The hub serves HTTPS with the Secret's certificate; probes and scrapes follow.
    assert!(env_value(hub, "AGORA_ALLOW_PLAIN_HTTP").is_none());
    for (name, file) in [("AGORA_TLS_CERT", "tls.crt"), ("AGORA_TLS_KEY", "tls.key")] {
        let path = env(&rendered, name).expect(name);
        let (volume, in_volume) = volume_of(deployment, hub, path);
        assert_eq!(volume["secret"]["secretName"].as_str(), Some("hub-tls"));
        assert_eq!(in_volume, file);
    }
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
        assert_eq!(hub[probe]["httpGet"]["scheme"].as_str(), Some("HTTPS"));
    }
    assert_eq!(hub["livenessProbe"]["periodSeconds"].as_u64(), Some(20));
    assert_eq!(hub["startupProbe"]["failureThreshold"].as_u64(), Some(60));
    // The chain key as a read-only file where AGORA_CHAIN_KEY_FILE points.
    let chain_key = env(&rendered, "AGORA_CHAIN_KEY_FILE").expect("AGORA_CHAIN_KEY_FILE");
    assert_eq!(chain_key, "/var/run/agora/chain/key");
    let (volume, file) = volume_of(deployment, hub, chain_key);
    assert_eq!(
        volume["secret"]["secretName"].as_str(),
        Some("hub-chain-key")
    );
    assert_eq!(
        volume["secret"]["items"][0]["key"].as_str(),
        Some("signer.key")
    );
    assert_eq!(
        volume["secret"]["items"][0]["path"].as_str(),
        Some(file.as_str())
    );
    for (name, value) in [
        ("AGORA_CHAIN", "cosmos"),
        ("AGORA_CHAIN_RPC_URL", "https://rpc.example.org:443"),
        ("AGORA_CHAIN_ID", "agora-1"),
        ("AGORA_CHAIN_GAS_PRICE", "0.05uagora"),
        ("AGORA_SETTLEMENT_EPOCH_SECONDS", "600"),
        ("AGORA_KUBERNETES_LEASE", "agora-operator-blue"),
        ("AGORA_NODE_TIMEOUT_SECONDS", "30"),
        ("AGORA_HEARTBEAT_INTERVAL_SECONDS", "6"),
        ("AGORA_LEASE_TTL_SECONDS", "15"),
        ("AGORA_LEASE_RENEW_SECONDS", "3"),
        ("AGORA_NETWORK", "agora-mainnet-1"),
        ("AGORA_NODE_LIMIT", "off"),
        ("AGORA_ANONYMOUS_LIMIT", "2.5/10"),
        ("AGORA_LOG", "info,api=debug"),
        ("RUST_BACKTRACE", "1"),
    ] {
        assert_eq!(env(&rendered, name), Some(value), "{name}");
    }
    // The operator's own API key Secret; the chart generates none.
    let (volume, _) = volume_of(
        deployment,
        hub,
        env(&rendered, "AGORA_API_KEY_FILE").expect("AGORA_API_KEY_FILE"),
    );
    assert_eq!(volume["secret"]["secretName"].as_str(), Some("hub-api-key"));
    assert_eq!(volume["secret"]["items"][0]["key"].as_str(), Some("key"));
    assert!(rendered.of_kind("Secret").is_empty());
    assert_eq!(
        hub["image"].as_str(),
        Some("registry.example.org/mirror/agora:0.1.0-rc1")
    );
    assert_eq!(hub["imagePullPolicy"].as_str(), Some("Always"));
    assert_eq!(
        pod["imagePullSecrets"][0]["name"].as_str(),
        Some("registry-example")
    );
    assert!(args(&rendered).contains(&"--probe-targets=8".to_string()));
    assert_eq!(
        pod["nodeSelector"]["agora.example.org/pool"].as_str(),
        Some("control")
    );
    assert_eq!(pod["tolerations"][0]["key"].as_str(), Some("dedicated"));
    assert!(pod["affinity"]["nodeAffinity"].is_mapping());
    assert_eq!(
        pod["priorityClassName"].as_str(),
        Some("system-cluster-critical")
    );
    assert_eq!(pod["terminationGracePeriodSeconds"].as_u64(), Some(45));
    let spread: Vec<&str> = pod["topologySpreadConstraints"]
        .as_sequence()
        .expect("spread")
        .iter()
        .map(|c| c["topologyKey"].as_str().expect("a key"))
        .collect();
    assert_eq!(
        spread,
        ["kubernetes.io/hostname", "topology.kubernetes.io/zone"]
    );
    let template = &deployment["spec"]["template"]["metadata"];
    assert_eq!(
        template["labels"]["example.org/tier"].as_str(),
        Some("control-plane")
    );
    assert_eq!(
        template["annotations"]["example.org/team"].as_str(),
        Some("network")
    );
    assert_eq!(hub["resources"]["limits"]["memory"].as_str(), Some("2Gi"));
    assert_eq!(
        rendered.one("PodDisruptionBudget")["spec"]["maxUnavailable"].as_str(),
        Some("50%")
    );
    let account = rendered.one("ServiceAccount");
    assert_eq!(account["metadata"]["name"].as_str(), Some("agora-hub"));
    assert_eq!(pod["serviceAccountName"].as_str(), Some("agora-hub"));
    // The Service on 443, and Prometheus scraping every replica over HTTPS.
    let service = rendered.one("Service");
    assert_eq!(service["spec"]["type"].as_str(), Some("LoadBalancer"));
    assert_eq!(service["spec"]["ports"][0]["port"].as_u64(), Some(443));
    assert_eq!(
        service["spec"]["ports"][0]["targetPort"].as_str(),
        Some("http")
    );
    let monitor = rendered.one("ServiceMonitor");
    let service_labels = &service["metadata"]["labels"];
    let selector = monitor["spec"]["selector"]["matchLabels"]
        .as_mapping()
        .expect("a selector");
    assert!(selector.iter().all(|(k, v)| &service_labels[k] == v));
    assert_eq!(
        monitor["metadata"]["labels"]["release"].as_str(),
        Some("prometheus")
    );
    let endpoint = &monitor["spec"]["endpoints"][0];
    assert_eq!(endpoint["port"].as_str(), Some("http"));
    assert_eq!(endpoint["path"].as_str(), Some("/metrics"));
    assert_eq!(endpoint["scheme"].as_str(), Some("https"));
    assert_eq!(endpoint["interval"].as_str(), Some("15s"));
    assert_eq!(
        endpoint["tlsConfig"]["serverName"].as_str(),
        Some("hub.example.org")
    );
    // Every shipped dashboard, in the namespace Grafana's sidecar watches, with its label and the
    // annotation that files it in a folder.
    let maps = rendered.of_kind("ConfigMap");
    assert_eq!(maps.len(), shipped_dashboards().len());
    for map in maps {
        assert_eq!(map["metadata"]["namespace"].as_str(), Some("monitoring"));
        assert_eq!(
            map["metadata"]["labels"]["grafana_dashboard"].as_str(),
            Some("agora")
        );
        assert_eq!(
            map["metadata"]["annotations"]["grafana_folder"].as_str(),
            Some("Agora")
        );
    }
}

#[test]
fn the_other_side_of_every_switch() {
    let Some(helm) = helm() else { return };
    let rendered = helm.template(&[], &["single-replica-values.yaml"]);
    let pod = pod(&rendered);
    assert_eq!(
        deployment(&rendered)["metadata"]["name"].as_str(),
        Some("agora-hub")
    );
    // RBAC and the service account are managed elsewhere.
    for kind in [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
    ] {
        assert!(rendered.of_kind(kind).is_empty(), "{kind}");
    }
    assert_eq!(
        pod["serviceAccountName"].as_str(),
        Some("agora-hub-managed")
    );
    assert!(pod["topologySpreadConstraints"].is_null());
    // One replica may run the embedded devnet.
    assert_eq!(env(&rendered, "AGORA_CHAIN"), Some("embedded"));
    assert_eq!(env(&rendered, "AGORA_SETTLEMENT_EPOCH_SECONDS"), Some("60"));
    assert!(env(&rendered, "AGORA_CHAIN_RPC_URL").is_none());
    assert_eq!(args(&rendered), ["server", "--kubernetes"]);
    assert_eq!(
        hub(&rendered)["image"].as_str(),
        Some(
            "ghcr.io/agora/agora@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
        )
    );
    assert!(rendered.of_kind("ServiceMonitor").is_empty());
    // Another user, still non-root, read-only and without capabilities.
    let sc = &hub(&rendered)["securityContext"];
    assert_eq!(sc["runAsUser"].as_u64(), Some(10001));
    assert_eq!(sc["runAsNonRoot"].as_bool(), Some(true));
    assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(strings(&sc["capabilities"]["drop"]), ["ALL"]);
    assert_eq!(pod["securityContext"]["fsGroup"].as_u64(), Some(10001));
}

/// The dashboards the chart ships: (file name, contents) of every `dashboards/*.json`.
fn shipped_dashboards() -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = std::fs::read_dir(chart().join("dashboards"))
        .expect("charts/agora/dashboards")
        .map(|entry| entry.expect("an entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .map(|path| {
            let name = path
                .file_name()
                .expect("a name")
                .to_string_lossy()
                .into_owned();
            let text = std::fs::read_to_string(&path).expect("a dashboard");
            (name, text)
        })
        .collect();
    files.sort();
    files
}

#[test]
fn each_dashboard_file_becomes_one_labelled_config_map() {
    let Some(helm) = helm() else { return };
    let dashboards = shipped_dashboards();
    let names: Vec<&str> = dashboards.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        names,
        [
            "capacity.json",
            "jobs.json",
            "market.json",
            "node-fleet.json",
            "settlement.json"
        ]
    );
    assert!(
        helm.template(&REQUIRED, &[])
            .of_kind("ConfigMap")
            .is_empty(),
        "off by default"
    );
    let rendered = helm.template(
        &[
            REQUIRED[0],
            "dashboards.enabled=true",
            "dashboards.namespace=monitoring",
        ],
        &[],
    );
    rendered.validate("dashboards");
    let maps = rendered.of_kind("ConfigMap");
    assert_eq!(
        maps.len(),
        dashboards.len(),
        "one ConfigMap per dashboard, none for the README"
    );
    for (file, json) in &dashboards {
        let map = maps
            .iter()
            .find(|m| m["data"][file.as_str()].is_string())
            .unwrap_or_else(|| panic!("no ConfigMap holds {file}"));
        // Verbatim: the sidecar hands the file to Grafana as it is.
        assert_eq!(map["data"][file.as_str()].as_str(), Some(json.trim_end()));
        assert_eq!(map["metadata"]["namespace"].as_str(), Some("monitoring"));
        assert_eq!(
            map["metadata"]["labels"]["grafana_dashboard"].as_str(),
            Some("1")
        );
        // A ConfigMap holds at most 1 MiB.
        assert!(json.len() < 1024 * 1024, "{file} is {} bytes", json.len());
        // Stable identities: Grafana keys a provisioned dashboard by its uid.
        let parsed: serde_json::Value = serde_json::from_str(json).expect("a dashboard is JSON");
        let uid = parsed["uid"].as_str().unwrap_or_default();
        assert_eq!(
            format!("agora-{}", file.trim_end_matches(".json")),
            uid,
            "{file}'s uid"
        );
    }
}

#[test]
fn the_charts_crds_are_the_generated_ones() {
    let mut shipped: Vec<String> = std::fs::read_dir(chart().join("crds"))
        .expect("charts/agora/crds")
        .map(|e| {
            e.expect("an entry")
                .file_name()
                .into_string()
                .expect("UTF-8")
        })
        .collect();
    shipped.sort();
    assert_eq!(
        shipped,
        ["computejob.yaml", "gpunode.yaml"],
        "charts/agora/crds holds the generated CRDs only"
    );
    for file in &shipped {
        let generated = std::fs::read(repo().join("crds").join(file)).expect("crds/*.yaml");
        let copy = std::fs::read(chart().join("crds").join(file)).expect("the chart's copy");
        assert!(
            generated == copy,
            "charts/agora/crds/{file} differs from crds/{file}; refresh it with \
             `cp crds/computejob.yaml crds/gpunode.yaml charts/agora/crds/` (after \
             `cargo run -p crds --bin crdgen`), never by hand"
        );
    }
}

/// `alerts.enabled` installs the chart's alerts.yaml as a PrometheusRule: every rule group exactly
/// as the file holds it (the rules' own `{{ $labels }}` and `{{ $value }}` templates untouched by
/// Helm), with the labels Prometheus's ruleSelector matches; and the ServiceMonitor names the hub's
/// scrape job as the rules select it.
#[test]
fn the_alert_rules_render_as_a_prometheus_rule() {
    let Some(helm) = helm() else { return };
    assert!(
        helm.template(&REQUIRED, &[])
            .of_kind("PrometheusRule")
            .is_empty(),
        "off by default"
    );
    let text = std::fs::read_to_string(chart().join("alerts.yaml")).expect("alerts.yaml");
    let file: Value = serde_yaml::from_str(&text).expect("alerts.yaml is YAML");
    let groups: Vec<&str> = file["groups"]
        .as_sequence()
        .expect("groups")
        .iter()
        .map(|g| g["name"].as_str().expect("a group's name"))
        .collect();
    assert!(groups.len() >= 5, "{groups:?}");

    let rendered = helm.template(
        &[
            REQUIRED[0],
            "alerts.enabled=true",
            "alerts.labels.release=kube-prometheus-stack",
            "serviceMonitor.enabled=true",
        ],
        &[],
    );
    let rule = rendered.one("PrometheusRule");
    assert_eq!(
        rule["apiVersion"].as_str(),
        Some("monitoring.coreos.com/v1")
    );
    assert_eq!(rule["metadata"]["namespace"].as_str(), Some(NAMESPACE));
    let labels = &rule["metadata"]["labels"];
    assert_eq!(labels["release"].as_str(), Some("kube-prometheus-stack"));
    assert_eq!(labels["app.kubernetes.io/name"].as_str(), Some("agora"));
    // The spec is the file: the same groups, rules, expressions and annotation templates.
    assert_eq!(
        rule["spec"], file,
        "the PrometheusRule's spec differs from alerts.yaml"
    );
    let rendered_groups: Vec<&str> = rule["spec"]["groups"]
        .as_sequence()
        .expect("spec.groups")
        .iter()
        .map(|g| g["name"].as_str().expect("a group's name"))
        .collect();
    assert_eq!(rendered_groups, groups);
    assert!(rendered.yaml.contains("{{ $labels.instance }}"));
    assert!(rendered.yaml.contains("{{ $value | humanizeDuration }}"));

    // The hub's scrape job is the one the rules select, whatever the release is called.
    let endpoint = &rendered.one("ServiceMonitor")["spec"]["endpoints"][0];
    let relabel = endpoint["relabelings"]
        .as_sequence()
        .expect("relabelings")
        .iter()
        .find(|r| r["targetLabel"].as_str() == Some("job"))
        .expect("a relabeling of job");
    let job = relabel["replacement"].as_str().expect("the job's name");
    assert!(
        text.contains(&format!("absent(up{{job=\"{job}\"}})")),
        "alerts.yaml does not select job {job}"
    );

    // The values file with every option sets its own labels.
    let all = helm.template(&[], &["all-options-values.yaml"]);
    let rule = all.one("PrometheusRule");
    assert_eq!(
        rule["metadata"]["labels"]["release"].as_str(),
        Some("prometheus")
    );
    assert_eq!(rule["spec"], file);
}
