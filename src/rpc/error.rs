//! The RPC boundary's errors, and the one place they become `tonic::Status`.
//!
//! Every status carries a `google.rpc.ErrorInfo` whose `reason` is Zenlayer's
//! code or one of the gateway's, so callers branch on `reason`, never on the
//! message. Messages are written for the person reading grpcurl output.

use super::context::CallContext;
use crate::audit::{Answer, AuditError};
use crate::auth::{AuthError, Verdict};
use crate::domain::{DiskId, FieldViolation};
use crate::zenlayer::UpstreamError;
use std::collections::HashMap;
use std::time::Duration;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};
use uuid::Uuid;

/// `ErrorInfo.domain` of every error the gateway returns.
pub const ERROR_DOMAIN: &str = "zenlayer-gateway";

/// Why a `ReleaseDisk` call did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("invalid request")]
    Invalid(Vec<FieldViolation>),
    #[error("caller refused: {0}")]
    Denied(#[source] AuthError),
    #[error("the audit trail could not record disk {disk_id}'s release")]
    AuditUnavailable {
        disk_id: DiskId,
        #[source]
        source: AuditError,
    },
    #[error("the idempotency key was first used for disk {key_disk}")]
    KeyReused { key_disk: String },
    #[error("a call with this idempotency key is still in flight")]
    KeyInFlight,
    #[error("replayed the answer of call {original}")]
    Replayed { answer: Answer, original: Uuid },
    #[error("Zenlayer did not release disk {disk_id}")]
    Upstream {
        disk_id: DiskId,
        #[source]
        source: UpstreamError,
    },
}

/// Whether the call's audit record was stored, so its id may be quoted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audited {
    Yes,
    No,
}

impl CallError {
    /// The status for the caller; `audited` says whether the status may
    /// point at the call's audit record.
    pub fn status(&self, call: &CallContext, audited: Audited) -> Status {
        let metadata = call.error_metadata(audited);
        match self {
            Self::Invalid(violations) => invalid(violations, metadata),
            Self::Denied(error) => denied(error, metadata),
            Self::AuditUnavailable { disk_id, .. } => audit_unavailable(disk_id, metadata),
            Self::KeyReused { key_disk } => key_reused(key_disk, metadata),
            Self::KeyInFlight => key_in_flight(metadata),
            Self::Replayed { answer, original } => replayed(answer, *original, metadata),
            Self::Upstream { disk_id, source } => upstream(disk_id, source, metadata),
        }
    }

    /// Logs what an operator must act on (the caller cannot fix these), with
    /// the whole cause chain.
    pub fn alert_operator(&self) {
        let chain = |e: &dyn std::error::Error| {
            let mut text = e.to_string();
            let mut source = e.source();
            while let Some(cause) = source {
                text.push_str(": ");
                text.push_str(&cause.to_string());
                source = cause.source();
            }
            text
        };
        match self {
            Self::Denied(error) if error.verdict() == Verdict::Unavailable => {
                tracing::error!(error = %chain(self), "cannot check caller tokens: the key source is down");
            }
            Self::AuditUnavailable { .. } => {
                tracing::error!(error = %chain(self), "audit database unavailable: releases are refused until it answers");
            }
            Self::Upstream { source, .. } if matches!(source.zenlayer_code(), Some(c) if c.starts_with("AUTHFAILURE_")) =>
            {
                tracing::error!(error = %chain(self), "Zenlayer rejected the gateway's own credential or clock: fix the gateway's Zenlayer key or clock");
            }
            _ => {}
        }
    }

    /// The stable reason a refusal is recorded under.
    pub fn refusal_reason(&self) -> String {
        match self {
            Self::Invalid(violations) => violations
                .first()
                .map(|v| format!("INVALID_{}", v.field.to_ascii_uppercase()))
                .unwrap_or_else(|| "INVALID_ARGUMENT".to_owned()),
            Self::Denied(error) => error.reason().to_owned(),
            Self::AuditUnavailable { .. } => "AUDIT_UNAVAILABLE".to_owned(),
            Self::KeyReused { .. } => "IDEMPOTENCY_KEY_REUSED".to_owned(),
            Self::KeyInFlight => "IDEMPOTENCY_KEY_IN_FLIGHT".to_owned(),
            Self::Replayed { answer, .. } => answer
                .error_reason
                .clone()
                .unwrap_or_else(|| "REPLAYED".to_owned()),
            Self::Upstream { source, .. } => {
                source.zenlayer_code().unwrap_or("UPSTREAM").to_owned()
            }
        }
    }
}

/// The canonical name of a gRPC code, as stored in the audit trail.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The gRPC code named `name` in the audit trail (the inverse of
/// [`code_name`]); an unknown name is UNKNOWN.
pub fn code_from_name(name: &str) -> Code {
    const ALL: [Code; 17] = [
        Code::Ok,
        Code::Cancelled,
        Code::Unknown,
        Code::InvalidArgument,
        Code::DeadlineExceeded,
        Code::NotFound,
        Code::AlreadyExists,
        Code::PermissionDenied,
        Code::ResourceExhausted,
        Code::FailedPrecondition,
        Code::Aborted,
        Code::OutOfRange,
        Code::Unimplemented,
        Code::Internal,
        Code::Unavailable,
        Code::DataLoss,
        Code::Unauthenticated,
    ];
    ALL.into_iter()
        .find(|code| code_name(*code) == name)
        .unwrap_or(Code::Unknown)
}

fn key_reused(key_disk: &str, metadata: HashMap<String, String>) -> Status {
    let details = ErrorDetails::with_error_info("IDEMPOTENCY_KEY_REUSED", ERROR_DOMAIN, metadata);
    Status::with_error_details(
        Code::FailedPrecondition,
        format!(
            "this idempotency_key was already used to release disk {key_disk}; use a new key for another disk"
        ),
        details,
    )
}

fn key_in_flight(metadata: HashMap<String, String>) -> Status {
    let details =
        ErrorDetails::with_error_info("IDEMPOTENCY_KEY_IN_FLIGHT", ERROR_DOMAIN, metadata);
    Status::with_error_details(
        Code::Aborted,
        "a call with this idempotency_key is still in progress; retry in a few seconds with the same key to get its answer (Zenlayer is not called twice)",
        details,
    )
}

/// The status an earlier call ended with, told again: same code, message
/// and reason, marked as replayed.
fn replayed(answer: &Answer, original: Uuid, mut metadata: HashMap<String, String>) -> Status {
    metadata.insert("replayed".to_owned(), "true".to_owned());
    metadata.insert("original_audit_id".to_owned(), original.to_string());
    if let Some(id) = &answer.zenlayer_request_id {
        metadata.insert("upstream_request_id".to_owned(), id.clone());
    }
    if let Some(status) = answer.http_status {
        metadata.insert("http_status".to_owned(), status.to_string());
    }
    let reason = answer
        .error_reason
        .as_deref()
        .or(answer.zenlayer_code.as_deref())
        .unwrap_or("REPLAYED");
    let details = ErrorDetails::with_error_info(reason, ERROR_DOMAIN, metadata);
    let message = answer.error_message.clone().unwrap_or_default();
    Status::with_error_details(code_from_name(&answer.grpc_code), message, details)
}

fn denied(error: &AuthError, metadata: HashMap<String, String>) -> Status {
    let code = match error.verdict() {
        Verdict::Unauthenticated => Code::Unauthenticated,
        Verdict::PermissionDenied => Code::PermissionDenied,
        Verdict::Unavailable => Code::Unavailable,
    };
    let details = ErrorDetails::with_error_info(error.reason(), ERROR_DOMAIN, metadata);
    Status::with_error_details(code, error.to_string(), details)
}

fn audit_unavailable(disk_id: &DiskId, metadata: HashMap<String, String>) -> Status {
    let details = ErrorDetails::with_error_info("AUDIT_UNAVAILABLE", ERROR_DOMAIN, metadata);
    Status::with_error_details(
        Code::Unavailable,
        format!(
            "the audit trail cannot be written right now, so nothing was sent to Zenlayer and disk {disk_id} was not released; retry later"
        ),
        details,
    )
}

fn invalid(violations: &[FieldViolation], metadata: HashMap<String, String>) -> Status {
    let message = violations
        .iter()
        .map(|v| v.description.as_str())
        .collect::<Vec<_>>()
        .join("; ");
    let mut details = ErrorDetails::new();
    for v in violations {
        details.add_bad_request_violation(v.field, &v.description);
    }
    details.set_error_info("INVALID_ARGUMENT", ERROR_DOMAIN, metadata);
    Status::with_error_details(Code::InvalidArgument, message, details)
}

/// What a caller is told about an upstream failure.
struct Explained {
    code: Code,
    reason: String,
    message: String,
    retry_after: Option<Duration>,
}

fn upstream(
    disk_id: &DiskId,
    error: &UpstreamError,
    mut metadata: HashMap<String, String>,
) -> Status {
    let explained = explain(disk_id, error);
    if let Some(id) = error.upstream_request_id() {
        metadata.insert("upstream_request_id".into(), id.to_owned());
    }
    if let Some(status) = error.http_status() {
        metadata.insert("http_status".into(), status.to_string());
    }
    let mut details = ErrorDetails::with_error_info(explained.reason, ERROR_DOMAIN, metadata);
    if let Some(after) = explained.retry_after {
        details.set_retry_info(Some(after));
    }
    Status::with_error_details(explained.code, explained.message, details)
}

fn explain(disk_id: &DiskId, error: &UpstreamError) -> Explained {
    let ours = |code, reason: &str, message: String| Explained {
        code,
        reason: reason.to_owned(),
        message,
        retry_after: None,
    };
    match error {
        UpstreamError::Api {
            http_status,
            code,
            message,
            ..
        } => explain_api_code(disk_id, *http_status, code, message),
        UpstreamError::RateLimited { retry_after, .. } => Explained {
            retry_after: Some(retry_after.unwrap_or(Duration::from_secs(1))),
            ..ours(
                Code::ResourceExhausted,
                "REQUEST_LIMIT_EXCEEDED",
                format!(
                    "Zenlayer is rate limiting releases and disk {disk_id} was not released; retry after a pause"
                ),
            )
        },
        UpstreamError::SecurityChallenge => ours(
            Code::Unavailable,
            "SECURITY_CHALLENGE",
            format!(
                "Zenlayer's network edge answered with a security challenge; disk {disk_id} was not released. Operators: check the gateway's egress address with Zenlayer"
            ),
        ),
        UpstreamError::RequestBlocked => ours(
            Code::Unavailable,
            "REQUEST_BLOCKED",
            format!(
                "Zenlayer's security policy blocked the request (HTTP 451); disk {disk_id} was not released. Operators: contact Zenlayer support"
            ),
        ),
        UpstreamError::Unreadable {
            http_status: 200, ..
        } => ours(
            Code::Unknown,
            "OUTCOME_UNKNOWN",
            format!(
                "Zenlayer answered HTTP 200 but without a readable requestId: disk {disk_id} was probably released. Check DescribeDisks before retrying"
            ),
        ),
        UpstreamError::Unreadable { http_status, .. } if *http_status >= 500 => ours(
            Code::Unavailable,
            "UPSTREAM_UNAVAILABLE",
            format!(
                "Zenlayer (or a proxy in front of it) failed with HTTP {http_status}; disk {disk_id} was not released. Retry later"
            ),
        ),
        UpstreamError::Unreadable { http_status, .. } => ours(
            Code::Unknown,
            "UPSTREAM_UNREADABLE",
            format!(
                "Zenlayer answered HTTP {http_status} with a body that is not its API's; disk {disk_id} was most likely not released"
            ),
        ),
        UpstreamError::NotSent(_) => ours(
            Code::Unavailable,
            "UPSTREAM_UNREACHABLE",
            format!(
                "could not connect to Zenlayer; nothing was sent and disk {disk_id} was not released. Retry later"
            ),
        ),
        UpstreamError::OutcomeUnknown {
            caller_deadline, ..
        } => ours(
            if *caller_deadline {
                Code::DeadlineExceeded
            } else {
                Code::Unavailable
            },
            "OUTCOME_UNKNOWN",
            format!(
                "the release of disk {disk_id} was sent to Zenlayer but no answer came in time: the disk may or may not have been released. Retry with the same idempotency_key, or check DescribeDisks, before assuming either"
            ),
        ),
        UpstreamError::DeadlineTooShort { remaining } => ours(
            Code::DeadlineExceeded,
            "DEADLINE_TOO_SHORT",
            format!(
                "only {}ms of your deadline were left, too little to call Zenlayer; nothing was sent. Allow a few seconds",
                remaining.as_millis()
            ),
        ),
    }
}

fn explain_api_code(disk_id: &DiskId, http_status: u16, code: &str, message: &str) -> Explained {
    let (code_for_caller, hint) = match code {
        "INVALID_DISK_NOT_FOUND" | "OPERATION_FAILED_RESOURCE_NOT_FOUND" => (
            Code::NotFound,
            format!("Zenlayer has no disk {disk_id} (it may already have been released)"),
        ),
        c if c.starts_with("UNSUPPORTED_OPERATION_") || c == "OPERATION_FAILED_FOR_RECYCLE_RESOURCE" => (
            Code::FailedPrecondition,
            format!("Zenlayer will not release disk {disk_id} in its current state: only data disks in the recycle bin (RECYCLED) can be released"),
        ),
        c if c == "MISSING_PARAMETER" || c.starts_with("INVALID_PARAMETER") => (
            Code::InvalidArgument,
            format!("Zenlayer rejected the parameters for disk {disk_id}"),
        ),
        c if c.starts_with("AUTHFAILURE_") => (
            Code::Internal,
            "the gateway is misconfigured: Zenlayer rejected the gateway's own credential or clock. This is not a problem with your token; operators must fix the gateway".to_owned(),
        ),
        _ if code == "SERVICE_TEMPORARY_UNAVAILABLE" || http_status >= 500 => (
            Code::Unavailable,
            format!("Zenlayer failed temporarily and did not release disk {disk_id}; retry later"),
        ),
        _ => (Code::Unknown, format!("Zenlayer did not release disk {disk_id}")),
    };
    Explained {
        code: code_for_caller,
        reason: code.to_owned(),
        message: format!("{hint} (Zenlayer: {code}, HTTP {http_status}: {message})"),
        retry_after: None,
    }
}

impl CallContext {
    /// Metadata every error carries so a caller can quote it.
    fn error_metadata(&self, audited: Audited) -> HashMap<String, String> {
        let mut metadata = HashMap::from([("x_request_id".to_owned(), self.request_id.clone())]);
        if audited == Audited::Yes {
            metadata.insert("audit_id".to_owned(), self.call_id.to_string());
        }
        metadata
    }
}
