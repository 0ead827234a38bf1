//! The RPC boundary's errors, and the one place they become `tonic::Status`.
//!
//! Every status carries a `google.rpc.ErrorInfo` whose `reason` is Zenlayer's
//! code or one of the gateway's, so callers branch on `reason`, never on the
//! message. Messages are written for the person reading grpcurl output.

use super::codes::code_from_name;
use super::context::CallContext;
use super::upstream_status::upstream;
use crate::audit::{Answer, AuditError};
use crate::auth::{AuthError, Verdict};
use crate::domain::{DiskId, FieldViolation};
use crate::zenlayer::UpstreamError;
use std::collections::HashMap;
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
            Self::Denied(AuthError::KeySourceDown(detail)) => {
                tracing::error!(error = %detail, "cannot check caller tokens: the key source is down");
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

/// A status whose only detail is an ErrorInfo with `reason`.
fn with_reason(
    code: Code,
    reason: &str,
    message: impl Into<String>,
    metadata: HashMap<String, String>,
) -> Status {
    let details = ErrorDetails::with_error_info(reason, ERROR_DOMAIN, metadata);
    Status::with_error_details(code, message, details)
}

fn key_reused(key_disk: &str, metadata: HashMap<String, String>) -> Status {
    with_reason(
        Code::FailedPrecondition,
        "IDEMPOTENCY_KEY_REUSED",
        format!(
            "this idempotency_key was already used to release disk {key_disk}; use a new key for another disk"
        ),
        metadata,
    )
}

fn key_in_flight(metadata: HashMap<String, String>) -> Status {
    with_reason(
        Code::Aborted,
        "IDEMPOTENCY_KEY_IN_FLIGHT",
        "a call with this idempotency_key is still in progress; retry in a few seconds with the same key to get its answer (Zenlayer is not called twice)",
        metadata,
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
    let message = answer.error_message.clone().unwrap_or_default();
    with_reason(code_from_name(&answer.grpc_code), reason, message, metadata)
}

fn denied(error: &AuthError, metadata: HashMap<String, String>) -> Status {
    let code = match error.verdict() {
        Verdict::Unauthenticated => Code::Unauthenticated,
        Verdict::PermissionDenied => Code::PermissionDenied,
        Verdict::Unavailable => Code::Unavailable,
    };
    with_reason(code, error.reason(), error.to_string(), metadata)
}

fn audit_unavailable(disk_id: &DiskId, metadata: HashMap<String, String>) -> Status {
    with_reason(
        Code::Unavailable,
        "AUDIT_UNAVAILABLE",
        format!(
            "the audit trail cannot be written right now, so nothing was sent to Zenlayer and disk {disk_id} was not released; retry later"
        ),
        metadata,
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
