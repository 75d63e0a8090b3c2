-- API keys are revoked, not deleted, so `agora admin key list` keeps showing who had which key
-- and when it stopped working. A revoked key authenticates nothing from the moment this is set.
ALTER TABLE api_keys ADD COLUMN revoked_at INTEGER;

-- `agora admin key revoke PREFIX` finds keys by the prefix people see.
CREATE INDEX api_keys_prefix ON api_keys (prefix);
