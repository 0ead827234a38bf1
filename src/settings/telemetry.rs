//! Logging and tracing settings.

use super::SettingsError;
use super::reader::Reader;
use super::source::Source;

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

impl TelemetrySettings {
    /// Just the telemetry settings, for commands that need nothing else.
    pub fn load(source: &dyn Source) -> Result<Self, SettingsError> {
        let mut reader = Reader::new(source);
        let settings = Self::read(&mut reader);
        reader.finish().map(|()| settings)
    }

    pub(super) fn read(r: &mut Reader) -> Self {
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
