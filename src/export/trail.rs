//! The exporter's SQL: where a `--since` export starts, and one page of
//! events after a cursor. Everything here only reads, so an `audit_reader`
//! login is all it needs.

use super::event::{
    AttemptRow, AuditEvent, ConfirmationRow, Exported, FreezeEvent, OutcomeRow, Stage,
};
use chrono::{DateTime, Utc};
use sqlx::PgConnection;

/// Why a page could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TrailError {
    #[error("reading audit.events failed")]
    Database(#[from] sqlx::Error),
    /// An event whose row is not where its kind says: the log and the
    /// tables disagree, which the triggers should make impossible.
    #[error("audit event {log_index} ({kind}) names a row that does not exist")]
    MissingRow { log_index: i64, kind: String },
}

/// The cursor to export after so as to start at the first event (in log
/// order) recorded at or after `since`: every event from there on follows,
/// whatever its own time. With none recorded since then, the log's end, so
/// `--follow` starts with the next event. The log has no index by time: this
/// reads it once, from the start.
pub async fn cursor_before(db: &mut PgConnection, since: DateTime<Utc>) -> Result<i64, TrailError> {
    let first = sqlx::query_scalar!(
        r#"SELECT COALESCE(
             (SELECT min(log_index) FROM audit.events WHERE recorded_at >= $1),
             (SELECT size FROM audit.log_head)
           ) AS "first!""#,
        since,
    )
    .fetch_one(db)
    .await?;
    Ok(first - 1)
}

/// Up to `limit` calls' events after `cursor`, with the freezes among
/// them, in log order. `log_index` is handed out in commit order (the next
/// index waits for the transaction holding the previous one to end), so
/// once an event is visible every event before it is too: reading after
/// the last index seen never skips one. Both reads stop at the log's size
/// as first read, so an event committed between them cannot slip past.
pub async fn page(
    db: &mut PgConnection,
    cursor: i64,
    limit: i64,
) -> Result<Vec<Exported>, TrailError> {
    let end = sqlx::query_scalar!("SELECT size FROM audit.log_head")
        .fetch_optional(&mut *db)
        .await?
        .unwrap_or(0);
    let calls = call_page(db, cursor, end, limit).await?;
    // A full page ends at its last event; the rest waits for the next one.
    let upto = match calls.last() {
        Some(last) if calls.len() as i64 == limit => last.log_index + 1,
        _ => end,
    };
    let freezes = freezes_between(db, cursor, upto).await?;
    let mut page: Vec<Exported> = calls
        .into_iter()
        .map(|event| Exported::Call(Box::new(event)))
        .chain(freezes.into_iter().map(Exported::Freeze))
        .collect();
    page.sort_by_key(Exported::log_index);
    Ok(page)
}

/// The freezes and unfreezes with `cursor < log_index < upto`.
async fn freezes_between(
    db: &mut PgConnection,
    cursor: i64,
    upto: i64,
) -> Result<Vec<FreezeEvent>, TrailError> {
    Ok(sqlx::query_as!(
        FreezeEvent,
        "SELECT e.log_index, f.recorded_at, f.freeze_id, f.action, f.reason, f.operator
         FROM audit.events e
         JOIN audit.release_freezes f ON e.kind = 'freeze' AND f.freeze_id = e.row_id
         WHERE e.log_index > $1 AND e.log_index < $2
         ORDER BY e.log_index",
        cursor,
        upto,
    )
    .fetch_all(db)
    .await?)
}

async fn call_page(
    db: &mut PgConnection,
    cursor: i64,
    end: i64,
    limit: i64,
) -> Result<Vec<AuditEvent>, TrailError> {
    let rows = sqlx::query!(
        r#"SELECT e.log_index, e.kind, e.recorded_at,
                  a.call_id, a.received_at, a.recorded_at AS attempt_recorded_at, a.principal,
                  a.issuer, a.client_id, a.token_jti, a.token_fingerprint, a.roles, a.peer_addr,
                  a.peer_identity, a.user_agent, a.x_request_id, a.trace_id, a.disk_id, a.reason,
                  a.idempotency_key, a.replay_of, a.decision, a.decision_reason,
                  a.refusal_grpc_code, a.refusal_message, a.disk_name, a.zone_id,
                  a.disk_size_gib, a.disk_type, a.disk_status_before, a.disk_tags,
                  a.disk_snapshot, a.policy_set_hash, a.policy_decision, a.policy_ids,
                  a.shadow_policy_set_hash, a.shadow_policy_decision, a.shadow_policy_ids,
                  o.outcome_id AS "outcome_id?", o.completed_at AS "completed_at?",
                  o.recorded_at AS "outcome_recorded_at?", o.outcome AS "outcome?",
                  o.grpc_code AS "grpc_code?", o.error_reason AS "error_reason?",
                  o.zenlayer_code AS "zenlayer_code?",
                  o.zenlayer_request_id AS "outcome_zenlayer_request_id?",
                  o.http_status AS "http_status?", o.error_message AS "error_message?",
                  o.zenlayer_action AS "zenlayer_action?",
                  o.recorded_by AS "outcome_recorded_by?",
                  f.confirmation_id AS "confirmation_id?",
                  f.recorded_at AS "confirmation_recorded_at?",
                  f.confirmation AS "confirmation?", f.checked_at AS "checked_at?",
                  f.zenlayer_request_id AS "confirmation_zenlayer_request_id?",
                  f.disk_status AS "disk_status?",
                  f.recorded_by AS "confirmation_recorded_by?"
           FROM audit.events e
           JOIN audit.release_attempts a ON a.call_id = e.call_id
           LEFT JOIN audit.release_outcomes o ON e.kind = 'outcome' AND o.outcome_id = e.row_id
           LEFT JOIN audit.release_confirmations f
                  ON e.kind = 'confirmation' AND f.confirmation_id = e.row_id
           WHERE e.log_index > $1 AND e.log_index < $3
           ORDER BY e.log_index
           LIMIT $2"#,
        cursor,
        limit,
        end,
    )
    .fetch_all(db)
    .await?;
    rows.into_iter()
        .map(|r| {
            let missing = || TrailError::MissingRow {
                log_index: r.log_index,
                kind: r.kind.clone(),
            };
            let stage = match r.kind.as_str() {
                "attempt" => Stage::Attempt,
                "outcome" => Stage::Outcome(OutcomeRow {
                    outcome_id: r.outcome_id.ok_or_else(missing)?,
                    completed_at: r.completed_at.ok_or_else(missing)?,
                    recorded_at: r.outcome_recorded_at.ok_or_else(missing)?,
                    outcome: r.outcome.clone().ok_or_else(missing)?,
                    grpc_code: r.grpc_code.clone().ok_or_else(missing)?,
                    error_reason: r.error_reason.clone(),
                    zenlayer_code: r.zenlayer_code.clone(),
                    zenlayer_request_id: r.outcome_zenlayer_request_id.clone(),
                    http_status: r.http_status,
                    error_message: r.error_message.clone(),
                    zenlayer_action: r.zenlayer_action.clone(),
                    recorded_by: r.outcome_recorded_by.clone().ok_or_else(missing)?,
                }),
                "confirmation" => Stage::Confirmation(ConfirmationRow {
                    confirmation_id: r.confirmation_id.ok_or_else(missing)?,
                    recorded_at: r.confirmation_recorded_at.ok_or_else(missing)?,
                    confirmation: r.confirmation.clone().ok_or_else(missing)?,
                    checked_at: r.checked_at.ok_or_else(missing)?,
                    zenlayer_request_id: r.confirmation_zenlayer_request_id.clone(),
                    disk_status: r.disk_status.clone(),
                    recorded_by: r.confirmation_recorded_by.clone().ok_or_else(missing)?,
                }),
                _ => return Err(missing()),
            };
            Ok(AuditEvent {
                log_index: r.log_index,
                recorded_at: r.recorded_at,
                stage,
                attempt: AttemptRow {
                    call_id: r.call_id,
                    received_at: r.received_at,
                    recorded_at: r.attempt_recorded_at,
                    principal: r.principal,
                    issuer: r.issuer,
                    client_id: r.client_id,
                    token_jti: r.token_jti,
                    token_fingerprint: r.token_fingerprint,
                    roles: r.roles,
                    peer_addr: r.peer_addr,
                    peer_identity: r.peer_identity,
                    user_agent: r.user_agent,
                    x_request_id: r.x_request_id,
                    trace_id: r.trace_id,
                    disk_id: r.disk_id,
                    reason: r.reason,
                    idempotency_key: r.idempotency_key,
                    replay_of: r.replay_of,
                    decision: r.decision,
                    decision_reason: r.decision_reason,
                    refusal_grpc_code: r.refusal_grpc_code,
                    refusal_message: r.refusal_message,
                    disk_name: r.disk_name,
                    zone_id: r.zone_id,
                    disk_size_gib: r.disk_size_gib,
                    disk_type: r.disk_type,
                    disk_status_before: r.disk_status_before,
                    disk_tags: r.disk_tags,
                    disk_snapshot: r.disk_snapshot,
                    policy_set_hash: r.policy_set_hash,
                    policy_decision: r.policy_decision,
                    policy_ids: r.policy_ids,
                    shadow_policy_set_hash: r.shadow_policy_set_hash,
                    shadow_policy_decision: r.shadow_policy_decision,
                    shadow_policy_ids: r.shadow_policy_ids,
                },
            })
        })
        .collect()
}
