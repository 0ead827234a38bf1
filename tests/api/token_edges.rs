//! Edges that only the whole gateway shows: a token at exactly the size
//! limit crosses HTTP/2 and the auth layer intact, a token naming a key the
//! gateway holds costs the issuer no key-set fetch, and a refusal message
//! names the disk the caller asked for.

use crate::helpers::{
    AppOptions, TestApp, assert_error, spawn_app, spawn_app_with, unauthenticated_request,
};
use crate::tokens::{self, EC, ED, RSA, bearer, good_claims};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Header;
use serde_json::{Value, json};
use std::collections::HashMap;
use tonic::{Code, Status};
use zenlayer_gateway::pb::ReleaseDiskResponse;

async fn release(app: &TestApp, disk_id: &str, token: &str) -> Result<ReleaseDiskResponse, Status> {
    let mut request = unauthenticated_request(disk_id);
    request
        .metadata_mut()
        .insert("authorization", bearer(token));
    app.release(request).await.map(tonic::Response::into_inner)
}

/// A token signed by the test IdP's RSA key of exactly `len` bytes, with
/// hundreds of roles: the last role's length and a `cty` header are tuned
/// until the base64 lands on `len`.
fn token_with_many_roles(len: usize) -> String {
    let signature_len = tokens::good_token().rsplit('.').next().unwrap().len();
    let b64_len = |bytes: usize| (bytes * 4).div_ceil(3);
    let length = |header: &Header, claims: &Value| {
        b64_len(serde_json::to_vec(header).unwrap().len())
            + b64_len(serde_json::to_vec(claims).unwrap().len())
            + signature_len
            + 2
    };
    let mut claims = good_claims();
    let mut roles = vec![json!(tokens::RELEASE_ROLE)];
    let plain = |cty: Option<&str>| {
        let mut header = Header::new(RSA.alg);
        header.kid = Some(RSA.kid.to_owned());
        header.cty = cty.map(str::to_owned);
        header
    };
    // Room is left for the tuning below, which adds up to ~110 bytes.
    while length(&plain(None), &claims) < len - 120 {
        roles.push(json!(format!("team-{:04}:read", roles.len())));
        claims["roles"] = json!(roles);
    }
    for cty in [None, Some("a"), Some("ab")] {
        for tail in 0..80 {
            let mut all = roles.clone();
            all.push(json!(format!("team-last:{}", "x".repeat(tail))));
            claims["roles"] = json!(all);
            if length(&plain(cty), &claims) == len {
                let token = RSA.sign_with_header(plain(cty), &claims);
                assert_eq!(token.len(), len);
                return token;
            }
        }
    }
    panic!("no token of {len} bytes could be built");
}

#[tokio::test]
async fn a_token_of_exactly_8_kib_with_many_roles_releases_and_one_byte_more_is_malformed() {
    let app = spawn_app().await;
    let at_limit = token_with_many_roles(8 * 1024);
    let payload = at_limit.split('.').nth(1).unwrap();
    let roles = serde_json::from_slice::<Value>(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
        ["roles"]
        .as_array()
        .unwrap()
        .len();
    assert!(roles > 200, "{roles} roles");
    let released = release(&app, "disk-recycled-data", &at_limit)
        .await
        .expect("a token at the limit is accepted");
    assert!(!released.request_id.is_empty());

    let over = token_with_many_roles(8 * 1024 + 1);
    let status = release(&app, "disk-recycled-data", &over)
        .await
        .unwrap_err();
    assert_error(&status, Code::Unauthenticated, "TOKEN_MALFORMED");
    assert_eq!(
        status.message(),
        "token is 8193 bytes; at most 8192 are accepted"
    );
    assert_eq!(app.simulator.release_disk_requests(), 1);
}

#[tokio::test]
async fn tokens_naming_a_key_id_the_gateway_holds_never_fetch_the_key_set_again() {
    // With no cooldown, every refresh the gateway asks for is a fetch.
    let app = spawn_app_with(AppOptions {
        settings: HashMap::from([("JWT_JWKS_REFETCH_COOLDOWN_MS".into(), "0".into())]),
        ..Default::default()
    })
    .await;
    // The first call waits for the start-up fetch; the scheduled refresh
    // comes again only after JWT_JWKS_REFRESH_INTERVAL_MS (minutes).
    let warm_up = release(&app, "disk-in-use", &tokens::good_token()).await;
    assert_error(
        &warm_up.unwrap_err(),
        Code::FailedPrecondition,
        "UNSUPPORTED_OPERATION_DISK_NOT_BEING_RECYCLE",
    );
    let fetched = app.key_server.fetches();

    for signer in [RSA, EC, ED, RSA] {
        let status = release(&app, "disk-in-use", &signer.sign(&good_claims()))
            .await
            .unwrap_err();
        // Past authentication: the disk's state refused it.
        assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    }
    assert_eq!(
        app.key_server.fetches(),
        fetched,
        "known key ids caused fetches"
    );

    let mut header = Header::new(RSA.alg);
    header.kid = Some("rsa-99".to_owned());
    let unknown = release(
        &app,
        "disk-in-use",
        &RSA.sign_with_header(header, &good_claims()),
    )
    .await
    .unwrap_err();
    assert_error(&unknown, Code::Unauthenticated, "TOKEN_KEY_UNKNOWN");
    assert_eq!(
        app.key_server.fetches(),
        fetched + 1,
        "an unknown key id is looked up"
    );
}

#[tokio::test]
async fn a_refusal_for_the_disks_state_names_the_disk_the_caller_asked_for() {
    let app = spawn_app().await;
    let status = release(&app, "disk-in-use", &tokens::good_token())
        .await
        .unwrap_err();
    assert_error(
        &status,
        Code::FailedPrecondition,
        "UNSUPPORTED_OPERATION_DISK_NOT_BEING_RECYCLE",
    );
    assert!(
        status.message().contains("disk disk-in-use "),
        "{}",
        status.message()
    );
}
