-- What the gateway saw of a disk before releasing it (the pre-flight
-- DescribeDisks), recorded with the call's attempt: once a disk is released,
-- Zenlayer can no longer say what it was. `disk_snapshot` is the entry
-- exactly as Zenlayer returned it; the typed columns are read out of it for
-- the questions security teams ask. All are NULL for calls refused before
-- the pre-flight, calls made while it is turned off, and calls before it.
ALTER TABLE audit.release_attempts
    ADD COLUMN disk_snapshot      jsonb,
    ADD COLUMN disk_name          text,
    ADD COLUMN zone_id            text,
    ADD COLUMN disk_size_gib      bigint,
    ADD COLUMN disk_type          text,
    ADD COLUMN disk_status_before text,
    ADD COLUMN disk_tags          jsonb;

-- Which Zenlayer action an outcome's requestId and HTTP status belong to:
-- ReleaseDisk, or DescribeDisks when the pre-flight decided the call.
ALTER TABLE audit.release_outcomes
    ADD COLUMN zenlayer_action text;

CREATE INDEX release_attempts_zone_id ON audit.release_attempts (zone_id, received_at DESC)
    WHERE zone_id IS NOT NULL;
CREATE INDEX release_attempts_disk_tags ON audit.release_attempts USING gin (disk_tags)
    WHERE disk_tags IS NOT NULL;

-- The view gains the snapshot's columns at its end (CREATE OR REPLACE keeps
-- the columns it had, in their order).
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
    a.disk_snapshot
FROM audit.release_attempts a
LEFT JOIN LATERAL (
    SELECT *
    FROM audit.release_outcomes o
    WHERE o.call_id = a.call_id
    ORDER BY (o.outcome <> 'unknown') DESC, o.recorded_at DESC
    LIMIT 1
) o ON true;
