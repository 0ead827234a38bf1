//! What an operator must act on (a caller cannot fix these), logged at
//! `error` with the whole cause chain where the call learns of it.

use crate::audit::AuditError;
use crate::auth::AuthError;
use crate::decision::Refusal;
use crate::policy::Verdict;
use crate::zenlayer::UpstreamError;

/// An error and its causes, outermost first.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

pub(super) fn refusal(refusal: &Refusal) {
    if let Refusal::Denied(AuthError::KeySourceDown(detail)) = refusal {
        tracing::error!(error = %detail, "cannot check caller tokens: the key source is down");
    }
}

/// A policy that cannot be evaluated denies every call it touches: its
/// author must fix it. `set` names the enforced or the shadow set.
pub(super) fn policy_failed(set: &str, verdict: &Verdict) {
    if let Verdict::Error { policy_ids, errors } = verdict {
        tracing::error!(set, policy_ids = ?policy_ids, errors = ?errors, "a policy could not be evaluated: the call is denied (POLICY_ERROR) until the policy is fixed");
    }
}

pub(super) fn audit_unavailable(error: &AuditError) {
    tracing::error!(error = %chain(error), "audit database unavailable: releases are refused until it answers");
}

pub(super) fn upstream(error: &UpstreamError) {
    if error
        .zenlayer_code()
        .is_some_and(|code| code.starts_with("AUTHFAILURE_"))
    {
        tracing::error!(error = %chain(error), "Zenlayer rejected the gateway's own credential or clock: fix the gateway's Zenlayer key or clock");
    }
}
