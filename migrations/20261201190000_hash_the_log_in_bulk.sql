-- The log's tree, hashed in bulk rather than on the path of every call.
--
-- Until now the statement that added audit rows also computed their leaves
-- and wrote every subtree they completed (two rows of audit.log_nodes per
-- event on average, after reading the tree's right edge): about 0.2 ms of
-- database time per statement, in the transaction the caller waits for.
-- From here on that statement only numbers its events (audit.events), and
-- audit.hash_events(n), which every gateway calls before it signs a
-- checkpoint (and on the same beat when it signs none), hashes the next n
-- numbered events in one transaction, all at once.
--
-- What this costs in tamper evidence: nothing. An event is evidence
-- against whoever controls the database only once a checkpoint signed
-- outside it covers the event, and a checkpoint is signed only over
-- hashed events, as before. Until then, whoever can change a row (a
-- superuser, the tables' owner) can change the hashes stored beside it
-- just as well; the gateway's role can change neither.
--
-- audit.tree_head holds how many events the tree covers: the events
-- [0, size) have their leaf hashes and every subtree they complete in
-- audit.log_nodes; the later ones wait for the next hash_events.

CREATE TABLE audit.tree_head (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    -- How many events the tree covers.
    size      bigint  NOT NULL CHECK (size >= 0)
);

COMMENT ON TABLE audit.tree_head IS
    'How many events of audit.events the Merkle tree in audit.log_nodes covers (events [0, size)); later events are numbered but not yet hashed.';

-- Every event numbered so far was hashed when it was added.
INSERT INTO audit.tree_head (size) SELECT size FROM audit.log_head;

CREATE TRIGGER tree_head_no_delete
    BEFORE DELETE ON audit.tree_head
    FOR EACH ROW EXECUTE FUNCTION audit.refuse_change();
CREATE TRIGGER tree_head_no_truncate
    BEFORE TRUNCATE ON audit.tree_head
    FOR EACH STATEMENT EXECUTE FUNCTION audit.refuse_change();

-- Hashes up to `max_leaves` events after the tree's end, in one
-- transaction; returns how many it hashed (fewer than asked: the tree has
-- caught up). Concurrent callers (every replica's checkpointer) queue on
-- the tree_head row and never on the log's counter, so no call waits for
-- them. The leaves come from the rows as they are now, which are the rows
-- as they were added: the audit tables refuse updates.
CREATE FUNCTION audit.hash_events(max_leaves integer) RETURNS integer
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
    hashed bigint;
    logged bigint;
    upto bigint;
    leaves bytea[];
    missing bigint;
BEGIN
    IF max_leaves < 1 THEN
        RAISE EXCEPTION 'audit.hash_events: max_leaves must be at least 1, not %', max_leaves;
    END IF;
    SELECT size INTO hashed FROM audit.tree_head FOR UPDATE;
    -- Committed: its update commits with the events it numbered.
    SELECT size INTO logged FROM audit.log_head;
    upto := least(logged, hashed + max_leaves);
    IF upto <= hashed THEN
        RETURN 0;
    END IF;
    -- One index lookup of the event's row each (a join could pick a scan
    -- of the whole table); a row that is gone gives NULL, never a leaf.
    leaves := ARRAY(
        SELECT CASE e.kind
            WHEN 'attempt' THEN (SELECT audit.attempt_leaf(e.log_index, a)
                                 FROM audit.release_attempts a WHERE a.call_id = e.call_id)
            WHEN 'outcome' THEN (SELECT audit.outcome_leaf(e.log_index, o)
                                 FROM audit.release_outcomes o WHERE o.outcome_id = e.row_id)
            WHEN 'confirmation' THEN (SELECT audit.confirmation_leaf(e.log_index, c)
                                      FROM audit.release_confirmations c
                                      WHERE c.confirmation_id = e.row_id)
            WHEN 'freeze' THEN (SELECT audit.freeze_leaf(e.log_index, f)
                                FROM audit.release_freezes f WHERE f.freeze_id = e.row_id)
        END
        FROM audit.events e
        WHERE e.log_index >= hashed AND e.log_index < upto
        ORDER BY e.log_index);
    -- A deleted entry or row is tampering: hash nothing past it, so that
    -- no checkpoint ever covers it, and say where (`audit verify` says how).
    IF cardinality(leaves) <> upto - hashed THEN
        SELECT min(i) INTO missing
        FROM generate_series(hashed, upto - 1) AS i
        WHERE NOT EXISTS (SELECT 1 FROM audit.events e WHERE e.log_index = i);
    ELSIF array_position(leaves, NULL) IS NOT NULL THEN
        missing := hashed + array_position(leaves, NULL) - 1;
    END IF;
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'audit log: event % or its row is missing, so the tree is not extended past event %: run `zenlayer-gateway audit verify`',
            missing, hashed
            USING ERRCODE = 'data_corrupted';
    END IF;
    PERFORM audit.add_leaves(hashed, leaves);
    UPDATE audit.tree_head SET size = upto;
    RETURN upto - hashed;
END
$$;

REVOKE ALL ON FUNCTION audit.hash_events(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION audit.hash_events(integer) TO zenlayer_gateway;
GRANT SELECT ON audit.tree_head TO zenlayer_gateway, audit_reader;

-- The numbering triggers, now without the tree: each takes its
-- statement's indexes and writes their entries, nothing more.
CREATE OR REPLACE FUNCTION audit.number_attempts() RETURNS trigger
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
    INSERT INTO audit.events (log_index, kind, call_id, row_id, recorded_at)
    SELECT first_index + row_number() OVER (ORDER BY r.call_id) - 1, 'attempt', r.call_id,
           NULL, r.recorded_at
    FROM new_rows r;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION audit.number_outcomes() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
    first_index bigint;
    added bigint;
BEGIN
    added := (SELECT count(*) FROM new_rows);
    IF added = 0 THEN
        RETURN NULL;
    END IF;
    first_index := audit.take_indexes(added);
    INSERT INTO audit.events (log_index, kind, call_id, row_id, recorded_at)
    SELECT first_index + row_number() OVER (ORDER BY r.outcome_id) - 1, 'outcome', r.call_id,
           r.outcome_id, r.recorded_at
    FROM new_rows r;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION audit.number_confirmations() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
    first_index bigint;
    added bigint;
BEGIN
    added := (SELECT count(*) FROM new_rows);
    IF added = 0 THEN
        RETURN NULL;
    END IF;
    first_index := audit.take_indexes(added);
    INSERT INTO audit.events (log_index, kind, call_id, row_id, recorded_at)
    SELECT first_index + row_number() OVER (ORDER BY r.confirmation_id) - 1, 'confirmation',
           r.call_id, r.confirmation_id, r.recorded_at
    FROM new_rows r;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION audit.number_freezes() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
    first_index bigint;
    added bigint;
BEGIN
    added := (SELECT count(*) FROM new_rows);
    IF added = 0 THEN
        RETURN NULL;
    END IF;
    first_index := audit.take_indexes(added);
    INSERT INTO audit.events (log_index, kind, call_id, row_id, recorded_at)
    SELECT first_index + row_number() OVER (ORDER BY r.freeze_id) - 1, 'freeze', NULL,
           r.freeze_id, r.recorded_at
    FROM new_rows r;
    RETURN NULL;
END
$$;
