-- Leases elect the one replica that runs the scheduling, pricing and liveness loops when several
-- hubs share this database. `epoch` grows by one each time the lease changes hands, so it is a
-- fencing token: a write made under an epoch the lease no longer has is refused.
-- `expires_at` is Unix milliseconds; a holder keeps the lease by renewing it before then.
CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    epoch BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
