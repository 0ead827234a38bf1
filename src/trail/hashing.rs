//! Hashing the log's tree. A call only numbers its events; their leaves and
//! the subtrees they complete are added here, in bulk and off every call's
//! path, before each checkpoint is signed (the bulk-hashing migration says
//! why that costs no tamper evidence: only a signed checkpoint is evidence,
//! and one is signed only over hashed events).

use super::store;
use sqlx::PgConnection;

/// Events hashed per transaction: a busy minute's backlog is a handful of
/// transactions, and none holds the tree's head for long (a fraction of a
/// second each on a 2-core machine). Calls never wait for it.
const CHUNK: i32 = 5_000;

/// The SQLSTATE (`data_corrupted`) with which the database refuses to hash
/// past an event that, or whose row, is missing.
const BROKEN: &str = "XX001";

#[derive(Debug, thiserror::Error)]
pub enum HashFailure {
    #[error("the audit database: {0}")]
    Database(sqlx::Error),
    /// An entry of the log, or the row behind it, is gone: the database's
    /// own message names the event. Nothing past it is hashed, so no
    /// checkpoint will ever cover it.
    #[error("{0}")]
    Broken(String),
}

/// The SQLSTATE (`unique_violation`) of a leaf or subtree stored twice:
/// hashing only ever adds what lies past the tree's head, so one is already
/// there only if the head was moved back.
const STORED_TWICE: &str = "23505";

impl From<sqlx::Error> for HashFailure {
    fn from(error: sqlx::Error) -> Self {
        match error.as_database_error() {
            Some(db) if db.code().as_deref() == Some(BROKEN) => {
                Self::Broken(db.message().to_owned())
            }
            Some(db) if db.code().as_deref() == Some(STORED_TWICE) => Self::Broken(
                "audit log: leaf hashes are stored past the tree's head (audit.tree_head was moved back), so nothing more is hashed: run `zenlayer-gateway audit verify`".to_owned(),
            ),
            _ => Self::Database(error),
        }
    }
}

/// Hashes every event numbered so far; returns how many events the tree
/// covers (at least those numbered when it was called).
pub async fn catch_up(db: &mut PgConnection) -> Result<u64, HashFailure> {
    while store::hash_events(db, CHUNK).await? == CHUNK {}
    Ok(store::hashed_size(db).await?)
}
