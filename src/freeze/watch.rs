//! Keeps the freeze state current: a LISTEN on the freezes channel for
//! speed, a read every second for certainty.

use super::state::FreezeState;
use super::store;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The channel `audit.release_freezes` notifies.
const CHANNEL: &str = "zenlayer_gateway_freezes";

/// How often the state is read even without a notification.
const POLL: Duration = Duration::from_secs(1);

/// The freeze state as last read; cheap to clone.
#[derive(Debug, Clone)]
pub struct FreezeWatch(watch::Receiver<FreezeState>);

impl FreezeWatch {
    pub fn current(&self) -> FreezeState {
        self.0.borrow().clone()
    }
}

/// Reads the state now (if the database answers) and keeps it current until
/// `stop`.
pub async fn spawn_freeze_watch(pool: PgPool, stop: CancellationToken) -> FreezeWatch {
    let (sender, receiver) = watch::channel(FreezeState::Unknown);
    refresh(&pool, &sender).await;
    tokio::spawn(async move {
        let mut listener: Option<PgListener> = None;
        loop {
            if listener.is_none() {
                listener = listen(&pool).await;
            }
            let heard = tokio::select! {
                () = stop.cancelled() => return,
                heard = notification(listener.as_mut()) => Some(heard),
                () = tokio::time::sleep(POLL) => None,
            };
            if heard == Some(false) {
                // The connection dropped; listen again at the next turn.
                listener = None;
            }
            refresh(&pool, &sender).await;
        }
    });
    FreezeWatch(receiver)
}

/// Waits for a notification: `false` when the connection dropped instead.
async fn notification(listener: Option<&mut PgListener>) -> bool {
    match listener {
        Some(listener) => matches!(listener.try_recv().await, Ok(Some(_))),
        None => std::future::pending().await,
    }
}

async fn listen(pool: &PgPool) -> Option<PgListener> {
    let mut listener = PgListener::connect_with(pool).await.ok()?;
    listener.listen(CHANNEL).await.ok()?;
    Some(listener)
}

async fn refresh(pool: &PgPool, sender: &watch::Sender<FreezeState>) {
    let read = async {
        let mut db = pool.acquire().await?;
        store::current(&mut db).await
    };
    match read.await {
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
        }
        // The state held stays: a database blip does not unfreeze, and
        // releases cannot be recorded meanwhile anyway.
        Err(error) => tracing::debug!(error = %error, "the freeze state could not be read"),
    }
}
