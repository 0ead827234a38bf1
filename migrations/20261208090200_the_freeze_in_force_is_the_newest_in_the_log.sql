-- The freeze in force is the newest freeze or unfreeze in the log (commit
-- order, gap-free: audit.events), no longer the row with the largest
-- freeze_id. An identity is handed out when a row is inserted, not when it
-- commits, so a freeze and an unfreeze run at the same moment could commit
-- in the opposite order to their ids and the earlier one stay in force; and
-- an operator login may choose the id itself (INSERT … OVERRIDING SYSTEM
-- VALUE), planting an unfreeze with the largest id that every later freeze
-- would sit beneath. The log's order is taken under its counter's lock, in
-- the inserting transaction, by a trigger nobody but the owner controls.
--
-- Operators may not read audit.events; this function, which runs as the
-- owner, gives them (and everyone who reads the freeze) the one row.
CREATE INDEX events_freezes ON audit.events (log_index) WHERE kind = 'freeze';

CREATE FUNCTION audit.freeze_in_force() RETURNS SETOF audit.release_freezes
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog AS $$
    SELECT f.*
    FROM audit.events e
    JOIN audit.release_freezes f ON f.freeze_id = e.row_id
    WHERE e.kind = 'freeze'
    ORDER BY e.log_index DESC
    LIMIT 1
$$;

REVOKE ALL ON FUNCTION audit.freeze_in_force() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION audit.freeze_in_force()
    TO zenlayer_gateway, release_operator, audit_reader;
