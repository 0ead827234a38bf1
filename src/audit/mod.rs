//! The audit trail: every ReleaseDisk call, recorded in PostgreSQL before
//! anything is sent to Zenlayer, with its outcome afterwards; and the
//! idempotency keys claimed in the same transactions.
//!
//! All of a call's writes go through [`AuditLog`]: a record in, a durable
//! acknowledgement out. Callers never see a transaction: the writer
//! gathers concurrent records into one commit (see `writer`).

mod batch;
mod error;
mod follow_up;
mod kept;
mod record;
mod store;
mod upkeep;
mod writer;

pub use error::AuditError;
pub use follow_up::{FollowUpTiming, spawn_follow_up};
pub use record::{
    Answer, Attempt, Caller, Claim, OutcomeKind, OutcomeRecord, PolicyRecord, PriorCall, Recorded,
    RefusalRecord,
};
pub use store::CallRow;
pub use upkeep::{Upkeep, spawn_upkeep};

use crate::budget::Budgets;
use crate::metrics::Metrics;
use sqlx::PgPool;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::Instrument;
use uuid::Uuid;
pub use writer::BudgetRefusal;
use writer::{Event, Writer};

/// Backoff for outcome writes: a database blip of up to about half a
/// minute is ridden out.
const OUTCOME_RETRY_FIRST: Duration = Duration::from_millis(50);
const OUTCOME_RETRY_MAX: Duration = Duration::from_secs(5);
const OUTCOME_ATTEMPTS: u32 = 10;

/// Writes audit records.
#[derive(Debug, Clone)]
pub struct AuditLog {
    pool: PgPool,
    writer: Writer,
    metrics: Metrics,
    /// Counts failed writes, so that health can turn NOT_SERVING the moment
    /// calls start failing, not at the next probe.
    failures: Arc<watch::Sender<u64>>,
}

impl AuditLog {
    /// Starts the audit writer, which enforces `budgets` (recording the
    /// releases past them as `refusal` renders them): call from within the
    /// runtime.
    pub fn new(pool: PgPool, metrics: Metrics, budgets: Budgets, refusal: BudgetRefusal) -> Self {
        Self {
            writer: Writer::spawn(pool.clone(), metrics.clone(), budgets, refusal),
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
        let event = Event::Attempt {
            attempt: attempt.clone(),
            claim: claim.cloned(),
        };
        self.measured("attempt", self.writer.write(event)).await
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
    /// at the disk). Returns the attempt's log index, when it could be read.
    pub async fn record_concluded(
        &self,
        record: &'static str,
        attempt: &Attempt,
        outcome: &OutcomeRecord,
    ) -> Result<Option<u64>, AuditError> {
        let event = Event::Concluded {
            attempt: attempt.clone(),
            outcome: outcome.clone(),
        };
        match self.measured(record, self.writer.write(event)).await? {
            Recorded::Stored { log_index } => Ok(log_index),
            Recorded::KeyTaken(_) | Recorded::OverBudget { .. } => Ok(None),
        }
    }

    /// Stores `outcome` once, without retrying.
    pub async fn record_outcome_once(&self, outcome: &OutcomeRecord) -> Result<(), AuditError> {
        let event = Event::Outcome(outcome.clone());
        self.measured("outcome", self.writer.write(event)).await?;
        Ok(())
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

    /// Runs one write, timing it for the metrics, in a span of the call's
    /// trace that lasts until the record's batch has committed.
    async fn measured<T>(
        &self,
        record: &str,
        write: impl Future<Output = Result<T, AuditError>>,
    ) -> Result<T, AuditError> {
        let started = Instant::now();
        let span = tracing::info_span!(target: crate::telemetry::TRACE_ONLY, "audit.write", audit.record = record);
        let result = write.instrument(span).await;
        self.metrics
            .audit_written(record, started.elapsed(), result.is_ok());
        if result.is_err() {
            self.failures.send_modify(|failed| *failed += 1);
        }
        result
    }
}
