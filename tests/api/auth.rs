//! Caller authorization: every way a token can be wrong is refused with the
//! right code, and none of them reaches Zenlayer.

use crate::helpers::{AppOptions, TestApp, spawn_app, spawn_app_with, spawn_app_with_settings};
use crate::helpers::{assert_error, unauthenticated_request};
use crate::tokens::{
    self, EC, ED, RSA, RSA_NEXT, RSA_PUBLIC_PEM, UNRELATED, bearer, good_claims, now,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use std::collections::HashMap;
use tonic::{Code, Status};

/// Calls ReleaseDisk with `token` as the bearer credential.
async fn call_with(app: &TestApp, token: &str) -> Result<String, Status> {
    let mut request = unauthenticated_request("disk-recycled-data");
    request
        .metadata_mut()
        .insert("authorization", bearer(token));
    app.release(request)
        .await
        .map(|r| r.into_inner().request_id)
}

fn claims_with(change: impl FnOnce(&mut Value)) -> Value {
    let mut claims = good_claims();
    change(&mut claims);
    claims
}

/// A token's segments re-assembled with a different header or payload.
fn reassemble(header: &Value, payload: &Value, signature: &str) -> String {
    let encode = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    format!("{}.{}.{signature}", encode(header), encode(payload))
}

/// Each refused token: its name, the token, the code and reason expected.
fn refused_tokens() -> Vec<(&'static str, String, Code, &'static str)> {
    let good = tokens::good_token();
    let signature = good.rsplit('.').next().unwrap().to_owned();
    let mut hs256 = Header::new(Algorithm::HS256);
    hs256.kid = Some("rsa-1".into());
    let mut tampered = good_claims();
    tampered["sub"] = json!("someone-else");
    let with_kid = |kid: &str| {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(kid.to_owned());
        RSA.sign_with_header(header, &good_claims())
    };
    vec![
        (
            "alg none",
            reassemble(&json!({"alg": "none", "typ": "JWT"}), &good_claims(), ""),
            Code::Unauthenticated,
            "TOKEN_ALGORITHM_NOT_ALLOWED",
        ),
        (
            "HS256 keyed with the RSA public key",
            jsonwebtoken::encode(
                &hs256,
                &good_claims(),
                &EncodingKey::from_secret(RSA_PUBLIC_PEM),
            )
            .unwrap(),
            Code::Unauthenticated,
            "TOKEN_ALGORITHM_NOT_ALLOWED",
        ),
        (
            "unknown kid",
            with_kid("rsa-99"),
            Code::Unauthenticated,
            "TOKEN_KEY_UNKNOWN",
        ),
        (
            "kid with a path",
            with_kid("../../../../etc/passwd"),
            Code::Unauthenticated,
            "TOKEN_KEY_UNKNOWN",
        ),
        (
            "kid with SQL",
            with_kid("rsa-1' OR '1'='1"),
            Code::Unauthenticated,
            "TOKEN_KEY_UNKNOWN",
        ),
        (
            "expired",
            RSA.sign(&claims_with(|c| c["exp"] = json!(now() - 3600))),
            Code::Unauthenticated,
            "TOKEN_EXPIRED",
        ),
        (
            "nbf in the future",
            RSA.sign(&claims_with(|c| c["nbf"] = json!(now() + 3600))),
            Code::Unauthenticated,
            "TOKEN_NOT_YET_VALID",
        ),
        (
            "iat in the future",
            RSA.sign(&claims_with(|c| c["iat"] = json!(now() + 3600))),
            Code::Unauthenticated,
            "TOKEN_NOT_YET_VALID",
        ),
        (
            "missing exp",
            RSA.sign(&claims_with(|c| {
                c.as_object_mut().unwrap().remove("exp");
            })),
            Code::Unauthenticated,
            "TOKEN_CLAIMS_INVALID",
        ),
        (
            "wrong iss",
            RSA.sign(&claims_with(|c| c["iss"] = json!("https://evil.example"))),
            Code::Unauthenticated,
            "TOKEN_ISSUER_INVALID",
        ),
        (
            "wrong aud",
            RSA.sign(&claims_with(|c| c["aud"] = json!("some-other-service"))),
            Code::Unauthenticated,
            "TOKEN_AUDIENCE_INVALID",
        ),
        (
            "missing aud",
            RSA.sign(&claims_with(|c| {
                c.as_object_mut().unwrap().remove("aud");
            })),
            Code::Unauthenticated,
            "TOKEN_CLAIMS_INVALID",
        ),
        (
            "tampered payload",
            reassemble(
                &json!({"alg": "RS256", "typ": "JWT", "kid": "rsa-1"}),
                &tampered,
                &signature,
            ),
            Code::Unauthenticated,
            "TOKEN_SIGNATURE_INVALID",
        ),
        (
            "oversized",
            RSA.sign(&claims_with(|c| c["padding"] = json!("x".repeat(9000)))),
            Code::Unauthenticated,
            "TOKEN_MALFORMED",
        ),
        (
            "signed by an unrelated key",
            UNRELATED.sign(&good_claims()),
            Code::Unauthenticated,
            "TOKEN_SIGNATURE_INVALID",
        ),
        (
            "garbage",
            "not-a-jwt".to_owned(),
            Code::Unauthenticated,
            "TOKEN_MALFORMED",
        ),
        (
            "no role",
            RSA.sign(&claims_with(|c| c["roles"] = json!(["viewer"]))),
            Code::PermissionDenied,
            "ROLE_MISSING",
        ),
        (
            "role under another claim",
            RSA.sign(&claims_with(|c| {
                c.as_object_mut().unwrap().remove("roles");
                c["scope"] = json!("openid disk:release");
            })),
            Code::PermissionDenied,
            "ROLE_MISSING",
        ),
    ]
}

#[tokio::test]
async fn every_bad_token_is_refused_with_its_code_and_never_reaches_zenlayer() {
    let app = spawn_app().await;
    for (name, token, code, reason) in refused_tokens() {
        let status = call_with(&app, &token).await.expect_err(name);
        assert_eq!(status.code(), code, "{name}: {status:?}");
        assert_error(&status, code, reason);
        assert!(
            !status.message().contains(&token),
            "{name}: the token is not echoed"
        );
    }
    assert_eq!(app.simulator.requests_received(), 0);
}

#[tokio::test]
async fn refusal_messages_say_what_to_fix() {
    let app = spawn_app().await;
    let exp = now() - 3600;
    let expired = call_with(&app, &RSA.sign(&claims_with(|c| c["exp"] = json!(exp))))
        .await
        .unwrap_err();
    let when = chrono::DateTime::from_timestamp(exp, 0)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    assert_eq!(expired.message(), format!("token expired at {when}"));
    let audience = call_with(&app, &RSA.sign(&claims_with(|c| c["aud"] = json!("x"))))
        .await
        .unwrap_err();
    assert_eq!(
        audience.message(),
        "token audience does not include zenlayer-gateway"
    );
    let role = call_with(&app, &RSA.sign(&claims_with(|c| c["roles"] = json!([]))))
        .await
        .unwrap_err();
    assert!(
        role.message().contains("lacks the role disk:release"),
        "{}",
        role.message()
    );
    let sql_kid = refused_tokens()
        .into_iter()
        .find(|t| t.0 == "kid with SQL")
        .unwrap()
        .1;
    let kid = call_with(&app, &sql_kid).await.unwrap_err();
    assert!(
        !kid.message().contains("OR '1'"),
        "caller input is not echoed raw: {}",
        kid.message()
    );
}

#[tokio::test]
async fn missing_duplicate_and_non_bearer_credentials_are_unauthenticated() {
    let app = spawn_app().await;
    let mut disks = app.disks().await;
    let missing = disks
        .release_disk(unauthenticated_request("disk-recycled-data"))
        .await
        .unwrap_err();
    assert_error(&missing, Code::Unauthenticated, "TOKEN_MISSING");

    let mut twice = unauthenticated_request("disk-recycled-data");
    twice
        .metadata_mut()
        .append("authorization", bearer(&tokens::good_token()));
    twice
        .metadata_mut()
        .append("authorization", bearer(&tokens::good_token()));
    let status = disks.release_disk(twice).await.unwrap_err();
    assert_error(&status, Code::Unauthenticated, "TOKEN_MALFORMED");

    let mut basic = unauthenticated_request("disk-recycled-data");
    basic
        .metadata_mut()
        .insert("authorization", "Basic dXNlcjpwYXNz".parse().unwrap());
    assert_error(
        &disks.release_disk(basic).await.unwrap_err(),
        Code::Unauthenticated,
        "TOKEN_MALFORMED",
    );
    assert_eq!(app.simulator.requests_received(), 0);
}

#[tokio::test]
async fn rsa_ec_and_ed25519_tokens_are_accepted_and_the_scheme_is_case_insensitive() {
    let app = spawn_app().await;
    for signer in [RSA, EC, ED] {
        app.simulator
            .put_disk(zenlayer_gateway::simulator::Disk::new(
                "disk-recycled-data",
                zenlayer_gateway::simulator::DiskType::Data,
                zenlayer_gateway::simulator::DiskStatus::Recycled,
            ));
        let mut request = unauthenticated_request("disk-recycled-data");
        request.metadata_mut().insert(
            "authorization",
            format!("bEaReR {}", signer.sign(&good_claims()))
                .parse()
                .unwrap(),
        );
        app.release(request)
            .await
            .unwrap_or_else(|e| panic!("{:?}: {e:?}", signer.alg));
    }
    assert_eq!(app.simulator.release_disk_requests(), 3);
}

#[tokio::test]
async fn a_rotated_key_is_accepted_without_a_restart() {
    let app = spawn_app_with_settings(&[("JWT_JWKS_REFETCH_COOLDOWN_MS", "0")]).await;
    let rotated = RSA_NEXT.sign(&good_claims());
    let before = call_with(&app, &rotated).await.unwrap_err();
    assert_error(&before, Code::Unauthenticated, "TOKEN_KEY_UNKNOWN");
    app.key_server.publish(RSA_NEXT);
    call_with(&app, &rotated)
        .await
        .expect("the new key is fetched on first sight");
}

#[tokio::test]
async fn a_flood_of_unknown_key_ids_fetches_the_key_set_at_most_once_per_cooldown() {
    let app = spawn_app().await;
    call_with(&app, &tokens::good_token()).await.unwrap();
    let fetched = app.key_server.fetches();
    for i in 0..20 {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(format!("random-{i}"));
        let status = call_with(&app, &RSA.sign_with_header(header, &good_claims()))
            .await
            .unwrap_err();
        assert_error(&status, Code::Unauthenticated, "TOKEN_KEY_UNKNOWN");
    }
    assert!(
        app.key_server.fetches() <= fetched + 1,
        "{} fetches",
        app.key_server.fetches() - fetched
    );
}

#[tokio::test]
async fn cached_keys_keep_working_while_the_key_server_fails() {
    let app = spawn_app_with_settings(&[("JWT_JWKS_REFETCH_COOLDOWN_MS", "0")]).await;
    call_with(&app, &tokens::good_token()).await.unwrap();
    app.key_server.set_failing(true);
    // An unknown kid forces a refresh attempt, which fails.
    let fetched = app.key_server.fetches();
    call_with(&app, &RSA_NEXT.sign(&good_claims()))
        .await
        .unwrap_err();
    assert!(
        app.key_server.fetches() > fetched,
        "a refresh was attempted"
    );
    app.simulator
        .put_disk(zenlayer_gateway::simulator::Disk::new(
            "disk-recycled-data",
            zenlayer_gateway::simulator::DiskType::Data,
            zenlayer_gateway::simulator::DiskStatus::Recycled,
        ));
    call_with(&app, &tokens::good_token())
        .await
        .expect("cached keys still verify");
}

#[tokio::test]
async fn an_unreachable_key_source_is_unavailable_not_unauthenticated() {
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks.json", closed.local_addr().unwrap());
    drop(closed);
    let app = spawn_app_with(AppOptions {
        settings: HashMap::from([("JWT_JWKS_URL".into(), url)]),
        ..Default::default()
    })
    .await;
    let status = call_with(&app, &tokens::good_token()).await.unwrap_err();
    assert_error(&status, Code::Unavailable, "KEY_SOURCE_UNAVAILABLE");
    assert!(
        status.message().contains("cannot be loaded"),
        "{}",
        status.message()
    );
    assert!(
        !status.message().contains("127.0.0.1"),
        "where the keys live is for operators only"
    );
    assert_eq!(app.simulator.requests_received(), 0);
}

#[tokio::test]
async fn keycloak_style_nested_roles_are_read_from_the_configured_path() {
    let app = spawn_app_with_settings(&[("JWT_ROLES_CLAIM", "realm_access.roles")]).await;
    let flat = call_with(&app, &tokens::good_token()).await.unwrap_err();
    assert_error(&flat, Code::PermissionDenied, "ROLE_MISSING");
    let nested = RSA.sign(&claims_with(|c| {
        c["realm_access"] = json!({"roles": ["disk:release"]})
    }));
    call_with(&app, &nested)
        .await
        .expect("the nested role is found");
}

#[tokio::test]
async fn a_public_key_file_can_replace_the_jwks_endpoint() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/jwt/rsa-public.pem"
    );
    let app = spawn_app_with(AppOptions {
        settings: HashMap::from([
            ("JWT_JWKS_URL".into(), String::new()),
            ("JWT_PUBLIC_KEYS_FILE".into(), path.into()),
        ]),
        ..Default::default()
    })
    .await;
    call_with(&app, &tokens::good_token())
        .await
        .expect("verified by the PEM key");
    let status = call_with(&app, &UNRELATED.sign(&good_claims()))
        .await
        .unwrap_err();
    assert_error(&status, Code::Unauthenticated, "TOKEN_SIGNATURE_INVALID");
}

#[tokio::test]
async fn an_explicit_hs256_secret_accepts_hs256_and_nothing_else() {
    let secret = "a-long-shared-secret-for-places-without-an-idp";
    let app = spawn_app_with(AppOptions {
        settings: HashMap::from([
            ("JWT_JWKS_URL".into(), String::new()),
            ("JWT_HS256_SECRET".into(), secret.into()),
        ]),
        ..Default::default()
    })
    .await;
    let hs = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &good_claims(),
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap();
    call_with(&app, &hs)
        .await
        .expect("HS256 with the shared secret");
    let status = call_with(&app, &tokens::good_token()).await.unwrap_err();
    assert_error(
        &status,
        Code::Unauthenticated,
        "TOKEN_ALGORITHM_NOT_ALLOWED",
    );
}

#[tokio::test]
async fn tokens_naming_a_key_the_gateway_holds_never_fetch_the_key_set() {
    // No cooldown: any call that asked for a refresh would get one.
    let app = spawn_app_with_settings(&[("JWT_JWKS_REFETCH_COOLDOWN_MS", "0")]).await;
    call_with(&app, &tokens::good_token()).await.unwrap();
    let fetched = app.key_server.fetches();
    for _ in 0..5 {
        // A new token each time (its own jti), so each is verified afresh,
        // and let through (the disk is gone after the first call).
        if let Err(status) = call_with(&app, &tokens::good_token()).await {
            assert_eq!(status.code(), Code::NotFound, "{status:?}");
        }
    }
    assert_eq!(app.key_server.fetches(), fetched);
}
