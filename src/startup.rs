//! Server assembly: binds the listener, wires the services and layers, and
//! runs until told to stop, then drains within the grace period.

use crate::admin;
use crate::audit::{self, AuditLog, FollowUpTiming, Upkeep};
use crate::health::{self, HealthState};
use crate::metrics::Metrics;
use crate::pb::{self, disk_service_server::DiskServiceServer};
use crate::policy::Policies;
use crate::rpc::{CallContextLayer, DiskApi, ReleasePath, ReleaseReader};
use crate::settings::{ServerSettings, Settings, TransportLimits};
use crate::tls::ServerTls;
use crate::trail::{Checkpointer, LogKeeper, Trail, checkpoint::LogKey, spawn_log_keeper};
use crate::transport::{self, IntakeLayer};
use crate::zenlayer::ZenlayerClient;
use crate::{freeze, rpc};
use anyhow::Context as _;
use sqlx::PgPool;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::Server;

/// What the transport decodes at most. Above the gateway's own limit
/// (`rpc::MAX_REQUEST_BYTES`), so that a somewhat oversized request reaches
/// the handler and is refused with its audit record; anything larger is
/// refused unread, as RESOURCE_EXHAUSTED, without one.
const MAX_DECODED_BYTES: usize = 64 * 1024;

/// A built gateway, listening but not yet serving.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    local_addr: SocketAddr,
    /// `None`: plaintext, as the settings allow.
    tls: Option<ServerTls>,
    admin_listener: TcpListener,
    settings: Settings,
    pool: PgPool,
    api: DiskApi,
    /// Whether token signing keys are held; readiness depends on it.
    keys_held: watch::Receiver<bool>,
    /// Changes when an audit write fails; readiness follows it at once.
    audit_failures: watch::Receiver<u64>,
    metrics: Metrics,
    /// For confirmations and reconciliations.
    zenlayer: ZenlayerClient,
    /// How long a call can stay in flight; older pending calls were abandoned.
    longest_call: Duration,
    /// Releases in flight, which shutdown lets finish.
    releases: TaskTracker,
    /// Cancelled when shutdown begins; background tasks watch it.
    stop: CancellationToken,
    /// Cancelled once no call is served any more (after the drain).
    serving_ends: CancellationToken,
    /// Hashes the audit log and, when a signing key is configured, signs
    /// its checkpoints.
    log_keeper: LogKeeper,
    /// Serves its checkpoints and proofs.
    trail: Trail,
}

impl Application {
    /// Builds every client and binds the listener (port 0 picks a free one).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let stop = CancellationToken::new();
        let releases = TaskTracker::new();
        // First: a policy file that does not validate stops start-up,
        // naming the policy, line and column, before anything starts.
        let policies = Policies::load(
            &settings.policy,
            &settings.auth.release_role,
            &settings.auth.audit_role,
        )?;
        let pool = settings.database.pool().context("DATABASE_URL")?;
        let metrics = Metrics::new();
        let audit = AuditLog::new(
            pool.clone(),
            metrics.clone(),
            settings.budgets,
            rpc::budget_refusal,
        );
        let audit_failures = audit.failures();
        let zenlayer = settings.zenlayer.client()?;
        let longest_call = zenlayer.longest_call();
        let authenticator = settings.auth.authenticator(&stop, &metrics)?;
        let keys_held = authenticator.keys_held();
        policies.spawn_reload(&stop);
        // Before binding: a signing key that cannot be used stops start-up.
        let log_key = match &settings.trail.signing_key_file {
            Some(path) => Some(LogKey::from_file(path)?),
            None => None,
        };
        let trail = Trail::new(
            pool.clone(),
            log_key
                .iter()
                .map(|key| key.verifier_key().to_owned())
                .collect(),
        );
        let reader = ReleaseReader::new(
            authenticator.clone(),
            audit.clone(),
            policies.clone(),
            trail.clone(),
        );
        let checkpointer = log_key.map(|key| Checkpointer::new(pool.clone(), key, metrics.clone()));
        let log_keeper = LogKeeper::new(pool.clone(), checkpointer);
        // Calls are still served during the shutdown delay and drained
        // after it: the freeze switch they consult must outlive `stop`.
        let serving_ends = CancellationToken::new();
        let freeze = freeze::spawn_freeze_watch(
            pool.clone(),
            settings.freeze_poll_interval,
            serving_ends.clone(),
        )
        .await;
        let path = ReleasePath::new(
            authenticator,
            audit,
            zenlayer.clone(),
            policies,
            freeze,
            metrics.clone(),
        );
        let api = DiskApi::new(path, reader, releases.clone());
        // Before binding: a certificate file that cannot be used stops
        // start-up without ever opening the port.
        let tls = match &settings.server.tls.files {
            Some(files) => Some(ServerTls::load(files)?),
            None => None,
        };
        let listener = TcpListener::bind(settings.server.listen_addr)
            .await
            .with_context(|| format!("bind GATEWAY_LISTEN_ADDR {}", settings.server.listen_addr))?;
        let local_addr = listener.local_addr()?;
        let admin_listener = TcpListener::bind(settings.server.admin_addr)
            .await
            .with_context(|| format!("bind GATEWAY_ADMIN_ADDR {}", settings.server.admin_addr))?;
        Ok(Self {
            listener,
            local_addr,
            tls,
            admin_listener,
            settings,
            pool,
            api,
            keys_held,
            audit_failures,
            metrics,
            zenlayer,
            longest_call,
            releases,
            stop,
            serving_ends,
            log_keeper,
            trail,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The admin listener's address actually bound.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` resolves; then reports NOT_SERVING, stops
    /// accepting, and lets in-flight calls finish for up to the grace period.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let stop = self.stop.clone();
        let (reporter, health_service) = tonic_health::server::health_reporter();
        // Known (NOT_SERVING) from the first moment, until the database
        // answers and keys are held.
        let health = HealthState::new(reporter).await;
        let admin = admin::spawn(
            self.admin_listener,
            health.readiness(),
            self.metrics.clone(),
            health_service.clone(),
            self.trail.clone(),
        );
        let monitor = tokio::spawn(health::monitor(
            health,
            self.settings
                .database
                .probe_pool()
                .context("DATABASE_URL")?,
            self.keys_held,
            self.audit_failures,
            self.settings.server.health_check_interval,
            stop.clone(),
        ));
        // A call pending for longer than any call can take was abandoned by a
        // gateway that stopped; the margin covers clock skew between replicas.
        let upkeep = Upkeep {
            interval: self.settings.server.recovery_interval,
            abandoned_after: self.longest_call + self.settings.server.abandoned_margin,
            key_retention: self.settings.server.idempotency_retention,
        };
        audit::spawn_upkeep(self.pool.clone(), upkeep, stop.clone());
        let timing = FollowUpTiming {
            interval: self.settings.server.follow_up_interval,
            confirm_within: self.settings.server.confirm_within,
            settle: self.settings.server.reconcile_after,
        };
        audit::spawn_follow_up(
            self.pool.clone(),
            self.zenlayer,
            self.metrics.clone(),
            timing,
            stop.clone(),
        );
        if self.settings.trail.signing_key_file.is_none() {
            tracing::warn!(
                "AUDIT_LOG_SIGNING_KEY_FILE is not set: no audit log checkpoints are signed, so tampering with the audit trail cannot be proven"
            );
        }
        spawn_log_keeper(
            self.log_keeper.clone(),
            self.settings.trail.checkpoint_interval,
            stop.clone(),
        );
        let limits = &self.settings.server.limits;
        let router = bounded_server(limits)
            .layer(IntakeLayer::new(limits))
            .layer(CallContextLayer)
            .add_service(health_service)
            .add_service(reflection_v1()?)
            .add_service(reflection_v1alpha()?)
            .add_service(
                DiskServiceServer::new(self.api).max_decoding_message_size(MAX_DECODED_BYTES),
            );
        // NOT_SERVING first, then a pause while load balancers notice and
        // move traffic away, then no new connections.
        let delay = self.settings.server.shutdown_delay;
        let stopping = stop.clone();
        let stopped = async move {
            stopping.cancelled().await;
            let _ = monitor.await;
            tokio::time::sleep(delay).await;
        };
        announce_transport(self.local_addr, self.tls.as_ref(), &self.settings.server);
        let serve = match self.tls {
            Some(tls) => {
                let incoming = transport::admit(tls.incoming(self.listener, stop.clone()), limits);
                Either::Left(router.serve_with_incoming_shutdown(incoming, stopped))
            }
            None => {
                let incoming = transport::admit(TcpListenerStream::new(self.listener), limits);
                Either::Right(router.serve_with_incoming_shutdown(incoming, stopped))
            }
        };
        let drained = Drain {
            stop: &self.stop,
            releases: &self.releases,
            grace: delay + self.settings.server.shutdown_grace,
        };
        let result = drained.run(serve, shutdown).await;
        self.serving_ends.cancel();
        // The last calls' events are in: sign the log as it is left.
        self.log_keeper.keep_now("final ").await;
        admin.abort();
        result
    }
}

/// tonic's server with the HTTP/2 bounds of `limits`. tonic leaves the
/// number of streams per connection unbounded unless told; every other
/// bound here is set explicitly so that README's defaults are the ones in
/// force, whatever tonic's and hyper's defaults become.
fn bounded_server(limits: &TransportLimits) -> Server {
    Server::builder()
        .max_concurrent_streams(limits.max_streams_per_connection)
        .http2_max_header_list_size(limits.max_header_list_bytes)
        .http2_keepalive_interval(Some(limits.keepalive_interval))
        .http2_keepalive_timeout(Some(limits.keepalive_timeout))
        .http2_max_pending_accept_reset_streams(Some(limits.max_pending_reset_streams))
        .http2_max_local_error_reset_streams(Some(limits.max_local_error_resets))
}

/// Says how the listener is secured. Plaintext off loopback is allowed only
/// behind a TLS-terminating sidecar, which the gateway cannot see, so it is
/// a warning every time it starts.
fn announce_transport(addr: SocketAddr, tls: Option<&ServerTls>, server: &ServerSettings) {
    match tls {
        Some(tls) => tracing::info!(
            %addr,
            client_certificates = if tls.verifies_clients() { "required" } else { "not requested" },
            "serving zenlayer.vm.v1.DiskService over TLS"
        ),
        None => {
            if server.plaintext_off_loopback() {
                tracing::warn!(
                    %addr,
                    "serving plaintext gRPC on a non-loopback address because GATEWAY_ALLOW_PLAINTEXT=true: callers' tokens are protected only if a mesh sidecar terminates TLS in front of the gateway"
                );
            }
            tracing::info!(%addr, "serving zenlayer.vm.v1.DiskService in plaintext");
        }
    }
}

/// Serving, then draining within the grace period.
struct Drain<'a> {
    stop: &'a CancellationToken,
    releases: &'a TaskTracker,
    grace: Duration,
}

impl Drain<'_> {
    /// Runs `serve` until `shutdown`, then gives in-flight calls, and the
    /// releases they started (whose outcomes must be recorded), `grace` to end.
    async fn run(
        self,
        serve: impl Future<Output = Result<(), tonic::transport::Error>>,
        shutdown: impl Future<Output = ()>,
    ) -> anyhow::Result<()> {
        tokio::pin!(serve);
        tokio::select! {
            result = &mut serve => return result.context("gRPC server failed"),
            () = shutdown => {}
        }
        tracing::info!(
            grace_ms = self.grace.as_millis() as u64,
            "shutdown requested: draining in-flight calls"
        );
        self.stop.cancel();
        self.releases.close();
        let drained = async {
            let served = serve.await;
            self.releases.wait().await;
            served
        };
        match tokio::time::timeout(self.grace, drained).await {
            Ok(result) => result.context("gRPC server failed while draining"),
            Err(_) => {
                tracing::warn!(
                    in_flight = self.releases.len(),
                    "grace period over: abandoning calls still in flight (the recovery sweep will mark them unknown)"
                );
                Ok(())
            }
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

/// Serves the gateway's own protos, health's, and `google.rpc`'s error
/// details, so grpcurl can print an error's ErrorInfo, not just its bytes.
fn reflection_builder() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
}
