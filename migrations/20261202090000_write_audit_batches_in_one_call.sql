-- A batch of audit records, written and numbered in one round trip.
--
-- The gateway wrote a batch with one statement, then read back in a second
-- statement the log indexes its attempts were given (each caller's
-- receipt): the log numbers a statement's rows in an AFTER STATEMENT
-- trigger, which runs once the statement's own result is made, so that
-- statement cannot return them. Each trip to the database wakes its backend
-- and then the gateway, and on the machines we measured a wake-up costs
-- more CPU than the statement's work when calls are few; a lone call paid
-- for two such trips. This function makes the same statement, then reads
-- the indexes its triggers gave, in one call.
--
-- It runs with its caller's rights (SECURITY INVOKER): it can do nothing
-- the gateway's role cannot do with the statement itself, and the
-- numbering triggers run exactly as before. Its tables are named with
-- their schemas, so the caller's search_path cannot change what it writes.
--
-- The statement, as it was: claims the keys, stores the attempts whose
-- claims were won (and those without keys), stores the outcomes (skipping
-- any already stored, so a retried write is a no-op), and frees the keys
-- of calls Zenlayer certainly did not act on. The key claims come first so
-- that a lost claim stores nothing; the keys' reference to their attempts
-- is checked at the end of the statement. Two claims of one key in a
-- batch: the first wins. A claim of a key another transaction holds waits
-- for it to end. Returns each stored attempt with its log index.
CREATE FUNCTION audit.write_batch(
    claim_issuers text[], claim_principals text[], claim_keys text[], claim_disk_ids text[],
    claim_call_ids uuid[],
    attempt_call_ids uuid[], attempt_received_at timestamptz[], attempt_principals text[],
    attempt_issuers text[], attempt_client_ids text[], attempt_token_jtis text[],
    attempt_token_fingerprints text[], attempt_roles jsonb[], attempt_peer_addrs text[],
    attempt_user_agents text[], attempt_x_request_ids text[], attempt_trace_ids text[],
    attempt_disk_ids text[], attempt_reasons text[], attempt_idempotency_keys text[],
    attempt_decisions text[], attempt_decision_reasons text[], attempt_refusal_grpc_codes text[],
    attempt_refusal_messages text[], attempt_replays_of uuid[], attempt_peer_identities text[],
    attempt_disk_snapshots jsonb[], attempt_disk_names text[], attempt_zone_ids text[],
    attempt_disk_sizes_gib int8[], attempt_disk_types text[], attempt_disk_statuses_before text[],
    attempt_disk_tags jsonb[], attempt_claims_keys bool[],
    outcome_call_ids uuid[], outcome_completed_at timestamptz[], outcome_outcomes text[],
    outcome_grpc_codes text[], outcome_error_reasons text[], outcome_zenlayer_codes text[],
    outcome_zenlayer_request_ids text[], outcome_http_statuses int4[],
    outcome_error_messages text[], outcome_zenlayer_actions text[],
    freed_call_ids uuid[],
    attempt_policy_set_hashes text[], attempt_policy_decisions text[], attempt_policy_ids jsonb[],
    attempt_shadow_policy_set_hashes text[], attempt_shadow_policy_decisions text[],
    attempt_shadow_policy_ids jsonb[])
    RETURNS TABLE (stored_call_id uuid, stored_log_index bigint)
    LANGUAGE plpgsql SECURITY INVOKER AS $$
DECLARE
    stored uuid[];
BEGIN
    WITH claimed AS (
      INSERT INTO idempotency.keys (issuer, principal, idempotency_key, disk_id, call_id)
      SELECT * FROM unnest(claim_issuers, claim_principals, claim_keys,
                                      claim_disk_ids, claim_call_ids)
      ON CONFLICT DO NOTHING
      RETURNING call_id
    ), attempts AS (
      INSERT INTO audit.release_attempts (
          call_id, received_at, principal, issuer, client_id, token_jti, token_fingerprint,
          roles, peer_addr, user_agent, x_request_id, trace_id, disk_id, reason,
          idempotency_key, decision, decision_reason, refusal_grpc_code, refusal_message,
          replay_of, peer_identity, disk_snapshot, disk_name, zone_id, disk_size_gib,
          disk_type, disk_status_before, disk_tags, policy_set_hash, policy_decision,
          policy_ids, shadow_policy_set_hash, shadow_policy_decision, shadow_policy_ids)
      SELECT r.call_id, r.received_at, r.principal, r.issuer, r.client_id, r.token_jti,
             r.token_fingerprint,
             ARRAY(SELECT jsonb_array_elements_text(r.roles)),
             r.peer_addr, r.user_agent, r.x_request_id, r.trace_id, r.disk_id, r.reason,
             r.idempotency_key, r.decision, r.decision_reason, r.refusal_grpc_code,
             r.refusal_message, r.replay_of, r.peer_identity, r.disk_snapshot, r.disk_name,
             r.zone_id, r.disk_size_gib, r.disk_type, r.disk_status_before, r.disk_tags,
             r.policy_set_hash, r.policy_decision,
             CASE WHEN r.policy_ids IS NOT NULL
                  THEN ARRAY(SELECT jsonb_array_elements_text(r.policy_ids)) END,
             r.shadow_policy_set_hash, r.shadow_policy_decision,
             CASE WHEN r.shadow_policy_ids IS NOT NULL
                  THEN ARRAY(SELECT jsonb_array_elements_text(r.shadow_policy_ids)) END
      FROM unnest(
               attempt_call_ids, attempt_received_at, attempt_principals, attempt_issuers,
               attempt_client_ids, attempt_token_jtis, attempt_token_fingerprints,
               attempt_roles, attempt_peer_addrs, attempt_user_agents, attempt_x_request_ids,
               attempt_trace_ids, attempt_disk_ids, attempt_reasons, attempt_idempotency_keys,
               attempt_decisions, attempt_decision_reasons, attempt_refusal_grpc_codes,
               attempt_refusal_messages, attempt_replays_of, attempt_peer_identities,
               attempt_disk_snapshots, attempt_disk_names, attempt_zone_ids,
               attempt_disk_sizes_gib, attempt_disk_types, attempt_disk_statuses_before,
               attempt_disk_tags, attempt_policy_set_hashes, attempt_policy_decisions,
               attempt_policy_ids, attempt_shadow_policy_set_hashes,
               attempt_shadow_policy_decisions, attempt_shadow_policy_ids,
               attempt_claims_keys)
           AS r(call_id, received_at, principal, issuer, client_id, token_jti,
                token_fingerprint, roles, peer_addr, user_agent, x_request_id, trace_id,
                disk_id, reason, idempotency_key, decision, decision_reason,
                refusal_grpc_code, refusal_message, replay_of, peer_identity,
                disk_snapshot, disk_name, zone_id, disk_size_gib, disk_type,
                disk_status_before, disk_tags, policy_set_hash, policy_decision,
                policy_ids, shadow_policy_set_hash, shadow_policy_decision,
                shadow_policy_ids, claims_key)
      WHERE NOT r.claims_key OR r.call_id IN (SELECT call_id FROM claimed)
      RETURNING call_id
    ), outcomes AS (
      INSERT INTO audit.release_outcomes (
          call_id, completed_at, outcome, grpc_code, error_reason, zenlayer_code,
          zenlayer_request_id, http_status, error_message, zenlayer_action, recorded_by)
      SELECT *, 'call' FROM unnest(
          outcome_call_ids, outcome_completed_at, outcome_outcomes, outcome_grpc_codes,
          outcome_error_reasons, outcome_zenlayer_codes, outcome_zenlayer_request_ids,
          outcome_http_statuses, outcome_error_messages, outcome_zenlayer_actions)
      ON CONFLICT DO NOTHING
      RETURNING call_id
    ), freed AS (
      -- Usually there is nothing to free: the second condition is then
      -- decided once, and the table is not read at all (a plan made while
      -- the table had no statistics would scan it all).
      DELETE FROM idempotency.keys
      WHERE call_id = ANY(freed_call_ids) AND cardinality(freed_call_ids) > 0
      RETURNING call_id
    )
    -- (Every part runs to completion, whatever the query reads.)
    SELECT array_agg(call_id) INTO stored FROM attempts;
    -- The statement has ended, so its numbering triggers have run. (A
    -- batch of outcomes alone has no receipts to read.)
    IF stored IS NOT NULL THEN
        RETURN QUERY
            SELECT e.call_id, e.log_index FROM audit.events e
            WHERE e.kind = 'attempt' AND e.call_id = ANY(stored);
    END IF;
END
$$;

COMMENT ON FUNCTION audit.write_batch IS
    'Writes one batch of the gateway''s audit records (key claims, attempts, outcomes, freed keys) in one statement, then returns each stored attempt with the log index its numbering trigger gave it.';

REVOKE ALL ON FUNCTION audit.write_batch FROM PUBLIC;
GRANT EXECUTE ON FUNCTION audit.write_batch TO zenlayer_gateway;
