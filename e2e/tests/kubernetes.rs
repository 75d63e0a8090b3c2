//! The Kubernetes path end to end, against a real cluster, driven the way a user drives it: `helm`
//! installs the hub (charts/agora, `agora server --kubernetes`) over a throwaway PostgreSQL and the
//! node agents (charts/agora-node), `kubectl apply` submits every ComputeJob in examples/, and
//! `kubectl get`/`kubectl delete` watch and end them. The suite checks what a user relies on: the
//! agents' nodes appear as Ready GpuNodes, every job is accepted by the operator (a hub job id and
//! `Accepted=True`), builtin jobs reach `Succeeded` with their usage in the status (the same usage
//! the hub's REST API reports) and the operator's Events on the object, container jobs say why
//! they wait, `kubectl delete` cancels them on the hub before the objects go, and nothing of the
//! run is left in the cluster afterwards.
//!
//! It runs only when `AGORA_E2E_KUBECONFIG` names a kubeconfig (otherwise each test says why it is
//! skipped and passes; with `AGORA_E2E_REQUIRE_KUBERNETES=1` it fails instead), with the image
//! under test in `AGORA_E2E_IMAGE` (`repository:tag`, loaded into the cluster beforehand), `helm`
//! and `kubectl` from `AGORA_HELM`/`AGORA_KUBECTL` or the PATH. `AGORA_E2E_REAL_GPUS=1` installs the
//! agents on the cluster's GPU nodes with the kubernetes executor instead of simulated GPUs.
//! docs/e2e.md says how to run it on kind or k3d, and what it has been run against.
//!
//! The cluster should be the suite's own: GpuNodes are cluster-scoped, the operator manages every
//! GpuNode labelled `app.kubernetes.io/managed-by=agora-operator`, and the suite refuses to start
//! where such GpuNodes exist already. Everything else lives in a namespace of its own
//! (`agora-e2e-<random>`), and a guard undoes the run even when the test fails: it removes the
//! ComputeJobs, uninstalls both releases, deletes the namespace, then deletes the GpuNodes the
//! operator made (once the hub is gone nothing else would: the operator deletes a GpuNode only
//! when its node leaves the hub's registry) and the CRDs if this run installed them.
#![cfg(unix)]

use std::{
    collections::{BTreeSet, hash_map::RandomState},
    env,
    fmt::{self, Display},
    hash::{BuildHasher, Hasher},
    io::{Read, Write},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use e2e::{Api, Process, free_port, repo_root};
use serde_json::Value;

/// Image pulls, PostgreSQL's first start, `helm install --wait`: generous for a cold cluster.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// Agents registering and the operator mirroring them.
const NODES_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// The operator submitting a ComputeJob and writing its status.
const ACCEPT_TIMEOUT: Duration = Duration::from_secs(3 * 60);
/// A job running to its end (the quickstart sleeps 10 s; a real-GPU job pulls its image first).
const RUN_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// `kubectl delete`, `helm uninstall`, a namespace's deletion.
const DELETE_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// A single `kubectl get` or the like.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2 * 60);

/// Between two looks at the cluster.
const POLL_INTERVAL: Duration = Duration::from_secs(2);
/// How often a wait prints what it still waits for.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(30);

/// The label selector of the GpuNodes the operator manages.
const MANAGED_GPUNODES: &str = "app.kubernetes.io/managed-by=agora-operator";
/// The label selector of the namespaces the kubernetes executor makes for its job pods
/// (gpu-runtime/src/executor/kubernetes), one per job, deleted when the job ends.
const EXECUTOR_NAMESPACES: &str = "app.kubernetes.io/managed-by=agora-node";
/// The operator's Lease (charts/agora's operator.leaseName default).
const OPERATOR_LEASE: &str = "agora-operator";
/// What each simulated agent offers.
const SIMULATED_GPUS: &str = "8xH100-80GB";
/// The agents' region: the one the examples' placement constraints name.
const REGION: &str = "eu-west";
/// The CRDs charts/agora installs (Helm never deletes them).
const CRDS: [&str; 2] = ["computejobs.agora.dev", "gpunodes.agora.dev"];

// ---------------------------------------------------------------------------------------------
// Configuration

/// What the suite runs against, from the environment.
struct Config {
    kubeconfig: PathBuf,
    image: Image,
    helm: PathBuf,
    kubectl: PathBuf,
    real_gpus: bool,
}

/// The suite's configuration, or `None` (after saying why) when no cluster is configured.
fn config(test: &str) -> Option<Config> {
    let Some(kubeconfig) = env::var_os("AGORA_E2E_KUBECONFIG") else {
        assert!(
            env::var("AGORA_E2E_REQUIRE_KUBERNETES").as_deref() != Ok("1"),
            "AGORA_E2E_REQUIRE_KUBERNETES=1 but AGORA_E2E_KUBECONFIG is not set: export it to the \
             kubeconfig of a cluster of the suite's own (docs/e2e.md)"
        );
        eprintln!(
            "skipping {test}: AGORA_E2E_KUBECONFIG is not set, so there is no cluster to run \
             against (docs/e2e.md, \"The Kubernetes suite\")"
        );
        return None;
    };
    let kubeconfig = PathBuf::from(kubeconfig);
    assert!(
        kubeconfig.is_file(),
        "AGORA_E2E_KUBECONFIG={} is not a file",
        kubeconfig.display()
    );
    let reference = env::var("AGORA_E2E_IMAGE").unwrap_or_else(|_| {
        panic!(
            "AGORA_E2E_IMAGE is not set: build the image (docker build -t localhost/agora:e2e .), \
             load it into the cluster (kind load docker-image / k3d image import) and export \
             AGORA_E2E_IMAGE=localhost/agora:e2e"
        )
    });
    let image =
        Image::parse(&reference).unwrap_or_else(|e| panic!("AGORA_E2E_IMAGE={reference}: {e}"));
    Some(Config {
        kubeconfig,
        image,
        helm: tool("AGORA_HELM", "helm"),
        kubectl: tool("AGORA_KUBECTL", "kubectl"),
        real_gpus: env::var("AGORA_E2E_REAL_GPUS").as_deref() == Ok("1"),
    })
}

/// The program named by `$variable`, or `name` found on the PATH.
fn tool(variable: &str, name: &str) -> PathBuf {
    if let Some(path) = env::var_os(variable) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "{variable}={} is not a file",
            path.display()
        );
        return path;
    }
    env::var_os("PATH")
        .iter()
        .flat_map(env::split_paths)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| panic!("{name} is not on the PATH; install it or set {variable}"))
}

/// An image reference split the way both charts take it (`image.registry`, `image.repository`,
/// `image.tag`, `image.digest`), with Docker's defaults filled in, so that the pods ask for exactly
/// the name `kind load` or `k3d image import` stored (`agora:e2e` is stored as
/// `docker.io/library/agora:e2e`).
#[derive(Debug, PartialEq)]
struct Image {
    registry: String,
    repository: String,
    tag: String,
    digest: String,
}

impl Image {
    fn parse(reference: &str) -> Result<Image, String> {
        let (name, digest) = match reference.split_once('@') {
            Some((name, digest)) => (name, digest.to_string()),
            None => (reference, String::new()),
        };
        let valid_digest = digest.strip_prefix("sha256:").is_some_and(|hex| {
            hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        });
        if !digest.is_empty() && !valid_digest {
            return Err(format!(
                "the digest must be sha256: and 64 lowercase hex digits, not {digest}"
            ));
        }
        let last_slash = name.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name[last_slash..].rfind(':') {
            Some(i) => (
                &name[..last_slash + i],
                name[last_slash + i + 1..].to_string(),
            ),
            None => (name, String::new()),
        };
        if tag.is_empty() && digest.is_empty() {
            return Err(
                "give a tag (repository:tag) or a digest: without one the charts would run \
                 their appVersion's image, not the one under test"
                    .to_string(),
            );
        }
        if name.is_empty() {
            return Err("no repository".to_string());
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), rest.to_string())
            }
            Some(_) => ("docker.io".to_string(), name.to_string()),
            None => ("docker.io".to_string(), format!("library/{name}")),
        };
        Ok(Image {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// `--set` pairs for either chart.
    fn values(&self) -> Vec<(String, String)> {
        let mut values = vec![
            ("image.registry".to_string(), self.registry.clone()),
            ("image.repository".to_string(), self.repository.clone()),
        ];
        if !self.tag.is_empty() {
            values.push(("image.tag".to_string(), self.tag.clone()));
        }
        if !self.digest.is_empty() {
            values.push(("image.digest".to_string(), self.digest.clone()));
        }
        values
    }
}

/// The names of one run: the namespace and both Helm releases carry the same random suffix, so the
/// releases' cluster-scoped RBAC never collides with another installation's.
struct Names {
    namespace: String,
    hub_release: String,
    node_release: String,
}

impl Names {
    fn new(suffix: &str) -> Names {
        Names {
            namespace: format!("agora-e2e-{suffix}"),
            // charts/agora names its objects after the release when it contains "agora".
            hub_release: format!("agora-e2e-{suffix}"),
            node_release: format!("agora-node-e2e-{suffix}"),
        }
    }

    /// The hub's Service, as the agents reach it inside the cluster.
    fn hub_url(&self) -> String {
        format!("http://{}.{}.svc:7600", self.hub_release, self.namespace)
    }

    /// The hub tenant a namespace's ComputeJobs belong to (operator/src/hub.rs, `tenant_of`).
    fn tenant(&self) -> String {
        format!("k8s-{}", self.namespace)
    }
}

/// charts/agora's values for the suite: two replicas (the operator's leader election between
/// them), the database URL from the Secret the suite makes, the image under test, text logs for
/// the failure dump.
fn hub_values(image: &Image) -> Vec<(String, String)> {
    let mut values = vec![
        ("replicas".to_string(), "2".to_string()),
        (
            "database.existingSecret".to_string(),
            "agora-database".to_string(),
        ),
        ("logJson".to_string(), "false".to_string()),
    ];
    values.extend(image.values());
    values
}

/// charts/agora-node's values for the suite: the hub's Service over plain HTTP (it never leaves
/// the cluster), state in an emptyDir (nothing left on the nodes' disks), and either simulated
/// GPUs with the builtin executor, or the node's real GPUs with the kubernetes executor as well.
fn node_values(names: &Names, image: &Image, real_gpus: bool) -> Vec<(String, String)> {
    let mut values = vec![
        ("hub.url".to_string(), names.hub_url()),
        ("hub.allowPlainHttp".to_string(), "true".to_string()),
        ("region".to_string(), REGION.to_string()),
        ("state.type".to_string(), "emptyDir".to_string()),
        ("logJson".to_string(), "false".to_string()),
    ];
    if real_gpus {
        values.push(("executors".to_string(), "{builtin,kubernetes}".to_string()));
        values.push(("rbac.kubernetesExecutor".to_string(), "true".to_string()));
    } else {
        values.push(("simulateGpus".to_string(), SIMULATED_GPUS.to_string()));
        values.push(("executors".to_string(), "{builtin}".to_string()));
    }
    values.extend(image.values());
    values
}

/// `--set NAME=VALUE` arguments.
fn set_args(values: &[(String, String)]) -> Vec<String> {
    values
        .iter()
        .flat_map(|(name, value)| ["--set".to_string(), format!("{name}={value}")])
        .collect()
}

/// Eight random hex digits (std's randomly keyed hasher over the clock and the process id: no
/// dependency for a name).
fn random_hex() -> String {
    let mut hasher = RandomState::new().build_hasher();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    hasher.write_u128(now.as_nanos());
    hasher.write_u32(std::process::id());
    format!("{:016x}", hasher.finish())[..8].to_string()
}

// ---------------------------------------------------------------------------------------------
// Running kubectl and helm

/// What a finished command left behind.
struct Ran {
    command: String,
    success: bool,
    stdout: String,
    stderr: String,
}

impl Display for Ran {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.command,
            if self.success { "succeeded" } else { "failed" },
            self.stdout.trim_end(),
            self.stderr.trim_end()
        )
    }
}

/// Runs `program ARGS` with `KUBECONFIG` set (and `stdin` fed to it), killing it after `timeout`.
/// Never panics: the guard's clean-up uses it while a failed test unwinds.
fn run(
    program: &Path,
    args: &[&str],
    envs: &[(&str, &Path)],
    stdin: Option<&str>,
    timeout: Duration,
) -> Ran {
    let name = program.file_name().map_or_else(
        || program.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let command = format!("{name} {}", args.join(" "));
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, value) in envs {
        cmd.env(key, value);
    }
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            return Ran {
                command,
                success: false,
                stdout: String::new(),
                stderr: format!("could not start: {e}"),
            };
        }
    };
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A command that exits without reading its input is reported by its status below.
        let _ = pipe.write_all(text.as_bytes());
    }
    // Read both pipes on threads so that a chatty command cannot block on a full pipe.
    let reader = |pipe: Option<Box<dyn Read + Send>>| {
        thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            String::from_utf8_lossy(&bytes).into_owned()
        })
    };
    let stdout = reader(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = reader(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let started = Instant::now();
    let (success, timed_out) = loop {
        match child.try_wait() {
            Ok(Some(status)) => break (status.success(), false),
            Ok(None) if started.elapsed() >= timeout => {
                let _ = child.kill();
                let _ = child.wait();
                break (false, true);
            }
            Ok(None) => thread::sleep(Duration::from_millis(50)),
            Err(_) => break (false, false),
        }
    };
    let mut stderr = stderr.join().unwrap_or_default();
    if timed_out {
        stderr.push_str(&format!("\n(killed after {timeout:?})"));
    }
    Ran {
        command,
        success,
        stdout: stdout.join().unwrap_or_default(),
        stderr,
    }
}

/// `kubectl` and `helm` against the configured cluster. Helm keeps its cache and configuration in a
/// temporary directory, so a run never reads or changes the user's repositories.
struct Cluster {
    config: Config,
    helm_home: tempfile::TempDir,
}

impl Cluster {
    fn new(config: Config) -> Cluster {
        Cluster {
            config,
            helm_home: tempfile::tempdir().expect("a temporary Helm home"),
        }
    }

    fn envs(&self) -> Vec<(&'static str, &Path)> {
        vec![
            ("KUBECONFIG", self.config.kubeconfig.as_path()),
            ("HELM_CACHE_HOME", self.helm_home.path()),
            ("HELM_CONFIG_HOME", self.helm_home.path()),
            ("HELM_DATA_HOME", self.helm_home.path()),
        ]
    }

    fn kubectl_with(&self, args: &[&str], stdin: Option<&str>, timeout: Duration) -> Ran {
        run(&self.config.kubectl, args, &self.envs(), stdin, timeout)
    }

    fn kubectl(&self, args: &[&str]) -> Ran {
        self.kubectl_with(args, None, COMMAND_TIMEOUT)
    }

    /// `kubectl ARGS`' stdout; panics with both outputs if it fails.
    #[track_caller]
    fn kubectl_ok(&self, args: &[&str]) -> String {
        let ran = self.kubectl(args);
        assert!(ran.success, "{ran}");
        ran.stdout
    }

    /// `kubectl ARGS -o json`, parsed; `Err` carries what went wrong, for polls.
    fn kubectl_json(&self, args: &[&str]) -> Result<Value, String> {
        let mut args = args.to_vec();
        args.extend(["-o", "json"]);
        let ran = self.kubectl(&args);
        if !ran.success {
            return Err(ran.to_string());
        }
        serde_json::from_str(&ran.stdout).map_err(|e| format!("not JSON ({e}): {ran}"))
    }

    fn helm(&self, args: &[&str], timeout: Duration) -> Ran {
        run(&self.config.helm, args, &self.envs(), None, timeout)
    }

    /// The names (`kind/name`) `kubectl get ARGS -o name` lists.
    fn names(&self, args: &[&str]) -> Result<Vec<String>, String> {
        let mut args = args.to_vec();
        args.extend(["-o", "name"]);
        let ran = self.kubectl(&args);
        if !ran.success {
            return Err(ran.to_string());
        }
        Ok(ran.stdout.lines().map(str::to_string).collect())
    }

    fn crd_exists(&self, crd: &str) -> bool {
        self.kubectl(&["get", "crd", crd, "-o", "name"]).success
    }
}

/// Calls `check` every 2 s until it returns `Ok`, printing what it waits for and, every 30 s, what
/// it last saw; panics with the last sighting after `timeout`.
#[track_caller]
fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Result<T, String>) -> T {
    eprintln!("waiting up to {}s for {what}", timeout.as_secs());
    let started = Instant::now();
    let mut reported = started;
    loop {
        match check() {
            Ok(value) => {
                eprintln!("  {what}: yes, after {}s", started.elapsed().as_secs());
                return value;
            }
            Err(seen) if started.elapsed() >= timeout => {
                panic!("timed out after {timeout:?} waiting for {what}; last seen: {seen}")
            }
            Err(seen) => {
                if reported.elapsed() >= PROGRESS_INTERVAL {
                    eprintln!(
                        "  still waiting for {what} ({}s): {seen}",
                        started.elapsed().as_secs()
                    );
                    reported = Instant::now();
                }
                thread::sleep(POLL_INTERVAL);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The run and its clean-up

/// Everything one run made, and the guard that removes it: dropping a `Run` that was not cleaned
/// up (the test failed) prints what the cluster looked like, then cleans up anyway.
struct Run {
    cluster: Cluster,
    names: Names,
    /// Whether the CRDs were in the cluster before (then they are not this run's to delete).
    crds_preexisted: bool,
    cleaned: bool,
}

impl Run {
    /// Removes what the run made and returns what could not be removed (empty: nothing is left).
    /// Never panics, so that it can run while a failed test unwinds.
    fn clean_up(&mut self) -> Vec<String> {
        self.cleaned = true;
        let c = &self.cluster;
        let ns = self.names.namespace.as_str();
        let mut problems = Vec::new();
        eprintln!("cleaning up namespace {ns} and what the run made outside it");

        // ComputeJobs first, while the hub can still cancel their jobs. One whose finalizer the
        // operator does not release (it is broken or gone) would block the namespace's deletion,
        // so it loses the finalizer by hand.
        if c.crd_exists(CRDS[0]) {
            let _ = c.kubectl(&["delete", "computejobs", "--all", "-n", ns, "--wait=false"]);
            let deadline = Instant::now() + Duration::from_secs(120);
            let mut left = Vec::new();
            while Instant::now() < deadline {
                left = c.names(&["computejobs", "-n", ns]).unwrap_or_default();
                if left.is_empty() {
                    break;
                }
                thread::sleep(POLL_INTERVAL);
            }
            for object in left {
                let _ = c.kubectl(&[
                    "patch",
                    &object,
                    "-n",
                    ns,
                    "--type=merge",
                    "-p",
                    r#"{"metadata":{"finalizers":null}}"#,
                ]);
                problems.push(format!(
                    "{object} kept the operator's finalizer for 2 minutes after its deletion; \
                     removed it by hand"
                ));
            }
        }

        let timeout = format!("{}s", DELETE_TIMEOUT.as_secs());
        for release in [&self.names.node_release, &self.names.hub_release] {
            let ran = c.helm(
                &[
                    "uninstall",
                    release,
                    "-n",
                    ns,
                    "--wait",
                    "--timeout",
                    &timeout,
                ],
                DELETE_TIMEOUT + COMMAND_TIMEOUT,
            );
            if !ran.success && !ran.stderr.contains("not found") {
                problems.push(format!("uninstalling release {release}: {ran}"));
            }
        }

        let ran = c.kubectl_with(
            &[
                "delete",
                "namespace",
                ns,
                "--ignore-not-found",
                "--wait=true",
                &format!("--timeout={timeout}"),
            ],
            None,
            DELETE_TIMEOUT + COMMAND_TIMEOUT,
        );
        if !ran.success {
            problems.push(format!("deleting namespace {ns}: {ran}"));
        }
        match c.names(&["namespace", ns, "--ignore-not-found"]) {
            Ok(left) if left.is_empty() => {}
            other => problems.push(format!("namespace {ns} is still there: {other:?}")),
        }

        // GpuNodes are cluster-scoped and outlive the namespace. The operator deletes one only
        // when its node leaves the hub's registry, and the hub is gone now, so the run deletes the
        // ones it caused (the suite started only where none existed).
        if c.crd_exists(CRDS[1]) {
            let ran = c.kubectl(&[
                "delete",
                "gpunodes",
                "-l",
                MANAGED_GPUNODES,
                "--wait=true",
                "--timeout=120s",
            ]);
            if !ran.success {
                problems.push(format!("deleting the GpuNodes: {ran}"));
            }
            match c.names(&["gpunodes", "-l", MANAGED_GPUNODES]) {
                Ok(left) if left.is_empty() => {}
                other => problems.push(format!("GpuNodes are left: {other:?}")),
            }
        }

        // The kubernetes executor's job namespaces (real GPUs only) are the agents' to delete when
        // a job ends; any left now outlived their agents (the suite started only where none
        // existed).
        match c.names(&["namespaces", "-l", EXECUTOR_NAMESPACES]) {
            Ok(left) if left.is_empty() => {}
            Ok(left) => {
                let ran = c.kubectl_with(
                    &[
                        "delete",
                        "namespaces",
                        "-l",
                        EXECUTOR_NAMESPACES,
                        "--wait=true",
                        &format!("--timeout={timeout}"),
                    ],
                    None,
                    DELETE_TIMEOUT + COMMAND_TIMEOUT,
                );
                problems.push(format!(
                    "the kubernetes executor's job namespaces outlived their jobs: {left:?}; \
                     deleted them: {}",
                    if ran.success {
                        "done".to_string()
                    } else {
                        ran.to_string()
                    }
                ));
            }
            Err(e) => problems.push(format!("listing the executor's namespaces: {e}")),
        }

        // Helm installs CRDs but never deletes them; this run deletes them only if it put them
        // there.
        if !self.crds_preexisted {
            let mut args = vec!["delete", "crd"];
            args.extend(CRDS);
            args.extend(["--ignore-not-found", "--wait=true", "--timeout=120s"]);
            let ran = c.kubectl(&args);
            if !ran.success {
                problems.push(format!("deleting the CRDs: {ran}"));
            }
            for crd in CRDS {
                if c.crd_exists(crd) {
                    problems.push(format!("CRD {crd} is still there"));
                }
            }
        }

        // The releases' cluster-scoped RBAC goes with `helm uninstall`.
        for release in [&self.names.hub_release, &self.names.node_release] {
            let selector = format!("app.kubernetes.io/instance={release}");
            match c.names(&["clusterroles,clusterrolebindings", "-l", &selector]) {
                Ok(left) if left.is_empty() => {}
                other => problems.push(format!("RBAC of {release} is left: {other:?}")),
            }
        }
        problems
    }

    /// Prints what the cluster looked like, for a failed run.
    fn dump(&self) {
        let ns = self.names.namespace.as_str();
        let hub = format!("app.kubernetes.io/instance={}", self.names.hub_release);
        let node = format!("app.kubernetes.io/instance={}", self.names.node_release);
        let commands: [&[&str]; 7] = [
            &["get", "all,computejobs,leases", "-n", ns, "-o", "wide"],
            &["get", "gpunodes", "-o", "wide"],
            &["describe", "computejobs", "-n", ns],
            &["describe", "pods", "-n", ns],
            &["get", "events", "-n", ns, "--sort-by=.lastTimestamp"],
            &[
                "logs",
                "-n",
                ns,
                "-l",
                &hub,
                "--all-containers",
                "--prefix",
                "--tail=200",
            ],
            &[
                "logs",
                "-n",
                ns,
                "-l",
                &node,
                "--all-containers",
                "--prefix",
                "--tail=200",
            ],
        ];
        eprintln!("===== the cluster as the failed run left it =====");
        for args in commands {
            eprintln!("{}\n", self.cluster.kubectl(args));
        }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if self.cleaned {
            return;
        }
        if thread::panicking() {
            self.dump();
        }
        let problems = self.clean_up();
        if !problems.is_empty() {
            eprintln!(
                "clean-up could not remove everything:\n- {}",
                problems.join("\n- ")
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// What the test reads of ComputeJobs

fn condition<'a>(object: &'a Value, kind: &str) -> Option<&'a Value> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
}

fn condition_is(object: &Value, kind: &str, status: &str) -> bool {
    condition(object, kind).is_some_and(|c| c["status"] == status)
}

fn phase(object: &Value) -> &str {
    object["status"]["phase"].as_str().unwrap_or("")
}

/// The status in one line, for progress and failure messages.
fn summary(object: &Value) -> String {
    let status = &object["status"];
    let conditions: Vec<String> = status["conditions"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .map(|c| format!("{}={} ({})", c["type"], c["status"], c["reason"]))
                .collect()
        })
        .unwrap_or_default();
    format!(
        "phase {:?}, jobId {}, reason {}, message {}, conditions [{}]",
        phase(object),
        status["jobId"],
        status["reason"],
        status["message"],
        conditions.join(", ")
    )
}

/// The ComputeJob examples in examples/ (GpuNodes are the operator's to write, so gpunode.yaml is
/// not one), as paths relative to the repository root.
fn computejob_examples() -> Vec<String> {
    let dir = repo_root().join("examples");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .filter(|path| {
            std::fs::read_to_string(path)
                .unwrap_or_default()
                .lines()
                .any(|l| l.trim_end() == "kind: ComputeJob")
        })
        .map(|path| {
            format!(
                "examples/{}",
                path.file_name().expect("a name").to_string_lossy()
            )
        })
        .collect();
    files.sort();
    assert!(
        files.iter().any(|f| f == "examples/quickstart.yaml"),
        "examples/ should hold the quickstart: {files:?}"
    );
    files
}

// ---------------------------------------------------------------------------------------------
// The tests

#[test]
fn image_references_split_the_way_the_charts_take_them() {
    let image = |registry: &str, repository: &str, tag: &str, digest: &str| Image {
        registry: registry.into(),
        repository: repository.into(),
        tag: tag.into(),
        digest: digest.into(),
    };
    let digest = format!("sha256:{}", "ab".repeat(32));
    for (reference, expected) in [
        // `kind load docker-image agora:e2e` stores docker.io/library/agora:e2e.
        ("agora:e2e", image("docker.io", "library/agora", "e2e", "")),
        (
            "acme/agora:1.0",
            image("docker.io", "acme/agora", "1.0", ""),
        ),
        (
            "localhost/agora:e2e",
            image("localhost", "agora", "e2e", ""),
        ),
        (
            "localhost:5001/team/agora:pr-7",
            image("localhost:5001", "team/agora", "pr-7", ""),
        ),
        (
            "ghcr.io/agora/agora:0.1.0",
            image("ghcr.io", "agora/agora", "0.1.0", ""),
        ),
        (
            &format!("ghcr.io/agora/agora@{digest}"),
            image("ghcr.io", "agora/agora", "", &digest),
        ),
    ] {
        assert_eq!(Image::parse(reference), Ok(expected), "{reference}");
    }
    for (reference, complaint) in [
        ("agora", "give a tag"),
        ("localhost:5001/agora", "give a tag"),
        ("agora@sha256:1234", "64 lowercase hex digits"),
        (":e2e", "no repository"),
    ] {
        let error = Image::parse(reference).expect_err(reference);
        assert!(error.contains(complaint), "{reference}: {error}");
    }
}

/// The suite's own Helm values against both charts' schemas and templates, without a cluster:
/// a chart change that would break the suite's `helm install` fails here first. Needs Helm
/// (`AGORA_HELM=$(scripts/helm-up)`), like the chart tests; without it, says so and passes, unless
/// `AGORA_REQUIRE_HELM=1`.
#[test]
fn the_suites_helm_values_render_with_both_charts() {
    let Some(helm) = env::var_os("AGORA_HELM").map(PathBuf::from) else {
        assert!(
            env::var("AGORA_REQUIRE_HELM").as_deref() != Ok("1"),
            "AGORA_REQUIRE_HELM=1 but AGORA_HELM is not set; export AGORA_HELM=$(scripts/helm-up)"
        );
        eprintln!("Helm not configured (AGORA_HELM=$(scripts/helm-up)); skipping");
        return;
    };
    let home = tempfile::tempdir().expect("a temporary Helm home");
    let envs: [(&str, &Path); 3] = [
        ("HELM_CACHE_HOME", home.path()),
        ("HELM_CONFIG_HOME", home.path()),
        ("HELM_DATA_HOME", home.path()),
    ];
    let names = Names::new("0123abcd");
    let image = Image::parse("localhost/agora:e2e").expect("a valid reference");
    let template = |chart: &str, release: &str, values: &[(String, String)]| -> String {
        let chart = repo_root().join("charts").join(chart);
        let chart = chart.to_string_lossy();
        let mut args = vec!["template", release, &chart, "-n", &names.namespace];
        let sets = set_args(values);
        args.extend(sets.iter().map(String::as_str));
        let ran = run(&helm, &args, &envs, None, COMMAND_TIMEOUT);
        assert!(ran.success, "{ran}");
        ran.stdout
    };

    let hub = template("agora", &names.hub_release, &hub_values(&image));
    assert!(hub.contains("image: localhost/agora:e2e"), "{hub}");
    assert!(hub.contains("replicas: 2"), "{hub}");
    assert!(hub.contains("name: agora-database"), "{hub}");
    assert!(
        hub.contains(&format!(
            "kind: Service\nmetadata:\n  name: {}\n",
            names.hub_release
        )),
        "the hub's Service is named after the release, as the agents' hub.url assumes: {hub}"
    );

    let simulated = template(
        "agora-node",
        &names.node_release,
        &node_values(&names, &image, false),
    );
    for arg in [
        format!("- --hub={}", names.hub_url()),
        "- --allow-plain-http".to_string(),
        format!("- --simulate-gpus={SIMULATED_GPUS}"),
        "- --executor=builtin".to_string(),
        format!("- --region={REGION}"),
    ] {
        assert!(simulated.contains(&arg), "{arg} missing: {simulated}");
    }
    assert!(
        simulated.contains("image: localhost/agora:e2e"),
        "{simulated}"
    );
    assert!(simulated.contains("emptyDir: {}"), "{simulated}");
    assert!(!simulated.contains("hostPath:"), "{simulated}");

    let real = template(
        "agora-node",
        &names.node_release,
        &node_values(&names, &image, true),
    );
    assert!(real.contains("- --executor=kubernetes"), "{real}");
    assert!(!real.contains("--simulate-gpus"), "{real}");
    assert!(real.contains("kind: ClusterRole"), "{real}");
}

#[test]
fn examples_run_through_the_operator_and_nothing_is_left() {
    let Some(config) = config("examples_run_through_the_operator_and_nothing_is_left") else {
        return;
    };
    let real_gpus = config.real_gpus;
    let cluster = Cluster::new(config);

    let version = cluster
        .kubectl_json(&["version"])
        .unwrap_or_else(|e| panic!("the cluster does not answer: {e}"));
    eprintln!(
        "cluster: Kubernetes {}; image under test: {:?}; {}",
        version["serverVersion"]["gitVersion"],
        cluster.config.image,
        if real_gpus {
            "real GPUs, kubernetes executor"
        } else {
            "simulated GPUs"
        }
    );
    let crds_preexisted = CRDS.iter().any(|crd| cluster.crd_exists(crd));
    if cluster.crd_exists(CRDS[1]) {
        let existing = cluster
            .names(&["gpunodes", "-l", MANAGED_GPUNODES])
            .unwrap_or_else(|e| panic!("listing GpuNodes: {e}"));
        assert!(
            existing.is_empty(),
            "GpuNodes managed by an Agora operator exist already: {existing:?}. Another Agora runs \
             in this cluster, or a previous run was interrupted before its clean-up; the suite \
             needs a cluster of its own (after an interrupted run: kubectl delete gpunodes -l \
             {MANAGED_GPUNODES})"
        );
    }

    let executor_namespaces = cluster
        .names(&["namespaces", "-l", EXECUTOR_NAMESPACES])
        .unwrap_or_else(|e| panic!("listing namespaces: {e}"));
    assert!(
        executor_namespaces.is_empty(),
        "job namespaces of an Agora kubernetes executor exist already: {executor_namespaces:?}; \
         the suite needs a cluster of its own (it deletes such namespaces when it ends)"
    );

    let names = Names::new(&random_hex());
    let ns = names.namespace.clone();
    eprintln!("creating namespace {ns}");
    cluster.kubectl_ok(&["create", "namespace", &ns]);
    let mut run = Run {
        cluster,
        names,
        crds_preexisted,
        cleaned: false,
    };
    let c = &run.cluster;
    let names = &run.names;

    // --- The database, then the hub ---------------------------------------------------------
    let password = format!("{}{}", random_hex(), random_hex());
    let url = format!("postgres://agora:{password}@postgres.{ns}.svc:5432/agora");
    // Through stdin, so that the password is on no command line.
    let secrets = serde_json::json!({
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "postgres-credentials"},
             "stringData": {"password": password}},
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "agora-database"},
             "stringData": {"url": url}},
        ],
    });
    let ran = c.kubectl_with(
        &["apply", "-n", &ns, "-f", "-"],
        Some(&secrets.to_string()),
        COMMAND_TIMEOUT,
    );
    assert!(ran.success, "{ran}");
    let postgres = repo_root().join("e2e/kube/postgres.yaml");
    c.kubectl_ok(&["apply", "-n", &ns, "-f", &postgres.to_string_lossy()]);
    let install_timeout = format!("{}s", INSTALL_TIMEOUT.as_secs());
    eprintln!("waiting up to {install_timeout} for PostgreSQL (postgres:16) to be ready");
    let ran = c.kubectl_with(
        &[
            "wait",
            "-n",
            &ns,
            "--for=condition=Available",
            "deployment/postgres",
            &format!("--timeout={install_timeout}"),
        ],
        None,
        INSTALL_TIMEOUT + COMMAND_TIMEOUT,
    );
    assert!(ran.success, "PostgreSQL did not become ready: {ran}");

    let install = |release: &str, chart: &str, values: &[(String, String)]| {
        eprintln!(
            "helm install {release} charts/{chart} (waits up to {install_timeout} for ready pods)"
        );
        let chart = repo_root().join("charts").join(chart);
        let chart = chart.to_string_lossy();
        let mut args = vec![
            "install",
            release,
            &chart,
            "-n",
            &ns,
            "--wait",
            "--timeout",
            &install_timeout,
        ];
        let sets = set_args(values);
        args.extend(sets.iter().map(String::as_str));
        let ran = c.helm(&args, INSTALL_TIMEOUT + COMMAND_TIMEOUT);
        assert!(ran.success, "{ran}");
        eprintln!("{}", ran.stdout);
    };
    let image = &c.config.image;
    install(&names.hub_release, "agora", &hub_values(image));

    // Of the two replicas, one holds the operator's Lease.
    let hub_selector = format!("app.kubernetes.io/instance={}", names.hub_release);
    let leader = wait_for(
        &format!("a hub replica to hold the Lease {OPERATOR_LEASE}"),
        ACCEPT_TIMEOUT,
        || {
            let lease = c.kubectl_json(&["get", "lease", OPERATOR_LEASE, "-n", &ns])?;
            let holder = lease["spec"]["holderIdentity"]
                .as_str()
                .unwrap_or("")
                .to_string();
            let pods = c.names(&["pods", "-n", &ns, "-l", &hub_selector])?;
            if pods.iter().any(|p| p == &format!("pod/{holder}")) {
                Ok(holder)
            } else {
                Err(format!("holder {holder:?}, hub pods {pods:?}"))
            }
        },
    );
    eprintln!("the operator runs in {leader}");

    // --- The agents, mirrored as GpuNodes --------------------------------------------------
    install(
        &names.node_release,
        "agora-node",
        &node_values(names, image, real_gpus),
    );
    let node_selector = format!("app.kubernetes.io/instance={}", names.node_release);
    let agents = c
        .kubectl_json(&["get", "pods", "-n", &ns, "-l", &node_selector])
        .unwrap_or_else(|e| panic!("listing the agent pods: {e}"));
    let gpunodes: BTreeSet<String> = agents["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|pod| pod["spec"]["nodeName"].as_str())
        .map(|node| format!("gn-{node}"))
        .collect();
    assert!(
        !gpunodes.is_empty(),
        "no agent pod was scheduled{}: {agents:#}",
        if real_gpus {
            " (with AGORA_E2E_REAL_GPUS=1 the chart selects nodes labelled \
             nvidia.com/gpu.present=true, as NVIDIA's GPU feature discovery sets)"
        } else {
            ""
        }
    );
    wait_for(
        &format!("GpuNodes {gpunodes:?} to be Ready"),
        NODES_TIMEOUT,
        || {
            let list = c.kubectl_json(&["get", "gpunodes", "-l", MANAGED_GPUNODES])?;
            let items = list["items"].as_array().cloned().unwrap_or_default();
            let ready: BTreeSet<String> = items
                .iter()
                .filter(|gn| condition_is(gn, "Ready", "True"))
                .filter_map(|gn| gn["metadata"]["name"].as_str().map(str::to_string))
                .collect();
            // A Ready GpuNode has its status, which says whether its GPUs are simulated.
            for gn in items.iter().filter(|gn| condition_is(gn, "Ready", "True")) {
                assert_eq!(
                    gn["status"]["simulated"].as_bool(),
                    Some(!real_gpus),
                    "a GpuNode says whether its GPUs are simulated: {gn:#}"
                );
            }
            if gpunodes.is_subset(&ready) {
                Ok(())
            } else {
                Err(format!("Ready: {ready:?}"))
            }
        },
    );
    eprintln!(
        "{}",
        c.kubectl_ok(&["get", "gpunodes", "-l", MANAGED_GPUNODES])
    );

    // --- Every example, applied as a user would --------------------------------------------
    let mut files = computejob_examples();
    if real_gpus {
        files.push("e2e/kube/gpu-smoke.yaml".to_string());
    }
    let mut applied = Vec::new();
    for file in &files {
        let path = repo_root().join(file);
        let name = c.kubectl_ok(&[
            "apply",
            "-n",
            &ns,
            "-f",
            &path.to_string_lossy(),
            "-o",
            "name",
        ]);
        let name = name
            .trim()
            .rsplit('/')
            .next()
            .expect("kubectl names what it applied")
            .to_string();
        eprintln!("applied {file}: ComputeJob {name}");
        applied.push(name);
    }

    // The operator submits each to the hub: a job id, Accepted=True. Builtin jobs (and, on real
    // GPUs, the smoke job) must run to Succeeded; the examples' container jobs name images and
    // data of a fictional company, so they can only be placed or say why they wait.
    let mut jobs = Vec::new();
    for name in &applied {
        let object = wait_for(
            &format!("ComputeJob {name} to be accepted (status.jobId, Accepted=True)"),
            ACCEPT_TIMEOUT,
            || {
                let object = c.kubectl_json(&["get", "computejob", name, "-n", &ns])?;
                let has_id = object["status"]["jobId"]
                    .as_str()
                    .is_some_and(|id| !id.is_empty());
                if has_id && condition_is(&object, "Accepted", "True") {
                    Ok(object)
                } else {
                    Err(summary(&object))
                }
            },
        );
        assert!(
            object["metadata"]["finalizers"]
                .as_array()
                .is_some_and(|f| f.iter().any(|f| f == "agora.dev/cancel-job")),
            "the operator's finalizer is on {name} before its job runs: {object:#}"
        );
        let id = object["status"]["jobId"]
            .as_str()
            .expect("checked")
            .to_string();
        let runs_to_the_end =
            !object["spec"]["workload"]["builtin"].is_null() || name == "gpu-smoke";
        eprintln!("  {name} is hub job {id}");
        jobs.push((name.clone(), id, runs_to_the_end));
    }

    // The hub's own view, through its API: the namespace's tenant, a key made in a hub pod (the
    // image has the CLI; the pod has the database URL), a port-forward to the Service.
    let key = c.kubectl_ok(&[
        "exec",
        "-n",
        &ns,
        &format!("deploy/{}", names.hub_release),
        "-c",
        "hub",
        "--",
        "agora",
        "admin",
        "key",
        "create",
        "--tenant",
        &names.tenant(),
    ]);
    let key = key.trim().to_string();
    assert!(key.starts_with("agora_"), "an API key: {key:?}");
    let logs = tempfile::tempdir().expect("a directory for the port-forward's log");
    let port = free_port();
    let mut forward = Command::new(&c.config.kubectl);
    forward
        .args([
            "port-forward",
            "-n",
            &ns,
            &format!("svc/{}", names.hub_release),
            &format!("{port}:7600"),
        ])
        .env("KUBECONFIG", &c.config.kubeconfig)
        .stdin(Stdio::null());
    let port_forward = Process::spawn("kubectl-port-forward", logs.path(), forward);
    let api = Api::new(&format!("http://127.0.0.1:{port}"), &key);
    wait_for(
        &format!("the hub's API through kubectl port-forward on 127.0.0.1:{port}"),
        ACCEPT_TIMEOUT,
        || api.get_ok("/v1/nodes").map(drop),
    );

    for (name, id, runs_to_the_end) in &jobs {
        if *runs_to_the_end {
            expect_success(c, &api, &ns, name, id);
        } else {
            expect_explained_wait(c, &api, &ns, name, id, real_gpus);
        }
    }

    // --- kubectl delete: the finalizer cancels on the hub, then lets the objects go ----------
    let delete_timeout = format!("--timeout={}s", DELETE_TIMEOUT.as_secs());
    eprintln!("kubectl delete computejobs --all (waits up to {delete_timeout} for the finalizers)");
    let ran = c.kubectl_with(
        &[
            "delete",
            "computejobs",
            "--all",
            "-n",
            &ns,
            "--wait=true",
            &delete_timeout,
        ],
        None,
        DELETE_TIMEOUT + COMMAND_TIMEOUT,
    );
    assert!(ran.success, "{ran}");
    let left = c
        .names(&["computejobs", "-n", &ns])
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        left.is_empty(),
        "ComputeJobs left after kubectl delete: {left:?}"
    );
    for (name, id, runs_to_the_end) in &jobs {
        let job = api
            .job(id)
            .unwrap_or_else(|e| panic!("job {id} of {name}: {e}"));
        // Deleting a job that ended changes nothing; one that had not ended is cancelled.
        let expected = if *runs_to_the_end {
            "Succeeded"
        } else {
            "Cancelled"
        };
        assert_eq!(
            job["status"]["phase"], expected,
            "job {id} of the deleted ComputeJob {name} on the hub: {job:#}"
        );
        eprintln!("  {name}: hub job {id} is {expected}");
    }
    // The kubernetes executor deletes each job's namespace (and its pods) when the job ends.
    wait_for(
        "the kubernetes executor's job namespaces to be gone",
        DELETE_TIMEOUT,
        || match c.names(&["namespaces", "-l", EXECUTOR_NAMESPACES])? {
            left if left.is_empty() => Ok(()),
            left => Err(format!("{left:?}")),
        },
    );
    drop(port_forward);

    // --- Nothing is left ---------------------------------------------------------------------
    let problems = run.clean_up();
    assert!(
        problems.is_empty(),
        "the run left things behind:\n- {}",
        problems.join("\n- ")
    );
    eprintln!("nothing of the run is left in the cluster");
}

/// `name` reaches Succeeded with its usage in the status (the hub's figure), and the operator
/// turned its lifecycle into Events on the object.
fn expect_success(c: &Cluster, api: &Api, ns: &str, name: &str, id: &str) {
    let object = wait_for(
        &format!("ComputeJob {name} to reach Succeeded"),
        RUN_TIMEOUT,
        || {
            let object = c.kubectl_json(&["get", "computejob", name, "-n", ns])?;
            match phase(&object) {
                "Succeeded" => Ok(object),
                ended @ ("Failed" | "Cancelled") => {
                    panic!("ComputeJob {name} ended {ended}: {object:#}")
                }
                _ => Err(summary(&object)),
            }
        },
    );
    let usage = &object["status"]["usage"];
    assert!(
        usage["gpuSeconds"].as_u64().is_some_and(|s| s > 0) && usage["cost"].is_string(),
        "a succeeded job shows the GPU time it used and its cost: {object:#}"
    );
    assert!(
        condition_is(&object, "Scheduled", "True"),
        "{name}: {}",
        summary(&object)
    );
    let job = api.job(id).unwrap_or_else(|e| panic!("job {id}: {e}"));
    assert_eq!(job["status"]["phase"], "Succeeded", "{job:#}");
    assert_eq!(
        &job["status"]["usage"], usage,
        "the ComputeJob's usage is the hub's"
    );
    eprintln!(
        "  {name} Succeeded on {}: {} GPU-seconds, cost {}",
        object["status"]["nodes"], usage["gpuSeconds"], usage["cost"]
    );
    // The lifecycle the hub recorded, as Events from the operator on the object.
    let selector = format!("involvedObject.kind=ComputeJob,involvedObject.name={name}");
    wait_for(
        &format!("Events Submitted, Placed and Completed on ComputeJob {name}"),
        ACCEPT_TIMEOUT,
        || {
            let events =
                c.kubectl_json(&["get", "events", "-n", ns, "--field-selector", &selector])?;
            let reasons: BTreeSet<String> = events["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|e| e["reportingComponent"] == "agora-operator")
                .filter_map(|e| e["reason"].as_str().map(str::to_string))
                .collect();
            if ["Submitted", "Placed", "Completed"]
                .iter()
                .all(|r| reasons.contains(*r))
            {
                Ok(())
            } else {
                Err(format!("reasons from agora-operator: {reasons:?}"))
            }
        },
    );
}

/// `name` (a container job) is placed, or waits with a reason and a message saying why. On
/// simulated GPUs it must wait: their agents run builtin workloads only.
fn expect_explained_wait(c: &Cluster, api: &Api, ns: &str, name: &str, id: &str, real_gpus: bool) {
    let object = wait_for(
        &format!("ComputeJob {name} to be placed or to say why it waits"),
        ACCEPT_TIMEOUT,
        || {
            let object = c.kubectl_json(&["get", "computejob", name, "-n", ns])?;
            let Some(scheduled) = condition(&object, "Scheduled") else {
                return Err(summary(&object));
            };
            let explained = scheduled["status"] == "False"
                && scheduled["reason"].as_str().is_some_and(|r| !r.is_empty())
                && scheduled["message"].as_str().is_some_and(|m| !m.is_empty());
            if scheduled["status"] == "True" || explained {
                Ok(object)
            } else {
                Err(summary(&object))
            }
        },
    );
    let scheduled = condition(&object, "Scheduled").expect("waited for it");
    if !real_gpus {
        assert_eq!(
            (phase(&object), scheduled["status"].as_str()),
            ("Pending", Some("False")),
            "a container job cannot run on simulated GPUs with the builtin executor: {object:#}"
        );
    }
    let job = api.job(id).unwrap_or_else(|e| panic!("job {id}: {e}"));
    assert_eq!(
        job["status"]["phase"], object["status"]["phase"],
        "the ComputeJob's phase is the hub's: {job:#}"
    );
    eprintln!(
        "  {name}: {} (Scheduled={} {}: {})",
        phase(&object),
        scheduled["status"],
        scheduled["reason"],
        scheduled["message"]
    );
}
