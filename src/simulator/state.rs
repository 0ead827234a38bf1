//! The state every connection task and every `SimulatorHandle` clone shares.
//!
//! Locks are `std::sync::Mutex` (taken through `sync::lock`), held only for
//! a lookup or an update and never across an `.await`; the futures that
//! hyper runs must be `Send`, so the compiler enforces the second half of
//! that rule.

use std::sync::Mutex;

use tokio_util::sync::CancellationToken;

use super::auth::Credentials;
use super::faults::FaultQueue;
use super::inventory::Inventory;
use super::traffic::Traffic;

#[derive(Debug)]
pub(crate) struct Shared {
    pub credentials: Credentials,
    pub inventory: Mutex<Inventory>,
    pub faults: Mutex<FaultQueue>,
    pub traffic: Traffic,
    /// Cancelled by `SimulatorHandle::shutdown`.
    pub shutdown: CancellationToken,
    /// Cancelled once the accept loop has ended and the listener is closed.
    pub stopped: CancellationToken,
}
