//! A caller whose deadline runs out inside the gateway hears the gateway:
//! DEADLINE_EXCEEDED with the call's audit id, which leads to how the call
//! really ended, not the transport's bare CANCELLED.

use crate::helpers::{assert_error, eventually, spawn_app, unauthenticated_request};
use crate::tokens::{RSA, RSA_NEXT, bearer, good_claims};
use jsonwebtoken::{Algorithm, Header};
use std::time::Duration;
use tonic::Code;
use uuid::Uuid;

#[tokio::test]
async fn a_deadline_that_runs_out_during_the_key_lookup_is_deadline_exceeded_with_the_audit_id() {
    let app = spawn_app().await;
    // Warm: keys are held, so the slow fetch below is a refresh.
    let mut warm = unauthenticated_request("disk-does-not-exist");
    warm.metadata_mut()
        .insert("authorization", bearer(&RSA.sign(&good_claims())));
    app.release(warm).await.unwrap_err();
    app.key_server.publish(RSA_NEXT);
    app.key_server.set_delay(Duration::from_millis(1500));
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("not-published-yet".into());
    let mut call = unauthenticated_request("disk-recycled-data");
    call.metadata_mut().insert(
        "authorization",
        bearer(&RSA.sign_with_header(header, &good_claims())),
    );
    // The deadline as the gateway sees it, without a timer of the client's
    // own racing the gateway's answer.
    call.metadata_mut()
        .insert("grpc-timeout", "600m".parse().unwrap());
    let status = app.release(call).await.unwrap_err();
    let metadata = assert_error(&status, Code::DeadlineExceeded, "OUTCOME_UNKNOWN");
    assert!(
        status.message().contains("GetRelease"),
        "{}",
        status.message()
    );
    let call_id = Uuid::parse_str(&metadata["audit_id"]).unwrap();
    let (decision, reason): (String, String) =
        eventually(Duration::from_secs(10), "the call's record", || async {
            sqlx::query_as(
                "SELECT decision, decision_reason FROM audit.release_disk_calls WHERE call_id = $1",
            )
            .bind(call_id)
            .fetch_optional(&app.db)
            .await
            .unwrap()
        })
        .await;
    assert_eq!(
        (decision.as_str(), reason.as_str()),
        ("denied", "TOKEN_KEY_UNKNOWN")
    );
    assert_eq!(app.simulator.release_disk_requests(), 0);
}
