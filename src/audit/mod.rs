//! The audit trail: every ReleaseDisk call, recorded in PostgreSQL before
//! anything is sent to Zenlayer, with its outcome afterwards; and the
//! idempotency keys claimed in the same transactions.
//!
//! All writes go through [`AuditLog`]: a record in, a durable
//! acknowledgement out. Callers never see a transaction, so a later
//! implementation can gather many concurrent records into one commit
//! without changing them.

mod error;
mod follow_up;
mod record;
mod store;
mod upkeep;

pub use error::AuditError;
pub use follow_up::{FollowUpTiming, spawn_follow_up};
pub use record::{
    Answer, Attempt, Caller, Claim, OutcomeKind, OutcomeRecord, PolicyRecord, PriorCall, Recorded,
    RefusalRecord,
};
pub use store::CallRow;
pub use upkeep::{Upkeep, spawn_upkeep};

use crate::metrics::Metrics;
use sqlx::PgPool;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use uuid::Uuid;

/// Backoff for outcome writes: a database blip of up to about half a
/// minute is ridden out.
const OUTCOME_RETRY_FIRST: Duration = Duration::from_millis(50);
const OUTCOME_RETRY_MAX: Duration = Duration::from_secs(5);
const OUTCOME_ATTEMPTS: u32 = 10;

/// Writes audit records.
#[derive(Debug, Clone)]
pub struct AuditLog {
    pool: PgPool,
    metrics: Metrics,
    /// Counts failed writes, so that health can turn NOT_SERVING the moment
    /// calls start failing, not at the next probe.
    failures: Arc<watch::Sender<u64>>,
}

impl AuditLog {
    pub fn new(pool: PgPool, metrics: Metrics) -> Self {
        Self {
            pool,
            metrics,
            failures: Arc::new(watch::Sender::new(0)),
        }
    }

    /// Changes whenever a write fails.
    pub fn failures(&self) -> watch::Receiver<u64> {
        self.failures.subscribe()
    }

    /// Stores `attempt` durably, claiming `claim` in the same transaction.
    /// Once this returns `Stored`, the record is committed; an allowed call
    /// must not be forwarded unless it did. `KeyTaken` stores nothing.
    pub async fn record_attempt(
        &self,
        attempt: &Attempt,
        claim: Option<&Claim>,
    ) -> Result<Recorded, AuditError> {
        self.measured("attempt", self.insert_attempt(attempt, claim))
            .await
    }

    /// One call as the view shows it now, if it exists.
    pub async fn call(&self, call_id: Uuid) -> Result<Option<CallRow>, AuditError> {
        let mut db = self.pool.acquire().await?;
        Ok(store::find_call(&mut db, call_id).await?)
    }

    /// The call holding `claim`'s key, if any, with its best-known outcome.
    pub async fn key_holder(&self, claim: &Claim) -> Result<Option<PriorCall>, AuditError> {
        let mut db = self.pool.acquire().await?;
        Ok(store::key_holder(&mut db, claim).await?)
    }

    /// Stores a call that ended without being forwarded together with its
    /// outcome, atomically; `record` names it in the metrics: `replay` (a
    /// key's earlier answer told again) or `preflight` (decided by the look
    /// at the disk).
    pub async fn record_concluded(
        &self,
        record: &'static str,
        attempt: &Attempt,
        outcome: &OutcomeRecord,
    ) -> Result<(), AuditError> {
        self.measured(record, self.insert_concluded(attempt, outcome))
            .await
    }

    /// Stores `outcome` once, without retrying.
    pub async fn record_outcome_once(&self, outcome: &OutcomeRecord) -> Result<(), AuditError> {
        self.measured("outcome", self.insert_outcome(outcome)).await
    }

    /// Stores `outcome`, retrying with backoff while the database is away.
    /// A write that already succeeded is not repeated (see the unique
    /// indexes), so this may follow [`record_outcome_once`](Self::record_outcome_once).
    pub async fn record_outcome(&self, outcome: &OutcomeRecord) -> Result<(), AuditError> {
        let mut pause = OUTCOME_RETRY_FIRST;
        let mut attempt = 1;
        loop {
            match self.record_outcome_once(outcome).await {
                Ok(()) => return Ok(()),
                Err(error) if attempt >= OUTCOME_ATTEMPTS => return Err(error),
                Err(error) => {
                    tracing::warn!(call_id = %outcome.call_id, error = %error, retry_in_ms = pause.as_millis() as u64, "outcome not recorded yet; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(OUTCOME_RETRY_MAX);
                    attempt += 1;
                }
            }
        }
    }

    /// Runs one write, timing it for the metrics.
    async fn measured<T>(
        &self,
        record: &str,
        write: impl Future<Output = Result<T, AuditError>>,
    ) -> Result<T, AuditError> {
        let started = Instant::now();
        let result = write.await;
        self.metrics
            .audit_written(record, started.elapsed(), result.is_ok());
        if result.is_err() {
            self.failures.send_modify(|failed| *failed += 1);
        }
        result
    }

    async fn insert_attempt(
        &self,
        attempt: &Attempt,
        claim: Option<&Claim>,
    ) -> Result<Recorded, AuditError> {
        let mut tx = self.pool.begin().await?;
        store::insert_attempt(&mut tx, attempt).await?;
        if let Some(claim) = claim
            && !store::claim_key(&mut tx, claim, attempt.call_id).await?
        {
            let holder = store::key_holder(&mut tx, claim).await?;
            tx.rollback().await?;
            // A key freed or purged since the conflict is, for this caller,
            // indistinguishable from one still in flight: retry shortly.
            let holder = holder.unwrap_or(PriorCall {
                call_id: Uuid::nil(),
                disk_id: claim.disk_id.clone(),
                answer: None,
            });
            return Ok(Recorded::KeyTaken(holder));
        }
        tx.commit().await?;
        Ok(Recorded::Stored)
    }

    async fn insert_concluded(
        &self,
        attempt: &Attempt,
        outcome: &OutcomeRecord,
    ) -> Result<(), AuditError> {
        let mut tx = self.pool.begin().await?;
        store::insert_attempt(&mut tx, attempt).await?;
        store::insert_outcome(&mut tx, outcome).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn insert_outcome(&self, outcome: &OutcomeRecord) -> Result<(), AuditError> {
        let mut tx = self.pool.begin().await?;
        store::insert_outcome(&mut tx, outcome).await?;
        if outcome.frees_key {
            store::free_key(&mut tx, outcome.call_id).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
