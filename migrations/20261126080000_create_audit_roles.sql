-- Group roles the gateway and security teams log in through. They are
-- NOLOGIN: operators grant membership to login roles of their own
-- (CREATE ROLE gateway LOGIN PASSWORD '...' IN ROLE zenlayer_gateway).
-- Roles are cluster-wide and several databases may migrate at once, so a
-- role another migration just created is not an error.
DO $$
BEGIN
    CREATE ROLE zenlayer_gateway NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END
$$;

DO $$
BEGIN
    CREATE ROLE audit_reader NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END
$$;
