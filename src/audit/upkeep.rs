//! Background upkeep of the audit database, run by every replica (each
//! statement is safe to run concurrently):
//! - calls a crash left without an outcome may or may not have reached
//!   Zenlayer; once no live gateway could still be waiting on one, it is
//!   marked `unknown`, so security teams see it rather than a call forever
//!   "pending";
//! - idempotency keys older than the retention period are purged (the calls
//!   they point to stay in the audit trail).

use super::error::AuditError;
use super::store;
use sqlx::PgPool;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What upkeep does and how often.
#[derive(Debug, Clone, Copy)]
pub struct Upkeep {
    pub interval: Duration,
    /// A call pending for longer than this was abandoned.
    pub abandoned_after: Duration,
    pub key_retention: Duration,
}

/// Runs upkeep at once (start-up) and then every `interval` until `shutdown`.
pub fn spawn_upkeep(pool: PgPool, upkeep: Upkeep, shutdown: CancellationToken) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(upkeep.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticks.tick() => {}
            }
            if let Err(error) = run_once(&pool, upkeep).await {
                tracing::warn!(error = %error, "audit upkeep failed; will try again");
            }
        }
    });
}

async fn run_once(pool: &PgPool, upkeep: Upkeep) -> Result<(), AuditError> {
    let mut db = pool.acquire().await?;
    let marked = store::mark_abandoned_unknown(&mut db, upkeep.abandoned_after).await?;
    if marked > 0 {
        tracing::warn!(
            marked,
            "calls left pending by an earlier stop marked unknown; check them with DescribeDisks"
        );
    }
    let purged = store::purge_keys(&mut db, upkeep.key_retention).await?;
    if purged > 0 {
        tracing::info!(purged, "expired idempotency keys purged");
    }
    Ok(())
}
