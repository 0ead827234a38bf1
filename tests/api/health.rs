//! Health follows the database, and turns NOT_SERVING on shutdown; in-flight
//! calls finish during the drain.

use crate::helpers::{
    AppOptions, OwnPostgres, TestApp, assert_error, spawn_app, spawn_app_with,
    spawn_app_with_settings, until_the_release_is_sent,
};
use crate::helpers::{request, stall_attempts};
use std::time::Duration;
use tokio_stream::StreamExt as _;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use zenlayer_gateway::simulator::Fault;

const DISK_SERVICE: &str = "zenlayer.vm.v1.DiskService";

/// Waits on the Watch stream (no polling, no sleeps) for `wanted`.
async fn watch_until(stream: &mut tonic::Streaming<HealthCheckResponse>, wanted: ServingStatus) {
    let wait = async {
        while let Some(update) = stream.next().await {
            if update.expect("a health update").status == wanted as i32 {
                return;
            }
        }
        panic!("the health stream ended before {wanted:?}");
    };
    tokio::time::timeout(Duration::from_secs(30), wait)
        .await
        .unwrap_or_else(|_| panic!("health never became {wanted:?}"));
}

/// `grpc.health.v1.Health/Check` on the admin listener.
async fn admin_grpc_health(app: &TestApp, service: &str) -> i32 {
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", app.admin_addr))
        .unwrap()
        .connect()
        .await
        .expect("the admin listener speaks HTTP/2");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    health
        .check(check(service))
        .await
        .expect("a health answer")
        .into_inner()
        .status
}

/// The HTTP status of an admin endpoint.
async fn admin_status(app: &TestApp, path: &str) -> u16 {
    let url = format!("http://{}{path}", app.admin_addr);
    reqwest::get(url)
        .await
        .expect("the admin listener answers")
        .status()
        .as_u16()
}

/// A Watch on `service`, once it has reported SERVING.
async fn watch_serving(
    health: &mut HealthClient<tonic::transport::Channel>,
    service: &str,
) -> tonic::Streaming<HealthCheckResponse> {
    let mut stream = health.watch(check(service)).await.unwrap().into_inner();
    watch_until(&mut stream, ServingStatus::Serving).await;
    stream
}

fn check(service: &str) -> HealthCheckRequest {
    HealthCheckRequest {
        service: service.to_owned(),
    }
}

#[tokio::test]
async fn health_follows_the_database_down_and_back_up() {
    let mut postgres = OwnPostgres::start().await;
    let app = spawn_app_with(AppOptions {
        admin_database_url: Some(postgres.admin_url()),
        ..Default::default()
    })
    .await;
    let mut health = app.health().await;
    let mut stream = watch_serving(&mut health, DISK_SERVICE).await;

    assert_eq!(admin_status(&app, "/readyz").await, 200);
    assert_eq!(
        admin_grpc_health(&app, "").await,
        ServingStatus::Serving as i32
    );
    postgres.stop().await;
    watch_until(&mut stream, ServingStatus::NotServing).await;
    let overall = health.check(check("")).await.unwrap().into_inner();
    assert_eq!(overall.status, ServingStatus::NotServing as i32);
    assert_eq!(
        admin_status(&app, "/readyz").await,
        503,
        "readiness follows gRPC health"
    );
    assert_eq!(
        admin_status(&app, "/livez").await,
        200,
        "liveness ignores the database"
    );
    // What the kubelet's native gRPC probes ask, over the plaintext admin port.
    assert_eq!(
        admin_grpc_health(&app, "").await,
        ServingStatus::NotServing as i32
    );
    assert_eq!(
        admin_grpc_health(&app, "liveness").await,
        ServingStatus::Serving as i32
    );

    postgres.start_again().await;
    watch_until(&mut stream, ServingStatus::Serving).await;
}

#[tokio::test]
async fn shutdown_reports_not_serving_and_lets_in_flight_calls_finish() {
    let mut app = spawn_app().await;
    let mut health = app.health().await;
    let mut stream = watch_serving(&mut health, DISK_SERVICE).await;

    app.simulator
        .fail_release(Fault::Latency(Duration::from_millis(700)), 1);
    let mut disks = app.disks().await;
    let in_flight =
        tokio::spawn(async move { disks.release_disk(request("disk-recycled-data")).await });
    // The call is in flight once the simulator has it.
    until_the_release_is_sent(&app).await;
    app.begin_shutdown();
    watch_until(&mut stream, ServingStatus::NotServing).await;
    drop(stream);

    let response = in_flight
        .await
        .unwrap()
        .expect("the in-flight call completes");
    assert!(!response.get_ref().request_id.is_empty());
    app.shut_down().await.expect("a clean exit");
}

#[tokio::test]
async fn health_needs_no_credentials() {
    let app = spawn_app().await;
    let mut health = app.health().await;
    watch_serving(&mut health, "").await;
}

#[tokio::test]
async fn the_binary_drains_an_in_flight_call_and_exits_cleanly_on_sigterm() {
    let app = spawn_app().await;
    let mut env = crate::helpers::test_settings(
        &crate::helpers::as_gateway(&app.database_url),
        &app.simulator,
        &app.key_server,
    );
    env.insert("GATEWAY_LOG_FORMAT".into(), "json".into());
    let gateway = crate::processes::GatewayProcess::spawn(&env).await;
    app.simulator
        .fail_release(Fault::Latency(Duration::from_millis(700)), 1);
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", gateway.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut disks = zenlayer_gateway::pb::disk_service_client::DiskServiceClient::new(channel);
    let in_flight =
        tokio::spawn(async move { disks.release_disk(request("disk-recycled-data")).await });
    until_the_release_is_sent(&app).await;
    let status = gateway.terminate().await;
    assert!(status.success(), "exit status {status}");
    let response = in_flight
        .await
        .unwrap()
        .expect("the in-flight call completed during the drain");
    assert!(!response.get_ref().request_id.is_empty());
}

#[tokio::test]
async fn during_the_shutdown_delay_health_says_not_serving_yet_calls_are_still_served() {
    let mut app = spawn_app_with_settings(&[("GATEWAY_SHUTDOWN_DELAY_MS", "3000")]).await;
    let channel = app.channel().await;
    let mut health = HealthClient::new(channel.clone());
    let mut stream = watch_serving(&mut health, DISK_SERVICE).await;
    app.begin_shutdown();
    watch_until(&mut stream, ServingStatus::NotServing).await;
    // A load balancer that has not noticed yet still gets its call served.
    let mut disks = zenlayer_gateway::pb::disk_service_client::DiskServiceClient::new(channel);
    let response = disks
        .release_disk(request("disk-recycled-data"))
        .await
        .expect("served during the delay");
    assert!(!response.get_ref().request_id.is_empty());
    drop(stream);
    app.shut_down()
        .await
        .expect("a clean exit after the delay and the drain");
}

#[tokio::test]
async fn a_database_that_answers_but_cannot_record_turns_health_not_serving_and_back() {
    let app = spawn_app().await;
    let mut health = app.health().await;
    let mut stream = watch_serving(&mut health, DISK_SERVICE).await;
    let stall = stall_attempts(&app).await;
    watch_until(&mut stream, ServingStatus::NotServing).await;
    sqlx::Connection::close(stall).await.unwrap();
    watch_until(&mut stream, ServingStatus::Serving).await;
}

#[tokio::test]
async fn a_failed_audit_write_turns_health_not_serving_without_waiting_for_a_probe() {
    // Probes a minute apart: only what the call experiences can flip health.
    let app = spawn_app_with_settings(&[
        ("GATEWAY_HEALTH_CHECK_INTERVAL_MS", "60000"),
        ("DATABASE_STATEMENT_TIMEOUT_MS", "300"),
    ])
    .await;
    let mut health = app.health().await;
    let mut stream = watch_serving(&mut health, DISK_SERVICE).await;
    let stall = stall_attempts(&app).await;
    let status = app
        .release(request("disk-recycled-data"))
        .await
        .unwrap_err();
    assert_error(&status, Code::Unavailable, "AUDIT_UNAVAILABLE");
    let flipped = tokio::time::timeout(
        Duration::from_secs(5),
        watch_until(&mut stream, ServingStatus::NotServing),
    )
    .await;
    assert!(
        flipped.is_ok(),
        "NOT_SERVING within seconds, not at the next probe"
    );
    sqlx::Connection::close(stall).await.unwrap();
    assert_eq!(app.simulator.release_disk_requests(), 0);
}
