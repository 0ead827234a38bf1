//! What a caller is told about its token at the edges: the exact size
//! limit, key ids and algorithms that may or may not be echoed, several
//! keys without ids, and well-signed tokens whose content is wrong. Each
//! test asserts the reason (`ErrorInfo.reason`) and, where a person reads
//! it, the message.

use super::*;
use crate::auth::Verdict;
use crate::auth::keys::VerificationKey;
use jsonwebtoken::{DecodingKey, EncodingKey};
use serde_json::json;

const RSA_PRIVATE: &[u8] = include_bytes!("../../../tests/fixtures/jwt/rsa-private.pem");
const RSA_PUBLIC: &[u8] = include_bytes!("../../../tests/fixtures/jwt/rsa-public.pem");
const RSA2_PRIVATE: &[u8] = include_bytes!("../../../tests/fixtures/jwt/rsa2-private.pem");
const RSA2_PUBLIC: &[u8] = include_bytes!("../../../tests/fixtures/jwt/rsa2-public.pem");
const UNRELATED_PRIVATE: &[u8] =
    include_bytes!("../../../tests/fixtures/jwt/unrelated-private.pem");

const ISSUER: &str = "https://idp.test.internal";
const AUDIENCE: &str = "zenlayer-gateway";
const UNPRINTABLE: &str = "(an unprintable value)";

fn policy() -> TokenPolicy {
    TokenPolicy {
        issuer: ISSUER.to_owned(),
        audience: AUDIENCE.to_owned(),
        algorithms: vec![Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA],
        leeway_seconds: 30,
        roles_claim: "roles".to_owned(),
        groups_claim: "groups".to_owned(),
    }
}

/// A JWKS-style key set: one RSA key, published as `rsa-1`.
fn published() -> KeySet {
    KeySet::new(vec![VerificationKey {
        kid: Some("rsa-1".to_owned()),
        key: DecodingKey::from_rsa_pem(RSA_PUBLIC).unwrap(),
        algorithms: vec![Algorithm::RS256],
    }])
}

/// A PEM file holding the old and the new RSA key, in that order: key
/// rotation for an issuer that sets no `kid`.
fn old_and_new_without_ids() -> KeySet {
    KeySet::from_pem(&[RSA_PUBLIC, RSA2_PUBLIC].concat()).unwrap()
}

fn claims() -> Value {
    json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": "svc-disk-janitor",
        "exp": Utc::now().timestamp() + 600, "roles": ["disk:release"],
    })
}

fn header(kid: Option<&str>) -> Value {
    let mut header = json!({"alg": "RS256", "typ": "JWT"});
    if let Some(kid) = kid {
        header["kid"] = json!(kid);
    }
    header
}

/// Signs whatever `header` and `payload` are, as a careless or hostile
/// issuer could: the signature over them is valid.
fn sign_raw(private_pem: &[u8], header: &Value, payload: &[u8]) -> String {
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let key = EncodingKey::from_rsa_pem(private_pem).unwrap();
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::RS256).unwrap();
    format!("{message}.{signature}")
}

fn sign(private_pem: &[u8], kid: Option<&str>, claims: &Value) -> String {
    sign_raw(private_pem, &header(kid), claims.to_string().as_bytes())
}

fn refusal(token: &str, keys: &KeySet) -> AuthError {
    let error = verify(token, keys, &policy()).expect_err("the token is refused");
    assert_eq!(error.verdict(), Verdict::Unauthenticated, "{error:?}");
    error
}

fn authorization(value: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(http::header::AUTHORIZATION, value.parse().unwrap());
    headers
}

/// A valid token of exactly `len` bytes, most of it roles, as an IdP that
/// grants many roles issues them. The last role's length and a `cty` in the
/// header are tuned until the base64 lands on `len`.
fn valid_token_of_length(len: usize) -> String {
    let sample = sign(RSA_PRIVATE, Some("rsa-1"), &claims());
    let signature_len = sample.rsplit('.').next().unwrap().len();
    let b64_len = |bytes: usize| (bytes * 4).div_ceil(3);
    let length = |header: &Value, payload: &Value| {
        b64_len(header.to_string().len()) + b64_len(payload.to_string().len()) + signature_len + 2
    };
    let mut payload = claims();
    let mut roles = vec![json!("disk:release")];
    // Room is left for the tuning below, which adds up to ~110 bytes.
    while length(&header(Some("rsa-1")), &payload) < len - 120 {
        roles.push(json!(format!("team-{:04}:read", roles.len())));
        payload["roles"] = json!(roles);
    }
    for cty in [None, Some("a"), Some("ab")] {
        let mut header = header(Some("rsa-1"));
        if let Some(cty) = cty {
            header["cty"] = json!(cty);
        }
        for tail in 0..80 {
            let mut all = roles.clone();
            all.push(json!(format!("team-last:{}", "x".repeat(tail))));
            payload["roles"] = json!(all);
            if length(&header, &payload) == len {
                let token = sign_raw(RSA_PRIVATE, &header, payload.to_string().as_bytes());
                assert_eq!(token.len(), len);
                return token;
            }
        }
    }
    panic!("no token of {len} bytes could be built");
}

#[test]
fn a_valid_token_of_exactly_8_kib_is_read_and_verified() {
    let token = valid_token_of_length(8 * 1024);
    let headers = authorization(&format!("Bearer {token}"));
    let read = bearer_token(&headers).expect("a token at the limit is read");
    assert_eq!(read, token);
    let principal = verify(read, &published(), &policy()).expect("and verified");
    assert!(
        principal.roles.len() > 200,
        "{} roles",
        principal.roles.len()
    );
    assert!(principal.roles.iter().any(|r| r == "disk:release"));
}

#[test]
fn a_token_one_byte_over_8_kib_is_refused_as_malformed_with_its_size() {
    let token = "a".repeat(8 * 1024 + 1);
    let error = bearer_token(&authorization(&format!("Bearer {token}"))).unwrap_err();
    assert_eq!(error.reason(), "TOKEN_MALFORMED");
    assert_eq!(
        error.to_string(),
        "token is 8193 bytes; at most 8192 are accepted"
    );
}

#[test]
fn a_short_plain_unknown_key_id_is_named_in_the_message() {
    for kid in ["rsa-2026_07.v2:b", &"k".repeat(64)] {
        let error = refusal(&sign(RSA_PRIVATE, Some(kid), &claims()), &published());
        assert_eq!(error.reason(), "TOKEN_KEY_UNKNOWN");
        assert_eq!(
            error.to_string(),
            format!("token is signed with key id {kid}, which the issuer does not publish")
        );
    }
}

#[test]
fn an_unknown_key_id_that_is_long_or_not_plain_is_not_echoed() {
    let long = "k".repeat(65);
    for kid in [
        long.as_str(),
        "rsa-1' OR '1'='1",
        "rsa-1\nlevel=ERROR forged log line",
        "rsa 1",
        "clé",
        "rsa-1/../../etc/passwd",
    ] {
        let error = refusal(&sign(RSA_PRIVATE, Some(kid), &claims()), &published());
        assert_eq!(error.reason(), "TOKEN_KEY_UNKNOWN");
        assert_eq!(
            error.to_string(),
            format!("token is signed with key id {UNPRINTABLE}, which the issuer does not publish"),
            "{kid:?}"
        );
    }
}

#[test]
fn a_refused_algorithm_is_named_only_when_it_is_plain() {
    let token = |alg: &str| sign_raw(RSA_PRIVATE, &json!({"alg": alg}), b"{}");
    let hs256 = refusal(&token("HS256"), &published());
    assert_eq!(hs256.reason(), "TOKEN_ALGORITHM_NOT_ALLOWED");
    assert_eq!(
        hs256.to_string(),
        "token algorithm HS256 is not accepted (accepted: RS256, ES256, EdDSA)"
    );
    let hostile = refusal(&token("RS256\"}<script>"), &published());
    assert_eq!(hostile.reason(), "TOKEN_ALGORITHM_NOT_ALLOWED");
    assert_eq!(
        hostile.to_string(),
        format!("token algorithm {UNPRINTABLE} is not accepted (accepted: RS256, ES256, EdDSA)")
    );
}

#[test]
fn without_a_kid_a_token_signed_by_either_of_two_rsa_keys_is_accepted() {
    let keys = old_and_new_without_ids();
    for (which, private) in [("old", RSA_PRIVATE), ("new", RSA2_PRIVATE)] {
        let principal = verify(&sign(private, None, &claims()), &keys, &policy())
            .unwrap_or_else(|e| panic!("the {which} key's token: {e}"));
        assert_eq!(principal.subject, "svc-disk-janitor");
    }
    let stranger = refusal(&sign(UNRELATED_PRIVATE, None, &claims()), &keys);
    assert_eq!(stranger.reason(), "TOKEN_SIGNATURE_INVALID");
}

#[test]
fn a_well_signed_token_with_exp_as_a_string_says_the_claim_has_the_wrong_type() {
    let mut claims = claims();
    claims["exp"] = json!("tomorrow");
    let error = refusal(&sign(RSA_PRIVATE, Some("rsa-1"), &claims), &published());
    assert_eq!(error.reason(), "TOKEN_CLAIMS_INVALID");
    assert_eq!(error.to_string(), "token claim exp has the wrong type");
}

#[test]
fn a_well_signed_token_with_nbf_as_a_string_says_the_claim_has_the_wrong_type() {
    let mut claims = claims();
    claims["nbf"] = json!("now");
    let error = refusal(&sign(RSA_PRIVATE, Some("rsa-1"), &claims), &published());
    assert_eq!(error.reason(), "TOKEN_CLAIMS_INVALID");
    assert_eq!(error.to_string(), "token claim nbf has the wrong type");
}

#[test]
fn a_well_signed_token_without_exp_or_with_a_null_exp_says_it_is_missing() {
    let mut without = claims();
    without.as_object_mut().unwrap().remove("exp");
    let mut null = claims();
    null["exp"] = Value::Null;
    for claims in [without, null] {
        let error = refusal(&sign(RSA_PRIVATE, Some("rsa-1"), &claims), &published());
        assert_eq!(error.reason(), "TOKEN_CLAIMS_INVALID");
        assert_eq!(error.to_string(), "token has no exp claim");
    }
}

#[test]
fn a_valid_header_over_a_garbage_payload_is_malformed_whether_or_not_it_is_signed() {
    let header = header(Some("rsa-1"));
    let signed_garbage = sign_raw(RSA_PRIVATE, &header, b"this is not JSON");
    let unsigned = {
        let mut parts = signed_garbage.rsplitn(2, '.');
        parts.next();
        parts.next().unwrap().to_owned()
    };
    for token in [signed_garbage, unsigned] {
        let error = refusal(&token, &published());
        assert_eq!(error.reason(), "TOKEN_MALFORMED", "{token}");
        assert_eq!(
            error.to_string(),
            "token is not a well-formed JWT (it does not decode)"
        );
    }
}

#[test]
fn a_valid_header_over_a_garbage_payload_with_a_forged_signature_is_a_bad_signature() {
    // The signature is checked before the payload is read, so a forger
    // learns nothing about how the payload would have been parsed.
    let token = format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header(Some("rsa-1")).to_string()),
        URL_SAFE_NO_PAD.encode("this is not JSON"),
        URL_SAFE_NO_PAD.encode([7u8; 256])
    );
    assert_eq!(
        refusal(&token, &published()).reason(),
        "TOKEN_SIGNATURE_INVALID"
    );
}

#[test]
fn an_iat_up_to_the_leeway_ahead_is_accepted_and_one_beyond_it_is_refused() {
    // The policy allows 30 s of clock skew. "Now" is read again inside
    // `verify`, so the accepted case holds even if a second ticks between.
    let mut within = claims();
    within["iat"] = json!(Utc::now().timestamp() + 30);
    verify(
        &sign(RSA_PRIVATE, Some("rsa-1"), &within),
        &published(),
        &policy(),
    )
    .expect("an iat within the leeway is accepted");

    let ahead = Utc::now().timestamp() + 90;
    let mut beyond = claims();
    beyond["iat"] = json!(ahead);
    let error = refusal(&sign(RSA_PRIVATE, Some("rsa-1"), &beyond), &published());
    assert_eq!(error.reason(), "TOKEN_NOT_YET_VALID");
    let when = DateTime::from_timestamp(ahead, 0).unwrap();
    assert_eq!(
        error.to_string(),
        format!(
            "token was issued in the future ({}); check the issuer's clock",
            when.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )
    );
}
