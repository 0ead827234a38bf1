-- The audit trail of ReleaseDisk calls, one event per stage (as Kubernetes
-- and Vault audit logs do), so that no row ever needs to change:
--   release_attempts  written when a call is decided, before anything is
--                     sent to Zenlayer (allowed), or as the whole record of
--                     a refusal (denied, invalid);
--   release_outcomes  written when an allowed call ends, by the gateway or,
--                     for calls a crash left pending, by the recovery sweep.
CREATE SCHEMA IF NOT EXISTS audit;

CREATE TABLE audit.release_attempts (
    call_id            uuid        PRIMARY KEY,
    received_at        timestamptz NOT NULL,
    recorded_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    principal          text,
    issuer             text,
    client_id          text,
    token_jti          text,
    token_fingerprint  text,
    roles              text[]      NOT NULL DEFAULT '{}',
    peer_addr          text,
    -- With mTLS, the subject (RFC 4514) of the caller's client certificate.
    peer_identity      text,
    user_agent         text,
    x_request_id       text        NOT NULL,
    trace_id           text        NOT NULL,
    disk_id            text        NOT NULL,
    reason             text        NOT NULL DEFAULT '',
    idempotency_key    text,
    -- A call answered from an earlier one with the same idempotency key.
    replay_of          uuid        REFERENCES audit.release_attempts (call_id),
    decision           text        NOT NULL CHECK (decision IN ('allowed', 'denied', 'invalid')),
    decision_reason    text,
    -- Refusals are complete when written: the status the caller got.
    refusal_grpc_code  text,
    refusal_message    text,
    CHECK ((decision = 'allowed') = (refusal_grpc_code IS NULL))
);

COMMENT ON TABLE audit.release_attempts IS
    'One row per ReleaseDisk call the gateway received, written before anything is sent to Zenlayer. Append-only.';

CREATE TABLE audit.release_outcomes (
    outcome_id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    call_id             uuid        NOT NULL REFERENCES audit.release_attempts (call_id),
    completed_at        timestamptz NOT NULL,
    recorded_at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    outcome             text        NOT NULL CHECK (outcome IN ('succeeded', 'failed', 'unknown')),
    grpc_code           text        NOT NULL,
    -- The ErrorInfo reason the caller got (not always Zenlayer's code), so
    -- that a replay repeats the status exactly.
    error_reason        text,
    zenlayer_code       text,
    zenlayer_request_id text,
    http_status         integer,
    error_message       text,
    -- Who wrote it: the call itself, or the sweep that gives up on calls
    -- left pending by a crash.
    recorded_by         text        NOT NULL CHECK (recorded_by IN ('call', 'recovery'))
);

COMMENT ON TABLE audit.release_outcomes IS
    'How each allowed ReleaseDisk call ended. Append-only; a known outcome supersedes an unknown one.';

-- At most one known and one unknown outcome per call, so a retried write
-- (whose first commit was not acknowledged) or two replicas sweeping at once
-- cannot duplicate one.
CREATE UNIQUE INDEX release_outcomes_one_known_per_call
    ON audit.release_outcomes (call_id) WHERE outcome <> 'unknown';
CREATE UNIQUE INDEX release_outcomes_one_unknown_per_call
    ON audit.release_outcomes (call_id) WHERE outcome = 'unknown';
-- A call's outcomes, best first, for the view and for idempotent replays.
CREATE INDEX release_outcomes_call_id ON audit.release_outcomes (call_id, recorded_at DESC);

-- The questions security teams ask: by disk, by principal, by time, and
-- what is still pending.
CREATE INDEX release_attempts_disk_id ON audit.release_attempts (disk_id, received_at DESC);
CREATE INDEX release_attempts_principal ON audit.release_attempts (principal, received_at DESC);
CREATE INDEX release_attempts_received_at ON audit.release_attempts (received_at DESC);
-- Allowed calls by age, for the sweep that marks abandoned ones unknown.
CREATE INDEX release_attempts_allowed_received_at ON audit.release_attempts (received_at)
    WHERE decision = 'allowed';
CREATE INDEX release_attempts_refusals ON audit.release_attempts (decision_reason, received_at DESC)
    WHERE decision <> 'allowed';
CREATE INDEX release_attempts_token_fingerprint ON audit.release_attempts (token_fingerprint);
CREATE INDEX release_attempts_replay_of ON audit.release_attempts (replay_of) WHERE replay_of IS NOT NULL;
