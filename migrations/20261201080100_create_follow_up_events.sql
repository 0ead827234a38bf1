-- What the gateway learns about a call after it ended, as append-only events:
--   release_outcomes     gains recorded_by = 'reconciliation': a call whose
--                        outcome was unknown, resolved by asking Zenlayer's
--                        DescribeDisks (not listed: succeeded; still in the
--                        recycle bin: failed);
--   release_confirmations whether an accepted release was seen through:
--                        'confirmed' once DescribeDisks stops listing the
--                        disk, 'not_confirmed' if it is still listed when the
--                        gateway stops looking.
ALTER TABLE audit.release_outcomes
    DROP CONSTRAINT release_outcomes_recorded_by_check,
    ADD CONSTRAINT release_outcomes_recorded_by_check
        CHECK (recorded_by IN ('call', 'recovery', 'reconciliation'));

CREATE TABLE audit.release_confirmations (
    confirmation_id     bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    call_id             uuid        NOT NULL REFERENCES audit.release_attempts (call_id),
    recorded_at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    confirmation        text        NOT NULL CHECK (confirmation IN ('confirmed', 'not_confirmed')),
    -- When the DescribeDisks that decided it was answered, and its requestId.
    checked_at          timestamptz NOT NULL,
    zenlayer_request_id text,
    -- For not_confirmed: the status the disk still had.
    disk_status         text,
    recorded_by         text        NOT NULL CHECK (recorded_by IN ('confirmation', 'reconciliation'))
);

COMMENT ON TABLE audit.release_confirmations IS
    'Whether each accepted release was seen through (the disk no longer listed by DescribeDisks). Append-only.';

-- One verdict per call, however many replicas look.
CREATE UNIQUE INDEX release_confirmations_one_per_call ON audit.release_confirmations (call_id);

CREATE TRIGGER release_confirmations_append_only
    BEFORE UPDATE OR DELETE ON audit.release_confirmations
    FOR EACH ROW EXECUTE FUNCTION audit.refuse_change();
CREATE TRIGGER release_confirmations_no_truncate
    BEFORE TRUNCATE ON audit.release_confirmations
    FOR EACH STATEMENT EXECUTE FUNCTION audit.refuse_change();

-- Succeeded calls by time, for the confirmation sweep; unknown outcomes by
-- time, for reconciliation.
CREATE INDEX release_outcomes_succeeded ON audit.release_outcomes (completed_at)
    WHERE outcome = 'succeeded';
CREATE INDEX release_outcomes_unknown ON audit.release_outcomes (completed_at)
    WHERE outcome = 'unknown';

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
    a.peer_identity,
    a.user_agent,
    a.x_request_id,
    a.trace_id,
    a.disk_id,
    a.reason,
    a.idempotency_key,
    a.replay_of,
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
    o.zenlayer_action,
    a.disk_name,
    a.zone_id,
    a.disk_size_gib,
    a.disk_type,
    a.disk_status_before,
    a.disk_tags,
    a.disk_snapshot,
    -- Only an accepted release (not a replay of one) is confirmed.
    CASE
        WHEN c.confirmation IS NOT NULL THEN c.confirmation
        WHEN o.outcome = 'succeeded' AND a.replay_of IS NULL THEN 'pending'
    END AS confirmation,
    CASE WHEN c.confirmation = 'confirmed' THEN c.checked_at END AS confirmed_at
FROM audit.release_attempts a
LEFT JOIN LATERAL (
    SELECT *
    FROM audit.release_outcomes o
    WHERE o.call_id = a.call_id
    ORDER BY (o.outcome <> 'unknown') DESC, o.recorded_at DESC
    LIMIT 1
) o ON true
LEFT JOIN audit.release_confirmations c ON c.call_id = a.call_id;

GRANT SELECT, INSERT ON audit.release_confirmations TO zenlayer_gateway;
GRANT SELECT ON audit.release_confirmations TO audit_reader;
