//! Refusing a call: the status, and its record in the audit trail. The
//! record is written in a task of its own, so a caller that hangs up at once
//! cannot take it along; and a refusal stands even when it cannot be
//! recorded, the log then holding it.

use super::CallContext;
use super::codes::code_name;
use super::error::{Audited, CallError};
use crate::audit::{Attempt, AuditLog, Decision, Refusal};
use tokio_util::task::TaskTracker;
use tonic::Status;
use tracing::Instrument as _;

/// Records `attempt` as refused for `error` and returns the caller's status.
pub async fn refuse(
    audit: &AuditLog,
    tasks: &TaskTracker,
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
    let audit = audit.clone();
    let write = tasks.spawn(
        async move {
            let recorded = audit.record_attempt(&attempt, None).await;
            if let Err(error) = &recorded {
                tracing::error!(error = %error, attempt = ?attempt, "a refused call could not be recorded in the audit trail; this log line is its record");
            }
            recorded.is_ok()
        }
        .in_current_span(),
    );
    match write.await {
        Ok(true) => status,
        _ => error.status(call, Audited::No),
    }
}
