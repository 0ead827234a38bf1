//! The ways a call to Zenlayer can fail, sorted by what a caller (or the
//! audit trail) must know: did Zenlayer answer, with which code, and could
//! the disk have been released anyway.

use super::Fate;
use crate::deadline::TooShort;
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
            Self::SecurityChallenge
            | Self::RequestBlocked
            | Self::Unreadable { .. }
            | Self::NotSent(_)
            | Self::OutcomeUnknown { .. }
            | Self::DeadlineTooShort { .. } => None,
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
            Self::SecurityChallenge
            | Self::RequestBlocked
            | Self::Unreadable { .. }
            | Self::NotSent(_)
            | Self::OutcomeUnknown { .. }
            | Self::DeadlineTooShort { .. } => None,
        }
    }

    /// What the gateway knows about the disk's fate after this error: the
    /// one place that decides it.
    pub fn fate(&self) -> Fate {
        match self {
            // Never arrived, or turned away before the API ran it.
            Self::NotSent(_)
            | Self::DeadlineTooShort { .. }
            | Self::RateLimited { .. }
            | Self::SecurityChallenge
            | Self::RequestBlocked => Fate::NotActed,
            // Zenlayer says it is unavailable: it did nothing.
            Self::Api { code, .. } if code == "SERVICE_TEMPORARY_UNAVAILABLE" => Fate::NotActed,
            // Zenlayer would not run a request it could not authenticate or
            // authorize: it did nothing, and once operators mend the key a
            // retry with the same idempotency key must really try again.
            Self::Api { code, .. } if code.starts_with("AUTHFAILURE_") => Fate::NotActed,
            // A timeout or fault inside Zenlayer after the request arrived.
            Self::Api { http_status, .. } if *http_status >= 500 => Fate::MayHaveActed,
            Self::Api { .. } => Fate::Answered,
            Self::Unreadable { http_status, .. } => match http_status {
                // A proxy's "unavailable": the request was not passed on.
                503 => Fate::NotActed,
                // A success without its requestId, or a proxy's bad gateway
                // or gateway timeout: Zenlayer may have run it.
                200 | 500..=599 => Fate::MayHaveActed,
                _ => Fate::Answered,
            },
            Self::OutcomeUnknown { .. } => Fate::MayHaveActed,
        }
    }

    /// Whether a retry is safe: the request was refused or never arrived.
    pub(super) fn retryable(&self) -> bool {
        matches!(self, Self::RateLimited { .. } | Self::NotSent(_))
    }
}

impl From<TooShort> for UpstreamError {
    fn from(short: TooShort) -> Self {
        Self::DeadlineTooShort {
            remaining: short.remaining,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(http_status: u16, code: &str) -> UpstreamError {
        UpstreamError::Api {
            http_status,
            code: code.to_owned(),
            message: String::new(),
            request_id: Some("T1".to_owned()),
        }
    }

    fn unreadable(http_status: u16) -> UpstreamError {
        UpstreamError::Unreadable {
            http_status,
            detail: String::new(),
        }
    }

    /// A transport error of each kind, from a real client against a port
    /// nobody listens on (connect) and a server that hangs up (sent).
    async fn transport_errors() -> (reqwest::Error, reqwest::Error) {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let refused_url = format!("http://{}", closed.local_addr().unwrap());
        drop(closed);
        let connect = reqwest::get(&refused_url).await.unwrap_err();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            drop(socket);
        });
        let dropped = reqwest::get(&url).await.unwrap_err();
        (connect, dropped)
    }

    #[tokio::test]
    async fn every_upstream_error_and_documented_code_has_its_fate() {
        use Fate::{Answered, MayHaveActed, NotActed};
        let (connect, dropped) = transport_errors().await;
        let mut cases = vec![
            (UpstreamError::NotSent(connect), NotActed),
            (
                UpstreamError::OutcomeUnknown {
                    caller_deadline: true,
                    source: dropped,
                },
                MayHaveActed,
            ),
            (
                UpstreamError::DeadlineTooShort {
                    remaining: Duration::from_millis(5),
                },
                NotActed,
            ),
            (
                UpstreamError::RateLimited {
                    http_status: 429,
                    request_id: None,
                    retry_after: None,
                },
                NotActed,
            ),
            (UpstreamError::SecurityChallenge, NotActed),
            (UpstreamError::RequestBlocked, NotActed),
            (unreadable(200), MayHaveActed),
            (unreadable(500), MayHaveActed),
            (unreadable(502), MayHaveActed),
            (unreadable(503), NotActed),
            (unreadable(504), MayHaveActed),
            (unreadable(404), Answered),
            (unreadable(400), Answered),
        ];
        let documented = [
            (404, "INVALID_DISK_NOT_FOUND", Answered),
            (
                400,
                "UNSUPPORTED_OPERATION_DISK_NOT_BEING_RECYCLE",
                Answered,
            ),
            (400, "UNSUPPORTED_OPERATION_DISK_SYSTEM_TYPE", Answered),
            (400, "UNSUPPORTED_OPERATION_RECYCLE_STATUS", Answered),
            (500, "INTERNAL_SERVER_ERROR", MayHaveActed),
            (503, "SERVICE_TEMPORARY_UNAVAILABLE", NotActed),
            (504, "REQUEST_TIMED_OUT", MayHaveActed),
            (401, "AUTHFAILURE_INVALID_AUTHORIZATION", NotActed),
            (401, "AUTHFAILURE_SIGNATURE_FAILURE", NotActed),
            (401, "AUTHFAILURE_SIGNATURE_EXPIRED", NotActed),
            (403, "AUTHFAILURE_UNAUTHORIZED_OPERATION", NotActed),
            (400, "MISSING_PARAMETER", Answered),
            (400, "INVALID_PARAMETER_VALUE", Answered),
            (400, "INVALID_PARAMETER_EXCEED_LENGTH", Answered),
            (400, "OPERATION_FAILED_FOR_RECYCLE_RESOURCE", Answered),
            (404, "OPERATION_FAILED_RESOURCE_NOT_FOUND", Answered),
            (400, "SOMETHING_NEW", Answered),
            (500, "SOMETHING_NEW", MayHaveActed),
        ];
        cases.extend(
            documented
                .into_iter()
                .map(|(status, code, fate)| (api(status, code), fate)),
        );
        for (error, fate) in cases {
            assert_eq!(error.fate(), fate, "{error:?}");
        }
    }

    /// What the caller's ErrorInfo and the audit trail carry for each error:
    /// Zenlayer's code, the HTTP status of its answer and its requestId,
    /// each only when Zenlayer (or its edge) really answered with one.
    #[tokio::test]
    async fn each_error_reports_only_the_code_status_and_request_id_it_had() {
        let (connect, dropped) = transport_errors().await;
        let cases = [
            (
                api(404, "INVALID_DISK_NOT_FOUND"),
                (Some("INVALID_DISK_NOT_FOUND"), Some(404), Some("T1")),
            ),
            (
                UpstreamError::RateLimited {
                    http_status: 429,
                    request_id: Some("T3".to_owned()),
                    retry_after: None,
                },
                (Some("REQUEST_LIMIT_EXCEEDED"), Some(429), Some("T3")),
            ),
            (UpstreamError::SecurityChallenge, (None, Some(403), None)),
            (UpstreamError::RequestBlocked, (None, Some(451), None)),
            (unreadable(502), (None, Some(502), None)),
            (unreadable(200), (None, Some(200), None)),
            (UpstreamError::NotSent(connect), (None, None, None)),
            (
                UpstreamError::OutcomeUnknown {
                    caller_deadline: false,
                    source: dropped,
                },
                (None, None, None),
            ),
            (
                UpstreamError::DeadlineTooShort {
                    remaining: Duration::from_millis(5),
                },
                (None, None, None),
            ),
        ];
        for (error, expected) in cases {
            let reported = (
                error.zenlayer_code(),
                error.http_status(),
                error.upstream_request_id(),
            );
            assert_eq!(reported, expected, "{error:?}");
        }
    }

    /// A release is irreversible: it is sent again only when Zenlayer
    /// certainly did not receive it (rate limited, or never connected).
    #[tokio::test]
    async fn only_a_rate_limited_or_unsent_call_is_safe_to_retry() {
        let (connect, dropped) = transport_errors().await;
        let rate_limited = UpstreamError::RateLimited {
            http_status: 429,
            request_id: None,
            retry_after: None,
        };
        assert!(rate_limited.retryable());
        assert!(UpstreamError::NotSent(connect).retryable());
        let not_retried = [
            UpstreamError::OutcomeUnknown {
                caller_deadline: false,
                source: dropped,
            },
            api(500, "INTERNAL_SERVER_ERROR"),
            api(404, "INVALID_DISK_NOT_FOUND"),
            unreadable(200),
            unreadable(502),
            UpstreamError::SecurityChallenge,
            UpstreamError::RequestBlocked,
            UpstreamError::DeadlineTooShort {
                remaining: Duration::from_millis(5),
            },
        ];
        for error in not_retried {
            assert!(!error.retryable(), "{error:?}");
        }
    }
}
