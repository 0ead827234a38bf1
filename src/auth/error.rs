//! Why a caller was not let through. Messages are precise enough to fix a
//! client ("token expired at …", "audience does not include …") and say
//! nothing that helps forge a token.

use chrono::{DateTime, Utc};

/// An authentication or authorization failure.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    #[error("no bearer token: send metadata 'authorization: Bearer <JWT>'")]
    MissingToken,
    #[error("{0}")]
    BadHeader(&'static str),
    #[error("token is {0} bytes; at most 8192 are accepted")]
    TooLarge(usize),
    #[error("token is not a well-formed JWT ({0})")]
    Malformed(String),
    #[error("token algorithm {0} is not accepted (accepted: {1})")]
    AlgorithmNotAllowed(String, String),
    #[error("token is signed with key id {0}, which the issuer does not publish")]
    UnknownKey(String),
    #[error("token signature does not verify with any trusted key")]
    BadSignature,
    #[error("token expired at {}", .0.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))]
    Expired(DateTime<Utc>),
    #[error("token is not valid before {}", .0.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))]
    NotYetValid(DateTime<Utc>),
    #[error("token was issued in the future ({}); check the issuer's clock", .0.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))]
    IssuedInFuture(DateTime<Utc>),
    #[error("token has no {0} claim")]
    MissingClaim(String),
    #[error("token claim {0} has the wrong type")]
    BadClaim(String),
    #[error("token issuer is not trusted here (expected {0})")]
    WrongIssuer(String),
    #[error("token audience does not include {0}")]
    WrongAudience(String),
    /// No key could be had at all: the caller's token may be fine. The
    /// detail (which source, what failed) is for the operators' log only.
    #[error(
        "the token signing keys cannot be loaded right now, so no token can be checked; retry later"
    )]
    KeySourceDown(String),
    #[error("caller {subject} lacks the role {role} (looked for in claim {claim})")]
    MissingRole {
        subject: String,
        role: String,
        claim: String,
    },
}

/// How the RPC layer should answer a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Unauthenticated,
    PermissionDenied,
    Unavailable,
}

impl AuthError {
    pub fn verdict(&self) -> Verdict {
        match self {
            Self::KeySourceDown(_) => Verdict::Unavailable,
            Self::MissingRole { .. } => Verdict::PermissionDenied,
            Self::MissingToken
            | Self::BadHeader(_)
            | Self::TooLarge(_)
            | Self::Malformed(_)
            | Self::AlgorithmNotAllowed(..)
            | Self::UnknownKey(_)
            | Self::BadSignature
            | Self::Expired(_)
            | Self::NotYetValid(_)
            | Self::IssuedInFuture(_)
            | Self::MissingClaim(_)
            | Self::BadClaim(_)
            | Self::WrongIssuer(_)
            | Self::WrongAudience(_) => Verdict::Unauthenticated,
        }
    }

    /// A stable, machine-readable reason (`ErrorInfo.reason`, audit column).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::MissingToken => "TOKEN_MISSING",
            Self::BadHeader(_) | Self::TooLarge(_) | Self::Malformed(_) => "TOKEN_MALFORMED",
            Self::AlgorithmNotAllowed(..) => "TOKEN_ALGORITHM_NOT_ALLOWED",
            Self::UnknownKey(_) => "TOKEN_KEY_UNKNOWN",
            Self::BadSignature => "TOKEN_SIGNATURE_INVALID",
            Self::Expired(_) => "TOKEN_EXPIRED",
            Self::NotYetValid(_) | Self::IssuedInFuture(_) => "TOKEN_NOT_YET_VALID",
            Self::MissingClaim(_) | Self::BadClaim(_) => "TOKEN_CLAIMS_INVALID",
            Self::WrongIssuer(_) => "TOKEN_ISSUER_INVALID",
            Self::WrongAudience(_) => "TOKEN_AUDIENCE_INVALID",
            Self::KeySourceDown(_) => "KEY_SOURCE_UNAVAILABLE",
            Self::MissingRole { .. } => "ROLE_MISSING",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_unreachable_key_source_is_unavailable_and_only_a_missing_role_denied() {
        let missing_role = AuthError::MissingRole {
            subject: "alice".into(),
            role: "disk:release".into(),
            claim: "roles".into(),
        };
        let cases = [
            (
                AuthError::KeySourceDown("down".into()),
                Verdict::Unavailable,
            ),
            (missing_role, Verdict::PermissionDenied),
            (AuthError::MissingToken, Verdict::Unauthenticated),
            (AuthError::BadSignature, Verdict::Unauthenticated),
        ];
        for (error, verdict) in cases {
            assert_eq!(error.verdict(), verdict, "{error:?}");
        }
    }
}
