//! Runs an assignment's workload and says how it ended.
//!
//! Executors are enabled by the node's owner (`agora agent --executor …`, several at once):
//!
//! - [`builtin`]: the workloads built into the agent (`builtin:sleep`, …); always safe to offer;
//! - [`process`]: the workload's `command` as a child process of the agent, for **trusted workloads
//!   only**: the process runs with the agent's user and sees the machine as the agent does;
//! - [`kubernetes`]: strangers' containers in the node's own cluster, isolated (a namespace per
//!   job under the restricted Pod Security profile, a NetworkPolicy, an optional sandboxed
//!   runtime), for workloads with an `image`; its Pods are created, watched and deleted through
//!   the node's cluster API ([`kubernetes::Executor`]).
//!
//! A node advertises the capabilities of the executors it enables ([`Executors::capabilities`]),
//! and the hub sends it only workloads it advertised; a workload no enabled executor runs still
//! fails at once with a clear message, as defence in depth.
//!
//! Every worker gets the same environment whatever the executor ([`worker_env`], documented in
//! `docs/workers.md`).

pub mod builtin;
pub mod checkpoint_marker;
pub mod kubernetes;
pub mod process;

use std::{fmt, path::PathBuf, str::FromStr};

use crds::{
    agent::{Assignment, StatusReport, WorkerState},
    v1alpha1::{EnvVar, GpuDevice},
};
use tokio_util::sync::CancellationToken;

pub use self::{
    builtin::{MAX_RUNTIME_EXCEEDED, SIMULATED_CAPABILITIES, run_builtin},
    checkpoint_marker::CheckpointSink,
};

/// [`SIMULATED_CAPABILITIES`] as the register request wants them.
pub fn simulated_capabilities() -> Vec<String> {
    SIMULATED_CAPABILITIES
        .iter()
        .map(|c| c.to_string())
        .collect()
}

/// What a node with the executors `kinds` advertises: `builtin:<name>` for each builtin
/// workload, `process` for the process executor (the capability
/// [`crds::v1alpha1::Workload::capability`] gives a workload with a `command` and no image),
/// `container` for the kubernetes executor (a workload with an `image`).
pub fn capabilities(kinds: &[ExecutorKind]) -> Vec<String> {
    let mut capabilities: Vec<String> = Vec::new();
    for kind in kinds {
        let offered = match kind {
            ExecutorKind::Builtin => simulated_capabilities(),
            ExecutorKind::Process => vec![process::CAPABILITY.to_string()],
            ExecutorKind::Kubernetes => vec![kubernetes::CAPABILITY.to_string()],
        };
        for capability in offered {
            if !capabilities.contains(&capability) {
                capabilities.push(capability);
            }
        }
    }
    capabilities
}

/// One kind of executor an owner can enable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExecutorKind {
    /// The builtin workloads.
    Builtin,
    /// The workload's `command` as a local child process (trusted workloads only).
    Process,
    /// The workload's container image as an isolated Pod in the node's own cluster.
    Kubernetes,
}

impl ExecutorKind {
    /// The name `--executor` takes.
    pub fn name(self) -> &'static str {
        match self {
            ExecutorKind::Builtin => "builtin",
            ExecutorKind::Process => "process",
            ExecutorKind::Kubernetes => "kubernetes",
        }
    }
}

impl fmt::Display for ExecutorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ExecutorKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "builtin" => Ok(ExecutorKind::Builtin),
            "process" => Ok(ExecutorKind::Process),
            "kubernetes" => Ok(ExecutorKind::Kubernetes),
            other => Err(format!(
                "unknown executor {other:?}: expected `builtin`, `process` or `kubernetes`"
            )),
        }
    }
}

/// The executors a node runs work with, and what they need from the node.
#[derive(Clone, Debug)]
pub struct Executors {
    kinds: Vec<ExecutorKind>,
    /// Where per-assignment working directories go (`<state dir>/<node>/work`).
    work_root: PathBuf,
    /// The kubernetes executor's cluster client, when [`ExecutorKind::Kubernetes`] is enabled.
    kubernetes: Option<kubernetes::Executor>,
}

impl Executors {
    /// The executors in `kinds` (duplicates ignored; none means `builtin`), with working
    /// directories under `work_root`.
    pub fn new(kinds: &[ExecutorKind], work_root: PathBuf) -> Self {
        let mut unique = Vec::new();
        for kind in kinds {
            if !unique.contains(kind) {
                unique.push(*kind);
            }
        }
        if unique.is_empty() {
            unique.push(ExecutorKind::Builtin);
        }
        Self {
            kinds: unique,
            work_root,
            kubernetes: None,
        }
    }

    /// These executors with `kubernetes` as the kubernetes executor's cluster client (built at
    /// startup only when the owner enabled it, see [`kubernetes::Executor::connect`]).
    pub fn with_kubernetes(mut self, kubernetes: Option<kubernetes::Executor>) -> Self {
        self.kubernetes = kubernetes;
        self
    }

    /// The enabled executors, in the order given.
    pub fn kinds(&self) -> &[ExecutorKind] {
        &self.kinds
    }

    /// What the node advertises ([`capabilities`]).
    pub fn capabilities(&self) -> Vec<String> {
        capabilities(&self.kinds)
    }

    /// Runs `assignment` with the executor its workload needs until it ends, its
    /// `maxRuntimeSeconds` passes, or `cancel` fires; `node_gpus` is the node's inventory (to turn
    /// the assigned GPU UUIDs into device indices). The checkpoints the workload reports on its
    /// output ([`checkpoint_marker`]) go to `checkpoints` as they come; builtin workloads report
    /// none.
    pub async fn run(
        &self,
        assignment: &Assignment,
        node_gpus: &[GpuDevice],
        cancel: &CancellationToken,
        checkpoints: &CheckpointSink,
    ) -> Outcome {
        let capability = assignment.workload.capability();
        let env = worker_env(assignment, node_gpus);
        let wants = if assignment.workload.builtin.is_some() {
            ExecutorKind::Builtin
        } else if assignment.workload.image.is_some() {
            ExecutorKind::Kubernetes
        } else {
            ExecutorKind::Process
        };
        if !self.kinds.contains(&wants) {
            let enabled: Vec<_> = self.kinds.iter().map(|k| k.name()).collect();
            return Outcome::failed(format!(
                "unsupported workload `{capability}`: this node runs only {} (executors: {})",
                self.capabilities().join(", "),
                enabled.join(", ")
            ));
        }
        match wants {
            ExecutorKind::Builtin => run_builtin(assignment, &env, cancel).await,
            ExecutorKind::Process => {
                let work_dir = self.work_root.join(&assignment.id);
                process::run(assignment, &env, &work_dir, cancel, checkpoints).await
            }
            ExecutorKind::Kubernetes => match &self.kubernetes {
                Some(kubernetes) => kubernetes.run(assignment, &env, cancel, checkpoints).await,
                None => Outcome::failed(
                    "the kubernetes executor is enabled but the agent has no cluster client",
                ),
            },
        }
    }
}

impl Executors {
    /// After an agent restart, for assignment `id` a previous run of the agent started: ends
    /// what is left of its worker and removes its working directory (see
    /// [`process::clean_up_after_restart`]), and deletes its Pod (see
    /// [`kubernetes::Executor::clean_up_after_restart`]). Builtin workloads die with the agent.
    pub async fn clean_up_after_restart(&self, id: &str, worker: &WorkerId) {
        process::clean_up_after_restart(&self.work_root.join(id), worker).await;
        if let Some(kubernetes) = &self.kubernetes {
            kubernetes.clean_up_after_restart(id, worker).await;
        }
    }
}

/// Which worker of which job attempt an assignment is: what tells its processes apart.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerId {
    /// The job's id.
    pub job: String,
    /// The attempt number.
    pub attempt: u32,
    /// The worker's rank.
    pub rank: u32,
}

impl WorkerId {
    /// The worker `assignment` is.
    pub fn of(assignment: &Assignment) -> Self {
        Self {
            job: assignment.job.clone(),
            attempt: assignment.attempt,
            rank: assignment.rank,
        }
    }
}

/// How a worker ended: the final state and what the hub is told about it.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// A final state: `Succeeded`, `Failed` or `Stopped`.
    pub state: WorkerState,
    /// The exit code, when the workload exited by itself.
    pub exit_code: Option<i32>,
    /// Why it did not succeed.
    pub message: Option<String>,
    /// What a builtin workload computed (benchmark TFLOPS, output commitments).
    pub result: Option<crds::agent::WorkloadResult>,
}

impl Outcome {
    /// Exited 0.
    pub fn succeeded() -> Self {
        Self {
            state: WorkerState::Succeeded,
            exit_code: Some(0),
            message: None,
            result: None,
        }
    }

    /// Could not start, or ended badly.
    pub fn failed(message: impl Into<String>) -> Self {
        Self {
            state: WorkerState::Failed,
            exit_code: None,
            message: Some(message.into()),
            result: None,
        }
    }

    /// Cancelled before it ended.
    pub fn stopped(message: impl Into<String>) -> Self {
        Self {
            state: WorkerState::Stopped,
            exit_code: None,
            message: Some(message.into()),
            result: None,
        }
    }

    /// The status report that tells the hub about this outcome, as report number `seq` on its
    /// assignment.
    pub fn to_report(&self, seq: u64) -> StatusReport {
        StatusReport {
            seq,
            state: self.state,
            exit_code: self.exit_code,
            message: self.message.clone(),
            result: self.result.clone(),
        }
    }
}

/// The job's id.
pub const JOB_ID_ENV: &str = "AGORA_JOB_ID";
/// The worker's rank in its attempt, 0-based.
pub const WORKER_RANK_ENV: &str = "AGORA_WORKER_RANK";
/// How many workers the attempt has.
pub const WORLD_SIZE_ENV: &str = "AGORA_WORLD_SIZE";
/// Every worker of the attempt as `rank=address`, comma-separated, by rank.
pub const PEERS_ENV: &str = "AGORA_PEERS";
/// The assigned GPUs' UUIDs, comma-separated.
pub const GPU_UUIDS_ENV: &str = "AGORA_GPU_UUIDS";

/// The environment a worker runs with, whatever the executor (see `docs/workers.md`): the
/// workload's `env`, then what the hub set for this attempt (`AGORA_ATTEMPT`,
/// `AGORA_CHECKPOINT_URI`), then what the agent derives from the assignment (`AGORA_JOB_ID`,
/// `AGORA_WORKER_RANK`, `AGORA_WORLD_SIZE`, `AGORA_PEERS`, `CUDA_VISIBLE_DEVICES`,
/// `CUDA_DEVICE_ORDER`, `AGORA_GPU_UUIDS`). Each later source wins over an earlier variable of the
/// same name: a job must not be able to make a retried attempt believe it is the first, resume from
/// somewhere else than the hub said, or reach GPUs it was not given.
pub fn worker_env(assignment: &Assignment, node_gpus: &[GpuDevice]) -> Vec<EnvVar> {
    let var = |name: &str, value: String| EnvVar {
        name: name.into(),
        value,
    };
    let peers: Vec<String> = assignment
        .peers
        .iter()
        .map(|p| format!("{}={}", p.rank, p.address.as_deref().unwrap_or("")))
        .collect();
    // NVML numbers GPUs in PCI bus order, which is the inventory's; CUDA numbers them the same way
    // only with CUDA_DEVICE_ORDER=PCI_BUS_ID. A UUID missing from the inventory (it cannot be:
    // the hub assigns the node's own GPUs) is passed as the UUID, which CUDA also accepts.
    let devices: Vec<String> = assignment
        .gpus
        .iter()
        .map(
            |uuid| match node_gpus.iter().position(|g| &g.uuid == uuid) {
                Some(index) => index.to_string(),
                None => uuid.clone(),
            },
        )
        .collect();
    let agent = [
        var(JOB_ID_ENV, assignment.job.clone()),
        var(WORKER_RANK_ENV, assignment.rank.to_string()),
        var(WORLD_SIZE_ENV, assignment.workers.to_string()),
        var(PEERS_ENV, peers.join(",")),
        var("CUDA_VISIBLE_DEVICES", devices.join(",")),
        var("CUDA_DEVICE_ORDER", "PCI_BUS_ID".into()),
        var(GPU_UUIDS_ENV, assignment.gpus.join(",")),
    ];
    let mut env: Vec<EnvVar> = Vec::new();
    for layer in [
        &assignment.workload.env[..],
        &assignment.env[..],
        &agent[..],
    ] {
        env.retain(|v| !layer.iter().any(|w| w.name == v.name));
        env.extend(layer.iter().cloned());
    }
    env
}

#[cfg(test)]
pub(crate) mod tests {
    use crds::{
        agent::Peer,
        v1alpha1::{BuiltinWorkload, SleepWorkload, Workload},
    };

    use super::*;

    fn var(name: &str, value: &str) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: value.into(),
        }
    }

    pub(crate) fn assignment(workload: Workload, max_runtime_seconds: Option<u64>) -> Assignment {
        Assignment {
            id: "asg-1".into(),
            job: "job-1".into(),
            attempt: 1,
            rank: 0,
            workers: 1,
            gpus: vec!["GPU-SIM-0".into()],
            workload,
            max_runtime_seconds,
            env: vec![var(crds::agent::ATTEMPT_ENV, "1")],
            peers: Vec::new(),
            price_per_gpu_hour: None,
        }
    }

    fn gpu(uuid: &str) -> GpuDevice {
        GpuDevice {
            uuid: uuid.into(),
            model: "L4".into(),
            memory_gib: 24,
            compute_capability: "8.9".into(),
            healthy: true,
            simulated: true,
        }
    }

    fn get<'a>(env: &'a [EnvVar], name: &str) -> Option<&'a str> {
        env.iter()
            .find(|v| v.name == name)
            .map(|v| v.value.as_str())
    }

    #[test]
    fn the_hubs_and_agents_variables_win_over_the_workloads() {
        let mut work = assignment(Workload::default(), None);
        work.workload.env = vec![
            var("EPOCHS", "3"),
            var("AGORA_ATTEMPT", "1"),
            var("CUDA_VISIBLE_DEVICES", "0,1,2,3"),
            var("AGORA_JOB_ID", "someone-else"),
        ];
        work.env = vec![
            var("AGORA_ATTEMPT", "2"),
            var("AGORA_CHECKPOINT_URI", "s3://ckpt/step-100"),
        ];
        work.gpus = vec!["GPU-B".into()];
        let env = worker_env(&work, &[gpu("GPU-A"), gpu("GPU-B")]);
        assert_eq!(get(&env, "EPOCHS"), Some("3"));
        assert_eq!(get(&env, "AGORA_ATTEMPT"), Some("2"));
        assert_eq!(
            get(&env, "AGORA_CHECKPOINT_URI"),
            Some("s3://ckpt/step-100")
        );
        assert_eq!(get(&env, "CUDA_VISIBLE_DEVICES"), Some("1"));
        assert_eq!(get(&env, "AGORA_GPU_UUIDS"), Some("GPU-B"));
        assert_eq!(get(&env, "AGORA_JOB_ID"), Some("job-1"));
        let names: Vec<_> = env.iter().map(|v| v.name.as_str()).collect();
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(names.len(), unique.len(), "each variable once: {names:?}");
    }

    #[test]
    fn every_worker_learns_its_place_in_the_attempt() {
        let mut work = assignment(Workload::default(), None);
        work.rank = 1;
        work.workers = 3;
        work.gpus = vec!["GPU-C".into(), "GPU-A".into()];
        work.peers = vec![
            Peer {
                rank: 0,
                node: "gn-a".into(),
                address: Some("10.0.0.7".into()),
            },
            Peer {
                rank: 1,
                node: "gn-b".into(),
                address: None,
            },
            Peer {
                rank: 2,
                node: "gn-c".into(),
                address: Some("gn-c.example.com".into()),
            },
        ];
        let env = worker_env(&work, &[gpu("GPU-A"), gpu("GPU-B"), gpu("GPU-C")]);
        assert_eq!(get(&env, "AGORA_WORKER_RANK"), Some("1"));
        assert_eq!(get(&env, "AGORA_WORLD_SIZE"), Some("3"));
        assert_eq!(
            get(&env, "AGORA_PEERS"),
            Some("0=10.0.0.7,1=,2=gn-c.example.com")
        );
        assert_eq!(get(&env, "CUDA_VISIBLE_DEVICES"), Some("2,0"));
        assert_eq!(get(&env, "CUDA_DEVICE_ORDER"), Some("PCI_BUS_ID"));
        assert_eq!(get(&env, "AGORA_GPU_UUIDS"), Some("GPU-C,GPU-A"));
    }

    #[test]
    fn executors_are_named_and_advertise_their_capabilities() {
        assert_eq!("process".parse(), Ok(ExecutorKind::Process));
        assert_eq!("builtin".parse(), Ok(ExecutorKind::Builtin));
        assert_eq!("kubernetes".parse(), Ok(ExecutorKind::Kubernetes));
        let err = "docker".parse::<ExecutorKind>().unwrap_err();
        assert!(err.contains("docker") && err.contains("`process`"), "{err}");
        let root = PathBuf::from("/nonexistent");
        assert_eq!(
            Executors::new(&[], root.clone()).capabilities(),
            SIMULATED_CAPABILITIES
        );
        assert_eq!(
            Executors::new(
                &[
                    ExecutorKind::Process,
                    ExecutorKind::Builtin,
                    ExecutorKind::Process
                ],
                root
            )
            .capabilities(),
            [&["process"], SIMULATED_CAPABILITIES].concat()
        );
        let process = Workload {
            command: Some(vec!["true".into()]),
            ..Default::default()
        };
        assert_eq!(process.capability(), process::CAPABILITY);
        assert_eq!(
            capabilities(&[ExecutorKind::Kubernetes, ExecutorKind::Process]),
            ["container", "process"]
        );
        let container = Workload {
            image: Some("ghcr.io/x/train:1".into()),
            ..Default::default()
        };
        assert_eq!(container.capability(), kubernetes::CAPABILITY);
    }

    #[tokio::test]
    async fn a_workload_no_enabled_executor_runs_fails_at_once() {
        let builtin_only = Executors::new(&[ExecutorKind::Builtin], PathBuf::from("/nonexistent"));
        let process = Workload {
            command: Some(vec!["true".into()]),
            ..Default::default()
        };
        let outcome = builtin_only
            .run(
                &assignment(process, None),
                &[],
                &CancellationToken::new(),
                &CheckpointSink::channel().0,
            )
            .await;
        assert_eq!(outcome.state, WorkerState::Failed);
        assert_eq!(
            outcome.message.as_deref(),
            Some(
                format!(
                    "unsupported workload `process`: this node runs only {} (executors: builtin)",
                    SIMULATED_CAPABILITIES.join(", ")
                )
                .as_str()
            )
        );
        let process_only = Executors::new(&[ExecutorKind::Process], PathBuf::from("/nonexistent"));
        let sleep = Workload {
            builtin: Some(BuiltinWorkload {
                sleep: Some(SleepWorkload {
                    duration_seconds: 1,
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let outcome = process_only
            .run(
                &assignment(sleep, None),
                &[],
                &CancellationToken::new(),
                &CheckpointSink::channel().0,
            )
            .await;
        assert_eq!(
            outcome.message.as_deref(),
            Some(
                "unsupported workload `builtin:sleep`: this node runs only process (executors: process)"
            )
        );
    }
}
