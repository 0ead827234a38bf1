//! The PostgreSQL database that holds the audit trail, and the pools the
//! gateway connects through.

use super::SettingsError;
use super::reader::Reader;
use super::source::Source;
use crate::database::PING_WHEN_IDLE_FOR;
use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use std::time::Duration;

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

impl DatabaseSettings {
    /// Just the database settings, for commands that need nothing else.
    pub fn load(source: &dyn Source) -> Result<Self, SettingsError> {
        let mut reader = Reader::new(source);
        let settings = Self::read(&mut reader);
        reader.finish().map(|()| settings)
    }

    pub(super) fn read(r: &mut Reader) -> Self {
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
            // A connection is pinged before use only if it has been idle a
            // while (the database may have restarted since, and a dead one
            // is then replaced unseen): pinging every time would add a
            // round trip to every audit write.
            .test_before_acquire(false)
            .before_acquire(|connection, meta| {
                Box::pin(async move {
                    if meta.idle_for >= PING_WHEN_IDLE_FOR {
                        sqlx::Connection::ping(connection).await?;
                    }
                    Ok(true)
                })
            })
            .connect_lazy_with(options))
    }
}
