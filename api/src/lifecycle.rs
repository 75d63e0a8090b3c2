//! The legal state changes of jobs and assignments, in one place.
//!
//! A job's phase changes only by a [`JobTransition`]: a named move with the phases it may leave and
//! the one it enters, so a change the lifecycle does not allow cannot even be written down. The
//! store applies each as a compare-and-set on exactly those phases, so two hub tasks (or replicas)
//! racing on one job cannot both win. docs/architecture.md ("Job lifecycle") shows the same table;
//! a test below keeps the two equal.

use crds::v1alpha1::JobPhase;

/// Why a job attempt failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailureReason {
    /// A worker exited non-zero or could not start, or its agent no longer holds it.
    WorkerFailed,
    /// A worker's node stopped sending heartbeats for longer than the node timeout.
    NodeLost,
    /// The job ran for its whole `maxRuntime`.
    DeadlineExceeded,
    /// A verifier on another operator's node recomputed part of the work and a tie-breaker on a
    /// third agreed with the verifier, not the worker (docs/verification.md).
    VerificationFailed,
}

impl FailureReason {
    pub const ALL: [FailureReason; 4] = [
        FailureReason::WorkerFailed,
        FailureReason::NodeLost,
        FailureReason::DeadlineExceeded,
        FailureReason::VerificationFailed,
    ];

    /// The reason as events and the job's status name it.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::WorkerFailed => "WorkerFailed",
            FailureReason::NodeLost => "NodeLost",
            FailureReason::DeadlineExceeded => "DeadlineExceeded",
            FailureReason::VerificationFailed => "VerificationFailed",
        }
    }

    /// Whether another attempt could do better. Not after `DeadlineExceeded`: a retry would only
    /// run as long again.
    pub fn retryable(self) -> bool {
        !matches!(self, FailureReason::DeadlineExceeded)
    }
}

/// A legal move of a job from one phase to another: the only way the store changes a job's phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JobTransition {
    /// The scheduler placed a new attempt: Pending → Scheduled.
    Place,
    /// Every worker of the attempt reported running: Scheduled → Running.
    Start,
    /// The workers are done and the job asked for verification: Running → Verifying (or straight
    /// from Scheduled, when the workers ended before all of them reported running).
    Verify,
    /// Every worker exited successfully (and verification, when asked, agreed): → Succeeded. Also
    /// from Scheduled, when the workers ended before all of them reported running.
    Succeed,
    /// The attempt failed (or its verification did) and another one may follow: → Pending, to be
    /// placed again elsewhere.
    Retry,
    /// The attempt failed and no other may follow (attempts used up, or a failure a retry cannot
    /// mend): → Failed.
    Fail(FailureReason),
    /// The user cancelled the job: any phase that is not final → Cancelled.
    Cancel,
}

impl JobTransition {
    /// Every transition (`Fail` once per reason).
    pub const ALL: [JobTransition; 10] = [
        JobTransition::Place,
        JobTransition::Start,
        JobTransition::Verify,
        JobTransition::Succeed,
        JobTransition::Retry,
        JobTransition::Fail(FailureReason::WorkerFailed),
        JobTransition::Fail(FailureReason::NodeLost),
        JobTransition::Fail(FailureReason::DeadlineExceeded),
        JobTransition::Fail(FailureReason::VerificationFailed),
        JobTransition::Cancel,
    ];

    /// The phases this transition may leave. Never a final one, nor the one it enters.
    pub fn from_phases(self) -> &'static [JobPhase] {
        use JobPhase::*;
        match self {
            JobTransition::Place => &[Pending],
            JobTransition::Start => &[Scheduled],
            JobTransition::Verify => &[Scheduled, Running],
            JobTransition::Succeed => &[Scheduled, Running, Verifying],
            JobTransition::Retry => &[Scheduled, Running, Verifying],
            JobTransition::Fail(_) => &[Scheduled, Running, Verifying],
            JobTransition::Cancel => &[Pending, Scheduled, Running, Verifying],
        }
    }

    /// The phase this transition enters.
    pub fn to(self) -> JobPhase {
        match self {
            JobTransition::Place => JobPhase::Scheduled,
            JobTransition::Start => JobPhase::Running,
            JobTransition::Verify => JobPhase::Verifying,
            JobTransition::Succeed => JobPhase::Succeeded,
            JobTransition::Retry => JobPhase::Pending,
            JobTransition::Fail(_) => JobPhase::Failed,
            JobTransition::Cancel => JobPhase::Cancelled,
        }
    }

    /// The reason its event and the job's status give.
    pub fn reason(self) -> &'static str {
        match self {
            JobTransition::Place => "Placed",
            JobTransition::Start => "Started",
            JobTransition::Verify => "Verifying",
            JobTransition::Succeed => "Completed",
            JobTransition::Retry => "Retrying",
            JobTransition::Fail(reason) => reason.as_str(),
            JobTransition::Cancel => "Cancelled",
        }
    }

    /// The phase a job in `from` moves to by this transition, or None when the transition may not
    /// leave `from`.
    pub fn apply(self, from: JobPhase) -> Option<JobPhase> {
        self.from_phases().contains(&from).then(|| self.to())
    }

    /// Whether the job's live workers are to be stopped: its attempt is over without them.
    pub fn stops_workers(self) -> bool {
        matches!(
            self,
            JobTransition::Retry | JobTransition::Fail(_) | JobTransition::Cancel
        )
    }
}

/// The hub's view of one assignment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AssignmentPhase {
    /// Written by the scheduler; the agent has not reported on it yet.
    Assigned,
    /// The agent is preparing it.
    Starting,
    /// The worker runs.
    Running,
    /// The hub asked the agent to stop it (cancel, or another worker failed).
    Stopping,
    /// Exited 0.
    Succeeded,
    /// Exited non-zero or could not start.
    Failed,
    /// Stopped on the hub's request.
    Stopped,
    /// Its node stopped sending heartbeats for longer than the node timeout while it was live. Final
    /// like the other ends: the GPUs are released and the agent, should it come back, is told to
    /// stop it and its reports are refused, because the job has moved on without it.
    Lost,
}

impl AssignmentPhase {
    pub const ALL: [AssignmentPhase; 8] = [
        AssignmentPhase::Assigned,
        AssignmentPhase::Starting,
        AssignmentPhase::Running,
        AssignmentPhase::Stopping,
        AssignmentPhase::Succeeded,
        AssignmentPhase::Failed,
        AssignmentPhase::Stopped,
        AssignmentPhase::Lost,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AssignmentPhase::Assigned => "Assigned",
            AssignmentPhase::Starting => "Starting",
            AssignmentPhase::Running => "Running",
            AssignmentPhase::Stopping => "Stopping",
            AssignmentPhase::Succeeded => "Succeeded",
            AssignmentPhase::Failed => "Failed",
            AssignmentPhase::Stopped => "Stopped",
            AssignmentPhase::Lost => "Lost",
        }
    }

    /// Whether the worker has ended (its GPUs are free again).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            AssignmentPhase::Succeeded
                | AssignmentPhase::Failed
                | AssignmentPhase::Stopped
                | AssignmentPhase::Lost
        )
    }

    /// Whether the agent should be running it.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            AssignmentPhase::Assigned | AssignmentPhase::Starting | AssignmentPhase::Running
        )
    }
}

impl std::str::FromStr for AssignmentPhase {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AssignmentPhase::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("unknown assignment state {s:?}"))
    }
}

/// What a report from an agent does to an assignment in state `current`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportEffect {
    /// Move to this state.
    Apply(AssignmentPhase),
    /// Nothing to do: a repeat, or progress on an assignment the hub is stopping.
    Ignore,
    /// The report contradicts a final state.
    Conflict,
}

/// Decides what an agent's report of `reported` means for an assignment in `current`.
pub fn report_effect(current: AssignmentPhase, reported: crds::agent::WorkerState) -> ReportEffect {
    use AssignmentPhase as A;
    use crds::agent::WorkerState as W;
    let target = match reported {
        W::Starting => A::Starting,
        W::Running => A::Running,
        W::Succeeded => A::Succeeded,
        W::Failed => A::Failed,
        W::Stopped => A::Stopped,
    };
    if current == target {
        return ReportEffect::Ignore;
    }
    if current.is_final() {
        return ReportEffect::Conflict;
    }
    match (current, target) {
        // Progress never goes backwards, and a worker being stopped only reports its end.
        (A::Running, A::Starting) => ReportEffect::Ignore,
        (A::Stopping, A::Starting | A::Running) => ReportEffect::Ignore,
        (_, target) => ReportEffect::Apply(target),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crds::agent::WorkerState;

    use std::collections::{BTreeMap, BTreeSet};

    #[test]
    fn every_transition_from_every_phase_yields_its_documented_target_or_is_refused() {
        let documented = documented_transitions();
        for step in JobTransition::ALL {
            let (sources, target, _) = &documented[&name(step)];
            for from in JobPhase::ALL {
                let expected = sources.contains(from.as_str()).then_some(target.as_str());
                assert_eq!(
                    step.apply(from).map(JobPhase::as_str),
                    expected,
                    "{step:?} from {from}"
                );
                assert_ne!(step.apply(from), Some(from), "{step:?} moves the job");
            }
        }
    }

    #[test]
    fn final_job_phases_never_change() {
        for from in JobPhase::ALL.into_iter().filter(|p| p.is_final()) {
            for step in JobTransition::ALL {
                assert_eq!(step.apply(from), None, "{step:?} must not leave {from}");
            }
        }
        for step in JobTransition::ALL {
            assert!(step.from_phases().iter().all(|p| !p.is_final()), "{step:?}");
        }
    }

    #[test]
    fn a_job_only_starts_running_after_it_was_scheduled() {
        let into_running: Vec<JobPhase> = JobTransition::ALL
            .into_iter()
            .filter(|t| t.to() == JobPhase::Running)
            .flat_map(|t| t.from_phases().iter().copied())
            .collect();
        assert_eq!(into_running, [JobPhase::Scheduled]);
    }

    #[test]
    fn only_placement_leaves_pending_for_work_and_it_leaves_nothing_else() {
        // A placement's compare-and-set matches on the transition alone, so its event's `from`
        // is the one phase it may leave.
        assert_eq!(JobTransition::Place.from_phases(), [JobPhase::Pending]);
        let from_pending: BTreeSet<&str> = JobTransition::ALL
            .into_iter()
            .filter(|t| t.apply(JobPhase::Pending).is_some())
            .map(|t| t.to().as_str())
            .collect();
        assert_eq!(from_pending, BTreeSet::from(["Cancelled", "Scheduled"]));
    }

    #[test]
    fn only_a_deadline_is_not_retried() {
        for reason in FailureReason::ALL {
            assert_eq!(
                reason.retryable(),
                reason != FailureReason::DeadlineExceeded,
                "{reason:?}"
            );
            assert_eq!(JobTransition::Fail(reason).reason(), reason.as_str());
        }
    }

    /// One row of the transition table in docs/architecture.md: the phases it leaves, the one it
    /// enters, its event reasons.
    type DocRow = (BTreeSet<String>, String, BTreeSet<String>);

    /// The table of job transitions in docs/architecture.md, by transition name.
    fn documented_transitions() -> BTreeMap<String, DocRow> {
        let doc = include_str!("../../docs/architecture.md");
        let header = "| transition | from | to | event reason |";
        let table = doc
            .split_once(header)
            .expect("docs/architecture.md has the transition table")
            .1;
        let cells = |line: &str| -> Vec<String> {
            line.trim()
                .trim_matches('|')
                .split('|')
                .map(|cell| cell.trim().to_string())
                .collect()
        };
        let list = |cell: &str| -> BTreeSet<String> {
            cell.split(',')
                .map(|item| item.trim().trim_matches('`').to_string())
                .collect()
        };
        table
            .lines()
            .skip(2) // the header's rest and the separator row
            .take_while(|line| line.starts_with('|'))
            .map(|line| {
                let cells = cells(line);
                assert_eq!(cells.len(), 4, "{line}");
                (
                    cells[0].trim_matches('`').to_string(),
                    (list(&cells[1]), cells[2].clone(), list(&cells[3])),
                )
            })
            .collect()
    }

    /// A transition's name as the table spells it (`Fail`, whatever its reason).
    fn name(step: JobTransition) -> String {
        let debug = format!("{step:?}");
        debug.split('(').next().unwrap_or_default().to_string()
    }

    #[test]
    fn the_transitions_are_the_documented_ones() {
        let mut code: BTreeMap<String, DocRow> = BTreeMap::new();
        for step in JobTransition::ALL {
            let from = step
                .from_phases()
                .iter()
                .map(|p| p.as_str().to_string())
                .collect();
            let row = code
                .entry(name(step))
                .or_insert_with(|| (from, step.to().as_str().to_string(), BTreeSet::new()));
            row.2.insert(step.reason().to_string());
        }
        assert_eq!(code, documented_transitions());

        // The same as (from, to) pairs: what the lifecycle diagram allows, no more, no less.
        let pairs: BTreeSet<(&str, &str)> = JobTransition::ALL
            .into_iter()
            .flat_map(|t| {
                t.from_phases()
                    .iter()
                    .map(move |f| (f.as_str(), t.to().as_str()))
            })
            .collect();
        let expected = BTreeSet::from([
            ("Pending", "Scheduled"),
            ("Pending", "Cancelled"),
            ("Scheduled", "Running"),
            ("Scheduled", "Verifying"),
            ("Scheduled", "Succeeded"),
            ("Scheduled", "Failed"),
            ("Scheduled", "Pending"),
            ("Scheduled", "Cancelled"),
            ("Running", "Verifying"),
            ("Running", "Succeeded"),
            ("Running", "Failed"),
            ("Running", "Pending"),
            ("Running", "Cancelled"),
            ("Verifying", "Succeeded"),
            ("Verifying", "Pending"),
            ("Verifying", "Failed"),
            ("Verifying", "Cancelled"),
        ]);
        assert_eq!(pairs, expected);
    }

    #[test]
    fn reports_after_the_end_conflict_unless_repeated() {
        assert_eq!(
            report_effect(AssignmentPhase::Succeeded, WorkerState::Succeeded),
            ReportEffect::Ignore
        );
        assert_eq!(
            report_effect(AssignmentPhase::Succeeded, WorkerState::Failed),
            ReportEffect::Conflict
        );
        assert_eq!(
            report_effect(AssignmentPhase::Stopped, WorkerState::Running),
            ReportEffect::Conflict
        );
    }

    #[test]
    fn a_stopping_worker_may_still_finish() {
        assert_eq!(
            report_effect(AssignmentPhase::Stopping, WorkerState::Running),
            ReportEffect::Ignore
        );
        assert_eq!(
            report_effect(AssignmentPhase::Stopping, WorkerState::Succeeded),
            ReportEffect::Apply(AssignmentPhase::Succeeded)
        );
        assert_eq!(
            report_effect(AssignmentPhase::Stopping, WorkerState::Stopped),
            ReportEffect::Apply(AssignmentPhase::Stopped)
        );
    }

    #[test]
    fn a_lost_worker_takes_no_report() {
        for reported in [
            WorkerState::Starting,
            WorkerState::Running,
            WorkerState::Succeeded,
            WorkerState::Failed,
            WorkerState::Stopped,
        ] {
            assert_eq!(
                report_effect(AssignmentPhase::Lost, reported),
                ReportEffect::Conflict,
                "{reported:?}"
            );
        }
        assert!(AssignmentPhase::Lost.is_final() && !AssignmentPhase::Lost.is_active());
        assert_eq!("Lost".parse(), Ok(AssignmentPhase::Lost));
    }

    #[test]
    fn a_failed_attempt_may_send_its_job_back_to_pending() {
        // A failed verification fails its attempt too, so Verifying may go back to Pending.
        for from in [JobPhase::Scheduled, JobPhase::Running, JobPhase::Verifying] {
            assert_eq!(JobTransition::Retry.apply(from), Some(JobPhase::Pending));
        }
        assert_eq!(JobTransition::Retry.apply(JobPhase::Pending), None);
        assert!(JobTransition::Retry.stops_workers());
    }

    #[test]
    fn progress_is_monotonic() {
        assert_eq!(
            report_effect(AssignmentPhase::Running, WorkerState::Starting),
            ReportEffect::Ignore
        );
        assert_eq!(
            report_effect(AssignmentPhase::Assigned, WorkerState::Running),
            ReportEffect::Apply(AssignmentPhase::Running)
        );
    }
}
