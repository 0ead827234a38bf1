//! The gateway's typed settings: one struct per dependency, read from the
//! environment (optionally layered over a file), checked as a whole before
//! any port is bound.
//!
//! Secrets are `SecretString`s: `Debug` of any settings struct never shows
//! them, and they are exposed only where a client is built.

mod auth;
mod budget;
mod database;
mod freeze;
mod limits;
mod policy;
mod reader;
mod server;
mod source;
mod telemetry;
mod tls;
mod trail;
mod url;
mod zenlayer;

pub use self::auth::{AuthSettings, KeySourceSettings};
pub use self::database::DatabaseSettings;
pub use self::limits::TransportLimits;
pub use self::policy::PolicySettings;
pub use self::server::ServerSettings;
pub use self::telemetry::{LogFormat, TelemetrySettings};
pub use self::tls::{TlsFiles, TlsSettings};
pub use self::trail::TrailSettings;
pub use crate::zenlayer::ZenlayerSettings;

pub use reader::SettingsError;
pub use source::{Environment, Overrides, Source};

use reader::Reader;

/// All of the gateway's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub zenlayer: ZenlayerSettings,
    pub auth: AuthSettings,
    pub policy: PolicySettings,
    pub telemetry: TelemetrySettings,
    pub trail: TrailSettings,
    pub budgets: crate::budget::Budgets,
    /// `GATEWAY_FREEZE_POLL_INTERVAL_MS`: the freeze state's fallback read.
    pub freeze_poll_interval: std::time::Duration,
}

impl Settings {
    /// Reads and checks every setting; the error names each bad variable.
    pub fn load(source: &dyn Source) -> Result<Self, SettingsError> {
        let mut reader = Reader::new(source);
        let settings = Self {
            server: ServerSettings::read(&mut reader),
            database: DatabaseSettings::read(&mut reader),
            zenlayer: zenlayer::read(&mut reader),
            auth: AuthSettings::read(&mut reader),
            policy: PolicySettings::read(&mut reader),
            telemetry: TelemetrySettings::read(&mut reader),
            trail: TrailSettings::read(&mut reader),
            budgets: budget::read(&mut reader),
            freeze_poll_interval: freeze::poll_interval(&mut reader),
        };
        reader.finish().map(|()| settings)
    }
}

#[cfg(test)]
mod tests;
