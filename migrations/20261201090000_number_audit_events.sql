-- One log of every audit event, in commit order, with no gaps, and a
-- Merkle tree over it (RFC 6962 / RFC 9162 hashing) that signed checkpoints
-- commit to, so that a changed, removed, added or reordered row is caught
-- by anyone who kept a checkpoint, whoever changed it.
--
-- Every row added to release_attempts, release_outcomes and
-- release_confirmations, by whoever adds it (a call, a sweep, a
-- reconciliation, any replica), gets the next index of audit.events, which
-- names the row. The indexes are taken from the one row of audit.log_head
-- in the inserting transaction, by a trigger that runs after the statement
-- with the rows it really added (so a row that ON CONFLICT skips takes none):
--   gap-free     a transaction that rolls back rolls its indexes back too;
--   commit order the counter row stays locked until the transaction ends,
--                so a later transaction's indexes always follow an earlier
--                one's, across every replica writing to this database.
-- The cost is that audit transactions queue on that row from their first
-- insert to their commit; the gateway writes its events in batches of many
-- rows per transaction, which keeps that queue short.
--
-- Exporters read audit.events in log_index order and resume after the last
-- index they saw, neither skipping nor repeating events.
--
-- Each event is also a leaf: its bytes (audit.*_leaf, specified in README,
-- "The event log") are hashed, and audit.log_nodes keeps the hash of every
-- complete subtree (level 0: the leaves), so that a root or a proof for any
-- tree size takes O(log n) rows, never a scan of the leaves. A new leaf
-- adds its hash and the subtrees it completes: two rows on average.

CREATE TABLE audit.log_head (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    -- How many events the log holds; the next event's index.
    size      bigint  NOT NULL CHECK (size >= 0)
);

CREATE TABLE audit.events (
    log_index   bigint      PRIMARY KEY CHECK (log_index >= 0),
    kind        text        NOT NULL CHECK (kind IN ('attempt', 'outcome', 'confirmation')),
    call_id     uuid        NOT NULL REFERENCES audit.release_attempts (call_id),
    -- The row's own id: outcome_id or confirmation_id (an attempt is named
    -- by its call_id).
    row_id      bigint,
    recorded_at timestamptz NOT NULL,
    CHECK ((kind = 'attempt') = (row_id IS NULL))
);

COMMENT ON TABLE audit.events IS
    'Every audit event in commit order: log_index is gap-free and names one row of release_attempts, release_outcomes or release_confirmations. Append-only.';

CREATE INDEX events_call_id ON audit.events (call_id);
CREATE UNIQUE INDEX events_one_per_row ON audit.events (kind, row_id) WHERE row_id IS NOT NULL;
CREATE UNIQUE INDEX events_one_per_attempt ON audit.events (call_id) WHERE kind = 'attempt';

CREATE TRIGGER events_append_only
    BEFORE UPDATE OR DELETE ON audit.events
    FOR EACH ROW EXECUTE FUNCTION audit.refuse_change();
CREATE TRIGGER events_no_truncate
    BEFORE TRUNCATE ON audit.events
    FOR EACH STATEMENT EXECUTE FUNCTION audit.refuse_change();
CREATE TRIGGER log_head_no_delete
    BEFORE DELETE ON audit.log_head
    FOR EACH ROW EXECUTE FUNCTION audit.refuse_change();
CREATE TRIGGER log_head_no_truncate
    BEFORE TRUNCATE ON audit.log_head
    FOR EACH STATEMENT EXECUTE FUNCTION audit.refuse_change();

-- The events already recorded, in the order they were recorded.
INSERT INTO audit.events (log_index, kind, call_id, row_id, recorded_at)
SELECT row_number() OVER (ORDER BY recorded_at, rank, row_id NULLS FIRST, call_id) - 1,
       kind, call_id, row_id, recorded_at
FROM (
    SELECT 'attempt' AS kind, call_id, NULL::bigint AS row_id, recorded_at, 0 AS rank
    FROM audit.release_attempts
    UNION ALL
    SELECT 'outcome', call_id, outcome_id, recorded_at, 1 FROM audit.release_outcomes
    UNION ALL
    SELECT 'confirmation', call_id, confirmation_id, recorded_at, 2 FROM audit.release_confirmations
) existing;

INSERT INTO audit.log_head (size) SELECT count(*) FROM audit.events;

-- The leaf bytes of each kind of event (README, "The event log", specifies
-- them): a tag line naming the kind and the version of its encoding, then
-- the event's log index and every column of the row, in table order, each
-- as a field: NULL is 0x00; a value is 0x01, its length in bytes (4 bytes,
-- big-endian), then its bytes. Text is UTF-8; a uuid its 16 bytes; an
-- instant microseconds since 1970-01-01T00:00:00Z and a whole number, each
-- as 8 bytes big-endian; jsonb the UTF-8 of its text form (column::text);
-- a text[] its element count (4 bytes, big-endian), then each element as a
-- field. Written out field by field rather than through helper functions
-- (ten times faster), and in PL/pgSQL, whose plan of the expression lasts
-- the session (an SQL function this size would be planned anew for every
-- statement that adds events).
CREATE FUNCTION audit.attempt_leaf(log_index bigint, r audit.release_attempts) RETURNS bytea
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
        || CASE WHEN r.roles IS NULL THEN '\x00'::bytea ELSE '\x01'::bytea
           || int4send(length(int4send(coalesce(cardinality(r.roles), 0)) || coalesce((SELECT string_agg(CASE WHEN e IS NULL THEN '\x00'::bytea ELSE '\x01'::bytea || int4send(length(convert_to(e, 'UTF8'))) || convert_to(e, 'UTF8') END, ''::bytea ORDER BY n) FROM unnest(r.roles) WITH ORDINALITY AS u(e, n)), ''::bytea)))
           || int4send(coalesce(cardinality(r.roles), 0)) || coalesce((SELECT string_agg(CASE WHEN e IS NULL THEN '\x00'::bytea ELSE '\x01'::bytea || int4send(length(convert_to(e, 'UTF8'))) || convert_to(e, 'UTF8') END, ''::bytea ORDER BY n) FROM unnest(r.roles) WITH ORDINALITY AS u(e, n)), ''::bytea) END  -- roles
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
        || CASE WHEN r.policy_ids IS NULL THEN '\x00'::bytea ELSE '\x01'::bytea
           || int4send(length(int4send(coalesce(cardinality(r.policy_ids), 0)) || coalesce((SELECT string_agg(CASE WHEN e IS NULL THEN '\x00'::bytea ELSE '\x01'::bytea || int4send(length(convert_to(e, 'UTF8'))) || convert_to(e, 'UTF8') END, ''::bytea ORDER BY n) FROM unnest(r.policy_ids) WITH ORDINALITY AS u(e, n)), ''::bytea)))
           || int4send(coalesce(cardinality(r.policy_ids), 0)) || coalesce((SELECT string_agg(CASE WHEN e IS NULL THEN '\x00'::bytea ELSE '\x01'::bytea || int4send(length(convert_to(e, 'UTF8'))) || convert_to(e, 'UTF8') END, ''::bytea ORDER BY n) FROM unnest(r.policy_ids) WITH ORDINALITY AS u(e, n)), ''::bytea) END  -- policy_ids
        || CASE WHEN r.shadow_policy_set_hash IS NULL THEN '\x00'::bytea ELSE '\x01'::bytea || int4send(length(convert_to(r.shadow_policy_set_hash, 'UTF8'))) || convert_to(r.shadow_policy_set_hash, 'UTF8') END
        || CASE WHEN r.shadow_policy_decision IS NULL THEN '\x00'::bytea ELSE '\x01'::bytea || int4send(length(convert_to(r.shadow_policy_decision, 'UTF8'))) || convert_to(r.shadow_policy_decision, 'UTF8') END
        || CASE WHEN r.shadow_policy_ids IS NULL THEN '\x00'::bytea ELSE '\x01'::bytea
           || int4send(length(int4send(coalesce(cardinality(r.shadow_policy_ids), 0)) || coalesce((SELECT string_agg(CASE WHEN e IS NULL THEN '\x00'::bytea ELSE '\x01'::bytea || int4send(length(convert_to(e, 'UTF8'))) || convert_to(e, 'UTF8') END, ''::bytea ORDER BY n) FROM unnest(r.shadow_policy_ids) WITH ORDINALITY AS u(e, n)), ''::bytea)))
           || int4send(coalesce(cardinality(r.shadow_policy_ids), 0)) || coalesce((SELECT string_agg(CASE WHEN e IS NULL THEN '\x00'::bytea ELSE '\x01'::bytea || int4send(length(convert_to(e, 'UTF8'))) || convert_to(e, 'UTF8') END, ''::bytea ORDER BY n) FROM unnest(r.shadow_policy_ids) WITH ORDINALITY AS u(e, n)), ''::bytea) END  -- shadow_policy_ids
        ;
END
$$;

CREATE FUNCTION audit.outcome_leaf(log_index bigint, r audit.release_outcomes) RETURNS bytea
    LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN convert_to('zenlayer-gateway/outcome/v1' || chr(10), 'UTF8')
        || '\x01'::bytea || int4send(8) || int8send(log_index)
        || CASE WHEN r.outcome_id IS NULL THEN '\x00'::bytea ELSE '\x01'::bytea || int4send(length(int8send(r.outcome_id::bigint))) || int8send(r.outcome_id::bigint) END
        || CASE WHEN r.call_id IS NULL THEN '\x00'::bytea ELSE '\x01'::bytea || int4send(length(uuid_send(r.call_id))) || uuid_send(r.call_id) END
        || CASE WHEN r.completed_at IS NULL THEN '\x00'::bytea ELSE '\x01'::bytea || int4send(length(int8send((extract(epoch FROM r.completed_at) * 1000000)::bigint))) || int8send((extract(epoch FROM r.completed_at) * 1000000)::bigint) END
        || CASE WHEN r.recorded_at IS NULL THEN '\x00'::bytea ELSE '\x01'::bytea || int4send(length(int8send((extract(epoch FROM r.recorded_at) * 1000000)::bigint))) || int8send((extract(epoch FROM r.recorded_at) * 1000000)::bigint) END
        || CASE WHEN r.outcome IS NULL THEN '\x00'::bytea ELSE '\x01'::bytea || int4send(length(convert_to(r.outcome, 'UTF8'))) || convert_to(r.outcome, 'UTF8') END
        || CASE WHEN r.grpc_code IS NULL THEN '\x00'::bytea ELSE '\x01'::bytea || int4send(length(convert_to(r.grpc_code, 'UTF8'))) || convert_to(r.grpc_code, 'UTF8') END
        || CASE WHEN r.error_reason IS NULL THEN '\x00'::bytea ELSE '\x01'::bytea || int4send(length(convert_to(r.error_reason, 'UTF8'))) || convert_to(r.error_reason, 'UTF8') END
        || CASE WHEN r.zenlayer_code IS NULL THEN '\x00'::bytea ELSE '\x01'::bytea || int4send(length(convert_to(r.zenlayer_code, 'UTF8'))) || convert_to(r.zenlayer_code, 'UTF8') END
        || CASE WHEN r.zenlayer_request_id IS NULL THEN '\x00'::bytea ELSE '\x01'::bytea || int4send(length(convert_to(r.zenlayer_request_id, 'UTF8'))) || convert_to(r.zenlayer_request_id, 'UTF8') END
        || CASE WHEN r.http_status IS NULL THEN '\x00'::bytea ELSE '\x01'::bytea || int4send(length(int8send(r.http_status::bigint))) || int8send(r.http_status::bigint) END
        || CASE WHEN r.error_message IS NULL THEN '\x00'::bytea ELSE '\x01'::bytea || int4send(length(convert_to(r.error_message, 'UTF8'))) || convert_to(r.error_message, 'UTF8') END
        || CASE WHEN r.recorded_by IS NULL THEN '\x00'::bytea ELSE '\x01'::bytea || int4send(length(convert_to(r.recorded_by, 'UTF8'))) || convert_to(r.recorded_by, 'UTF8') END
        || CASE WHEN r.zenlayer_action IS NULL THEN '\x00'::bytea ELSE '\x01'::bytea || int4send(length(convert_to(r.zenlayer_action, 'UTF8'))) || convert_to(r.zenlayer_action, 'UTF8') END;
END
$$;

CREATE FUNCTION audit.confirmation_leaf(log_index bigint, r audit.release_confirmations) RETURNS bytea
    LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN convert_to('zenlayer-gateway/confirmation/v1' || chr(10), 'UTF8')
        || '\x01'::bytea || int4send(8) || int8send(log_index)
        || CASE WHEN r.confirmation_id IS NULL THEN '\x00'::bytea ELSE '\x01'::bytea || int4send(length(int8send(r.confirmation_id::bigint))) || int8send(r.confirmation_id::bigint) END
        || CASE WHEN r.call_id IS NULL THEN '\x00'::bytea ELSE '\x01'::bytea || int4send(length(uuid_send(r.call_id))) || uuid_send(r.call_id) END
        || CASE WHEN r.recorded_at IS NULL THEN '\x00'::bytea ELSE '\x01'::bytea || int4send(length(int8send((extract(epoch FROM r.recorded_at) * 1000000)::bigint))) || int8send((extract(epoch FROM r.recorded_at) * 1000000)::bigint) END
        || CASE WHEN r.confirmation IS NULL THEN '\x00'::bytea ELSE '\x01'::bytea || int4send(length(convert_to(r.confirmation, 'UTF8'))) || convert_to(r.confirmation, 'UTF8') END
        || CASE WHEN r.checked_at IS NULL THEN '\x00'::bytea ELSE '\x01'::bytea || int4send(length(int8send((extract(epoch FROM r.checked_at) * 1000000)::bigint))) || int8send((extract(epoch FROM r.checked_at) * 1000000)::bigint) END
        || CASE WHEN r.zenlayer_request_id IS NULL THEN '\x00'::bytea ELSE '\x01'::bytea || int4send(length(convert_to(r.zenlayer_request_id, 'UTF8'))) || convert_to(r.zenlayer_request_id, 'UTF8') END
        || CASE WHEN r.disk_status IS NULL THEN '\x00'::bytea ELSE '\x01'::bytea || int4send(length(convert_to(r.disk_status, 'UTF8'))) || convert_to(r.disk_status, 'UTF8') END
        || CASE WHEN r.recorded_by IS NULL THEN '\x00'::bytea ELSE '\x01'::bytea || int4send(length(convert_to(r.recorded_by, 'UTF8'))) || convert_to(r.recorded_by, 'UTF8') END;
END
$$;

-- Hashes of complete subtrees: (level, node_index) covers leaves
-- [node_index * 2^level, (node_index + 1) * 2^level).
CREATE TABLE audit.log_nodes (
    level      smallint NOT NULL CHECK (level BETWEEN 0 AND 62),
    node_index bigint   NOT NULL CHECK (node_index >= 0),
    hash       bytea    NOT NULL CHECK (length(hash) = 32),
    PRIMARY KEY (level, node_index)
);

COMMENT ON TABLE audit.log_nodes IS
    'The Merkle tree over audit.events: SHA-256 of every complete subtree (level 0: leaf hashes, SHA-256(0x00 || leaf bytes)). Append-only.';

CREATE TRIGGER log_nodes_append_only
    BEFORE UPDATE OR DELETE ON audit.log_nodes
    FOR EACH ROW EXECUTE FUNCTION audit.refuse_change();
CREATE TRIGGER log_nodes_no_truncate
    BEFORE TRUNCATE ON audit.log_nodes
    FOR EACH STATEMENT EXECUTE FUNCTION audit.refuse_change();

-- Adds leaves `first_index`, `first_index + 1`, … (their bytes, in order)
-- and every subtree they complete. The left siblings the new nodes need are
-- the complete subtrees on the tree's right edge (one per bit set in
-- `first_index`), read once; nodes made here serve the later leaves; all
-- are written in one statement.
CREATE FUNCTION audit.add_leaves(first_index bigint, leaves bytea[]) RETURNS void
    LANGUAGE plpgsql AS $$
DECLARE
    pending bytea[] := '{}';  -- pending[level + 1]: a left child awaiting its sibling
    levels smallint[] := '{}';
    nodes bigint[] := '{}';
    hashes bytea[] := '{}';
    made integer := 0;
    edge_hash bytea;
    node bigint;
    lvl smallint;
    h bytea;
BEGIN
    -- One primary-key lookup per bit set: whatever plan a join would get,
    -- this never reads more than the edge.
    FOR k IN 0 .. 62 LOOP
        EXIT WHEN (first_index >> k) = 0;
        IF (first_index >> k) % 2 = 1 THEN
            SELECT n.hash INTO edge_hash FROM audit.log_nodes n
            WHERE n.level = k AND n.node_index = (first_index >> k) - 1;
            pending[k + 1] := edge_hash;
        END IF;
    END LOOP;
    FOR i IN 1 .. coalesce(array_length(leaves, 1), 0) LOOP
        node := first_index + i - 1;
        lvl := 0;
        h := sha256('\x00'::bytea || leaves[i]);
        made := made + 1;
        levels[made] := lvl; nodes[made] := node; hashes[made] := h;
        WHILE node % 2 = 1 LOOP
            IF pending[lvl + 1] IS NULL THEN
                RAISE EXCEPTION 'audit log: subtree (%, %) is missing', lvl, node - 1;
            END IF;
            h := sha256('\x01'::bytea || pending[lvl + 1] || h);
            pending[lvl + 1] := NULL;
            lvl := lvl + 1;
            node := node / 2;
            made := made + 1;
            levels[made] := lvl; nodes[made] := node; hashes[made] := h;
        END LOOP;
        pending[lvl + 1] := h;
    END LOOP;
    INSERT INTO audit.log_nodes (level, node_index, hash)
    SELECT * FROM unnest(levels, nodes, hashes);
END
$$;

-- Takes `n` indexes for the calling transaction; returns the first. The
-- counter row stays locked until the transaction ends (see above).
CREATE FUNCTION audit.take_indexes(n bigint) RETURNS bigint
    LANGUAGE sql AS $$
    UPDATE audit.log_head SET size = size + n RETURNING size - n
$$;

-- The statement-level triggers below number a whole statement's rows with
-- one update of the counter (a row updated once per event would slow every
-- batch down as its versions pile up). They run as the owner of the audit
-- schema: the gateway's role can add events only by adding audit rows, and
-- cannot move the counter or write nodes.
CREATE FUNCTION audit.number_attempts() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
    first_index bigint;
    added bigint;
BEGIN
    added := (SELECT count(*) FROM new_rows);
    -- (A statement that added nothing takes nothing, not even the lock.)
    IF added = 0 THEN
        RETURN NULL;
    END IF;
    first_index := audit.take_indexes(added);
    -- Numbered by call_id, so each query below sees the same order; the
    -- leaves are computed in one query, whose plan serves every row, and
    -- added together.
    INSERT INTO audit.events (log_index, kind, call_id, row_id, recorded_at)
    SELECT first_index + row_number() OVER (ORDER BY r.call_id) - 1, 'attempt', r.call_id,
           NULL, r.recorded_at
    FROM new_rows r;
    PERFORM audit.add_leaves(first_index, ARRAY(
        SELECT audit.attempt_leaf(n.i, n.r)
        FROM (SELECT first_index + row_number() OVER (ORDER BY r.call_id) - 1 AS i,
                     r::audit.release_attempts AS r
              FROM new_rows r) n
        ORDER BY n.i));
    RETURN NULL;
END
$$;

CREATE FUNCTION audit.number_outcomes() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
    first_index bigint;
    added bigint;
BEGIN
    added := (SELECT count(*) FROM new_rows);
    -- (A statement that added nothing takes nothing, not even the lock.)
    IF added = 0 THEN
        RETURN NULL;
    END IF;
    first_index := audit.take_indexes(added);
    -- Numbered by outcome_id, so each query below sees the same order; the
    -- leaves are computed in one query, whose plan serves every row, and
    -- added together.
    INSERT INTO audit.events (log_index, kind, call_id, row_id, recorded_at)
    SELECT first_index + row_number() OVER (ORDER BY r.outcome_id) - 1, 'outcome', r.call_id,
           r.outcome_id, r.recorded_at
    FROM new_rows r;
    PERFORM audit.add_leaves(first_index, ARRAY(
        SELECT audit.outcome_leaf(n.i, n.r)
        FROM (SELECT first_index + row_number() OVER (ORDER BY r.outcome_id) - 1 AS i,
                     r::audit.release_outcomes AS r
              FROM new_rows r) n
        ORDER BY n.i));
    RETURN NULL;
END
$$;

CREATE FUNCTION audit.number_confirmations() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
    first_index bigint;
    added bigint;
BEGIN
    added := (SELECT count(*) FROM new_rows);
    -- (A statement that added nothing takes nothing, not even the lock.)
    IF added = 0 THEN
        RETURN NULL;
    END IF;
    first_index := audit.take_indexes(added);
    -- Numbered by confirmation_id, so each query below sees the same order; the
    -- leaves are computed in one query, whose plan serves every row, and
    -- added together.
    INSERT INTO audit.events (log_index, kind, call_id, row_id, recorded_at)
    SELECT first_index + row_number() OVER (ORDER BY r.confirmation_id) - 1, 'confirmation', r.call_id,
           r.confirmation_id, r.recorded_at
    FROM new_rows r;
    PERFORM audit.add_leaves(first_index, ARRAY(
        SELECT audit.confirmation_leaf(n.i, n.r)
        FROM (SELECT first_index + row_number() OVER (ORDER BY r.confirmation_id) - 1 AS i,
                     r::audit.release_confirmations AS r
              FROM new_rows r) n
        ORDER BY n.i));
    RETURN NULL;
END
$$;

-- The tree over the events already recorded.
SELECT audit.add_leaves(0, ARRAY(
    SELECT CASE e.kind
        WHEN 'attempt' THEN (SELECT audit.attempt_leaf(e.log_index, a)
                             FROM audit.release_attempts a WHERE a.call_id = e.call_id)
        WHEN 'outcome' THEN (SELECT audit.outcome_leaf(e.log_index, o)
                             FROM audit.release_outcomes o WHERE o.outcome_id = e.row_id)
        ELSE (SELECT audit.confirmation_leaf(e.log_index, c)
              FROM audit.release_confirmations c WHERE c.confirmation_id = e.row_id)
    END
    FROM audit.events e ORDER BY e.log_index));

-- Signed checkpoints (C2SP tlog-checkpoint notes) of the tree, as the
-- gateways signed them. A copy kept outside the database is what makes
-- them evidence; these are for convenience and for consistency checks.
CREATE TABLE audit.checkpoints (
    checkpoint_id bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tree_size     bigint      NOT NULL CHECK (tree_size >= 0),
    root_hash     bytea       NOT NULL CHECK (length(root_hash) = 32),
    -- The whole signed note, as served at GET /audit/checkpoint.
    note          text        NOT NULL,
    signed_at     timestamptz NOT NULL DEFAULT clock_timestamp()
);

COMMENT ON TABLE audit.checkpoints IS
    'Signed checkpoints of the audit log (C2SP tlog-checkpoint notes). Append-only.';

CREATE INDEX checkpoints_tree_size ON audit.checkpoints (tree_size DESC);

CREATE TRIGGER checkpoints_append_only
    BEFORE UPDATE OR DELETE ON audit.checkpoints
    FOR EACH ROW EXECUTE FUNCTION audit.refuse_change();
CREATE TRIGGER checkpoints_no_truncate
    BEFORE TRUNCATE ON audit.checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION audit.refuse_change();

GRANT SELECT, INSERT ON audit.checkpoints TO zenlayer_gateway;
GRANT SELECT ON audit.checkpoints, audit.log_nodes TO audit_reader;
GRANT SELECT ON audit.log_nodes TO zenlayer_gateway;

REVOKE ALL ON FUNCTION audit.take_indexes(bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION audit.add_leaves(bigint, bytea[]) FROM PUBLIC;

CREATE TRIGGER release_attempts_numbered
    AFTER INSERT ON audit.release_attempts REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION audit.number_attempts();
CREATE TRIGGER release_outcomes_numbered
    AFTER INSERT ON audit.release_outcomes REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION audit.number_outcomes();
CREATE TRIGGER release_confirmations_numbered
    AFTER INSERT ON audit.release_confirmations REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION audit.number_confirmations();

GRANT SELECT ON audit.events, audit.log_head TO zenlayer_gateway, audit_reader;
