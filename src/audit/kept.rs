//! The writer's connections, kept between batches instead of being handed
//! back to the pool after each one. The pool tests every connection handed
//! back with a round trip to the database; for the writer that would be one
//! more trip per batch, each waking the database's backend and then the
//! gateway, which costs more CPU on both sides than the batch's own
//! statement does when calls are few.
//!
//! What the pool's tests guard against is kept: a connection whose batch
//! failed is never kept (the pool then tests it as usual and closes it if it
//! is broken); one idle for [`PING_WHEN_IDLE_FOR`] is pinged before use,
//! as the pool does, so a database restarted in the meantime fails no
//! batch; and one kept for [`KEEP_AT_MOST`] goes back to the pool, whose
//! lifetime rules then apply to it.

use crate::database::PING_WHEN_IDLE_FOR;
use sqlx::pool::PoolConnection;
use sqlx::{PgPool, Postgres};
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// How long the writer keeps one connection before handing it back.
const KEEP_AT_MOST: Duration = Duration::from_secs(60);

/// A connection of the pool's that the writer holds.
#[derive(Debug)]
pub(super) struct Held {
    pub(super) connection: PoolConnection<Postgres>,
    taken_at: Instant,
    last_used: Instant,
}

/// The writer's idle connections (at most one per batch in flight).
#[derive(Debug)]
pub(super) struct Kept {
    pool: PgPool,
    idle: Mutex<Vec<Held>>,
}

impl Kept {
    pub(super) fn new(pool: PgPool) -> Self {
        Self {
            pool,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// A kept connection, pinged first if it sat idle a while, or else a
    /// fresh one from the pool.
    pub(super) async fn take(&self) -> Result<Held, sqlx::Error> {
        let kept = self.idle.lock().expect("never poisoned").pop();
        // One that fails its ping is dropped: the pool then closes it.
        if let Some(mut held) = kept
            && (held.last_used.elapsed() < PING_WHEN_IDLE_FOR
                || sqlx::Connection::ping(&mut *held.connection).await.is_ok())
        {
            return Ok(held);
        }
        let connection = self.pool.acquire().await?;
        let now = Instant::now();
        Ok(Held {
            connection,
            taken_at: now,
            last_used: now,
        })
    }

    /// Keeps `held` for the next batch, after a batch that went well;
    /// hands it back to the pool once it has been kept long enough.
    pub(super) fn keep(&self, mut held: Held) {
        if held.taken_at.elapsed() >= KEEP_AT_MOST {
            return;
        }
        held.last_used = Instant::now();
        self.idle.lock().expect("never poisoned").push(held);
    }
}
