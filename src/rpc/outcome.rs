//! How one call ended, decided once, as one value: the gRPC code, the
//! reason to branch on, the message, the retry advice, what Zenlayer said,
//! what the gateway knows of the disk's fate, and whether the call's audit
//! record exists. The caller's status, the audit outcome, the metric labels
//! and the log line are all rendered from it (see `render`), and nothing is
//! ever read back out of a rendering.

use crate::audit::OutcomeKind;
use crate::decision::Decision;
use crate::domain::FieldViolation;
use crate::zenlayer::Fate;
use std::time::Duration;
use tonic::Code;
use uuid::Uuid;

/// The Zenlayer actions an outcome can be about.
pub const RELEASE_DISK: &str = "ReleaseDisk";
pub const DESCRIBE_DISKS: &str = "DescribeDisks";

/// Whether the call's audit record was stored, so that its id may be quoted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audited {
    Yes,
    No,
}

/// What Zenlayer said about a call, when it said anything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Upstream {
    /// The action the rest is about: `ReleaseDisk`, or `DescribeDisks`
    /// when the pre-flight decided the call.
    pub action: Option<String>,
    pub request_id: Option<String>,
    pub http_status: Option<u16>,
    /// Zenlayer's own error code.
    pub zenlayer_code: Option<String>,
}

/// How a call ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub decision: Decision,
    pub code: Code,
    /// `ErrorInfo.reason`; `None` only when the call succeeded.
    pub reason: Option<String>,
    /// For the person reading grpcurl output; empty on success.
    pub message: String,
    /// Sent as `RetryInfo`.
    pub retry_after: Option<Duration>,
    pub upstream: Upstream,
    pub fate: Fate,
    pub audited: Audited,
    /// The earlier call whose answer this one repeats (same idempotency key).
    pub replay_of: Option<Uuid>,
    /// Sent as `BadRequest` field violations.
    pub violations: Vec<FieldViolation>,
    /// For a refusal, the stable code recorded as `decision_reason`.
    pub refusal_reason: Option<String>,
    /// The audit log index of the call's attempt event: its receipt.
    pub log_index: Option<u64>,
    /// For a refusal by policy, the ids of the policies that decided, sent
    /// as `ErrorInfo.metadata.policy_ids`.
    pub policy_ids: Option<Vec<String>>,
}

impl Outcome {
    /// An allowed call's ending with no upstream facts yet; callers set the
    /// rest (a refusal's decision, a success's missing reason, …) with
    /// struct update syntax.
    pub(super) fn new(code: Code, reason: &str, message: String, fate: Fate) -> Self {
        Self {
            decision: Decision::Allowed,
            code,
            reason: Some(reason.to_owned()),
            message,
            retry_after: None,
            upstream: Upstream::default(),
            fate,
            audited: Audited::Yes,
            replay_of: None,
            violations: Vec::new(),
            refusal_reason: None,
            log_index: None,
            policy_ids: None,
        }
    }

    /// How the audit trail and the upstream metric name this ending.
    pub fn kind(&self) -> OutcomeKind {
        match (self.fate, self.code) {
            (Fate::MayHaveActed, _) => OutcomeKind::Unknown,
            (Fate::NotActed | Fate::Answered, Code::Ok) => OutcomeKind::Succeeded,
            (Fate::NotActed | Fate::Answered, _) => OutcomeKind::Failed,
        }
    }

    /// The `outcome` of the log line: a refusal, or how the allowed call
    /// ended (the audit view's `outcome` for it).
    pub fn label(&self) -> &'static str {
        match self.decision {
            Decision::Denied | Decision::Invalid => "refused",
            Decision::Allowed => self.kind().label(),
        }
    }

    /// Whether a claimed idempotency key may be freed for a real retry.
    pub fn frees_key(&self) -> bool {
        self.fate == Fate::NotActed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kind_follows_the_fate_and_the_code() {
        let cases = [
            (Fate::Answered, Code::Ok, OutcomeKind::Succeeded),
            (Fate::Answered, Code::NotFound, OutcomeKind::Failed),
            (Fate::NotActed, Code::Unavailable, OutcomeKind::Failed),
            (Fate::MayHaveActed, Code::Unavailable, OutcomeKind::Unknown),
            (Fate::MayHaveActed, Code::Unknown, OutcomeKind::Unknown),
        ];
        for (fate, code, kind) in cases {
            let outcome = Outcome::new(code, "R", String::new(), fate);
            assert_eq!(outcome.kind(), kind, "{fate:?} {code:?}");
            assert_eq!(outcome.label(), kind.label());
        }
        let refused = Outcome {
            decision: Decision::Denied,
            ..Outcome::new(Code::Unauthenticated, "R", String::new(), Fate::NotActed)
        };
        assert_eq!(refused.label(), "refused");
    }
}
