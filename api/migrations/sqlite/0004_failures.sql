-- Failures and recovery. A job is never placed again on a node it failed on, so those nodes are
-- recorded per job (one row per node: the first failure there is the one kept). The hub enforces
-- maxRuntime itself, from a deadline written when the attempt starts running, so the liveness sweep
-- finds overdue jobs through an index instead of reading every running job's spec. A job's latest
-- checkpoint (highest step wins) is kept on the job, and each assignment remembers the checkpoint it
-- was placed to resume from, so what an agent is told does not change under a running worker.
CREATE TABLE job_excluded_nodes (
    job_id     TEXT NOT NULL REFERENCES jobs (id),
    node_name  TEXT NOT NULL,
    attempt    INTEGER NOT NULL,
    reason     TEXT NOT NULL,
    at         INTEGER NOT NULL,
    PRIMARY KEY (job_id, node_name)
);

ALTER TABLE jobs ADD COLUMN deadline_at INTEGER;
ALTER TABLE jobs ADD COLUMN checkpoint_uri TEXT;
ALTER TABLE jobs ADD COLUMN checkpoint_step INTEGER;
ALTER TABLE jobs ADD COLUMN checkpoint_at INTEGER;
CREATE INDEX jobs_by_deadline ON jobs (phase, deadline_at);

ALTER TABLE assignments ADD COLUMN resume_checkpoint TEXT;
