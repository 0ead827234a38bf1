//! Finding calls a crash left without an outcome. A call recorded as
//! allowed but never concluded may or may not have reached Zenlayer; once
//! no live gateway could still be waiting on it, it is marked `unknown` so
//! that security teams see it rather than a call forever "pending".

use super::AuditLog;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Sweeps at once (start-up) and then every `interval` until `shutdown`,
/// marking calls pending for longer than `older_than`.
pub fn spawn_recovery(
    audit: AuditLog,
    interval: Duration,
    older_than: Duration,
    shutdown: CancellationToken,
) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticks.tick() => {}
            }
            match audit.mark_abandoned_unknown(older_than).await {
                Ok(0) => {}
                Ok(marked) => tracing::warn!(
                    marked,
                    "calls left pending by an earlier stop marked unknown; check them with DescribeDisks"
                ),
                Err(error) => {
                    tracing::warn!(error = %error, "could not sweep for abandoned calls; will try again")
                }
            }
        }
    });
}
