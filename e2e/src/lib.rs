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
//! - [`ServerHub`] is an `agora server` (the production command) over a [`TestDatabase`] (SQLite,
//!   or a fresh PostgreSQL database when `AGORA_TEST_POSTGRES_URL` is set), with the tunables of
//!   [`ServerOptions`]; it can be killed with SIGKILL and started again on the same port and
//!   database. [`spawn_agent`] starts an `agora agent` against any hub.
//! - [`RawClient`] sends requests exactly as given (any method, header bytes, body), for tests of
//!   what the hub refuses; [`NodeKey`] signs agent registrations, for tests that speak the agent
//!   protocol themselves.
//! - [`netns::Fabric`] puts hosts in network namespaces on a bridge, with `tc tbf` bandwidth
//!   limits, and [`delay_proxy::DelayProxy`] gives them latency (no `netem` here), for the
//!   multi-host test (`tests/multihost.rs`, root only).
//!
//! The helpers exist for tests, so they panic with a message that says what was expected and what
//! was seen instead of returning errors. Nothing here sleeps to wait for something: every wait is
//! a poll with a deadline.
#![forbid(unsafe_code)]

// The multi-host tests' network: hosts in namespaces with `tc tbf` limits, latency from proxies.
pub mod delay_proxy;
pub mod netns;

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

    /// Kills the process with SIGKILL, as a crash or the OOM killer would (no chance to clean up,
    /// flush or say goodbye), reaps it and returns how it ended. A process that already exited
    /// is only reaped.
    pub fn kill(&mut self) -> ExitStatus {
        let child = self
            .child
            .as_mut()
            .expect("the process was already stopped");
        if let Some(status) = child.try_wait().expect("checking a child process") {
            return status;
        }
        // `Child::kill` is SIGKILL on Unix.
        child
            .kill()
            .unwrap_or_else(|e| panic!("killing {}: {e}", self.name));
        child.wait().expect("reaping a killed child")
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

/// The `id` of a job as the API shows it.
pub fn job_id(job: &Value) -> String {
    job["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no job id in {job}"))
        .to_string()
}

/// The node of a one-worker job's placement.
pub fn placed_node(job: &Value) -> String {
    job["status"]["placement"]["workers"][0]["node"]
        .as_str()
        .unwrap_or_else(|| panic!("job has no placement: {job:#}"))
        .to_string()
}

/// Polls until every node in `names` is listed and Ready, for at most `timeout`.
pub fn wait_ready(api: &Api, names: &[&str], timeout: Duration) {
    poll_until(&format!("nodes {names:?} Ready"), timeout, || {
        let nodes = api.nodes()?;
        let ready = |name: &&str| nodes.iter().any(|n| n["name"] == *name && node_is_ready(n));
        if names.iter().all(ready) {
            Ok(())
        } else {
            Err(format!("{nodes:#?}"))
        }
    });
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
    /// Flags passed to `agora dev` besides the data directory, port and agents.
    flags: Vec<String>,
    log_dir: PathBuf,
}

impl DevHub {
    /// Starts `agora dev --agents N` with its data in `dir/data` and its logs in `dir`, on a free
    /// port, and returns once it serves authenticated requests.
    #[track_caller]
    pub fn start(dir: &Path, agents: usize) -> DevHub {
        Self::start_with(dir, agents, &[])
    }

    /// [`DevHub::start`] with more `agora dev` flags (kept for [`DevHub::restart`]).
    #[track_caller]
    pub fn start_with(dir: &Path, agents: usize, flags: &[&str]) -> DevHub {
        let data_dir = dir.join("data");
        let flags: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
        // A port picked free can be taken before the hub binds it; then try another.
        for _ in 0..3 {
            match Self::start_on(dir, &data_dir, free_port(), agents, &flags) {
                Ok(hub) => return hub,
                Err(process) if process.stderr().contains("in use") => continue,
                Err(process) => panic!("agora dev exited at start\n{}", process.log_tail()),
            }
        }
        panic!("agora dev found no free port in 3 tries");
    }

    /// Spawns the hub and waits until it is ready; `Err` with the exited process if it stops
    /// before that.
    fn start_on(
        dir: &Path,
        data_dir: &Path,
        port: u16,
        agents: usize,
        flags: &[String],
    ) -> Result<DevHub, Process> {
        let listen = format!("127.0.0.1:{port}");
        let data = data_dir.to_string_lossy();
        let agents_text = agents.to_string();
        let mut args = vec![
            "dev",
            "--data-dir",
            &data,
            "--listen",
            &listen,
            "--agents",
            &agents_text,
        ];
        args.extend(flags.iter().map(String::as_str));
        let cmd = agora_command(&args);
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
            flags: flags.to_vec(),
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
        let next = Self::start_on(
            &self.log_dir,
            &self.data_dir,
            self.port,
            self.agents,
            &self.flags,
        )
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
    /// to `<dir>/<name>.*.log`, with its state in `<dir>/agent-state/<name>` and its node key in
    /// `<dir>/<name>.key` (both kept across restarts, since the hub binds the name to that key).
    pub fn agent(&self, name: &str, region: &str, gpus: &str, price: &str) -> Process {
        let key = self.log_dir.join(format!("{name}.key"));
        let state = self.log_dir.join("agent-state");
        let cmd = agora_command(&[
            "agent",
            "--hub",
            &self.url,
            "--key",
            &key.to_string_lossy(),
            "--state-dir",
            &state.to_string_lossy(),
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
    wait_for_hub(process, url, &data_dir.join("api-key"))
}

/// Waits until the hub process answers `/readyz` with 200, `key_file` holds an API key and the hub
/// accepts it; returns the key, or `None` if the process exited first. Panics after
/// [`READY_TIMEOUT`].
fn wait_for_hub(process: &mut Process, url: &str, key_file: &Path) -> Option<String> {
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
                "{} at {url} was not serving within {READY_TIMEOUT:?}; last seen: {last}\n{}",
                process.name(),
                process.log_tail()
            );
        }
        // `/readyz` answers as soon as the listener is up, before the key is written and stored:
        // wait for all three.
        let ready = probe.get("/readyz");
        match (&ready, fs::read_to_string(key_file)) {
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

/// Starts `agora agent` against the hub at `hub_url` with simulated GPUs (`gpus`, e.g.
/// `1xH100-80GB`), logging to `<dir>/<name>.*.log`, with its state in `<dir>/agent-state/<name>`
/// and its node key in `<dir>/<name>.key` (both kept across restarts, since the hub binds the name
/// to that key).
pub fn spawn_agent(
    hub_url: &str,
    dir: &Path,
    name: &str,
    region: &str,
    gpus: &str,
    price: &str,
) -> Process {
    spawn_agent_with(hub_url, dir, name, region, gpus, price, &[])
}

/// [`spawn_agent`] with `extra` arguments (e.g. `--executor process`).
pub fn spawn_agent_with(
    hub_url: &str,
    dir: &Path,
    name: &str,
    region: &str,
    gpus: &str,
    price: &str,
    extra: &[&str],
) -> Process {
    let key = dir.join(format!("{name}.key"));
    // Kept across restarts like the key (the agent's undelivered reports and started work).
    let state = dir.join("agent-state");
    let (key, state) = (key.to_string_lossy(), state.to_string_lossy());
    let mut args = vec![
        "agent",
        "--hub",
        hub_url,
        "--key",
        &key,
        "--state-dir",
        &state,
        "--name",
        name,
        "--region",
        region,
        "--simulate-gpus",
        gpus,
        "--price",
        price,
    ];
    args.extend_from_slice(extra);
    Process::spawn(name, dir, agora_command(&args))
}

/// Which database a hub under test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A fresh, empty database for one hub: a SQLite file in the test's directory, or a new database
/// on the PostgreSQL server `AGORA_TEST_POSTGRES_URL` names (as the API tests make theirs, and
/// named `agora_t_…` like theirs, so `scripts/test` drops it at the end of a run).
#[derive(Clone, Debug)]
pub struct TestDatabase {
    pub backend: Backend,
    /// What `agora server --database-url` takes.
    pub url: String,
}

impl TestDatabase {
    /// A fresh database on `backend` (SQLite in `dir`); `None` for PostgreSQL when
    /// `AGORA_TEST_POSTGRES_URL` is not set, after saying so on stderr. Panics instead when
    /// `AGORA_REQUIRE_POSTGRES=1` (set by `scripts/test` and CI), so a missing server cannot pass
    /// for a passing test.
    pub fn fresh(backend: Backend, dir: &Path) -> Option<TestDatabase> {
        match backend {
            Backend::Sqlite => Some(TestDatabase {
                backend,
                url: format!("sqlite://{}", dir.join("hub.db").display()),
            }),
            Backend::Postgres => {
                let Ok(admin_url) = env::var("AGORA_TEST_POSTGRES_URL") else {
                    assert!(
                        env::var("AGORA_REQUIRE_POSTGRES").as_deref() != Ok("1"),
                        "AGORA_REQUIRE_POSTGRES=1 but AGORA_TEST_POSTGRES_URL is not set; run \
                         ./scripts/test, or export AGORA_TEST_POSTGRES_URL=$(./scripts/postgres-up)"
                    );
                    eprintln!(
                        "PostgreSQL not configured (AGORA_TEST_POSTGRES_URL); skipping the \
                         PostgreSQL variant"
                    );
                    return None;
                };
                Some(TestDatabase {
                    backend,
                    url: create_postgres_database(&admin_url),
                })
            }
        }
    }
}

/// Creates an empty database next to the one `admin_url` names and returns its URL.
fn create_postgres_database(admin_url: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let name = format!(
        "agora_t_e2e_{}_{}_{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    sqlx::any::install_default_drivers();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async {
        let mut admin = <sqlx::AnyConnection as sqlx::Connection>::connect(admin_url)
            .await
            .unwrap_or_else(|e| panic!("connecting to AGORA_TEST_POSTGRES_URL: {e}"));
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        let _ = sqlx::Connection::close(admin).await;
    });
    let base = admin_url
        .rsplit_once('/')
        .map_or(admin_url, |(base, _)| base);
    format!("{base}/{name}")
}

/// The tunables of an `agora server` under test.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// `--node-timeout-seconds`.
    pub node_timeout_seconds: u64,
    /// `--heartbeat-interval-seconds`.
    pub heartbeat_interval_seconds: u64,
    /// Rate limits (`--api-key-limit`, `--node-limit`, `--anonymous-limit`): `off` for every
    /// budget when true, the hub's defaults otherwise.
    pub unlimited: bool,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            node_timeout_seconds: 20,
            heartbeat_interval_seconds: 5,
            unlimited: true,
        }
    }
}

/// An `agora server` process (the production hub command) on a loopback port, over a database
/// given by URL, with the `default` tenant's API key in `<dir>/api-key`.
pub struct ServerHub {
    /// The running process.
    pub process: Process,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    pub port: u16,
    pub database_url: String,
    /// The `default` tenant's key, from `--api-key-file`.
    pub api_key: String,
    options: ServerOptions,
    dir: PathBuf,
}

impl ServerHub {
    /// Starts `agora server` on a free port over `database_url`, logging to `dir/hub.*.log`, and
    /// returns once it serves authenticated requests.
    #[track_caller]
    pub fn start(dir: &Path, database_url: &str, options: ServerOptions) -> ServerHub {
        // A port picked free can be taken before the hub binds it; then try another.
        for _ in 0..3 {
            match Self::start_on(dir, database_url, free_port(), &options) {
                Ok(hub) => return hub,
                Err(process) if process.stderr().contains("in use") => continue,
                Err(process) => panic!("agora server exited at start\n{}", process.log_tail()),
            }
        }
        panic!("agora server found no free port in 3 tries");
    }

    fn start_on(
        dir: &Path,
        database_url: &str,
        port: u16,
        options: &ServerOptions,
    ) -> Result<ServerHub, Process> {
        let listen = format!("127.0.0.1:{port}");
        let key_file = dir.join("api-key");
        let node_timeout = options.node_timeout_seconds.to_string();
        let heartbeat = options.heartbeat_interval_seconds.to_string();
        let mut args = vec![
            "server",
            "--listen",
            &listen,
            "--database-url",
            database_url,
            "--api-key-file",
            key_file.to_str().expect("a UTF-8 temp dir"),
            "--node-timeout-seconds",
            &node_timeout,
            "--heartbeat-interval-seconds",
            &heartbeat,
        ];
        if options.unlimited {
            args.extend([
                "--api-key-limit",
                "off",
                "--node-limit",
                "off",
                "--anonymous-limit",
                "off",
            ]);
        }
        let mut process = Process::spawn("hub", dir, agora_command(&args));
        let url = format!("http://{listen}");
        let api_key = match wait_for_hub(&mut process, &url, &key_file) {
            Some(key) => key,
            None => return Err(process),
        };
        Ok(ServerHub {
            process,
            url,
            port,
            database_url: database_url.to_string(),
            api_key,
            options: options.clone(),
            dir: dir.to_path_buf(),
        })
    }

    /// Kills the hub with SIGKILL (no graceful shutdown: a crash) and returns how it ended.
    pub fn kill(&mut self) -> ExitStatus {
        self.process.kill()
    }

    /// Starts the hub again on the same port, database and key file, after [`ServerHub::kill`]
    /// or a crash; returns once it serves (panics if the API key changed).
    #[track_caller]
    pub fn start_again(&mut self) {
        assert!(
            self.process.exit_status().is_some(),
            "start_again: the hub is still running"
        );
        let old_key = self.api_key.clone();
        let next = Self::start_on(&self.dir, &self.database_url, self.port, &self.options)
            .unwrap_or_else(|p| panic!("agora server did not start again\n{}", p.log_tail()));
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

    /// Starts an external `agora agent` against this hub ([`spawn_agent`]), in the hub's directory.
    pub fn agent(&self, name: &str, region: &str, gpus: &str, price: &str) -> Process {
        spawn_agent(&self.url, &self.dir, name, region, gpus, price)
    }

    /// [`ServerHub::agent`] with `extra` arguments ([`spawn_agent_with`]).
    pub fn agent_with(
        &self,
        name: &str,
        region: &str,
        gpus: &str,
        price: &str,
        extra: &[&str],
    ) -> Process {
        spawn_agent_with(&self.url, &self.dir, name, region, gpus, price, extra)
    }

    /// Runs `agora ARGS` against this hub (`AGORA_HUB`, `AGORA_API_KEY` set).
    #[track_caller]
    pub fn cli(&self, args: &[&str]) -> CliOutput {
        run_cli(
            args,
            &[("AGORA_HUB", &self.url), ("AGORA_API_KEY", &self.api_key)],
            CLI_TIMEOUT,
        )
    }
}

impl Api {
    /// `POST path` with a JSON body and the API key: the status and the body (JSON, or a string
    /// if it is not). `Err` when no answer came.
    pub fn post_json(&self, path: &str, body: &Value) -> Result<(u16, Value), String> {
        let url = format!("{}{path}", self.url);
        self.runtime.block_on(async {
            let response = self
                .http
                .post(&url)
                .bearer_auth(&self.api_key)
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await
                .map_err(|e| format!("POST {url}: {e:?}"))?;
            let status = response.status().as_u16();
            let text = response
                .text()
                .await
                .map_err(|e| format!("POST {url}: reading the body: {e}"))?;
            let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
            Ok((status, body))
        })
    }

    /// Submits a job (`POST /v1/jobs`, a spec or a manifest as JSON) and returns it; panics
    /// unless the hub answers 201.
    #[track_caller]
    pub fn submit(&self, job: &Value) -> Value {
        match self.post_json("/v1/jobs", job) {
            Ok((201, body)) => body,
            other => panic!("submitting {job}: {other:?}"),
        }
    }

    /// The job's event log (`GET /v1/jobs/{id}/events`), oldest first.
    pub fn events(&self, id: &str) -> Result<Vec<Value>, String> {
        let body = self.get_ok(&format!("/v1/jobs/{id}/events"))?;
        body["items"]
            .as_array()
            .cloned()
            .ok_or_else(|| format!("events of {id} without items: {body}"))
    }
}

/// One HTTP request exactly as a test wants it sent: any method, a raw path and query, any
/// headers (values as bytes, so not necessarily UTF-8) and any body.
#[derive(Clone, Debug, Default)]
pub struct RawRequest {
    pub method: String,
    /// The path and query, e.g. `/v1/jobs?limit=0`.
    pub path: String,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

/// What came back for a [`RawRequest`].
#[derive(Clone, Debug)]
pub struct RawReply {
    pub status: u16,
    /// The `Content-Type` header, "" when absent.
    pub content_type: String,
    pub body: Vec<u8>,
}

impl RawReply {
    /// The body as JSON, if it is JSON.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The body as text (lossy), for messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// An HTTP client that sends [`RawRequest`]s to one hub, adding nothing of its own but what HTTP
/// needs (`Host`, `Content-Length`).
pub struct RawClient {
    runtime: tokio::runtime::Runtime,
    http: reqwest::Client,
    url: String,
}

impl RawClient {
    /// A client of the hub at `url` (`http://127.0.0.1:PORT`).
    pub fn new(url: &str) -> RawClient {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("an HTTP client");
        RawClient {
            runtime,
            http,
            url: url.trim_end_matches('/').to_string(),
        }
    }

    /// Sends `request`; `Err` when it cannot be built (a header the HTTP library refuses) or no
    /// answer came.
    pub fn send(&self, request: &RawRequest) -> Result<RawReply, String> {
        let method = reqwest::Method::from_bytes(request.method.as_bytes())
            .map_err(|e| format!("method {:?}: {e}", request.method))?;
        let url = format!("{}{}", self.url, request.path);
        let mut builder = self.http.request(method, &url);
        for (name, value) in &request.headers {
            let name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| format!("header name {name:?}: {e}"))?;
            let value = reqwest::header::HeaderValue::from_bytes(value)
                .map_err(|e| format!("header {name} value {value:?}: {e}"))?;
            builder = builder.header(name, value);
        }
        let builder = builder.body(request.body.clone());
        self.runtime.block_on(async {
            let response = builder
                .send()
                .await
                .map_err(|e| format!("{} {url}: {e:?}", request.method))?;
            let status = response.status().as_u16();
            let content_type = response
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let body = response
                .bytes()
                .await
                .map_err(|e| format!("{} {url}: reading the body: {e}", request.method))?
                .to_vec();
            Ok(RawReply {
                status,
                content_type,
                body,
            })
        })
    }
}

impl RawClient {
    /// Sends `request` over a new connection written by hand (HTTP/1.1, `Connection: close`),
    /// reading the answer while the body is still being written, as curl does. A server may
    /// answer a request it refuses before its body has arrived (413 for a body over its limit,
    /// 414 for a path too long) and close the connection, as HTTP allows; a client that reads
    /// only once it has written everything, as reqwest does, sees a broken pipe instead of the
    /// answer. `Err` when no answer came.
    pub fn send_over_socket(&self, request: &RawRequest) -> Result<RawReply, String> {
        use std::io::Write;
        let address = self
            .url
            .strip_prefix("http://")
            .ok_or_else(|| format!("not a plain-HTTP hub: {}", self.url))?;
        let mut stream = std::net::TcpStream::connect(address)
            .map_err(|e| format!("connecting to {address}: {e}"))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .map_err(|e| e.to_string())?;
        let mut reading = stream.try_clone().map_err(|e| e.to_string())?;
        let reader = thread::spawn(move || {
            let mut answer = Vec::new();
            let mut chunk = [0u8; 64 * 1024];
            // Until the server closes, or resets once it has said what it had to say.
            while let Ok(n @ 1..) = reading.read(&mut chunk) {
                answer.extend_from_slice(&chunk[..n]);
            }
            answer
        });
        let mut head = format!(
            "{} {} HTTP/1.1\r\nhost: {address}\r\nconnection: close\r\ncontent-length: {}\r\n",
            request.method,
            request.path,
            request.body.len()
        )
        .into_bytes();
        for (name, value) in &request.headers {
            head.extend_from_slice(name.as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(value);
            head.extend_from_slice(b"\r\n");
        }
        head.extend_from_slice(b"\r\n");
        // A write that fails because the server answered and closed is expected; the answer is
        // what counts.
        let _ = stream
            .write_all(&head)
            .and_then(|()| stream.write_all(&request.body));
        let answer = reader.join().map_err(|_| "the reader panicked")?;
        parse_http_answer(&answer).ok_or_else(|| {
            format!(
                "{} {}: no HTTP answer ({} bytes: {:?})",
                request.method,
                request.path.chars().take(100).collect::<String>(),
                answer.len(),
                String::from_utf8_lossy(&answer[..answer.len().min(200)])
            )
        })
    }
}

/// The status, content type and body of an HTTP/1.1 answer read to its end.
fn parse_http_answer(answer: &[u8]) -> Option<RawReply> {
    let split = answer.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&answer[..split]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let mut content_type = String::new();
    let mut length = None;
    for line in lines {
        let (name, value) = line.split_once(':')?;
        match name.trim().to_ascii_lowercase().as_str() {
            "content-type" => content_type = value.trim().to_string(),
            "content-length" => length = value.trim().parse::<usize>().ok(),
            _ => {}
        }
    }
    let mut body = answer[split + 4..].to_vec();
    if let Some(length) = length {
        if body.len() < length {
            return None;
        }
        body.truncate(length);
    }
    Some(RawReply {
        status,
        content_type,
        body,
    })
}

/// A node's secp256k1 key, for tests that speak the agent protocol themselves (`agora agent`
/// keeps its key and token to itself). Deterministic per `seed`, so a test presents the same key
/// each run.
pub struct NodeKey(k256::ecdsa::SigningKey);

impl NodeKey {
    /// The key whose secret is SHA-256(`agora-e2e-node-key/` + `seed`).
    pub fn from_seed(seed: &str) -> NodeKey {
        use sha2::Digest;
        let secret = sha2::Sha256::digest(format!("agora-e2e-node-key/{seed}"));
        NodeKey(k256::ecdsa::SigningKey::from_slice(&secret).expect("a valid secret key"))
    }

    /// The public key as the protocol spells it: compressed SEC1, lowercase hex (66 digits).
    pub fn public_key(&self) -> String {
        hex::encode(self.0.verifying_key().to_sec1_point(true).as_bytes())
    }

    /// The registration proof (docs/agent-protocol.md): ECDSA over SHA-256 of
    /// `agora-register-v1 LF challenge LF name LF operatorAddress`, low s, `r ‖ s` as hex.
    pub fn sign_registration(
        &self,
        challenge: &str,
        name: &str,
        operator_address: Option<&str>,
    ) -> String {
        use k256::ecdsa::signature::Signer;
        let message = format!(
            "agora-register-v1\n{challenge}\n{name}\n{}",
            operator_address.unwrap_or_default()
        );
        let signature: k256::ecdsa::Signature = self.0.sign(message.as_bytes());
        hex::encode(signature.to_bytes())
    }
}
