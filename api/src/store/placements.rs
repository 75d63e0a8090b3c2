//! Placements: a scheduling cycle's decisions written in one transaction.
//!
//! A cycle places up to a few hundred jobs; one transaction per job would make the scheduling
//! loop's throughput the database's round-trip rate (each placement is an update, a read, and
//! inserts per worker and GPU). Here a cycle's placements cost one compare-and-set per job and a
//! handful of multi-row inserts for all of them. The compare-and-sets, the unique constraint on
//! `(node, GPU)` allocations and the leader's fence keep the guarantees of a per-job write: a job
//! placed twice or a GPU given twice makes the whole batch roll back, and the batch is then
//! written job by job, so only the placements that lost a race are dropped.

use sqlx::{AssertSqlSafe, Row};

use crate::lifecycle::AssignmentPhase;

use super::{
    NewAssignment, Result, Store, StoreError, is_unique_violation,
    jobs::{PlaceAttempt, place_attempts},
    leases::{Fence, check_fence},
    nodes::micros,
    now_ms, placeholders,
};

/// Most rows one multi-row insert carries (at most 10 parameters each: far inside both engines'
/// parameter limits).
const ROWS_PER_INSERT: usize = 500;

/// One job's placement, before it is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    pub job_id: String,
    /// The attempt the job is at while Pending (0 before its first placement); the placement
    /// writes `attempt + 1`.
    pub attempt: u32,
    pub workers: Vec<NewAssignment>,
}

impl Placement {
    /// The distinct nodes of its workers, by rank.
    fn nodes(&self) -> Vec<&str> {
        let mut nodes: Vec<&str> = Vec::new();
        for worker in &self.workers {
            if !nodes.contains(&worker.node_name.as_str()) {
                nodes.push(&worker.node_name);
            }
        }
        nodes
    }

    /// What the job's message and event say of it: "2 workers on gn-a, gn-b".
    fn message(&self) -> String {
        let n = self.workers.len();
        format!(
            "{n} worker{} on {}",
            if n == 1 { "" } else { "s" },
            self.nodes().join(", ")
        )
    }

    /// The attempt's price: the highest of its workers' (what the job's bound was checked against).
    fn price_micros(&self) -> u64 {
        self.workers
            .iter()
            .map(|w| w.price_micros)
            .max()
            .unwrap_or(0)
    }
}

/// How a batch went.
enum Written {
    /// Committed; which placements took (a job no longer Pending at its attempt did not).
    Done(Vec<bool>),
    /// A GPU was taken meanwhile; nothing was written.
    GpuTaken,
}

impl Store {
    /// Writes a cycle's placements under `fence` (always, without one): each job that is still
    /// Pending at its attempt becomes Scheduled with a new attempt, each worker gets an assignment
    /// and each GPU an allocation. Returns, per placement, whether it was written. Nothing is
    /// written when the fence's lease has moved on.
    pub async fn place_jobs(
        &self,
        batch: &[Placement],
        fence: Option<&Fence>,
    ) -> Result<Vec<bool>> {
        match self.write_placements(batch, fence).await? {
            Written::Done(done) => Ok(done),
            Written::GpuTaken if batch.len() == 1 => Ok(vec![false]),
            Written::GpuTaken => {
                let mut done = Vec::with_capacity(batch.len());
                for placement in batch {
                    let one = std::slice::from_ref(placement);
                    done.push(match self.write_placements(one, fence).await? {
                        Written::Done(one) => one[0],
                        Written::GpuTaken => false,
                    });
                }
                Ok(done)
            }
        }
    }

    /// One job's placement (see [`Store::place_jobs`]), unfenced: returns false, writing
    /// nothing, if the job is no longer Pending at `attempt` or a GPU was taken meanwhile.
    pub async fn place_job(
        &self,
        job_id: &str,
        attempt: u32,
        workers: &[NewAssignment],
    ) -> Result<bool> {
        self.place_job_fenced(job_id, attempt, workers, None).await
    }

    /// [`Store::place_job`] under `fence`: also false when the fence's lease has moved on.
    pub async fn place_job_fenced(
        &self,
        job_id: &str,
        attempt: u32,
        workers: &[NewAssignment],
        fence: Option<&Fence>,
    ) -> Result<bool> {
        let placement = Placement {
            job_id: job_id.to_string(),
            attempt,
            workers: workers.to_vec(),
        };
        Ok(self.place_jobs(&[placement], fence).await?[0])
    }

    async fn write_placements(
        &self,
        batch: &[Placement],
        fence: Option<&Fence>,
    ) -> Result<Written> {
        let now = now_ms();
        let mut tx = self.write_tx().await?;
        if !check_fence(&mut tx, fence).await? {
            return Ok(Written::Done(vec![false; batch.len()]));
        }
        let messages: Vec<String> = batch.iter().map(Placement::message).collect();
        let nodes: Vec<Vec<&str>> = batch.iter().map(Placement::nodes).collect();
        let attempts: Vec<PlaceAttempt<'_>> = batch
            .iter()
            .zip(&messages)
            .zip(&nodes)
            .map(|((p, message), nodes)| PlaceAttempt {
                job_id: &p.job_id,
                attempt: p.attempt,
                price_micros: p.price_micros(),
                message,
                node: nodes.first().copied(),
            })
            .collect();
        // The job moves to Scheduled (and its event is logged) in this transaction, with the
        // checkpoint its attempt resumes from fixed now, so that what the agent is told stays
        // stable while later checkpoints arrive.
        let placed = place_attempts(&mut tx, &attempts, now).await?;
        let done: Vec<bool> = placed.iter().map(Option::is_some).collect();
        let moved: Vec<(&Placement, Option<String>)> = batch
            .iter()
            .zip(placed)
            .filter_map(|(p, placed)| placed.map(|placed| (p, placed.resume_checkpoint)))
            .collect();
        if moved.is_empty() {
            tx.commit().await?;
            return Ok(Written::Done(done));
        }

        let workers: Vec<(&Placement, &Option<String>, &NewAssignment)> = moved
            .iter()
            .flat_map(|(p, resume)| p.workers.iter().map(move |w| (*p, resume, w)))
            .collect();
        for chunk in workers.chunks(ROWS_PER_INSERT) {
            let mut query = sqlx::query(AssertSqlSafe(format!(
                "INSERT INTO assignments (id, job_id, attempt, worker_rank, node_name, gpus, price_micros, state, \
                 created_at, resume_checkpoint) VALUES {}",
                placeholders(chunk.len(), 10)
            )));
            for (placement, resume, worker) in chunk {
                query = query
                    .bind(&worker.id)
                    .bind(&placement.job_id)
                    .bind(i64::from(placement.attempt + 1))
                    .bind(i64::from(worker.rank))
                    .bind(&worker.node_name)
                    .bind(
                        serde_json::to_string(&worker.gpus)
                            .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    )
                    .bind(micros(worker.price_micros)?)
                    .bind(AssignmentPhase::Assigned.as_str())
                    .bind(now)
                    .bind(resume.as_deref());
            }
            query.execute(&mut *tx).await?;
        }

        let gpus: Vec<(&NewAssignment, &String)> = workers
            .iter()
            .flat_map(|(_, _, w)| w.gpus.iter().map(move |g| (*w, g)))
            .collect();
        for chunk in gpus.chunks(ROWS_PER_INSERT) {
            let mut query = sqlx::query(AssertSqlSafe(format!(
                "INSERT INTO gpu_allocations (node_name, gpu_uuid, assignment_id) VALUES {}",
                placeholders(chunk.len(), 3)
            )));
            for (worker, gpu) in chunk {
                query = query
                    .bind(&worker.node_name)
                    .bind(gpu.as_str())
                    .bind(&worker.id);
            }
            match query.execute(&mut *tx).await {
                Ok(_) => {}
                // Someone else holds one of these GPUs now: the transaction rolls back on drop.
                Err(e) if is_unique_violation(&e) => return Ok(Written::GpuTaken),
                Err(e) => return Err(e.into()),
            }
        }

        tx.commit().await?;
        Ok(Written::Done(done))
    }
}

impl Store {
    /// The queue and the fleet's capacity in a few numbers that change whenever either does: how
    /// many jobs wait and the newest of them, how many GPUs are allocated, how many nodes are
    /// registered and the latest registration. Cheap (counts over indexes and small tables), so the
    /// leader can poll it to notice what other replicas changed.
    pub async fn queue_mark(&self) -> Result<QueueMark> {
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM jobs WHERE phase = 'Pending') AS waiting, \
             (SELECT MAX(id) FROM jobs WHERE phase = 'Pending') AS newest, \
             (SELECT COUNT(*) FROM gpu_allocations) AS allocated, \
             (SELECT COUNT(*) FROM nodes) AS nodes, \
             (SELECT MAX(registered_at) FROM nodes) AS registered",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(QueueMark {
            waiting: row.try_get("waiting")?,
            newest: row.try_get("newest")?,
            fleet: FleetMark {
                allocated: row.try_get("allocated")?,
                nodes: row.try_get("nodes")?,
                registered: row.try_get("registered")?,
            },
        })
    }
}

/// What [`Store::queue_mark`] read: when it differs from the last one, the queue or the fleet
/// changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueueMark {
    pub waiting: i64,
    pub newest: Option<String>,
    pub fleet: FleetMark,
}

/// The fleet's part of a [`QueueMark`]: GPUs allocated (placements and freed GPUs move it) and
/// nodes registered (a new node, or one registering again, moves it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FleetMark {
    pub allocated: i64,
    pub nodes: i64,
    pub registered: Option<i64>,
}
