//! Each fault as a client observes it, and the queue's bookkeeping.

use std::time::{Duration, Instant};

use super::{call, client, send, signed, start, unsigned, until};
use crate::simulator::Fault;

const RELEASE: &str = r#"{"diskId":"disk-recycled-data"}"#;

#[tokio::test]
async fn rate_limited_requests_get_429_until_the_queue_runs_out() {
    let sim = start().await;
    sim.inject(Fault::RateLimited, 2);
    for _ in 0..2 {
        let answer = call(&sim, "ReleaseDisk", RELEASE).await;
        assert_eq!(
            (answer.status, answer.code().as_str()),
            (429, "REQUEST_LIMIT_EXCEEDED")
        );
    }
    assert!(
        sim.disk("disk-recycled-data").is_some(),
        "a rate-limited release does nothing"
    );
    assert_eq!(call(&sim, "ReleaseDisk", RELEASE).await.status, 200);
    assert_eq!(sim.release_disk_requests(), 3);
}

#[tokio::test]
async fn a_status_fault_answers_zenlayer_json_with_that_code() {
    let sim = start().await;
    sim.inject(
        Fault::Status {
            http_status: 503,
            code: "SERVICE_TEMPORARY_UNAVAILABLE".into(),
        },
        1,
    );
    let answer = call(&sim, "ReleaseDisk", RELEASE).await;
    assert_eq!(
        (answer.status, answer.code().as_str()),
        (503, "SERVICE_TEMPORARY_UNAVAILABLE")
    );
}

#[tokio::test]
async fn a_security_challenge_is_a_403_with_cf_mitigated_and_html() {
    let sim = start().await;
    sim.inject(Fault::SecurityChallenge, 1);
    let answer = call(&sim, "ReleaseDisk", RELEASE).await;
    assert_eq!(answer.status, 403);
    assert_eq!(answer.headers["cf-mitigated"], "challenge");
    assert!(
        answer.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(serde_json::from_str::<serde_json::Value>(&answer.text).is_err());
}

#[tokio::test]
async fn blocked_proxy_html_and_empty_body_faults_carry_no_api_json() {
    let sim = start().await;
    sim.inject(Fault::Blocked, 1);
    sim.inject(Fault::ProxyHtml, 1);
    sim.inject(Fault::EmptyBody(504), 1);
    let blocked = call(&sim, "ReleaseDisk", RELEASE).await;
    assert_eq!(blocked.status, 451);
    assert!(
        blocked.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let proxy = call(&sim, "ReleaseDisk", RELEASE).await;
    assert_eq!(proxy.status, 502);
    assert!(proxy.text.contains("<html>"));
    let empty = call(&sim, "ReleaseDisk", RELEASE).await;
    assert_eq!((empty.status, empty.text.as_str()), (504, ""));
    assert!(sim.disk("disk-recycled-data").is_some());
}

#[tokio::test]
async fn a_dropped_connection_fails_the_request_after_it_arrived() {
    let sim = start().await;
    sim.inject(Fault::DropConnection, 1);
    let error = signed(&sim, "ReleaseDisk", RELEASE)
        .send()
        .await
        .unwrap_err();
    assert!(!error.is_connect(), "{error:?}");
    assert!(!error.is_timeout(), "{error:?}");
    assert_eq!(sim.release_disk_requests(), 1);
    assert_eq!(sim.received()[0].body, RELEASE.as_bytes());
    assert!(sim.disk("disk-recycled-data").is_some());
}

#[tokio::test]
async fn latency_delays_the_answer_but_not_its_content() {
    let sim = start().await;
    sim.inject(Fault::Latency(Duration::from_millis(300)), 1);
    let started = Instant::now();
    let answer = call(&sim, "ReleaseDisk", RELEASE).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(answer.status, 200);
    assert_eq!(sim.disk("disk-recycled-data"), None);
}

#[tokio::test]
async fn a_hanging_request_ends_only_when_the_client_gives_up() {
    let sim = start().await;
    sim.inject(Fault::Hang, 1);
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let request = signed(&sim, "ReleaseDisk", RELEASE).build().unwrap();
    let error = impatient.execute(request).await.unwrap_err();
    assert!(error.is_timeout(), "{error:?}");
    assert_eq!(sim.requests_received(), 1);
    assert!(sim.disk("disk-recycled-data").is_some());
}

#[tokio::test]
async fn shutdown_closes_a_hanging_request() {
    let sim = start().await;
    sim.inject(Fault::Hang, 1);
    let pending = tokio::spawn(signed(&sim, "ReleaseDisk", RELEASE).send());
    until(|| sim.requests_received() == 1).await;
    sim.shutdown();
    let error = pending.await.unwrap().unwrap_err();
    assert!(!error.is_connect() && !error.is_timeout(), "{error:?}");
}

#[tokio::test]
async fn faults_apply_to_every_action_and_before_credentials() {
    let sim = start().await;
    sim.inject(Fault::RateLimited, 2);
    let unauthenticated = send(unsigned(&sim, "ReleaseDisk", RELEASE)).await;
    assert_eq!(unauthenticated.code(), "REQUEST_LIMIT_EXCEEDED");
    let describe = call(&sim, "DescribeDisks", "{}").await;
    assert_eq!(describe.code(), "REQUEST_LIMIT_EXCEEDED");
}

#[tokio::test]
async fn cleared_faults_no_longer_apply() {
    let sim = start().await;
    sim.inject(Fault::DropConnection, 5);
    sim.clear_faults();
    assert_eq!(call(&sim, "ReleaseDisk", RELEASE).await.status, 200);
}

#[tokio::test]
async fn control_endpoints_never_take_a_fault() {
    let sim = start().await;
    sim.inject(Fault::DropConnection, 1);
    let stats = client()
        .get(format!("{}/_simulator/stats", sim.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(stats.status(), 200);
    assert!(signed(&sim, "ReleaseDisk", RELEASE).send().await.is_err());
}
