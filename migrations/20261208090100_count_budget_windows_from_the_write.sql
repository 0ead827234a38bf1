-- Release budgets count a release from the moment its slot was taken: when
-- its attempt was written (recorded_at, the database's clock), in the
-- transaction that checked the budget, just before it was sent. They
-- counted from received_at, the replica's clock when the caller asked;
-- a call that spent seconds looking at the disk first then left a short
-- window early, while its release went out late, so more releases than
-- the budget could go out within one window. This index serves the count,
-- as release_attempts_allowed_received_at did.
CREATE INDEX release_attempts_budget_window ON audit.release_attempts (recorded_at)
    WHERE decision = 'allowed' AND replay_of IS NULL;
