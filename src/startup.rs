//! Server assembly: binds the listener, wires the services and layers, and
//! runs until told to stop, then drains within the grace period.

use crate::auth::AuthLayer;
use crate::health;
use crate::pb::{self, disk_service_server::DiskServiceServer};
use crate::rpc::{CallContextLayer, DiskApi};
use crate::settings::Settings;
use anyhow::Context as _;
use sqlx::PgPool;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;

/// A ReleaseDisk request is a few hundred bytes; anything near this is not
/// a legitimate caller.
const MAX_REQUEST_BYTES: usize = 8 * 1024;

/// A built gateway, listening but not yet serving.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    local_addr: SocketAddr,
    settings: Settings,
    pool: PgPool,
    api: DiskApi,
    auth: AuthLayer,
    /// Cancelled when shutdown begins; background tasks watch it.
    stop: CancellationToken,
}

impl Application {
    /// Builds every client and binds the listener (port 0 picks a free one).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let stop = CancellationToken::new();
        let pool = settings.database.pool().context("DATABASE_URL")?;
        let api = DiskApi::new(settings.zenlayer.client()?);
        let auth = AuthLayer::new(settings.auth.authenticator(&stop)?);
        let listener = TcpListener::bind(settings.server.listen_addr)
            .await
            .with_context(|| format!("bind GATEWAY_LISTEN_ADDR {}", settings.server.listen_addr))?;
        let local_addr = listener.local_addr()?;
        Ok(Self {
            listener,
            local_addr,
            settings,
            pool,
            api,
            auth,
            stop,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The database pool the gateway uses.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Serves until `shutdown` resolves; then reports NOT_SERVING, stops
    /// accepting, and lets in-flight calls finish for up to the grace period.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let stop = self.stop;
        let (reporter, health_service) = tonic_health::server::health_reporter();
        // Known (NOT_SERVING) from the first moment, until the database answers.
        health::set(&reporter, tonic_health::ServingStatus::NotServing).await;
        let monitor = tokio::spawn(health::monitor(
            reporter,
            self.pool.clone(),
            self.settings.server.health_check_interval,
            stop.clone(),
        ));
        let router = Server::builder()
            .layer(CallContextLayer)
            .layer(self.auth)
            .add_service(health_service)
            .add_service(reflection_v1()?)
            .add_service(reflection_v1alpha()?)
            .add_service(
                DiskServiceServer::new(self.api).max_decoding_message_size(MAX_REQUEST_BYTES),
            );
        tracing::info!(addr = %self.local_addr, "serving zenlayer.vm.v1.DiskService");
        let serve =
            router.serve_with_incoming_shutdown(TcpListenerStream::new(self.listener), async {
                stop.cancelled().await;
                let _ = monitor.await;
            });
        drain_within(serve, shutdown, &stop, self.settings.server.shutdown_grace).await
    }
}

/// Runs `serve` until `shutdown`, then gives it `grace` to finish.
async fn drain_within(
    serve: impl Future<Output = Result<(), tonic::transport::Error>>,
    shutdown: impl Future<Output = ()>,
    stop: &CancellationToken,
    grace: Duration,
) -> anyhow::Result<()> {
    tokio::pin!(serve);
    tokio::select! {
        result = &mut serve => return result.context("gRPC server failed"),
        () = shutdown => {}
    }
    tracing::info!(
        grace_ms = grace.as_millis() as u64,
        "shutdown requested: draining in-flight calls"
    );
    stop.cancel();
    match tokio::time::timeout(grace, serve).await {
        Ok(result) => result.context("gRPC server failed while draining"),
        Err(_) => {
            tracing::warn!("grace period over: abandoning calls still in flight");
            Ok(())
        }
    }
}

/// Reflection for current clients (`grpc.reflection.v1`).
fn reflection_v1() -> anyhow::Result<
    tonic_reflection::server::v1::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection,
    >,
> {
    reflection_builder()
        .build_v1()
        .context("build gRPC reflection (v1)")
}

/// Reflection for older clients such as grpcurl 1.8 (`v1alpha`).
fn reflection_v1alpha() -> anyhow::Result<
    tonic_reflection::server::v1alpha::ServerReflectionServer<
        impl tonic_reflection::server::v1alpha::ServerReflection,
    >,
> {
    reflection_builder()
        .build_v1alpha()
        .context("build gRPC reflection (v1alpha)")
}

fn reflection_builder() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
}
