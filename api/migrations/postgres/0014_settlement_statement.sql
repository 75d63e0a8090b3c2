-- Earnings statements and slashes (docs/settlement.md, "Earnings statements" and "Slashes").

-- Who each leaf pays and who pays it, so a provider's statement finds its jobs without decoding
-- every batch. Null on leaves recorded before this migration.
ALTER TABLE settlement_leaves ADD COLUMN provider TEXT;
ALTER TABLE settlement_leaves ADD COLUMN payer TEXT;
CREATE INDEX settlement_leaves_by_provider ON settlement_leaves (provider, batch_id);

-- What FinalizeBatch paid each provider of a batch, as the contract's `agora_payout` events say
-- (or, when the finalization was repeated after a crash, as the contract computes it): micro-units,
-- net = gross - fee. `tx` and `height` are the FinalizeBatch transaction's. Written in the same
-- transaction that marks the batch final.
CREATE TABLE settlement_payouts (
    batch_id     TEXT NOT NULL REFERENCES settlement_batches (id),
    provider     TEXT NOT NULL,
    gross        BIGINT NOT NULL,
    fee          BIGINT NOT NULL,
    net          BIGINT NOT NULL,
    denom        TEXT,
    tx           TEXT,
    height       BIGINT,
    recorded_at  BIGINT NOT NULL,
    PRIMARY KEY (batch_id, provider)
);
CREATE INDEX settlement_payouts_by_provider ON settlement_payouts (provider, batch_id);

-- Slashes asked of the contract: an outbox like the batches. A row is written `pending`, posted by
-- the leader, and becomes `posted` (with what the contract took) or `failed` (the contract's
-- reason). `amount` is a decimal string of micro-units: a stake may exceed 64 bits.
CREATE TABLE settlement_slashes (
    id            TEXT PRIMARY KEY,
    operator      TEXT NOT NULL,
    reason        TEXT NOT NULL CHECK (reason IN ('fraud', 'cheating', 'downtime')),
    evidence      TEXT NOT NULL,
    state         TEXT NOT NULL CHECK (state IN ('pending', 'posted', 'failed')),
    amount        TEXT,
    jailed_until  BIGINT,
    tx            TEXT,
    height        BIGINT,
    requested_at  BIGINT NOT NULL,
    posted_at     BIGINT,
    attempts      BIGINT NOT NULL DEFAULT 0,
    last_error    TEXT
);
CREATE INDEX settlement_slashes_by_state ON settlement_slashes (state, id);
CREATE INDEX settlement_slashes_by_operator ON settlement_slashes (operator, id);
