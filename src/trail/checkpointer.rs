//! Signing checkpoints: periodically while the log grows, and once more at
//! shutdown. Before it signs, the gateway hashes the events numbered since
//! the last time into the stored tree, then proves from the stored subtrees
//! that the tree extends the last checkpoint (its own, and the newest
//! stored one); a tree that does not is never signed, and is reported:
//! history was rewritten.

use super::checkpoint::{Checkpoint, LogKey};
use super::hash::Hash;
use super::hashing::{self, HashFailure};
use super::newest::newest_checkpoint;
use super::proof::{Plan, verify_consistency};
use super::store;
use crate::metrics::Metrics;
use sqlx::PgPool;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Signs this gateway's checkpoints.
#[derive(Debug, Clone)]
pub struct Checkpointer {
    pool: PgPool,
    key: Arc<LogKey>,
    metrics: Metrics,
    /// The last tree this process signed.
    signed: Arc<Mutex<Option<Checkpoint>>>,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointFailure {
    #[error("the audit database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("the audit log cannot be hashed: {0}")]
    Unhashable(String),
    #[error("the audit log's stored subtrees are incomplete for a tree of {0} events")]
    Incomplete(u64),
    #[error(
        "the audit log holds {size} events, fewer than checkpoint {checkpoint} already signed: events were removed"
    )]
    Shrunk { size: u64, checkpoint: u64 },
    #[error(
        "the audit log of {size} events is not an extension of checkpoint {checkpoint}: history was rewritten; no checkpoint is signed"
    )]
    Inconsistent { size: u64, checkpoint: u64 },
}

impl From<HashFailure> for CheckpointFailure {
    fn from(failure: HashFailure) -> Self {
        match failure {
            HashFailure::Database(error) => Self::Database(error),
            HashFailure::Broken(message) => Self::Unhashable(message),
        }
    }
}

impl CheckpointFailure {
    /// The log itself is wrong (not the database unreachable): a refusal
    /// to sign that on-call must hear about.
    fn is_refusal(&self) -> bool {
        match self {
            Self::Unhashable(_)
            | Self::Incomplete(_)
            | Self::Shrunk { .. }
            | Self::Inconsistent { .. } => true,
            Self::Database(_) => false,
        }
    }
}

impl Checkpointer {
    pub fn new(pool: PgPool, key: LogKey, metrics: Metrics) -> Self {
        metrics.checkpoint_current();
        Self {
            pool,
            key: Arc::new(key),
            metrics,
            signed: Arc::new(Mutex::new(None)),
        }
    }

    /// Signs the log as it is now, if it grew since the last checkpoint;
    /// returns the note signed.
    pub async fn sign_now(&self) -> Result<Option<String>, CheckpointFailure> {
        let mut db = self.pool.acquire().await?;
        // The newest stored checkpoint is read before the tree is caught
        // up: a checkpoint is stored only after the tree it signs was
        // hashed, so the tree read next covers it, unless events were
        // removed. (Read the other way round, another replica's checkpoint
        // signed in between would look like a log that shrank.)
        let newest_stored = newest_checkpoint(&mut db, &[self.key.verifier_key()]).await?;
        let size = hashing::catch_up(&mut db)
            .await
            .map_err(CheckpointFailure::from)
            .inspect_err(|failure| self.count_refusal(failure))?;
        let mut previous = self.signed.lock().expect("not poisoned").clone();
        if let Some((_, stored)) = newest_stored
            && previous.as_ref().is_none_or(|p| stored.size > p.size)
        {
            previous = Some(stored);
        }
        if let Some(previous) = previous.as_ref().filter(|p| p.size == size) {
            // Nothing new to sign; but the tree of that size must still be
            // the one signed (a log rewritten at the same length would
            // otherwise read as current until it grew).
            self.root_extending(&mut db, size, Some(previous))
                .await
                .inspect_err(|failure| self.count_refusal(failure))?;
            self.metrics.checkpoint_current();
            return Ok(None);
        }
        let root = self
            .root_extending(&mut db, size, previous.as_ref())
            .await
            .inspect_err(|failure| self.count_refusal(failure))?;
        let note = self.key.sign(size, root);
        store::insert_checkpoint(&mut db, size, &root, &note).await?;
        self.metrics.checkpoint(true);
        self.metrics.checkpoint_current();
        tracing::info!(tree_size = size, checkpoint = %note, "audit log checkpoint signed");
        *self.signed.lock().expect("not poisoned") = Some(Checkpoint {
            origin: self.key.origin().to_owned(),
            size,
            root,
        });
        Ok(Some(note))
    }

    fn count_refusal(&self, failure: &CheckpointFailure) {
        if failure.is_refusal() {
            self.metrics.checkpoint(false);
        }
    }

    /// The root of the tree of `size`, once proven to extend `previous`.
    async fn root_extending(
        &self,
        db: &mut sqlx::PgConnection,
        size: u64,
        previous: Option<&Checkpoint>,
    ) -> Result<Hash, CheckpointFailure> {
        // First, before anything else: an emptied log must not be signed
        // as "size 0" over a checkpoint of a larger tree.
        refuse_shrinking(size, previous)?;
        if size == 0 {
            return Ok(super::hash::empty_root());
        }
        let root_plan = Plan::root(size);
        let proof_plan = previous
            .filter(|p| p.size > 0 && p.size < size)
            .map(|p| Plan::consistency(p.size, size));
        let mut wanted = root_plan.needed.clone();
        if let Some(plan) = &proof_plan {
            wanted.extend_from_slice(&plan.needed);
        }
        let subtrees = store::subtrees(db, &wanted).await?;
        let root = root_plan
            .hashes(&subtrees)
            .and_then(|r| r.first().copied())
            .ok_or(CheckpointFailure::Incomplete(size))?;
        let Some(previous) = previous.filter(|p| p.size > 0) else {
            return Ok(root);
        };
        let path = match &proof_plan {
            Some(plan) => plan
                .hashes(&subtrees)
                .ok_or(CheckpointFailure::Incomplete(size))?,
            None => Vec::new(),
        };
        if !verify_consistency(previous.size, &previous.root, size, &root, &path) {
            return Err(CheckpointFailure::Inconsistent {
                size,
                checkpoint: previous.size,
            });
        }
        Ok(root)
    }
}

/// A tree smaller than one already signed is a log that lost events.
fn refuse_shrinking(size: u64, previous: Option<&Checkpoint>) -> Result<(), CheckpointFailure> {
    match previous {
        Some(previous) if previous.size > size => Err(CheckpointFailure::Shrunk {
            size,
            checkpoint: previous.size,
        }),
        Some(_) | None => Ok(()),
    }
}

/// Keeps the log's tree hashed and, with a signing key, signed.
#[derive(Debug, Clone)]
pub struct LogKeeper {
    pool: PgPool,
    checkpointer: Option<Checkpointer>,
}

impl LogKeeper {
    /// Without a checkpointer the tree is still hashed, so that `audit
    /// verify` and the stored subtrees stay current.
    pub fn new(pool: PgPool, checkpointer: Option<Checkpointer>) -> Self {
        Self { pool, checkpointer }
    }

    /// Hashes what was numbered since the last time and signs a checkpoint
    /// of it; a failure is logged, `which` naming the checkpoint ("final ").
    pub async fn keep_now(&self, which: &str) {
        match &self.checkpointer {
            Some(checkpointer) => {
                if let Err(error) = checkpointer.sign_now().await {
                    tracing::error!(error = %error, "no {which}audit log checkpoint was signed");
                }
            }
            None => {
                if let Err(error) = self.hash_now().await {
                    tracing::error!(error = %error, "the audit log's newest events were not hashed");
                }
            }
        }
    }

    /// Hashes what was numbered since the last time. A failure is only
    /// traced: the next keeping beat hashes too, and reports it.
    async fn hash_quietly(&self) {
        if let Err(error) = self.hash_now().await {
            tracing::debug!(error = %error, "hashing the audit log's newest events failed; the next checkpoint beat reports it");
        }
    }

    async fn hash_now(&self) -> Result<u64, CheckpointFailure> {
        let mut db = self.pool.acquire().await?;
        Ok(hashing::catch_up(&mut db).await?)
    }
}

/// Keeps the log every `interval` until `shutdown` (the final checkpoint is
/// the caller's, once in-flight calls have finished), and hashes it on a
/// shorter beat in between (see [`hash_beat`]).
pub fn spawn_log_keeper(keeper: LogKeeper, interval: Duration, shutdown: CancellationToken) {
    tokio::spawn(async move {
        // The first beat one interval after start, not at once: a previous
        // run's events were signed by its final checkpoint, or can wait.
        let mut ticks = beats(interval);
        let mut hash_ticks = beats(hash_beat(interval));
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticks.tick() => keeper.keep_now("").await,
                _ = hash_ticks.tick() => keeper.hash_quietly().await,
            }
        }
    });
}

/// Ticks every `every`, the first one `every` from now; a late tick delays
/// the next rather than bunching them.
fn beats(every: Duration) -> tokio::time::Interval {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks
}

/// How often the tree is hashed between checkpoints: a twentieth of the
/// signing interval (half a second by default), at least 50 ms. Hashing
/// only before each checkpoint hashed ten seconds of events at once, which
/// under load held one of a small database's cores for a second and stalled
/// the calls sharing it; in small steps the same work stalls nothing for long.
fn hash_beat(interval: Duration) -> Duration {
    (interval / 20).max(Duration::from_millis(50))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tree_is_hashed_twenty_times_a_checkpoint_interval_and_never_more_often_than_every_50_ms()
    {
        let ms = Duration::from_millis;
        assert_eq!(hash_beat(ms(10_000)), ms(500));
        assert_eq!(hash_beat(ms(3_600_000)), ms(180_000));
        assert_eq!(hash_beat(ms(1_000)), ms(50));
        assert_eq!(hash_beat(ms(100)), ms(50));
    }

    #[test]
    fn a_tree_smaller_than_a_signed_one_even_an_empty_one_is_refused() {
        let signed = Checkpoint {
            origin: "test".into(),
            size: 100,
            root: super::super::hash::empty_root(),
        };
        for size in [0, 1, 99] {
            assert!(
                matches!(
                    refuse_shrinking(size, Some(&signed)),
                    Err(CheckpointFailure::Shrunk {
                        checkpoint: 100,
                        ..
                    })
                ),
                "{size}"
            );
        }
        for size in [100, 101] {
            assert!(refuse_shrinking(size, Some(&signed)).is_ok(), "{size}");
        }
        assert!(refuse_shrinking(0, None).is_ok());
    }
}
