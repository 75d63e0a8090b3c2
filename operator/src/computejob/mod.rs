//! The ComputeJob controller: each ComputeJob in the cluster becomes a job on the hub, and the
//! hub's job is mirrored back into the object.
//!
//! A reconcile is a pipeline: read the object → validate it (it must deserialize as a
//! ComputeJob) → decide ([`status::plan`], pure) → apply (the hub call) → write the status with
//! server-side apply under [`crate::FIELD_MANAGER`], and turn the hub's new lifecycle events into
//! Kubernetes Events on the object.
//!
//! - The job is submitted under the object's UID as idempotency key, so a reconcile repeated after
//!   a crash finds the job it created instead of submitting another.
//! - A finalizer goes on before the job is submitted. Deleting the object cancels the job, and
//!   the finalizer stays until the job ended and its final usage is in the status, so a
//!   `kubectl delete` never leaves work running or unaccounted.
//! - Jobs are immutable: a spec changed after submission gets a `SpecChanged` condition and a
//!   Warning Event, and the job keeps running the spec the hub accepted.
//! - The controller watches ComputeJobs as untyped objects and deserializes each itself, so an
//!   object that is not a valid ComputeJob is reported (a Warning Event and `Accepted=False`)
//!   instead of breaking the watch for every other object.
//! - An error requeues the object with its own exponential backoff ([`error_policy`]).

pub mod status;
#[cfg(test)]
mod tests;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use crds::{
    rest::Job,
    v1alpha1::{ComputeJob, ComputeJobSpec, ComputeJobStatus},
};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{ApiResource, DynamicObject, Patch, PatchParams},
    runtime::{
        Controller, WatchStreamExt,
        controller::Action,
        events::{Event, EventType, Recorder, Reporter},
        reflector::{self, store::Writer},
        watcher,
    },
};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use self::status::Step;
use crate::{
    Error, FIELD_MANAGER, Result,
    hub::{Hub, HubError, Submission, tenant_of},
    metrics::{COMPUTEJOB, Metrics},
};

/// The finalizer that keeps a deleted ComputeJob until its job ended on the hub.
pub const FINALIZER: &str = "agora.dev/cancel-job";

/// The most pages of hub events turned into Kubernetes Events in one reconcile; the rest come in
/// the next.
const MAX_EVENT_PAGES: usize = 10;

/// The longest backoff after repeated errors on one object.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// What every reconcile shares.
pub struct Context<H> {
    client: Client,
    hub: Arc<H>,
    recorder: Recorder,
    metrics: Metrics,
    /// How often a job still running is read from the hub again.
    poll: Duration,
    /// Consecutive failures per object, for its backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl<H: Hub> Context<H> {
    /// A context whose Events name `instance` (the replica) as their reporting instance; jobs
    /// still running are re-read from the hub every `poll`.
    pub fn new(
        client: Client,
        hub: Arc<H>,
        metrics: Metrics,
        instance: String,
        poll: Duration,
    ) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.to_string(),
            instance: Some(instance),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            hub,
            metrics,
            poll,
            failures: Mutex::default(),
        }
    }

    fn api(&self, namespace: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), namespace, &resource())
    }
}

/// ComputeJob as an untyped resource.
pub fn resource() -> ApiResource {
    ApiResource::erase::<ComputeJob>(&())
}

/// How long in-flight reconciles get to finish once the controller is told to stop.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Runs the controller until `stop` fires; in-flight reconciles get [`SHUTDOWN_GRACE`] to finish
/// (a reconcile cut short is repeated by the next leader: every step is idempotent).
pub async fn run<H: Hub>(ctx: Arc<Context<H>>, stop: CancellationToken) {
    let resource = resource();
    let api = Api::<DynamicObject>::all_with(ctx.client.clone(), &resource);
    let writer = Writer::new(resource.clone());
    let reader = writer.as_reader();
    let metrics = ctx.metrics.clone();
    let trigger = reflector::reflector(
        writer,
        watcher::watcher(api, watcher::Config::default()).default_backoff(),
    )
    .applied_objects()
    .inspect_ok(move |object| metrics.queued(COMPUTEJOB, key(object)));
    info!("ComputeJob controller started");
    let controller = Controller::for_stream_with(trigger, reader, resource)
        .graceful_shutdown_on(stop.clone().cancelled_owned())
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => debug!(object = %object, "reconciled"),
                // Reconcile errors are logged by `error_policy`.
                Err(kube::runtime::controller::Error::ReconcilerFailed(..)) => {}
                Err(e) => warn!(error = %e, "ComputeJob controller"),
            }
        });
    let grace = async {
        stop.cancelled().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        () = controller => {}
        () = grace => debug!("ComputeJob controller stopped after its shutdown grace"),
    }
    info!("ComputeJob controller stopped");
}

/// `namespace/name` of an object, as logs and the queue know it.
fn key(object: &DynamicObject) -> String {
    format!(
        "{}/{}",
        object.namespace().unwrap_or_default(),
        object.name_any()
    )
}

/// One reconcile of `object`, measured, with its failures counted for the backoff.
pub async fn reconcile<H: Hub>(object: Arc<DynamicObject>, ctx: Arc<Context<H>>) -> Result<Action> {
    let key = key(&object);
    ctx.metrics.started(COMPUTEJOB, &key);
    let started = Instant::now();
    let span = info_span!("computejob", object = %key);
    let result = reconcile_object(&object, &ctx).instrument(span).await;
    ctx.metrics.reconciled(
        COMPUTEJOB,
        started.elapsed(),
        result.as_ref().err().map(Error::metric_label),
    );
    if result.is_ok() {
        ctx.failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&key);
    }
    result
}

/// Requeues a failed object after its own exponential backoff: 1 s, doubling per consecutive
/// failure, at most [`MAX_BACKOFF`].
pub fn error_policy<H: Hub>(
    object: Arc<DynamicObject>,
    error: &Error,
    ctx: Arc<Context<H>>,
) -> Action {
    let key = key(&object);
    let failures = {
        let mut failures = ctx.failures.lock().unwrap_or_else(PoisonError::into_inner);
        let count = failures.entry(key.clone()).or_insert(0);
        *count = count.saturating_add(1);
        *count
    };
    let delay = backoff(failures);
    warn!(object = %key, error = %error, failures, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// The delay after `failures` consecutive failures.
pub fn backoff(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    Duration::from_secs(1u64 << exponent).min(MAX_BACKOFF)
}

/// What the controller reads of an object.
struct Read {
    name: String,
    namespace: String,
    uid: String,
    generation: Option<i64>,
    resource_version: Option<String>,
    deleting: bool,
    finalizers: Vec<String>,
    /// The status as the object has it (an unreadable one counts as none).
    status: ComputeJobStatus,
    /// The spec, or why it is not a valid ComputeJob spec (the path of the bad field first).
    spec: std::result::Result<ComputeJobSpec, String>,
}

impl Read {
    fn of(object: &DynamicObject) -> Option<Self> {
        let meta = object.meta();
        let spec = match object.data.get("spec") {
            None => Err("spec: is required".to_string()),
            Some(spec) => serde_path_to_error::deserialize::<_, ComputeJobSpec>(spec)
                .map_err(|e| format!("spec.{}: {}", e.path(), e.inner())),
        };
        let status = object
            .data
            .get("status")
            .and_then(|s| serde_json::from_value(s.clone()).ok())
            .unwrap_or_default();
        Some(Self {
            name: meta.name.clone()?,
            namespace: meta.namespace.clone()?,
            uid: meta.uid.clone()?,
            generation: meta.generation,
            resource_version: meta.resource_version.clone(),
            deleting: meta.deletion_timestamp.is_some(),
            finalizers: meta.finalizers.clone().unwrap_or_default(),
            status,
            spec,
        })
    }

    fn tenant(&self) -> String {
        tenant_of(&self.namespace)
    }
}

async fn reconcile_object<H: Hub>(object: &DynamicObject, ctx: &Context<H>) -> Result<Action> {
    let Some(read) = Read::of(object) else {
        warn!("an object without name, namespace or uid; ignored");
        return Ok(Action::await_change());
    };
    let api = ctx.api(&read.namespace);
    let reference = object.object_ref(&resource());
    let has_finalizer = read.finalizers.iter().any(|f| f == FINALIZER);
    match status::plan(read.deleting, has_finalizer, read.status.job_id.as_deref()) {
        Step::AddFinalizer => {
            set_finalizer(&api, &read, true).await?;
            Ok(Action::await_change())
        }
        Step::Release => {
            if has_finalizer {
                set_finalizer(&api, &read, false).await?;
            }
            Ok(Action::await_change())
        }
        Step::Submit => submit(ctx, &api, &reference, &read).await,
        Step::Follow(id) => {
            let job = ctx.hub.job(&read.tenant(), &id).await?;
            mirror(ctx, &api, &reference, &read, &job).await?;
            Ok(follow_up(ctx, &job))
        }
        Step::Cancel(id) => {
            let job = ctx.hub.job(&read.tenant(), &id).await;
            end(ctx, &api, &reference, &read, job.map(Some)).await
        }
        Step::CancelUnrecorded => {
            let job = ctx.hub.find(&read.tenant(), &read.uid).await;
            end(ctx, &api, &reference, &read, job).await
        }
    }
}

/// Hands a new object's job to the hub, or says why it cannot be.
async fn submit<H: Hub>(
    ctx: &Context<H>,
    api: &Api<DynamicObject>,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
    read: &Read,
) -> Result<Action> {
    let now = now();
    let spec = match &read.spec {
        Ok(spec) => spec.clone(),
        Err(problem) => {
            let status = status::unreadable(&read.status, problem, read.generation, &now);
            if status != read.status {
                warn!(%problem, "not a valid ComputeJob");
                publish(
                    ctx,
                    reference,
                    warning(status::INVALID_OBJECT, "Validate", &status),
                )
                .await?;
                patch_status(api, &read.name, &status).await?;
            }
            return Ok(Action::await_change());
        }
    };
    if status::refused_at(&read.status, read.generation) {
        return Ok(Action::await_change());
    }
    let submission = Submission {
        tenant: read.tenant(),
        key: read.uid.clone(),
        name: read.name.clone(),
        spec,
    };
    match ctx.hub.submit(submission).await {
        Ok(job) => {
            info!(job = %job.id, "submitted to the hub");
            mirror(ctx, api, reference, read, &job).await?;
            Ok(follow_up(ctx, &job))
        }
        Err(error @ (HubError::Invalid { .. } | HubError::Conflict { .. })) => {
            let status = status::rejected(&read.status, &error, read.generation, &now);
            warn!(%error, "the hub refused the job");
            publish(ctx, reference, warning(status::REJECTED, "Submit", &status)).await?;
            patch_status(api, &read.name, &status).await?;
            Ok(Action::await_change())
        }
        Err(error) => Err(error.into()),
    }
}

/// A deleted object: cancels its job (`job`, if the hub has one) and lets the object go once the
/// job ended, with its final status (usage) written.
async fn end<H: Hub>(
    ctx: &Context<H>,
    api: &Api<DynamicObject>,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
    read: &Read,
    job: std::result::Result<Option<Job>, HubError>,
) -> Result<Action> {
    let job = match job {
        Ok(Some(job)) => job,
        // The hub has no such job: nothing runs.
        Ok(None) | Err(HubError::NotFound(_)) => {
            set_finalizer(api, read, false).await?;
            return Ok(Action::await_change());
        }
        Err(e) => return Err(e.into()),
    };
    let job = if job.status.phase.is_final() {
        job
    } else {
        info!(job = %job.id, "the ComputeJob was deleted; cancelling its job");
        match ctx.hub.cancel(&read.tenant(), &job.id).await {
            Ok(job) => job,
            // It ended meanwhile.
            Err(HubError::Conflict { .. }) => ctx.hub.job(&read.tenant(), &job.id).await?,
            Err(e) => return Err(e.into()),
        }
    };
    mirror(ctx, api, reference, read, &job).await?;
    if job.status.phase.is_final() {
        set_finalizer(api, read, false).await?;
        Ok(Action::await_change())
    } else {
        // Cancelled: its workers stop at their agents' next heartbeats.
        Ok(Action::requeue(ctx.poll))
    }
}

/// Mirrors `job` into the object: new lifecycle events as Kubernetes Events, then the status.
async fn mirror<H: Hub>(
    ctx: &Context<H>,
    api: &Api<DynamicObject>,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
    read: &Read,
    job: &Job,
) -> Result<()> {
    let mut cursor = read.status.event_cursor.clone();
    for _ in 0..MAX_EVENT_PAGES {
        let page = ctx
            .hub
            .events(&read.tenant(), &job.id, cursor.as_deref())
            .await?;
        for event in &page.items {
            publish(ctx, reference, status::kube_event(event)).await?;
            cursor = Some(event.cursor.clone());
        }
        if page.next.is_none() {
            break;
        }
    }
    // The object's own spec when it can be read; otherwise the job's, which changed nothing.
    let spec = read.spec.as_ref().unwrap_or(&job.spec);
    let status = status::mirrored(&read.status, job, spec, read.generation, cursor, &now());
    let newly_changed =
        |s: &ComputeJobStatus| s.conditions.iter().any(|c| c.type_ == status::SPEC_CHANGED);
    if newly_changed(&status) && !newly_changed(&read.status) {
        warn!("the spec changed after submission; refused (jobs are immutable)");
        publish(
            ctx,
            reference,
            warning(status::SPEC_CHANGED, "Update", &status),
        )
        .await?;
    }
    if status != read.status {
        patch_status(api, &read.name, &status).await?;
    }
    Ok(())
}

/// When to look at a job again: running ones every poll; ended ones when the object changes.
fn follow_up<H>(ctx: &Context<H>, job: &Job) -> Action {
    if job.status.phase.is_final() {
        Action::await_change()
    } else {
        Action::requeue(ctx.poll)
    }
}

/// A Warning Event with `reason`, whose note is the condition of that reason in `status`.
fn warning(reason: &str, action: &str, status: &ComputeJobStatus) -> Event {
    let note = status
        .conditions
        .iter()
        .find(|c| c.reason == reason || c.type_ == reason)
        .map(|c| c.message.clone())
        .or_else(|| status.message.clone());
    Event {
        type_: EventType::Warning,
        reason: reason.to_string(),
        note,
        action: action.to_string(),
        secondary: None,
    }
}

async fn publish<H>(
    ctx: &Context<H>,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
    event: Event,
) -> Result<()> {
    ctx.recorder.publish(&event, reference).await?;
    Ok(())
}

/// Writes the status with server-side apply: the operator owns the whole status.
async fn patch_status(
    api: &Api<DynamicObject>,
    name: &str,
    status: &ComputeJobStatus,
) -> Result<()> {
    let resource = resource();
    let body = json!({
        "apiVersion": resource.api_version,
        "kind": resource.kind,
        "metadata": { "name": name },
        "status": serde_json::to_value(status)?,
    });
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(body),
    )
    .await?;
    Ok(())
}

/// Adds or removes the finalizer, on the version read (a conflict means the object changed and
/// is reconciled again).
async fn set_finalizer(api: &Api<DynamicObject>, read: &Read, present: bool) -> Result<()> {
    let mut finalizers: Vec<&str> = read
        .finalizers
        .iter()
        .map(String::as_str)
        .filter(|f| *f != FINALIZER)
        .collect();
    if present {
        finalizers.push(FINALIZER);
    }
    let mut metadata = json!({ "finalizers": finalizers });
    if let Some(version) = &read.resource_version {
        metadata["resourceVersion"] = Value::String(version.clone());
    }
    api.patch(
        &read.name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "metadata": metadata })),
    )
    .await?;
    if present {
        debug!("finalizer added");
    } else {
        info!("finalizer removed; the ComputeJob can go");
    }
    Ok(())
}

fn now() -> Time {
    Time(jiff::Timestamp::now())
}
