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
//! batch of several records for what one of them holds (a constraint, a
//! check, a trigger's exception) or rolls it back for a deadlock, each is
//! written again on its own, so only the bad one fails. Any other failure
//! fails the whole batch and nothing is written again: a batch whose
//! connection or server went away (even with an error from the server, as
//! a terminated backend sends) may have committed, and one that timed out
//! would time out again for each record.
//!
//! **Budgets.** When release budgets are set, a batch holding releases
//! runs as a transaction that first takes one advisory lock (so replicas
//! check budgets one at a time), then counts the releases in each window
//! with a fresh snapshot (everything committed by whoever held the lock
//! before), allots slots to the batch's releases in order, and records those
//! past a budget as refusals in the same statement. Two replicas can never
//! both take the last slot; batches without releases skip all of this.
//!
//! While a batch commits the next one gathers; at most
//! [`CONCURRENT_BATCHES`] are in flight, so under load batches grow instead
//! of queueing for connections, and a lone call is written at once.

use super::batch::Batch;
use super::error::AuditError;
use super::kept::Kept;
use super::record::{Attempt, Claim, OutcomeRecord, PriorCall, Recorded, RefusalRecord};
use super::store::{self, HeldKey};
use crate::budget::{Budget, BudgetScope, Budgets, OverBudget};
use crate::metrics::Metrics;
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use std::collections::{HashMap, HashSet};
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

/// How a release refused for its budget is recorded: the rendering the
/// caller's answer comes from (the RPC layer's, handed in at start-up).
pub type BudgetRefusal = fn(&OverBudget) -> RefusalRecord;

/// What every batch is written with.
#[derive(Debug, Clone)]
struct Rules {
    connections: Arc<Kept>,
    budgets: Budgets,
    refusal: BudgetRefusal,
}

impl Writer {
    /// Starts the writer; it stops once every `Writer` is dropped and the
    /// queue is empty.
    pub fn spawn(pool: PgPool, metrics: Metrics, budgets: Budgets, refusal: BudgetRefusal) -> Self {
        let (queue, jobs) = mpsc::channel(QUEUE_CAPACITY);
        let rules = Rules {
            connections: Arc::new(Kept::new(pool)),
            budgets,
            refusal,
        };
        tokio::spawn(run(rules, metrics, jobs));
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

async fn run(rules: Rules, metrics: Metrics, mut queue: mpsc::Receiver<Job>) {
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
        let rules = rules.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            metrics.audit_batch(jobs.len());
            commit(&rules, jobs).await;
            drop(slot);
        });
    }
}

/// Writes `jobs` and answers each; alone, one by one, if the database
/// refused them together.
async fn commit(rules: &Rules, jobs: Vec<Job>) {
    match write(rules, &jobs).await {
        Ok(results) => {
            for (job, result) in jobs.into_iter().zip(results) {
                let _ = job.reply.send(result);
            }
        }
        Err(AuditError::Database(error)) if jobs.len() > 1 && refused_a_record(&error) => {
            tracing::warn!(error = %error, records = jobs.len(), "the audit database refused a batch; writing its records one by one");
            for job in jobs {
                let result = write(rules, std::slice::from_ref(&job)).await;
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

/// Whether the database refused a batch for what its records hold:
/// SQLSTATE classes 22 (data exception), 23 (integrity constraint) and P0
/// (raised by a trigger), or a rollback for a deadlock or a conflict with
/// another transaction (40P01, 40001, 40002), which records written alone
/// may not meet. Never a connection, resource or timeout failure, nor
/// 40003, whose statement may have committed.
fn refused_a_record(error: &sqlx::Error) -> bool {
    let sqlx::Error::Database(error) = error else {
        return false;
    };
    error.code().is_some_and(|code| {
        matches!(code.get(..2), Some("22" | "23" | "P0"))
            || matches!(&*code, "40P01" | "40001" | "40002")
    })
}

/// One statement for all of `jobs` (in a budget-checking transaction when
/// they hold releases and budgets are set), then, for any attempt whose
/// claim was lost, the call holding its key.
async fn write(
    rules: &Rules,
    jobs: &[Job],
) -> Result<Vec<Result<Recorded, AuditError>>, AuditError> {
    let releases: Vec<usize> = (0..jobs.len())
        .filter(
            |&i| matches!(&jobs[i].event, Event::Attempt { attempt, .. } if is_release(attempt)),
        )
        .collect();
    let mut held = rules.connections.take().await?;
    let db = &mut *held.connection;
    let (stored, over) = if rules.budgets.any() && !releases.is_empty() {
        let mut tx = sqlx::Connection::begin(&mut *db).await?;
        store::lock_budgets(&mut tx).await?;
        let window = store::counted_releases(&mut tx, rules.budgets.longest_window()).await?;
        let claims: Vec<&Claim> = releases
            .iter()
            .filter_map(|&i| claim_of(&jobs[i]))
            .collect();
        let held = match claims.is_empty() {
            true => HashSet::new(),
            false => store::held_claims(&mut tx, &claims).await?,
        };
        let over = allot(&rules.budgets, &window, jobs, &releases, held);
        let batch = batch_of(jobs, &over, rules.refusal);
        let stored = store::write_batch(&mut tx, &batch).await?;
        tx.commit().await?;
        (stored, over)
    } else {
        let batch = batch_of(jobs, &HashMap::new(), rules.refusal);
        (store::write_batch(db, &batch).await?, HashMap::new())
    };
    // Committed: the stored attempts, each with its log index.
    let indexes: HashMap<Uuid, u64> = stored.into_iter().map(|(id, i)| (id, i as u64)).collect();
    let mut results = Vec::with_capacity(jobs.len());
    for (i, job) in jobs.iter().enumerate() {
        let result = match &job.event {
            Event::Attempt { attempt, .. } if over.contains_key(&i) => Ok(Recorded::OverBudget {
                over: over[&i].clone(),
                log_index: indexes.get(&attempt.call_id).copied(),
            }),
            Event::Attempt {
                attempt,
                claim: Some(claim),
            } if !indexes.contains_key(&attempt.call_id) => holder(db, claim).await,
            Event::Attempt { attempt, .. } | Event::Concluded { attempt, .. } => {
                Ok(Recorded::Stored {
                    log_index: indexes.get(&attempt.call_id).copied(),
                })
            }
            Event::Outcome(_) => Ok(Recorded::Stored { log_index: None }),
        };
        results.push(result);
    }
    // A connection whose last statement failed is handed back to the pool,
    // which tests it; the others are kept for the next batch.
    if results.iter().all(Result::is_ok) {
        rules.connections.keep(held);
    }
    Ok(results)
}

/// A release: an allowed call about to be forwarded (not a refusal, not a
/// replay), the only kind a budget counts.
fn is_release(attempt: &Attempt) -> bool {
    attempt.refusal.is_none() && attempt.replay_of.is_none()
}

/// The batch's columns; the releases past a budget (`over`) are recorded
/// as refusals, claiming no key.
fn batch_of(jobs: &[Job], over: &HashMap<usize, OverBudget>, refusal: BudgetRefusal) -> Batch {
    let mut batch = Batch::default();
    for (i, job) in jobs.iter().enumerate() {
        match &job.event {
            Event::Attempt { attempt, claim } => match over.get(&i) {
                Some(over) => {
                    let mut refused = attempt.clone();
                    refused.refusal = Some(refusal(over));
                    batch.attempt(&refused, None);
                }
                None => batch.attempt(attempt, claim.as_ref()),
            },
            Event::Concluded { attempt, outcome } => {
                batch.attempt(attempt, None);
                batch.outcome(outcome);
            }
            Event::Outcome(outcome) => batch.outcome(outcome),
        }
    }
    batch
}

/// A caller, as budgets count it: token issuer and subject.
type Principal = (Option<String>, Option<String>);

fn claim_of(job: &Job) -> Option<&Claim> {
    match &job.event {
        Event::Attempt { claim, .. } => claim.as_ref(),
        Event::Concluded { .. } | Event::Outcome(_) => None,
    }
}

fn held_key(claim: &Claim) -> HeldKey {
    (
        claim.issuer.clone(),
        claim.principal.clone(),
        claim.key.clone(),
    )
}

/// Gives the batch's releases (in order) the slots the budgets have left
/// after `window`'s releases; returns those that get none, with when a
/// slot frees. A release whose key is `held` (or claimed by an earlier
/// release of the batch) will lose its claim and not be sent: it takes no
/// slot, and its caller hears of the call holding the key, not of the
/// budget.
fn allot(
    budgets: &Budgets,
    window: &store::Window,
    jobs: &[Job],
    releases: &[usize],
    mut held: HashSet<HeldKey>,
) -> HashMap<usize, OverBudget> {
    let now = window.now;
    let within = |budget: &Budget, at: &DateTime<Utc>| {
        now.signed_duration_since(*at).to_std().unwrap_or_default() < budget.window
    };
    let counted = &window.releases;
    let mut total: Vec<DateTime<Utc>> = match &budgets.total {
        Some(b) => counted
            .iter()
            .map(|c| c.recorded_at)
            .filter(|t| within(b, t))
            .collect(),
        None => Vec::new(),
    };
    let mut per: HashMap<Principal, Vec<DateTime<Utc>>> = HashMap::new();
    if let Some(b) = &budgets.per_principal {
        for c in counted.iter().filter(|c| within(b, &c.recorded_at)) {
            per.entry((c.issuer.clone(), c.principal.clone()))
                .or_default()
                .push(c.recorded_at);
        }
    }
    let mut over = HashMap::new();
    for &i in releases {
        let Event::Attempt { attempt, claim } = &jobs[i].event else {
            continue;
        };
        if claim.as_ref().is_some_and(|c| held.contains(&held_key(c))) {
            continue;
        }
        let key = (
            attempt.caller.issuer.clone(),
            attempt.caller.principal.clone(),
        );
        let mine = per.entry(key).or_default();
        let exceeded = [
            (BudgetScope::Principal, budgets.per_principal, &*mine),
            (BudgetScope::Total, budgets.total, &total),
        ]
        .into_iter()
        .filter_map(|(scope, budget, times)| {
            let budget = budget?;
            (times.len() >= budget.limit as usize).then(|| OverBudget {
                scope,
                budget,
                retry_after: slot_frees(times, &budget, now),
            })
        })
        // With both full, the caller is told the later time: at the
        // earlier one the other budget would still refuse it.
        .max_by_key(|over| over.retry_after);
        match exceeded {
            Some(refused) => {
                over.insert(i, refused);
            }
            None => {
                mine.push(now);
                total.push(now);
                if let Some(claim) = claim {
                    held.insert(held_key(claim));
                }
            }
        }
    }
    over
}

/// When the window drops below the limit again: once the release that
/// keeps it full (the (n - limit + 1)th oldest of n) is out of it.
fn slot_frees(times: &[DateTime<Utc>], budget: &Budget, now: DateTime<Utc>) -> std::time::Duration {
    let mut sorted = times.to_vec();
    sorted.sort();
    let keeping = sorted.len() - budget.limit as usize;
    let frees = sorted[keeping] + chrono::Duration::from_std(budget.window).unwrap_or_default();
    frees
        .signed_duration_since(now)
        .to_std()
        .unwrap_or_default()
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
