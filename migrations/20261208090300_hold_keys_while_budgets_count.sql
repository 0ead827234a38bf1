-- A release budget's check reads which of a batch's idempotency keys are
-- held (their releases will lose their claims and take no slot), then
-- claims the rest in a later statement of the same transaction. A key
-- deleted in between (freed by an outcome or a reconciliation, or purged)
-- would let such a release win its claim without a slot. The check now
-- locks the rows it reads (SELECT … FOR KEY SHARE), so such a delete waits
-- until the batch commits; PostgreSQL requires UPDATE on a column of the
-- table for that lock, so the gateway is given it on claimed_at alone,
-- which it never updates.
GRANT UPDATE (claimed_at) ON idempotency.keys TO zenlayer_gateway;

-- The freeze in force is the newest in the log's order (see
-- 20261208090200_the_freeze_in_force_is_the_newest_in_the_log.sql).
COMMENT ON TABLE audit.release_freezes IS
    'Every freeze and unfreeze of releases: who (the database login), when and why. The newest in the log''s order (audit.freeze_in_force()) is in force. Append-only.';
