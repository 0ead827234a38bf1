//! What one event says happened to its call, decided once: the OCSF status
//! and severity, and the event's message, are all rendered from it.

use crate::export::event::{AuditEvent, Stage};

/// The state of the call that an event records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// An allowed call's attempt: authorized, and recorded before the
    /// release was sent.
    Authorized,
    /// Refused for the caller's identity or role (`denied`).
    Denied,
    /// Refused for the request's content (`invalid`).
    Invalid,
    Succeeded,
    /// Not released: Zenlayer refused, or nothing was sent.
    Failed,
    /// Sent without an answer that says what happened.
    Unknown,
    /// The released disk is no longer listed.
    Confirmed,
    /// The released disk was still listed when the gateway stopped looking.
    NotConfirmed,
    /// A value the trail's constraints do not allow today.
    Unrecognized(String),
}

impl Verdict {
    pub fn of(event: &AuditEvent) -> Self {
        match &event.stage {
            Stage::Attempt => match event.attempt.decision.as_str() {
                "allowed" => Self::Authorized,
                "denied" => Self::Denied,
                "invalid" => Self::Invalid,
                other => Self::Unrecognized(other.to_owned()),
            },
            Stage::Outcome(outcome) => match outcome.outcome.as_str() {
                "succeeded" => Self::Succeeded,
                "failed" => Self::Failed,
                "unknown" => Self::Unknown,
                other => Self::Unrecognized(other.to_owned()),
            },
            Stage::Confirmation(confirmation) => match confirmation.confirmation.as_str() {
                "confirmed" => Self::Confirmed,
                "not_confirmed" => Self::NotConfirmed,
                other => Self::Unrecognized(other.to_owned()),
            },
        }
    }

    /// OCSF `status_id` and `status` (its caption, or for 99 the source's own).
    pub fn status(&self) -> (u8, &str) {
        match self {
            Self::Authorized => (99, "Pending"),
            Self::Succeeded | Self::Confirmed => (1, "Success"),
            Self::Denied | Self::Invalid | Self::Failed | Self::NotConfirmed => (2, "Failure"),
            Self::Unknown => (0, "Unknown"),
            Self::Unrecognized(value) => (99, value),
        }
    }

    /// OCSF `severity_id` and `severity`: a refused identity, a release whose
    /// fate is unknown and one Zenlayer did not carry out need a look.
    pub fn severity(&self) -> (u8, &'static str) {
        match self {
            Self::Authorized | Self::Succeeded | Self::Confirmed => (1, "Informational"),
            Self::Invalid | Self::Failed => (2, "Low"),
            Self::Denied | Self::Unknown | Self::NotConfirmed => (3, "Medium"),
            Self::Unrecognized(_) => (0, "Unknown"),
        }
    }

    /// A few words for the event's `message`.
    pub fn summary(&self) -> String {
        match self {
            Self::Authorized => "authorized; recorded before it was sent".to_owned(),
            Self::Denied => "denied".to_owned(),
            Self::Invalid => "refused as invalid".to_owned(),
            Self::Succeeded => "succeeded".to_owned(),
            Self::Failed => "failed; nothing released".to_owned(),
            Self::Unknown => "outcome unknown; the disk may or may not be released".to_owned(),
            Self::Confirmed => "confirmed; the disk is no longer listed".to_owned(),
            Self::NotConfirmed => "not confirmed; the disk was still listed".to_owned(),
            Self::Unrecognized(value) => value.clone(),
        }
    }
}
