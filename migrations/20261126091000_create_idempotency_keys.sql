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

GRANT USAGE ON SCHEMA idempotency TO zenlayer_gateway, audit_reader;
GRANT SELECT, INSERT, DELETE ON idempotency.keys TO zenlayer_gateway;
GRANT SELECT ON idempotency.keys TO audit_reader;

-- A replayed call points at the call whose answer it repeated.
ALTER TABLE audit.release_attempts
    ADD COLUMN replay_of uuid REFERENCES audit.release_attempts (call_id);

-- The ErrorInfo reason the caller got, so a replay can repeat the status
-- exactly (the reason is not always Zenlayer's code).
ALTER TABLE audit.release_outcomes ADD COLUMN error_reason text;

CREATE INDEX release_attempts_replay_of ON audit.release_attempts (replay_of) WHERE replay_of IS NOT NULL;

CREATE OR REPLACE VIEW audit.release_disk_calls AS
SELECT
    a.call_id,
    a.received_at,
    CASE WHEN a.decision = 'allowed' THEN o.completed_at ELSE a.recorded_at END AS completed_at,
    a.principal,
    a.issuer,
    a.client_id,
    a.token_jti,
    a.token_fingerprint,
    a.roles,
    a.peer_addr,
    a.user_agent,
    a.x_request_id,
    a.trace_id,
    a.disk_id,
    a.reason,
    a.idempotency_key,
    a.decision,
    a.decision_reason,
    CASE WHEN a.decision <> 'allowed' THEN 'failed' ELSE COALESCE(o.outcome, 'pending') END AS outcome,
    COALESCE(a.refusal_grpc_code, o.grpc_code) AS grpc_code,
    o.zenlayer_code,
    o.zenlayer_request_id,
    o.http_status,
    COALESCE(a.refusal_message, o.error_message) AS error_message,
    (EXTRACT(EPOCH FROM (
        CASE WHEN a.decision = 'allowed' THEN o.completed_at ELSE a.recorded_at END - a.received_at
    )) * 1000)::bigint AS duration_ms,
    o.recorded_by AS outcome_recorded_by,
    a.peer_identity,
    a.replay_of
FROM audit.release_attempts a
LEFT JOIN LATERAL (
    SELECT *
    FROM audit.release_outcomes o
    WHERE o.call_id = a.call_id
    ORDER BY (o.outcome <> 'unknown') DESC, o.recorded_at DESC
    LIMIT 1
) o ON true;
