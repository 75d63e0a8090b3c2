//! The process executor: runs a workload's `command` + `args` as a child process of the agent.
//!
//! **For trusted workloads only.** The process runs as the agent's user, on the agent's file
//! system and network, with nothing between it and the machine; a node that runs strangers' code
//! uses the kubernetes executor, which isolates each job. That is why the owner must enable it
//! (`agora agent --executor process`).
//!
//! Each assignment runs in its own process group (so a cancel reaches every process the workload
//! started), in its own working directory `<state dir>/<node>/work/<assignment id>` (mode 0700, removed
//! when the worker ends), with a clean environment: `PATH` from the agent, `HOME` set to the working
//! directory, and the worker environment ([`super::worker_env`]). The workload's output is kept
//! in memory, the last [`TAIL_BYTES`] of stdout and stderr together, and a failure's message ends
//! with that tail (bounded to what the hub accepts). Both pipes are also read for the checkpoint
//! markers the workload prints ([`super::checkpoint_marker`]).
//!
//! Cancel (the hub's stop, or the agent shutting down) and `maxRuntimeSeconds` end the process
//! group with SIGTERM, then SIGKILL after [`KILL_GRACE`].

use std::{
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use crds::{agent::Assignment, v1alpha1::EnvVar};
use tokio::{
    io::{AsyncRead, AsyncReadExt},
    process::{Child, Command},
};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, warn};

use super::{
    CheckpointSink, MAX_RUNTIME_EXCEEDED, Outcome, WorkerId, checkpoint_marker::SinkScanner,
};

/// The capability a node with the process executor advertises (a workload's capability when it
/// has a `command` and neither `image` nor `builtin`).
pub const CAPABILITY: &str = "process";

/// How much of the workload's output is kept.
pub const TAIL_BYTES: usize = 16 * 1024;

/// The longest status message the hub accepts, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 4096;

/// How long a process group has between SIGTERM and SIGKILL: within the agent's own shutdown
/// grace, so that an agent shutting down still reports how its workers ended.
pub const KILL_GRACE: Duration = Duration::from_secs(5);

/// How long the output is read after the process group ended.
const PIPE_GRACE: Duration = Duration::from_secs(2);

/// Runs the workload of `assignment` with `env` in `work_dir` until it exits, `maxRuntimeSeconds`
/// passes or `cancel` fires, putting the checkpoints it reports into `checkpoints`.
pub async fn run(
    assignment: &Assignment,
    env: &[EnvVar],
    work_dir: &Path,
    cancel: &CancellationToken,
    checkpoints: &CheckpointSink,
) -> Outcome {
    let workload = &assignment.workload;
    if let Some(image) = &workload.image {
        return Outcome::failed(format!(
            "the workload names an image ({image}): the process executor runs `command` only, on \
             the host; container images need the kubernetes executor"
        ));
    }
    let Some((program, leading)) = workload.command.as_deref().and_then(|c| c.split_first()) else {
        return Outcome::failed(
            "the workload has no `command`: the process executor needs one to run",
        );
    };
    if cancel.is_cancelled() {
        return Outcome::stopped("stopped before completion");
    }
    if let Err(e) = create_work_dir(work_dir).await {
        return Outcome::failed(format!(
            "cannot create the working directory {}: {e}",
            work_dir.display()
        ));
    }
    let mut command = Command::new(program);
    command
        .args(leading)
        .args(workload.args.iter().flatten())
        .current_dir(work_dir)
        .env_clear()
        .env("HOME", work_dir)
        .envs(env.iter().map(|v| (&v.name, &v.value)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Should the agent's worker task be dropped without reaching the end below, the child is
        // still killed.
        .kill_on_drop(true);
    if let Some(path) = std::env::var_os("PATH") {
        command.env("PATH", path);
    }
    #[cfg(unix)]
    command.process_group(0);
    let group_file = group_file(work_dir);
    let outcome = match command.spawn() {
        Ok(child) => {
            // Where a restarted agent finds this process group, should the agent die first
            // (its children do not die with it).
            if let Some(pid) = child.id()
                && let Err(e) = tokio::fs::write(&group_file, pid.to_string()).await
            {
                warn!(file = %group_file.display(), error = %e, "cannot record the process group");
            }
            supervise(child, assignment.max_runtime_seconds, cancel, checkpoints).await
        }
        Err(e) => Outcome::failed(format!("cannot start `{program}`: {e}")),
    };
    let _ = tokio::fs::remove_file(&group_file).await;
    if let Err(e) = tokio::fs::remove_dir_all(work_dir).await {
        warn!(dir = %work_dir.display(), error = %e, "cannot remove the working directory");
    }
    outcome
}

/// Where the process group of the worker in `work_dir` is recorded: next to the directory, not in
/// it, so the workload does not see it.
fn group_file(work_dir: &Path) -> PathBuf {
    let mut path = work_dir.as_os_str().to_owned();
    path.push(".pgid");
    PathBuf::from(path)
}

/// After an agent restart: ends what a previous run of the agent left running of a worker's
/// process group (SIGKILL: the agent was killed, its children were not) and removes its working
/// directory `work_dir`, so that the worker is never running twice.
///
/// The recorded group is killed only when its leader's environment (`/proc/PID/environ`, Linux)
/// names this very worker (`AGORA_JOB_ID`, `AGORA_ATTEMPT`, `AGORA_WORKER_RANK`): a process id can
/// be reused, and the agent must not kill an unrelated process. A group whose leader has exited is
/// not found this way.
pub async fn clean_up_after_restart(work_dir: &Path, worker: &WorkerId) {
    let group_file = group_file(work_dir);
    if let Ok(text) = tokio::fs::read_to_string(&group_file).await
        && let Ok(group) = text.trim().parse::<u32>()
    {
        if leads_worker(group, worker) {
            warn!(
                pid = group,
                "a process of this worker survived the agent's restart; killing its group"
            );
            signal_group(Some(group), GroupSignal::Kill);
        }
        let _ = tokio::fs::remove_file(&group_file).await;
    }
    if let Err(e) = tokio::fs::remove_dir_all(work_dir).await
        && e.kind() != std::io::ErrorKind::NotFound
    {
        warn!(dir = %work_dir.display(), error = %e, "cannot remove the working directory");
    }
}

/// Whether process `pid` was started for `worker`, judged by its environment.
fn leads_worker(pid: u32, worker: &WorkerId) -> bool {
    let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
        return false;
    };
    let vars: Vec<&[u8]> = environ.split(|b| *b == 0).collect();
    [
        format!("{}={}", super::JOB_ID_ENV, worker.job),
        format!("{}={}", crds::agent::ATTEMPT_ENV, worker.attempt),
        format!("{}={}", super::WORKER_RANK_ENV, worker.rank),
    ]
    .iter()
    .all(|want| vars.contains(&want.as_bytes()))
}

/// Creates the working directory, readable by the agent's user only.
async fn create_work_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = tokio::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    builder.mode(0o700);
    builder.create(dir).await
}

/// Waits for `child` to end, ending its process group on cancel or at the runtime limit.
async fn supervise(
    mut child: Child,
    max_runtime_seconds: Option<u64>,
    cancel: &CancellationToken,
    checkpoints: &CheckpointSink,
) -> Outcome {
    let group = child.id();
    info!(pid = group, "process started");
    let tail = Arc::new(Mutex::new(Tail::default()));
    let readers = [
        child
            .stdout
            .take()
            .map(|out| collect(out, Arc::clone(&tail), checkpoints.scanner())),
        child
            .stderr
            .take()
            .map(|err| collect(err, Arc::clone(&tail), checkpoints.scanner())),
    ];
    let limit = async {
        match max_runtime_seconds {
            Some(seconds) => tokio::time::sleep(Duration::from_secs(seconds)).await,
            None => std::future::pending().await,
        }
    };
    let ended = tokio::select! {
        status = child.wait() => Ok(status),
        () = cancel.cancelled() => Err(Outcome::stopped("stopped before completion")),
        () = limit => Err(Outcome::failed(MAX_RUNTIME_EXCEEDED)),
    };
    let outcome = match ended {
        Ok(Ok(status)) => exited(status),
        Ok(Err(e)) => Outcome::failed(format!("cannot wait for the process: {e}")),
        Err(outcome) => {
            terminate(&mut child, group).await;
            outcome
        }
    };
    // Whatever the workload left behind in its group goes with it: nothing it started may keep
    // the GPUs after the hub was told the worker ended.
    signal_group(group, GroupSignal::Kill);
    for mut reader in readers.into_iter().flatten() {
        // The pipes close once every process holding them has exited, which the kill ensures
        // for the group; a process that left the group (`setsid`) may hold them open, and its
        // output is not waited for.
        if tokio::time::timeout(PIPE_GRACE, &mut reader).await.is_err() {
            reader.abort();
        }
    }
    let tail = tail.lock().unwrap_or_else(PoisonError::into_inner).text();
    with_tail(outcome, &tail)
}

/// The outcome of a process that exited by itself.
fn exited(status: ExitStatus) -> Outcome {
    match status.code() {
        Some(0) => Outcome::succeeded(),
        Some(code) => Outcome {
            exit_code: Some(code),
            ..Outcome::failed(format!("exited with code {code}"))
        },
        None => Outcome::failed(signal_message(status)),
    }
}

#[cfg(unix)]
fn signal_message(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status.signal() {
        Some(signal) => format!("killed by signal {signal}"),
        None => format!("ended without an exit code ({status})"),
    }
}

#[cfg(not(unix))]
fn signal_message(status: ExitStatus) -> String {
    format!("ended without an exit code ({status})")
}

/// SIGTERM to the group, then SIGKILL if the leader has not exited after [`KILL_GRACE`].
async fn terminate(child: &mut Child, group: Option<u32>) {
    signal_group(group, GroupSignal::Term);
    if tokio::time::timeout(KILL_GRACE, child.wait())
        .await
        .is_err()
    {
        warn!(
            grace = ?KILL_GRACE,
            "the process did not exit after SIGTERM; sending SIGKILL"
        );
        signal_group(group, GroupSignal::Kill);
        // Covers a platform without process groups.
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
}

/// A signal for a whole process group.
#[derive(Clone, Copy, Debug)]
pub(crate) enum GroupSignal {
    Term,
    Kill,
}

/// Sends `signal` to the process group led by `group` (the child's pid: it was spawned as the
/// leader of a new group). A group already gone is not an error.
#[cfg(unix)]
pub(crate) fn signal_group(group: Option<u32>, signal: GroupSignal) {
    use rustix::process::{Pid, Signal, kill_process_group};
    let Some(pid) = group
        .and_then(|g| i32::try_from(g).ok())
        .and_then(Pid::from_raw)
    else {
        return;
    };
    let signal = match signal {
        GroupSignal::Term => Signal::TERM,
        GroupSignal::Kill => Signal::KILL,
    };
    if let Err(e) = kill_process_group(pid, signal)
        && e != rustix::io::Errno::SRCH
    {
        warn!(group = pid.as_raw_pid(), error = %e, "cannot signal the process group");
    }
}

#[cfg(not(unix))]
pub(crate) fn signal_group(_group: Option<u32>, _signal: GroupSignal) {}

/// Reads a pipe to its end into `tail`, and its checkpoint markers into `markers` (marker lines
/// stay in the tail: they are output like any other).
fn collect(
    mut pipe: impl AsyncRead + Unpin + Send + 'static,
    tail: Arc<Mutex<Tail>>,
    mut markers: SinkScanner,
) -> tokio::task::JoinHandle<()> {
    let task = async move {
        let mut buf = vec![0; 8192];
        while let Ok(n) = pipe.read(&mut buf).await {
            if n == 0 {
                break;
            }
            tail.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(&buf[..n]);
            markers.feed(&buf[..n]);
        }
        markers.finish();
    };
    // In the worker's span, so that what it reports is logged as the worker's.
    tokio::spawn(task.instrument(tracing::Span::current()))
}

/// The last [`TAIL_BYTES`] of a process's output.
#[derive(Debug, Default)]
struct Tail {
    bytes: std::collections::VecDeque<u8>,
}

impl Tail {
    fn push(&mut self, chunk: &[u8]) {
        self.bytes.extend(chunk);
        let excess = self.bytes.len().saturating_sub(TAIL_BYTES);
        self.bytes.drain(..excess);
    }

    fn text(&self) -> String {
        let (a, b) = self.bytes.as_slices();
        String::from_utf8_lossy(&[a, b].concat()).into_owned()
    }
}

/// `outcome` with the end of the output appended to a failure's message, the whole message within
/// [`MAX_MESSAGE_BYTES`] (the end of the output is what explains a failure, so its start goes).
pub(super) fn with_tail(mut outcome: Outcome, tail: &str) -> Outcome {
    let tail = tail.trim_end();
    if outcome.state == crds::agent::WorkerState::Succeeded || tail.is_empty() {
        return outcome;
    }
    let head = outcome.message.take().unwrap_or_default();
    let head = format!("{head}; last output:\n");
    let room = MAX_MESSAGE_BYTES.saturating_sub(head.len());
    let mut start = tail.len().saturating_sub(room);
    while !tail.is_char_boundary(start) {
        start += 1;
    }
    outcome.message = Some(format!("{head}{}", &tail[start..]));
    outcome
}

#[cfg(all(test, unix))]
mod tests {
    use crds::{
        agent::WorkerState,
        v1alpha1::{BuiltinWorkload, SleepWorkload, Workload},
    };
    use tokio::time::Instant;

    use super::*;
    use crate::executor::{checkpoint_marker, tests::assignment};

    fn shell(script: &str) -> Workload {
        Workload {
            command: Some(vec!["sh".into(), "-c".into()]),
            args: Some(vec![script.into()]),
            ..Default::default()
        }
    }

    fn var(name: &str, value: &str) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: value.into(),
        }
    }

    async fn run_in(dir: &Path, workload: Workload, max_runtime: Option<u64>) -> Outcome {
        let work = assignment(workload, max_runtime);
        run(
            &work,
            &[var("GREETING", "hello")],
            &dir.join("asg-1"),
            &CancellationToken::new(),
            &CheckpointSink::channel().0,
        )
        .await
    }

    #[tokio::test]
    async fn a_process_that_exits_0_succeeds_in_its_own_directory() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("seen");
        let script = format!(
            "test \"$GREETING\" = hello && test \"$PWD\" = \"$HOME\" && pwd > {}",
            marker.display()
        );
        let outcome = run_in(dir.path(), shell(&script), None).await;
        assert_eq!(outcome, Outcome::succeeded());
        let cwd = std::fs::read_to_string(&marker).unwrap();
        assert!(cwd.trim().ends_with("asg-1"), "{cwd}");
        assert!(
            !dir.path().join("asg-1").exists(),
            "the working directory is removed"
        );
    }

    #[tokio::test]
    async fn a_failure_carries_the_exit_code_and_the_end_of_the_output() {
        let dir = tempfile::tempdir().unwrap();
        let script = "i=0; while [ $i -lt 2000 ]; do echo line $i; i=$((i+1)); done; \
                      echo 'CUDA out of memory' >&2; exit 3";
        let outcome = run_in(dir.path(), shell(script), None).await;
        assert_eq!(outcome.state, WorkerState::Failed);
        assert_eq!(outcome.exit_code, Some(3));
        let message = outcome.message.unwrap();
        assert!(
            message.starts_with("exited with code 3; last output:\n"),
            "{message}"
        );
        assert!(message.ends_with("CUDA out of memory"), "{message}");
        assert!(message.contains("line 1999"), "{message}");
        assert!(!message.contains("line 1\n"), "only the tail is kept");
        assert!(message.len() <= MAX_MESSAGE_BYTES, "{}", message.len());
    }

    #[tokio::test]
    async fn a_missing_program_fails_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let workload = Workload {
            command: Some(vec!["/nonexistent/train".into()]),
            ..Default::default()
        };
        let outcome = run_in(dir.path(), workload, None).await;
        assert_eq!(outcome.state, WorkerState::Failed);
        let message = outcome.message.unwrap();
        assert!(
            message.starts_with("cannot start `/nonexistent/train`"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn images_and_workloads_without_a_command_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let container = Workload {
            image: Some("ghcr.io/acme/train:1.4".into()),
            command: Some(vec!["python".into()]),
            ..Default::default()
        };
        let outcome = run_in(dir.path(), container, None).await;
        assert_eq!(outcome.state, WorkerState::Failed);
        assert!(
            outcome
                .message
                .unwrap()
                .contains("container images need the kubernetes executor")
        );
        let nothing = Workload {
            builtin: Some(BuiltinWorkload {
                sleep: Some(SleepWorkload {
                    duration_seconds: 1,
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let outcome = run_in(dir.path(), nothing, None).await;
        assert_eq!(
            outcome.message.as_deref(),
            Some("the workload has no `command`: the process executor needs one to run")
        );
    }

    /// Whether a process with this pid exists (and is not a zombie).
    fn alive(pid: &str) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|stat| !stat.contains(") Z "))
    }

    #[tokio::test]
    async fn cancel_ends_the_whole_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let pids = dir.path().join("pids");
        // A child in the background, as a launcher would start its workers.
        let script = format!(
            "sleep 600 & echo $! > {p}.tmp && mv {p}.tmp {p}; wait",
            p = pids.display()
        );
        let cancel = CancellationToken::new();
        let work = assignment(shell(&script), None);
        let task = tokio::spawn({
            let cancel = cancel.clone();
            let dir = dir.path().join("asg-1");
            async move { run(&work, &[], &dir, &cancel, &CheckpointSink::channel().0).await }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        let child = loop {
            if let Ok(pid) = std::fs::read_to_string(&pids) {
                break pid.trim().to_string();
            }
            assert!(Instant::now() < deadline, "the workload did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(alive(&child));
        cancel.cancel();
        let outcome = task.await.unwrap();
        assert_eq!(outcome.state, WorkerState::Stopped);
        assert!(
            !alive(&child),
            "the background child {child} was killed too"
        );
    }

    #[tokio::test]
    async fn max_runtime_kills_the_process() {
        let dir = tempfile::tempdir().unwrap();
        let outcome = run_in(dir.path(), shell("echo started; exec sleep 600"), Some(1)).await;
        assert_eq!(outcome.state, WorkerState::Failed);
        assert_eq!(
            outcome.message.as_deref(),
            Some("exceeded maxRuntime; last output:\nstarted")
        );
    }

    #[tokio::test]
    async fn a_checkpoint_marker_reaches_the_sink_while_the_process_runs() {
        let dir = tempfile::tempdir().unwrap();
        let gate = dir.path().join("gate");
        // The marker comes in two writes, a malformed one goes to stderr, and the process keeps
        // running until the test has seen the checkpoint.
        let script = format!(
            r#"printf '%s' 'AGORA_CHECKPOINT {{"uri":"s3://b/run/step-'; sleep 0.1; \
               echo '1200","step":1200}}'; echo 'AGORA_CHECKPOINT {{"uri":""}}' >&2; \
               while [ ! -e {gate} ]; do sleep 0.05; done; exit 7"#,
            gate = gate.display()
        );
        let work = assignment(shell(&script), None);
        let (sink, mut latest) = CheckpointSink::channel();
        let cancel = CancellationToken::new();
        let work_dir = dir.path().join("asg-1");
        let running = run(&work, &[], &work_dir, &cancel, &sink);
        tokio::pin!(running);
        let seen = tokio::time::timeout(Duration::from_secs(20), async {
            tokio::select! {
                changed = latest.changed() => changed.map(|()| latest.borrow_and_update().clone()),
                outcome = &mut running => panic!("the process ended first: {outcome:?}"),
            }
        })
        .await
        .expect("a checkpoint within 20 s")
        .expect("the sink is open");
        assert_eq!(
            seen,
            Some(checkpoint_marker::Checkpoint {
                uri: "s3://b/run/step-1200".into(),
                step: 1200
            })
        );
        std::fs::write(&gate, "").unwrap();
        let outcome = running.await;
        assert_eq!(outcome.exit_code, Some(7));
        // Marker lines are output like any other: they stay in the tail.
        let message = outcome.message.unwrap();
        assert!(
            message.contains(r#"AGORA_CHECKPOINT {"uri":"s3://b/run/step-1200","step":1200}"#),
            "{message}"
        );
        assert!(
            !latest.has_changed().unwrap(),
            "the malformed marker is ignored"
        );
    }

    #[test]
    fn the_message_keeps_the_end_of_a_long_multibyte_tail() {
        let tail = "é".repeat(5000);
        let outcome = with_tail(Outcome::failed("exited with code 1"), &tail);
        let message = outcome.message.unwrap();
        assert!(message.len() <= MAX_MESSAGE_BYTES);
        assert!(message.ends_with("éé"));
        assert_eq!(
            with_tail(Outcome::succeeded(), "noise"),
            Outcome::succeeded()
        );
    }
}
