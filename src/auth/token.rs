//! Verifying one bearer token: where it comes from, its algorithm, its key,
//! its signature, then its claims. The signature is checked before any claim
//! is believed.

use super::keys::KeySet;
use super::{AuthError, Principal};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use http::HeaderMap;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::Value;

/// Tokens larger than this are refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// What a token must satisfy.
#[derive(Debug, Clone)]
pub struct TokenPolicy {
    pub issuer: String,
    pub audience: String,
    pub algorithms: Vec<Algorithm>,
    pub leeway_seconds: u64,
    pub roles_claim: String,
    /// Dotted path to the caller's groups (`JWT_GROUPS_CLAIM`).
    pub groups_claim: String,
}

/// The bearer token from the `authorization` metadata.
pub fn bearer_token(headers: &HeaderMap) -> Result<&str, AuthError> {
    let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
    let value = values.next().ok_or(AuthError::MissingToken)?;
    if values.next().is_some() {
        return Err(AuthError::BadHeader(
            "more than one authorization value was sent; send exactly one",
        ));
    }
    // The value holds "Bearer " (seven bytes, as the scheme check below
    // insists) besides the token, so this one bound, checked before anything
    // is parsed, also bounds the token.
    if value.len() > MAX_TOKEN_BYTES + 7 {
        return Err(AuthError::TooLarge(value.len().saturating_sub(7)));
    }
    let value = value
        .to_str()
        .map_err(|_| AuthError::BadHeader("authorization is not plain text"))?;
    let (scheme, token) = value
        .trim()
        .split_once(' ')
        .ok_or(AuthError::BadHeader("authorization must be 'Bearer <JWT>'"))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::BadHeader(
            "authorization must use the Bearer scheme",
        ));
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(AuthError::MissingToken);
    }
    Ok(token)
}

/// The token's `alg` and `kid`, read with nothing trusted yet.
struct UnverifiedHeader {
    alg: Algorithm,
    kid: Option<String>,
}

fn read_header(token: &str, policy: &TokenPolicy) -> Result<UnverifiedHeader, AuthError> {
    let segment = token.split('.').next().unwrap_or_default();
    let header: Value = URL_SAFE_NO_PAD
        .decode(segment)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or_else(|| AuthError::Malformed("its header is not base64url JSON".into()))?;
    let name = header
        .get("alg")
        .and_then(Value::as_str)
        .unwrap_or("(none given)");
    let accepted = || {
        policy
            .algorithms
            .iter()
            .map(|a| format!("{a:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let alg = name
        .parse::<Algorithm>()
        .ok()
        .filter(|alg| policy.algorithms.contains(alg))
        .ok_or_else(|| AuthError::AlgorithmNotAllowed(printable(name), accepted()))?;
    let kid = header.get("kid").map(|kid| {
        kid.as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| kid.to_string())
    });
    Ok(UnverifiedHeader { alg, kid })
}

/// Whether the token names a key id that `keys` does not hold; the caller
/// may then refresh the key set once and try again.
pub fn names_unknown_key(token: &str, keys: &KeySet, policy: &TokenPolicy) -> bool {
    read_header(token, policy).is_ok_and(|h| h.kid.is_some_and(|kid| !keys.has_kid(&kid)))
}

/// Verifies `token` against `keys` and `policy`.
pub fn verify(token: &str, keys: &KeySet, policy: &TokenPolicy) -> Result<Principal, AuthError> {
    let header = read_header(token, policy)?;
    if let Some(kid) = header.kid.as_deref().filter(|kid| !keys.has_kid(kid)) {
        return Err(AuthError::UnknownKey(printable(kid)));
    }
    let validation = validation(header.alg, policy);
    let mut claims = Err(AuthError::BadSignature);
    for candidate in keys.candidates(header.kid.as_deref(), header.alg) {
        claims = jsonwebtoken::decode::<Value>(token, &candidate.key, &validation)
            .map(|data| data.claims)
            .map_err(|e| claim_error(e.kind(), token, policy));
        if !matches!(claims, Err(AuthError::BadSignature)) {
            break;
        }
    }
    let claims = claims?;
    if let Some(iat) = timestamp(&claims, "iat")
        .filter(|iat| iat.timestamp() > Utc::now().timestamp() + policy.leeway_seconds as i64)
    {
        return Err(AuthError::IssuedInFuture(iat));
    }
    Principal::from_claims(&claims, &policy.roles_claim, &policy.groups_claim)
}

fn validation(alg: Algorithm, policy: &TokenPolicy) -> Validation {
    let mut validation = Validation::new(alg);
    validation.leeway = policy.leeway_seconds;
    validation.validate_nbf = true;
    validation.set_issuer(&[&policy.issuer]);
    validation.set_audience(&[&policy.audience]);
    // Without "aud" here a token with no audience at all would pass.
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    validation
}

/// Maps a failure from the JWT library. Claim errors are only reported
/// after the signature verified, so reading the claims for the message
/// (e.g. the expiry time) trusts nothing unverified.
fn claim_error(kind: &ErrorKind, token: &str, policy: &TokenPolicy) -> AuthError {
    let verified_claims =
        || jsonwebtoken::dangerous::insecure_decode_claims::<Value>(token).unwrap_or_default();
    let when = |name: &str| timestamp(&verified_claims(), name).unwrap_or_default();
    match kind {
        ErrorKind::ExpiredSignature => AuthError::Expired(when("exp")),
        ErrorKind::ImmatureSignature => AuthError::NotYetValid(when("nbf")),
        ErrorKind::InvalidIssuer => AuthError::WrongIssuer(policy.issuer.clone()),
        ErrorKind::InvalidAudience => AuthError::WrongAudience(policy.audience.clone()),
        // The library reports a required claim of the wrong type (`"exp":
        // "tomorrow"`) as missing; the caller fixing its token needs to know
        // which it is.
        ErrorKind::MissingRequiredClaim(claim) => {
            if verified_claims().get(claim).is_some_and(|v| !v.is_null()) {
                AuthError::BadClaim(claim.clone())
            } else {
                AuthError::MissingClaim(claim.clone())
            }
        }
        ErrorKind::InvalidClaimFormat(claim) => AuthError::BadClaim(claim.clone()),
        ErrorKind::InvalidToken
        | ErrorKind::Base64(_)
        | ErrorKind::Json(_)
        | ErrorKind::Utf8(_) => AuthError::Malformed("it does not decode".into()),
        _ => AuthError::BadSignature,
    }
}

fn timestamp(claims: &Value, name: &str) -> Option<DateTime<Utc>> {
    claims
        .get(name)
        .and_then(Value::as_i64)
        .and_then(|secs| DateTime::from_timestamp(secs, 0))
}

/// Echoes a caller-supplied value in a message only if it is short and plain.
fn printable(value: &str) -> String {
    let plain = value.len() <= 64
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c));
    if plain {
        value.to_owned()
    } else {
        "(an unprintable value)".to_owned()
    }
}

#[cfg(test)]
mod tests;

/// The `authorization` metadata and the token in it, as any caller may send
/// them: never a panic, and a token handed on only in the documented shape.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    /// Few cases in the usual run; `PROPTEST_CASES` asks for more. Failures
    /// are not persisted to files: each one found is committed as a test.
    fn config() -> ProptestConfig {
        ProptestConfig {
            cases: std::env::var("PROPTEST_CASES")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(64),
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    fn policy() -> TokenPolicy {
        TokenPolicy {
            issuer: "https://issuer.example".to_owned(),
            audience: "zenlayer-gateway".to_owned(),
            algorithms: vec![Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA],
            leeway_seconds: 30,
            roles_claim: "roles".to_owned(),
            groups_claim: "groups".to_owned(),
        }
    }

    /// Values that are sometimes `Bearer <something>`, sometimes anything.
    fn authorization() -> impl Strategy<Value = Vec<u8>> {
        let shaped = ("[bB][eE][aA][rR][eE][rR]", "[ \\t]{0,3}", "[ -~]{0,64}")
            .prop_map(|(scheme, gap, token)| format!("{scheme} {gap}{token}").into_bytes());
        prop_oneof![prop::collection::vec(any::<u8>(), 0..96), shaped]
    }

    /// Three dot-separated parts of base64url-ish text, or anything.
    fn tokens() -> impl Strategy<Value = String> {
        let part = "[A-Za-z0-9_=+/-]{0,48}";
        prop_oneof![
            (part, part, part).prop_map(|(a, b, c)| format!("{a}.{b}.{c}")),
            "[ -~]{0,128}",
        ]
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn a_token_is_taken_only_from_a_bearer_value(values in prop::collection::vec(authorization(), 0..3)) {
            let mut headers = HeaderMap::new();
            for value in &values {
                if let Ok(value) = http::HeaderValue::from_bytes(value) {
                    headers.append(http::header::AUTHORIZATION, value);
                }
            }
            if let Ok(token) = bearer_token(&headers) {
                prop_assert_eq!(headers.get_all(http::header::AUTHORIZATION).iter().count(), 1);
                prop_assert!(!token.is_empty() && token.len() <= MAX_TOKEN_BYTES);
                prop_assert_eq!(token, token.trim());
                let value = headers[http::header::AUTHORIZATION].to_str().unwrap();
                prop_assert!(value.trim()[..6].eq_ignore_ascii_case("bearer"));
                prop_assert!(value.ends_with(token) || value.trim_end().ends_with(token));
            }
        }

        #[test]
        fn no_token_passes_without_a_key(token in tokens()) {
            let keys = KeySet::default();
            let _ = names_unknown_key(&token, &keys, &policy());
            prop_assert!(verify(&token, &keys, &policy()).is_err());
        }
    }
}
