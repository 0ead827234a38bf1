-- The same log, the same leaves, cheaper: these functions run for every
-- audit event, and at the benchmark's load they were most of what the
-- database spent on a call. Measured on a 2-core machine, per statement of
-- a batch's attempts:
--
-- take_indexes was an SQL function, planned afresh on every call (32 µs);
-- in PL/pgSQL its plan lasts the session (15 µs).
CREATE OR REPLACE FUNCTION audit.take_indexes(n bigint) RETURNS bigint
    LANGUAGE plpgsql AS $$
DECLARE
    first_index bigint;
BEGIN
    UPDATE audit.log_head SET size = size + n RETURNING size - n INTO first_index;
    RETURN first_index;
END
$$;

-- attempt_leaf encoded its three text[] columns with subqueries, which
-- made its expression one PL/pgSQL cannot evaluate on its fast path: every
-- leaf ran the whole executor (45 µs a row). With the arrays encoded by the
-- function below, the rest of the expression is simple (9 µs a row). The
-- bytes are exactly as before (README, "The event log"): a text[] is its
-- element count (4 bytes, big-endian), then each element as a field, NULL
-- as 0x00, the whole as one field.
CREATE FUNCTION audit.text_array_field(a text[]) RETURNS bytea
    LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    elements bytea;
    e text;
    b bytea;
BEGIN
    IF a IS NULL THEN
        RETURN '\x00'::bytea;
    END IF;
    elements := int4send(coalesce(cardinality(a), 0));
    -- FOREACH visits the elements in storage order, as unnest does.
    FOREACH e IN ARRAY a LOOP
        IF e IS NULL THEN
            elements := elements || '\x00'::bytea;
        ELSE
            b := convert_to(e, 'UTF8');
            elements := elements || '\x01'::bytea || int4send(length(b)) || b;
        END IF;
    END LOOP;
    RETURN '\x01'::bytea || int4send(length(elements)) || elements;
END
$$;

CREATE OR REPLACE FUNCTION audit.attempt_leaf(log_index bigint, r audit.release_attempts)
 RETURNS bytea
    LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN convert_to('zenlayer-gateway/attempt/v1' || chr(10), 'UTF8')
        || '\x01'::bytea || int4send(8) || int8send(log_index)
        || CASE WHEN r.call_id IS NULL THEN '\x00'::bytea ELSE '\x01'::bytea || int4send(length(uuid_send(r.call_id))) || uuid_send(r.call_id) END
        || CASE WHEN r.received_at IS NULL THEN '\x00'::bytea ELSE '\x01'::bytea || int4send(length(int8send((extract(epoch FROM r.received_at) * 1000000)::bigint))) || int8send((extract(epoch FROM r.received_at) * 1000000)::bigint) END
        || CASE WHEN r.recorded_at IS NULL THEN '\x00'::bytea ELSE '\x01'::bytea || int4send(length(int8send((extract(epoch FROM r.recorded_at) * 1000000)::bigint))) || int8send((extract(epoch FROM r.recorded_at) * 1000000)::bigint) END
        || CASE WHEN r.principal IS NULL THEN '\x00'::bytea ELSE '\x01'::bytea || int4send(length(convert_to(r.principal, 'UTF8'))) || convert_to(r.principal, 'UTF8') END
        || CASE WHEN r.issuer IS NULL THEN '\x00'::bytea ELSE '\x01'::bytea || int4send(length(convert_to(r.issuer, 'UTF8'))) || convert_to(r.issuer, 'UTF8') END
        || CASE WHEN r.client_id IS NULL THEN '\x00'::bytea ELSE '\x01'::bytea || int4send(length(convert_to(r.client_id, 'UTF8'))) || convert_to(r.client_id, 'UTF8') END
        || CASE WHEN r.token_jti IS NULL THEN '\x00'::bytea ELSE '\x01'::bytea || int4send(length(convert_to(r.token_jti, 'UTF8'))) || convert_to(r.token_jti, 'UTF8') END
        || CASE WHEN r.token_fingerprint IS NULL THEN '\x00'::bytea ELSE '\x01'::bytea || int4send(length(convert_to(r.token_fingerprint, 'UTF8'))) || convert_to(r.token_fingerprint, 'UTF8') END
        || audit.text_array_field(r.roles)
        || CASE WHEN r.peer_addr IS NULL THEN '\x00'::bytea ELSE '\x01'::bytea || int4send(length(convert_to(r.peer_addr, 'UTF8'))) || convert_to(r.peer_addr, 'UTF8') END
        || CASE WHEN r.peer_identity IS NULL THEN '\x00'::bytea ELSE '\x01'::bytea || int4send(length(convert_to(r.peer_identity, 'UTF8'))) || convert_to(r.peer_identity, 'UTF8') END
        || CASE WHEN r.user_agent IS NULL THEN '\x00'::bytea ELSE '\x01'::bytea || int4send(length(convert_to(r.user_agent, 'UTF8'))) || convert_to(r.user_agent, 'UTF8') END
        || CASE WHEN r.x_request_id IS NULL THEN '\x00'::bytea ELSE '\x01'::bytea || int4send(length(convert_to(r.x_request_id, 'UTF8'))) || convert_to(r.x_request_id, 'UTF8') END
        || CASE WHEN r.trace_id IS NULL THEN '\x00'::bytea ELSE '\x01'::bytea || int4send(length(convert_to(r.trace_id, 'UTF8'))) || convert_to(r.trace_id, 'UTF8') END
        || CASE WHEN r.disk_id IS NULL THEN '\x00'::bytea ELSE '\x01'::bytea || int4send(length(convert_to(r.disk_id, 'UTF8'))) || convert_to(r.disk_id, 'UTF8') END
        || CASE WHEN r.reason IS NULL THEN '\x00'::bytea ELSE '\x01'::bytea || int4send(length(convert_to(r.reason, 'UTF8'))) || convert_to(r.reason, 'UTF8') END
        || CASE WHEN r.idempotency_key IS NULL THEN '\x00'::bytea ELSE '\x01'::bytea || int4send(length(convert_to(r.idempotency_key, 'UTF8'))) || convert_to(r.idempotency_key, 'UTF8') END
        || CASE WHEN r.replay_of IS NULL THEN '\x00'::bytea ELSE '\x01'::bytea || int4send(length(uuid_send(r.replay_of))) || uuid_send(r.replay_of) END
        || CASE WHEN r.decision IS NULL THEN '\x00'::bytea ELSE '\x01'::bytea || int4send(length(convert_to(r.decision, 'UTF8'))) || convert_to(r.decision, 'UTF8') END
        || CASE WHEN r.decision_reason IS NULL THEN '\x00'::bytea ELSE '\x01'::bytea || int4send(length(convert_to(r.decision_reason, 'UTF8'))) || convert_to(r.decision_reason, 'UTF8') END
        || CASE WHEN r.refusal_grpc_code IS NULL THEN '\x00'::bytea ELSE '\x01'::bytea || int4send(length(convert_to(r.refusal_grpc_code, 'UTF8'))) || convert_to(r.refusal_grpc_code, 'UTF8') END
        || CASE WHEN r.refusal_message IS NULL THEN '\x00'::bytea ELSE '\x01'::bytea || int4send(length(convert_to(r.refusal_message, 'UTF8'))) || convert_to(r.refusal_message, 'UTF8') END
        || CASE WHEN r.disk_snapshot IS NULL THEN '\x00'::bytea ELSE '\x01'::bytea || int4send(length(convert_to(r.disk_snapshot::text, 'UTF8'))) || convert_to(r.disk_snapshot::text, 'UTF8') END
        || CASE WHEN r.disk_name IS NULL THEN '\x00'::bytea ELSE '\x01'::bytea || int4send(length(convert_to(r.disk_name, 'UTF8'))) || convert_to(r.disk_name, 'UTF8') END
        || CASE WHEN r.zone_id IS NULL THEN '\x00'::bytea ELSE '\x01'::bytea || int4send(length(convert_to(r.zone_id, 'UTF8'))) || convert_to(r.zone_id, 'UTF8') END
        || CASE WHEN r.disk_size_gib IS NULL THEN '\x00'::bytea ELSE '\x01'::bytea || int4send(length(int8send(r.disk_size_gib::bigint))) || int8send(r.disk_size_gib::bigint) END
        || CASE WHEN r.disk_type IS NULL THEN '\x00'::bytea ELSE '\x01'::bytea || int4send(length(convert_to(r.disk_type, 'UTF8'))) || convert_to(r.disk_type, 'UTF8') END
        || CASE WHEN r.disk_status_before IS NULL THEN '\x00'::bytea ELSE '\x01'::bytea || int4send(length(convert_to(r.disk_status_before, 'UTF8'))) || convert_to(r.disk_status_before, 'UTF8') END
        || CASE WHEN r.disk_tags IS NULL THEN '\x00'::bytea ELSE '\x01'::bytea || int4send(length(convert_to(r.disk_tags::text, 'UTF8'))) || convert_to(r.disk_tags::text, 'UTF8') END
        || CASE WHEN r.policy_set_hash IS NULL THEN '\x00'::bytea ELSE '\x01'::bytea || int4send(length(convert_to(r.policy_set_hash, 'UTF8'))) || convert_to(r.policy_set_hash, 'UTF8') END
        || CASE WHEN r.policy_decision IS NULL THEN '\x00'::bytea ELSE '\x01'::bytea || int4send(length(convert_to(r.policy_decision, 'UTF8'))) || convert_to(r.policy_decision, 'UTF8') END
        || audit.text_array_field(r.policy_ids)
        || CASE WHEN r.shadow_policy_set_hash IS NULL THEN '\x00'::bytea ELSE '\x01'::bytea || int4send(length(convert_to(r.shadow_policy_set_hash, 'UTF8'))) || convert_to(r.shadow_policy_set_hash, 'UTF8') END
        || CASE WHEN r.shadow_policy_decision IS NULL THEN '\x00'::bytea ELSE '\x01'::bytea || int4send(length(convert_to(r.shadow_policy_decision, 'UTF8'))) || convert_to(r.shadow_policy_decision, 'UTF8') END
        || audit.text_array_field(r.shadow_policy_ids)
        ;
END
$$;

-- Every row of audit.events is written by the numbering triggers, as the
-- schema's owner, for a row being inserted in the same statement, so its
-- foreign key to the attempts held by construction; checking it took a row
-- lock on the attempt (and a WAL record) for every event, about 5 µs each.
-- An event whose row is missing is what `audit verify` reports as
-- RowMissing, and the audit rows themselves cannot be deleted.
ALTER TABLE audit.events DROP CONSTRAINT events_call_id_fkey;
