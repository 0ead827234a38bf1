-- The audit trail cannot be rewritten: UPDATE, DELETE and TRUNCATE raise an
-- error for every role, the owner included. Only a superuser who first drops
-- or disables these triggers can change history, and that is itself visible
-- in the server's DDL log.
CREATE FUNCTION audit.refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit.% is append-only: % is not allowed', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER release_attempts_append_only
    BEFORE UPDATE OR DELETE ON audit.release_attempts
    FOR EACH ROW EXECUTE FUNCTION audit.refuse_change();
CREATE TRIGGER release_attempts_no_truncate
    BEFORE TRUNCATE ON audit.release_attempts
    FOR EACH STATEMENT EXECUTE FUNCTION audit.refuse_change();
CREATE TRIGGER release_outcomes_append_only
    BEFORE UPDATE OR DELETE ON audit.release_outcomes
    FOR EACH ROW EXECUTE FUNCTION audit.refuse_change();
CREATE TRIGGER release_outcomes_no_truncate
    BEFORE TRUNCATE ON audit.release_outcomes
    FOR EACH STATEMENT EXECUTE FUNCTION audit.refuse_change();
