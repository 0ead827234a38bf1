//! The audit trail's SQL, one small function per statement.

use super::record::{Attempt, Outcome, storable};
use sqlx::PgPool;
use std::time::Duration;

/// Caller-supplied fields are capped at this many characters.
const MAX_FIELD_CHARS: usize = 2048;

#[tracing::instrument(name = "audit.insert_attempt", skip_all, fields(call_id = %attempt.call_id, decision = attempt.decision.label()))]
pub(super) async fn insert_attempt(pool: &PgPool, attempt: &Attempt) -> Result<(), sqlx::Error> {
    let caller = &attempt.caller;
    let refusal = attempt.decision.refusal();
    let text = |value: &str| storable(value, MAX_FIELD_CHARS);
    sqlx::query(
        "INSERT INTO audit.release_attempts (
            call_id, received_at, principal, issuer, client_id, token_jti, token_fingerprint, roles,
            peer_addr, user_agent, x_request_id, trace_id, disk_id, reason, idempotency_key,
            decision, decision_reason, refusal_grpc_code, refusal_message, peer_identity)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)",
    )
    .bind(attempt.call_id)
    .bind(attempt.received_at)
    .bind(caller.principal.as_deref().map(text))
    .bind(caller.issuer.as_deref().map(text))
    .bind(caller.client_id.as_deref().map(text))
    .bind(caller.token_jti.as_deref().map(text))
    .bind(caller.token_fingerprint.as_deref())
    .bind(caller.roles.iter().map(|r| text(r)).collect::<Vec<_>>())
    .bind(attempt.peer_addr.as_deref())
    .bind(attempt.user_agent.as_deref().map(text))
    .bind(text(&attempt.x_request_id))
    .bind(&attempt.trace_id)
    .bind(storable(&attempt.disk_id, 256))
    .bind(text(&attempt.reason))
    .bind(attempt.idempotency_key.as_deref().map(text))
    .bind(attempt.decision.label())
    .bind(refusal.map(|r| r.reason.as_str()))
    .bind(refusal.map(|r| r.grpc_code))
    .bind(refusal.map(|r| text(&r.message)))
    .bind(attempt.peer_identity.as_deref().map(text))
    .execute(pool)
    .await?;
    Ok(())
}

/// A retried write whose first commit went unacknowledged is a no-op, not
/// a duplicate (see the unique indexes).
#[tracing::instrument(name = "audit.insert_outcome", skip_all, fields(call_id = %outcome.call_id, outcome = outcome.kind.label()))]
pub(super) async fn insert_outcome(pool: &PgPool, outcome: &Outcome) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO audit.release_outcomes (
            call_id, completed_at, outcome, grpc_code, zenlayer_code, zenlayer_request_id,
            http_status, error_message, recorded_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'call')
         ON CONFLICT DO NOTHING",
    )
    .bind(outcome.call_id)
    .bind(outcome.completed_at)
    .bind(outcome.kind.label())
    .bind(outcome.grpc_code)
    .bind(outcome.zenlayer_code.as_deref())
    .bind(outcome.zenlayer_request_id.as_deref())
    .bind(outcome.http_status.map(i32::from))
    .bind(
        outcome
            .error_message
            .as_deref()
            .map(|m| storable(m, MAX_FIELD_CHARS)),
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Marks allowed calls older than `older_than` that have no outcome as
/// `unknown`. Several replicas may run this at once: the unique index lets
/// only one mark stick.
#[tracing::instrument(name = "audit.mark_abandoned_calls_unknown", skip_all)]
pub(super) async fn mark_abandoned_unknown(
    pool: &PgPool,
    older_than: Duration,
) -> Result<u64, sqlx::Error> {
    let result = sqlx::query(
        "INSERT INTO audit.release_outcomes (
            call_id, completed_at, outcome, grpc_code, error_message, recorded_by)
         SELECT a.call_id, clock_timestamp(), 'unknown', 'UNKNOWN',
                'no outcome was recorded: the gateway stopped while the call was in flight, or could not record the answer. Check DescribeDisks to learn whether the disk was released',
                'recovery'
         FROM audit.release_attempts a
         WHERE a.decision = 'allowed'
           AND a.received_at < clock_timestamp() - make_interval(secs => $1)
           AND NOT EXISTS (SELECT 1 FROM audit.release_outcomes o WHERE o.call_id = a.call_id)
         ON CONFLICT DO NOTHING",
    )
    .bind(older_than.as_secs_f64())
    .execute(pool)
    .await?;
    Ok(result.rows_affected())
}
