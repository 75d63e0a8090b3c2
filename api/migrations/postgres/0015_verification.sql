-- Verification (docs/verification.md): a job that asks for SpotCheck or Redundant is checked after
-- its workers finish, by recomputation on nodes of other operators, before it Succeeds.

-- One check of one attempt. `seed` is drawn (and stored) only after the worker's commitments are
-- in, so the worker could not know which chunks would be checked; `chunks` is the sample derived
-- from it (anyone can derive it again from the seed). `verifier_job` recomputes the sample on a
-- node of another operator; on disagreement `tie_breaker_job` recomputes it on a third operator's
-- node, and its answer decides. `verdict` is the outcome as JSON, with the evidence when a worker
-- was found wrong.
CREATE TABLE verifications (
    id               TEXT PRIMARY KEY,
    job_id           TEXT NOT NULL REFERENCES jobs (id),
    attempt          BIGINT NOT NULL,
    mode             TEXT NOT NULL CHECK (mode IN ('SpotCheck', 'Redundant')),
    state            TEXT NOT NULL CHECK (state IN ('sampling', 'recomputing', 'tie_breaking', 'passed', 'failed', 'unverifiable')),
    seed             TEXT,
    chunks           TEXT,
    verifier_job     TEXT,
    tie_breaker_job  TEXT,
    verdict          TEXT,
    message          TEXT,
    created_at       BIGINT NOT NULL,
    decided_at       BIGINT,
    UNIQUE (job_id, attempt)
);
CREATE INDEX verifications_by_state ON verifications (state, created_at);

-- Operators whose nodes a job must not run on: a verifier's job never runs at the operator it
-- checks (nor a tie-breaker at either party's). A node without an operator address stands for
-- itself as `node:<name>`. Written before the job itself (no foreign key), so the job is never
-- schedulable without its exclusions.
CREATE TABLE job_excluded_operators (
    job_id    TEXT NOT NULL,
    operator  TEXT NOT NULL,
    PRIMARY KEY (job_id, operator)
);

-- A node's reputation in basis points (10000 = spotless; verification::reputation).
ALTER TABLE nodes ADD COLUMN reputation_bps BIGINT NOT NULL DEFAULT 10000;
