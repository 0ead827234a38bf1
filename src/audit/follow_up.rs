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
//! While Zenlayer fails, the pause between sweeps doubles, up to a cap.

use super::error::AuditError;
use super::record::{Answer, OutcomeKind, OutcomeRecord};
use super::store::{self, Confirmation, FollowUp};
use crate::deadline::Deadline;
use crate::domain::DiskId;
use crate::metrics::Metrics;
use crate::zenlayer::{Described, ZenlayerClient};
use sqlx::{PgPool, Postgres, Transaction};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How many calls one sweep follows up, per kind.
const BATCH: i64 = 20;

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
    let worker = Worker {
        pool,
        zenlayer,
        metrics,
        timing,
    };
    tokio::spawn(async move {
        let mut pause = timing.interval;
        loop {
            pause = match worker.sweep().await {
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

/// Which verdict a follow-up is after.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Confirmation,
    Reconciliation,
}

struct Worker {
    pool: PgPool,
    zenlayer: ZenlayerClient,
    metrics: Metrics,
    timing: FollowUpTiming,
}

impl Worker {
    async fn sweep(&self) -> Result<(), SweepError> {
        let mut db = self.pool.acquire().await.map_err(AuditError::from)?;
        let unconfirmed = store::unconfirmed(&mut db, BATCH).await?;
        let unresolved = store::unresolved(&mut db, self.timing.settle, BATCH).await?;
        drop(db);
        for call in unconfirmed {
            self.confirm(&call).await?;
        }
        for call in unresolved {
            self.reconcile(&call).await?;
        }
        Ok(())
    }

    /// Opens one follow-up: a transaction holding the call's lock, and what
    /// `DescribeDisks` says of its disk now. `None` when another replica
    /// holds the call, when `kind`'s verdict is recorded already, or when
    /// the disk id is not one (the audit trail holds it as it was validated
    /// when the call was allowed, so that does not happen).
    async fn look(
        &self,
        call: &FollowUp,
        kind: Kind,
    ) -> Result<Option<(Transaction<'static, Postgres>, Described)>, SweepError> {
        let mut tx = self.pool.begin().await?;
        if !store::lock_call(&mut tx, call.call_id).await? {
            return Ok(None);
        }
        let done = match kind {
            Kind::Confirmation => store::has_confirmation(&mut tx, call.call_id).await?,
            Kind::Reconciliation => store::has_known_outcome(&mut tx, call.call_id).await?,
        };
        let Ok(disk_id) = DiskId::parse(&call.disk_id) else {
            return Ok(None);
        };
        if done {
            return Ok(None);
        }
        let described = self
            .zenlayer
            .describe_disk(&disk_id, Deadline::NONE, None)
            .await?;
        Ok(Some((tx, described)))
    }

    /// Records `confirmed` once the disk is gone, `not_confirmed` once it
    /// has been listed for too long; otherwise leaves it for a later sweep
    /// (a `DELETING` disk is looked at again).
    async fn confirm(&self, call: &FollowUp) -> Result<(), SweepError> {
        let Some((mut tx, described)) = self.look(call, Kind::Confirmation).await? else {
            return Ok(());
        };
        let overdue = chrono::Utc::now() - call.completed_at
            > chrono::Duration::from_std(self.timing.confirm_within)
                .unwrap_or(chrono::Duration::MAX);
        let still = described.disk.as_ref().and_then(|d| d.disk_status.clone());
        let confirmed = match (&described.disk, overdue) {
            (None, _) => true,
            (Some(_), true) => false,
            (Some(_), false) => return Ok(()),
        };
        let verdict = Confirmation {
            call_id: call.call_id,
            confirmed,
            checked_at: chrono::Utc::now(),
            zenlayer_request_id: &described.request_id,
            disk_status: still.as_deref(),
            recorded_by: "confirmation",
        };
        if store::insert_confirmation(&mut tx, &verdict).await? {
            tx.commit().await?;
            self.report_confirmation(call, &verdict);
        }
        Ok(())
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
        let Some((mut tx, described)) = self.look(call, Kind::Reconciliation).await? else {
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
                    store::insert_confirmation(&mut tx, &confirmation).await?;
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
