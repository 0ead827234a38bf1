//! Routing, counting, the request log and shutdown.

use super::{call, client, send, signed, start, unsigned};

const RELEASE: &str = r#"{"diskId":"disk-recycled-data"}"#;

#[tokio::test]
async fn counters_include_rejected_requests() {
    let sim = start().await;
    send(unsigned(&sim, "ReleaseDisk", RELEASE)).await;
    call(&sim, "ReleaseDisk", r#"{"diskId":"disk-system"}"#).await;
    call(&sim, "DescribeDisks", "{}").await;
    call(&sim, "NoSuchAction", "{}").await;
    client()
        .get(format!("{}/elsewhere", sim.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(sim.requests_received(), 5);
    assert_eq!(sim.release_disk_requests(), 2);
    assert_eq!(sim.action_requests("DescribeDisks"), 1);
    assert_eq!(sim.action_requests("NoSuchAction"), 1);
}

#[tokio::test]
async fn the_request_log_keeps_headers_and_the_exact_body() {
    let sim = start().await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    send(signed(&sim, "ReleaseDisk", RELEASE).header("traceparent", traceparent)).await;
    let received = sim.received();
    assert_eq!(received.len(), 1);
    let request = &received[0];
    assert_eq!(request.action.as_deref(), Some("ReleaseDisk"));
    assert_eq!(request.header("traceparent"), Some(traceparent));
    assert_eq!(request.header("x-zc-version"), Some("2023-03-13"));
    assert_eq!(request.body, RELEASE.as_bytes());
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("POST", "/api/v2/vm")
    );
}

#[tokio::test]
async fn other_paths_are_404_and_other_methods_405_in_zenlayer_json() {
    let sim = start().await;
    let wrong_path = send(
        client()
            .post(format!("{}/api/v2/bmc", sim.base_url()))
            .body(RELEASE),
    )
    .await;
    assert_eq!(
        (wrong_path.status, wrong_path.code().as_str()),
        (404, "NOT_FOUND")
    );
    let wrong_method = send(client().get(format!("{}/api/v2/vm", sim.base_url()))).await;
    assert_eq!(
        (wrong_method.status, wrong_method.code().as_str()),
        (405, "METHOD_NOT_ALLOWED")
    );
    assert_eq!(wrong_method.headers["allow"], "POST");
}

#[tokio::test]
async fn shutdown_stops_accepting_connections() {
    let sim = start().await;
    assert_eq!(call(&sim, "DescribeDisks", "{}").await.status, 200);
    sim.shutdown();
    sim.stopped().await;
    let error = signed(&sim, "DescribeDisks", "{}")
        .send()
        .await
        .unwrap_err();
    assert!(error.is_connect(), "{error:?}");
}

#[tokio::test]
async fn base_url_points_at_loopback_even_when_bound_to_every_interface() {
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let sim = crate::simulator::spawn(Default::default(), listener)
        .await
        .unwrap();
    let port = sim.addr().port();
    assert_eq!(sim.base_url(), format!("http://127.0.0.1:{port}"));
    sim.shutdown();
}
