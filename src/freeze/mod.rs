//! The freeze switch: one append-only table (`audit.release_freezes`) whose
//! newest row says whether releases are stopped, why, since when and by
//! whom. Every gateway keeps that state in memory, refreshed the moment a
//! row is added (LISTEN/NOTIFY) and every second regardless (a lost
//! notification, a dropped connection; `GATEWAY_FREEZE_POLL_INTERVAL_MS`),
//! and refuses releases while frozen.
//! Operators flip it with `zenlayer-gateway freeze` / `unfreeze`.

mod state;
mod store;
mod watch;

pub use state::{Freeze, FreezeState};
pub use store::{FreezeAction, FreezeRecord, current, record_freeze};
pub use watch::{FreezeWatch, spawn_freeze_watch};
