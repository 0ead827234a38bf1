-- One log of every audit event, in commit order, with no gaps.
--
-- Every row added to release_attempts, release_outcomes and
-- release_confirmations, by whoever adds it (a call, a sweep, a
-- reconciliation, any replica), gets the next index of audit.events, which
-- names the row. The index is taken from the one row of audit.log_head in
-- the inserting transaction, by a trigger that runs after the row is in
-- (so an insert that ON CONFLICT skips takes none):
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

-- Runs as the owner of the audit schema: the gateway's role can add events
-- only by adding audit rows, and cannot move the counter.
CREATE FUNCTION audit.append_event(event_kind text, event_call_id uuid, event_row_id bigint,
                                   event_recorded_at timestamptz) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
    next_index bigint;
BEGIN
    UPDATE audit.log_head SET size = size + 1 RETURNING size - 1 INTO next_index;
    INSERT INTO audit.events (log_index, kind, call_id, row_id, recorded_at)
    VALUES (next_index, event_kind, event_call_id, event_row_id, event_recorded_at);
END
$$;

CREATE FUNCTION audit.number_attempt() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
BEGIN
    PERFORM audit.append_event('attempt', NEW.call_id, NULL, NEW.recorded_at);
    RETURN NULL;
END
$$;

CREATE FUNCTION audit.number_outcome() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
BEGIN
    PERFORM audit.append_event('outcome', NEW.call_id, NEW.outcome_id, NEW.recorded_at);
    RETURN NULL;
END
$$;

CREATE FUNCTION audit.number_confirmation() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
BEGIN
    PERFORM audit.append_event('confirmation', NEW.call_id, NEW.confirmation_id, NEW.recorded_at);
    RETURN NULL;
END
$$;

REVOKE ALL ON FUNCTION audit.append_event(text, uuid, bigint, timestamptz) FROM PUBLIC;

CREATE TRIGGER release_attempts_numbered
    AFTER INSERT ON audit.release_attempts
    FOR EACH ROW EXECUTE FUNCTION audit.number_attempt();
CREATE TRIGGER release_outcomes_numbered
    AFTER INSERT ON audit.release_outcomes
    FOR EACH ROW EXECUTE FUNCTION audit.number_outcome();
CREATE TRIGGER release_confirmations_numbered
    AFTER INSERT ON audit.release_confirmations
    FOR EACH ROW EXECUTE FUNCTION audit.number_confirmation();

GRANT SELECT ON audit.events, audit.log_head TO zenlayer_gateway, audit_reader;
