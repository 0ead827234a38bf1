//! `grpc.health.v1` status, kept true: SERVING only while the database that
//! holds the audit trail answers (a release cannot be recorded without it)
//! and a token signing key set is held (no token can be checked without
//! one), and NOT_SERVING from the moment shutdown begins. A `jwks` entry
//! reports the keys alone, so on-call can tell which of the two is missing.

use crate::database;
use crate::pb::disk_service_server::DiskServiceServer;
use crate::rpc::DiskApi;
use sqlx::PgPool;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// The service names whose health is reported: the whole server ("") and
/// `DiskService`, so probes may ask for either.
const SERVICES: [&str; 2] = ["", <DiskServiceServer<DiskApi> as NamedService>::NAME];

/// A health entry that is SERVING while the process runs, whatever the
/// database: what a liveness probe should ask for.
pub const LIVENESS: &str = "liveness";

/// A health entry that is SERVING while a token signing key set is held
/// (always, for keys from a file or secret).
pub const JWKS: &str = "jwks";

/// What serving releases needs; the server is ready only while both hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Readiness {
    database: bool,
    keys: bool,
}

/// What [`HealthState::new`] reports.
const NOTHING_YET: Readiness = Readiness {
    database: false,
    keys: false,
};

impl Readiness {
    /// The one place readiness is combined from what it depends on.
    fn ready(self) -> bool {
        self.database && self.keys
    }
}

fn serving_if(condition: bool) -> ServingStatus {
    if condition {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    }
}

/// Where health is reported: gRPC health for gRPC probes and clients, and
/// a flag that the admin listener's `/readyz` reads.
#[derive(Debug, Clone)]
pub struct HealthState {
    reporter: HealthReporter,
    ready: Arc<AtomicBool>,
}

impl HealthState {
    /// Starts with `liveness` SERVING and everything else NOT_SERVING
    /// until the database answers and keys are held.
    pub async fn new(reporter: HealthReporter) -> Self {
        reporter
            .set_service_status(LIVENESS, ServingStatus::Serving)
            .await;
        reporter
            .set_service_status(JWKS, ServingStatus::NotServing)
            .await;
        let state = Self {
            reporter,
            ready: Arc::new(AtomicBool::new(false)),
        };
        state.set(ServingStatus::NotServing).await;
        state
    }

    /// The flag `/readyz` answers from.
    pub fn readiness(&self) -> Arc<AtomicBool> {
        self.ready.clone()
    }

    /// Reports `status` for every service name, and for `/readyz`.
    pub async fn set(&self, status: ServingStatus) {
        self.ready
            .store(status == ServingStatus::Serving, Ordering::SeqCst);
        for service in SERVICES {
            self.reporter.set_service_status(service, status).await;
        }
    }

    /// Reports what changed since `before`, so that watchers see
    /// transitions, not repeats.
    async fn report(&self, before: Readiness, now: Readiness) {
        if before.keys != now.keys {
            self.reporter
                .set_service_status(JWKS, serving_if(now.keys))
                .await;
        }
        if before.ready() != now.ready() {
            self.set(serving_if(now.ready())).await;
        }
    }
}

/// Probes the database every `interval` and follows whether `keys` are
/// held, until `shutdown`, then reports NOT_SERVING for good. Returns once
/// NOT_SERVING is set, so that the drain (after the shutdown delay) begins
/// with the status already reported.
pub async fn monitor(
    health: HealthState,
    pool: PgPool,
    mut keys: watch::Receiver<bool>,
    mut audit_failures: watch::Receiver<u64>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut now = Readiness {
        database: false,
        keys: *keys.borrow_and_update(),
    };
    if !now.keys {
        log_keys(false);
    }
    let mut reported = NOTHING_YET;
    let mut last_reachable = None;
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if reported != now {
            health.report(reported, now).await;
            reported = now;
        }
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            // A fixed key source has no sender: the branch is then skipped.
            Ok(()) = keys.changed() => {
                now.keys = *keys.borrow_and_update();
                log_keys(now.keys);
            }
            // What calls experience counts at once; the next probe that can
            // record again is what brings the status back.
            Ok(()) = audit_failures.changed() => {
                audit_failures.borrow_and_update();
                if now.database {
                    tracing::error!("an audit write failed: NOT_SERVING until the database can record again");
                    last_reachable = Some(false);
                }
                now.database = false;
            }
            _ = ticks.tick() => {
                let reachable = tokio::select! {
                    biased;
                    () = shutdown.cancelled() => break,
                    reachable = database::can_record(&pool, interval.max(Duration::from_millis(500))) => reachable,
                };
                if last_reachable != Some(reachable) {
                    log_database(reachable);
                    last_reachable = Some(reachable);
                }
                now.database = reachable;
            }
        }
    }
    health.set(ServingStatus::NotServing).await;
    tracing::info!("shutting down: NOT_SERVING");
}

fn log_database(reachable: bool) {
    if reachable {
        tracing::info!("database reachable");
    } else {
        tracing::error!(
            "database unreachable: NOT_SERVING (releases are refused until it answers)"
        );
    }
}

fn log_keys(held: bool) {
    if held {
        tracing::info!("token signing keys held");
    } else {
        tracing::error!(
            "no token signing keys held yet: NOT_SERVING (calls are refused with KEY_SOURCE_UNAVAILABLE until the JWKS is fetched)"
        );
    }
}
