//! The ways a call to Zenlayer can fail, sorted by what a caller (or the
//! audit trail) must know: did Zenlayer answer, with which code, and could
//! the disk have been released anyway.

use std::time::Duration;

/// Why a release did not come back as accepted.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Zenlayer answered with an API error body.
    #[error("Zenlayer refused the call with {code} (HTTP {http_status}): {message}")]
    Api {
        http_status: u16,
        code: String,
        message: String,
        request_id: Option<String>,
    },

    /// Rate limited, and no retry fitted within the retries and deadline.
    #[error("Zenlayer is rate limiting the gateway (HTTP {http_status})")]
    RateLimited {
        http_status: u16,
        request_id: Option<String>,
        retry_after: Option<Duration>,
    },

    /// A network-layer security challenge (403 with `cf-mitigated: challenge`).
    #[error("Zenlayer's edge answered with a security challenge (HTTP 403)")]
    SecurityChallenge,

    /// Blocked by Zenlayer's security policy (HTTP 451).
    #[error("Zenlayer's edge blocked the request by security policy (HTTP 451)")]
    RequestBlocked,

    /// An answer that is not Zenlayer's API JSON (a proxy's HTML page, an
    /// empty body, a 200 without a requestId).
    #[error("Zenlayer's answer could not be read (HTTP {http_status}): {detail}")]
    Unreadable { http_status: u16, detail: String },

    /// The request certainly never reached Zenlayer (the connection could not
    /// be made), even after retrying.
    #[error("could not connect to Zenlayer; nothing was sent")]
    NotSent(#[source] reqwest::Error),

    /// The request was sent and no answer came: the disk may or may not have
    /// been released.
    #[error("no answer from Zenlayer after the request was sent")]
    OutcomeUnknown {
        /// The caller's deadline, rather than the gateway's own cap, ended it.
        caller_deadline: bool,
        #[source]
        source: reqwest::Error,
    },

    /// Too little of the caller's deadline was left to make the call at all.
    #[error("only {}ms of the caller's deadline were left", remaining.as_millis())]
    DeadlineTooShort { remaining: Duration },
}

impl UpstreamError {
    /// Zenlayer's own error code, when it answered with one.
    pub fn zenlayer_code(&self) -> Option<&str> {
        match self {
            Self::Api { code, .. } => Some(code),
            Self::RateLimited { .. } => Some("REQUEST_LIMIT_EXCEEDED"),
            _ => None,
        }
    }

    /// The HTTP status of Zenlayer's answer, when there was one.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            Self::Api { http_status, .. }
            | Self::RateLimited { http_status, .. }
            | Self::Unreadable { http_status, .. } => Some(*http_status),
            Self::SecurityChallenge => Some(403),
            Self::RequestBlocked => Some(451),
            Self::NotSent(_) | Self::OutcomeUnknown { .. } | Self::DeadlineTooShort { .. } => None,
        }
    }

    /// Zenlayer's requestId for the failed call, when it sent one.
    pub fn upstream_request_id(&self) -> Option<&str> {
        match self {
            Self::Api { request_id, .. } | Self::RateLimited { request_id, .. } => {
                request_id.as_deref()
            }
            _ => None,
        }
    }

    /// Whether Zenlayer may have acted on the request without the gateway
    /// learning of it: no answer, an unreadable success, or a server-side
    /// failure after the request arrived (a timeout or fault inside
    /// Zenlayer, a proxy's bad-gateway or gateway-timeout).
    pub fn outcome_unknown(&self) -> bool {
        match self {
            Self::OutcomeUnknown { .. } => true,
            Self::Unreadable { http_status, .. } => {
                matches!(http_status, 200 | 500..=502 | 504..=599)
            }
            Self::Api {
                http_status, code, ..
            } => *http_status >= 500 && code != "SERVICE_TEMPORARY_UNAVAILABLE",
            _ => false,
        }
    }

    /// Whether Zenlayer certainly did not act on the request: it never
    /// arrived, or was turned away before the API ran it.
    pub fn zenlayer_did_not_act(&self) -> bool {
        match self {
            Self::NotSent(_)
            | Self::DeadlineTooShort { .. }
            | Self::RateLimited { .. }
            | Self::SecurityChallenge
            | Self::RequestBlocked
            | Self::Unreadable {
                http_status: 503, ..
            } => true,
            Self::Api { code, .. } => code == "SERVICE_TEMPORARY_UNAVAILABLE",
            _ => false,
        }
    }

    /// Whether a retry is safe: the request was refused or never arrived.
    pub(super) fn retryable(&self) -> bool {
        matches!(self, Self::RateLimited { .. } | Self::NotSent(_))
    }
}
