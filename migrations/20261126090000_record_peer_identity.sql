-- Callers that connect with mTLS are identified by their client certificate
-- as well as by their token: record the certificate's subject (RFC 4514,
-- e.g. 'CN=billing-service,O=Example'). Null when the listener does not
-- require client certificates, as for every call recorded before this.
-- Adding a nullable column rewrites no row, so the append-only triggers are
-- not involved.
ALTER TABLE audit.release_attempts ADD COLUMN peer_identity text;

COMMENT ON COLUMN audit.release_attempts.peer_identity IS
    'Subject (RFC 4514) of the client certificate the caller presented over mTLS; null without mTLS.';

-- The view as before, with peer_identity appended: CREATE OR REPLACE VIEW
-- may only add columns at the end, and queries that select columns by
-- position keep working.
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
    a.peer_identity
FROM audit.release_attempts a
LEFT JOIN LATERAL (
    SELECT *
    FROM audit.release_outcomes o
    WHERE o.call_id = a.call_id
    ORDER BY (o.outcome <> 'unknown') DESC, o.recorded_at DESC
    LIMIT 1
) o ON true;

-- Replacing a view keeps its grants; granting again states them here too.
GRANT SELECT ON audit.release_disk_calls TO zenlayer_gateway, audit_reader;
