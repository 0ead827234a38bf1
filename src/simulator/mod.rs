//! A local stand-in for Zenlayer's `POST /api/v2/vm`, faithful enough that
//! the gateway's client cannot tell it from the real endpoint: the same
//! credential checks (ZC2-HMAC-SHA256 signatures and bearer tokens), the same
//! error codes, and the disk state that `ReleaseDisk`, `TerminateDisk` and
//! `DescribeDisks` act on. On top it counts and records what arrives and can
//! be told to fail in the ways a real upstream does (`Fault`), which is what
//! the gateway's integration tests, its `dev` command and staging need and
//! what the real Zenlayer cannot be asked to do.
//!
//! `spawn` takes an already bound listener, so the simulator accepts
//! connections the moment it returns; tests never wait for it to come up.

mod api;
mod auth;
mod control;
mod describe;
mod disk;
mod faults;
mod inventory;
mod params;
mod reply;
mod server;
mod signature;
mod state;
mod sync;
mod traffic;

#[cfg(test)]
mod tests;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use auth::Credential;
pub use disk::{ChargeType, Disk, DiskStatus, DiskType, sample_disks};
pub use faults::Fault;
pub use traffic::ReceivedRequest;

use auth::Credentials;
use faults::FaultQueue;
use inventory::Inventory;
use state::Shared;
use sync::lock;
use traffic::Traffic;

/// How long a release shows `DELETING` in `dev` and in the `simulator`
/// command. Zenlayer releases asynchronously and does not say how long it
/// takes; this is long enough for a client to see `DELETING` (and to find
/// out whether it handles it) and short enough to watch the disk go.
pub const STAND_IN_RELEASE_TAKES: Duration = Duration::from_secs(10);

/// Who may call the simulator and which disks it starts with.
#[derive(Debug, Clone, Default)]
pub struct SimulatorConfig {
    pub credentials: Vec<Credential>,
    pub disks: Vec<Disk>,
    /// How long a released disk shows `DELETING` before it stops being
    /// listed; zero (the default, for tests that are not about it) releases
    /// at once. `dev` and the `simulator` command use
    /// [`STAND_IN_RELEASE_TAKES`].
    pub release_takes: Duration,
}

/// Starts serving on `listener` in a background task and returns at once.
/// Must be called within a Tokio runtime.
pub async fn spawn(
    config: SimulatorConfig,
    listener: TcpListener,
) -> std::io::Result<SimulatorHandle> {
    let addr = listener.local_addr()?;
    let shared = Arc::new(Shared {
        credentials: Credentials::new(&config.credentials),
        inventory: Mutex::new(Inventory::new(config.disks).with_release_time(config.release_takes)),
        faults: Mutex::new(FaultQueue::default()),
        traffic: Traffic::default(),
        shutdown: CancellationToken::new(),
        stopped: CancellationToken::new(),
    });
    tokio::spawn(server::accept_loop(listener, Arc::clone(&shared)));
    Ok(SimulatorHandle { addr, shared })
}

/// Observes and steers a running simulator. Clones share one simulator.
#[derive(Debug, Clone)]
pub struct SimulatorHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl SimulatorHandle {
    /// The address the listener is bound to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://host:port`, with an unspecified bind address (`0.0.0.0`,
    /// `::`) replaced by loopback so the URL can be connected to.
    pub fn base_url(&self) -> String {
        let ip = match self.addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        format!("http://{}", SocketAddr::new(ip, self.addr.port()))
    }

    /// Every request that arrived outside the control endpoints, whatever
    /// its answer, including ones that were refused, faulted or dropped.
    pub fn requests_received(&self) -> u64 {
        self.shared.traffic.total()
    }

    /// Requests whose `X-ZC-Action` was `ReleaseDisk`, whatever the answer.
    pub fn release_disk_requests(&self) -> u64 {
        self.action_requests("ReleaseDisk")
    }

    /// Requests whose `X-ZC-Action` was `action`, whatever the answer.
    pub fn action_requests(&self, action: &str) -> u64 {
        self.shared.traffic.for_action(action)
    }

    /// The requests received so far, oldest first (the most recent 10 000).
    pub fn received(&self) -> Vec<ReceivedRequest> {
        self.shared.traffic.log()
    }

    /// Makes the next `times` API requests fail as `fault`, after the ones
    /// already queued.
    pub fn inject(&self, fault: Fault, times: usize) {
        lock(&self.shared.faults).push(fault, times);
    }

    /// Makes the next `times` requests naming `action` fail as `fault`;
    /// requests of other actions are left alone.
    pub fn inject_for(&self, action: &str, fault: Fault, times: usize) {
        lock(&self.shared.faults).push_for(Some(action), fault, times);
    }

    /// `inject_for("ReleaseDisk", …)`.
    pub fn fail_release(&self, fault: Fault, times: usize) {
        self.inject_for("ReleaseDisk", fault, times);
    }

    /// `inject_for("DescribeDisks", …)`.
    pub fn fail_describe(&self, fault: Fault, times: usize) {
        self.inject_for("DescribeDisks", fault, times);
    }

    /// The requests received so far that named `action`, oldest first.
    pub fn received_for(&self, action: &str) -> Vec<ReceivedRequest> {
        let mut log = self.shared.traffic.log();
        log.retain(|r| r.action.as_deref() == Some(action));
        log
    }

    /// Forgets every pending fault. Requests already hanging keep hanging.
    pub fn clear_faults(&self) {
        lock(&self.shared.faults).clear();
    }

    pub fn disk(&self, disk_id: &str) -> Option<Disk> {
        let mut inventory = lock(&self.shared.inventory);
        inventory.settle();
        inventory.get(disk_id).cloned()
    }

    /// Adds a disk, or replaces the one with the same id.
    pub fn put_disk(&self, disk: Disk) {
        lock(&self.shared.inventory).put(disk);
    }

    /// Takes a disk out of the listing, as a release Zenlayer finished late
    /// would; returns it, if it was there.
    pub fn remove_disk(&self, disk_id: &str) -> Option<Disk> {
        lock(&self.shared.inventory).remove(disk_id)
    }

    /// Stops accepting connections, lets open connections finish their
    /// current request, and ends hanging requests by closing them.
    pub fn shutdown(&self) {
        self.shared.shutdown.cancel();
    }

    /// Resolves once the simulator has stopped accepting and its listener is
    /// closed; with `shutdown` this lets a standalone simulator run until
    /// told to stop, and lets a test wait for the port to close.
    pub async fn stopped(&self) {
        self.shared.stopped.cancelled().await;
    }
}
