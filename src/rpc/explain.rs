//! What a caller is told, decided once per kind of ending: the gRPC code, a
//! reason to branch on, and a message that says whether the disk may have
//! been released and what to do next. Each function builds an [`Outcome`].

use super::codes::code_from_name;
use super::outcome::{Audited, DESCRIBE_DISKS, Outcome, RELEASE_DISK, Upstream};
use crate::audit::{Answer, OutcomeKind};
use crate::auth::Verdict;
use crate::budget::BudgetScope;
use crate::decision::Refusal;
use crate::domain::DiskId;
use crate::zenlayer::{Accepted, DiskSnapshot, Fate, UpstreamError};
use std::time::Duration;
use tonic::Code;
use uuid::Uuid;

/// Zenlayer accepted the release.
pub(super) fn accepted(accepted: Accepted) -> Outcome {
    Outcome {
        reason: None,
        upstream: Upstream {
            action: Some(RELEASE_DISK.to_owned()),
            request_id: Some(accepted.request_id),
            http_status: Some(200),
            zenlayer_code: None,
        },
        ..Outcome::new(Code::Ok, "", String::new(), Fate::Answered)
    }
}

/// A refused call: nothing was sent.
pub(super) fn refused(refusal: &Refusal) -> Outcome {
    let (code, reason, message) = match refusal {
        Refusal::Invalid(violations) => (
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
            violations
                .iter()
                .map(|v| v.description.as_str())
                .collect::<Vec<_>>()
                .join("; "),
        ),
        Refusal::Denied(error) => {
            let code = match error.verdict() {
                Verdict::Unauthenticated => Code::Unauthenticated,
                Verdict::PermissionDenied => Code::PermissionDenied,
                Verdict::Unavailable => Code::Unavailable,
            };
            (code, error.reason(), error.to_string())
        }
        Refusal::KeyReused { key_disk } => (
            Code::FailedPrecondition,
            "IDEMPOTENCY_KEY_REUSED",
            format!(
                "this idempotency_key was already used to release disk {key_disk}; use a new key for another disk"
            ),
        ),
        Refusal::TooLarge { bytes, limit } => (
            Code::ResourceExhausted,
            "MESSAGE_TOO_LARGE",
            format!(
                "the request is {bytes} bytes; at most {limit} are accepted (a disk_id has at most 64 characters, a reason 1024)"
            ),
        ),
        Refusal::PolicyDenied { policy_ids } => (
            Code::PermissionDenied,
            "POLICY_DENIED",
            match policy_ids.as_slice() {
                [] => "no policy permits this release; nothing was released".to_owned(),
                ids => format!(
                    "the release is forbidden by policy {}; nothing was released",
                    ids.join(", ")
                ),
            },
        ),
        Refusal::PolicyError { .. } => (
            Code::PermissionDenied,
            "POLICY_ERROR",
            "a policy could not be evaluated for this call, which denies it; nothing was released. Operators: the gateway's log names the policy and the error".to_owned(),
        ),
        Refusal::Frozen(freeze) => (
            Code::FailedPrecondition,
            "RELEASES_FROZEN",
            format!(
                "releases are frozen since {} by {}: {}. Nothing was released; retry once an operator runs `zenlayer-gateway unfreeze`",
                freeze.since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                freeze.operator,
                freeze.reason
            ),
        ),
        Refusal::FreezeUnknown => (
            Code::Unavailable,
            "FREEZE_STATE_UNKNOWN",
            "whether releases are frozen cannot be read from the audit database yet, so nothing was released; retry shortly".to_owned(),
        ),
        Refusal::OverBudget(over) => (
            Code::ResourceExhausted,
            "RELEASE_BUDGET_EXCEEDED",
            format!(
                "{} of {} is used up; nothing was released. A slot frees in {} s (RetryInfo)",
                match over.scope {
                    BudgetScope::Principal => "your release budget",
                    BudgetScope::Total => "the gateway's release budget for all callers",
                },
                over.budget,
                over.retry_after.as_secs().max(1)
            ),
        ),
    };
    let retry_after = match refusal {
        Refusal::OverBudget(over) => Some(over.retry_after.max(std::time::Duration::from_secs(1))),
        Refusal::FreezeUnknown => Some(std::time::Duration::from_secs(1)),
        Refusal::Invalid(_)
        | Refusal::Denied(_)
        | Refusal::KeyReused { .. }
        | Refusal::TooLarge { .. }
        | Refusal::PolicyDenied { .. }
        | Refusal::PolicyError { .. }
        | Refusal::Frozen(_) => None,
    };
    let violations = match refusal {
        Refusal::Invalid(violations) => violations.clone(),
        Refusal::Denied(_)
        | Refusal::KeyReused { .. }
        | Refusal::TooLarge { .. }
        | Refusal::PolicyDenied { .. }
        | Refusal::PolicyError { .. }
        | Refusal::Frozen(_)
        | Refusal::FreezeUnknown
        | Refusal::OverBudget(_) => Vec::new(),
    };
    Outcome {
        decision: refusal.decision(),
        violations,
        refusal_reason: Some(refusal.reason()),
        policy_ids: refusal.policy_ids().map(<[String]>::to_vec),
        retry_after,
        ..Outcome::new(code, reason, message, Fate::NotActed)
    }
}

/// The attempt could not be recorded, so nothing was sent.
pub(super) fn audit_unavailable(disk_id: &DiskId) -> Outcome {
    Outcome {
        audited: Audited::No,
        ..Outcome::new(
            Code::Unavailable,
            "AUDIT_UNAVAILABLE",
            format!(
                "the audit trail cannot be written right now, so the release was not sent to Zenlayer and disk {disk_id} was not released; retry later"
            ),
            Fate::NotActed,
        )
    }
}

/// The caller's deadline is about to pass while the call is still being
/// worked on. The call runs on to its end and is recorded; until the caller
/// looks, its outcome is unknown to it.
pub(super) fn answer_overdue() -> Outcome {
    Outcome::new(
        Code::DeadlineExceeded,
        "OUTCOME_UNKNOWN",
        "your deadline ran out while the gateway was still working on the call; it runs to its end and is recorded. The disk may or may not be released: GetRelease with this audit_id shows how it ended".to_owned(),
        Fate::MayHaveActed,
    )
}

/// The call's task ended without answering: a fault in the gateway itself
/// (logged where it happened). Whatever it had done is in the audit trail;
/// a call it had recorded and not concluded is swept and reconciled.
pub(super) fn ended_without_answer() -> Outcome {
    Outcome::new(
        Code::Internal,
        "OUTCOME_UNKNOWN",
        "the gateway failed while working on the call (operators: see its error log). The disk may or may not be released: GetRelease with this audit_id shows how it ended, once the call is reconciled".to_owned(),
        Fate::MayHaveActed,
    )
}

/// Another call holding the same key has not ended yet.
pub(super) fn key_in_flight() -> Outcome {
    Outcome::new(
        Code::Aborted,
        "IDEMPOTENCY_KEY_IN_FLIGHT",
        "a call with this idempotency_key is still in progress; retry in a few seconds with the same key to get its answer (Zenlayer is not called twice)".to_owned(),
        Fate::NotActed,
    )
}

/// The answer an earlier call with the same key ended with, told again:
/// same code, message and reason.
pub(super) fn replayed(answer: &Answer, original: Uuid) -> Outcome {
    let fate = match answer.kind {
        OutcomeKind::Unknown => Fate::MayHaveActed,
        OutcomeKind::Succeeded | OutcomeKind::Failed => Fate::Answered,
    };
    let code = code_from_name(&answer.grpc_code);
    let reason = match code {
        Code::Ok => None,
        _ => Some(
            answer
                .error_reason
                .clone()
                .or_else(|| answer.zenlayer_code.clone())
                .unwrap_or_else(|| "REPLAYED".to_owned()),
        ),
    };
    Outcome {
        reason,
        upstream: Upstream {
            action: answer.zenlayer_action.clone(),
            request_id: answer.zenlayer_request_id.clone(),
            http_status: answer.http_status,
            zenlayer_code: answer.zenlayer_code.clone(),
        },
        replay_of: Some(original),
        ..Outcome::new(
            code,
            "",
            answer.error_message.clone().unwrap_or_default(),
            fate,
        )
    }
}

/// Zenlayer did not release the disk, or the gateway cannot tell.
pub(super) fn upstream_failed(disk_id: &DiskId, error: &UpstreamError) -> Outcome {
    let fate = error.fate();
    let explained = explain(disk_id, error, fate);
    Outcome {
        retry_after: explained.retry_after,
        upstream: upstream_of(RELEASE_DISK, error),
        ..Outcome::new(explained.code, &explained.reason, explained.message, fate)
    }
}

fn upstream_of(action: &str, error: &UpstreamError) -> Upstream {
    Upstream {
        action: Some(action.to_owned()),
        request_id: error.upstream_request_id().map(str::to_owned),
        http_status: error.http_status(),
        zenlayer_code: error.zenlayer_code().map(str::to_owned),
    }
}

/// What the pre-flight found made the release pointless or wrong; nothing
/// was released. `None` for a disk that was not listed.
pub(super) fn preflight_refused(
    disk_id: &DiskId,
    disk: Option<&DiskSnapshot>,
    describe_request_id: &str,
) -> Outcome {
    let (code, reason, message) = match disk {
        None => (
            Code::NotFound,
            "INVALID_DISK_NOT_FOUND",
            format!(
                "Zenlayer has no disk {disk_id}: DescribeDisks does not list it (it may already have been released); nothing was released"
            ),
        ),
        Some(disk) => not_releasable(disk_id, disk),
    };
    Outcome {
        upstream: Upstream {
            action: Some(DESCRIBE_DISKS.to_owned()),
            request_id: Some(describe_request_id.to_owned()),
            http_status: None,
            zenlayer_code: None,
        },
        ..Outcome::new(code, reason, message, Fate::NotActed)
    }
}

/// Why a listed disk cannot be released, with what to do about it; the
/// reasons are the codes Zenlayer's `ReleaseDisk` would answer with.
fn not_releasable(disk_id: &DiskId, disk: &DiskSnapshot) -> (Code, &'static str, String) {
    let status = disk.disk_status.as_deref().unwrap_or("of unknown status");
    if disk.is_system() {
        return (
            Code::FailedPrecondition,
            "UNSUPPORTED_OPERATION_DISK_SYSTEM_TYPE",
            format!(
                "disk {disk_id} is a system disk ({status}); system disks cannot be released, they go with their instance. Nothing was released"
            ),
        );
    }
    let (reason, what_to_do) = match status {
        "RECYCLING" => (
            "UNSUPPORTED_OPERATION_RECYCLE_STATUS",
            "it is still being moved into the recycle bin; retry once DescribeDisks shows it RECYCLED".to_owned(),
        ),
        "DELETING" => (
            "UNSUPPORTED_OPERATION_DISK_NOT_BEING_RECYCLE",
            "it is already being deleted: it was released before".to_owned(),
        ),
        _ => (
            "UNSUPPORTED_OPERATION_DISK_NOT_BEING_RECYCLE",
            match (&disk.instance_id, &disk.instance_name) {
                (Some(id), Some(name)) if name != id => format!(
                    "it is attached to instance {id} ({name}): detach it and TerminateDisk it into the recycle bin first"
                ),
                (Some(id), _) => format!(
                    "it is attached to instance {id}: detach it and TerminateDisk it into the recycle bin first"
                ),
                (None, _) => "TerminateDisk it into the recycle bin first".to_owned(),
            },
        ),
    };
    (
        Code::FailedPrecondition,
        reason,
        format!(
            "disk {disk_id} is {status}, not in the recycle bin (RECYCLED): {what_to_do}. Nothing was released"
        ),
    )
}

/// `DescribeDisks` failed, so the disk was not looked at and not released.
/// Too little deadline and no connection are told as for the release
/// itself: the caller's remedy is the same whichever call met them.
pub(super) fn preflight_unavailable(disk_id: &DiskId, error: &UpstreamError) -> Outcome {
    if let UpstreamError::DeadlineTooShort { .. } | UpstreamError::NotSent(_) = error {
        let explained = explain(disk_id, error, Fate::NotActed);
        return Outcome {
            upstream: upstream_of(DESCRIBE_DISKS, error),
            ..Outcome::new(
                explained.code,
                &explained.reason,
                explained.message,
                Fate::NotActed,
            )
        };
    }
    let operator = error
        .zenlayer_code()
        .is_some_and(|code| code.starts_with("AUTHFAILURE_"));
    let (code, reason, message) = if operator {
        (
            Code::Internal,
            error.zenlayer_code().unwrap_or_default().to_owned(),
            format!(
                "the gateway is misconfigured: Zenlayer refused its DescribeDisks ({error}), so disk {disk_id} could not be looked at and was not released. Operators: fix the gateway's Zenlayer key, or set ZENLAYER_PREFLIGHT=false for a key that may not describe disks"
            ),
        )
    } else {
        (
            Code::Unavailable,
            "PREFLIGHT_UNAVAILABLE".to_owned(),
            format!(
                "could not look at disk {disk_id} before releasing it (DescribeDisks: {error}); nothing was released. Retry later"
            ),
        )
    };
    Outcome {
        upstream: upstream_of(DESCRIBE_DISKS, error),
        ..Outcome::new(code, &reason, message, Fate::NotActed)
    }
}

struct Explained {
    code: Code,
    reason: String,
    message: String,
    retry_after: Option<Duration>,
}

fn ours(code: Code, reason: &str, message: String) -> Explained {
    Explained {
        code,
        reason: reason.to_owned(),
        message,
        retry_after: None,
    }
}

fn explain(disk_id: &DiskId, error: &UpstreamError, fate: Fate) -> Explained {
    match error {
        UpstreamError::Api {
            http_status,
            code,
            message,
            ..
        } => explain_api_code(disk_id, *http_status, code, message, fate),
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
        UpstreamError::Unreadable { http_status, .. } => {
            explain_unreadable(disk_id, *http_status, fate)
        }
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

/// An answer that is not Zenlayer's API JSON: what it means for the disk
/// is the fate's to say.
fn explain_unreadable(disk_id: &DiskId, http_status: u16, fate: Fate) -> Explained {
    match (http_status, fate) {
        (200, _) => ours(
            Code::Unknown,
            "OUTCOME_UNKNOWN",
            format!(
                "Zenlayer answered HTTP 200 but without a readable requestId: disk {disk_id} was probably released. Check DescribeDisks before retrying"
            ),
        ),
        (_, Fate::NotActed) => ours(
            Code::Unavailable,
            "UPSTREAM_UNAVAILABLE",
            format!(
                "Zenlayer (or a proxy in front of it) is unavailable (HTTP {http_status}); disk {disk_id} was not released. Retry later"
            ),
        ),
        (_, Fate::MayHaveActed) => ours(
            Code::Unavailable,
            "UPSTREAM_UNAVAILABLE",
            format!(
                "Zenlayer (or a proxy in front of it) failed with HTTP {http_status} while handling the release: disk {disk_id} may or may not have been released. Check DescribeDisks before retrying"
            ),
        ),
        (_, Fate::Answered) => ours(
            Code::Unknown,
            "UPSTREAM_UNREADABLE",
            format!(
                "Zenlayer answered HTTP {http_status} with a body that is not its API's; disk {disk_id} was most likely not released"
            ),
        ),
    }
}

fn explain_api_code(
    disk_id: &DiskId,
    http_status: u16,
    code: &str,
    message: &str,
    fate: Fate,
) -> Explained {
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
            "the gateway is misconfigured: Zenlayer rejected the gateway's own credential or clock. This is not a problem with your token; operators must fix the gateway. Nothing was released: once it is fixed, retry (with the same idempotency key, if you sent one)".to_owned(),
        ),
        "SERVICE_TEMPORARY_UNAVAILABLE" => (
            Code::Unavailable,
            format!("Zenlayer is temporarily unavailable and did not release disk {disk_id}; retry later"),
        ),
        _ if fate == Fate::MayHaveActed => (
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
