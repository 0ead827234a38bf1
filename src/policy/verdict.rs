//! One policy set's answer to one request, decided once: permit, deny, or
//! an error, with the ids of the policies that decided. An error always
//! denies: Cedar skips a policy that fails to evaluate, and a skipped
//! `forbid` must never let a release through.

use super::entities::Built;
use super::source::LoadedSet;
use cedar_policy::{AuthorizationError, Authorizer, Decision};

/// What a policy set decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// `policy_ids`: the `permit` policies that applied.
    Permit { policy_ids: Vec<String> },
    /// `policy_ids`: the `forbid` policies that applied; empty when no
    /// `permit` applied (Cedar denies by default).
    Deny { policy_ids: Vec<String> },
    /// A policy could not be evaluated (or the request not built): denied.
    /// `policy_ids`: the policies that failed; `errors` are for operators.
    Error {
        policy_ids: Vec<String>,
        errors: Vec<String>,
    },
}

impl Verdict {
    pub fn permits(&self) -> bool {
        matches!(self, Self::Permit { .. })
    }

    /// How the audit trail and metrics name it.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Permit { .. } => "permit",
            Self::Deny { .. } => "deny",
            Self::Error { .. } => "error",
        }
    }

    pub fn policy_ids(&self) -> &[String] {
        match self {
            Self::Permit { policy_ids }
            | Self::Deny { policy_ids }
            | Self::Error { policy_ids, .. } => policy_ids,
        }
    }
}

pub(super) fn evaluate(
    authorizer: &Authorizer,
    loaded: &LoadedSet,
    built: &anyhow::Result<Built>,
) -> Verdict {
    let built = match built {
        Ok(built) => built,
        Err(error) => {
            return Verdict::Error {
                policy_ids: Vec::new(),
                errors: vec![format!("the request could not be built: {error:#}")],
            };
        }
    };
    let response = authorizer.is_authorized(&built.request, &loaded.set, &built.entities);
    let diagnostics = response.diagnostics();
    let errors = diagnostics
        .errors()
        .map(ToString::to_string)
        .collect::<Vec<_>>();
    if !errors.is_empty() {
        let policy_ids = sorted(diagnostics.errors().map(|e| match e {
            AuthorizationError::PolicyEvaluationError(e) => e.policy_id().to_string(),
        }));
        return Verdict::Error { policy_ids, errors };
    }
    let policy_ids = sorted(diagnostics.reason().map(ToString::to_string));
    match response.decision() {
        Decision::Allow => Verdict::Permit { policy_ids },
        Decision::Deny => Verdict::Deny { policy_ids },
    }
}

fn sorted(ids: impl Iterator<Item = String>) -> Vec<String> {
    let mut ids = ids.collect::<Vec<_>>();
    ids.sort();
    ids.dedup();
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The audit trail's `policy_decision` and `policy_ids`, and the
    /// metrics' labels, are rendered from these.
    #[test]
    fn each_verdict_names_its_decision_and_the_policies_that_made_it() {
        let ids = |names: &[&str]| names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
        let verdicts = [
            (
                Verdict::Permit {
                    policy_ids: ids(&["release-role"]),
                },
                "permit",
                ids(&["release-role"]),
            ),
            (
                Verdict::Deny {
                    policy_ids: ids(&["never-protected", "team-owns-disk"]),
                },
                "deny",
                ids(&["never-protected", "team-owns-disk"]),
            ),
            (
                Verdict::Error {
                    policy_ids: ids(&["overflows"]),
                    errors: vec!["integer overflow".into()],
                },
                "error",
                ids(&["overflows"]),
            ),
        ];
        for (verdict, label, policy_ids) in verdicts {
            assert_eq!(verdict.label(), label);
            assert_eq!(verdict.policy_ids(), policy_ids.as_slice());
            assert_eq!(verdict.permits(), label == "permit");
        }
    }
}
