//! Refusing a call: the status, and its record in the audit trail. A
//! refusal stands even when it cannot be recorded; the log then holds it.

use super::CallContext;
use super::codes::code_name;
use super::error::{Audited, CallError};
use crate::audit::{Attempt, AuditLog, Decision, Refusal};
use tonic::Status;

/// Records `attempt` as refused for `error` and returns the caller's status.
pub async fn refuse(
    audit: &AuditLog,
    call: &CallContext,
    mut attempt: Attempt,
    error: CallError,
) -> Status {
    error.alert_operator();
    let status = error.status(call, Audited::Yes);
    let refusal = Refusal {
        reason: error.refusal_reason(),
        grpc_code: code_name(status.code()),
        message: status.message().to_owned(),
    };
    attempt.decision = match error {
        CallError::Denied(_) => Decision::Denied(refusal),
        _ => Decision::Invalid(refusal),
    };
    match audit.record_attempt(&attempt, None).await {
        Ok(_) => status,
        Err(audit_error) => {
            tracing::error!(error = %audit_error, attempt = ?attempt, "a refused call could not be recorded in the audit trail; this log line is its record");
            error.status(call, Audited::No)
        }
    }
}
