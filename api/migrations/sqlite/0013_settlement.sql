-- Settlement (docs/settlement.md): batches of receipts posted to the chain through an outbox.
-- A batch is written here first, in one transaction with its leaves, then posted; its state moves
-- built → posted → confirmed → final (or challenged) by compare-and-set, so a crash at any point
-- neither posts a batch twice (the contract takes a batch id once) nor skips one.

-- The chain address a tenant's jobs are paid from (its escrow in the settlement contract).
ALTER TABLE tenants ADD COLUMN payer_address TEXT;

CREATE TABLE settlement_batches (
    id               TEXT PRIMARY KEY,
    period_from_ms   BIGINT NOT NULL,
    period_to_ms     BIGINT NOT NULL,
    root             TEXT NOT NULL,
    receipts         BIGINT NOT NULL,
    -- JSON lists of {"address", "amount"} in micro-units (amounts as decimal strings).
    provider_totals  TEXT NOT NULL,
    payer_totals     TEXT NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('built', 'posted', 'confirmed', 'final', 'challenged')),
    tx               TEXT,
    height           BIGINT,
    built_at         BIGINT NOT NULL,
    posted_at        BIGINT,
    final_at         BIGINT,
    attempts         BIGINT NOT NULL DEFAULT 0,
    last_error       TEXT
);
CREATE INDEX settlement_batches_by_state ON settlement_batches (state, id);

-- Each receipt a batch settles: its place in the batch's Merkle tree, its canonical bytes (hex),
-- and what the batch pays for it: the receipt's cumulative amount minus what earlier batches paid
-- for the same assignment. A receipt (assignment, sequence) is settled at most once.
CREATE TABLE settlement_leaves (
    batch_id       TEXT NOT NULL REFERENCES settlement_batches (id),
    leaf_index     BIGINT NOT NULL,
    assignment_id  TEXT NOT NULL,
    job_id         TEXT NOT NULL,
    sequence       BIGINT NOT NULL,
    amount_micros  BIGINT NOT NULL,
    paid_micros    BIGINT NOT NULL,
    body           TEXT NOT NULL,
    PRIMARY KEY (batch_id, leaf_index),
    UNIQUE (assignment_id, sequence)
);
CREATE INDEX settlement_leaves_by_job ON settlement_leaves (job_id);
