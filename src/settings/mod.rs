//! The gateway's typed settings: one struct per dependency, read from the
//! environment (optionally layered over a file), checked as a whole before
//! any port is bound.
//!
//! Secrets are `SecretString`s: `Debug` of any settings struct never shows
//! them, and they are exposed only where a client is built.

mod auth;
mod reader;
mod source;
mod tls;

pub use auth::{AuthSettings, KeySourceSettings};
pub use tls::{TlsFiles, TlsSettings};

pub use reader::SettingsError;
pub use source::{Environment, Overrides, Source};

use crate::zenlayer::{Credential, ZenlayerClient};
use reader::Reader;
use reqwest::Url;
use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use std::net::SocketAddr;
use std::time::Duration;

/// All of the gateway's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub zenlayer: ZenlayerSettings,
    pub auth: AuthSettings,
    pub telemetry: TelemetrySettings,
}

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
    /// `IDEMPOTENCY_RETENTION_HOURS`: how long an idempotency key is kept
    /// (at least 24 hours, so a day's retries are always deduplicated).
    pub idempotency_retention: Duration,
    /// `GATEWAY_TLS_*` and `GATEWAY_ALLOW_PLAINTEXT`.
    pub tls: TlsSettings,
}

/// The PostgreSQL database that holds the audit trail.
#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    /// `DATABASE_URL`; may carry a password, hence secret.
    pub url: SecretString,
    /// `DATABASE_MAX_CONNECTIONS`.
    pub max_connections: u32,
    /// `DATABASE_ACQUIRE_TIMEOUT_MS`: how long a call waits for a connection
    /// before it is refused as unavailable.
    pub acquire_timeout: Duration,
    /// `DATABASE_STATEMENT_TIMEOUT_MS`: the longest one statement may run
    /// (or wait for a lock), so a database that stops answering cannot hold
    /// a call, or shutdown, forever.
    pub statement_timeout: Duration,
}

/// Zenlayer's API and the gateway's credential for it.
#[derive(Debug, Clone)]
pub struct ZenlayerSettings {
    /// `ZENLAYER_BASE_URL`; requests go to `<base>/api/v2/vm`.
    pub base_url: Url,
    /// `ZENLAYER_ACCESS_KEY_ID` + `ZENLAYER_ACCESS_KEY_PASSWORD`, or
    /// `ZENLAYER_ACCESS_TOKEN`.
    pub credential: Credential,
    /// `ZENLAYER_API_VERSION`, sent as `X-ZC-Version`.
    pub api_version: String,
    /// `ZENLAYER_TIMEOUT_MS`: cap on one upstream call.
    pub timeout: Duration,
    /// `ZENLAYER_RATE_LIMIT_RETRIES`: retries after `REQUEST_LIMIT_EXCEEDED`.
    pub rate_limit_retries: u32,
    /// `ZENLAYER_RETRY_BACKOFF_MS`: first backoff; it doubles on each retry.
    pub retry_backoff: Duration,
}

/// Logging and tracing.
#[derive(Debug, Clone)]
pub struct TelemetrySettings {
    /// `GATEWAY_LOG_FORMAT`; JSON by default unless stdout is a terminal.
    pub log_format: LogFormat,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`: where spans are exported (OTLP/gRPC);
    /// none are exported when unset.
    pub otlp_endpoint: Option<String>,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

impl std::str::FromStr for LogFormat {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s.to_ascii_lowercase().as_str() {
            "json" => Ok(Self::Json),
            "text" => Ok(Self::Text),
            _ => Err(()),
        }
    }
}

impl Settings {
    /// Reads and checks every setting; the error names each bad variable.
    pub fn load(source: &dyn Source) -> Result<Self, SettingsError> {
        let mut reader = Reader::new(source);
        let settings = Self {
            server: ServerSettings::read(&mut reader),
            database: DatabaseSettings::read(&mut reader),
            zenlayer: ZenlayerSettings::read(&mut reader),
            auth: AuthSettings::read(&mut reader),
            telemetry: TelemetrySettings::read(&mut reader),
        };
        reader.finish().map(|()| settings)
    }
}

impl ServerSettings {
    fn read(r: &mut Reader) -> Self {
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
            idempotency_retention: read_retention(r),
            tls,
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

impl DatabaseSettings {
    /// Just the database settings, for commands that need nothing else.
    pub fn load(source: &dyn Source) -> Result<Self, SettingsError> {
        let mut reader = Reader::new(source);
        let settings = Self::read(&mut reader);
        reader.finish().map(|()| settings)
    }

    fn read(r: &mut Reader) -> Self {
        let url = r
            .required_secret("DATABASE_URL", "the PostgreSQL connection string")
            .unwrap_or_else(|| SecretString::from(""));
        let text = url.expose_secret();
        let postgres = text.starts_with("postgres://") || text.starts_with("postgresql://");
        if !text.is_empty() && (!postgres || text.parse::<PgConnectOptions>().is_err()) {
            // The URL may hold a password: name the variable, not the value.
            r.problem("DATABASE_URL is not a valid postgres:// connection string");
        }
        Self {
            url,
            max_connections: r.or("DATABASE_MAX_CONNECTIONS", "a whole number", 10),
            acquire_timeout: r.millis("DATABASE_ACQUIRE_TIMEOUT_MS", 2_000, (10, 60_000)),
            statement_timeout: r.millis("DATABASE_STATEMENT_TIMEOUT_MS", 5_000, (100, 600_000)),
        }
    }

    /// Connection options, honouring everything in the URL (`sslmode` too).
    pub fn connect_options(&self) -> Result<PgConnectOptions, sqlx::Error> {
        self.url.expose_secret().parse()
    }

    /// The gateway's pool. It connects on first use, so the gateway starts
    /// (and reports NOT_SERVING) even while the database is down, and every
    /// statement is bounded by the statement timeout.
    pub fn pool(&self) -> Result<PgPool, sqlx::Error> {
        self.pool_of(self.max_connections)
    }

    /// A one-connection pool for the health probe, so that busy calls
    /// cannot starve it into reporting the database down.
    pub fn probe_pool(&self) -> Result<PgPool, sqlx::Error> {
        self.pool_of(1)
    }

    fn pool_of(&self, connections: u32) -> Result<PgPool, sqlx::Error> {
        let timeout = self.statement_timeout.as_millis().to_string();
        let options = self
            .connect_options()?
            .options([("statement_timeout", timeout.as_str())]);
        Ok(PgPoolOptions::new()
            .max_connections(connections)
            .acquire_timeout(self.acquire_timeout)
            .connect_lazy_with(options))
    }
}

impl ZenlayerSettings {
    fn read(r: &mut Reader) -> Self {
        let raw = r.raw("ZENLAYER_BASE_URL");
        let base_url = upstream_url(
            r,
            "ZENLAYER_BASE_URL",
            raw.as_deref().unwrap_or("https://console.zenlayer.com"),
        );
        Self {
            base_url,
            credential: read_credential(r),
            api_version: read_api_version(r),
            timeout: r.millis("ZENLAYER_TIMEOUT_MS", 10_000, (100, 600_000)),
            rate_limit_retries: r.or("ZENLAYER_RATE_LIMIT_RETRIES", "a whole number", 3),
            retry_backoff: r.millis("ZENLAYER_RETRY_BACKOFF_MS", 1_000, (1, 60_000)),
        }
    }

    /// The upstream client these settings describe.
    pub fn client(&self) -> anyhow::Result<ZenlayerClient> {
        ZenlayerClient::new(self)
    }
}

/// An upstream URL: HTTPS, or plain HTTP only to this machine (the
/// simulator, a test's key server) or, for Zenlayer, when
/// `ZENLAYER_ALLOW_INSECURE_HTTP=true` says so explicitly. Plain HTTP would
/// carry signed requests and key sets in the clear.
fn upstream_url(r: &mut Reader, key: &str, raw: &str) -> Url {
    let fallback = || Url::parse("https://invalid.invalid").expect("a valid URL");
    let Ok(url) = Url::parse(raw.trim()) else {
        r.problem(format!(
            "{key}={raw:?} is not an absolute URL such as https://host"
        ));
        return fallback();
    };
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    let allowed =
        key == "ZENLAYER_BASE_URL" && r.or("ZENLAYER_ALLOW_INSECURE_HTTP", "true or false", false);
    match url.scheme() {
        "https" => {}
        "http" if loopback || allowed => {}
        "http" => r.problem(format!(
            "{key}={url} uses plain http to a non-loopback host; use https"
        )),
        other => r.problem(format!("{key}={url} has scheme {other:?}; expected https")),
    }
    url
}

fn read_api_version(r: &mut Reader) -> String {
    let version = r
        .raw("ZENLAYER_API_VERSION")
        .unwrap_or_else(|| "2023-03-13".to_owned());
    r.header_safe("ZENLAYER_API_VERSION", &version);
    version
}

fn read_credential(r: &mut Reader) -> Credential {
    let id = r.raw("ZENLAYER_ACCESS_KEY_ID");
    let password = r.secret("ZENLAYER_ACCESS_KEY_PASSWORD");
    let token = r.secret("ZENLAYER_ACCESS_TOKEN");
    if let Some(id) = &id {
        r.header_safe("ZENLAYER_ACCESS_KEY_ID", id);
    }
    if let Some(token) = &token {
        r.header_safe("ZENLAYER_ACCESS_TOKEN", token.expose_secret());
    }
    match (id, password, token) {
        (Some(id), Some(password), None) => Credential::AccessKey { id, password },
        (None, None, Some(token)) => Credential::Token(token),
        (Some(_), None, None) => missing(
            r,
            "ZENLAYER_ACCESS_KEY_PASSWORD is required with ZENLAYER_ACCESS_KEY_ID",
        ),
        (None, Some(_), None) => missing(
            r,
            "ZENLAYER_ACCESS_KEY_ID is required with ZENLAYER_ACCESS_KEY_PASSWORD",
        ),
        (None, None, None) => missing(
            r,
            "a Zenlayer credential is required: set ZENLAYER_ACCESS_KEY_ID and ZENLAYER_ACCESS_KEY_PASSWORD, or ZENLAYER_ACCESS_TOKEN",
        ),
        _ => missing(
            r,
            "set either ZENLAYER_ACCESS_KEY_ID/ZENLAYER_ACCESS_KEY_PASSWORD or ZENLAYER_ACCESS_TOKEN, not both",
        ),
    }
}

fn missing(r: &mut Reader, problem: &str) -> Credential {
    r.problem(problem);
    Credential::Token(SecretString::from(""))
}

impl TelemetrySettings {
    /// Just the telemetry settings, for commands that need nothing else.
    pub fn load(source: &dyn Source) -> Result<Self, SettingsError> {
        let mut reader = Reader::new(source);
        let settings = Self::read(&mut reader);
        reader.finish().map(|()| settings)
    }

    fn read(r: &mut Reader) -> Self {
        use std::io::IsTerminal;
        let default = if std::io::stdout().is_terminal() {
            LogFormat::Text
        } else {
            LogFormat::Json
        };
        Self {
            log_format: r.or("GATEWAY_LOG_FORMAT", "json or text", default),
            otlp_endpoint: r.raw("OTEL_EXPORTER_OTLP_ENDPOINT"),
        }
    }
}

#[cfg(test)]
mod tests;
