//! The audit trail: every ReleaseDisk call, recorded in PostgreSQL before
//! anything is sent to Zenlayer, with its outcome afterwards.
//!
//! All writes go through [`AuditLog`]: one record in, one durable
//! acknowledgement out. Callers never see a transaction, so a later
//! implementation can gather many concurrent records into one commit
//! without changing them.

mod record;
mod recovery;
mod store;

pub use record::{Attempt, Caller, Decision, Outcome, OutcomeKind, Refusal};
pub use recovery::spawn_recovery;

use sqlx::PgPool;
use std::time::Duration;

/// The audit database could not store a record.
#[derive(Debug, thiserror::Error)]
#[error("the audit trail could not be written")]
pub struct AuditError(#[from] sqlx::Error);

/// Backoff for outcome writes: a database blip of up to about half a
/// minute is ridden out.
const OUTCOME_RETRY_FIRST: Duration = Duration::from_millis(50);
const OUTCOME_RETRY_MAX: Duration = Duration::from_secs(5);
const OUTCOME_ATTEMPTS: u32 = 10;

/// Writes audit records.
#[derive(Debug, Clone)]
pub struct AuditLog {
    pool: PgPool,
}

impl AuditLog {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Stores `attempt` durably: once this returns `Ok`, the record is
    /// committed. An allowed call must not be forwarded unless it did.
    pub async fn record_attempt(&self, attempt: &Attempt) -> Result<(), AuditError> {
        store::insert_attempt(&self.pool, attempt)
            .await
            .map_err(AuditError)
    }

    /// Stores `outcome`, retrying with backoff while the database is away.
    pub async fn record_outcome(&self, outcome: &Outcome) -> Result<(), AuditError> {
        let mut pause = OUTCOME_RETRY_FIRST;
        for attempt in 1.. {
            match store::insert_outcome(&self.pool, outcome).await {
                Ok(()) => return Ok(()),
                Err(error) if attempt >= OUTCOME_ATTEMPTS => return Err(AuditError(error)),
                Err(error) => {
                    tracing::warn!(call_id = %outcome.call_id, error = %error, retry_in_ms = pause.as_millis() as u64, "outcome not recorded yet; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(OUTCOME_RETRY_MAX);
                }
            }
        }
        unreachable!("the loop returns on its last attempt")
    }

    /// Marks allowed calls that have had no outcome for `older_than` as
    /// `unknown`; returns how many.
    pub async fn mark_abandoned_unknown(&self, older_than: Duration) -> Result<u64, AuditError> {
        store::mark_abandoned_unknown(&self.pool, older_than)
            .await
            .map_err(AuditError)
    }
}
