//! What the gateway decided about a call, before anything is sent: allowed,
//! or refused and why. Refusals are their own type, separate from the
//! failures of allowed calls, and each refusal's stable reason is decided
//! here and nowhere else.

use crate::auth::AuthError;
use crate::budget::OverBudget;
use crate::domain::FieldViolation;
use crate::freeze::Freeze;

/// How the gateway decided on a call, as the audit trail, metrics and logs
/// label it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Authorized and valid: forwarded (or answered from an earlier call
    /// with the same idempotency key).
    Allowed,
    /// Refused for the caller's identity or role (or no way to check it),
    /// or by the policies.
    Denied,
    /// Refused for the request's content.
    Invalid,
}

impl Decision {
    pub fn label(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Denied => "denied",
            Self::Invalid => "invalid",
        }
    }
}

/// Why a call was refused; nothing was sent to Zenlayer for it.
#[derive(Debug, Clone)]
pub enum Refusal {
    /// One or more request fields are invalid (never empty).
    Invalid(Vec<FieldViolation>),
    /// The caller's token, or its role, did not pass.
    Denied(AuthError),
    /// The idempotency key was first used for another disk.
    KeyReused { key_disk: String },
    /// The request message is larger than any valid one can be.
    TooLarge { bytes: usize, limit: usize },
    /// The policies in force do not permit the release: the `forbid`
    /// policies that applied, or none when no `permit` did.
    PolicyDenied { policy_ids: Vec<String> },
    /// A policy could not be evaluated, which denies; the ids of the
    /// policies that failed.
    PolicyError { policy_ids: Vec<String> },
    /// An operator froze releases.
    Frozen(Freeze),
    /// Whether releases are frozen could not be read since start-up.
    FreezeUnknown,
    /// The release would exceed a release budget.
    OverBudget(OverBudget),
}

impl Refusal {
    /// The decision this refusal is recorded under.
    pub fn decision(&self) -> Decision {
        match self {
            Self::Denied(_)
            | Self::PolicyDenied { .. }
            | Self::PolicyError { .. }
            | Self::Frozen(_)
            | Self::FreezeUnknown
            | Self::OverBudget(_) => Decision::Denied,
            Self::Invalid(_) | Self::KeyReused { .. } | Self::TooLarge { .. } => Decision::Invalid,
        }
    }

    /// The stable code the audit trail records as `decision_reason`.
    pub fn reason(&self) -> String {
        match self {
            Self::Invalid(violations) => violations.first().map_or_else(
                || "INVALID_ARGUMENT".to_owned(),
                |v| format!("INVALID_{}", v.field.to_ascii_uppercase()),
            ),
            Self::Denied(error) => error.reason().to_owned(),
            Self::KeyReused { .. } => "IDEMPOTENCY_KEY_REUSED".to_owned(),
            Self::TooLarge { .. } => "MESSAGE_TOO_LARGE".to_owned(),
            Self::PolicyDenied { .. } => "POLICY_DENIED".to_owned(),
            Self::PolicyError { .. } => "POLICY_ERROR".to_owned(),
            Self::Frozen(_) => "RELEASES_FROZEN".to_owned(),
            Self::FreezeUnknown => "FREEZE_STATE_UNKNOWN".to_owned(),
            Self::OverBudget(_) => "RELEASE_BUDGET_EXCEEDED".to_owned(),
        }
    }

    /// The policies that decided, for a refusal by policy.
    pub fn policy_ids(&self) -> Option<&[String]> {
        match self {
            Self::PolicyDenied { policy_ids } | Self::PolicyError { policy_ids } => {
                Some(policy_ids)
            }
            Self::Invalid(_)
            | Self::Denied(_)
            | Self::KeyReused { .. }
            | Self::TooLarge { .. }
            | Self::Frozen(_)
            | Self::FreezeUnknown
            | Self::OverBudget(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_refusal_has_its_decision_and_reason() {
        let violation = FieldViolation {
            field: "disk_id",
            description: String::new(),
        };
        let cases = [
            (
                Refusal::Invalid(vec![violation]),
                Decision::Invalid,
                "INVALID_DISK_ID",
            ),
            (
                Refusal::Denied(AuthError::MissingToken),
                Decision::Denied,
                "TOKEN_MISSING",
            ),
            (
                Refusal::KeyReused {
                    key_disk: "disk-a".into(),
                },
                Decision::Invalid,
                "IDEMPOTENCY_KEY_REUSED",
            ),
            (
                Refusal::TooLarge {
                    bytes: 9000,
                    limit: 8192,
                },
                Decision::Invalid,
                "MESSAGE_TOO_LARGE",
            ),
            (
                Refusal::PolicyDenied {
                    policy_ids: vec!["never-protected".into()],
                },
                Decision::Denied,
                "POLICY_DENIED",
            ),
            (
                Refusal::PolicyError {
                    policy_ids: Vec::new(),
                },
                Decision::Denied,
                "POLICY_ERROR",
            ),
        ];
        for (refusal, decision, reason) in cases {
            assert_eq!(refusal.decision(), decision, "{refusal:?}");
            assert_eq!(refusal.reason(), reason);
        }
    }
}
