-- The freeze switch: `zenlayer-gateway freeze --reason "…"` stops every
-- release on every replica, `unfreeze --reason "…"` resumes them. Each is an
-- append-only audit event (who, when, why), a leaf of the audit log like
-- every other event, and a notification every gateway listens for.
--
-- Operators run the commands with a login that is a member of
-- release_operator, which may add freezes and read them, and nothing else.
DO $$
BEGIN
    CREATE ROLE release_operator NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END
$$;

CREATE TABLE audit.release_freezes (
    freeze_id   bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    action      text        NOT NULL CHECK (action IN ('freeze', 'unfreeze')),
    reason      text        NOT NULL CHECK (length(btrim(reason)) > 0 AND length(reason) <= 1024),
    -- The login that ran the command, whatever the row says.
    operator    text        NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

COMMENT ON TABLE audit.release_freezes IS
    'Every freeze and unfreeze of releases: who (the database login), when and why. The newest row is in force. Append-only.';

CREATE FUNCTION audit.stamp_operator() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    NEW.operator := session_user;
    NEW.recorded_at := clock_timestamp();
    RETURN NEW;
END
$$;

CREATE TRIGGER release_freezes_stamped
    BEFORE INSERT ON audit.release_freezes
    FOR EACH ROW EXECUTE FUNCTION audit.stamp_operator();
CREATE TRIGGER release_freezes_append_only
    BEFORE UPDATE OR DELETE ON audit.release_freezes
    FOR EACH ROW EXECUTE FUNCTION audit.refuse_change();
CREATE TRIGGER release_freezes_no_truncate
    BEFORE TRUNCATE ON audit.release_freezes
    FOR EACH STATEMENT EXECUTE FUNCTION audit.refuse_change();

-- Every gateway LISTENs here (and polls, should a notification be lost).
CREATE FUNCTION audit.notify_freeze() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('zenlayer_gateway_freezes', NEW.freeze_id::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER release_freezes_notified
    AFTER INSERT ON audit.release_freezes
    FOR EACH ROW EXECUTE FUNCTION audit.notify_freeze();

-- Freezes are events of the log too; they belong to no call.
ALTER TABLE audit.events
    ALTER COLUMN call_id DROP NOT NULL,
    DROP CONSTRAINT events_kind_check,
    ADD CONSTRAINT events_kind_check
        CHECK (kind IN ('attempt', 'outcome', 'confirmation', 'freeze')),
    ADD CONSTRAINT events_call_check CHECK ((kind = 'freeze') = (call_id IS NULL));

-- A freeze's leaf: the tag line `zenlayer-gateway/freeze/v1\n`, the log
-- index, then freeze_id, action, reason, operator, recorded_at, encoded as
-- every other leaf is (see attempt_leaf).
CREATE FUNCTION audit.freeze_leaf(log_index bigint, r audit.release_freezes) RETURNS bytea
    LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN convert_to('zenlayer-gateway/freeze/v1' || chr(10), 'UTF8')
        || '\x01'::bytea || int4send(8) || int8send(log_index)
        || CASE WHEN r.freeze_id IS NULL THEN '\x00'::bytea ELSE '\x01'::bytea || int4send(length(int8send(r.freeze_id::bigint))) || int8send(r.freeze_id::bigint) END
        || CASE WHEN r.action IS NULL THEN '\x00'::bytea ELSE '\x01'::bytea || int4send(length(convert_to(r.action, 'UTF8'))) || convert_to(r.action, 'UTF8') END
        || CASE WHEN r.reason IS NULL THEN '\x00'::bytea ELSE '\x01'::bytea || int4send(length(convert_to(r.reason, 'UTF8'))) || convert_to(r.reason, 'UTF8') END
        || CASE WHEN r.operator IS NULL THEN '\x00'::bytea ELSE '\x01'::bytea || int4send(length(convert_to(r.operator, 'UTF8'))) || convert_to(r.operator, 'UTF8') END
        || CASE WHEN r.recorded_at IS NULL THEN '\x00'::bytea ELSE '\x01'::bytea || int4send(length(int8send((extract(epoch FROM r.recorded_at) * 1000000)::bigint))) || int8send((extract(epoch FROM r.recorded_at) * 1000000)::bigint) END;
END
$$;

CREATE FUNCTION audit.number_freezes() RETURNS trigger
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
    PERFORM audit.add_leaves(first_index, ARRAY(
        SELECT audit.freeze_leaf(n.i, n.r)
        FROM (SELECT first_index + row_number() OVER (ORDER BY r.freeze_id) - 1 AS i,
                     r::audit.release_freezes AS r
              FROM new_rows r) n
        ORDER BY n.i));
    RETURN NULL;
END
$$;

CREATE TRIGGER release_freezes_numbered
    AFTER INSERT ON audit.release_freezes REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION audit.number_freezes();

GRANT USAGE ON SCHEMA audit TO release_operator;
GRANT SELECT, INSERT ON audit.release_freezes TO release_operator;
GRANT SELECT ON audit.release_freezes TO zenlayer_gateway, audit_reader;
