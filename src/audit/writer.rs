//! Group commit: one writer takes whatever audit records are queued and
//! writes them in one statement (so one transaction, one round trip and one
//! commit for many calls), and each caller waits for its batch's commit.
//!
//! What this keeps, exactly as one transaction per record did:
//! - **Fail closed.** A caller learns that its attempt is stored only once
//!   the batch holding it has committed, and forwards nothing before; a
//!   batch that fails fails every record in it.
//! - **Idempotency.** Keys are claimed in the statement that stores the
//!   attempts, before them: an attempt whose claim is lost is not stored,
//!   and its caller hears who holds the key (looked up after the commit, so
//!   a holder in the same batch is seen). Two claims of one key in one batch
//!   are decided like two in a row: the first wins. A key held by another
//!   replica's open transaction makes the batch wait for it, as before.
//! - **No duplicates.** An outcome already stored (a retried write whose
//!   first commit went unacknowledged) is skipped by the unique indexes.
//!
//! One bad record must not fail the others: when the database refuses a
//! batch of several records (a constraint, not a lost connection), each is
//! written again on its own, so only the bad one fails.
//!
//! While a batch commits the next one gathers; at most
//! [`CONCURRENT_BATCHES`] are in flight, so under load batches grow instead
//! of queueing for connections, and a lone call is written at once.

use super::batch::Batch;
use super::error::AuditError;
use super::record::{Attempt, Claim, OutcomeRecord, PriorCall, Recorded};
use super::store;
use crate::metrics::Metrics;
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{Semaphore, mpsc, oneshot};
use uuid::Uuid;

/// Records per statement at most: a batch's statement stays small (a few
/// hundred kilobytes of parameters) and its commit quick.
const MAX_BATCH: usize = 256;

/// Batches being written at once. Audit transactions queue on the event
/// counter (see the events migration), so more would only hold connections.
const CONCURRENT_BATCHES: usize = 2;

/// Records waiting for a batch; callers past this wait to enqueue.
const QUEUE_CAPACITY: usize = 4096;

/// One record for the audit trail.
#[derive(Debug)]
pub(super) enum Event {
    /// A call as decided, claiming its key if it has one.
    Attempt {
        attempt: Attempt,
        claim: Option<Claim>,
    },
    /// A call that ended without being forwarded, with its outcome.
    Concluded {
        attempt: Attempt,
        outcome: OutcomeRecord,
    },
    /// How a forwarded call ended.
    Outcome(OutcomeRecord),
}

struct Job {
    event: Event,
    reply: oneshot::Sender<Result<Recorded, AuditError>>,
}

/// The queue into the writer; cheap to clone.
#[derive(Debug, Clone)]
pub(super) struct Writer {
    queue: mpsc::Sender<Job>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.event.fmt(f)
    }
}

impl Writer {
    /// Starts the writer; it stops once every `Writer` is dropped and the
    /// queue is empty.
    pub fn spawn(pool: PgPool, metrics: Metrics) -> Self {
        let (queue, jobs) = mpsc::channel(QUEUE_CAPACITY);
        tokio::spawn(run(pool, metrics, jobs));
        Self { queue }
    }

    /// Writes `event` and waits for its batch's commit. `KeyTaken` only for
    /// an attempt whose claim was lost (nothing stored).
    pub async fn write(&self, event: Event) -> Result<Recorded, AuditError> {
        let (reply, replied) = oneshot::channel();
        self.queue
            .send(Job { event, reply })
            .await
            .map_err(|_| AuditError::WriterStopped)?;
        replied.await.map_err(|_| AuditError::WriterStopped)?
    }
}

async fn run(pool: PgPool, metrics: Metrics, mut queue: mpsc::Receiver<Job>) {
    let slots = Arc::new(Semaphore::new(CONCURRENT_BATCHES));
    loop {
        let slot = slots
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let mut jobs = Vec::with_capacity(MAX_BATCH);
        if queue.recv_many(&mut jobs, MAX_BATCH).await == 0 {
            return;
        }
        let pool = pool.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            metrics.audit_batch(jobs.len());
            commit(&pool, jobs).await;
            drop(slot);
        });
    }
}

/// Writes `jobs` and answers each; alone, one by one, if the database
/// refused them together.
async fn commit(pool: &PgPool, jobs: Vec<Job>) {
    match write(pool, &jobs).await {
        Ok(results) => {
            for (job, result) in jobs.into_iter().zip(results) {
                let _ = job.reply.send(result);
            }
        }
        Err(AuditError::Database(error))
            if jobs.len() > 1 && matches!(*error, sqlx::Error::Database(_)) =>
        {
            tracing::warn!(error = %error, records = jobs.len(), "the audit database refused a batch; writing its records one by one");
            for job in jobs {
                let result = write(pool, std::slice::from_ref(&job)).await;
                let result = result.and_then(|mut results| results.remove(0));
                let _ = job.reply.send(result);
            }
        }
        Err(error) => {
            for job in jobs {
                let _ = job.reply.send(Err(error.clone()));
            }
        }
    }
}

/// One statement for all of `jobs`, then, for any attempt whose claim was
/// lost, the call holding its key.
async fn write(
    pool: &PgPool,
    jobs: &[Job],
) -> Result<Vec<Result<Recorded, AuditError>>, AuditError> {
    let mut batch = Batch::default();
    for job in jobs {
        match &job.event {
            Event::Attempt { attempt, claim } => batch.attempt(attempt, claim.as_ref()),
            Event::Concluded { attempt, outcome } => {
                batch.attempt(attempt, None);
                batch.outcome(outcome);
            }
            Event::Outcome(outcome) => batch.outcome(outcome),
        }
    }
    let mut db = pool.acquire().await?;
    let stored = store::write_batch(&mut db, &batch).await?;
    // Committed: from here on nothing may fail the batch. The receipts are
    // read back once (the log numbers events after the statement).
    let indexes: HashMap<Uuid, u64> = match store::attempt_indexes(&mut db, &stored).await {
        Ok(found) => found.into_iter().map(|(id, i)| (id, i as u64)).collect(),
        Err(error) => {
            tracing::warn!(error = %error, "the audit log indexes of committed attempts could not be read; their answers carry no receipt");
            HashMap::new()
        }
    };
    let mut results = Vec::with_capacity(jobs.len());
    for job in jobs {
        let result = match &job.event {
            Event::Attempt {
                attempt,
                claim: Some(claim),
            } if !stored.contains(&attempt.call_id) => holder(&mut db, claim).await,
            Event::Attempt { attempt, .. } | Event::Concluded { attempt, .. } => {
                Ok(Recorded::Stored {
                    log_index: indexes.get(&attempt.call_id).copied(),
                })
            }
            Event::Outcome(_) => Ok(Recorded::Stored { log_index: None }),
        };
        results.push(result);
    }
    Ok(results)
}

/// Who holds the key a claim lost. A key freed or purged since is, for the
/// caller, indistinguishable from one still in flight: retry shortly.
async fn holder(db: &mut sqlx::PgConnection, claim: &Claim) -> Result<Recorded, AuditError> {
    let holder = store::key_holder(db, claim).await?;
    Ok(Recorded::KeyTaken(holder.unwrap_or(PriorCall {
        call_id: Uuid::nil(),
        disk_id: claim.disk_id.clone(),
        answer: None,
    })))
}
