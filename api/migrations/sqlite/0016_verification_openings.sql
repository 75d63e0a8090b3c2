-- Verification by opening (docs/verification.md): a new state, `opening`, between sampling and
-- recomputing, while the worker is asked to open its sampled commitments. SQLite cannot alter a
-- CHECK constraint, so the table is rebuilt with the same columns (nothing references it yet).
CREATE TABLE verifications_next (
    id               TEXT PRIMARY KEY,
    job_id           TEXT NOT NULL REFERENCES jobs (id),
    attempt          BIGINT NOT NULL,
    mode             TEXT NOT NULL CHECK (mode IN ('SpotCheck', 'Redundant')),
    state            TEXT NOT NULL CHECK (state IN ('sampling', 'opening', 'recomputing', 'tie_breaking', 'passed', 'failed', 'unverifiable')),
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
INSERT INTO verifications_next
    SELECT id, job_id, attempt, mode, state, seed, chunks, verifier_job, tie_breaker_job, verdict,
           message, created_at, decided_at
    FROM verifications;
DROP TABLE verifications;
ALTER TABLE verifications_next RENAME TO verifications;
CREATE INDEX verifications_by_state ON verifications (state, created_at);

-- A worker's opening of its commitments: for a SpotCheck of a `verifiableMatmul` whose sampled
-- rows fit in one request, the hub asks the worker itself (in its heartbeat answers) for the rows
-- of the sampled chunks, checks that they hash to the commitments it reported and that they are
-- rows of A·B (Freivalds' algorithm, with a challenge drawn after they arrive), and needs no
-- second node. `request` is the wire request (JSON); `detail` the outcome (JSON: the challenge, or
-- the evidence). A worker that does not answer by `deadline_at` leaves the check to a verifier
-- node, as for samples too large to open.
CREATE TABLE verification_openings (
    verification_id  TEXT NOT NULL REFERENCES verifications (id),
    assignment_id    TEXT NOT NULL,
    node_name        TEXT NOT NULL,
    request          TEXT NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('requested', 'passed', 'failed')),
    detail           TEXT,
    requested_at     BIGINT NOT NULL,
    deadline_at      BIGINT NOT NULL,
    answered_at      BIGINT,
    PRIMARY KEY (verification_id, assignment_id)
);
CREATE INDEX verification_openings_by_node ON verification_openings (node_name, state);
CREATE INDEX verification_openings_by_assignment ON verification_openings (assignment_id);
