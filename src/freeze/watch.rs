//! Keeps the freeze state current: a LISTEN on the freezes channel for
//! speed, a read every poll interval (a second by default) for certainty.

use super::state::FreezeState;
use super::store;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The channel `audit.release_freezes` notifies.
const CHANNEL: &str = "zenlayer_gateway_freezes";

/// The freeze state as last read; cheap to clone.
#[derive(Debug, Clone)]
pub struct FreezeWatch(watch::Receiver<FreezeState>);

impl FreezeWatch {
    pub fn current(&self) -> FreezeState {
        self.0.borrow().clone()
    }
}

/// What woke the watch; each wakes it to read the state again.
enum Woke {
    /// A freeze or unfreeze was recorded.
    Notified,
    /// The listening connection dropped and sqlx has listened again on a
    /// new one; whatever was notified in between was missed.
    Relistened,
    /// The listener failed (it could not listen again): a new one is made
    /// at the next turn.
    ListenerFailed,
    /// The poll interval passed.
    Polled,
}

/// Reads the state now (if the database answers) and keeps it current until
/// `stop`, reading it on every notification and at least every `poll`.
pub async fn spawn_freeze_watch(
    pool: PgPool,
    poll: Duration,
    stop: CancellationToken,
) -> FreezeWatch {
    let (sender, receiver) = watch::channel(FreezeState::Unknown);
    // Unread at start is Unknown already; staleness counts from here.
    refresh(&pool, &sender).await;
    let mut last_read = Instant::now();
    let stale_after = poll * STALE_AFTER_POLLS;
    tokio::spawn(async move {
        let mut listener: Option<PgListener> = None;
        loop {
            if listener.is_none() {
                listener = listen(&pool).await;
                if listener.is_some() && refresh(&pool, &sender).await {
                    // Whatever was recorded since the last read and before
                    // this listened was notified to nobody.
                    last_read = Instant::now();
                }
            }
            let woke = tokio::select! {
                () = stop.cancelled() => return,
                woke = notification(listener.as_mut()) => woke,
                () = tokio::time::sleep(poll) => Woke::Polled,
            };
            if let Woke::ListenerFailed = woke {
                listener = None;
            }
            if refresh(&pool, &sender).await {
                last_read = Instant::now();
            } else if last_read.elapsed() >= stale_after {
                forget_open(&sender, last_read.elapsed());
            }
        }
    });
    FreezeWatch(receiver)
}

/// Waits for a notification, or for the listener to drop its connection;
/// never returns without a listener (polling alone then keeps the state).
async fn notification(listener: Option<&mut PgListener>) -> Woke {
    let Some(listener) = listener else {
        return std::future::pending().await;
    };
    match listener.try_recv().await {
        Ok(Some(_)) => Woke::Notified,
        Ok(None) => Woke::Relistened,
        Err(_) => Woke::ListenerFailed,
    }
}

async fn listen(pool: &PgPool) -> Option<PgListener> {
    let listen = async {
        let mut listener = PgListener::connect_with(pool).await.ok()?;
        listener.listen(CHANNEL).await.ok()?;
        Some(listener)
    };
    tokio::time::timeout(READ_TAKES_AT_MOST, listen)
        .await
        .ok()
        .flatten()
}

/// "Not frozen" read this many poll intervals ago, and not since, is no
/// longer believed: a freeze recorded meanwhile may not have been seen.
const STALE_AFTER_POLLS: u32 = 5;

/// How long one read of the state, or one attempt to listen, may take.
const READ_TAKES_AT_MOST: Duration = Duration::from_secs(2);

/// An open state that could not be read again for `unread`: releases are
/// refused (`FREEZE_STATE_UNKNOWN`) until it is, rather than sent through a
/// freeze this replica cannot see. A frozen state stays frozen.
fn forget_open(sender: &watch::Sender<FreezeState>, unread: Duration) {
    sender.send_if_modified(|held| {
        if *held != FreezeState::Open {
            return false;
        }
        tracing::warn!(
            unread_ms = unread.as_millis() as u64,
            "the freeze state could not be read for a while; releases are refused until it is"
        );
        *held = FreezeState::Unknown;
        true
    });
}

/// Reads the state; whether it could be read within `READ_TAKES_AT_MOST`
/// (a read that hangs, on a connection gone half-open, must not hold the
/// state it would have replaced).
async fn refresh(pool: &PgPool, sender: &watch::Sender<FreezeState>) -> bool {
    let read = async {
        let mut db = pool.acquire().await?;
        store::current(&mut db).await
    };
    let Ok(read) = tokio::time::timeout(READ_TAKES_AT_MOST, read).await else {
        tracing::debug!("the freeze state could not be read in time");
        return false;
    };
    match read {
        Ok(newest) => {
            let state = FreezeState::of(newest);
            sender.send_if_modified(|held| {
                if *held == state {
                    return false;
                }
                match &state {
                    FreezeState::Frozen(f) => tracing::warn!(operator = %f.operator, reason = %f.reason, since = %f.since, "releases are frozen"),
                    FreezeState::Open => tracing::info!("releases are not frozen"),
                    FreezeState::Unknown => {}
                }
                *held = state.clone();
                true
            });
            true
        }
        // The state held stays, for a while (see `forget_open`): a
        // database blip does not unfreeze, and releases cannot be recorded
        // meanwhile anyway.
        Err(error) => {
            tracing::debug!(error = %error, "the freeze state could not be read");
            false
        }
    }
}
