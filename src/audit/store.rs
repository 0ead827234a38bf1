//! The audit trail's SQL, one small function per statement.

use super::batch::Batch;
use super::record::{Answer, Claim, OutcomeKind, OutcomeRecord, PriorCall};
use sqlx::PgConnection;
use std::collections::HashSet;
use std::time::Duration;
use uuid::Uuid;

/// Writes a batch in one call (`audit.write_batch`, whose migration says
/// what its statement does), so in one transaction and one round trip:
/// claims the keys, stores the attempts whose claims were won (and those
/// without keys), stores the outcomes (skipping any already stored) and
/// frees the keys of calls Zenlayer certainly did not act on. Returns each
/// stored attempt with its log index (its caller's receipt).
pub(super) async fn write_batch(
    db: &mut PgConnection,
    batch: &Batch,
) -> Result<Vec<(Uuid, i64)>, sqlx::Error> {
    let (c, a, o) = (&batch.claims, &batch.attempts, &batch.outcomes);
    let rows = sqlx::query!(
        r#"SELECT stored_call_id AS "call_id!", stored_log_index AS "log_index!"
           FROM audit.write_batch($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14,
                                  $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26,
                                  $27, $28, $29, $30, $31, $32, $33, $34, $35, $36, $37, $38,
                                  $39, $40, $41, $42, $43, $44, $45, $46, $47, $48, $49, $50,
                                  $51)"#,
        &c.issuer,
        &c.principal,
        &c.key,
        &c.disk_id,
        &c.call_id,
        &a.call_id,
        &a.received_at,
        &a.principal as &[Option<String>],
        &a.issuer as &[Option<String>],
        &a.client_id as &[Option<String>],
        &a.token_jti as &[Option<String>],
        &a.token_fingerprint as &[Option<String>],
        &a.roles,
        &a.peer_addr as &[Option<String>],
        &a.user_agent as &[Option<String>],
        &a.x_request_id,
        &a.trace_id,
        &a.disk_id,
        &a.reason,
        &a.idempotency_key as &[Option<String>],
        &a.decision as &[&str],
        &a.decision_reason as &[Option<String>],
        &a.refusal_grpc_code as &[Option<&str>],
        &a.refusal_message as &[Option<String>],
        &a.replay_of as &[Option<Uuid>],
        &a.peer_identity as &[Option<String>],
        &a.disk_snapshot as &[Option<serde_json::Value>],
        &a.disk_name as &[Option<String>],
        &a.zone_id as &[Option<String>],
        &a.disk_size_gib as &[Option<i64>],
        &a.disk_type as &[Option<String>],
        &a.disk_status_before as &[Option<String>],
        &a.disk_tags as &[Option<serde_json::Value>],
        &a.claims_key,
        &o.call_id,
        &o.completed_at,
        &o.outcome as &[&str],
        &o.grpc_code,
        &o.error_reason as &[Option<String>],
        &o.zenlayer_code as &[Option<String>],
        &o.zenlayer_request_id as &[Option<String>],
        &o.http_status as &[Option<i32>],
        &o.error_message as &[Option<String>],
        &o.zenlayer_action as &[Option<String>],
        &batch.freed,
        &a.policy_set_hash as &[Option<String>],
        &a.policy_decision as &[Option<&str>],
        &a.policy_ids as &[Option<serde_json::Value>],
        &a.shadow_policy_set_hash as &[Option<String>],
        &a.shadow_policy_decision as &[Option<&str>],
        &a.shadow_policy_ids as &[Option<serde_json::Value>],
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|r| (r.call_id, r.log_index)).collect())
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

/// Takes the release-budget lock for this transaction: replicas check
/// budgets one at a time, each seeing what the one before committed.
pub(super) async fn lock_budgets(db: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "SELECT pg_advisory_xact_lock(hashtextextended('zenlayer-gateway release budgets', 7215))"
    )
    .execute(db)
    .await?;
    Ok(())
}

/// A release a budget counts.
#[derive(Debug, Clone)]
pub(super) struct Counted {
    pub issuer: Option<String>,
    pub principal: Option<String>,
    /// When its slot was taken: when its attempt was written, in the
    /// batch that checked the budget, just before it was sent.
    pub recorded_at: chrono::DateTime<chrono::Utc>,
}

/// The releases a budget counts, and the database's time they are counted
/// against.
#[derive(Debug, Clone)]
pub(super) struct Window {
    pub now: chrono::DateTime<chrono::Utc>,
    /// Oldest first.
    pub releases: Vec<Counted>,
}

/// The releases of the last `window` that Zenlayer may have acted on:
/// allowed and sent (not replays), and not ended `failed` (a refusal by
/// Zenlayer, a call never sent, or a pre-flight that stopped it). Pending
/// and unknown releases count. A release is in the window from the moment
/// its slot was taken (its attempt written, by the database's clock, as
/// `now` is read), not from when its caller asked: a call that spent
/// seconds looking at the disk was sent when it was written.
pub(super) async fn counted_releases(
    db: &mut PgConnection,
    window: Duration,
) -> Result<Window, sqlx::Error> {
    let rows = sqlx::query!(
        r#"SELECT n.at AS "now!", a.issuer, a.principal, a.recorded_at AS "recorded_at?"
           FROM (SELECT clock_timestamp() AS at) n
           LEFT JOIN audit.release_attempts a
             ON a.decision = 'allowed' AND a.replay_of IS NULL
            AND a.recorded_at > n.at - make_interval(secs => $1)
            AND NOT EXISTS (SELECT 1 FROM audit.release_outcomes o
                            WHERE o.call_id = a.call_id AND o.outcome = 'failed')
           ORDER BY a.recorded_at"#,
        window.as_secs_f64(),
    )
    .fetch_all(db)
    .await?;
    let now = rows.first().map_or_else(chrono::Utc::now, |r| r.now);
    let releases = rows
        .into_iter()
        .filter_map(|r| {
            Some(Counted {
                issuer: r.issuer,
                principal: r.principal,
                recorded_at: r.recorded_at?,
            })
        })
        .collect();
    Ok(Window { now, releases })
}

/// An idempotency key, as the keys table holds it: issuer, subject, key.
pub(super) type HeldKey = (String, String, String);

/// Which of `claims` are held already: a release whose claim will be lost
/// is answered with the call holding its key, and takes no budget slot.
/// The rows read stay locked until the transaction ends, so a key cannot
/// be freed (or purged) between this read and the batch's claims.
pub(super) async fn held_claims(
    db: &mut PgConnection,
    claims: &[&Claim],
) -> Result<HashSet<HeldKey>, sqlx::Error> {
    let issuers: Vec<&str> = claims.iter().map(|c| c.issuer.as_str()).collect();
    let principals: Vec<&str> = claims.iter().map(|c| c.principal.as_str()).collect();
    let keys: Vec<&str> = claims.iter().map(|c| c.key.as_str()).collect();
    let rows = sqlx::query!(
        r#"SELECT k.issuer, k.principal, k.idempotency_key
           FROM UNNEST($1::text[], $2::text[], $3::text[]) AS w(issuer, principal, idempotency_key)
           JOIN idempotency.keys k USING (issuer, principal, idempotency_key)
           FOR KEY SHARE OF k"#,
        &issuers as &[&str],
        &principals as &[&str],
        &keys as &[&str],
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.issuer, r.principal, r.idempotency_key))
        .collect())
}

/// Frees the idempotency key `call_id` claimed, if any.
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

/// An accepted release still to confirm, with its outcome event's index.
#[derive(Debug, Clone)]
pub(super) struct Unconfirmed {
    pub call: FollowUp,
    pub log_index: i64,
}

/// Where a walk for unconfirmed releases starts when none has walked
/// before: the log index of the oldest outcome event of an accepted release
/// (not a replay) of the last week with no confirmation, else the log's
/// size. Walks the week's confirmed releases once; later walks go by log
/// index from where the last one left off (see `unconfirmed_between`). The
/// size is read in the same snapshot, so every outcome committed after it
/// has an index at least that size (indexes are taken in commit order).
#[tracing::instrument(name = "audit.unconfirmed_start", skip_all)]
pub(super) async fn unconfirmed_start(db: &mut PgConnection) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT COALESCE(
             (SELECT min(e.log_index)
              FROM audit.release_outcomes o
              JOIN audit.release_attempts a ON a.call_id = o.call_id
              JOIN audit.events e ON e.kind = 'outcome' AND e.row_id = o.outcome_id
              WHERE o.outcome = 'succeeded' AND a.replay_of IS NULL
                AND o.completed_at > clock_timestamp() - make_interval(days => $1)
                AND NOT EXISTS (SELECT 1 FROM audit.release_confirmations c
                                WHERE c.call_id = o.call_id)),
             (SELECT size FROM audit.log_head)) AS "start!""#,
        SWEEP_WINDOW_DAYS,
    )
    .fetch_one(db)
    .await
}

/// How many events the log holds (committed); every event committed later
/// has an index at least this.
pub(super) async fn log_size(db: &mut PgConnection) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!("SELECT size FROM audit.log_head")
        .fetch_one(db)
        .await
}

/// Accepted releases (not replays) of the last week with no confirmation
/// yet whose outcome event is in `[from, to)`, in log order: a range of the
/// log's primary key, so the walk reads those events and nothing else
/// (both ends given, so that even a plan made without the values reads a
/// range, never the whole log).
#[tracing::instrument(name = "audit.unconfirmed_releases", skip_all)]
pub(super) async fn unconfirmed_between(
    db: &mut PgConnection,
    from: i64,
    to: i64,
) -> Result<Vec<Unconfirmed>, sqlx::Error> {
    let rows = sqlx::query!(
        "SELECT a.call_id, a.disk_id, o.completed_at, e.log_index
         FROM audit.events e
         JOIN audit.release_outcomes o ON o.outcome_id = e.row_id
         JOIN audit.release_attempts a ON a.call_id = o.call_id
         WHERE e.log_index >= $1 AND e.log_index < $2 AND e.kind = 'outcome'
           AND o.outcome = 'succeeded' AND a.replay_of IS NULL
           AND o.completed_at > clock_timestamp() - make_interval(days => $3)
           AND NOT EXISTS (SELECT 1 FROM audit.release_confirmations c WHERE c.call_id = o.call_id)
         ORDER BY e.log_index",
        from,
        to,
        SWEEP_WINDOW_DAYS,
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Unconfirmed {
            call: FollowUp {
                call_id: r.call_id,
                disk_id: r.disk_id,
                completed_at: r.completed_at,
            },
            log_index: r.log_index,
        })
        .collect())
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

/// Takes the call's follow-up lock for this transaction, and tells whether
/// the call is still unresolved: `false` when another replica holds the
/// lock (and follows the call up instead) or has already recorded a known
/// outcome since the call was listed. (A verdict committed meanwhile is
/// refused by the unique index, so nothing is recorded twice.)
pub(super) async fn open_for_reconciliation(
    db: &mut PgConnection,
    call_id: Uuid,
) -> Result<bool, sqlx::Error> {
    let open = sqlx::query_scalar!(
        r#"SELECT pg_try_advisory_xact_lock(hashtextextended($1::text, 7215))
                  AND NOT EXISTS (SELECT 1 FROM audit.release_outcomes
                                  WHERE call_id = $2 AND outcome <> 'unknown') AS "open!""#,
        call_id.to_string(),
        call_id,
    )
    .fetch_one(db)
    .await?;
    Ok(open)
}

/// Where each of `calls` stands for a confirming transaction: `settled`
/// (a verdict is recorded: done), else `open` (this transaction now holds
/// its follow-up lock), else neither (another replica is following it up
/// now). A verdict committed meanwhile is refused by the unique index, so
/// nothing is recorded twice.
pub(super) async fn confirmation_states(
    db: &mut PgConnection,
    calls: &[Uuid],
) -> Result<Vec<ConfirmationState>, sqlx::Error> {
    sqlx::query_as!(
        ConfirmationState,
        r#"SELECT s.call_id AS "call_id!", s.settled AS "settled!",
                  CASE WHEN s.settled THEN false
                       ELSE pg_try_advisory_xact_lock(hashtextextended(s.call_id::text, 7215))
                  END AS "open!"
           FROM (SELECT c.call_id,
                        EXISTS (SELECT 1 FROM audit.release_confirmations r
                                WHERE r.call_id = c.call_id) AS settled
                 FROM unnest($1::uuid[]) AS c(call_id)) s"#,
        calls,
    )
    .fetch_all(db)
    .await
}

/// See [`confirmation_states`].
#[derive(Debug)]
pub(super) struct ConfirmationState {
    pub call_id: Uuid,
    pub settled: bool,
    pub open: bool,
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

impl Confirmation<'_> {
    /// The verdict as the `confirmation` column spells it.
    pub fn label(&self) -> &'static str {
        if self.confirmed {
            "confirmed"
        } else {
            "not_confirmed"
        }
    }
}

/// Several confirmation verdicts in one statement (so the log's counter is
/// held for one statement, not one per verdict); returns the calls whose
/// verdicts were recorded (not one already held).
#[tracing::instrument(name = "audit.insert_confirmations", skip_all, fields(verdicts = verdicts.len()))]
pub(super) async fn insert_confirmations(
    db: &mut PgConnection,
    verdicts: &[Confirmation<'_>],
) -> Result<Vec<Uuid>, sqlx::Error> {
    let call_ids: Vec<Uuid> = verdicts.iter().map(|c| c.call_id).collect();
    let confirmations: Vec<&str> = verdicts.iter().map(Confirmation::label).collect();
    let checked_at: Vec<_> = verdicts.iter().map(|c| c.checked_at).collect();
    let request_ids: Vec<&str> = verdicts.iter().map(|c| c.zenlayer_request_id).collect();
    let statuses: Vec<Option<&str>> = verdicts.iter().map(|c| c.disk_status).collect();
    let recorded_by: Vec<&str> = verdicts.iter().map(|c| c.recorded_by).collect();
    sqlx::query_scalar!(
        r#"INSERT INTO audit.release_confirmations (
               call_id, confirmation, checked_at, zenlayer_request_id, disk_status, recorded_by)
           SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::timestamptz[], $4::text[],
                                $5::text[], $6::text[])
           ON CONFLICT DO NOTHING
           RETURNING call_id"#,
        &call_ids,
        &confirmations as &[&str],
        &checked_at,
        &request_ids as &[&str],
        &statuses as &[Option<&str>],
        &recorded_by as &[&str],
    )
    .fetch_all(db)
    .await
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
