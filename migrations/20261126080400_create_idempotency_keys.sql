-- Idempotency keys: which call first used a caller's key. PostgreSQL is the
-- one arbiter, so a key claimed through one replica is seen by all. Unlike
-- the audit tables, rows here are purged after the retention period; the
-- calls they point to stay in the audit trail for good.
CREATE SCHEMA IF NOT EXISTS idempotency;

CREATE TABLE idempotency.keys (
    -- The key's scope is the caller: two callers may use the same key.
    issuer           text        NOT NULL,
    principal        text        NOT NULL,
    idempotency_key  text        NOT NULL,
    -- What the key was first used for; reuse for another disk is refused.
    disk_id          text        NOT NULL,
    call_id          uuid        NOT NULL REFERENCES audit.release_attempts (call_id),
    claimed_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (issuer, principal, idempotency_key)
);

CREATE INDEX keys_claimed_at ON idempotency.keys (claimed_at);
CREATE INDEX keys_call_id ON idempotency.keys (call_id);

COMMENT ON TABLE idempotency.keys IS
    'Which call first used each (issuer, principal, idempotency_key); purged after IDEMPOTENCY_RETENTION_HOURS.';

-- The gateway claims, reads and frees keys; audit_reader is kept to the
-- audit schema (the calls keys point to are all there).
GRANT USAGE ON SCHEMA idempotency TO zenlayer_gateway;
GRANT SELECT, INSERT, DELETE ON idempotency.keys TO zenlayer_gateway;
