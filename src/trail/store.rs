//! The log's SQL: its size, stored subtrees, checkpoints, and the rows
//! behind its leaves.

use super::leaf::{AttemptRow, ConfirmationRow, FreezeRow, OutcomeRow};
use super::proof::{Subtree, Subtrees};
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

/// How many events the stored tree covers (the events `[0, size)`); the
/// later ones are numbered but not yet hashed.
pub async fn hashed_size(db: &mut PgConnection) -> Result<u64, sqlx::Error> {
    let size = sqlx::query_scalar!("SELECT size FROM audit.tree_head")
        .fetch_optional(db)
        .await?;
    Ok(size.map_or(0, |s| s as u64))
}

/// How many events the stored tree covers, and whether any leaf hash is
/// stored past that (read together, so a hashing that commits meanwhile
/// cannot make one look wrong against the other).
pub async fn hashed_size_and_leaves_past(
    db: &mut PgConnection,
) -> Result<(u64, bool), sqlx::Error> {
    let row = sqlx::query!(
        r#"SELECT h.size AS "size?",
                  EXISTS (SELECT 1 FROM audit.log_nodes n
                          WHERE n.level = 0 AND n.node_index >= coalesce(h.size, 0)) AS "past!"
           FROM (SELECT 1) one LEFT JOIN audit.tree_head h ON true"#
    )
    .fetch_one(db)
    .await?;
    Ok((row.size.map_or(0, |s| s as u64), row.past))
}

/// How many events the log's counter has numbered (`audit.log_head`).
pub async fn numbered_size(db: &mut PgConnection) -> Result<u64, sqlx::Error> {
    let size = sqlx::query_scalar!("SELECT size FROM audit.log_head")
        .fetch_optional(db)
        .await?;
    Ok(size.map_or(0, |s| s as u64))
}

/// Hashes up to `max_leaves` events after the tree's end into the stored
/// tree, in one transaction; returns how many it hashed.
pub async fn hash_events(db: &mut PgConnection, max_leaves: i32) -> Result<i32, sqlx::Error> {
    let hashed = sqlx::query_scalar!(r#"SELECT audit.hash_events($1) AS "hashed!""#, max_leaves)
        .fetch_one(db)
        .await?;
    Ok(hashed)
}

/// The stored hashes of `wanted` subtrees (those missing are left out).
pub async fn subtrees(db: &mut PgConnection, wanted: &[Subtree]) -> Result<Subtrees, sqlx::Error> {
    let levels: Vec<i16> = wanted.iter().map(|(l, _)| *l as i16).collect();
    let indexes: Vec<i64> = wanted.iter().map(|(_, i)| *i as i64).collect();
    let rows = sqlx::query!(
        "SELECT n.level, n.node_index, n.hash
         FROM UNNEST($1::int2[], $2::int8[]) AS w(level, node_index)
         JOIN audit.log_nodes n USING (level, node_index)",
        &levels,
        &indexes,
    )
    .fetch_all(db)
    .await?;
    let mut subtrees = Subtrees::new();
    for row in rows {
        if let Ok(hash) = <[u8; 32]>::try_from(row.hash.as_slice()) {
            subtrees.insert((row.level as u32, row.node_index as u64), hash);
        }
    }
    Ok(subtrees)
}

/// A signed checkpoint as stored.
#[derive(Debug, Clone)]
pub struct StoredCheckpoint {
    pub checkpoint_id: i64,
    pub tree_size: i64,
    pub note: String,
}

/// Stored checkpoints, largest tree first, `limit` from `offset` on.
pub async fn checkpoints_largest_first(
    db: &mut PgConnection,
    offset: i64,
    limit: i64,
) -> Result<Vec<StoredCheckpoint>, sqlx::Error> {
    sqlx::query_as!(
        StoredCheckpoint,
        "SELECT checkpoint_id, tree_size, note FROM audit.checkpoints
         ORDER BY tree_size DESC, checkpoint_id DESC OFFSET $1 LIMIT $2",
        offset,
        limit,
    )
    .fetch_all(db)
    .await
}

/// Every stored checkpoint, oldest first.
pub async fn checkpoints(db: &mut PgConnection) -> Result<Vec<StoredCheckpoint>, sqlx::Error> {
    sqlx::query_as!(
        StoredCheckpoint,
        "SELECT checkpoint_id, tree_size, note FROM audit.checkpoints ORDER BY checkpoint_id"
    )
    .fetch_all(db)
    .await
}

pub async fn insert_checkpoint(
    db: &mut PgConnection,
    size: u64,
    root: &[u8; 32],
    note: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO audit.checkpoints (tree_size, root_hash, note) VALUES ($1, $2, $3)",
        size as i64,
        root.as_slice(),
        note,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// One entry of the log, with its stored leaf hash.
#[derive(Debug, Clone)]
pub struct EventRow {
    pub log_index: i64,
    pub kind: String,
    /// `None` for a freeze, which belongs to no call.
    pub call_id: Option<Uuid>,
    pub row_id: Option<i64>,
    /// A copy of the row's own `recorded_at`, kept for readers who order
    /// or filter the log by time.
    pub recorded_at: DateTime<Utc>,
    pub leaf_hash: Option<Vec<u8>>,
}

/// Up to `limit` entries from `from` on, in order.
pub async fn events(
    db: &mut PgConnection,
    from: i64,
    limit: i64,
) -> Result<Vec<EventRow>, sqlx::Error> {
    sqlx::query_as!(
        EventRow,
        r#"SELECT e.log_index, e.kind, e.call_id, e.row_id, e.recorded_at, n.hash AS "leaf_hash?"
           FROM audit.events e
           LEFT JOIN audit.log_nodes n ON n.level = 0 AND n.node_index = e.log_index
           WHERE e.log_index >= $1
           ORDER BY e.log_index
           LIMIT $2"#,
        from,
        limit,
    )
    .fetch_all(db)
    .await
}

/// The log entries of one call, in order.
pub async fn events_of_call(
    db: &mut PgConnection,
    call_id: Uuid,
) -> Result<Vec<EventRow>, sqlx::Error> {
    sqlx::query_as!(
        EventRow,
        r#"SELECT e.log_index, e.kind, e.call_id, e.row_id, e.recorded_at, n.hash AS "leaf_hash?"
           FROM audit.events e
           LEFT JOIN audit.log_nodes n ON n.level = 0 AND n.node_index = e.log_index
           WHERE e.call_id = $1
           ORDER BY e.log_index"#,
        call_id,
    )
    .fetch_all(db)
    .await
}

pub async fn attempts(db: &mut PgConnection, ids: &[Uuid]) -> Result<Vec<AttemptRow>, sqlx::Error> {
    sqlx::query_as!(
        AttemptRow,
        r#"SELECT call_id, received_at, recorded_at, principal, issuer, client_id, token_jti,
                  token_fingerprint, roles AS "roles: Vec<Option<String>>", peer_addr,
                  peer_identity, user_agent, x_request_id,
                  trace_id, disk_id, reason, idempotency_key, replay_of, decision,
                  decision_reason, refusal_grpc_code, refusal_message,
                  disk_snapshot::text AS disk_snapshot, disk_name, zone_id, disk_size_gib,
                  disk_type, disk_status_before, disk_tags::text AS disk_tags, policy_set_hash,
                  policy_decision, policy_ids AS "policy_ids: Vec<Option<String>>",
                  shadow_policy_set_hash, shadow_policy_decision,
                  shadow_policy_ids AS "shadow_policy_ids: Vec<Option<String>>"
           FROM audit.release_attempts WHERE call_id = ANY($1)"#,
        ids,
    )
    .fetch_all(db)
    .await
}

pub async fn outcomes(db: &mut PgConnection, ids: &[i64]) -> Result<Vec<OutcomeRow>, sqlx::Error> {
    sqlx::query_as!(
        OutcomeRow,
        "SELECT outcome_id, call_id, completed_at, recorded_at, outcome, grpc_code, error_reason,
                zenlayer_code, zenlayer_request_id, http_status, error_message, recorded_by,
                zenlayer_action
         FROM audit.release_outcomes WHERE outcome_id = ANY($1)",
        ids,
    )
    .fetch_all(db)
    .await
}

pub async fn confirmations(
    db: &mut PgConnection,
    ids: &[i64],
) -> Result<Vec<ConfirmationRow>, sqlx::Error> {
    sqlx::query_as!(
        ConfirmationRow,
        "SELECT confirmation_id, call_id, recorded_at, confirmation, checked_at,
                zenlayer_request_id, disk_status, recorded_by
         FROM audit.release_confirmations WHERE confirmation_id = ANY($1)",
        ids,
    )
    .fetch_all(db)
    .await
}

pub async fn freezes(db: &mut PgConnection, ids: &[i64]) -> Result<Vec<FreezeRow>, sqlx::Error> {
    sqlx::query_as!(
        FreezeRow,
        "SELECT freeze_id, action, reason, operator, recorded_at
         FROM audit.release_freezes WHERE freeze_id = ANY($1)",
        ids,
    )
    .fetch_all(db)
    .await
}

/// Rows of the four tables that no log entry names: written around the
/// log (with its trigger disabled), so the log does not vouch for them.
pub async fn unlogged(db: &mut PgConnection) -> Result<Vec<(String, String)>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"SELECT 'attempt' AS "kind!", a.call_id::text AS "id!" FROM audit.release_attempts a
           WHERE NOT EXISTS (SELECT 1 FROM audit.events e WHERE e.kind = 'attempt' AND e.call_id = a.call_id)
           UNION ALL
           SELECT 'outcome', o.outcome_id::text FROM audit.release_outcomes o
           WHERE NOT EXISTS (SELECT 1 FROM audit.events e WHERE e.kind = 'outcome' AND e.row_id = o.outcome_id)
           UNION ALL
           SELECT 'confirmation', c.confirmation_id::text FROM audit.release_confirmations c
           WHERE NOT EXISTS (SELECT 1 FROM audit.events e WHERE e.kind = 'confirmation' AND e.row_id = c.confirmation_id)
           UNION ALL
           SELECT 'freeze', f.freeze_id::text FROM audit.release_freezes f
           WHERE NOT EXISTS (SELECT 1 FROM audit.events e WHERE e.kind = 'freeze' AND e.row_id = f.freeze_id)
           LIMIT 100"#
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|r| (r.kind, r.id)).collect())
}
