//! The real Helm and Kubernetes' own schemas for the chart tests (`tests/charts.rs` for
//! `charts/agora-node`, `tests/hub_chart.rs` for `charts/agora`): `helm lint --strict` and
//! `helm template` with values files from the chart's `ci/`, the rendered objects parsed for
//! assertions, and kubernetes-validate over every object for the Kubernetes versions `scripts/test`
//! validates the CRDs for.
//!
//! Helm comes from `scripts/helm-up` through `AGORA_HELM`; without it the tests say so and pass,
//! unless `AGORA_REQUIRE_HELM=1` (set by `scripts/test`), where they fail instead.

use std::{
    io::{BufRead, BufReader, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
};

use serde_yaml::Value;

/// The Kubernetes versions `scripts/test` validates the CRDs against: the oldest and newest supported.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.33.0", "1.37.0"];

/// The namespace every rendering is made for, as `helm install --namespace` would.
pub const NAMESPACE: &str = "agora-system";

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
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

pub struct Run {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Helm for one chart and release name, with its cache, configuration and data in a fresh
/// temporary directory, so a run neither reads nor changes the user's Helm set-up.
pub struct Helm {
    binary: PathBuf,
    home: tempfile::TempDir,
    /// The chart's directory; a test may point it at a modified copy.
    pub chart: PathBuf,
    release: &'static str,
}

impl Helm {
    /// Helm for the chart at `chart` (relative to the repository), or `None` when Helm is not
    /// configured and not required.
    pub fn get(chart: &str, release: &'static str) -> Option<Self> {
        Some(Self {
            binary: helm_binary()?,
            home: tempfile::tempdir().expect("temporary Helm home"),
            chart: repo().join(chart),
            release,
        })
    }

    /// Helm with `args`; it reaches no cluster unless given the simulated one's kubeconfig.
    fn run(&self, args: &[String], cluster: Option<&SimulatedCluster>) -> Run {
        let home = self.home.path();
        let mut command = Command::new(&self.binary);
        command
            .args(args)
            .current_dir(repo())
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_DATA_HOME", home.join("data"));
        match cluster {
            Some(cluster) => command.env("KUBECONFIG", &cluster.kubeconfig),
            None => command.env_remove("KUBECONFIG"),
        };
        let out = command.output().expect("running helm");
        Run {
            success: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `--set` for each of `sets` and `--values` for each of `files` (names in the chart's `ci/`).
    fn value_args(&self, sets: &[&str], files: &[&str]) -> Vec<String> {
        let mut args = Vec::new();
        for set in sets {
            args.extend(["--set".to_string(), set.to_string()]);
        }
        for file in files {
            let path = self.chart.join("ci").join(file);
            args.extend(["--values".to_string(), path.display().to_string()]);
        }
        args
    }

    /// `helm lint --strict` with those values; panics with Helm's output unless the chart passes.
    pub fn lint(&self, sets: &[&str], files: &[&str]) {
        let mut args = vec![
            "lint".to_string(),
            "--strict".to_string(),
            self.chart.display().to_string(),
        ];
        args.extend(self.value_args(sets, files));
        let run = self.run(&args, None);
        assert!(
            run.success && run.stdout.contains("0 chart(s) failed"),
            "helm lint --strict {sets:?} {files:?} failed:\n{}{}",
            run.stdout,
            run.stderr
        );
    }

    /// `helm template` of the chart, CRDs included (what `helm install` applies), with `--set`
    /// values and values files; the run, unchecked.
    pub fn try_template(&self, sets: &[&str], files: &[&str]) -> Run {
        self.run(&self.template_args(sets, files), None)
    }

    fn template_args(&self, sets: &[&str], files: &[&str]) -> Vec<String> {
        let mut args = vec![
            "template".to_string(),
            self.release.to_string(),
            self.chart.display().to_string(),
            "--namespace".to_string(),
            NAMESPACE.to_string(),
            "--include-crds".to_string(),
        ];
        args.extend(self.value_args(sets, files));
        args
    }

    /// What `helm upgrade` renders against `cluster`: `helm template --dry-run=server`, where the
    /// templates' `lookup` calls read the cluster's objects (a plain `helm template` sees none).
    pub fn template_against(&self, cluster: &SimulatedCluster, sets: &[&str]) -> Rendered {
        let mut args = self.template_args(sets, &[]);
        args.push("--dry-run=server".to_string());
        let run = self.run(&args, Some(cluster));
        assert!(
            run.success,
            "helm template --dry-run=server {sets:?} failed:\n{}",
            run.stderr
        );
        Rendered::parse(&run.stdout)
    }

    /// The rendered manifests, or a panic with Helm's error.
    pub fn template(&self, sets: &[&str], files: &[&str]) -> Rendered {
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
pub struct Rendered {
    pub yaml: String,
    pub objects: Vec<Value>,
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

    pub fn of_kind(&self, kind: &str) -> Vec<&Value> {
        self.objects
            .iter()
            .filter(|o| o["kind"].as_str() == Some(kind))
            .collect()
    }

    pub fn one(&self, kind: &str) -> &Value {
        let found = self.of_kind(kind);
        assert_eq!(
            found.len(),
            1,
            "expected one {kind}, rendered:\n{}",
            self.yaml
        );
        found[0]
    }

    /// Runs kubernetes-validate over every object Kubernetes itself defines, for each supported
    /// version, and fails on any error or on an object it has no schema for. The Prometheus
    /// Operator's objects (monitoring.coreos.com: PodMonitor, ServiceMonitor; CRDs, not in
    /// Kubernetes' schemas) are returned for the caller's own checks.
    pub fn validate(&self, what: &str) -> Vec<&Value> {
        let mut external = Vec::new();
        let mut core = Vec::new();
        for (object, text) in self.objects.iter().zip(&self.texts) {
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
}

/// The container called `name` in a workload's pod template.
pub fn container<'a>(workload: &'a Value, name: &str) -> &'a Value {
    workload["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .expect("containers")
        .iter()
        .find(|c| c["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no container {name}"))
}

/// A YAML list of strings (absent: empty).
pub fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|s| {
            s.iter()
                .map(|x| x.as_str().expect("a string").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// The container's environment variable `name` (its whole entry: `value` or `valueFrom`).
pub fn env_value<'a>(container: &'a Value, name: &str) -> Option<&'a Value> {
    container["env"]
        .as_sequence()?
        .iter()
        .find(|e| e["name"].as_str() == Some(name))
}

/// The volume of `workload` that `container` mounts at the directory holding `file`, and the file's
/// name inside it.
pub fn volume_of<'a>(workload: &'a Value, container: &Value, file: &str) -> (&'a Value, String) {
    let path = Path::new(file);
    let dir = path.parent().expect("a directory").to_str().expect("UTF-8");
    let mount = container["volumeMounts"]
        .as_sequence()
        .expect("volume mounts")
        .iter()
        .find(|m| m["mountPath"].as_str() == Some(dir))
        .unwrap_or_else(|| panic!("nothing is mounted at {dir}"));
    let volume = workload["spec"]["template"]["spec"]["volumes"]
        .as_sequence()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("the mounted volume");
    let name = path.file_name().expect("a file").to_str().expect("UTF-8");
    (volume, name.to_string())
}

/// Standard base64 (the encoding of a Secret's `data`), for reading generated secrets.
pub fn base64_decode(text: &str) -> Vec<u8> {
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

/// A SIMULATED Kubernetes API server (no real one runs on these machines: ../shared/REAL-PARTS.md)
/// that holds a few Secrets in [`NAMESPACE`] and answers exactly the two reads Helm's `lookup "v1"
/// "Secret"` makes: the core group's resource list (`GET /api/v1`) and one Secret by name. Anything
/// else is a 404. It lets a test render an upgrade, where the chart must keep a key it generated.
pub struct SimulatedCluster {
    kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
    addr: std::net::SocketAddr,
    stop: Arc<AtomicBool>,
    server: Option<JoinHandle<()>>,
}

impl SimulatedCluster {
    /// Serves `secrets`: (name, the Secret's `data`, as a rendered Secret holds it, base64 values).
    pub fn with_secrets(secrets: Vec<(String, Value)>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the simulated API server");
        let addr = listener.local_addr().expect("its address");
        let dir = tempfile::tempdir().expect("temporary directory");
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\ncurrent-context: simulated\n\
                 clusters: [{{name: simulated, cluster: {{server: 'http://{addr}'}}}}]\n\
                 users: [{{name: simulated, user: {{token: simulated}}}}]\n\
                 contexts: [{{name: simulated, context: {{cluster: simulated, user: simulated}}}}]\n"
            ),
        )
        .expect("writing the kubeconfig");
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let server = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = stream {
                    answer(stream, &secrets);
                }
            }
        });
        Self {
            kubeconfig,
            _dir: dir,
            addr,
            stop,
            server: Some(server),
        }
    }
}

impl Drop for SimulatedCluster {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(server) = self.server.take() {
            let _ = server.join();
        }
    }
}

/// One request on `stream`, answered with `Connection: close`.
fn answer(stream: TcpStream, secrets: &[(String, Value)]) {
    let mut reader = BufReader::new(&stream);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    // The headers, up to the blank line (GET requests carry no body).
    let mut line = String::new();
    while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line.trim_end() != "" {
        line.clear();
    }
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .split('?')
        .next()
        .unwrap_or_default();
    let secret_prefix = format!("/api/v1/namespaces/{NAMESPACE}/secrets/");
    let (status, body) = if path == "/api/v1" {
        (
            200,
            serde_json::json!({
                "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "v1",
                "resources": [{"name": "secrets", "singularName": "secret", "namespaced": true,
                               "kind": "Secret", "verbs": ["get"]}],
            }),
        )
    } else if let Some((name, data)) = path
        .strip_prefix(&secret_prefix)
        .and_then(|name| secrets.iter().find(|(n, _)| n == name))
    {
        (
            200,
            serde_json::json!({
                "kind": "Secret", "apiVersion": "v1", "type": "Opaque",
                "metadata": {"name": name, "namespace": NAMESPACE},
                "data": serde_json::to_value(data).expect("the Secret's data as JSON"),
            }),
        )
    } else {
        (
            404,
            serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                               "reason": "NotFound", "code": 404}),
        )
    };
    let body = body.to_string();
    let reason = if status == 200 { "OK" } else { "Not Found" };
    let _ = write!(
        &stream,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// Every `group/resource:verb` an RBAC role grants, failing on a wildcard, a non-resource URL or a
/// grant limited to resource names (none of which the charts use).
pub fn grants(role: &Value) -> std::collections::BTreeSet<String> {
    let mut granted = std::collections::BTreeSet::new();
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
    granted
}
