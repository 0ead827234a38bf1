//! Who may call the simulator, and the header checks Zenlayer makes before it
//! looks at a request's action: the `Authorization` form, the signature
//! method, the five-minute timestamp window and the signature itself.
//!
//! Signatures are checked by the simulator's own verifier (`signature`),
//! written from Zenlayer's documentation and not shared with the gateway's
//! signer, over the request's actual `Content-Type`, actual `Host` and exact
//! body bytes, so anything the gateway changes after signing, or signs
//! differently from Zenlayer, is caught here the way Zenlayer would catch it.

use std::collections::{HashMap, HashSet};
use std::fmt;

use http::HeaderMap;

use super::reply::ApiError;
use super::signature::{
    ALGORITHM, Arrived, ParsedAuthorization, SIGNED_HEADERS, parse_authorization, verifies,
};

const INVALID_AUTHORIZATION: &str = "AUTHFAILURE_INVALID_AUTHORIZATION";
const SIGNATURE_FAILURE: &str = "AUTHFAILURE_SIGNATURE_FAILURE";
const SIGNATURE_EXPIRED: &str = "AUTHFAILURE_SIGNATURE_EXPIRED";

/// How far `X-ZC-Timestamp` may be from the simulator's clock, either way.
const MAX_CLOCK_SKEW_SECS: u64 = 300;

/// A credential the simulator accepts.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// An AccessKeyId and its AccessKeyPassword, for ZC2-HMAC-SHA256.
    AccessKey { id: String, password: String },
    /// A personal access token, sent as `Authorization: Bearer <token>`.
    Token(String),
}

// Secrets stay out of logs even in a stand-in: configs get printed, and test
// keys have a way of turning into real ones.
impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::AccessKey { id, .. } => f
                .debug_struct("AccessKey")
                .field("id", id)
                .field("password", &"<redacted>")
                .finish(),
            Credential::Token(_) => f.debug_tuple("Token").field(&"<redacted>").finish(),
        }
    }
}

/// The accepted credentials, indexed for lookup.
#[derive(Default)]
pub(crate) struct Credentials {
    passwords_by_key_id: HashMap<String, String>,
    tokens: HashSet<String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_ids", &self.passwords_by_key_id.keys())
            .field("tokens", &self.tokens.len())
            .finish()
    }
}

impl Credentials {
    pub fn new(credentials: &[Credential]) -> Credentials {
        let mut indexed = Credentials::default();
        for credential in credentials {
            match credential {
                Credential::AccessKey { id, password } => {
                    indexed
                        .passwords_by_key_id
                        .insert(id.clone(), password.clone());
                }
                Credential::Token(token) => {
                    indexed.tokens.insert(token.clone());
                }
            }
        }
        indexed
    }

    /// Accepts or rejects a request's credentials. `now` is Unix seconds.
    pub fn check(&self, headers: &HeaderMap, body: &[u8], now: i64) -> Result<(), ApiError> {
        let authorization = header(headers, "authorization")
            .ok_or_else(|| invalid_authorization("Authorization header is missing or not text"))?;
        if let Some(token) = authorization.strip_prefix("Bearer ") {
            return self.check_token(token.trim());
        }
        let parsed = parse_authorization(authorization)
            .ok_or_else(|| invalid_authorization("Authorization header is malformed"))?;
        self.check_signature(&parsed, headers, body, now)
    }

    /// An unknown token is reported like a bad signature: both mean "these
    /// credentials are not valid", and the gateway treats every auth failure
    /// as the operator's problem anyway.
    fn check_token(&self, token: &str) -> Result<(), ApiError> {
        if token.is_empty() {
            return Err(invalid_authorization("Bearer token is empty"));
        }
        if self.tokens.contains(token) {
            Ok(())
        } else {
            Err(ApiError::unauthorized(
                SIGNATURE_FAILURE,
                "the access token is not valid",
            ))
        }
    }

    fn check_signature(
        &self,
        parsed: &ParsedAuthorization<'_>,
        headers: &HeaderMap,
        body: &[u8],
        now: i64,
    ) -> Result<(), ApiError> {
        if parsed.signed_headers != SIGNED_HEADERS {
            return Err(invalid_authorization(format!(
                "SignedHeaders must be {SIGNED_HEADERS}"
            )));
        }
        if header(headers, "x-zc-signature-method") != Some(ALGORITHM) {
            return Err(invalid_authorization(format!(
                "X-ZC-Signature-Method must be {ALGORITHM}"
            )));
        }
        check_timestamp(headers, now)?;
        let password = self
            .passwords_by_key_id
            .get(parsed.credential)
            .ok_or_else(|| {
                ApiError::unauthorized(SIGNATURE_FAILURE, "the access key id is not valid")
            })?;
        // Signed as sent: the header's text, not the number read from it.
        let arrived = Arrived {
            content_type: header(headers, "content-type").unwrap_or(""),
            host: header(headers, "host").unwrap_or(""),
            body,
            timestamp: header(headers, "x-zc-timestamp").unwrap_or(""),
        };
        if verifies(&arrived, password.as_bytes(), parsed.signature) {
            Ok(())
        } else {
            Err(ApiError::unauthorized(
                SIGNATURE_FAILURE,
                "the signature does not match",
            ))
        }
    }
}

/// A missing or non-integer timestamp is answered like a stale one: in each
/// case the request cannot be placed inside the five-minute window.
fn check_timestamp(headers: &HeaderMap, now: i64) -> Result<(), ApiError> {
    let timestamp = header(headers, "x-zc-timestamp")
        .and_then(|value| value.parse::<i64>().ok())
        .ok_or_else(|| {
            ApiError::unauthorized(
                SIGNATURE_EXPIRED,
                "X-ZC-Timestamp must be integer Unix seconds",
            )
        })?;
    if timestamp.abs_diff(now) > MAX_CLOCK_SKEW_SECS {
        return Err(ApiError::unauthorized(
            SIGNATURE_EXPIRED,
            format!(
                "X-ZC-Timestamp {timestamp} is more than {MAX_CLOCK_SKEW_SECS} s from server time {now}"
            ),
        ));
    }
    Ok(())
}

fn invalid_authorization(message: impl Into<String>) -> ApiError {
    ApiError::unauthorized(INVALID_AUTHORIZATION, message)
}

/// A header's value as text; a non-text value counts as absent.
pub(crate) fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_passwords_and_tokens() {
        let printed = format!(
            "{:?}",
            [
                Credential::AccessKey {
                    id: "key-id".into(),
                    password: "hunter2".into()
                },
                Credential::Token("tok-secret".into()),
            ]
        );
        assert!(printed.contains("key-id"));
        assert!(!printed.contains("hunter2"));
        assert!(!printed.contains("tok-secret"));
    }

    #[test]
    fn timestamps_exactly_at_the_window_edge_are_accepted() {
        let mut headers = HeaderMap::new();
        headers.insert("x-zc-timestamp", "1700000300".parse().unwrap());
        assert_eq!(check_timestamp(&headers, 1_700_000_000), Ok(()));
        assert_eq!(check_timestamp(&headers, 1_700_000_600), Ok(()));
        let expired = check_timestamp(&headers, 1_700_000_601).unwrap_err();
        assert_eq!(expired.code, SIGNATURE_EXPIRED);
    }

    #[test]
    fn extreme_timestamps_are_expired_not_a_panic() {
        let mut headers = HeaderMap::new();
        headers.insert("x-zc-timestamp", i64::MIN.to_string().parse().unwrap());
        assert_eq!(
            check_timestamp(&headers, i64::MAX).unwrap_err().code,
            SIGNATURE_EXPIRED
        );
    }
}
