//! `grpc.health.v1` status, kept true: SERVING only while the database that
//! holds the audit trail answers (a release cannot be recorded without it),
//! and NOT_SERVING from the moment shutdown begins.

use crate::database;
use crate::pb::disk_service_server::DiskServiceServer;
use crate::rpc::DiskApi;
use sqlx::PgPool;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// The service names whose health is reported: the whole server ("") and
/// `DiskService`, so probes may ask for either.
const SERVICES: [&str; 2] = ["", <DiskServiceServer<DiskApi> as NamedService>::NAME];

/// Reports `status` for every service name.
pub async fn set(reporter: &HealthReporter, status: ServingStatus) {
    for service in SERVICES {
        reporter.set_service_status(service, status).await;
    }
}

/// Probes the database every `interval` until `shutdown`, then reports
/// NOT_SERVING for good. Returns once NOT_SERVING is set, so the caller can
/// start draining only after load balancers can see it.
pub async fn monitor(
    reporter: HealthReporter,
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
            set(&reporter, status).await;
            last = Some(reachable);
        }
    }
    set(&reporter, ServingStatus::NotServing).await;
    tracing::info!("shutting down: NOT_SERVING");
}
