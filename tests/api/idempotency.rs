//! Idempotent releases: a retried call never reaches Zenlayer twice, within
//! one gateway or across replicas.

use crate::helpers::{
    TestApp, as_gateway, eventually, spawn_app, spawn_app_with_settings, test_settings,
    until_the_release_is_sent,
};
use crate::helpers::{assert_error, request, unauthenticated_request};
use crate::tokens::{self, RSA, bearer, good_claims};
use serde_json::json;
use std::collections::HashMap;
use std::time::Duration;
use tonic::{Code, Request, Status};
use tonic_types::StatusExt as _;
use uuid::Uuid;
use zenlayer_gateway::pb::{ReleaseDiskRequest, ReleaseDiskResponse};
use zenlayer_gateway::simulator::{Disk, DiskStatus, DiskType, Fault};

fn keyed(disk_id: &str, key: &str) -> Request<ReleaseDiskRequest> {
    let mut call = request(disk_id);
    call.get_mut().idempotency_key = key.to_owned();
    call
}

async fn release(
    app: &TestApp,
    call: Request<ReleaseDiskRequest>,
) -> Result<ReleaseDiskResponse, Status> {
    app.release(call).await.map(|r| r.into_inner())
}

async fn replay_of(app: &TestApp, call_id: &str) -> Option<Uuid> {
    sqlx::query_scalar("SELECT replay_of FROM audit.release_disk_calls WHERE call_id = $1")
        .bind(Uuid::parse_str(call_id).unwrap())
        .fetch_one(&app.db)
        .await
        .unwrap()
}

/// Waits until no call holds `key` any more.
async fn key_is_freed(app: &TestApp, key: &str) {
    eventually(Duration::from_secs(10), "the key to be freed", || async {
        let held: i64 =
            sqlx::query_scalar("SELECT count(*) FROM idempotency.keys WHERE idempotency_key = $1")
                .bind(key)
                .fetch_one(&app.db)
                .await
                .unwrap();
        (held == 0).then_some(())
    })
    .await;
}

fn error_metadata(status: &Status) -> HashMap<String, String> {
    status
        .get_details_error_info()
        .expect("an ErrorInfo")
        .metadata
}

#[tokio::test]
async fn a_retry_after_success_replays_the_answer_without_calling_zenlayer() {
    let app = spawn_app().await;
    let first = release(&app, keyed("disk-recycled-data", "retry-1"))
        .await
        .unwrap();
    let second = release(&app, keyed("disk-recycled-data", "retry-1"))
        .await
        .unwrap();
    assert!(!first.replayed && second.replayed);
    assert_eq!(second.request_id, first.request_id);
    assert_eq!(app.simulator.release_disk_requests(), 1);
    assert_ne!(
        second.audit_id, first.audit_id,
        "the replay is a call of its own in the audit trail"
    );
    assert_eq!(
        replay_of(&app, &second.audit_id).await,
        Some(Uuid::parse_str(&first.audit_id).unwrap())
    );
    let outcome: String =
        sqlx::query_scalar("SELECT outcome FROM audit.release_disk_calls WHERE call_id = $1")
            .bind(Uuid::parse_str(&second.audit_id).unwrap())
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(outcome, "succeeded");
}

#[tokio::test]
async fn a_retry_after_a_zenlayer_error_replays_the_same_status() {
    let app = spawn_app().await;
    // The disk looks releasable to the pre-flight; Zenlayer's release says no.
    app.simulator.fail_release(
        Fault::Status {
            http_status: 400,
            code: "UNSUPPORTED_OPERATION_RECYCLE_STATUS".into(),
        },
        1,
    );
    let first = release(&app, keyed("disk-recycled-data", "retry-2"))
        .await
        .unwrap_err();
    let second = release(&app, keyed("disk-recycled-data", "retry-2"))
        .await
        .unwrap_err();
    assert_error(
        &second,
        Code::FailedPrecondition,
        "UNSUPPORTED_OPERATION_RECYCLE_STATUS",
    );
    assert_eq!(second.message(), first.message());
    let (first_meta, second_meta) = (error_metadata(&first), error_metadata(&second));
    assert_eq!(
        second_meta["upstream_request_id"],
        first_meta["upstream_request_id"]
    );
    assert_eq!(second_meta["http_status"], "400");
    assert_eq!(second_meta["replayed"], "true");
    assert_eq!(second_meta["original_audit_id"], first_meta["audit_id"]);
    assert_eq!(app.simulator.release_disk_requests(), 1);
}

#[tokio::test]
async fn a_key_reused_for_another_disk_fails_its_precondition() {
    let app = spawn_app().await;
    release(&app, keyed("disk-recycled-data", "retry-3"))
        .await
        .unwrap();
    let status = release(&app, keyed("disk-available", "retry-3"))
        .await
        .unwrap_err();
    assert_error(&status, Code::FailedPrecondition, "IDEMPOTENCY_KEY_REUSED");
    assert!(
        status.message().contains("disk-recycled-data"),
        "{}",
        status.message()
    );
    assert_eq!(app.simulator.release_disk_requests(), 1);
}

#[tokio::test]
async fn the_same_key_from_two_principals_is_two_independent_calls() {
    let app = spawn_app().await;
    release(&app, keyed("disk-recycled-data", "shared-key"))
        .await
        .unwrap();
    let mut other = unauthenticated_request("disk-recycled-data");
    other.get_mut().idempotency_key = "shared-key".to_owned();
    let mut claims = good_claims();
    claims["sub"] = json!("another-service");
    other
        .metadata_mut()
        .insert("authorization", bearer(&RSA.sign(&claims)));
    let status = release(&app, other).await.unwrap_err();
    // Looked at afresh, not replayed: the disk is gone by now, and
    // Zenlayer's DescribeDisks says so.
    assert_error(&status, Code::NotFound, "INVALID_DISK_NOT_FOUND");
    assert!(!error_metadata(&status).contains_key("replayed"));
    assert_eq!(app.simulator.action_requests("DescribeDisks"), 2);
    assert_eq!(app.simulator.release_disk_requests(), 1);
}

#[tokio::test]
async fn invalid_keys_are_refused_before_anything_is_sent() {
    let app = spawn_app().await;
    for key in ["has space", "slash/key", &"k".repeat(65), "ключ"] {
        let status = release(&app, keyed("disk-recycled-data", key))
            .await
            .unwrap_err();
        assert_error(&status, Code::InvalidArgument, "INVALID_ARGUMENT");
        let violations = status.get_details_bad_request().unwrap().field_violations;
        assert_eq!(violations[0].field, "idempotency_key");
    }
    assert_eq!(app.simulator.requests_received(), 0);
}

#[tokio::test]
async fn a_retry_while_the_first_call_is_in_flight_is_aborted_not_resent() {
    let app = spawn_app().await;
    app.simulator
        .fail_release(Fault::Latency(Duration::from_millis(800)), 1);
    let mut disks = app.disks().await;
    let first = tokio::spawn(async move {
        disks
            .release_disk(keyed("disk-recycled-data", "retry-4"))
            .await
    });
    until_the_release_is_sent(&app).await;
    let status = release(&app, keyed("disk-recycled-data", "retry-4"))
        .await
        .unwrap_err();
    assert_error(&status, Code::Aborted, "IDEMPOTENCY_KEY_IN_FLIGHT");
    let first = first.await.unwrap().unwrap().into_inner();
    let later = release(&app, keyed("disk-recycled-data", "retry-4"))
        .await
        .unwrap();
    assert_eq!((later.request_id, later.replayed), (first.request_id, true));
    assert_eq!(app.simulator.release_disk_requests(), 1);
}

#[tokio::test]
async fn a_retry_after_an_unknown_outcome_repeats_it_instead_of_resending() {
    let app = spawn_app_with_settings(&[("ZENLAYER_TIMEOUT_MS", "300")]).await;
    app.simulator.fail_release(Fault::Hang, 1);
    let first = release(&app, keyed("disk-recycled-data", "retry-5"))
        .await
        .unwrap_err();
    assert_error(&first, Code::Unavailable, "OUTCOME_UNKNOWN");
    let second = release(&app, keyed("disk-recycled-data", "retry-5"))
        .await
        .unwrap_err();
    assert_error(&second, Code::Unavailable, "OUTCOME_UNKNOWN");
    assert_eq!(error_metadata(&second)["replayed"], "true");
    assert_eq!(app.simulator.release_disk_requests(), 1);
}

#[tokio::test]
async fn a_key_is_freed_when_zenlayer_certainly_did_not_act() {
    let app = spawn_app().await;
    app.simulator.fail_release(Fault::RateLimited, 4);
    let limited = release(&app, keyed("disk-recycled-data", "retry-6"))
        .await
        .unwrap_err();
    assert_error(&limited, Code::ResourceExhausted, "REQUEST_LIMIT_EXCEEDED");
    // The key is freed with the outcome write, just after the answer.
    key_is_freed(&app, "retry-6").await;
    let retried = release(&app, keyed("disk-recycled-data", "retry-6"))
        .await
        .unwrap();
    assert!(!retried.replayed, "the retry really went to Zenlayer");
    assert_eq!(app.simulator.release_disk_requests(), 5);
}

#[tokio::test]
async fn keys_are_purged_after_the_retention_period_and_their_calls_stay_audited() {
    let app = spawn_app_with_settings(&[("GATEWAY_RECOVERY_INTERVAL_MS", "20")]).await;
    let old = release(&app, keyed("disk-recycled-data", "old-key"))
        .await
        .unwrap();
    app.simulator.put_disk(Disk::new(
        "disk-recent",
        DiskType::Data,
        DiskStatus::Recycled,
    ));
    release(&app, keyed("disk-recent", "recent-key"))
        .await
        .unwrap();
    // Age one key past the 24-hour retention (keys are not audit rows).
    sqlx::query("UPDATE idempotency.keys SET claimed_at = now() - interval '25 hours' WHERE idempotency_key = 'old-key'")
        .execute(&app.db)
        .await
        .unwrap();
    let left = eventually(
        Duration::from_secs(30),
        "the old key to be purged",
        || async {
            let left: Vec<String> =
                sqlx::query_scalar("SELECT idempotency_key FROM idempotency.keys")
                    .fetch_all(&app.db)
                    .await
                    .unwrap();
            Some(left).filter(|left| !left.contains(&"old-key".to_owned()))
        },
    )
    .await;
    assert_eq!(
        left,
        ["recent-key"],
        "keys within the retention period stay"
    );
    let audited: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit.release_disk_calls WHERE call_id = $1")
            .bind(Uuid::parse_str(&old.audit_id).unwrap())
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(audited, 1);
}

#[tokio::test]
async fn fifty_identical_calls_across_three_gateway_processes_release_once() {
    let app = spawn_app().await;
    app.simulator
        .fail_release(Fault::Latency(Duration::from_millis(300)), 1);
    let mut env = test_settings(
        &as_gateway(&app.database_url),
        &app.simulator,
        &app.key_server,
    );
    env.insert("GATEWAY_LOG_FORMAT".into(), "json".into());
    let mut gateways = Vec::new();
    for _ in 0..3 {
        gateways.push(crate::processes::GatewayProcess::spawn(&env).await);
    }
    let token = tokens::good_token();
    let mut calls = Vec::new();
    for i in 0..50 {
        let endpoint = format!("http://{}", gateways[i % 3].addr);
        let token = token.clone();
        calls.push(tokio::spawn(async move {
            let channel = tonic::transport::Channel::from_shared(endpoint)
                .unwrap()
                .connect()
                .await
                .unwrap();
            let mut client =
                zenlayer_gateway::pb::disk_service_client::DiskServiceClient::new(channel);
            let mut call = unauthenticated_request("disk-recycled-data");
            call.get_mut().idempotency_key = "fleet-wide-key".to_owned();
            call.metadata_mut().insert("authorization", bearer(&token));
            client.release_disk(call).await.map(|r| r.into_inner())
        }));
    }
    let mut answered = Vec::new();
    for call in calls {
        match call.await.unwrap() {
            Ok(response) => answered.push(response),
            Err(status) => {
                assert_error(&status, Code::Aborted, "IDEMPOTENCY_KEY_IN_FLIGHT");
            }
        }
    }
    assert_eq!(
        app.simulator.release_disk_requests(),
        1,
        "exactly one upstream ReleaseDisk"
    );
    let upstream_id = app.simulator.received_for("ReleaseDisk")[0]
        .answered_request_id
        .clone()
        .unwrap();
    assert!(
        answered.iter().all(|r| r.request_id == upstream_id),
        "every answer is the one request id"
    );
    assert_eq!(
        answered.iter().filter(|r| !r.replayed).count(),
        1,
        "one caller made the call; the rest were replays"
    );
}

#[tokio::test]
async fn a_temporary_unavailability_frees_the_key_for_a_real_retry() {
    let app = spawn_app().await;
    app.simulator.fail_release(
        Fault::Status {
            http_status: 503,
            code: "SERVICE_TEMPORARY_UNAVAILABLE".to_owned(),
        },
        1,
    );
    let first = release(&app, keyed("disk-recycled-data", "retry-7"))
        .await
        .unwrap_err();
    assert_error(&first, Code::Unavailable, "SERVICE_TEMPORARY_UNAVAILABLE");
    let retried = release(&app, keyed("disk-recycled-data", "retry-7"))
        .await
        .unwrap();
    assert!(!retried.replayed);
    assert_eq!(app.simulator.release_disk_requests(), 2);
}

#[tokio::test]
async fn a_rejected_gateway_credential_frees_the_key_so_the_retry_after_the_fix_releases() {
    let app = spawn_app().await;
    app.simulator.fail_release(
        Fault::Status {
            http_status: 401,
            code: "AUTHFAILURE_SIGNATURE_FAILURE".to_owned(),
        },
        1,
    );
    let refused = release(&app, keyed("disk-recycled-data", "credential-1"))
        .await
        .unwrap_err();
    assert_error(&refused, Code::Internal, "AUTHFAILURE_SIGNATURE_FAILURE");
    key_is_freed(&app, "credential-1").await;
    // Operators mend the key (here: the fault is spent); the caller retries.
    let retried = release(&app, keyed("disk-recycled-data", "credential-1"))
        .await
        .unwrap();
    assert!(!retried.replayed, "the retry really went to Zenlayer");
    assert_eq!(app.simulator.release_disk_requests(), 2);
    assert!(app.simulator.disk("disk-recycled-data").is_none());
}

#[tokio::test]
async fn a_key_is_freed_after_an_edge_challenge_or_block_and_the_retry_releases() {
    let app = spawn_app().await;
    let cases = [
        (Fault::SecurityChallenge, "SECURITY_CHALLENGE", "edge-1"),
        (Fault::Blocked, "REQUEST_BLOCKED", "edge-2"),
    ];
    for (fault, reason, key) in cases {
        let disk = format!("disk-{key}");
        app.simulator
            .put_disk(Disk::new(&disk, DiskType::Data, DiskStatus::Recycled));
        app.simulator.fail_release(fault, 1);
        let refused = release(&app, keyed(&disk, key)).await.unwrap_err();
        assert_error(&refused, Code::Unavailable, reason);
        key_is_freed(&app, key).await;
        let retried = release(&app, keyed(&disk, key)).await.unwrap();
        assert!(
            !retried.replayed,
            "{reason}: the retry really went to Zenlayer"
        );
        assert!(app.simulator.disk(&disk).is_none(), "{reason}: released");
    }
}

#[tokio::test]
async fn a_key_is_freed_when_nothing_could_be_sent() {
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    // Without the pre-flight, the key is claimed before the release fails to
    // connect (with it, the DescribeDisks fails first and nothing is claimed).
    let app =
        spawn_app_with_settings(&[("ZENLAYER_BASE_URL", &url), ("ZENLAYER_PREFLIGHT", "false")])
            .await;
    let first = release(&app, keyed("disk-recycled-data", "unsent-1"))
        .await
        .unwrap_err();
    assert_error(&first, Code::Unavailable, "UPSTREAM_UNREACHABLE");
    key_is_freed(&app, "unsent-1").await;
    let second = release(&app, keyed("disk-recycled-data", "unsent-1"))
        .await
        .unwrap_err();
    assert_error(&second, Code::Unavailable, "UPSTREAM_UNREACHABLE");
    assert!(
        !error_metadata(&second).contains_key("replayed"),
        "the retry tried again rather than repeating the first answer"
    );
}

#[tokio::test]
async fn a_key_is_freed_when_too_little_deadline_was_left_and_the_retry_releases() {
    // Without the pre-flight the key is claimed before the release finds too
    // little deadline left (with it, the DescribeDisks refuses first).
    let app = spawn_app_with_settings(&[("ZENLAYER_PREFLIGHT", "false")]).await;
    app.release(request("disk-does-not-exist"))
        .await
        .unwrap_err();
    let mut hurried = keyed("disk-recycled-data", "hurried-1");
    hurried.set_timeout(Duration::from_millis(290));
    let refused = release(&app, hurried).await.unwrap_err();
    assert_error(&refused, Code::DeadlineExceeded, "DEADLINE_TOO_SHORT");
    key_is_freed(&app, "hurried-1").await;
    let retried = release(&app, keyed("disk-recycled-data", "hurried-1"))
        .await
        .unwrap();
    assert!(!retried.replayed);
    assert_eq!(app.simulator.release_disk_requests(), 2);
}

#[tokio::test]
async fn a_call_the_pre_flight_refused_leaves_its_key_free_so_a_retry_looks_again() {
    let app = spawn_app().await;
    app.simulator
        .put_disk(Disk::new("disk-later", DiskType::Data, DiskStatus::InUse));
    let refused = release(&app, keyed("disk-later", "look-again"))
        .await
        .unwrap_err();
    assert_error(
        &refused,
        Code::FailedPrecondition,
        "UNSUPPORTED_OPERATION_DISK_NOT_BEING_RECYCLE",
    );
    // Detached and terminated meanwhile: now it can go.
    app.simulator.put_disk(Disk::new(
        "disk-later",
        DiskType::Data,
        DiskStatus::Recycled,
    ));
    let released = release(&app, keyed("disk-later", "look-again"))
        .await
        .unwrap();
    assert!(!released.replayed);
    assert_eq!(app.simulator.release_disk_requests(), 1);
}

#[tokio::test]
async fn a_retry_of_a_call_the_recovery_sweep_marked_unknown_is_told_outcome_unknown() {
    let app = spawn_app_with_settings(&[("GATEWAY_RECOVERY_INTERVAL_MS", "20")]).await;
    // A call a gateway stopped in the middle of, an hour ago.
    let abandoned = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO audit.release_attempts
            (call_id, received_at, principal, issuer, x_request_id, trace_id, disk_id, decision)
         VALUES ($1, now() - interval '1 hour', $2, $3, 'abandoned', 'trace', 'disk-recycled-data', 'allowed');
         ",
    )
    .bind(abandoned)
    .bind(tokens::SUBJECT)
    .bind(tokens::ISSUER)
    .execute(&app.db)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO idempotency.keys (issuer, principal, idempotency_key, disk_id, call_id)
         VALUES ($1, $2, 'abandoned-key', 'disk-recycled-data', $3)",
    )
    .bind(tokens::ISSUER)
    .bind(tokens::SUBJECT)
    .bind(abandoned)
    .execute(&app.db)
    .await
    .unwrap();
    eventually(
        Duration::from_secs(10),
        "the sweep to mark it unknown",
        || async {
            let outcome: Option<String> =
                sqlx::query_scalar("SELECT outcome FROM audit.release_outcomes WHERE call_id = $1")
                    .bind(abandoned)
                    .fetch_optional(&app.db)
                    .await
                    .unwrap();
            (outcome.as_deref() == Some("unknown")).then_some(())
        },
    )
    .await;
    let retried = release(&app, keyed("disk-recycled-data", "abandoned-key"))
        .await
        .unwrap_err();
    assert_error(&retried, Code::Unavailable, "OUTCOME_UNKNOWN");
    assert_eq!(error_metadata(&retried)["replayed"], "true");
    assert_eq!(
        app.simulator.release_disk_requests(),
        0,
        "nothing is resent"
    );
}
