//! Proofs for readers: a call's events with their inclusion proofs against
//! the newest checkpoint, and consistency proofs between tree sizes.

use super::checkpoint::Checkpoint;
use super::hash::Hash;
use super::hashing::{self, HashFailure};
use super::newest::newest_checkpoint;
use super::proof::Plan;
use super::store::{self, EventRow};
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use std::sync::Arc;
use uuid::Uuid;

/// Reads the log for proofs.
#[derive(Debug, Clone)]
pub struct Trail {
    pool: PgPool,
    /// The log's verifier keys, when this reader has them (a gateway that
    /// signs; `audit prove --public-key`): only checkpoints one of them
    /// verifies are served.
    verifier_keys: Arc<[String]>,
}

/// One event of a call, as the log holds it.
#[derive(Debug, Clone)]
pub struct LoggedEvent {
    pub log_index: u64,
    pub kind: String,
    /// The leaf bytes, recomputed from the row (README: "The event log").
    pub leaf: Vec<u8>,
    pub leaf_hash: Hash,
    /// Against the checkpoint; empty when the event is newer than it.
    pub inclusion_path: Vec<Hash>,
    pub in_checkpoint: bool,
}

/// A call's events and what proves them.
#[derive(Debug, Clone)]
pub struct CallProof {
    /// The newest signed checkpoint, as signed.
    pub checkpoint_note: String,
    pub checkpoint: Checkpoint,
    pub events: Vec<LoggedEvent>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProveError {
    #[error("the audit database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("no checkpoint has been signed yet")]
    NoCheckpoint,
    #[error("the log's stored subtrees are incomplete")]
    Incomplete,
    #[error("tree sizes must satisfy 1 <= from_size <= to_size <= {0}")]
    Sizes(u64),
    #[error("the row behind log entry {0} is missing")]
    RowMissing(u64),
    #[error("log entry {0} names a call or time its row does not hold")]
    Misattributed(u64),
    #[error("the audit log cannot be hashed: {0}")]
    Unhashable(String),
}

impl From<HashFailure> for ProveError {
    fn from(failure: HashFailure) -> Self {
        match failure {
            HashFailure::Database(error) => Self::Database(error),
            HashFailure::Broken(message) => Self::Unhashable(message),
        }
    }
}

impl Trail {
    pub fn new(pool: PgPool, verifier_keys: Vec<String>) -> Self {
        Self {
            pool,
            verifier_keys: verifier_keys.into(),
        }
    }

    /// Whether the checkpoints served were verified with the log's key.
    pub fn checks_signatures(&self) -> bool {
        !self.verifier_keys.is_empty()
    }

    async fn newest(
        &self,
        db: &mut sqlx::PgConnection,
    ) -> Result<Option<(store::StoredCheckpoint, Checkpoint)>, sqlx::Error> {
        let keys: Vec<&str> = self.verifier_keys.iter().map(String::as_str).collect();
        newest_checkpoint(db, &keys).await
    }

    /// The newest stored checkpoint note that holds.
    pub async fn latest_note(&self) -> Result<Option<String>, sqlx::Error> {
        let mut db = self.pool.acquire().await?;
        let newest = self.newest(&mut db).await?;
        Ok(newest.map(|(stored, _)| stored.note))
    }

    pub async fn prove_call(&self, call_id: Uuid) -> Result<CallProof, ProveError> {
        let mut db = self.pool.acquire().await?;
        let (stored, checkpoint) = self
            .newest(&mut db)
            .await?
            .ok_or(ProveError::NoCheckpoint)?;
        let size = checkpoint.size;
        let rows = store::events_of_call(&mut db, call_id).await?;
        let leaves = leaves_of(&mut db, &rows).await?;
        let plans: Vec<Option<Plan>> = rows
            .iter()
            .map(|e| {
                ((e.log_index as u64) < size).then(|| Plan::inclusion(e.log_index as u64, size))
            })
            .collect();
        let wanted: Vec<_> = plans
            .iter()
            .flatten()
            .flat_map(|p| p.needed.clone())
            .collect();
        let subtrees = store::subtrees(&mut db, &wanted).await?;
        let mut events = Vec::with_capacity(rows.len());
        for ((row, leaf), plan) in rows.iter().zip(leaves).zip(plans) {
            if !leaf.matches(row) {
                return Err(ProveError::Misattributed(row.log_index as u64));
            }
            let leaf = leaf.bytes;
            let inclusion_path = match &plan {
                Some(plan) => plan.hashes(&subtrees).ok_or(ProveError::Incomplete)?,
                None => Vec::new(),
            };
            events.push(LoggedEvent {
                log_index: row.log_index as u64,
                kind: row.kind.clone(),
                leaf_hash: super::hash::leaf_hash(&leaf),
                leaf,
                inclusion_path,
                in_checkpoint: plan.is_some(),
            });
        }
        Ok(CallProof {
            checkpoint_note: stored.note,
            checkpoint,
            events,
        })
    }

    /// The proof that the tree of `from` events is a prefix of the tree of
    /// `to` events.
    pub async fn consistency(&self, from: u64, to: u64) -> Result<Vec<Hash>, ProveError> {
        let mut db = self.pool.acquire().await?;
        let mut size = store::hashed_size(&mut db).await?;
        // A size past the tree's end may be one numbered but not yet
        // hashed: hash it now rather than refuse a size the log has.
        if to > size {
            size = hashing::catch_up(&mut db).await?;
        }
        if from == 0 || from > to || to > size {
            return Err(ProveError::Sizes(size));
        }
        if from == to {
            return Ok(Vec::new());
        }
        let plan = Plan::consistency(from, to);
        let subtrees = store::subtrees(&mut db, &plan.needed).await?;
        plan.hashes(&subtrees).ok_or(ProveError::Incomplete)
    }
}

/// An event's leaf, computed from its row, with what the row says of the
/// columns `audit.events` copies from it (which the leaf does not cover).
#[derive(Debug, Clone)]
pub(super) struct RowLeaf {
    pub bytes: Vec<u8>,
    pub call_id: Option<Uuid>,
    pub recorded_at: DateTime<Utc>,
}

impl RowLeaf {
    /// Whether `event` copies the row's call and time as it was written:
    /// an entry repointed to another call would have that call's proofs
    /// and exports claim an event that is not its own.
    pub fn matches(&self, event: &EventRow) -> bool {
        self.call_id == event.call_id && self.recorded_at == event.recorded_at
    }
}

/// The leaves of `events`, from their rows.
pub(super) async fn leaves_of(
    db: &mut sqlx::PgConnection,
    events: &[EventRow],
) -> Result<Vec<RowLeaf>, ProveError> {
    let attempts = store::attempts(db, &ids(events, "attempt", |e| e.call_id)).await?;
    let outcomes = store::outcomes(db, &ids(events, "outcome", |e| e.row_id)).await?;
    let confirmations =
        store::confirmations(db, &ids(events, "confirmation", |e| e.row_id)).await?;
    let freezes = store::freezes(db, &ids(events, "freeze", |e| e.row_id)).await?;
    let leaf = |bytes, call_id, recorded_at| RowLeaf {
        bytes,
        call_id,
        recorded_at,
    };
    events
        .iter()
        .map(|e| {
            let i = e.log_index;
            let found = match e.kind.as_str() {
                "attempt" => attempts
                    .iter()
                    .find(|a| Some(a.call_id) == e.call_id)
                    .map(|a| leaf(a.leaf(i), Some(a.call_id), a.recorded_at)),
                "outcome" => outcomes
                    .iter()
                    .find(|o| Some(o.outcome_id) == e.row_id)
                    .map(|o| leaf(o.leaf(i), Some(o.call_id), o.recorded_at)),
                "freeze" => freezes
                    .iter()
                    .find(|f| Some(f.freeze_id) == e.row_id)
                    .map(|f| leaf(f.leaf(i), None, f.recorded_at)),
                _ => confirmations
                    .iter()
                    .find(|c| Some(c.confirmation_id) == e.row_id)
                    .map(|c| leaf(c.leaf(i), Some(c.call_id), c.recorded_at)),
            };
            found.ok_or(ProveError::RowMissing(i as u64))
        })
        .collect()
}

fn ids<T>(events: &[EventRow], kind: &str, id: impl Fn(&EventRow) -> Option<T>) -> Vec<T> {
    events
        .iter()
        .filter(|e| e.kind == kind)
        .filter_map(id)
        .collect()
}
