//! The hub's job and node operations, shared by the REST routes and by the in-process callers
//! (the Kubernetes operator), so that a ComputeJob applied with `kubectl` and a `POST /v1/jobs`
//! are validated, stored and shown exactly alike.

use std::collections::HashMap;

use crds::rest::{Job, JobEventList, Node, WorkerReceipt};

use crate::{
    error::{ApiError, ApiResult},
    ids,
    state::AppState,
    store::{CancelOutcome, JobRow, NewJob, SubmitOutcome, now_ms},
    submission::Submission,
    views,
};

/// Stores a validated submission for `tenant` (a tenant id); with an idempotency `key`, a repeat
/// of the same submission returns the job it created. True when the job is new.
pub async fn submit(
    state: &AppState,
    tenant: &str,
    key: Option<String>,
    parsed: Submission,
) -> ApiResult<(bool, Job)> {
    let id = ids::job_id();
    // Until the job is committed, the scheduling loop must not page past its id.
    let _writing = state.arrivals.writing(&id);
    let outcome = state
        .store
        .submit_job(NewJob {
            id,
            tenant_id: tenant.to_string(),
            name: parsed.name,
            spec: parsed.spec,
            idempotency_key: key,
            request_hash: parsed.digest,
        })
        .await?;
    let (created, row) = match outcome {
        SubmitOutcome::Created(row) => {
            state.metrics.jobs_submitted.inc();
            state.wake_scheduler.notify_one();
            (true, row)
        }
        SubmitOutcome::Existing(row) => (false, row),
        SubmitOutcome::KeyReused { existing_id } => {
            return Err(ApiError::conflict(
                "idempotency_key_reused",
                format!(
                    "this Idempotency-Key was used for job {existing_id} with a different body"
                ),
            ));
        }
    };
    Ok((created, job_view(state, &row).await?))
}

/// The job `id` of `tenant`.
pub async fn job(state: &AppState, tenant: &str, id: &str) -> ApiResult<Job> {
    let row = state
        .store
        .get_job(Some(tenant), id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("job {id}")))?;
    job_view(state, &row).await
}

/// The job `tenant` submitted under the idempotency `key`, if any.
pub async fn job_for_key(state: &AppState, tenant: &str, key: &str) -> ApiResult<Option<Job>> {
    match state.store.job_for_key(tenant, key).await? {
        Some(row) => Ok(Some(job_view(state, &row).await?)),
        None => Ok(None),
    }
}

/// Cancels the job `id` of `tenant`: a cancelled job is returned as it is, one that ended
/// otherwise is a conflict. Its workers learn to stop from their agents' next heartbeats.
pub async fn cancel(state: &AppState, tenant: &str, id: &str) -> ApiResult<Job> {
    let row = match state.store.cancel_job(tenant, id).await? {
        CancelOutcome::NotFound => return Err(ApiError::NotFound(format!("job {id}"))),
        CancelOutcome::Cancelled(row) => row,
        CancelOutcome::AlreadyFinal(row) if row.phase == crds::v1alpha1::JobPhase::Cancelled => row,
        CancelOutcome::AlreadyFinal(row) => {
            return Err(ApiError::conflict(
                "job_finished",
                format!("job {id} already ended ({})", row.phase),
            ));
        }
    };
    job_view(state, &row).await
}

/// A page of at most `limit` of the job's events after position `after`, oldest first.
pub async fn events(
    state: &AppState,
    tenant: &str,
    id: &str,
    after: Option<i64>,
    limit: u32,
) -> ApiResult<JobEventList> {
    state
        .store
        .get_job(Some(tenant), id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("job {id}")))?;
    let (rows, next) = state.store.job_events_page(id, after, limit).await?;
    Ok(JobEventList {
        items: rows
            .iter()
            .map(|(id, row)| views::event(*id, row))
            .collect(),
        next,
    })
}

/// A page of at most `limit` nodes after the node named `after`, with their network
/// measurements, and the next page's cursor.
pub async fn nodes(
    state: &AppState,
    after: Option<&str>,
    limit: u32,
) -> ApiResult<(Vec<Node>, Option<String>)> {
    let (rows, next) = state.store.list_nodes(after, limit).await?;
    let (now, timeout) = (now_ms(), state.settings.node_timeout.as_millis() as i64);
    let mut items: Vec<Node> = rows.iter().map(|n| views::node(n, now, timeout)).collect();
    state
        .sessions
        .network
        .annotate(&state.store, &mut items)
        .await?;
    Ok((items, next))
}

/// A job with its current placement and receipts.
pub async fn job_view(state: &AppState, row: &JobRow) -> ApiResult<Job> {
    let assignments = if row.attempt > 0 {
        state.store.job_assignments(&row.id, row.attempt).await?
    } else {
        Vec::new()
    };
    let mut regions = HashMap::new();
    for a in &assignments {
        if !regions.contains_key(&a.node_name)
            && let Some(node) = state.store.get_node(&a.node_name).await?
        {
            regions.insert(a.node_name.clone(), node.region);
        }
    }
    let mut job = views::job(row, &assignments, &regions);
    // How the latest attempt was checked, for jobs that ask (docs/verification.md).
    if row
        .spec
        .verification
        .as_ref()
        .is_some_and(|v| v.mode != crds::v1alpha1::VerificationMode::None)
        && let Some(latest) = state.store.job_verifications(&row.id).await?.pop()
    {
        job.status.conditions.push(views::verified(&latest));
    }
    job.receipts = state
        .store
        .job_receipts(&row.id)
        .await?
        .into_iter()
        .map(|r| WorkerReceipt {
            assignment: r.assignment_id,
            sequence: r.sequence,
            gpu_millis: r.gpu_millis,
            amount_micros: r.amount_micros,
            until_ms: r.until_ms,
        })
        .collect();
    // The latest batch that settles part of the job, and the transaction that posted it.
    if let Some(leaf) = state
        .store
        .job_leaves(&row.id)
        .await?
        .into_iter()
        .max_by(|a, b| a.batch_id.cmp(&b.batch_id))
    {
        let tx = state.store.batch(&leaf.batch_id).await?.and_then(|b| b.tx);
        job.status.settlement = Some(crds::v1alpha1::SettlementStatus {
            batch: Some(leaf.batch_id),
            tx,
        });
    }
    Ok(job)
}
