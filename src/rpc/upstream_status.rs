//! What a caller is told when Zenlayer did not release the disk: the gRPC
//! code, a reason to branch on, and a message that says whether the disk
//! may have been released and what to do next.

use super::error::ERROR_DOMAIN;
use crate::domain::DiskId;
use crate::zenlayer::UpstreamError;
use std::collections::HashMap;
use std::time::Duration;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// What a caller is told about an upstream failure.
struct Explained {
    code: Code,
    reason: String,
    message: String,
    retry_after: Option<Duration>,
}

pub(super) fn upstream(
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
        UpstreamError::Unreadable {
            http_status: 503, ..
        } => ours(
            Code::Unavailable,
            "UPSTREAM_UNAVAILABLE",
            format!(
                "Zenlayer (or a proxy in front of it) is unavailable (HTTP 503); disk {disk_id} was not released. Retry later"
            ),
        ),
        UpstreamError::Unreadable { http_status, .. } if *http_status >= 500 => ours(
            Code::Unavailable,
            "UPSTREAM_UNAVAILABLE",
            format!(
                "Zenlayer (or a proxy in front of it) failed with HTTP {http_status} while handling the release: disk {disk_id} may or may not have been released. Check DescribeDisks before retrying"
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
        "SERVICE_TEMPORARY_UNAVAILABLE" => (
            Code::Unavailable,
            format!("Zenlayer is temporarily unavailable and did not release disk {disk_id}; retry later"),
        ),
        _ if http_status >= 500 => (
            Code::Unavailable,
            format!("Zenlayer failed while handling the release: disk {disk_id} may or may not have been released. Check DescribeDisks before retrying"),
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
