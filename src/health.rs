//! `grpc.health.v1` status, kept true: SERVING only while the database that
//! holds the audit trail answers (a release cannot be recorded without it),
//! and NOT_SERVING from the moment shutdown begins.

use crate::database;
use crate::pb::disk_service_server::DiskServiceServer;
use crate::rpc::DiskApi;
use sqlx::PgPool;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
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

/// Where health is reported: gRPC health for gRPC probes and clients, and
/// a flag that the admin listener's `/readyz` reads.
#[derive(Debug, Clone)]
pub struct HealthState {
    reporter: HealthReporter,
    ready: Arc<AtomicBool>,
}

impl HealthState {
    /// Starts with `liveness` SERVING and everything else NOT_SERVING
    /// until the database answers.
    pub async fn new(reporter: HealthReporter) -> Self {
        reporter
            .set_service_status(LIVENESS, ServingStatus::Serving)
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
}

/// Probes the database every `interval` until `shutdown`, then reports
/// NOT_SERVING for good. Returns once NOT_SERVING is set, so that the drain
/// (after the shutdown delay) begins with the status already reported.
pub async fn monitor(
    health: HealthState,
    pool: PgPool,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut last = None;
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            _ = ticks.tick() => {}
        }
        let reachable = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            reachable = database::is_reachable(&pool, interval.max(Duration::from_millis(500))) => reachable,
        };
        if last != Some(reachable) {
            if reachable {
                tracing::info!("database reachable: SERVING");
            } else {
                tracing::error!(
                    "database unreachable: NOT_SERVING (releases are refused until it answers)"
                );
            }
            let status = if reachable {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            health.set(status).await;
            last = Some(reachable);
        }
    }
    health.set(ServingStatus::NotServing).await;
    tracing::info!("shutting down: NOT_SERVING");
}
