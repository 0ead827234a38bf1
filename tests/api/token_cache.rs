//! Tokens already verified are remembered, but never past what a fresh
//! check would allow: not after they expire, and not once the key that
//! signed them is gone from the issuer's key set.

use crate::helpers::{
    TestApp, assert_error, eventually, spawn_app_with_settings, unauthenticated_request,
};
use crate::tokens::{KeyServer, RSA, RSA_NEXT, bearer, good_claims, now};
use serde_json::json;
use std::time::Duration;
use tonic::Code;

async fn release_with(app: &TestApp, token: &str) -> Result<(), tonic::Status> {
    let mut call = unauthenticated_request("disk-does-not-exist");
    call.metadata_mut().insert("authorization", bearer(token));
    match app.release(call).await {
        Ok(_) => Ok(()),
        // The caller got through; the disk simply is not there.
        Err(status) if status.code() == Code::NotFound => Ok(()),
        Err(status) => Err(status),
    }
}

#[tokio::test]
async fn a_remembered_token_is_refused_once_it_expires() {
    let app = spawn_app_with_settings(&[("JWT_LEEWAY_SECONDS", "0")]).await;
    let mut claims = good_claims();
    claims["exp"] = json!(now() + 2);
    let token = RSA.sign(&claims);
    release_with(&app, &token).await.expect("valid now");
    release_with(&app, &token)
        .await
        .expect("and again, remembered");
    eventually(
        Duration::from_secs(10),
        "the token's expiry to pass",
        || async { (now() > claims["exp"].as_i64().unwrap()).then_some(()) },
    )
    .await;
    let expired = release_with(&app, &token).await.unwrap_err();
    assert_error(&expired, Code::Unauthenticated, "TOKEN_EXPIRED");
}

#[tokio::test]
async fn a_remembered_token_is_refused_once_its_key_leaves_the_key_set() {
    let key_server = KeyServer::start(&[RSA]).await;
    let app = spawn_app_with_settings(&[
        ("JWT_JWKS_URL", &key_server.url),
        ("JWT_JWKS_REFRESH_INTERVAL_MS", "1000"),
    ])
    .await;
    let token = RSA.sign(&good_claims());
    release_with(&app, &token)
        .await
        .expect("signed by a published key");
    // The issuer rotates: the old key is withdrawn.
    key_server.replace(&[RSA_NEXT]);
    // Refreshed every second; from then on the remembered token is checked
    // against the new key set, and refused.
    let refused = eventually(
        Duration::from_secs(10),
        "the withdrawn key's token to be refused",
        || async { release_with(&app, &token).await.err() },
    )
    .await;
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    release_with(&app, &RSA_NEXT.sign(&good_claims()))
        .await
        .expect("the new key is accepted");
}
