-- A stored subtree that audit.add_leaves needs and cannot find is
-- tampering with audit.log_nodes, as a missing event or row is: it is now
-- raised as data_corrupted (XX001), the code audit.hash_events already uses
-- for those, so that the gateway reports it as a refusal to sign (metric
-- zenlayer_gateway_audit_log_checkpoints_refused_total, alert
-- ZenlayerGatewayAuditLogRewritten) rather than as the database being
-- unreachable. The function is otherwise unchanged (see
-- 20261201090000_number_audit_events.sql).
CREATE OR REPLACE FUNCTION audit.add_leaves(first_index bigint, leaves bytea[]) RETURNS void
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
                RAISE EXCEPTION 'audit log: stored subtree (level %, index %) is missing, so the tree is not extended past event %: run `zenlayer-gateway audit verify`',
                    lvl, node - 1, first_index
                    USING ERRCODE = 'data_corrupted';
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
