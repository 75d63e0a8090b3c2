//! The verification loop (docs/verification.md): on the leader, every open verification moves on.
//!
//! - **SpotCheck** (builtin `verifiableMatmul`): once the worker's chunk commitments are in, a seed
//!   is drawn from the OS's CSPRNG and stored, and the sample (`verification::sample`) derived from
//!   it: the worker could not know which chunks would be checked. A verifier job recomputes only
//!   those chunks (`verifiableMatmul.chunks`) on a node of another operator.
//! - **Redundant** (any workload that reports an output digest): the verifier job runs the whole
//!   workload again on another operator's node, and the digests are compared.
//!
//! Agreement passes the attempt (the job Succeeds). Disagreement is never acted on alone: a
//! tie-breaker job on a third operator's node recomputes the same thing, and whoever it agrees with
//! stands. A worker found wrong fails its attempt (`VerificationFailed`: retried on another node,
//! never on this one), loses reputation and, if it has an operator address, is slashed for
//! `cheating` with the evidence; a verifier found wrong loses reputation. Verifier and tie-breaker
//! jobs are ordinary jobs of the same tenant (`agora-verify-…`), so their cost is visible and paid
//! like any other work.

use std::collections::BTreeSet;

use crds::{
    agent::WorkloadResult,
    v1alpha1::{ComputeJobSpec, JobPhase, Retry},
};
use rand::RngCore;
use serde_json::{Value, json};

use crate::{
    leader::Leadership,
    state::AppState,
    store::{
        AssignmentRow, JobRow, NewJob, Store, StoreError, SubmitOutcome,
        openings::{NewOpening, OpeningRow, OpeningState},
        verification::{SampleCheck, VerificationRow, VerificationState, VerifierPlan},
    },
};

/// Names of verifier and tie-breaker jobs start with this.
pub const JOB_PREFIX: &str = "agora-verify-";

/// The sample rate when a SpotCheck gives none.
pub const DEFAULT_SAMPLE_RATE: f64 = 0.05;

/// Attempts a verifier job gets (on different nodes), so one bad verifier node does not leave a
/// job unverified.
const VERIFIER_ATTEMPTS: u32 = 3;

/// How often the loop looks at open verifications.
const TICK: std::time::Duration = std::time::Duration::from_secs(1);

/// Runs until shutdown, doing work only while this replica leads.
pub async fn run(state: AppState, leadership: Leadership) {
    let mut shutdown = state.shutdown.clone();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = shutdown.changed() => break,
        }
        if !leadership.is_leader() {
            continue;
        }
        if let Err(e) = verify_once(&state).await {
            tracing::warn!(error = %e, "a verification pass failed; retrying");
        }
    }
}

/// One pass over the open verifications; returns how many moved.
pub async fn verify_once(state: &AppState) -> Result<usize, StoreError> {
    let mut moved = 0;
    for row in state.store.open_verifications(100).await? {
        if row.state != VerificationState::Sampling && abandoned(state, &row).await? {
            moved += 1;
            continue;
        }
        let step = match row.state {
            VerificationState::Sampling => sample(state, &row).await?,
            VerificationState::Opening => opened(state, &row).await?,
            VerificationState::Recomputing => compare(state, &row).await?,
            VerificationState::TieBreaking => break_tie(state, &row).await?,
            _ => false,
        };
        moved += usize::from(step);
    }
    Ok(moved)
}

/// Closes a verification whose job was cancelled meanwhile, and cancels its verifier and
/// tie-breaker jobs: nobody needs their answer any more. True if it closed it.
async fn abandoned(state: &AppState, row: &VerificationRow) -> Result<bool, StoreError> {
    let Some(job) = state.store.get_job(None, &row.job_id).await? else {
        return Ok(false);
    };
    if job.phase != JobPhase::Cancelled {
        return Ok(false);
    }
    for helper in [&row.verifier_job, &row.tie_breaker_job]
        .into_iter()
        .flatten()
    {
        state.store.cancel_job(&job.tenant_id, helper).await?;
    }
    undecidable(
        state,
        row,
        row.state,
        "the job was cancelled while it was checked",
    )
    .await
}

/// What the checked attempt produced.
struct Attempt {
    job: JobRow,
    workers: Vec<AssignmentRow>,
}

async fn attempt(store: &Store, row: &VerificationRow) -> Result<Option<Attempt>, StoreError> {
    let Some(job) = store.get_job(None, &row.job_id).await? else {
        return Ok(None);
    };
    let workers = store.job_assignments(&row.job_id, row.attempt).await?;
    Ok(Some(Attempt { job, workers }))
}

/// The identity a node stands for when excluding operators: its operator address, or itself.
async fn operator_of(store: &Store, node: &str) -> Result<String, StoreError> {
    Ok(store
        .get_node(node)
        .await?
        .and_then(|n| n.operator_address)
        .unwrap_or_else(|| format!("node:{node}")))
}

/// Draws the sample, records it with the verifier job's id and exclusions, submits the verifier.
async fn sample(state: &AppState, row: &VerificationRow) -> Result<bool, StoreError> {
    let store = &state.store;
    let Some(attempt) = attempt(store, row).await? else {
        return Ok(false);
    };
    if attempt.job.phase != JobPhase::Verifying {
        // Cancelled meanwhile: nothing to decide for the job, but the row is closed.
        return undecidable(
            state,
            row,
            VerificationState::Sampling,
            "the job left Verifying before it was checked",
        )
        .await;
    }
    let (plan, chunks) = match row.verifier_job.clone() {
        // Recorded before a crash: submit the same verifier again (idempotent).
        Some(job_id) => (
            VerifierPlan {
                job_id,
                excluded_operators: Vec::new(),
            },
            row.chunks.clone(),
        ),
        None => {
            let (total, why_not) = checkable(&row.mode, &attempt);
            if let Some(reason) = why_not {
                return undecidable(state, row, VerificationState::Sampling, &reason).await;
            }
            let mut seed = [0u8; 32];
            rand::rng().fill_bytes(&mut seed);
            let chunks: Vec<u32> = if row.mode == "SpotCheck" {
                let rate = sample_rate(&attempt.job.spec);
                verification::sample::sample(&seed, total, rate)
                    .map_err(|e| StoreError::Corrupt(format!("sampling: {e}")))?
                    .into_iter()
                    .map(|c| c as u32)
                    .collect()
            } else {
                Vec::new()
            };
            let mut excluded = BTreeSet::new();
            for worker in &attempt.workers {
                excluded.insert(operator_of(store, &worker.node_name).await?);
            }
            let seed_hex = hex::encode(seed);
            let openings = openings(state, &attempt, &chunks);
            if !openings.is_empty() {
                // The workers open their own commitments; no second node unless they do not.
                let recorded = store
                    .record_sample(
                        &row.id,
                        &seed_hex,
                        &chunks,
                        SampleCheck::Openings(&openings),
                    )
                    .await?;
                if recorded {
                    tracing::info!(verification = %row.id, chunks = chunks.len(), of = total, "verification sample drawn; the workers are asked to open it");
                }
                return Ok(recorded);
            }
            let plan = VerifierPlan {
                job_id: crate::ids::job_id(),
                excluded_operators: excluded.into_iter().collect(),
            };
            if !store
                .record_sample(&row.id, &seed_hex, &chunks, SampleCheck::Verifier(&plan))
                .await?
            {
                return Ok(false);
            }
            tracing::info!(verification = %row.id, chunks = chunks.len(), of = total, verifier = %plan.job_id, "verification sample drawn");
            (plan, chunks)
        }
    };
    let spec = verifier_spec(&attempt.job.spec, &row.mode, &chunks);
    submit(
        store,
        &attempt.job,
        &plan.job_id,
        &format!("{}verifier", row.id),
        spec,
    )
    .await?;
    store
        .advance_verification(
            &row.id,
            VerificationState::Sampling,
            VerificationState::Recomputing,
        )
        .await
}

/// Whether the attempt can be checked in `mode`: the number of chunks (SpotCheck), or why not.
fn checkable(mode: &str, attempt: &Attempt) -> (usize, Option<String>) {
    if mode == "SpotCheck" {
        let Some(params) = attempt
            .job
            .spec
            .workload
            .builtin
            .as_ref()
            .and_then(|b| b.verifiable_matmul.as_ref())
        else {
            return (0, Some("SpotCheck checks builtin verifiableMatmul results; this workload has no chunk commitments to sample".into()));
        };
        let total = params.n.div_ceil(params.chunk_rows.max(1)) as usize;
        for worker in &attempt.workers {
            let count = worker
                .result
                .as_ref()
                .map_or(0, |r| r.chunk_commitments.len());
            if count != total {
                return (
                    total,
                    Some(format!(
                        "worker {} on {} reported {count} chunk commitments, not {total}",
                        worker.rank, worker.node_name
                    )),
                );
            }
        }
        (total, None)
    } else {
        for worker in &attempt.workers {
            if worker
                .result
                .as_ref()
                .and_then(|r| r.output_digest.as_ref())
                .is_none()
            {
                return (
                    0,
                    Some(format!(
                        "Redundant compares output digests; worker {} on {} reported none",
                        worker.rank, worker.node_name
                    )),
                );
            }
        }
        (0, None)
    }
}

/// The openings to ask of the attempt's workers for `chunks`: one per worker, when the workload
/// is a `verifiableMatmul` and the rows fit in one request ([`crds::agent::MAX_OPENING_BYTES`]);
/// none otherwise (a verifier node recomputes instead).
///
/// An honest agent recomputes the sampled rows on its CPU (a fraction sampleRate of the job) and
/// answers after its next heartbeat; a silent or offline worker only delays the check until
/// `opening_timeout`.
fn openings(state: &AppState, attempt: &Attempt, chunks: &[u32]) -> Vec<NewOpening> {
    let Some(matmul) = attempt
        .job
        .spec
        .workload
        .builtin
        .as_ref()
        .and_then(|b| b.verifiable_matmul.as_ref())
    else {
        return Vec::new();
    };
    let Ok(params) = verification::matmul::Params::new(matmul.n, matmul.chunk_rows, matmul.seed)
    else {
        return Vec::new();
    };
    if verification::matmul::check_chunks(&params, chunks).is_err()
        || verification::matmul::opening_entries(&params, chunks) * 4
            > crds::agent::MAX_OPENING_BYTES
    {
        return Vec::new();
    }
    let deadline_at = crate::store::now_ms()
        + i64::try_from(state.settings.opening_timeout.as_millis()).unwrap_or(i64::MAX / 2);
    attempt
        .workers
        .iter()
        .map(|worker| NewOpening {
            node_name: worker.node_name.clone(),
            request: crds::agent::OpeningRequest {
                assignment: worker.id.clone(),
                n: matmul.n,
                chunk_rows: matmul.chunk_rows,
                seed: matmul.seed,
                chunks: chunks.to_vec(),
            },
            deadline_at,
        })
        .collect()
}

/// Decides on the workers' openings: any failed opening fails the attempt (no tie-breaker: the
/// hub's finding is arithmetic, and the opening is signed by the worker); all passed passes it;
/// past the deadline with openings missing, a verifier node recomputes the sample instead.
async fn opened(state: &AppState, row: &VerificationRow) -> Result<bool, StoreError> {
    let store = &state.store;
    let openings = store.verification_openings(&row.id).await?;
    let Some(attempt) = attempt(store, row).await? else {
        return Ok(false);
    };
    let failed: Vec<&OpeningRow> = openings
        .iter()
        .filter(|o| o.state == OpeningState::Failed)
        .collect();
    use verification::reputation::{Outcome, apply};
    if !failed.is_empty() {
        let mut evidence = Vec::new();
        let mut failed_nodes = Vec::new();
        for opening in failed {
            store
                .update_reputation(&opening.node_name, |r| apply(r, Outcome::Failed))
                .await?;
            let item: Option<verification::evidence::Evidence> = opening
                .detail
                .as_ref()
                .and_then(|d| serde_json::from_value(d.clone()).ok());
            if let Some(item) = &item
                && let Some(operator) = store
                    .get_node(&opening.node_name)
                    .await?
                    .and_then(|n| n.operator_address)
            {
                slash_for_cheating(store, &opening.node_name, &operator, item).await;
            }
            failed_nodes.push(opening.node_name.clone());
            evidence.push(opening.detail.clone().unwrap_or(Value::Null));
        }
        let message = format!(
            "verification failed ({}): worker(s) on {} could not open {} to match their commitments",
            row.mode,
            failed_nodes.join(", "),
            what_was_checked(row)
        );
        let verdict = json!({"outcome": "failed", "checked_by": "opening", "evidence": evidence});
        return decide(
            state,
            row,
            VerificationState::Opening,
            VerificationState::Failed,
            &verdict,
            &message,
            &failed_nodes,
        )
        .await;
    }
    if !openings.is_empty() && openings.iter().all(|o| o.state == OpeningState::Passed) {
        for opening in &openings {
            store
                .update_reputation(&opening.node_name, |r| apply(r, Outcome::Passed))
                .await?;
        }
        let message = format!(
            "verified ({}): {} opened by the worker matched its commitments and passed Freivalds' check; no second node needed",
            row.mode,
            what_was_checked(row)
        );
        let nodes: Vec<&str> = openings.iter().map(|o| o.node_name.as_str()).collect();
        let verdict = json!({"outcome": "passed", "checked_by": "opening", "nodes": nodes});
        return decide(
            state,
            row,
            VerificationState::Opening,
            VerificationState::Passed,
            &verdict,
            &message,
            &[],
        )
        .await;
    }
    let deadline = openings.iter().map(|o| o.deadline_at).max().unwrap_or(0);
    if crate::store::now_ms() < deadline {
        return Ok(false);
    }
    // Not opened in time: a verifier node of another operator recomputes the sample.
    let job_id = match &row.verifier_job {
        Some(job_id) => job_id.clone(),
        None => {
            let mut excluded = BTreeSet::new();
            for worker in &attempt.workers {
                excluded.insert(operator_of(store, &worker.node_name).await?);
            }
            let plan = VerifierPlan {
                job_id: crate::ids::job_id(),
                excluded_operators: excluded.into_iter().collect(),
            };
            if !store.record_fallback_verifier(&row.id, &plan).await? {
                return Ok(false);
            }
            let silent: Vec<&str> = openings
                .iter()
                .filter(|o| o.state == OpeningState::Requested)
                .map(|o| o.node_name.as_str())
                .collect();
            tracing::info!(verification = %row.id, silent = ?silent, verifier = %plan.job_id, "workers did not open their commitments in time; a verifier node recomputes the sample");
            plan.job_id
        }
    };
    let spec = verifier_spec(&attempt.job.spec, &row.mode, &row.chunks);
    submit(
        store,
        &attempt.job,
        &job_id,
        &format!("{}verifier", row.id),
        spec,
    )
    .await?;
    store
        .advance_verification(
            &row.id,
            VerificationState::Opening,
            VerificationState::Recomputing,
        )
        .await
}

fn sample_rate(spec: &ComputeJobSpec) -> f64 {
    spec.verification
        .as_ref()
        .and_then(|v| v.sample_rate)
        .filter(|r| *r > 0.0 && *r <= 1.0)
        .unwrap_or(DEFAULT_SAMPLE_RATE)
}

/// The spec a verifier or tie-breaker runs: the job's own, on one worker, unverified itself,
/// with a few attempts; for SpotCheck only the sampled chunks.
fn verifier_spec(spec: &ComputeJobSpec, mode: &str, chunks: &[u32]) -> ComputeJobSpec {
    let mut spec = spec.clone();
    spec.verification = None;
    spec.retry = Some(Retry {
        max_attempts: VERIFIER_ATTEMPTS,
    });
    if mode == "SpotCheck"
        && let Some(matmul) = spec
            .workload
            .builtin
            .as_mut()
            .and_then(|b| b.verifiable_matmul.as_mut())
    {
        matmul.chunks = Some(chunks.to_vec());
    }
    spec
}

/// Submits a verifier job under `id`, idempotently (`key` survives a crash between recording
/// and submitting).
async fn submit(
    store: &Store,
    checked: &JobRow,
    id: &str,
    key: &str,
    spec: ComputeJobSpec,
) -> Result<(), StoreError> {
    let body = serde_json::to_vec(&spec).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let outcome = store
        .submit_job(NewJob {
            id: id.to_string(),
            tenant_id: checked.tenant_id.clone(),
            name: Some(format!("{JOB_PREFIX}{}", checked.id)),
            spec,
            idempotency_key: Some(key.to_string()),
            request_hash: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&body)),
        })
        .await?;
    if let SubmitOutcome::KeyReused { existing_id } = outcome {
        return Err(StoreError::Corrupt(format!(
            "verifier key {key} already names job {existing_id} with another spec"
        )));
    }
    Ok(())
}

/// What a finished verifier (or tie-breaker) job computed, by the node that computed it.
struct Recomputed {
    job: String,
    node: String,
    result: WorkloadResult,
}

/// The finished job's result, `Err(message)` if it ended without one, `Ok(None)` while it runs.
async fn recomputed(
    store: &Store,
    job_id: &str,
) -> Result<Result<Option<Recomputed>, String>, StoreError> {
    let Some(job) = store.get_job(None, job_id).await? else {
        return Ok(Ok(None));
    };
    match job.phase {
        JobPhase::Succeeded => {}
        JobPhase::Failed | JobPhase::Cancelled => {
            return Ok(Err(format!(
                "verifier job {job_id} ended {}: {}",
                job.phase.as_str(),
                job.message.unwrap_or_default()
            )));
        }
        _ => return Ok(Ok(None)),
    }
    let workers = store.job_assignments(job_id, job.attempt).await?;
    Ok(
        match workers
            .into_iter()
            .find_map(|w| w.result.map(|r| (w.node_name, r)))
        {
            Some((node, result)) => Ok(Some(Recomputed {
                job: job_id.to_string(),
                node,
                result,
            })),
            None => Err(format!("verifier job {job_id} reported no result")),
        },
    )
}

/// Whether any worker's claim disagrees with the verifier's recomputation
/// (`verification::verdict`); a recomputation of the wrong shape disagrees too.
fn disputed(row: &VerificationRow, workers: &[AssignmentRow], verifier: &WorkloadResult) -> bool {
    use verification::verdict::{Check, compare, compare_redundant};
    // Unreadable commitments stand as zeros here: this only decides whether to ask a
    // tie-breaker, never who is wrong.
    let digests = |list: &[String]| -> Vec<verification::Digest> {
        list.iter()
            .map(|c| digest(Some(c)).unwrap_or([0; 32]))
            .collect()
    };
    let sampled: Vec<usize> = row.chunks.iter().map(|c| *c as usize).collect();
    workers
        .iter()
        .filter_map(|w| w.result.as_ref())
        .any(|claimed| {
            let check = if row.mode == "SpotCheck" {
                compare(
                    &sampled,
                    &digests(&claimed.chunk_commitments),
                    &digests(&verifier.chunk_commitments),
                )
                .unwrap_or(Check::Dispute {
                    chunks: sampled.clone(),
                })
            } else {
                compare_redundant(
                    &digest(claimed.output_digest.as_ref()).unwrap_or([0; 32]),
                    &digest(verifier.output_digest.as_ref()).unwrap_or([1; 32]),
                )
            };
            check != Check::Passed
        })
}

/// Compares the verifier's recomputation with the workers' claims.
async fn compare(state: &AppState, row: &VerificationRow) -> Result<bool, StoreError> {
    let store = &state.store;
    let Some(verifier_job) = &row.verifier_job else {
        return Ok(false);
    };
    let verifier = match recomputed(store, verifier_job).await? {
        Ok(Some(verifier)) => verifier,
        Ok(None) => return Ok(false),
        Err(why) => return undecidable(state, row, VerificationState::Recomputing, &why).await,
    };
    let Some(attempt) = attempt(store, row).await? else {
        return Ok(false);
    };
    if !disputed(row, &attempt.workers, &verifier.result) {
        for worker in &attempt.workers {
            store
                .update_reputation(&worker.node_name, |r| {
                    verification::reputation::apply(r, verification::reputation::Outcome::Passed)
                })
                .await?;
        }
        let message = format!(
            "verified ({}): {} recomputed by {} on {} agreed",
            row.mode,
            what_was_checked(row),
            verifier.job,
            verifier.node
        );
        let verdict =
            json!({"outcome": "passed", "verifier": {"job": verifier.job, "node": verifier.node}});
        return decide(
            state,
            row,
            VerificationState::Recomputing,
            VerificationState::Passed,
            &verdict,
            &message,
            &[],
        )
        .await;
    }
    // A disagreement: a third operator's node decides.
    let mut excluded = BTreeSet::new();
    for worker in &attempt.workers {
        excluded.insert(operator_of(store, &worker.node_name).await?);
    }
    excluded.insert(operator_of(store, &verifier.node).await?);
    let tie_breaker = match &row.tie_breaker_job {
        Some(job_id) => job_id.clone(),
        None => {
            let plan = VerifierPlan {
                job_id: crate::ids::job_id(),
                excluded_operators: excluded.into_iter().collect(),
            };
            if !store.record_tie_breaker(&row.id, &plan).await? {
                return Ok(false);
            }
            tracing::warn!(verification = %row.id, verifier = %verifier.node, tie_breaker = %plan.job_id, "worker and verifier disagree; a tie-breaker decides");
            plan.job_id
        }
    };
    let spec = verifier_spec(&attempt.job.spec, &row.mode, &row.chunks);
    submit(
        store,
        &attempt.job,
        &tie_breaker,
        &format!("{}tie-breaker", row.id),
        spec,
    )
    .await?;
    store
        .advance_verification(
            &row.id,
            VerificationState::Recomputing,
            VerificationState::TieBreaking,
        )
        .await
}

fn what_was_checked(row: &VerificationRow) -> String {
    if row.mode == "SpotCheck" {
        format!("{} sampled chunk(s)", row.chunks.len())
    } else {
        "the output digest".to_string()
    }
}

/// The tie-breaker's recomputation decides between the workers and the verifier, chunk by chunk
/// (`verification::verdict`): a worker is wrong only where the tie-breaker sides with the
/// verifier; where it sides with neither, nobody is found wrong.
async fn break_tie(state: &AppState, row: &VerificationRow) -> Result<bool, StoreError> {
    let store = &state.store;
    let (Some(verifier_job), Some(tie_job)) = (&row.verifier_job, &row.tie_breaker_job) else {
        return Ok(false);
    };
    let tie = match recomputed(store, tie_job).await? {
        Ok(Some(tie)) => tie,
        Ok(None) => return Ok(false),
        // Without a decision nobody is found wrong: the worker keeps the benefit of the doubt.
        Err(why) => return undecidable(state, row, VerificationState::TieBreaking, &why).await,
    };
    let verifier = match recomputed(store, verifier_job).await? {
        Ok(Some(verifier)) => verifier,
        _ => return Ok(false),
    };
    let Some(attempt) = attempt(store, row).await? else {
        return Ok(false);
    };
    use verification::reputation::{Outcome, apply};
    let mut verifier_wrong = false;
    let mut evidence = Vec::new();
    let mut failed_nodes = Vec::new();
    for worker in &attempt.workers {
        let Some(claimed) = &worker.result else {
            continue;
        };
        let verdict = verdict_of(row, claimed, &verifier.result, &tie.result);
        verifier_wrong |= verdict.verifier_at_fault();
        if !verdict.slash_worker() {
            continue;
        }
        let operator = store
            .get_node(&worker.node_name)
            .await?
            .and_then(|n| n.operator_address);
        store
            .update_reputation(&worker.node_name, |r| apply(r, Outcome::Failed))
            .await?;
        let parties = Parties {
            verifier: &verifier,
            verifier_operator: operator_of(store, &verifier.node).await?,
            tie: &tie,
        };
        let item = evidence_of(
            row,
            worker,
            claimed,
            operator.as_deref(),
            &verdict,
            &parties,
        );
        if let Some(operator) = &operator {
            slash_for_cheating(store, &worker.node_name, operator, &item).await;
        }
        failed_nodes.push(worker.node_name.clone());
        evidence.push(serde_json::to_value(&item).unwrap_or(Value::Null));
    }
    if verifier_wrong {
        store
            .update_reputation(&verifier.node, |r| apply(r, Outcome::Failed))
            .await?;
    }
    let mut verdict = json!({
        "verifier": {"job": verifier.job, "node": verifier.node, "wrong": verifier_wrong},
        "tie_breaker": {"job": tie.job, "node": tie.node}
    });
    if failed_nodes.is_empty() {
        for worker in &attempt.workers {
            store
                .update_reputation(&worker.node_name, |r| apply(r, Outcome::Passed))
                .await?;
        }
        let message = format!(
            "verified ({}) after a dispute: the tie-breaker {} on {} did not side with the verifier on {} against the workers",
            row.mode, tie.job, tie.node, verifier.node
        );
        verdict["outcome"] = json!("passed");
        verdict["disputed"] = json!(true);
        return decide(
            state,
            row,
            VerificationState::TieBreaking,
            VerificationState::Passed,
            &verdict,
            &message,
            &[],
        )
        .await;
    }
    let message = format!(
        "verification failed ({}): {} recomputed by {} on {} and the tie-breaker {} on {} contradict worker(s) on {}",
        row.mode,
        what_was_checked(row),
        verifier.job,
        verifier.node,
        tie.job,
        tie.node,
        failed_nodes.join(", ")
    );
    verdict["outcome"] = json!("failed");
    verdict["evidence"] = json!(evidence);
    decide(
        state,
        row,
        VerificationState::TieBreaking,
        VerificationState::Failed,
        &verdict,
        &message,
        &failed_nodes,
    )
    .await
}

/// Queues a `cheating` slash of `operator` (whose `node` was found wrong) with the evidence; a
/// slash that cannot be queued is logged, and the verdict stands without it.
async fn slash_for_cheating(
    store: &Store,
    node: &str,
    operator: &str,
    evidence: &verification::evidence::Evidence,
) {
    match crate::slashing::request_slash(store, operator, "cheating", &evidence.to_chain_string())
        .await
    {
        Ok(slash) => {
            tracing::warn!(%node, %operator, slash = %slash.id, "verification failed: slash queued")
        }
        Err(e) => {
            tracing::warn!(%node, %operator, error = %e, "verification failed but the slash could not be queued")
        }
    }
}

/// A commitment or digest as the verdict rules take it; `None` when missing or unreadable.
fn digest(hex_text: Option<&String>) -> Option<verification::Digest> {
    hex_text.and_then(|h| verification::digest_from_hex(h))
}

/// One worker's claim judged by the verifier's and the tie-breaker's recomputations. A chunk (or
/// digest) that the verifier or the tie-breaker did not deliver is unresolved: a missing answer
/// never counts as agreement against the worker.
fn verdict_of(
    row: &VerificationRow,
    claimed: &WorkloadResult,
    verifier: &WorkloadResult,
    tie: &WorkloadResult,
) -> verification::verdict::Verdict {
    use verification::verdict::{
        ChunkDispute, RedundantResolution, Verdict, resolve_redundant, resolve_spot_check,
    };
    // A worker's own missing or unreadable claim is its fault: it stands as a digest no
    // recomputation produces.
    let claim = |text: Option<&String>| digest(text).unwrap_or([0; 32]);
    if row.mode == "SpotCheck" {
        let mut unresolved = Vec::new();
        let mut disputes = Vec::new();
        for (position, chunk) in row.chunks.iter().enumerate() {
            let chunk = *chunk as usize;
            match (
                digest(verifier.chunk_commitments.get(position)),
                digest(tie.chunk_commitments.get(position)),
            ) {
                (Some(verifier), Some(tie_breaker)) => disputes.push(ChunkDispute {
                    chunk,
                    claimed: claim(claimed.chunk_commitments.get(chunk)),
                    verifier,
                    tie_breaker,
                }),
                _ => unresolved.push(chunk),
            }
        }
        let mut verdict = resolve_spot_check(&disputes);
        verdict.unresolved.extend(unresolved);
        return verdict;
    }
    let mut verdict = Verdict::default();
    let (Some(second), Some(third)) = (
        digest(verifier.output_digest.as_ref()),
        digest(tie.output_digest.as_ref()),
    ) else {
        verdict.unresolved.push(0);
        return verdict;
    };
    match resolve_redundant(&claim(claimed.output_digest.as_ref()), &second, &third) {
        RedundantResolution::FirstFaulty => verdict.worker_faulty.push(0),
        RedundantResolution::SecondFaulty => verdict.verifier_faulty.push(0),
        RedundantResolution::Unresolved => verdict.unresolved.push(0),
        RedundantResolution::NoDispute => {}
    }
    verdict
}

/// The verifier and the tie-breaker of a dispute.
struct Parties<'a> {
    verifier: &'a Recomputed,
    verifier_operator: String,
    tie: &'a Recomputed,
}

/// The evidence against a worker: the first chunk (or the digest) the tie-breaker confirmed wrong,
/// with every party's node and the worker's own signature of its result.
fn evidence_of(
    row: &VerificationRow,
    worker: &AssignmentRow,
    claimed: &WorkloadResult,
    operator: Option<&str>,
    verdict: &verification::verdict::Verdict,
    parties: &Parties<'_>,
) -> verification::evidence::Evidence {
    use verification::evidence::{CheckKind, Evidence};
    let spot = row.mode == "SpotCheck";
    let chunk = verdict.worker_faulty.first().copied().unwrap_or(0);
    let position = row
        .chunks
        .iter()
        .position(|c| *c as usize == chunk)
        .unwrap_or(0);
    let (verifier, tie) = (&parties.verifier.result, &parties.tie.result);
    let (claimed_hex, recomputed_hex, tie_hex) = if spot {
        (
            claimed.chunk_commitments.get(chunk).cloned(),
            verifier.chunk_commitments.get(position).cloned(),
            tie.chunk_commitments.get(position).cloned(),
        )
    } else {
        (
            claimed.output_digest.clone(),
            verifier.output_digest.clone(),
            tie.output_digest.clone(),
        )
    };
    Evidence {
        kind: if spot {
            CheckKind::SpotCheck
        } else {
            CheckKind::Redundant
        },
        job: row.job_id.clone(),
        assignment: worker.id.clone(),
        node: worker.node_name.clone(),
        operator: operator.map_or_else(|| format!("node:{}", worker.node_name), str::to_string),
        chunk: spot.then_some(chunk as u32),
        sample_seed: if spot { row.seed.clone() } else { None },
        claimed: claimed_hex.unwrap_or_default(),
        recomputed: recomputed_hex.unwrap_or_default(),
        verifier_node: Some(parties.verifier.node.clone()),
        verifier_operator: Some(parties.verifier_operator.clone()),
        tie_breaker: tie_hex,
        tie_breaker_node: Some(parties.tie.node.clone()),
        worker_signature: claimed.signature.clone(),
        verifier_signature: verifier.signature.clone(),
        row: None,
        opening_signature: None,
    }
}

/// Decides `row` (see `Store::decide_verification`) and counts the outcome in
/// `agora_verifications_total{mode, outcome}`.
async fn decide(
    state: &AppState,
    row: &VerificationRow,
    from: VerificationState,
    outcome: VerificationState,
    verdict: &Value,
    message: &str,
    failed_nodes: &[String],
) -> Result<bool, StoreError> {
    let decided = state
        .store
        .decide_verification(row, from, outcome, verdict, message, failed_nodes)
        .await?;
    if decided {
        state
            .metrics
            .verifications
            .get_or_create(&vec![
                ("mode", row.mode.clone()),
                ("outcome", outcome.as_str().to_string()),
            ])
            .inc();
    }
    Ok(decided)
}

/// Closes a verification that cannot decide: the job Succeeds (nobody was shown wrong), and the
/// message says why it is unverified.
async fn undecidable(
    state: &AppState,
    row: &VerificationRow,
    from: VerificationState,
    why: &str,
) -> Result<bool, StoreError> {
    let message = format!("not verified ({}): {why}", row.mode);
    let verdict = json!({"outcome": "unverifiable", "reason": why});
    decide(
        state,
        row,
        from,
        VerificationState::Unverifiable,
        &verdict,
        &message,
        &[],
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::verification::VerificationState;

    fn row(mode: &str, chunks: Vec<u32>) -> VerificationRow {
        VerificationRow {
            id: "ver-job-1".into(),
            job_id: "job-1".into(),
            attempt: 1,
            mode: mode.into(),
            state: VerificationState::TieBreaking,
            seed: None,
            chunks,
            verifier_job: None,
            tie_breaker_job: None,
            verdict: None,
            message: None,
            created_at: 0,
            decided_at: None,
        }
    }

    fn result(commitments: &[&str]) -> WorkloadResult {
        WorkloadResult {
            backend: crds::agent::ResultBackend::CpuReference,
            tflops: None,
            output_digest: Some("cd".repeat(32)),
            chunk_commitments: commitments.iter().map(|c| c.repeat(32)).collect(),
            signature: None,
        }
    }

    #[test]
    fn a_worker_is_wrong_only_where_the_tie_breaker_sides_with_the_verifier() {
        let sampled = row("SpotCheck", vec![0, 2]);
        let worker = result(&["aa", "bb", "cc"]);
        let verifier = result(&["ff", "ee"]);
        // The tie-breaker agrees with the verifier on chunk 0, with the worker on chunk 2.
        let verdict = verdict_of(&sampled, &worker, &verifier, &result(&["ff", "cc"]));
        assert_eq!(verdict.worker_faulty, [0]);
        assert_eq!(verdict.verifier_faulty, [2]);
        assert!(verdict.slash_worker() && verdict.verifier_at_fault());
    }

    #[test]
    fn missing_recomputations_never_frame_an_honest_worker() {
        let sampled = row("SpotCheck", vec![0, 2]);
        let worker = result(&["aa", "bb", "cc"]);
        // Verifier and tie-breaker both delivered nothing: they "agree" on nothing.
        let verdict = verdict_of(&sampled, &worker, &result(&[]), &result(&[]));
        assert!(!verdict.slash_worker(), "{verdict:?}");
        assert_eq!(verdict.unresolved, [0, 2]);
        let redundant = row("Redundant", Vec::new());
        let mut silent = result(&[]);
        silent.output_digest = None;
        let verdict = verdict_of(&redundant, &worker, &silent, &silent);
        assert!(!verdict.slash_worker(), "{verdict:?}");
    }
}
