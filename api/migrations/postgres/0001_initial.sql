-- The hub's initial schema. Times are Unix milliseconds; money is integer micro-units; specs and
-- inventories are JSON text. Invariants live in constraints, not in application code.

CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL
);

-- API keys are stored as SHA-256 hashes: keys are 256-bit random secrets, so a slow hash adds nothing.
CREATE TABLE api_keys (
    key_hash    TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    prefix      TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE jobs (
    id               TEXT PRIMARY KEY,
    tenant_id        TEXT NOT NULL REFERENCES tenants (id),
    name             TEXT,
    spec             TEXT NOT NULL,
    phase            TEXT NOT NULL,
    reason           TEXT,
    message          TEXT,
    attempt          BIGINT NOT NULL DEFAULT 0,
    price_micros     BIGINT,
    gpu_millis       BIGINT NOT NULL DEFAULT 0,
    cost_micros      BIGINT NOT NULL DEFAULT 0,
    submitted_at     BIGINT NOT NULL,
    scheduled_at     BIGINT,
    started_at       BIGINT,
    finished_at      BIGINT,
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
    price_micros      BIGINT NOT NULL,
    gpus              TEXT NOT NULL,
    capabilities      TEXT NOT NULL,
    simulated         BIGINT NOT NULL,
    token_hash        TEXT NOT NULL UNIQUE,
    registered_at     BIGINT NOT NULL,
    last_heartbeat    BIGINT NOT NULL
);

CREATE TABLE assignments (
    id            TEXT PRIMARY KEY,
    job_id        TEXT NOT NULL REFERENCES jobs (id),
    attempt       BIGINT NOT NULL,
    worker_rank   BIGINT NOT NULL,
    node_name     TEXT NOT NULL REFERENCES nodes (name),
    gpus          TEXT NOT NULL,
    price_micros  BIGINT NOT NULL,
    state         TEXT NOT NULL,
    exit_code     BIGINT,
    message       TEXT,
    created_at    BIGINT NOT NULL,
    started_at    BIGINT,
    finished_at   BIGINT,
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
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id      TEXT NOT NULL REFERENCES jobs (id),
    at          BIGINT NOT NULL,
    from_phase  TEXT,
    to_phase    TEXT NOT NULL,
    reason      TEXT NOT NULL,
    message     TEXT,
    attempt     BIGINT NOT NULL,
    node        TEXT
);
CREATE INDEX job_events_by_job ON job_events (job_id, id);
