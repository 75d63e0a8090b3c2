-- Node identity (issue 4): the secp256k1 public key a node proved it holds when it registered
-- (compressed SEC1 point, lowercase hex). A name stays bound to the key that first registered it;
-- nodes registered before keys existed have none and bind to the key of their next registration.
ALTER TABLE nodes ADD COLUMN public_key TEXT;

-- Registration challenges: nonces the hub issued for one public key, each accepted once, until
-- expires_at (Unix milliseconds). Expired rows are deleted whenever a challenge is issued.
CREATE TABLE registration_challenges (
    challenge   TEXT PRIMARY KEY,
    public_key  TEXT NOT NULL,
    expires_at  INTEGER NOT NULL
);
CREATE INDEX registration_challenges_by_expiry ON registration_challenges (expires_at);
