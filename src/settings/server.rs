//! The gRPC listener and its lifecycle: addresses, shutdown, health and
//! recovery intervals, idempotency retention, TLS, transport limits.

use super::limits::TransportLimits;
use super::reader::Reader;
use super::tls::{self, TlsSettings};
use std::net::SocketAddr;
use std::time::Duration;

/// The gRPC listener and its lifecycle.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// `GATEWAY_LISTEN_ADDR`.
    pub listen_addr: SocketAddr,
    /// `GATEWAY_ADMIN_ADDR`: plain HTTP for `/livez` and `/readyz`.
    pub admin_addr: SocketAddr,
    /// `GATEWAY_SHUTDOWN_GRACE_MS`: how long in-flight calls may take to
    /// finish after SIGTERM before they are abandoned.
    pub shutdown_grace: Duration,
    /// `GATEWAY_SHUTDOWN_DELAY_MS`: after SIGTERM, how long the gateway keeps
    /// accepting while reporting NOT_SERVING, so load balancers can move
    /// callers away before connections are refused.
    pub shutdown_delay: Duration,
    /// `GATEWAY_HEALTH_CHECK_INTERVAL_MS`: how often the database is probed
    /// to keep the health status true.
    pub health_check_interval: Duration,
    /// `GATEWAY_RECOVERY_INTERVAL_MS`: how often to look for calls a crash
    /// left without an outcome (also done once at start-up).
    pub recovery_interval: Duration,
    /// `GATEWAY_ABANDONED_MARGIN_MS`: added to the longest a call can take
    /// before a call still pending counts as abandoned by a gateway that
    /// stopped (it covers clock skew between replicas).
    pub abandoned_margin: Duration,
    /// `GATEWAY_FOLLOW_UP_INTERVAL_MS`: how often accepted releases are
    /// confirmed and unknown outcomes reconciled (also once at start-up).
    pub follow_up_interval: Duration,
    /// `GATEWAY_CONFIRM_WITHIN_MS`: how long an accepted release may stay
    /// listed by `DescribeDisks` before it is recorded as not confirmed.
    pub confirm_within: Duration,
    /// `GATEWAY_RECONCILE_AFTER_MS`: how long after an outcome became
    /// unknown it is reconciled from `DescribeDisks`.
    pub reconcile_after: Duration,
    /// `IDEMPOTENCY_RETENTION_HOURS`: how long an idempotency key is kept
    /// (at least 24 hours, so a day's retries are always deduplicated).
    pub idempotency_retention: Duration,
    /// `GATEWAY_TLS_*` and `GATEWAY_ALLOW_PLAINTEXT`.
    pub tls: TlsSettings,
    /// Connections, streams, headers, read times and calls in progress.
    pub limits: TransportLimits,
}

impl ServerSettings {
    pub(super) fn read(r: &mut Reader) -> Self {
        let default_listen_addr = SocketAddr::from(([0, 0, 0, 0], 50051));
        // `None` only when the value is invalid: that is reported already,
        // and judging plaintext on a made-up address would only confuse.
        let listen_addr = match r.raw("GATEWAY_LISTEN_ADDR") {
            None => Some(default_listen_addr),
            Some(_) => r.optional(
                "GATEWAY_LISTEN_ADDR",
                "a socket address such as 0.0.0.0:50051",
            ),
        };
        let tls = TlsSettings::read(r, listen_addr);
        Self {
            listen_addr: listen_addr.unwrap_or(default_listen_addr),
            admin_addr: r.or(
                "GATEWAY_ADMIN_ADDR",
                "a socket address such as 127.0.0.1:9090",
                SocketAddr::from(([127, 0, 0, 1], 9090)),
            ),
            shutdown_grace: r.millis("GATEWAY_SHUTDOWN_GRACE_MS", 15_000, (0, 600_000)),
            shutdown_delay: r.millis("GATEWAY_SHUTDOWN_DELAY_MS", 0, (0, 60_000)),
            health_check_interval: r.millis(
                "GATEWAY_HEALTH_CHECK_INTERVAL_MS",
                2_000,
                (10, 60_000),
            ),
            recovery_interval: r.millis("GATEWAY_RECOVERY_INTERVAL_MS", 60_000, (10, 3_600_000)),
            abandoned_margin: r.millis("GATEWAY_ABANDONED_MARGIN_MS", 30_000, (0, 3_600_000)),
            follow_up_interval: r.millis("GATEWAY_FOLLOW_UP_INTERVAL_MS", 5_000, (10, 3_600_000)),
            confirm_within: r.millis("GATEWAY_CONFIRM_WITHIN_MS", 600_000, (0, 86_400_000)),
            reconcile_after: r.millis("GATEWAY_RECONCILE_AFTER_MS", 120_000, (0, 86_400_000)),
            idempotency_retention: read_retention(r),
            tls,
            limits: TransportLimits::read(r),
        }
    }

    /// Whether the gRPC listener serves plaintext where other machines can
    /// reach it, as `GATEWAY_ALLOW_PLAINTEXT` permits.
    pub fn plaintext_off_loopback(&self) -> bool {
        self.tls.files.is_none() && !tls::is_loopback(self.listen_addr)
    }
}

fn read_retention(r: &mut Reader) -> Duration {
    let hours: u64 = r.or("IDEMPOTENCY_RETENTION_HOURS", "a whole number of hours", 24);
    if hours < 24 {
        r.problem(format!(
            "IDEMPOTENCY_RETENTION_HOURS={hours} is too short: keys are kept at least 24 hours"
        ));
    }
    Duration::from_secs(hours * 3600)
}
