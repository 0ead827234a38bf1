//! The admin listener: plaintext, so that probes need no client
//! certificate even when the gRPC port demands one (the kubelet's gRPC probe
//! cannot present one). It serves `grpc.health.v1` (HTTP/2), the same status
//! as the main port plus a `liveness` entry, and over HTTP/1 the Prometheus
//! scrape endpoint `/metrics`, `/livez` (answers while the process runs; it
//! ignores the database, since a database outage should not restart every
//! replica) and `/readyz` (database reachable, token signing keys held, not
//! draining), and `/audit/checkpoint`: the newest signed checkpoint of the
//! audit log, for anyone who keeps copies (a witness, a security team's
//! cron job).

use crate::metrics::Metrics;
use crate::trail::Trail;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic_health::pb::health_server::{Health, HealthServer};

/// Serves the admin endpoints on `listener` until the task is aborted. It
/// keeps answering while the gRPC server drains, so liveness holds.
pub fn spawn<H>(
    listener: TcpListener,
    ready: Arc<AtomicBool>,
    metrics: Metrics,
    health: HealthServer<H>,
    trail: Trail,
) -> JoinHandle<()>
where
    H: Health,
{
    let router = Router::new()
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(ready)
        .route("/metrics", get(scrape).with_state(metrics))
        .route("/audit/checkpoint", get(checkpoint).with_state(trail))
        .route_service("/grpc.health.v1.Health/Check", health.clone())
        .route_service("/grpc.health.v1.Health/Watch", health);
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, router).await {
            tracing::error!(error = %error, "the admin listener failed");
        }
    })
}

async fn scrape(State(metrics): State<Metrics>) -> impl axum::response::IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.encode(),
    )
}

async fn checkpoint(State(trail): State<Trail>) -> (StatusCode, String) {
    match trail.latest_note().await {
        Ok(Some(note)) => (StatusCode::OK, note),
        Ok(None) => (
            StatusCode::NOT_FOUND,
            "no audit log checkpoint has been signed yet\n".to_owned(),
        ),
        Err(error) => {
            tracing::warn!(error = %error, "the newest audit log checkpoint could not be read");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the audit database cannot be read right now\n".to_owned(),
            )
        }
    }
}

async fn readyz(State(ready): State<Arc<AtomicBool>>) -> (StatusCode, &'static str) {
    if ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the audit database is unreachable, no token signing keys are held yet, or the gateway is shutting down\n",
        )
    }
}
