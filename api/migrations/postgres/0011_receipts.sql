-- The latest signed usage receipt of each assignment (docs/settlement.md): receipts are cumulative,
-- so the one with the highest sequence supersedes all earlier ones and is all settlement needs.
-- `body` is the canonical encoding as lowercase hex, exactly the bytes `signature` covers, so a
-- settlement batch can be built and checked from this table alone. Amounts are micro-units, times
-- Unix ms. Rows are never deleted here: what was receipted stays payable.
CREATE TABLE receipts (
    assignment_id  TEXT PRIMARY KEY,
    job_id         TEXT NOT NULL,
    node_name      TEXT NOT NULL,
    sequence       BIGINT NOT NULL,
    gpu_millis     BIGINT NOT NULL,
    amount_micros  BIGINT NOT NULL,
    until_ms       BIGINT NOT NULL,
    body           TEXT NOT NULL,
    signature      TEXT NOT NULL,
    received_at    BIGINT NOT NULL
);
CREATE INDEX receipts_by_job ON receipts (job_id);
