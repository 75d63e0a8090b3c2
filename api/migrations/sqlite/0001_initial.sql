-- The hub's initial schema. Times are Unix milliseconds; money is integer micro-units; specs and
-- inventories are JSON text. Invariants live in constraints, not in application code.

CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL
);

-- API keys are stored as SHA-256 hashes: keys are 256-bit random secrets, so a slow hash adds nothing.
CREATE TABLE api_keys (
    key_hash    TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    prefix      TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE jobs (
    id               TEXT PRIMARY KEY,
    tenant_id        TEXT NOT NULL REFERENCES tenants (id),
    name             TEXT,
    spec             TEXT NOT NULL,
    phase            TEXT NOT NULL,
    reason           TEXT,
    message          TEXT,
    attempt          INTEGER NOT NULL DEFAULT 0,
    price_micros     INTEGER,
    gpu_millis       INTEGER NOT NULL DEFAULT 0,
    cost_micros      INTEGER NOT NULL DEFAULT 0,
    submitted_at     INTEGER NOT NULL,
    scheduled_at     INTEGER,
    started_at       INTEGER,
    finished_at      INTEGER,
    idempotency_key  TEXT,
    request_hash     TEXT,
    UNIQUE (tenant_id, idempotency_key)
);
CREATE INDEX jobs_by_tenant ON jobs (tenant_id, id);
CREATE INDEX jobs_by_phase ON jobs (phase, id);

CREATE TABLE nodes (
    name              TEXT PRIMARY KEY,
    region            TEXT NOT NULL,
    operator_address  TEXT,
    price_micros      INTEGER NOT NULL,
    gpus              TEXT NOT NULL,
    capabilities      TEXT NOT NULL,
    simulated         INTEGER NOT NULL,
    token_hash        TEXT NOT NULL UNIQUE,
    registered_at     INTEGER NOT NULL,
    last_heartbeat    INTEGER NOT NULL
);

CREATE TABLE assignments (
    id            TEXT PRIMARY KEY,
    job_id        TEXT NOT NULL REFERENCES jobs (id),
    attempt       INTEGER NOT NULL,
    worker_rank   INTEGER NOT NULL,
    node_name     TEXT NOT NULL REFERENCES nodes (name),
    gpus          TEXT NOT NULL,
    price_micros  INTEGER NOT NULL,
    state         TEXT NOT NULL,
    exit_code     INTEGER,
    message       TEXT,
    created_at    INTEGER NOT NULL,
    started_at    INTEGER,
    finished_at   INTEGER,
    UNIQUE (job_id, attempt, worker_rank)
);
CREATE INDEX assignments_by_node ON assignments (node_name, state);
CREATE INDEX assignments_by_job ON assignments (job_id, attempt);

-- One row per GPU held by a live assignment: the primary key makes double allocation impossible.
CREATE TABLE gpu_allocations (
    node_name      TEXT NOT NULL,
    gpu_uuid       TEXT NOT NULL,
    assignment_id  TEXT NOT NULL REFERENCES assignments (id),
    PRIMARY KEY (node_name, gpu_uuid)
);

CREATE TABLE job_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id      TEXT NOT NULL REFERENCES jobs (id),
    at          INTEGER NOT NULL,
    from_phase  TEXT,
    to_phase    TEXT NOT NULL,
    reason      TEXT NOT NULL,
    message     TEXT,
    attempt     INTEGER NOT NULL,
    node        TEXT
);
CREATE INDEX job_events_by_job ON job_events (job_id, id);
