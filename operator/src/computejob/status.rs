//! The pure steps of the ComputeJob controller: what to do next with an object, the status that
//! mirrors the hub's job, and the Kubernetes Event each lifecycle event becomes.

use crds::{
    rest::{Job, JobEvent},
    v1alpha1::{ComputeJobSpec, ComputeJobStatus, JobPhase},
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::runtime::events::{Event, EventType};

use crate::hub::HubError;

/// The condition set when the spec changed after submission: jobs are immutable.
pub const SPEC_CHANGED: &str = "SpecChanged";
/// The condition the hub's acceptance (or refusal) is shown on.
pub const ACCEPTED: &str = "Accepted";
/// The reason of `Accepted=False` when the hub refused the spec.
pub const REJECTED: &str = "Rejected";
/// The reason of `Accepted=False` when the object is not a ComputeJob this operator can read.
pub const INVALID_OBJECT: &str = "InvalidObject";

/// The longest Event reason the API server takes.
const MAX_REASON: usize = 128;
/// The longest Event note the API server takes, in bytes.
const MAX_NOTE: usize = 1024;

/// What the controller does next with a ComputeJob, from what it knows without asking the hub.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Put the finalizer on before anything is submitted, so a delete always reaches the hub.
    AddFinalizer,
    /// Hand the job to the hub (idempotent by the object's UID).
    Submit,
    /// Mirror the hub's job into the status.
    Follow(String),
    /// The object is being deleted and its job may run: cancel it, and keep the finalizer until
    /// the job ended and its final usage is in the status.
    Cancel(String),
    /// The object is being deleted and no job id was recorded, though a submission may have
    /// reached the hub before a crash: look the job up by UID and cancel it if found.
    CancelUnrecorded,
    /// Nothing of the job can run any more: let the object go.
    Release,
}

/// The next step for an object that is `deleting` or not, carries the operator's finalizer or
/// not, and was submitted as `job_id` or not.
pub fn plan(deleting: bool, has_finalizer: bool, job_id: Option<&str>) -> Step {
    match (deleting, has_finalizer, job_id) {
        // Deleted before the finalizer went on: nothing was submitted.
        (true, false, _) => Step::Release,
        (true, true, Some(id)) => Step::Cancel(id.to_string()),
        (true, true, None) => Step::CancelUnrecorded,
        (false, false, _) => Step::AddFinalizer,
        (false, true, None) => Step::Submit,
        (false, true, Some(id)) => Step::Follow(id.to_string()),
    }
}

/// The status that mirrors `job` for an object at `generation`; `submitted` is the spec the hub
/// runs (the job's), compared with the object's `spec` to tell a change after submission;
/// `current` is the status the object has, whose conditions keep their transition times.
pub fn mirrored(
    current: &ComputeJobStatus,
    job: &Job,
    spec: &ComputeJobSpec,
    generation: Option<i64>,
    cursor: Option<String>,
    now: &Time,
) -> ComputeJobStatus {
    let mut status = job.status.clone();
    status.job_id = Some(job.id.clone());
    status.observed_generation = generation;
    status.event_cursor = cursor;
    let mut conditions = Vec::new();
    for condition in &status.conditions {
        set_condition(&mut conditions, &current.conditions, condition.clone());
    }
    if *spec != job.spec {
        set_condition(
            &mut conditions,
            &current.conditions,
            condition(
                SPEC_CHANGED,
                true,
                "Immutable",
                format!(
                    "the spec changed after the job was submitted; jobs are immutable, so the \
                     hub keeps running the spec it accepted (job {}). Delete the ComputeJob and \
                     create it again to run the new spec",
                    job.id
                ),
                generation,
                now,
            ),
        );
    }
    for condition in &mut conditions {
        condition.observed_generation = generation;
    }
    status.conditions = conditions;
    status
}

/// The status of an object the hub refused (`error`): `Accepted=False` with the hub's reason, at
/// `generation` (a new generation is submitted again).
pub fn rejected(
    current: &ComputeJobStatus,
    error: &HubError,
    generation: Option<i64>,
    now: &Time,
) -> ComputeJobStatus {
    not_accepted(
        current,
        REJECTED,
        format!("the hub refused the job: {error}"),
        generation,
        now,
    )
}

/// The status of an object that is not a ComputeJob this operator can read (`problem` says why).
pub fn unreadable(
    current: &ComputeJobStatus,
    problem: &str,
    generation: Option<i64>,
    now: &Time,
) -> ComputeJobStatus {
    not_accepted(
        current,
        INVALID_OBJECT,
        format!("the object is not a valid ComputeJob: {problem}"),
        generation,
        now,
    )
}

fn not_accepted(
    current: &ComputeJobStatus,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: &Time,
) -> ComputeJobStatus {
    let mut conditions = Vec::new();
    set_condition(
        &mut conditions,
        &current.conditions,
        condition(ACCEPTED, false, reason, message.clone(), generation, now),
    );
    ComputeJobStatus {
        phase: JobPhase::Pending,
        reason: Some(reason.to_string()),
        message: Some(message),
        conditions,
        observed_generation: generation,
        ..ComputeJobStatus::default()
    }
}

/// Whether the object was refused at `generation` already: refused objects are submitted again
/// only once their spec (generation) changes.
pub fn refused_at(current: &ComputeJobStatus, generation: Option<i64>) -> bool {
    current.job_id.is_none()
        && current.observed_generation == generation
        && current
            .conditions
            .iter()
            .any(|c| c.type_ == ACCEPTED && c.status == "False")
}

fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    Condition {
        type_: type_.to_string(),
        status: if status { "True" } else { "False" }.to_string(),
        reason: reason.to_string(),
        message,
        last_transition_time: now.clone(),
        observed_generation: generation,
    }
}

/// Adds `new` to `conditions`, keeping the transition time of the same condition in `previous`
/// when its status did not change (as Kubernetes' own controllers do), so that mirroring an
/// unchanged job changes nothing.
fn set_condition(conditions: &mut Vec<Condition>, previous: &[Condition], mut new: Condition) {
    if let Some(old) = previous.iter().find(|c| c.type_ == new.type_)
        && old.status == new.status
    {
        new.last_transition_time = old.last_transition_time.clone();
    }
    conditions.push(new);
}

/// The Kubernetes Event a lifecycle event of the hub becomes: a `Warning` for what a user must
/// look at (a failure, a lost node, a retry), `Normal` otherwise; the action is the phase entered.
pub fn kube_event(event: &JobEvent) -> Event {
    let warning = event.to == JobPhase::Failed
        || matches!(
            event.reason.as_str(),
            "WorkerFailed" | "NodeLost" | "DeadlineExceeded" | "VerificationFailed" | "Retrying"
        );
    let mut note = event.message.clone().unwrap_or_default();
    let mut context = vec![format!("attempt {}", event.attempt)];
    if let Some(node) = &event.node {
        context.push(format!("node {node}"));
    }
    let from = event
        .from
        .map_or("submitted".to_string(), |p| p.to_string());
    let context = format!("{from} → {} ({})", event.to, context.join(", "));
    note = if note.is_empty() {
        context
    } else {
        format!("{note}; {context}")
    };
    Event {
        type_: if warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: truncate(&event.reason, MAX_REASON),
        note: Some(truncate(&note, MAX_NOTE)),
        action: event.to.to_string(),
        secondary: None,
    }
}

/// `text` cut to at most `max` bytes on a character boundary.
fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

#[cfg(test)]
mod tests {
    use crds::v1alpha1::JobPhase;

    use super::*;
    use crate::fixtures;

    fn at(seconds: i64) -> Time {
        Time(jiff::Timestamp::from_second(seconds).unwrap())
    }

    #[test]
    fn every_combination_has_one_step() {
        for deleting in [false, true] {
            for finalizer in [false, true] {
                for id in [None, Some("job-1")] {
                    let step = plan(deleting, finalizer, id);
                    let expected = match (deleting, finalizer, id) {
                        (true, false, _) => Step::Release,
                        (true, true, Some(_)) => Step::Cancel("job-1".into()),
                        (true, true, None) => Step::CancelUnrecorded,
                        (false, false, _) => Step::AddFinalizer,
                        (false, true, None) => Step::Submit,
                        (false, true, Some(_)) => Step::Follow("job-1".into()),
                    };
                    assert_eq!(
                        step, expected,
                        "deleting={deleting} finalizer={finalizer} id={id:?}"
                    );
                }
            }
        }
    }

    fn job(phase: JobPhase) -> Job {
        Job {
            id: "job-1".into(),
            name: Some("train".into()),
            spec: fixtures::spec(),
            status: ComputeJobStatus {
                phase,
                conditions: vec![Condition {
                    type_: "Accepted".into(),
                    status: "True".into(),
                    reason: "Submitted".into(),
                    message: "the hub accepted the job".into(),
                    last_transition_time: at(100),
                    observed_generation: None,
                }],
                ..ComputeJobStatus::default()
            },
            results: Vec::new(),
            receipts: Vec::new(),
        }
    }

    #[test]
    fn the_mirror_carries_the_hubs_status_for_every_phase() {
        for phase in JobPhase::ALL {
            let status = mirrored(
                &ComputeJobStatus::default(),
                &job(phase),
                &fixtures::spec(),
                Some(3),
                Some("9".into()),
                &at(500),
            );
            assert_eq!(status.phase, phase);
            assert_eq!(status.job_id.as_deref(), Some("job-1"));
            assert_eq!(status.observed_generation, Some(3));
            assert_eq!(status.event_cursor.as_deref(), Some("9"));
            assert!(
                status
                    .conditions
                    .iter()
                    .all(|c| c.observed_generation == Some(3))
            );
            assert!(!status.conditions.iter().any(|c| c.type_ == SPEC_CHANGED));
        }
    }

    #[test]
    fn a_changed_spec_gets_a_condition_whose_time_holds_while_it_lasts() {
        let mut spec = fixtures::spec();
        spec.resources.gpus_per_worker = 8;
        let first = mirrored(
            &ComputeJobStatus::default(),
            &job(JobPhase::Running),
            &spec,
            Some(2),
            None,
            &at(500),
        );
        let changed = first
            .conditions
            .iter()
            .find(|c| c.type_ == SPEC_CHANGED)
            .unwrap();
        assert_eq!(
            (
                changed.status.as_str(),
                changed.last_transition_time.clone()
            ),
            ("True", at(500))
        );
        let again = mirrored(
            &first,
            &job(JobPhase::Running),
            &spec,
            Some(2),
            None,
            &at(900),
        );
        assert_eq!(again, first, "mirroring the same job again changes nothing");
    }

    #[test]
    fn a_refused_object_is_submitted_again_only_at_a_new_generation() {
        let error = HubError::Invalid {
            field: Some("spec.resources.workers".into()),
            message: "must be at least 1".into(),
        };
        let status = rejected(&ComputeJobStatus::default(), &error, Some(4), &at(10));
        assert_eq!(status.conditions[0].type_, ACCEPTED);
        assert_eq!(status.conditions[0].status, "False");
        assert!(
            status.conditions[0]
                .message
                .contains("spec.resources.workers: must be at least 1")
        );
        assert!(refused_at(&status, Some(4)));
        assert!(!refused_at(&status, Some(5)));
        assert!(!refused_at(&ComputeJobStatus::default(), Some(4)));
        assert_eq!(rejected(&status, &error, Some(4), &at(99)), status);
        let unread = unreadable(&status, "spec.kind: unknown variant", Some(4), &at(99));
        assert_eq!(unread.conditions[0].reason, INVALID_OBJECT);
        assert_eq!(
            unread.conditions[0].last_transition_time,
            at(10),
            "still Accepted=False: the transition time holds"
        );
    }

    #[test]
    fn every_lifecycle_event_becomes_a_kubernetes_event_of_the_right_type() {
        let reasons = [
            "Submitted",
            "Placed",
            "Started",
            "Completed",
            "Verified",
            "Cancelled",
            "WorkerFailed",
            "NodeLost",
            "DeadlineExceeded",
            "VerificationFailed",
            "Retrying",
        ];
        for to in JobPhase::ALL {
            for reason in reasons {
                let event = JobEvent {
                    cursor: "1".into(),
                    time: at(1),
                    from: Some(JobPhase::Running),
                    to,
                    reason: reason.into(),
                    message: Some("worker 0 exited with code 1".into()),
                    attempt: 2,
                    node: Some("gn-a".into()),
                };
                let kube = kube_event(&event);
                let warning = to == JobPhase::Failed
                    || [
                        "WorkerFailed",
                        "NodeLost",
                        "DeadlineExceeded",
                        "VerificationFailed",
                        "Retrying",
                    ]
                    .contains(&reason);
                assert_eq!(
                    kube.type_,
                    if warning {
                        EventType::Warning
                    } else {
                        EventType::Normal
                    },
                    "{reason} → {to}"
                );
                assert_eq!(kube.reason, reason);
                assert_eq!(kube.action, to.as_str());
                let note = kube.note.unwrap();
                assert!(
                    note.starts_with("worker 0 exited with code 1; Running → "),
                    "{note}"
                );
                assert!(note.ends_with("(attempt 2, node gn-a)"), "{note}");
            }
        }
    }

    #[test]
    fn event_fields_stay_within_what_the_api_server_takes() {
        let event = JobEvent {
            cursor: "1".into(),
            time: at(1),
            from: None,
            to: JobPhase::Pending,
            reason: "R".repeat(300),
            message: Some("é".repeat(2000)),
            attempt: 0,
            node: None,
        };
        let kube = kube_event(&event);
        assert_eq!(kube.reason.len(), MAX_REASON);
        assert!(kube.note.unwrap().len() <= MAX_NOTE);
    }
}
