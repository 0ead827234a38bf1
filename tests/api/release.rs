//! ReleaseDisk end to end: what the caller gets for each thing Zenlayer can
//! answer, and what reaches Zenlayer.

use crate::helpers::{
    AppOptions, assert_error, request, spawn_app, spawn_app_with, spawn_app_with_settings,
};
use std::collections::HashMap;
use std::time::Duration;
use tonic::Code;
use tonic_types::StatusExt as _;
use zenlayer_gateway::simulator::Fault;

#[tokio::test]
async fn release_of_a_recycled_data_disk_returns_zenlayers_request_id() {
    let app = spawn_app().await;
    let response = app.release(request("disk-recycled-data")).await.unwrap();
    let request_id = &response.get_ref().request_id;
    let answered = app.simulator.received_for("ReleaseDisk");
    assert_eq!(answered.len(), 1);
    assert_eq!(
        Some(request_id.as_str()),
        answered[0].answered_request_id.as_deref()
    );
    assert!(!response.get_ref().replayed);
    assert!(
        app.simulator.disk("disk-recycled-data").is_none(),
        "the disk is gone"
    );
}

#[tokio::test]
async fn an_unknown_disk_is_not_found_by_the_pre_flight_and_never_released() {
    let app = spawn_app().await;
    let status = app
        .release(request("disk-does-not-exist"))
        .await
        .unwrap_err();
    let metadata = assert_error(&status, Code::NotFound, "INVALID_DISK_NOT_FOUND");
    assert_eq!(metadata["zenlayer_action"], "DescribeDisks");
    let described = app.simulator.received_for("DescribeDisks");
    assert_eq!(described.len(), 1);
    assert_eq!(
        Some(&metadata["upstream_request_id"]),
        described[0].answered_request_id.as_ref()
    );
    assert_eq!(
        &described[0].body[..],
        br#"{"diskIds":["disk-does-not-exist"]}"#
    );
    assert!(
        status.message().contains("disk-does-not-exist")
            && status.message().contains("DescribeDisks does not list it"),
        "{}",
        status.message()
    );
    assert_eq!(app.simulator.release_disk_requests(), 0);
}

#[tokio::test]
async fn a_disk_gone_between_the_look_and_the_release_is_not_found_by_zenlayer() {
    let app = spawn_app().await;
    app.simulator.fail_release(
        Fault::Status {
            http_status: 404,
            code: "INVALID_DISK_NOT_FOUND".into(),
        },
        1,
    );
    let status = app
        .release(request("disk-recycled-data"))
        .await
        .unwrap_err();
    let metadata = assert_error(&status, Code::NotFound, "INVALID_DISK_NOT_FOUND");
    assert_eq!(metadata["http_status"], "404");
    assert!(
        !metadata.contains_key("zenlayer_action"),
        "the release's own answer"
    );
    let answered = app.simulator.received_for("ReleaseDisk")[0]
        .answered_request_id
        .clone();
    assert_eq!(Some(&metadata["upstream_request_id"]), answered.as_ref());
}

#[tokio::test]
async fn disks_zenlayer_will_not_release_fail_their_precondition() {
    let app = spawn_app().await;
    let mut disks = app.disks().await;
    let in_use = disks
        .release_disk(request("disk-in-use"))
        .await
        .unwrap_err();
    assert_error(
        &in_use,
        Code::FailedPrecondition,
        "UNSUPPORTED_OPERATION_DISK_NOT_BEING_RECYCLE",
    );
    assert!(
        in_use.message().contains("IN_USE") && in_use.message().contains("instance-sample"),
        "names the state and the instance: {}",
        in_use.message()
    );
    let system = disks
        .release_disk(request("disk-system"))
        .await
        .unwrap_err();
    assert_error(
        &system,
        Code::FailedPrecondition,
        "UNSUPPORTED_OPERATION_DISK_SYSTEM_TYPE",
    );
    let recycling = disks
        .release_disk(request("disk-recycling"))
        .await
        .unwrap_err();
    assert_error(
        &recycling,
        Code::FailedPrecondition,
        "UNSUPPORTED_OPERATION_RECYCLE_STATUS",
    );
    assert!(app.simulator.disk("disk-in-use").is_some());
    assert_eq!(
        app.simulator.release_disk_requests(),
        0,
        "the pre-flight decided; ReleaseDisk was never sent"
    );
}

#[tokio::test]
async fn zenlayer_error_codes_map_to_the_documented_grpc_codes() {
    let app = spawn_app().await;
    let mut disks = app.disks().await;
    let cases = [
        (400, "INVALID_PARAMETER_VALUE", Code::InvalidArgument),
        (400, "MISSING_PARAMETER", Code::InvalidArgument),
        (
            400,
            "OPERATION_FAILED_FOR_RECYCLE_RESOURCE",
            Code::FailedPrecondition,
        ),
        (404, "OPERATION_FAILED_RESOURCE_NOT_FOUND", Code::NotFound),
        (503, "SERVICE_TEMPORARY_UNAVAILABLE", Code::Unavailable),
        (500, "INTERNAL_SERVER_ERROR", Code::Unavailable),
        (400, "SOMETHING_NEW", Code::Unknown),
    ];
    for (http_status, code, expected) in cases {
        app.simulator.fail_release(
            Fault::Status {
                http_status,
                code: code.to_owned(),
            },
            1,
        );
        let status = disks
            .release_disk(request("disk-recycled-data"))
            .await
            .unwrap_err();
        let metadata = assert_error(&status, expected, code);
        assert_eq!(metadata["http_status"], http_status.to_string());
        assert!(metadata.contains_key("upstream_request_id"), "{code}");
    }
    assert_eq!(
        app.simulator.release_disk_requests(),
        cases.len() as u64,
        "none is retried"
    );
}

#[tokio::test]
async fn a_rejected_gateway_credential_is_an_internal_error_not_the_callers_fault() {
    let app = spawn_app_with_settings(&[("ZENLAYER_ACCESS_KEY_PASSWORD", "wrong-password")]).await;
    let status = app
        .release(request("disk-recycled-data"))
        .await
        .unwrap_err();
    assert_error(&status, Code::Internal, "AUTHFAILURE_SIGNATURE_FAILURE");
    assert!(
        status.message().contains("gateway is misconfigured"),
        "{}",
        status.message()
    );
    assert!(!status.message().contains("wrong-password"));
}

#[tokio::test]
async fn a_bearer_token_credential_is_accepted_upstream() {
    let app = spawn_app_with_settings(&[
        ("ZENLAYER_ACCESS_KEY_ID", ""),
        ("ZENLAYER_ACCESS_KEY_PASSWORD", ""),
        ("ZENLAYER_ACCESS_TOKEN", "test-bearer-token"),
    ])
    .await;
    app.release(request("disk-recycled-data")).await.unwrap();
    let headers = &app.simulator.received_for("ReleaseDisk")[0].headers;
    assert_eq!(
        headers.get("authorization").unwrap(),
        "Bearer test-bearer-token"
    );
    assert!(headers.get("x-zc-timestamp").is_none());
}

#[tokio::test]
async fn rate_limits_are_retried_with_backoff_until_zenlayer_accepts() {
    let app = spawn_app().await;
    app.simulator.fail_release(Fault::RateLimited, 2);
    app.release(request("disk-recycled-data")).await.unwrap();
    assert_eq!(app.simulator.release_disk_requests(), 3);
}

#[tokio::test]
async fn persistent_rate_limits_are_resource_exhausted_with_retry_info() {
    let app = spawn_app().await;
    app.simulator.fail_release(Fault::RateLimited, 10);
    let status = app
        .release(request("disk-recycled-data"))
        .await
        .unwrap_err();
    assert_error(&status, Code::ResourceExhausted, "REQUEST_LIMIT_EXCEEDED");
    assert!(status.get_details_retry_info().is_some());
    assert_eq!(
        app.simulator.release_disk_requests(),
        4,
        "one call and three retries"
    );
}

#[tokio::test]
async fn a_hung_upstream_is_an_unknown_outcome_and_is_not_retried() {
    let app = spawn_app_with_settings(&[("ZENLAYER_TIMEOUT_MS", "300")]).await;
    app.simulator.fail_release(Fault::Hang, 10);
    let status = app
        .release(request("disk-recycled-data"))
        .await
        .unwrap_err();
    assert_error(&status, Code::Unavailable, "OUTCOME_UNKNOWN");
    assert!(
        status.message().contains("may or may not"),
        "{}",
        status.message()
    );
    assert_eq!(app.simulator.release_disk_requests(), 1);
}

#[tokio::test]
async fn a_connection_dropped_after_sending_is_an_unknown_outcome_and_is_not_retried() {
    let app = spawn_app().await;
    app.simulator.fail_release(Fault::DropConnection, 10);
    let status = app
        .release(request("disk-recycled-data"))
        .await
        .unwrap_err();
    assert_error(&status, Code::Unavailable, "OUTCOME_UNKNOWN");
    assert_eq!(app.simulator.release_disk_requests(), 1);
}

#[tokio::test]
async fn the_callers_deadline_shortens_the_upstream_timeout() {
    let app = spawn_app_with_settings(&[("ZENLAYER_TIMEOUT_MS", "60000")]).await;
    app.simulator.fail_release(Fault::Hang, 1);
    let mut call = request("disk-recycled-data");
    call.set_timeout(Duration::from_millis(1500));
    let started = std::time::Instant::now();
    let status = app.release(call).await.unwrap_err();
    // The gateway answers inside the caller's deadline, before the client
    // gives up on its own, so the status is the gateway's.
    assert_error(&status, Code::DeadlineExceeded, "OUTCOME_UNKNOWN");
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[tokio::test]
async fn a_deadline_too_short_to_call_zenlayer_sends_nothing() {
    let app = spawn_app().await;
    // A first call warms the key cache and the connections, so that the
    // refusal below is quick to decide and to arrive.
    app.release(request("disk-does-not-exist"))
        .await
        .unwrap_err();
    let before = app.simulator.requests_received();
    let mut call = request("disk-recycled-data");
    // Under 300 ms (200 ms minimum budget plus 100 ms to answer) is refused
    // up front, however quickly it is decided; 290 ms leaves the refusal as
    // long as possible to arrive on a busy machine.
    call.set_timeout(Duration::from_millis(290));
    let status = app.release(call).await.unwrap_err();
    assert_error(&status, Code::DeadlineExceeded, "DEADLINE_TOO_SHORT");
    assert_eq!(
        app.simulator.requests_received(),
        before,
        "nothing was sent"
    );
}

#[tokio::test]
async fn edge_answers_are_unavailable_with_their_own_reasons() {
    let app = spawn_app().await;
    let mut disks = app.disks().await;
    let cases = [
        (Fault::SecurityChallenge, "SECURITY_CHALLENGE"),
        (Fault::Blocked, "REQUEST_BLOCKED"),
        (Fault::ProxyHtml, "UPSTREAM_UNAVAILABLE"),
        (Fault::EmptyBody(503), "UPSTREAM_UNAVAILABLE"),
    ];
    for (fault, reason) in cases {
        app.simulator.fail_release(fault, 1);
        let status = disks
            .release_disk(request("disk-recycled-data"))
            .await
            .unwrap_err();
        assert_error(&status, Code::Unavailable, reason);
    }
}

#[tokio::test]
async fn an_unreachable_zenlayer_is_unavailable_and_says_nothing_was_sent() {
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let app = spawn_app_with(AppOptions {
        settings: HashMap::from([("ZENLAYER_BASE_URL".into(), url)]),
        ..Default::default()
    })
    .await;
    let status = app
        .release(request("disk-recycled-data"))
        .await
        .unwrap_err();
    assert_error(&status, Code::Unavailable, "UPSTREAM_UNREACHABLE");
    assert!(status.message().contains("nothing was sent"));
}

#[tokio::test]
async fn an_invalid_disk_id_is_refused_with_a_field_violation_and_never_forwarded() {
    let app = spawn_app().await;
    let mut disks = app.disks().await;
    for bad in ["", "../../etc/passwd", "disk'; DROP TABLE", &"d".repeat(65)] {
        let status = disks.release_disk(request(bad)).await.unwrap_err();
        assert_error(&status, Code::InvalidArgument, "INVALID_ARGUMENT");
        let violations = status
            .get_details_bad_request()
            .expect("a BadRequest detail")
            .field_violations;
        assert_eq!(violations[0].field, "disk_id");
    }
    assert_eq!(app.simulator.requests_received(), 0);
}

#[tokio::test]
async fn an_oversized_request_is_refused_with_its_record_before_anything_is_sent() {
    let app = spawn_app().await;
    let mut call = request("disk-recycled-data");
    // Well-formed but for its size: only the message cap can refuse it
    // before validation would.
    call.get_mut().disk_id = "d".repeat(9 * 1024);
    let status = app.release(call).await.unwrap_err();
    let metadata = assert_error(&status, Code::ResourceExhausted, "MESSAGE_TOO_LARGE");
    assert!(
        status.message().contains("at most 8192"),
        "{}",
        status.message()
    );
    assert_eq!(app.simulator.requests_received(), 0);
    let (decision, reason): (String, String) = sqlx::query_as(
        "SELECT decision, decision_reason FROM audit.release_disk_calls WHERE call_id = $1::uuid",
    )
    .bind(&metadata["audit_id"])
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(
        (decision.as_str(), reason.as_str()),
        ("invalid", "MESSAGE_TOO_LARGE")
    );
}

#[tokio::test]
async fn a_far_oversized_request_is_resource_exhausted_unread() {
    let app = spawn_app().await;
    let mut call = request("disk-recycled-data");
    call.get_mut().reason = "r".repeat(100 * 1024);
    let status = app.release(call).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(app.simulator.requests_received(), 0);
}

#[tokio::test]
async fn the_callers_request_id_is_echoed_and_a_missing_one_is_minted() {
    let app = spawn_app().await;
    let mut disks = app.disks().await;
    let mut call = request("disk-recycled-data");
    call.metadata_mut()
        .insert("x-request-id", "incident-42".parse().unwrap());
    let response = disks.release_disk(call).await.unwrap();
    assert_eq!(
        response.metadata().get("x-request-id").unwrap(),
        "incident-42"
    );
    let status = disks
        .release_disk(request("disk-recycled-data"))
        .await
        .unwrap_err();
    let minted = status
        .metadata()
        .get("x-request-id")
        .expect("a minted request id");
    let metadata = assert_error(&status, Code::NotFound, "INVALID_DISK_NOT_FOUND");
    assert_eq!(metadata["x_request_id"], minted.to_str().unwrap());
}

#[tokio::test]
async fn every_request_zenlayer_receives_is_signed_over_the_exact_body() {
    let app = spawn_app().await;
    app.release(request("disk-recycled-data")).await.unwrap();
    let received = &app.simulator.received_for("ReleaseDisk")[0];
    assert_eq!(&received.body[..], br#"{"diskId":"disk-recycled-data"}"#);
    assert_eq!(received.headers.get("x-zc-action").unwrap(), "ReleaseDisk");
    assert_eq!(received.headers.get("x-zc-version").unwrap(), "2023-03-13");
    assert_eq!(
        received.headers.get("x-zc-signature-method").unwrap(),
        "ZC2-HMAC-SHA256"
    );
}

#[tokio::test]
async fn the_authorization_zenlayer_receives_is_exactly_the_documented_signature() {
    let app = spawn_app().await;
    app.release(request("disk-recycled-data")).await.unwrap();
    let received = &app.simulator.received_for("ReleaseDisk")[0];
    let timestamp = received.header("x-zc-timestamp").expect("a timestamp");
    let host = app
        .simulator
        .base_url()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    assert_eq!(received.header("host"), Some(host.as_str()));
    let expected = crate::zc2::authorization(
        crate::helpers::ACCESS_KEY_ID,
        crate::helpers::ACCESS_KEY_PASSWORD,
        timestamp,
        "application/json",
        &host,
        &received.body,
    );
    assert_eq!(received.header("authorization"), Some(expected.as_str()));
}

#[tokio::test]
async fn a_request_that_is_not_grpc_is_refused_as_an_unsupported_media_type() {
    let app = spawn_app().await;
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let answer = client
        .post(format!(
            "{}/zenlayer.vm.v1.DiskService/ReleaseDisk",
            app.endpoint()
        ))
        .header("content-type", "application/json")
        .header(
            "authorization",
            format!("Bearer {}", crate::tokens::good_token()),
        )
        .body(r#"{"diskId": "disk-recycled-data"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 415);
    assert_eq!(app.simulator.requests_received(), 0, "nothing was sent");
    assert!(app.simulator.disk("disk-recycled-data").is_some());
}
