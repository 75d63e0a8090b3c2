//! The `kubernetes` executor's objects: what the agent creates in the node's own cluster to run one
//! worker of a stranger's job — a namespace of its own, a Pod under the restricted Pod Security
//! profile, and a NetworkPolicy that keeps the job away from other jobs and from the owner's
//! network.
//!
//! These are pure functions of the assignment and the owner's options, so every isolation rule is
//! checked by unit tests without a cluster; creating, watching and deleting the objects is
//! [`client`]'s part ([`Executor`]).
//!
//! Isolation, layer by layer:
//! - **Namespace per job**, labelled `pod-security.kubernetes.io/enforce: restricted`, so the API
//!   server itself refuses any Pod in it that breaks the restricted profile, whatever the agent
//!   sends (<https://kubernetes.io/docs/concepts/security/pod-security-standards/>).
//! - **Pod**: non-root, no privilege escalation, every capability dropped, the runtime's default
//!   seccomp profile, no host network/PID/IPC, no host paths, no service-account token, no service
//!   links; CPU, memory and GPU limits; an optional sandboxed `runtimeClassName` (gVisor, Kata) set
//!   by the owner; `activeDeadlineSeconds` from the job's `maxRuntime`.
//! - **NetworkPolicy**: ingress only from the job's own Pods (its workers rendezvous with each
//!   other); egress to the job's own Pods, to cluster DNS, and to the internet except private,
//!   link-local (cloud metadata) and carrier-grade NAT ranges, where the owner's own machines live.

pub mod client;
mod follow;

use std::collections::BTreeMap;

use crds::{agent::Assignment, v1alpha1::EnvVar};
use k8s_openapi::{
    api::{
        core::v1::{
            Capabilities, Container, EnvVar as K8sEnvVar, Namespace, Pod, PodSecurityContext,
            PodSpec, ResourceRequirements, SeccompProfile, SecurityContext,
        },
        networking::v1::{
            IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule,
            NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
        },
    },
    apimachinery::pkg::{
        api::resource::Quantity,
        apis::meta::v1::{LabelSelector, ObjectMeta},
        util::intstr::IntOrString,
    },
};

pub use self::client::Executor;

/// The capability a node with the kubernetes executor advertises (a workload's capability when it
/// has an `image` and no `builtin`).
pub const CAPABILITY: &str = "container";

/// The name of the workload's container in the worker's Pod (whose exit code and log are read).
pub const CONTAINER: &str = "worker";

/// The extended resource the NVIDIA device plugin offers GPUs as.
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";

/// Label on everything the executor creates, so an owner (and the agent after a restart) can find
/// it: `kubectl get ns -l app.kubernetes.io/managed-by=agora-node`.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "agora-node");

/// Address ranges a job may not reach: RFC 1918 private networks, link-local (where cloud metadata
/// services answer), and RFC 6598 carrier-grade NAT — the owner's own network, in short.
pub const BLOCKED_EGRESS: [&str; 5] = [
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "169.254.0.0/16",
    "100.64.0.0/10",
];

/// What the owner decides about the Pods the executor runs (chart values).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodOptions {
    /// A sandboxed runtime (`gvisor`, `kata`) for the Pods, when the cluster has one.
    pub runtime_class: Option<String>,
    /// CPU limit per worker (a Kubernetes quantity: `8`, `7500m`).
    pub cpu: String,
    /// Memory limit per worker (`64Gi`).
    pub memory: String,
    /// The user the workload runs as (non-zero: the restricted profile forbids root).
    pub run_as_user: i64,
}

impl Default for PodOptions {
    fn default() -> Self {
        Self {
            runtime_class: None,
            cpu: "8".into(),
            memory: "32Gi".into(),
            run_as_user: 65_534,
        }
    }
}

/// Checks a CPU or memory limit given on the command line (`--job-cpu`, `--job-memory`) is a
/// Kubernetes quantity (`8`, `7500m`, `0.5`, `32Gi`, `64G`), so a typo stops the agent at start
/// instead of failing every Pod at creation.
pub fn parse_quantity(value: &str) -> Result<String, String> {
    const SUFFIXES: [&str; 13] = [
        "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "m", "k", "M", "G", "T", "P", "E",
    ];
    let number = SUFFIXES
        .iter()
        .find_map(|suffix| value.strip_suffix(suffix))
        .unwrap_or(value);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, "0"));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if digits(whole) && digits(fraction) && number.bytes().any(|b| b != b'0' && b != b'.') {
        Ok(value.to_string())
    } else {
        Err(format!(
            "{value:?} is not a positive Kubernetes quantity (e.g. `8`, `7500m`, `32Gi`)"
        ))
    }
}

/// Why an assignment cannot run on this executor.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PodError {
    #[error("the kubernetes executor runs container images; this workload names no image")]
    NoImage,
}

/// The namespace of a job's workers on this node: `agora-` + the job id (job ids are lowercase
/// letters, digits and dashes, short enough for a DNS label).
pub fn namespace_name(job: &str) -> String {
    format!("agora-{job}")
}

fn labels(assignment: &Assignment) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string()),
        ("agora.dev/job".to_string(), assignment.job.clone()),
        ("agora.dev/assignment".to_string(), assignment.id.clone()),
        ("agora.dev/rank".to_string(), assignment.rank.to_string()),
    ])
}

/// The job's namespace, with the restricted Pod Security profile enforced on it.
pub fn namespace(assignment: &Assignment) -> Namespace {
    let mut labels = BTreeMap::from([
        (MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string()),
        ("agora.dev/job".to_string(), assignment.job.clone()),
    ]);
    for mode in ["enforce", "audit", "warn"] {
        labels.insert(
            format!("pod-security.kubernetes.io/{mode}"),
            "restricted".into(),
        );
    }
    Namespace {
        metadata: ObjectMeta {
            name: Some(namespace_name(&assignment.job)),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    }
}

/// The worker's Pod: the workload's image, command and arguments with `env` (the worker
/// environment every executor gives, see docs/workers.md), under the restricted profile.
pub fn pod(assignment: &Assignment, env: &[EnvVar], options: &PodOptions) -> Result<Pod, PodError> {
    let image = assignment.workload.image.clone().ok_or(PodError::NoImage)?;
    let mut limits = BTreeMap::from([
        ("cpu".to_string(), Quantity(options.cpu.clone())),
        ("memory".to_string(), Quantity(options.memory.clone())),
    ]);
    if !assignment.gpus.is_empty() {
        limits.insert(
            GPU_RESOURCE.to_string(),
            Quantity(assignment.gpus.len().to_string()),
        );
    }
    let container = Container {
        name: CONTAINER.into(),
        image: Some(image),
        command: assignment.workload.command.clone(),
        args: assignment.workload.args.clone(),
        env: Some(
            env.iter()
                .map(|v| K8sEnvVar {
                    name: v.name.clone(),
                    value: Some(v.value.clone()),
                    ..K8sEnvVar::default()
                })
                .collect(),
        ),
        resources: Some(ResourceRequirements {
            // Requests equal limits: the Pod is Guaranteed, so it is the last to be evicted.
            requests: Some(limits.clone()),
            limits: Some(limits),
            ..ResourceRequirements::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            privileged: Some(false),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: None,
            }),
            seccomp_profile: Some(runtime_default()),
            ..SecurityContext::default()
        }),
        ..Container::default()
    };
    let mut annotations = BTreeMap::new();
    // The device plugin picks the physical GPUs for `nvidia.com/gpu`; the GPUs the hub assigned are
    // recorded for the owner and for matching telemetry to the job.
    annotations.insert("agora.dev/gpus".to_string(), assignment.gpus.join(","));
    Ok(Pod {
        metadata: ObjectMeta {
            name: Some(assignment.id.clone()),
            namespace: Some(namespace_name(&assignment.job)),
            labels: Some(labels(assignment)),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            containers: vec![container],
            restart_policy: Some("Never".into()),
            active_deadline_seconds: assignment
                .max_runtime_seconds
                .and_then(|s| i64::try_from(s).ok()),
            runtime_class_name: options.runtime_class.clone(),
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            host_network: Some(false),
            host_pid: Some(false),
            host_ipc: Some(false),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(options.run_as_user),
                run_as_group: Some(options.run_as_user),
                seccomp_profile: Some(runtime_default()),
                ..PodSecurityContext::default()
            }),
            ..PodSpec::default()
        }),
        ..Pod::default()
    })
}

fn runtime_default() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".into(),
        localhost_profile: None,
    }
}

/// The job's NetworkPolicy: its Pods talk to each other, to cluster DNS and to the internet, and
/// to nothing else.
pub fn network_policy(assignment: &Assignment) -> NetworkPolicy {
    let same_job = NetworkPolicyPeer {
        pod_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(
                "agora.dev/job".to_string(),
                assignment.job.clone(),
            )])),
            ..LabelSelector::default()
        }),
        ..NetworkPolicyPeer::default()
    };
    let dns = NetworkPolicyEgressRule {
        to: Some(vec![NetworkPolicyPeer {
            namespace_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(
                    "kubernetes.io/metadata.name".to_string(),
                    "kube-system".to_string(),
                )])),
                ..LabelSelector::default()
            }),
            ..NetworkPolicyPeer::default()
        }]),
        ports: Some(
            ["UDP", "TCP"]
                .into_iter()
                .map(|protocol| NetworkPolicyPort {
                    protocol: Some(protocol.into()),
                    port: Some(IntOrString::Int(53)),
                    ..NetworkPolicyPort::default()
                })
                .collect(),
        ),
    };
    let internet = NetworkPolicyEgressRule {
        to: Some(vec![NetworkPolicyPeer {
            ip_block: Some(IPBlock {
                cidr: "0.0.0.0/0".into(),
                except: Some(BLOCKED_EGRESS.iter().map(|c| c.to_string()).collect()),
            }),
            ..NetworkPolicyPeer::default()
        }]),
        ports: None,
    };
    NetworkPolicy {
        metadata: ObjectMeta {
            name: Some("agora-job-isolation".into()),
            namespace: Some(namespace_name(&assignment.job)),
            labels: Some(BTreeMap::from([(
                MANAGED_BY.0.to_string(),
                MANAGED_BY.1.to_string(),
            )])),
            ..ObjectMeta::default()
        },
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector::default()),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(vec![same_job.clone()]),
                ports: None,
            }]),
            egress: Some(vec![
                NetworkPolicyEgressRule {
                    to: Some(vec![same_job]),
                    ports: None,
                },
                dns,
                internet,
            ]),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crds::v1alpha1::Workload;

    fn assignment(image: Option<&str>) -> Assignment {
        let workload: Workload = serde_json::from_value(serde_json::json!({
            "image": image,
            "command": ["python", "train.py"],
            "args": ["--epochs", "3"],
        }))
        .unwrap();
        serde_json::from_value(serde_json::json!({
            "id": "asg-job-1a2-2-1",
            "job": "job-1a2",
            "attempt": 2,
            "rank": 1,
            "workers": 2,
            "gpus": ["GPU-aaaa", "GPU-bbbb"],
            "workload": workload,
            "maxRuntimeSeconds": 3600,
            "env": [],
        }))
        .unwrap()
    }

    fn env() -> Vec<EnvVar> {
        vec![EnvVar {
            name: "AGORA_WORKER_RANK".into(),
            value: "1".into(),
        }]
    }

    #[test]
    fn limits_must_be_kubernetes_quantities() {
        for good in ["8", "7500m", "0.5", "32Gi", "64G", "1.5Ti"] {
            assert_eq!(parse_quantity(good).as_deref(), Ok(good));
        }
        for bad in ["", "0", "8 cores", "32GB", "-1", "Gi", "1.", "m"] {
            let err = parse_quantity(bad).unwrap_err();
            assert!(err.contains("Kubernetes quantity"), "{bad}: {err}");
        }
    }

    #[test]
    fn the_pod_meets_the_restricted_profile() {
        let pod = pod(
            &assignment(Some("ghcr.io/x/train:1")),
            &env(),
            &PodOptions::default(),
        )
        .unwrap();
        let spec = pod.spec.unwrap();
        assert_eq!(spec.host_network, Some(false));
        assert_eq!(spec.host_pid, Some(false));
        assert_eq!(spec.host_ipc, Some(false));
        assert!(spec.volumes.is_none(), "no volumes, so no host paths");
        assert_eq!(spec.automount_service_account_token, Some(false));
        let pod_security = spec.security_context.unwrap();
        assert_eq!(pod_security.run_as_non_root, Some(true));
        assert_ne!(pod_security.run_as_user, Some(0));
        assert_eq!(
            pod_security.seccomp_profile.unwrap().type_,
            "RuntimeDefault"
        );
        let container = &spec.containers[0];
        let security = container.security_context.clone().unwrap();
        assert_eq!(security.allow_privilege_escalation, Some(false));
        assert_eq!(security.privileged, Some(false));
        assert_eq!(
            security.capabilities.unwrap().drop,
            Some(vec!["ALL".to_string()])
        );
        assert!(container.ports.is_none(), "no host ports");
    }

    #[test]
    fn the_pod_runs_the_workload_with_its_gpus_limits_and_deadline() {
        let options = PodOptions {
            runtime_class: Some("gvisor".into()),
            ..PodOptions::default()
        };
        let pod = pod(&assignment(Some("ghcr.io/x/train:1")), &env(), &options).unwrap();
        assert_eq!(pod.metadata.namespace.as_deref(), Some("agora-job-1a2"));
        assert_eq!(pod.metadata.name.as_deref(), Some("asg-job-1a2-2-1"));
        let spec = pod.spec.unwrap();
        assert_eq!(spec.runtime_class_name.as_deref(), Some("gvisor"));
        assert_eq!(spec.active_deadline_seconds, Some(3600));
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
        let container = &spec.containers[0];
        assert_eq!(container.image.as_deref(), Some("ghcr.io/x/train:1"));
        assert_eq!(
            container.command,
            Some(vec!["python".to_string(), "train.py".to_string()])
        );
        let limits = container.resources.clone().unwrap().limits.unwrap();
        assert_eq!(limits[GPU_RESOURCE], Quantity("2".into()));
        assert_eq!(limits["memory"], Quantity("32Gi".into()));
        let env = container.env.clone().unwrap();
        assert_eq!(env[0].name, "AGORA_WORKER_RANK");
        assert_eq!(
            pod.metadata.annotations.unwrap()["agora.dev/gpus"],
            "GPU-aaaa,GPU-bbbb"
        );
    }

    #[test]
    fn a_workload_without_an_image_is_refused() {
        assert_eq!(
            pod(&assignment(None), &env(), &PodOptions::default()).unwrap_err(),
            PodError::NoImage
        );
    }

    #[test]
    fn the_namespace_enforces_the_restricted_profile() {
        let ns = namespace(&assignment(Some("x")));
        let labels = ns.metadata.labels.unwrap();
        assert_eq!(labels["pod-security.kubernetes.io/enforce"], "restricted");
        assert_eq!(ns.metadata.name.as_deref(), Some("agora-job-1a2"));
    }

    #[test]
    fn the_network_policy_admits_only_the_job_dns_and_the_public_internet() {
        let policy = network_policy(&assignment(Some("x")));
        let spec = policy.spec.unwrap();
        assert_eq!(
            spec.policy_types,
            Some(vec!["Ingress".to_string(), "Egress".to_string()])
        );
        let ingress = spec.ingress.unwrap();
        assert_eq!(ingress.len(), 1);
        let from = ingress[0].from.clone().unwrap();
        assert_eq!(
            from[0].pod_selector.clone().unwrap().match_labels.unwrap()["agora.dev/job"],
            "job-1a2",
            "only the job's own workers may connect"
        );
        let egress = spec.egress.unwrap();
        let internet = egress
            .iter()
            .flat_map(|rule| rule.to.iter().flatten())
            .find_map(|peer| peer.ip_block.clone())
            .expect("an internet rule");
        assert_eq!(internet.cidr, "0.0.0.0/0");
        let except = internet.except.unwrap();
        for private in [
            "10.0.0.0/8",
            "172.16.0.0/12",
            "192.168.0.0/16",
            "169.254.0.0/16",
        ] {
            assert!(
                except.iter().any(|c| c == private),
                "{private} must be blocked"
            );
        }
    }
}
