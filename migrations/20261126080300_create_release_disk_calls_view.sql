-- One row per call: what security teams query. A call is 'pending' while
-- allowed with no outcome yet; a known outcome (succeeded, failed) wins over
-- an 'unknown' one written by the recovery sweep. Refused calls (denied,
-- invalid) were never forwarded: their outcome is 'failed' with the code
-- the caller got, and their zenlayer_* columns are empty.
CREATE VIEW audit.release_disk_calls AS
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
    o.recorded_by AS outcome_recorded_by
FROM audit.release_attempts a
LEFT JOIN LATERAL (
    SELECT *
    FROM audit.release_outcomes o
    WHERE o.call_id = a.call_id
    ORDER BY (o.outcome <> 'unknown') DESC, o.recorded_at DESC
    LIMIT 1
) o ON true;

COMMENT ON VIEW audit.release_disk_calls IS
    'One row per ReleaseDisk call: who, what, why, when, the decision, and what Zenlayer said.';

-- The gateway writes and reads (recovery, replays) but never changes rows;
-- security readers only read.
GRANT USAGE ON SCHEMA audit TO zenlayer_gateway, audit_reader;
GRANT SELECT, INSERT ON audit.release_attempts, audit.release_outcomes TO zenlayer_gateway;
GRANT SELECT ON audit.release_disk_calls TO zenlayer_gateway;
GRANT SELECT ON audit.release_attempts, audit.release_outcomes, audit.release_disk_calls TO audit_reader;
