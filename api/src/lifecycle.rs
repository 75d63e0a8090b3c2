//! The legal state changes of jobs and assignments, in one place.
//!
//! The store applies every change as a compare-and-set on the current state, so two hub tasks (or
//! replicas) racing on one job cannot both win; this module says which changes may be tried.

use crds::v1alpha1::JobPhase;

/// Whether a job may move from `from` to `to`.
pub fn job_transition_allowed(from: JobPhase, to: JobPhase) -> bool {
    use JobPhase::*;
    matches!(
        (from, to),
        (Pending, Scheduled | Failed | Cancelled)
            | (
                Scheduled,
                Running | Succeeded | Failed | Cancelled | Pending
            )
            | (
                Running,
                Verifying | Succeeded | Failed | Cancelled | Pending
            )
            | (Verifying, Succeeded | Failed | Cancelled)
    )
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

    #[test]
    fn final_job_phases_never_change() {
        for from in JobPhase::ALL.into_iter().filter(|p| p.is_final()) {
            for to in JobPhase::ALL {
                assert!(
                    !job_transition_allowed(from, to),
                    "{from} -> {to} must be impossible"
                );
            }
        }
    }

    #[test]
    fn a_job_only_starts_running_after_it_was_scheduled() {
        assert!(!job_transition_allowed(
            JobPhase::Pending,
            JobPhase::Running
        ));
        assert!(job_transition_allowed(
            JobPhase::Scheduled,
            JobPhase::Running
        ));
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
        assert!(job_transition_allowed(JobPhase::Running, JobPhase::Pending));
        assert!(job_transition_allowed(
            JobPhase::Scheduled,
            JobPhase::Pending
        ));
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
