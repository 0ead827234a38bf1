-- What the policies decided about each call, recorded with its attempt:
-- the hash of the policy set in force (every call), the enforced decision
-- and the ids of the policies that made it, and the same for the shadow
-- set when one is configured. The decision columns are NULL for calls
-- refused or answered before the policies were asked (a bad token, an
-- invalid request, a replayed idempotency key, DescribeDisks unavailable)
-- and for calls before this migration.
ALTER TABLE audit.release_attempts
    ADD COLUMN policy_set_hash        text,
    ADD COLUMN policy_decision        text
        CHECK (policy_decision IN ('permit', 'deny', 'error')),
    ADD COLUMN policy_ids             text[],
    ADD COLUMN shadow_policy_set_hash text,
    ADD COLUMN shadow_policy_decision text
        CHECK (shadow_policy_decision IN ('permit', 'deny', 'error')),
    ADD COLUMN shadow_policy_ids      text[];

CREATE INDEX release_attempts_policy_decision ON audit.release_attempts (policy_decision, received_at DESC)
    WHERE policy_decision IS NOT NULL;

-- The view, whole, with the policy columns at its end.
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
    CASE WHEN c.confirmation = 'confirmed' THEN c.checked_at END AS confirmed_at,
    a.policy_set_hash,
    a.policy_decision,
    a.policy_ids,
    a.shadow_policy_set_hash,
    a.shadow_policy_decision,
    a.shadow_policy_ids
FROM audit.release_attempts a
LEFT JOIN LATERAL (
    SELECT *
    FROM audit.release_outcomes o
    WHERE o.call_id = a.call_id
    ORDER BY (o.outcome <> 'unknown') DESC, o.recorded_at DESC
    LIMIT 1
) o ON true
LEFT JOIN audit.release_confirmations c ON c.call_id = a.call_id;
