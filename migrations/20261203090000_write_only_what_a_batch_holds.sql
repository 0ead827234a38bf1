-- A batch's statement does only what the batch holds.
--
-- audit.write_batch made one statement of every part (claims, attempts,
-- outcomes, freed keys), whatever the batch held, and each table's
-- numbering trigger runs once per statement even when its part added no
-- row. With few calls in flight a batch holds one kind of record, and the
-- parts it did not need (running the empty parts, the other table's
-- trigger) cost the database a tenth to a quarter of the batch: timed
-- inside PostgreSQL on a 2-core machine, a batch of one attempt took 708
-- µs before and 629 µs after, a batch of one outcome 525 µs and 388 µs. A
-- lone call pays for two batches.
--
-- Now each part runs only when the batch has records for it, in this
-- order: key claims and attempts (one statement, so that a lost claim
-- stores nothing, as before), outcomes, freed keys. What changes besides
-- the cost:
-- - Within a batch, attempts are numbered before outcomes (they were
--   numbered at the end of one statement, in an order nothing promised).
--   The log's order is still commit order, without gaps.
-- - Keys are freed after the batch's claims, in their own statement, so
--   the delete would see a key claimed in the same batch. (No batch holds
--   both: a key is freed by its call's outcome, which is written only
--   after the batch holding the call's attempt has committed.)
-- Everything else is as the function it replaces says (see
-- 20261202090000_write_audit_batches_in_one_call.sql): the caller's rights,
-- tables named with their schemas, a retried outcome skipped, each stored
-- attempt returned with its log index.

CREATE OR REPLACE FUNCTION audit.write_batch(
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
    IF cardinality(attempt_call_ids) > 0 THEN
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
        )
        SELECT array_agg(call_id) INTO stored FROM attempts;
    END IF;
    IF cardinality(outcome_call_ids) > 0 THEN
        INSERT INTO audit.release_outcomes (
            call_id, completed_at, outcome, grpc_code, error_reason, zenlayer_code,
            zenlayer_request_id, http_status, error_message, zenlayer_action, recorded_by)
        SELECT *, 'call' FROM unnest(
            outcome_call_ids, outcome_completed_at, outcome_outcomes, outcome_grpc_codes,
            outcome_error_reasons, outcome_zenlayer_codes, outcome_zenlayer_request_ids,
            outcome_http_statuses, outcome_error_messages, outcome_zenlayer_actions)
        ON CONFLICT DO NOTHING;
    END IF;
    IF cardinality(freed_call_ids) > 0 THEN
        DELETE FROM idempotency.keys WHERE call_id = ANY(freed_call_ids);
    END IF;
    -- Each statement has ended, so its numbering trigger has run.
    IF stored IS NOT NULL THEN
        RETURN QUERY
            SELECT e.call_id, e.log_index FROM audit.events e
            WHERE e.kind = 'attempt' AND e.call_id = ANY(stored);
    END IF;
END
$$;
