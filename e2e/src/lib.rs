//! Agora's end-to-end tests: they start real `agora` processes (hub and agents) that talk over real
//! HTTP on loopback, and drive them as users do. The tests live in `tests/`; this library holds the
//! helpers that start, wait for and stop the processes.
//!
//! The pieces:
//! - [`agora_bin`] finds the binary under test (`AGORA_BIN`, or `target/<profile>/agora` next to the
//!   test executable; `cargo build --bin agora` builds it).
//! - [`Process`] is one child process with its stdout and stderr in log files. Dropping it kills
//!   and reaps the child, so nothing outlives a test, even one that panics; when the test is
//!   failing, the drop prints the last lines of both logs.
//! - [`DevHub`] is an `agora dev` on a free loopback port with its data directory, started and
//!   awaited until it serves authenticated requests; it runs the CLI against itself ([`DevHub::cli`]),
//!   starts external agents ([`DevHub::agent`]) and restarts on the same port and data.
//! - [`Api`] reads jobs and nodes over REST, for polling; [`poll_until`] is the one way to wait.
//!
//! The helpers exist for tests, so they panic with a message that says what was expected and what
//! was seen instead of returning errors. Nothing here sleeps to wait for something: every wait is
//! a poll with a deadline.
#![forbid(unsafe_code)]

use std::{
    env,
    fs::{self, File, OpenOptions},
    io::Read,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

/// How long a hub may take from spawn to serving authenticated requests.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long one CLI command may run unless the caller says otherwise.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(60);

/// Pause between two checks of a poll.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// How long a process gets to exit after SIGTERM before it is killed.
const TERMINATE_GRACE: Duration = Duration::from_secs(15);

/// Lines of each log printed when a test fails.
const LOG_TAIL_LINES: usize = 60;

/// The root of the repository (where `examples/` and `crds/` are); CLI commands run there so that
/// relative paths read as in the README.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("e2e/ has a parent")
        .to_path_buf()
}

/// The `agora` binary under test: `$AGORA_BIN` when set, otherwise `target/<profile>/agora`, found
/// from the test executable's own place (`target/<profile>/deps/<test>-<hash>`).
///
/// `cargo test -p e2e` does not build the binary (it is another package's); `cargo test
/// --workspace` does, because the root package has integration tests.
pub fn agora_bin() -> PathBuf {
    if let Some(bin) = env::var_os("AGORA_BIN") {
        let bin = PathBuf::from(bin);
        assert!(
            bin.is_file(),
            "AGORA_BIN={} is not a file: build it first: cargo build --bin agora",
            bin.display()
        );
        return bin;
    }
    let exe = env::current_exe().expect("the test executable's path");
    let mut dir = exe.parent().expect("the test executable's directory");
    if dir.ends_with("deps") {
        dir = dir.parent().expect("target/<profile>");
    }
    let bin = dir.join(format!("agora{}", env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "{} not found: build it first: cargo build --bin agora (or set AGORA_BIN)",
        bin.display()
    );
    bin
}

/// A loopback TCP port that was free a moment ago. Another process may take it before the hub
/// binds it; [`DevHub::start`] retries with a new port when that happens.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding an ephemeral loopback port")
        .port()
}

/// An `agora` command with a clean environment: no `AGORA_*` variable of the caller's shell leaks
/// in (a developer's `AGORA_HUB` or `AGORA_API_KEY` would change what is tested), logs are not
/// coloured, and it runs in the repository root.
pub fn agora_command(args: &[&str]) -> Command {
    let mut cmd = Command::new(agora_bin());
    cmd.args(args)
        .current_dir(repo_root())
        .stdin(Stdio::null())
        .env("NO_COLOR", "1");
    for (name, _) in env::vars_os() {
        if name.to_string_lossy().starts_with("AGORA_") {
            cmd.env_remove(name);
        }
    }
    cmd
}

/// Calls `check` every 100 ms until it returns `Ok`, and returns that value. `Err` carries what was
/// seen, for the panic message when `timeout` passes first.
#[track_caller]
pub fn poll_until<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match check() {
            Ok(value) => return value,
            Err(last) if Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting for {what}; last seen: {last}")
            }
            Err(_) => thread::sleep(POLL_INTERVAL),
        }
    }
}

/// A child process whose stdout and stderr go to `<dir>/<name>.stdout.log` and `.stderr.log`
/// (appended, so a restarted process under the same name continues the same files).
pub struct Process {
    name: String,
    child: Option<Child>,
    stdout_log: PathBuf,
    stderr_log: PathBuf,
}

impl Process {
    /// Spawns `cmd` with its output going to log files in `log_dir`.
    pub fn spawn(name: &str, log_dir: &Path, mut cmd: Command) -> Process {
        let stdout_log = log_dir.join(format!("{name}.stdout.log"));
        let stderr_log = log_dir.join(format!("{name}.stderr.log"));
        let open = |path: &Path| -> File {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()))
        };
        let child = cmd
            .stdout(open(&stdout_log))
            .stderr(open(&stderr_log))
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {name} ({cmd:?}): {e}"));
        Process {
            name: name.to_string(),
            child: Some(child),
            stdout_log,
            stderr_log,
        }
    }

    /// The name given at spawn.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The exit status if the process has ended (reaping it), `None` while it runs.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        child.try_wait().expect("checking a child process")
    }

    /// Everything the process wrote to stdout so far.
    pub fn stdout(&self) -> String {
        fs::read_to_string(&self.stdout_log).unwrap_or_default()
    }

    /// Everything the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }

    /// The last lines of both logs, labelled, for failure messages.
    pub fn log_tail(&self) -> String {
        format!(
            "----- {name} stdout (last {LOG_TAIL_LINES} lines) -----\n{}\n\
             ----- {name} stderr (last {LOG_TAIL_LINES} lines) -----\n{}\n",
            tail(&self.stdout(), LOG_TAIL_LINES),
            tail(&self.stderr(), LOG_TAIL_LINES),
            name = self.name,
        )
    }

    /// Asks the process to stop with SIGTERM (as systemd and Kubernetes do) and waits for it; kills
    /// it if it is still running after 15 s. Returns how it exited.
    pub fn terminate(&mut self) -> ExitStatus {
        let child = self
            .child
            .as_mut()
            .expect("the process was already stopped");
        if let Some(status) = child.try_wait().expect("checking a child process") {
            return status;
        }
        // Safe from pid reuse: the child is not reaped yet, so its pid is still ours.
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        assert!(
            matches!(sent, Ok(s) if s.success()),
            "sending SIGTERM to {}: {sent:?}",
            self.name
        );
        let deadline = Instant::now() + TERMINATE_GRACE;
        loop {
            if let Some(status) = child.try_wait().expect("waiting for a child process") {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let status = child.wait().expect("reaping a killed child");
                panic!(
                    "{} did not exit within {TERMINATE_GRACE:?} of SIGTERM (killed: {status})",
                    self.name
                );
            }
            thread::sleep(POLL_INTERVAL);
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if thread::panicking() {
            eprintln!("{}", self.log_tail());
        }
    }
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// What a finished CLI command left behind.
#[derive(Debug)]
pub struct CliOutput {
    /// The command line, for messages.
    pub command: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    /// From spawn to exit.
    pub elapsed: Duration,
}

impl CliOutput {
    /// Panics, showing both outputs, unless the command exited 0.
    #[track_caller]
    pub fn assert_success(&self) -> &Self {
        assert!(self.status.success(), "{self}");
        self
    }

    /// Panics, showing both outputs, unless the command exited non-zero.
    #[track_caller]
    pub fn assert_failure(&self) -> &Self {
        assert!(!self.status.success(), "expected a failure: {self}");
        self
    }

    /// Stdout parsed as JSON (after checking the command succeeded).
    #[track_caller]
    pub fn json(&self) -> Value {
        self.assert_success();
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self}"))
    }
}

impl std::fmt::Display for CliOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` exited {} after {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.command, self.status, self.elapsed, self.stdout, self.stderr
        )
    }
}

/// Runs `agora ARGS` with extra environment variables and returns its output once it exits; kills
/// it and panics if it runs longer than `timeout`.
#[track_caller]
pub fn run_cli(args: &[&str], envs: &[(&str, &str)], timeout: Duration) -> CliOutput {
    let command = format!("agora {}", args.join(" "));
    let mut cmd = agora_command(args);
    cmd.envs(envs.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawning `{command}`: {e}"));
    // Read both pipes on threads so that a chatty command cannot block on a full pipe.
    let reader = |mut pipe: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            String::from_utf8_lossy(&bytes).into_owned()
        })
    };
    let stdout = reader(Box::new(child.stdout.take().expect("piped stdout")));
    let stderr = reader(Box::new(child.stderr.take().expect("piped stderr")));
    let (status, timed_out) = loop {
        if let Some(status) = child.try_wait().expect("waiting for the CLI") {
            break (status, false);
        }
        if started.elapsed() >= timeout {
            let _ = child.kill();
            break (child.wait().expect("reaping the CLI"), true);
        }
        thread::sleep(Duration::from_millis(20));
    };
    let output = CliOutput {
        command,
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
        elapsed: started.elapsed(),
    };
    assert!(!timed_out, "killed after {timeout:?}: {output}");
    output
}

/// A read-only REST client of one hub, for polling jobs and nodes.
pub struct Api {
    runtime: tokio::runtime::Runtime,
    http: reqwest::Client,
    url: String,
    api_key: String,
}

impl Api {
    /// A client of the hub at `url` (`http://127.0.0.1:PORT`) using `api_key`.
    pub fn new(url: &str, api_key: &str) -> Api {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            // No pooled connections: a restarted hub leaves stale ones behind.
            .pool_max_idle_per_host(0)
            .build()
            .expect("an HTTP client");
        Api {
            runtime,
            http,
            url: url.trim_end_matches('/').to_string(),
            api_key: api_key.to_string(),
        }
    }

    /// `GET path` with the API key: the status and the body (JSON, or a string if it is not).
    /// `Err` when no answer came (hub down, connection refused).
    pub fn get(&self, path: &str) -> Result<(u16, Value), String> {
        let url = format!("{}{path}", self.url);
        self.runtime.block_on(async {
            let response = self
                .http
                .get(&url)
                .bearer_auth(&self.api_key)
                .send()
                .await
                .map_err(|e| format!("GET {url}: {e:?}"))?;
            let status = response.status().as_u16();
            let text = response
                .text()
                .await
                .map_err(|e| format!("GET {url}: reading the body: {e}"))?;
            let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
            Ok((status, body))
        })
    }

    /// `GET path`, `Err` unless the answer is a 200.
    pub fn get_ok(&self, path: &str) -> Result<Value, String> {
        match self.get(path)? {
            (200, body) => Ok(body),
            (status, body) => Err(format!("GET {path}: HTTP {status}: {body}")),
        }
    }

    /// `GET /v1/jobs/{id}`.
    pub fn job(&self, id: &str) -> Result<Value, String> {
        self.get_ok(&format!("/v1/jobs/{id}"))
    }

    /// Every node of `GET /v1/nodes`.
    pub fn nodes(&self) -> Result<Vec<Value>, String> {
        let body = self.get_ok("/v1/nodes?limit=500")?;
        Ok(body["items"].as_array().cloned().unwrap_or_default())
    }

    /// The node named `name`, `Err` if the hub does not list it.
    pub fn node(&self, name: &str) -> Result<Value, String> {
        self.nodes()?
            .into_iter()
            .find(|n| n["name"] == name)
            .ok_or_else(|| format!("no node {name}"))
    }

    /// Polls the job until its phase is `phase` and returns it; panics after `timeout`, or at once if
    /// the job reaches another final phase.
    #[track_caller]
    pub fn wait_for_phase(&self, id: &str, phase: &str, timeout: Duration) -> Value {
        poll_until(&format!("job {id} to be {phase}"), timeout, || {
            let job = self.job(id)?;
            let now = job["status"]["phase"].as_str().unwrap_or_default();
            if now == phase {
                return Ok(job);
            }
            assert!(
                !["Succeeded", "Failed", "Cancelled"].contains(&now),
                "job {id} ended {now} while waiting for {phase}: {job:#}"
            );
            Err(format!("{now}: {}", job["status"]))
        })
    }
}

/// Whether a node (as `GET /v1/nodes` or `agora node list -o json` shows it) has condition
/// `Ready=True`.
pub fn node_is_ready(node: &Value) -> bool {
    node["status"]["conditions"]
        .as_array()
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

/// A timestamp field (`"2025-01-01T00:00:00Z"`) of a JSON document.
#[track_caller]
pub fn timestamp(value: &Value) -> jiff::Timestamp {
    value
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a timestamp: {value}"))
}

/// An `agora dev` process: the hub on a loopback port, SQLite and the API key in `data_dir`.
pub struct DevHub {
    /// The running process.
    pub process: Process,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    pub port: u16,
    /// The `--data-dir`.
    pub data_dir: PathBuf,
    /// The key `agora dev` wrote to `data_dir/api-key`.
    pub api_key: String,
    agents: usize,
    log_dir: PathBuf,
}

impl DevHub {
    /// Starts `agora dev --agents N` with its data in `dir/data` and its logs in `dir`, on a free
    /// port, and returns once it serves authenticated requests.
    #[track_caller]
    pub fn start(dir: &Path, agents: usize) -> DevHub {
        let data_dir = dir.join("data");
        // A port picked free can be taken before the hub binds it; then try another.
        for _ in 0..3 {
            match Self::start_on(dir, &data_dir, free_port(), agents) {
                Ok(hub) => return hub,
                Err(process) if process.stderr().contains("in use") => continue,
                Err(process) => panic!("agora dev exited at start\n{}", process.log_tail()),
            }
        }
        panic!("agora dev found no free port in 3 tries");
    }

    /// Spawns the hub and waits until it is ready; `Err` with the exited process if it stops
    /// before that.
    fn start_on(dir: &Path, data_dir: &Path, port: u16, agents: usize) -> Result<DevHub, Process> {
        let listen = format!("127.0.0.1:{port}");
        let cmd = agora_command(&[
            "dev",
            "--data-dir",
            &data_dir.to_string_lossy(),
            "--listen",
            &listen,
            "--agents",
            &agents.to_string(),
        ]);
        let mut process = Process::spawn("hub", dir, cmd);
        let url = format!("http://{listen}");
        let api_key = match wait_until_serving(&mut process, &url, data_dir) {
            Some(key) => key,
            None => return Err(process),
        };
        Ok(DevHub {
            process,
            url,
            port,
            data_dir: data_dir.to_path_buf(),
            api_key,
            agents,
            log_dir: dir.to_path_buf(),
        })
    }

    /// Stops the hub with SIGTERM, checks it exited cleanly, and starts it again on the same port
    /// and data directory (panics if the API key changed).
    #[track_caller]
    pub fn restart(&mut self) {
        let status = self.process.terminate();
        assert!(
            status.success(),
            "agora dev exited {status} on SIGTERM\n{}",
            self.process.log_tail()
        );
        let old_key = self.api_key.clone();
        let next = Self::start_on(&self.log_dir, &self.data_dir, self.port, self.agents)
            .unwrap_or_else(|p| panic!("agora dev did not start again\n{}", p.log_tail()));
        // Replacing the old value drops the old (already reaped) process.
        *self = next;
        assert_eq!(
            self.api_key, old_key,
            "the API key changed across a restart"
        );
    }

    /// A REST client of this hub with its API key.
    pub fn api(&self) -> Api {
        Api::new(&self.url, &self.api_key)
    }

    /// Runs `agora ARGS` against this hub (`AGORA_HUB`, `AGORA_API_KEY` set), in the repository root.
    #[track_caller]
    pub fn cli(&self, args: &[&str]) -> CliOutput {
        self.cli_with_timeout(args, CLI_TIMEOUT)
    }

    /// [`DevHub::cli`] with another time limit.
    #[track_caller]
    pub fn cli_with_timeout(&self, args: &[&str], timeout: Duration) -> CliOutput {
        run_cli(
            args,
            &[("AGORA_HUB", &self.url), ("AGORA_API_KEY", &self.api_key)],
            timeout,
        )
    }

    /// Starts an external `agora agent` against this hub with simulated GPUs (`8xH100-80GB`), logging
    /// to `<dir>/<name>.*.log`, with its node key in `<dir>/<name>.key` (kept across restarts, since
    /// the hub binds the name to that key).
    pub fn agent(&self, name: &str, region: &str, gpus: &str, price: &str) -> Process {
        let key = self.log_dir.join(format!("{name}.key"));
        let cmd = agora_command(&[
            "agent",
            "--hub",
            &self.url,
            "--key",
            &key.to_string_lossy(),
            "--name",
            name,
            "--region",
            region,
            "--simulate-gpus",
            gpus,
            "--price",
            price,
        ]);
        Process::spawn(name, &self.log_dir, cmd)
    }
}

/// Waits until the hub answers `/readyz` with 200, has written its API key and accepts it; returns
/// the key, or `None` if the process exited first. Panics after [`READY_TIMEOUT`].
fn wait_until_serving(process: &mut Process, url: &str, data_dir: &Path) -> Option<String> {
    let key_file = data_dir.join("api-key");
    let probe = Api::new(url, "");
    let mut api: Option<Api> = None;
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut last = String::from("nothing yet");
    loop {
        if process.exit_status().is_some() {
            return None;
        }
        if Instant::now() >= deadline {
            panic!(
                "agora dev at {url} was not serving within {READY_TIMEOUT:?}; last seen: {last}\n{}",
                process.log_tail()
            );
        }
        // `/readyz` answers as soon as the listener is up, before the key is written and stored:
        // wait for all three.
        let ready = probe.get("/readyz");
        match (&ready, fs::read_to_string(&key_file)) {
            (Ok((200, _)), Ok(key)) if !key.trim().is_empty() => {
                let key = key.trim();
                let api = api.get_or_insert_with(|| Api::new(url, key));
                match api.get("/v1/jobs?limit=1") {
                    Ok((200, _)) => return Some(key.to_string()),
                    other => last = format!("GET /v1/jobs with the key: {other:?}"),
                }
            }
            (Ok((200, _)), key) => last = format!("ready, but the key file: {key:?}"),
            _ => last = format!("GET /readyz: {ready:?}"),
        }
        thread::sleep(POLL_INTERVAL);
    }
}
