//! The audit trail's SQL, one small function per statement.

use super::record::{Answer, Attempt, Claim, OutcomeKind, OutcomeRecord, PriorCall, storable};
use crate::zenlayer::DiskSnapshot;
use sqlx::PgConnection;
use std::time::Duration;
use uuid::Uuid;

/// Caller-supplied fields are capped at this many characters.
const MAX_FIELD_CHARS: usize = 2048;

#[tracing::instrument(name = "audit.insert_attempt", skip_all, fields(call_id = %attempt.call_id, decision = attempt.decision().label()))]
pub(super) async fn insert_attempt(
    db: &mut PgConnection,
    attempt: &Attempt,
) -> Result<(), sqlx::Error> {
    let caller = &attempt.caller;
    let refusal = attempt.refusal.as_ref();
    let text = |value: &str| storable(value, MAX_FIELD_CHARS);
    let roles = caller.roles.iter().map(|r| text(r)).collect::<Vec<_>>();
    let disk = attempt.disk.as_ref();
    let disk_text = |field: fn(&DiskSnapshot) -> &Option<String>| {
        disk.and_then(|d| field(d).as_deref()).map(text)
    };
    sqlx::query!(
        "INSERT INTO audit.release_attempts (
            call_id, received_at, principal, issuer, client_id, token_jti, token_fingerprint, roles,
            peer_addr, user_agent, x_request_id, trace_id, disk_id, reason, idempotency_key,
            decision, decision_reason, refusal_grpc_code, refusal_message, replay_of, peer_identity,
            disk_snapshot, disk_name, zone_id, disk_size_gib, disk_type, disk_status_before, disk_tags,
            policy_set_hash, policy_decision, policy_ids,
            shadow_policy_set_hash, shadow_policy_decision, shadow_policy_ids)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18,
                 $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31, $32, $33, $34)",
        attempt.call_id,
        attempt.received_at,
        caller.principal.as_deref().map(text),
        caller.issuer.as_deref().map(text),
        caller.client_id.as_deref().map(text),
        caller.token_jti.as_deref().map(text),
        caller.token_fingerprint.as_deref(),
        &roles,
        attempt.peer_addr.as_deref(),
        attempt.user_agent.as_deref().map(text),
        text(&attempt.x_request_id),
        &attempt.trace_id,
        storable(&attempt.disk_id, 256),
        text(&attempt.reason),
        attempt.idempotency_key.as_deref().map(text),
        attempt.decision().label(),
        refusal.map(|r| r.reason.as_str()),
        refusal.map(|r| r.grpc_code),
        refusal.map(|r| text(&r.message)),
        attempt.replay_of,
        attempt.peer_identity.as_deref().map(text),
        disk.map(|d| &d.entry),
        disk_text(|d| &d.disk_name),
        disk_text(|d| &d.zone_id),
        disk.and_then(|d| d.disk_size_gib),
        disk_text(|d| &d.disk_type),
        disk_text(|d| &d.disk_status),
        disk.map(|d| serde_json::Value::Object(d.tags.clone())),
        attempt.policy_set_hash.as_deref(),
        attempt.policy.as_ref().map(|p| p.decision),
        attempt.policy.as_ref().map(|p| p.policy_ids.as_slice()),
        attempt.shadow_policy.as_ref().map(|p| p.set_hash.as_str()),
        attempt.shadow_policy.as_ref().map(|p| p.decision),
        attempt.shadow_policy.as_ref().map(|p| p.policy_ids.as_slice()),
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Claims `claim` for `call_id`; `false` if another call holds it. A
/// concurrent claim of the same key waits here until the first commits.
#[tracing::instrument(name = "idempotency.claim_key", skip_all)]
pub(super) async fn claim_key(
    db: &mut PgConnection,
    claim: &Claim,
    call_id: Uuid,
) -> Result<bool, sqlx::Error> {
    let claimed = sqlx::query!(
        "INSERT INTO idempotency.keys (issuer, principal, idempotency_key, disk_id, call_id)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT DO NOTHING",
        claim.issuer,
        claim.principal,
        claim.key,
        claim.disk_id,
        call_id,
    )
    .execute(db)
    .await?;
    Ok(claimed.rows_affected() == 1)
}

/// The call holding `claim`'s key, with its best-known outcome. `None` if
/// the key was freed or purged in the meantime.
#[tracing::instrument(name = "idempotency.find_holder", skip_all)]
pub(super) async fn key_holder(
    db: &mut PgConnection,
    claim: &Claim,
) -> Result<Option<PriorCall>, sqlx::Error> {
    let row = sqlx::query!(
        r#"SELECT k.call_id, k.disk_id, o.outcome AS "outcome?", o.grpc_code AS "grpc_code?",
                o.error_reason, o.error_message, o.zenlayer_code, o.zenlayer_request_id, o.http_status,
                o.zenlayer_action
         FROM idempotency.keys k
         LEFT JOIN LATERAL (
             SELECT * FROM audit.release_outcomes o
             WHERE o.call_id = k.call_id
             ORDER BY (o.outcome <> 'unknown') DESC, o.recorded_at DESC
             LIMIT 1
         ) o ON true
         WHERE k.issuer = $1 AND k.principal = $2 AND k.idempotency_key = $3"#,
        claim.issuer,
        claim.principal,
        claim.key,
    )
    .fetch_optional(db)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let answer = match (
        row.outcome.as_deref().and_then(OutcomeKind::from_label),
        row.grpc_code,
    ) {
        (Some(kind), Some(grpc_code)) => Some(Answer {
            kind,
            grpc_code,
            error_reason: row.error_reason,
            error_message: row.error_message,
            zenlayer_code: row.zenlayer_code,
            zenlayer_request_id: row.zenlayer_request_id,
            http_status: row.http_status.and_then(|s| u16::try_from(s).ok()),
            zenlayer_action: row.zenlayer_action,
        }),
        _ => None,
    };
    Ok(Some(PriorCall {
        call_id: row.call_id,
        disk_id: row.disk_id,
        answer,
    }))
}

/// A retried write whose first commit went unacknowledged is a no-op, not
/// a duplicate (see the unique indexes).
#[tracing::instrument(name = "audit.insert_outcome", skip_all, fields(call_id = %outcome.call_id, outcome = outcome.answer.kind.label()))]
pub(super) async fn insert_outcome(
    db: &mut PgConnection,
    outcome: &OutcomeRecord,
) -> Result<(), sqlx::Error> {
    let answer = &outcome.answer;
    sqlx::query!(
        "INSERT INTO audit.release_outcomes (
            call_id, completed_at, outcome, grpc_code, error_reason, zenlayer_code,
            zenlayer_request_id, http_status, error_message, zenlayer_action, recorded_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'call')
         ON CONFLICT DO NOTHING",
        outcome.call_id,
        outcome.completed_at,
        answer.kind.label(),
        answer.grpc_code,
        answer.error_reason.as_deref(),
        answer.zenlayer_code.as_deref(),
        answer.zenlayer_request_id.as_deref(),
        answer.http_status.map(i32::from),
        answer
            .error_message
            .as_deref()
            .map(|m| storable(m, MAX_FIELD_CHARS)),
        answer.zenlayer_action.as_deref(),
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Frees the idempotency key `call_id` claimed, if any.
#[tracing::instrument(name = "idempotency.free_key", skip_all, fields(call_id = %call_id))]
pub(super) async fn free_key(db: &mut PgConnection, call_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query!("DELETE FROM idempotency.keys WHERE call_id = $1", call_id)
        .execute(db)
        .await?;
    Ok(())
}

/// Deletes keys claimed longer ago than `retention`; returns how many.
#[tracing::instrument(name = "idempotency.purge_keys", skip_all)]
pub(super) async fn purge_keys(
    db: &mut PgConnection,
    retention: Duration,
) -> Result<u64, sqlx::Error> {
    let result = sqlx::query!(
        "DELETE FROM idempotency.keys WHERE claimed_at < clock_timestamp() - make_interval(secs => $1)",
        retention.as_secs_f64(),
    )
    .execute(db)
        .await?;
    Ok(result.rows_affected())
}

/// Marks allowed calls older than `older_than` that have no outcome as
/// `unknown`. Several replicas may run this at once: the unique index lets
/// only one mark stick.
#[tracing::instrument(name = "audit.mark_abandoned_calls_unknown", skip_all)]
pub(super) async fn mark_abandoned_unknown(
    db: &mut PgConnection,
    older_than: Duration,
) -> Result<u64, sqlx::Error> {
    let result = sqlx::query!(
        "INSERT INTO audit.release_outcomes (
            call_id, completed_at, outcome, grpc_code, error_reason, error_message, recorded_by)
         SELECT a.call_id, clock_timestamp(), 'unknown', 'UNAVAILABLE', 'OUTCOME_UNKNOWN',
                'no outcome was recorded: the gateway stopped while the call was in flight, or could not record the answer. Reconciliation will ask DescribeDisks whether the disk was released; GetRelease shows what it finds',
                'recovery'
         FROM audit.release_attempts a
         WHERE a.decision = 'allowed'
           AND a.received_at < clock_timestamp() - make_interval(secs => $1)
           AND a.received_at > clock_timestamp() - make_interval(days => $2)
           AND NOT EXISTS (SELECT 1 FROM audit.release_outcomes o WHERE o.call_id = a.call_id)
         ON CONFLICT DO NOTHING",
        older_than.as_secs_f64(),
        SWEEP_WINDOW_DAYS,
    )
    .execute(db)
    .await?;
    Ok(result.rows_affected())
}

/// How far back the sweep looks: every replica runs it every minute, so it
/// must not scan the whole history. A call is abandoned within minutes of
/// its gateway stopping; only a fleet down for this long misses the sweep.
const SWEEP_WINDOW_DAYS: i32 = 7;

/// A call still to follow up: its id, its disk, and when its last outcome
/// was recorded.
#[derive(Debug, Clone)]
pub(super) struct FollowUp {
    pub call_id: Uuid,
    pub disk_id: String,
    pub completed_at: chrono::DateTime<chrono::Utc>,
}

/// Accepted releases (not replays) of the last week with no confirmation
/// yet, oldest first.
#[tracing::instrument(name = "audit.unconfirmed_releases", skip_all)]
pub(super) async fn unconfirmed(
    db: &mut PgConnection,
    limit: i64,
) -> Result<Vec<FollowUp>, sqlx::Error> {
    sqlx::query_as!(
        FollowUp,
        "SELECT a.call_id, a.disk_id, o.completed_at
         FROM audit.release_outcomes o
         JOIN audit.release_attempts a ON a.call_id = o.call_id
         WHERE o.outcome = 'succeeded' AND a.replay_of IS NULL
           AND o.completed_at > clock_timestamp() - make_interval(days => $1)
           AND NOT EXISTS (SELECT 1 FROM audit.release_confirmations c WHERE c.call_id = o.call_id)
         ORDER BY o.completed_at
         LIMIT $2",
        SWEEP_WINDOW_DAYS,
        limit,
    )
    .fetch_all(db)
    .await
}

/// Calls of the last week whose only outcome is `unknown`, recorded longer
/// ago than `settle`, oldest first.
#[tracing::instrument(name = "audit.unknown_outcomes", skip_all)]
pub(super) async fn unresolved(
    db: &mut PgConnection,
    settle: Duration,
    limit: i64,
) -> Result<Vec<FollowUp>, sqlx::Error> {
    sqlx::query_as!(
        FollowUp,
        "SELECT a.call_id, a.disk_id, u.completed_at
         FROM audit.release_outcomes u
         JOIN audit.release_attempts a ON a.call_id = u.call_id
         WHERE u.outcome = 'unknown'
           AND u.completed_at < clock_timestamp() - make_interval(secs => $1)
           AND u.completed_at > clock_timestamp() - make_interval(days => $2)
           AND NOT EXISTS (
               SELECT 1 FROM audit.release_outcomes k
               WHERE k.call_id = u.call_id AND k.outcome <> 'unknown')
         ORDER BY u.completed_at
         LIMIT $3",
        settle.as_secs_f64(),
        SWEEP_WINDOW_DAYS,
        limit,
    )
    .fetch_all(db)
    .await
}

/// Takes the call's follow-up lock for this transaction; `false` when
/// another replica holds it, which then follows the call up instead.
pub(super) async fn lock_call(db: &mut PgConnection, call_id: Uuid) -> Result<bool, sqlx::Error> {
    let locked = sqlx::query_scalar!(
        r#"SELECT pg_try_advisory_xact_lock(hashtextextended($1::text, 7215)) AS "locked!""#,
        call_id.to_string(),
    )
    .fetch_one(db)
    .await?;
    Ok(locked)
}

/// Whether the call has a confirmation verdict already (another replica,
/// or a reconciliation, got there first).
pub(super) async fn has_confirmation(
    db: &mut PgConnection,
    call_id: Uuid,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM audit.release_confirmations WHERE call_id = $1) AS "done!""#,
        call_id,
    )
    .fetch_one(db)
    .await?;
    Ok(done)
}

/// Whether the call has a known outcome already.
pub(super) async fn has_known_outcome(
    db: &mut PgConnection,
    call_id: Uuid,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM audit.release_outcomes
                          WHERE call_id = $1 AND outcome <> 'unknown') AS "done!""#,
        call_id,
    )
    .fetch_one(db)
    .await?;
    Ok(done)
}

/// One confirmation verdict, at most one per call.
#[derive(Debug, Clone)]
pub(super) struct Confirmation<'a> {
    pub call_id: Uuid,
    pub confirmed: bool,
    pub checked_at: chrono::DateTime<chrono::Utc>,
    pub zenlayer_request_id: &'a str,
    pub disk_status: Option<&'a str>,
    pub recorded_by: &'static str,
}

#[tracing::instrument(name = "audit.insert_confirmation", skip_all, fields(call_id = %c.call_id))]
pub(super) async fn insert_confirmation(
    db: &mut PgConnection,
    c: &Confirmation<'_>,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query!(
        "INSERT INTO audit.release_confirmations (
            call_id, confirmation, checked_at, zenlayer_request_id, disk_status, recorded_by)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT DO NOTHING",
        c.call_id,
        if c.confirmed {
            "confirmed"
        } else {
            "not_confirmed"
        },
        c.checked_at,
        c.zenlayer_request_id,
        c.disk_status,
        c.recorded_by,
    )
    .execute(db)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// The outcome reconciliation found for a call whose outcome was unknown.
#[tracing::instrument(name = "audit.insert_reconciled", skip_all, fields(call_id = %outcome.call_id))]
pub(super) async fn insert_reconciled(
    db: &mut PgConnection,
    outcome: &OutcomeRecord,
) -> Result<bool, sqlx::Error> {
    let answer = &outcome.answer;
    let inserted = sqlx::query!(
        "INSERT INTO audit.release_outcomes (
            call_id, completed_at, outcome, grpc_code, error_reason, zenlayer_code,
            zenlayer_request_id, http_status, error_message, zenlayer_action, recorded_by)
         VALUES ($1, $2, $3, $4, $5, NULL, $6, NULL, $7, 'DescribeDisks', 'reconciliation')
         ON CONFLICT DO NOTHING",
        outcome.call_id,
        outcome.completed_at,
        answer.kind.label(),
        answer.grpc_code,
        answer.error_reason.as_deref(),
        answer.zenlayer_request_id.as_deref(),
        answer.error_message.as_deref(),
    )
    .execute(db)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// One call as the view shows it, for `GetRelease`.
#[derive(Debug, Clone)]
pub struct CallRow {
    pub call_id: Option<Uuid>,
    pub disk_id: Option<String>,
    pub principal: Option<String>,
    pub issuer: Option<String>,
    pub reason: Option<String>,
    pub idempotency_key: Option<String>,
    pub received_at: Option<chrono::DateTime<chrono::Utc>>,
    pub decision: Option<String>,
    pub decision_reason: Option<String>,
    pub outcome: Option<String>,
    pub outcome_recorded_by: Option<String>,
    pub completed_at: Option<chrono::DateTime<chrono::Utc>>,
    pub grpc_code: Option<String>,
    pub error_message: Option<String>,
    pub zenlayer_request_id: Option<String>,
    pub zenlayer_code: Option<String>,
    pub zenlayer_action: Option<String>,
    pub disk_name: Option<String>,
    pub zone_id: Option<String>,
    pub disk_size_gib: Option<i64>,
    pub disk_type: Option<String>,
    pub disk_status_before: Option<String>,
    pub disk_tags: Option<serde_json::Value>,
    pub disk_snapshot: Option<serde_json::Value>,
    pub confirmation: Option<String>,
    pub confirmed_at: Option<chrono::DateTime<chrono::Utc>>,
    pub replay_of: Option<Uuid>,
}

#[tracing::instrument(name = "audit.find_call", skip_all, fields(call_id = %call_id))]
pub(super) async fn find_call(
    db: &mut PgConnection,
    call_id: Uuid,
) -> Result<Option<CallRow>, sqlx::Error> {
    sqlx::query_as!(
        CallRow,
        "SELECT call_id, disk_id, principal, issuer, reason, idempotency_key, received_at,
                decision, decision_reason, outcome, outcome_recorded_by, completed_at, grpc_code,
                error_message, zenlayer_request_id, zenlayer_code, zenlayer_action, disk_name,
                zone_id, disk_size_gib, disk_type, disk_status_before, disk_tags, disk_snapshot,
                confirmation, confirmed_at, replay_of
         FROM audit.release_disk_calls WHERE call_id = $1",
        call_id,
    )
    .fetch_optional(db)
    .await
}
