//! Credential checks as a client sees them: each way a signature can be
//! wrong gets Zenlayer's code, and a refused release leaves the disk alone.

use super::{
    PASSWORD, Signer, TOKEN, call, now, replacing, send, send_built, signed, start, unsigned,
};
use crate::simulator::SimulatorHandle;

const RELEASE: &str = r#"{"diskId":"disk-recycled-data"}"#;

async fn release_signed_by(sim: &SimulatorHandle, signer: Signer<'_>) -> (u16, String) {
    let answer = send(signer.sign(sim, unsigned(sim, "ReleaseDisk", RELEASE), RELEASE)).await;
    (answer.status, answer.code())
}

#[tokio::test]
async fn a_signature_made_with_the_wrong_password_is_a_signature_failure() {
    let sim = start().await;
    let signer = Signer {
        password: "not-the-password",
        ..Signer::valid()
    };
    assert_eq!(
        release_signed_by(&sim, signer).await,
        (401, "AUTHFAILURE_SIGNATURE_FAILURE".into())
    );
    assert!(sim.disk("disk-recycled-data").is_some());
}

#[tokio::test]
async fn an_unknown_access_key_id_is_a_signature_failure() {
    let sim = start().await;
    let signer = Signer {
        key_id: "AKIDunknown",
        ..Signer::valid()
    };
    assert_eq!(
        release_signed_by(&sim, signer).await,
        (401, "AUTHFAILURE_SIGNATURE_FAILURE".into())
    );
}

#[tokio::test]
async fn a_body_changed_after_signing_is_a_signature_failure() {
    let sim = start().await;
    // One added space is enough: the signature covers the exact bytes.
    let sent = r#"{"diskId": "disk-recycled-data"}"#;
    let request = Signer::valid().sign(&sim, unsigned(&sim, "ReleaseDisk", sent), RELEASE);
    let answer = send(request).await;
    assert_eq!(
        (answer.status, answer.code().as_str()),
        (401, "AUTHFAILURE_SIGNATURE_FAILURE")
    );
    assert!(sim.disk("disk-recycled-data").is_some());
}

#[tokio::test]
async fn a_signature_over_another_host_is_a_signature_failure() {
    let sim = start().await;
    let signer = Signer {
        host: Some("console.zenlayer.com"),
        ..Signer::valid()
    };
    assert_eq!(
        release_signed_by(&sim, signer).await.1,
        "AUTHFAILURE_SIGNATURE_FAILURE"
    );
}

#[tokio::test]
async fn a_timestamp_over_five_minutes_off_is_expired_either_way() {
    let sim = start().await;
    // Ten seconds past the limit, so a clock tick between signing and
    // checking cannot bring it back inside.
    for timestamp in [now() - 310, now() + 310] {
        let signer = Signer {
            timestamp,
            ..Signer::valid()
        };
        assert_eq!(
            release_signed_by(&sim, signer).await,
            (401, "AUTHFAILURE_SIGNATURE_EXPIRED".into())
        );
    }
    assert!(sim.disk("disk-recycled-data").is_some());
}

#[tokio::test]
async fn a_timestamp_four_minutes_old_is_still_accepted() {
    let sim = start().await;
    let signer = Signer {
        timestamp: now() - 240,
        ..Signer::valid()
    };
    let request = signer.sign(&sim, unsigned(&sim, "ReleaseDisk", RELEASE), RELEASE);
    assert_eq!(send(request).await.status, 200);
}

#[tokio::test]
async fn a_known_bearer_token_is_accepted_and_an_unknown_one_is_a_signature_failure() {
    let sim = start().await;
    let unknown = unsigned(&sim, "ReleaseDisk", RELEASE).bearer_auth("not-a-token");
    let answer = send(unknown).await;
    assert_eq!(
        (answer.status, answer.code().as_str()),
        (401, "AUTHFAILURE_SIGNATURE_FAILURE")
    );

    let known = unsigned(&sim, "ReleaseDisk", RELEASE).bearer_auth(TOKEN);
    assert_eq!(send(known).await.status, 200);
    assert_eq!(sim.disk("disk-recycled-data"), None);
}

#[tokio::test]
async fn a_missing_or_malformed_authorization_is_invalid_authorization() {
    let sim = start().await;
    let missing = send(unsigned(&sim, "ReleaseDisk", RELEASE)).await;
    assert_eq!(
        (missing.status, missing.code().as_str()),
        (401, "AUTHFAILURE_INVALID_AUTHORIZATION")
    );
    for header in [
        format!("Basic {PASSWORD}"),
        "ZC2-HMAC-SHA256 Signature=abc".to_owned(),
        "ZC2-HMAC-SHA256 Credential=k, SignedHeaders=host, Signature=abc".to_owned(),
        "Bearer ".to_owned(),
    ] {
        let request = replacing(
            signed(&sim, "ReleaseDisk", RELEASE),
            "authorization",
            Some(&header),
        );
        assert_eq!(
            send_built(request).await.code(),
            "AUTHFAILURE_INVALID_AUTHORIZATION",
            "{header}"
        );
    }
}

#[tokio::test]
async fn a_signature_method_other_than_zc2_is_invalid_authorization() {
    let sim = start().await;
    let request = replacing(
        signed(&sim, "ReleaseDisk", RELEASE),
        "x-zc-signature-method",
        Some("HMAC-SHA1"),
    );
    assert_eq!(
        send_built(request).await.code(),
        "AUTHFAILURE_INVALID_AUTHORIZATION"
    );
}

#[tokio::test]
async fn a_missing_or_unknown_action_is_an_unauthorized_operation() {
    let sim = start().await;
    let unknown = call(&sim, "DeleteEverything", "{}").await;
    assert_eq!(
        (unknown.status, unknown.code().as_str()),
        (403, "AUTHFAILURE_UNAUTHORIZED_OPERATION")
    );

    let missing = send_built(replacing(
        signed(&sim, "ReleaseDisk", RELEASE),
        "x-zc-action",
        None,
    ))
    .await;
    assert_eq!(
        (missing.status, missing.code().as_str()),
        (403, "AUTHFAILURE_UNAUTHORIZED_OPERATION")
    );
    assert!(sim.disk("disk-recycled-data").is_some());
}

#[tokio::test]
async fn credentials_are_checked_before_the_action() {
    let sim = start().await;
    let answer = send(unsigned(&sim, "DeleteEverything", "{}")).await;
    assert_eq!(answer.code(), "AUTHFAILURE_INVALID_AUTHORIZATION");
}

#[tokio::test]
async fn a_missing_or_unknown_api_version_is_refused_and_releases_nothing() {
    let sim = start().await;
    // The version is not signed, so replacing it leaves a valid signature.
    let missing = send_built(replacing(
        signed(&sim, "ReleaseDisk", RELEASE),
        "x-zc-version",
        None,
    ))
    .await;
    assert_eq!(
        (missing.status, missing.code().as_str()),
        (400, "MISSING_PARAMETER")
    );
    let unknown = send_built(replacing(
        signed(&sim, "ReleaseDisk", RELEASE),
        "x-zc-version",
        Some("2023-03-31"),
    ))
    .await;
    assert_eq!(
        (unknown.status, unknown.code().as_str()),
        (400, "INVALID_PARAMETER_VALUE")
    );
    assert!(
        unknown.json()["message"]
            .as_str()
            .unwrap()
            .contains("2023-03-13"),
        "the message names the versions there are: {}",
        unknown.text
    );
    assert!(sim.disk("disk-recycled-data").is_some());

    let newer = send_built(replacing(
        signed(&sim, "ReleaseDisk", RELEASE),
        "x-zc-version",
        Some("2026-04-01"),
    ))
    .await;
    assert_eq!(newer.status, 200, "{}", newer.text);
    assert!(sim.disk("disk-recycled-data").is_none());
}

#[tokio::test]
async fn the_signature_is_checked_as_zenlayer_spells_it_over_the_timestamp_as_sent() {
    let sim = start().await;
    // Zenlayer documents lower-case hex; the same signature in upper case
    // is not its spelling.
    let request = signed(&sim, "ReleaseDisk", RELEASE).build().unwrap();
    let authorization = request.headers()["authorization"].to_str().unwrap();
    let (head, signature) = authorization.split_once("Signature=").unwrap();
    let upper = format!("{head}Signature={}", signature.to_uppercase());
    let shouted = send_built(replacing(
        signed(&sim, "ReleaseDisk", RELEASE),
        "authorization",
        Some(&upper),
    ))
    .await;
    assert_eq!(
        (shouted.status, shouted.code().as_str()),
        (401, "AUTHFAILURE_SIGNATURE_FAILURE")
    );
    // The same instant written differently is not the text that was signed.
    let signer = Signer::valid();
    let respelled = send_built(replacing(
        signer.sign(&sim, unsigned(&sim, "ReleaseDisk", RELEASE), RELEASE),
        "x-zc-timestamp",
        Some(&format!("+{}", signer.timestamp)),
    ))
    .await;
    assert_eq!(
        (respelled.status, respelled.code().as_str()),
        (401, "AUTHFAILURE_SIGNATURE_FAILURE")
    );
    assert!(sim.disk("disk-recycled-data").is_some(), "nothing released");
    assert_eq!(call(&sim, "ReleaseDisk", RELEASE).await.status, 200);
}
