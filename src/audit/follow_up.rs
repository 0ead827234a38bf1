//! After a call: confirming that an accepted release was seen through, and
//! resolving every call whose outcome is unknown. Both ask Zenlayer's
//! `DescribeDisks` and record what it says as new append-only events; no
//! row is ever changed.
//!
//! - **Confirmation.** `ReleaseDisk` is asynchronous upstream: a 200 means
//!   accepted. Each accepted release is looked at until its disk is no
//!   longer listed (`confirmed`), or until `confirm_within` has passed with
//!   the disk still listed (`not_confirmed`, logged at `error`).
//! - **Reconciliation.** A call whose outcome is `unknown` (no answer, a
//!   5xx that may have acted, or marked by the recovery sweep after a crash)
//!   is looked at once `settle` has passed since it became unknown, long
//!   enough for an accepted release to have shown: not listed means it
//!   succeeded; still `DELETING` means look again later; listed otherwise
//!   (still in the recycle bin) means it failed, and its idempotency key is
//!   freed so that a retry really tries again.
//!
//! Every replica runs this, at start-up (which picks up what a crash or a
//! shutdown left) and then periodically, in bounded batches. Each call is
//! followed up in a transaction holding its advisory lock, so with several
//! replicas on one database each call is looked at by one at a time and
//! resolved once (the unique indexes would refuse a second verdict anyway).
//! Confirmations, one per accepted release and so as many as releases, go
//! a hundred at a time: one transaction holding their locks, one
//! `DescribeDisks` for their disks, one statement for their verdicts.
//! Reconciliations are rare and go one by one.
//! While Zenlayer fails, the pause between sweeps doubles, up to a cap.
//!
//! **Finding what to confirm costs what is new, not the week.** Outcome
//! events are numbered in commit order without gaps (see the events
//! migration), so a replica remembers how far in the log its last walk
//! read, and the releases it walked past but is not done with (a disk still
//! listed within its time, a call another replica held). Each sweep looks
//! at those again, then reads the log from where it stopped to its end, a
//! range of its primary key at a time, and confirms all it finds (up to
//! [`CONFIRM_BATCHES`] batches a sweep), so confirmations keep pace with
//! releases. Nothing committed later can hide behind where a walk stopped:
//! an event committed after a walk read the log's size has an index at
//! least that size. A release another replica settles meanwhile is seen to
//! have its verdict and dropped. Only a replica's first walk starts from
//! the week's oldest unconfirmed release (found by time, reading the week
//! once). Looking for them by time on every sweep read every confirmed
//! release of the week, a quarter of a second of database time for
//! 150,000, and one batch a sweep confirmed only twenty releases a second.

use super::error::AuditError;
use super::record::{Answer, OutcomeKind, OutcomeRecord};
use super::store::{self, Confirmation, FollowUp, Unconfirmed};
use crate::deadline::Deadline;
use crate::domain::DiskId;
use crate::metrics::Metrics;
use crate::zenlayer::{Described, ZenlayerClient};
use sqlx::{PgPool, Postgres, Transaction};
use std::collections::HashSet;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Calls whose unknown outcome one sweep reconciles at most.
const BATCH: i64 = 20;

/// Accepted releases confirmed together: one transaction and one
/// `DescribeDisks` for all of them, one statement for their verdicts.
const CONFIRM_BATCH: usize = 100;

/// Confirmation batches one sweep makes at most (give or take one window's
/// worth): 10,000 releases every sweep (every five seconds by default) is
/// more than any cleanup job releases, and a sweep still ends, so that
/// reconciliation gets its turn.
const CONFIRM_BATCHES: usize = 100;

/// Log events one step of the walk reads: about a thousand calls' worth
/// (an attempt, an outcome and a confirmation each).
const WALK_WINDOW: i64 = 3_000;

/// Releases a replica keeps in memory to look at again (a few megabytes);
/// past this, its next walk rereads the log from the oldest of them.
const MAX_WAITING: usize = 20_000;
const _: () = assert!(CONFIRM_BATCH <= crate::zenlayer::MAX_DISKS_PER_DESCRIBE);

/// The longest pause between sweeps while Zenlayer keeps failing.
const MAX_PAUSE: Duration = Duration::from_secs(300);

/// How follow-ups are paced.
#[derive(Debug, Clone, Copy)]
pub struct FollowUpTiming {
    /// Between sweeps while all is well.
    pub interval: Duration,
    /// How long an accepted release may stay listed before it is recorded
    /// as not confirmed.
    pub confirm_within: Duration,
    /// How long after an outcome became unknown it is reconciled.
    pub settle: Duration,
}

/// Follows calls up until `shutdown`.
pub fn spawn_follow_up(
    pool: PgPool,
    zenlayer: ZenlayerClient,
    metrics: Metrics,
    timing: FollowUpTiming,
    shutdown: CancellationToken,
) {
    let mut worker = Worker {
        pool,
        zenlayer,
        metrics,
        timing,
        walk_from: None,
        waiting: Vec::new(),
    };
    tokio::spawn(async move {
        let mut pause = timing.interval;
        loop {
            let swept = worker.sweep().await;
            worker.metrics.follow_up_swept(swept.is_ok());
            pause = match swept {
                Ok(()) => timing.interval,
                Err(error) => {
                    tracing::warn!(error = %error, retry_in_ms = pause.as_millis() as u64, "following up releases failed; will try again");
                    (pause * 2).min(MAX_PAUSE.max(timing.interval))
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(pause) => {}
            }
        }
    });
}

/// Why a sweep stopped early.
#[derive(Debug, thiserror::Error)]
enum SweepError {
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error("Zenlayer's DescribeDisks failed: {0}")]
    Zenlayer(#[from] crate::zenlayer::UpstreamError),
}

impl From<sqlx::Error> for SweepError {
    fn from(error: sqlx::Error) -> Self {
        Self::Audit(error.into())
    }
}

struct Worker {
    pool: PgPool,
    zenlayer: ZenlayerClient,
    metrics: Metrics,
    timing: FollowUpTiming,
    /// Where the next walk for unconfirmed releases starts in the log;
    /// `None` until the first walk has found it.
    walk_from: Option<i64>,
    /// Releases walked past but not done with (a disk still listed within
    /// its time, a call another replica held): looked at again each sweep.
    waiting: Vec<Unconfirmed>,
}

impl Worker {
    async fn sweep(&mut self) -> Result<(), SweepError> {
        let (walk_from, waiting) = self.confirm_new().await?;
        (self.walk_from, self.waiting) = (Some(walk_from), waiting);
        let mut db = self.pool.acquire().await.map_err(AuditError::from)?;
        let unresolved = store::unresolved(&mut db, self.timing.settle, BATCH).await?;
        drop(db);
        for call in unresolved {
            self.reconcile(&call).await?;
        }
        Ok(())
    }

    /// Looks again at the releases waiting, then walks the log from
    /// `walk_from` to its end (as read before the walk), a window of
    /// [`WALK_WINDOW`] events at a time, confirming what it finds. Returns
    /// where the next walk starts and what waits for it. Past
    /// [`MAX_WAITING`] releases waiting, none is kept: the next walk starts
    /// at the oldest instead, and finds them all again. A failure leaves
    /// both as they were, so the next sweep covers this one.
    async fn confirm_new(&self) -> Result<(i64, Vec<Unconfirmed>), SweepError> {
        let mut db = self.pool.acquire().await.map_err(AuditError::from)?;
        let from = match self.walk_from {
            Some(from) => from,
            None => store::unconfirmed_start(&mut db).await?,
        };
        let end = store::log_size(&mut db).await?;
        let mut waiting = Vec::new();
        for batch in self.waiting.chunks(CONFIRM_BATCH) {
            waiting.extend(self.not_done(batch).await?);
        }
        let (mut next, mut batches) = (from, 0);
        while next < end && batches < CONFIRM_BATCHES {
            let to = end.min(next + WALK_WINDOW);
            let found = store::unconfirmed_between(&mut db, next, to).await?;
            for batch in found.chunks(CONFIRM_BATCH) {
                waiting.extend(self.not_done(batch).await?);
                batches += 1;
            }
            next = to;
        }
        if waiting.len() > MAX_WAITING {
            let oldest = waiting.iter().map(|u| u.log_index).min().unwrap_or(next);
            return Ok((oldest.min(next), Vec::new()));
        }
        Ok((next, waiting))
    }

    /// Confirms `batch`; returns those of it not done with.
    async fn not_done(&self, batch: &[Unconfirmed]) -> Result<Vec<Unconfirmed>, SweepError> {
        let done = self.confirm(batch).await?;
        Ok(batch
            .iter()
            .filter(|u| !done.contains(&u.call.call_id))
            .cloned()
            .collect())
    }

    /// Opens one reconciliation: a transaction holding the call's lock, and
    /// what `DescribeDisks` says of its disk now. `None` when another
    /// replica holds the call, when its outcome is known already, or when
    /// the disk id is not one (the audit trail holds it as it was validated
    /// when the call was allowed, so that does not happen).
    async fn look(
        &self,
        call: &FollowUp,
    ) -> Result<Option<(Transaction<'static, Postgres>, Described)>, SweepError> {
        let mut tx = self.pool.begin().await?;
        if !store::open_for_reconciliation(&mut tx, call.call_id).await? {
            return Ok(None);
        }
        let Ok(disk_id) = DiskId::parse(&call.disk_id) else {
            return Ok(None);
        };
        let described = self
            .zenlayer
            .describe_disk(&disk_id, Deadline::NONE, None)
            .await?;
        Ok(Some((tx, described)))
    }

    /// Confirms `batch` together: in one transaction holding the locks of
    /// those not yet confirmed and no other replica holds, asks one
    /// `DescribeDisks` about their disks, and records `confirmed` for each
    /// disk gone and `not_confirmed` for each listed too long. Returns the
    /// calls done with: those with a verdict, recorded now or before. A
    /// disk listed within its time, and a call another replica holds, are
    /// not: they are looked at again by a later sweep.
    async fn confirm(&self, batch: &[Unconfirmed]) -> Result<HashSet<Uuid>, SweepError> {
        if batch.is_empty() {
            return Ok(HashSet::new());
        }
        let mut tx = self.pool.begin().await?;
        let ids: Vec<Uuid> = batch.iter().map(|u| u.call.call_id).collect();
        let states = store::confirmation_states(&mut tx, &ids).await?;
        let mut done: HashSet<Uuid> = states
            .iter()
            .filter(|s| s.settled)
            .map(|s| s.call_id)
            .collect();
        let locked: HashSet<Uuid> = states
            .iter()
            .filter(|s| s.open)
            .map(|s| s.call_id)
            .collect();
        let mut open = Vec::new();
        for call in batch
            .iter()
            .map(|u| &u.call)
            .filter(|c| locked.contains(&c.call_id))
        {
            // Each disk id was validated when its call was allowed; one that
            // is not a disk id could never be looked at, so it is done too.
            match DiskId::parse(&call.disk_id) {
                Ok(disk_id) => open.push((call, disk_id)),
                Err(_) => {
                    done.insert(call.call_id);
                }
            }
        }
        if open.is_empty() {
            return Ok(done);
        }
        let disk_ids: Vec<DiskId> = open.iter().map(|(_, d)| d.clone()).collect();
        let described = self
            .zenlayer
            .describe_disks(&disk_ids, Deadline::NONE)
            .await?;
        let now = chrono::Utc::now();
        let verdicts: Vec<(&FollowUp, Confirmation<'_>)> = open
            .iter()
            .zip(&described.disks)
            .filter_map(|((call, _), disk)| {
                let confirmed = confirmation(
                    call.completed_at,
                    disk.is_some(),
                    now,
                    self.timing.confirm_within,
                )?;
                Some((
                    *call,
                    Confirmation {
                        call_id: call.call_id,
                        confirmed,
                        checked_at: now,
                        zenlayer_request_id: &described.request_id,
                        disk_status: disk.as_ref().and_then(|d| d.disk_status.as_deref()),
                        recorded_by: "confirmation",
                    },
                ))
            })
            .collect();
        if verdicts.is_empty() {
            return Ok(done);
        }
        let rows: Vec<Confirmation<'_>> = verdicts.iter().map(|(_, v)| v.clone()).collect();
        let recorded: HashSet<Uuid> = store::insert_confirmations(&mut tx, &rows)
            .await?
            .into_iter()
            .collect();
        tx.commit().await?;
        for (call, verdict) in &verdicts {
            if recorded.contains(&call.call_id) {
                self.report_confirmation(call, verdict);
            }
        }
        done.extend(recorded);
        Ok(done)
    }

    fn report_confirmation(&self, call: &FollowUp, verdict: &Confirmation<'_>) {
        let label = if verdict.confirmed {
            "confirmed"
        } else {
            "not_confirmed"
        };
        self.metrics.release_confirmed(label);
        if verdict.confirmed {
            tracing::info!(call_id = %call.call_id, disk_id = %call.disk_id, zenlayer.request_id = verdict.zenlayer_request_id, "release confirmed: Zenlayer no longer lists the disk");
        } else {
            tracing::error!(call_id = %call.call_id, disk_id = %call.disk_id, disk_status = verdict.disk_status, zenlayer.request_id = verdict.zenlayer_request_id, "release NOT confirmed: Zenlayer accepted it but still lists the disk; check it with Zenlayer support");
        }
    }

    /// Records what became of a call whose outcome was unknown, unless its
    /// disk is still `DELETING`, which is looked at again later.
    async fn reconcile(&self, call: &FollowUp) -> Result<(), SweepError> {
        let Some((mut tx, described)) = self.look(call).await? else {
            return Ok(());
        };
        let status = described.disk.as_ref().and_then(|d| d.disk_status.clone());
        let kind = match (&described.disk, status.as_deref()) {
            (None, _) => OutcomeKind::Succeeded,
            (Some(_), Some("DELETING")) => return Ok(()),
            (Some(_), _) => OutcomeKind::Failed,
        };
        let outcome = reconciled(call, kind, &described, status.as_deref());
        if store::insert_reconciled(&mut tx, &outcome).await? {
            match kind {
                OutcomeKind::Succeeded => {
                    let confirmation = Confirmation {
                        call_id: call.call_id,
                        confirmed: true,
                        checked_at: outcome.completed_at,
                        zenlayer_request_id: &described.request_id,
                        disk_status: None,
                        recorded_by: "reconciliation",
                    };
                    store::insert_confirmations(&mut tx, std::slice::from_ref(&confirmation))
                        .await?;
                }
                OutcomeKind::Failed | OutcomeKind::Unknown => {
                    store::free_key(&mut tx, call.call_id).await?;
                }
            }
            tx.commit().await?;
            self.metrics.release_reconciled(kind.label());
            tracing::warn!(call_id = %call.call_id, disk_id = %call.disk_id, outcome = kind.label(), zenlayer.request_id = %described.request_id, "an unknown outcome reconciled from DescribeDisks");
        }
        Ok(())
    }
}

/// The confirmation verdict on an accepted release recorded `completed_at`
/// whose disk Zenlayer still lists (`listed`) or not: `true` (confirmed)
/// once it is gone, `false` once it has been listed longer than `within`,
/// `None` (look again later) while it is listed within its time.
fn confirmation(
    completed_at: chrono::DateTime<chrono::Utc>,
    listed: bool,
    now: chrono::DateTime<chrono::Utc>,
    within: Duration,
) -> Option<bool> {
    let overdue =
        now - completed_at > chrono::Duration::from_std(within).unwrap_or(chrono::Duration::MAX);
    match (listed, overdue) {
        (false, _) => Some(true),
        (true, true) => Some(false),
        (true, false) => None,
    }
}

/// The outcome event of a reconciliation.
fn reconciled(
    call: &FollowUp,
    kind: OutcomeKind,
    described: &Described,
    status: Option<&str>,
) -> OutcomeRecord {
    let disk_id = &call.disk_id;
    let (grpc_code, reason, message) = match kind {
        OutcomeKind::Succeeded => ("OK", None, None),
        OutcomeKind::Failed | OutcomeKind::Unknown => (
            "UNAVAILABLE",
            Some("NOT_RELEASED".to_owned()),
            Some(format!(
                "reconciled: DescribeDisks still lists disk {disk_id} ({}), so the release did not happen; its idempotency key was freed, a retry releases it",
                status.unwrap_or("status unknown")
            )),
        ),
    };
    OutcomeRecord {
        call_id: call.call_id,
        completed_at: chrono::Utc::now(),
        answer: Answer {
            kind,
            grpc_code: grpc_code.to_owned(),
            error_reason: reason,
            error_message: message,
            zenlayer_code: None,
            zenlayer_request_id: Some(described.request_id.clone()),
            http_status: None,
            zenlayer_action: Some("DescribeDisks".to_owned()),
        },
        frees_key: kind == OutcomeKind::Failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_release_is_confirmed_once_its_disk_is_gone_and_not_confirmed_once_listed_too_long() {
        let released = chrono::Utc::now();
        let within = Duration::from_secs(600);
        let at = |secs: i64| released + chrono::Duration::seconds(secs);
        assert_eq!(confirmation(released, false, at(1), within), Some(true));
        assert_eq!(confirmation(released, false, at(3600), within), Some(true));
        assert_eq!(confirmation(released, true, at(1), within), None);
        assert_eq!(
            confirmation(released, true, at(600), within),
            None,
            "at the edge, still within"
        );
        assert_eq!(confirmation(released, true, at(601), within), Some(false));
    }
}
