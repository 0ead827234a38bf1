//! What on-call sees: metrics that move, one structured log line per call,
//! and a trace that runs from the caller through the gateway to Zenlayer.

use crate::helpers::{TestApp, as_gateway, captured_logs, spawn_app, test_settings};
use crate::helpers::{request, unauthenticated_request};
use crate::otlp::{Collector, attribute};
use crate::processes::GatewayProcess;
use crate::tokens;
use serde_json::Value;
use uuid::Uuid;
use zenlayer_gateway::pb::disk_service_client::DiskServiceClient;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN_ID: &str = "00f067aa0ba902b7";

fn traced(disk_id: &str) -> tonic::Request<zenlayer_gateway::pb::ReleaseDiskRequest> {
    let mut call = request(disk_id);
    let traceparent = format!("00-{TRACE_ID}-{CALLER_SPAN_ID}-01");
    call.metadata_mut()
        .insert("traceparent", traceparent.parse().unwrap());
    call
}

async fn scrape(app: &TestApp) -> String {
    reqwest::get(format!("http://{}/metrics", app.admin_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn metrics_count_calls_by_code_and_decision_and_time_zenlayer() {
    let app = spawn_app().await;
    let mut disks = app.disks().await;
    disks
        .release_disk(request("disk-recycled-data"))
        .await
        .unwrap();
    disks
        .release_disk(unauthenticated_request("disk-in-use"))
        .await
        .unwrap_err();
    disks
        .release_disk(request("disk-unknown"))
        .await
        .unwrap_err();
    let metrics = scrape(&app).await;
    for line in [
        r#"zenlayer_gateway_release_calls_total{grpc_code="OK",decision="allowed"} 1"#,
        r#"zenlayer_gateway_release_calls_total{grpc_code="UNAUTHENTICATED",decision="denied"} 1"#,
        r#"zenlayer_gateway_release_calls_total{grpc_code="NOT_FOUND",decision="allowed"} 1"#,
        "zenlayer_gateway_release_call_duration_seconds_count 3",
        r#"zenlayer_gateway_upstream_request_duration_seconds_count{outcome="succeeded",zenlayer_code=""} 1"#,
        r#"zenlayer_gateway_audit_write_duration_seconds_count{record="attempt"} 2"#,
        r#"zenlayer_gateway_audit_write_duration_seconds_count{record="preflight"} 1"#,
        "zenlayer_gateway_release_calls_in_flight 0",
        "zenlayer_gateway_jwks_refresh_failures_total 0",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "missing {line:?} in:\n{metrics}"
        );
    }
}

#[tokio::test]
async fn each_call_leaves_one_structured_log_line_without_secrets() {
    let app = spawn_app().await;
    let token = tokens::good_token();
    let mut call = unauthenticated_request("disk-recycled-data");
    call.metadata_mut()
        .insert("authorization", tokens::bearer(&token));
    call.metadata_mut()
        .insert("x-request-id", "log-line-check".parse().unwrap());
    call.metadata_mut().insert(
        "traceparent",
        format!("00-{TRACE_ID}-{CALLER_SPAN_ID}-01")
            .parse()
            .unwrap(),
    );
    let response = app.release(call).await.unwrap().into_inner();

    let logs = captured_logs();
    let lines: Vec<Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| {
            l["span"]["request_id"] == "log-line-check"
                && l["fields"]["message"] == "ReleaseDisk succeeded"
        })
        .collect();
    assert_eq!(lines.len(), 1, "one line per call");
    let (fields, span) = (&lines[0]["fields"], &lines[0]["span"]);
    assert_eq!(fields["principal"], tokens::SUBJECT);
    assert_eq!(fields["disk_id"], "disk-recycled-data");
    assert_eq!(fields["decision"], "allowed");
    assert_eq!(fields["outcome"], "succeeded");
    assert_eq!(fields["grpc.code"], "OK");
    assert_eq!(fields["zenlayer.request_id"], response.request_id);
    assert!(fields["duration_ms"].is_u64());
    assert_eq!(span["trace_id"], TRACE_ID);
    assert_eq!(span["call_id"], response.audit_id);
    let signature = token.rsplit('.').next().unwrap();
    assert!(!logs.contains(signature), "the token is never logged");
    assert!(!logs.contains(crate::helpers::ACCESS_KEY_PASSWORD));
}

/// The trace id the audit trail holds for a call.
async fn audited_trace_id(app: &TestApp, audit_id: &str) -> String {
    sqlx::query_scalar("SELECT trace_id FROM audit.release_disk_calls WHERE call_id = $1")
        .bind(Uuid::parse_str(audit_id).unwrap())
        .fetch_one(&app.db)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_callers_trace_reaches_zenlayer_and_the_audit_row() {
    let app = spawn_app().await;
    let response = app
        .release(traced("disk-recycled-data"))
        .await
        .unwrap()
        .into_inner();
    let received = &app.simulator.received_for("ReleaseDisk")[0];
    let traceparent = received
        .header("traceparent")
        .expect("Zenlayer is sent a traceparent");
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts[1], TRACE_ID, "same trace");
    assert_ne!(
        parts[2], CALLER_SPAN_ID,
        "the gateway's own client span is the parent"
    );
    assert_eq!(audited_trace_id(&app, &response.audit_id).await, TRACE_ID);
}

#[tokio::test]
async fn a_call_without_a_trace_gets_one_that_zenlayer_and_the_audit_row_share() {
    let app = spawn_app().await;
    let response = app
        .release(request("disk-recycled-data"))
        .await
        .unwrap()
        .into_inner();
    let trace_id = audited_trace_id(&app, &response.audit_id).await;
    assert_eq!(trace_id.len(), 32, "{trace_id}");
    assert_ne!(trace_id, TRACE_ID);
    let mut span_ids = Vec::new();
    for action in ["DescribeDisks", "ReleaseDisk"] {
        let received = &app.simulator.received_for(action)[0];
        let traceparent = received.header("traceparent").expect("a traceparent");
        let parts: Vec<&str> = traceparent.split('-').collect();
        assert_eq!(parts.len(), 4, "{traceparent}");
        assert_eq!(
            (parts[0], parts[1], parts[3]),
            ("00", trace_id.as_str(), "01")
        );
        assert_eq!(parts[2].len(), 16, "{traceparent}");
        span_ids.push(parts[2].to_owned());
    }
    assert_ne!(
        span_ids[0], span_ids[1],
        "each request is a span of its own"
    );
}

#[tokio::test]
async fn spans_are_exported_over_otlp_parented_to_the_caller() {
    let app = spawn_app().await;
    let (collector, endpoint) = Collector::start().await;
    let mut env = test_settings(
        &as_gateway(&app.database_url),
        &app.simulator,
        &app.key_server,
    );
    env.insert("GATEWAY_LOG_FORMAT".into(), "json".into());
    env.insert("OTEL_EXPORTER_OTLP_ENDPOINT".into(), endpoint);
    env.insert("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into());
    env.insert(
        "OTEL_SERVICE_NAME".into(),
        "zenlayer-gateway-under-test".into(),
    );
    let gateway = GatewayProcess::spawn(&env).await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", gateway.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let response = DiskServiceClient::new(channel)
        .release_disk(traced("disk-recycled-data"))
        .await
        .unwrap()
        .into_inner();

    let spans = collector
        .spans_once_seen("zenlayer.vm.v1.DiskService/ReleaseDisk")
        .await;
    let spans = collector
        .spans_once_seen("POST")
        .await
        .into_iter()
        .chain(spans)
        .collect::<Vec<_>>();
    let hex = |bytes: &[u8]| hex::encode(bytes);
    let server = spans
        .iter()
        .find(|s| s.name == "zenlayer.vm.v1.DiskService/ReleaseDisk")
        .unwrap();
    assert_eq!(hex(&server.trace_id), TRACE_ID);
    assert_eq!(
        hex(&server.parent_span_id),
        CALLER_SPAN_ID,
        "the server span continues the caller's"
    );
    assert_eq!(server.kind, 2, "SERVER");
    assert_eq!(attribute(server, "rpc.system").as_deref(), Some("grpc"));
    assert_eq!(
        attribute(server, "rpc.service").as_deref(),
        Some("zenlayer.vm.v1.DiskService")
    );
    assert_eq!(
        attribute(server, "rpc.method").as_deref(),
        Some("ReleaseDisk")
    );
    assert_eq!(
        attribute(server, "rpc.grpc.status_code").as_deref(),
        Some("0")
    );

    let in_trace = |name: &str| {
        spans
            .iter()
            .find(|s| s.name == name && hex(&s.trace_id) == TRACE_ID)
            .unwrap_or_else(|| panic!("no {name} span in the trace"))
    };
    for child in ["authorize", "audit.write", "zenlayer.release_disk"] {
        assert_eq!(in_trace(child).trace_id, server.trace_id);
    }
    let client = spans
        .iter()
        .find(|s| {
            s.name == "POST"
                && hex(&s.trace_id) == TRACE_ID
                && attribute(s, "zenlayer.action").as_deref() == Some("ReleaseDisk")
        })
        .expect("a client span for the release");
    assert_eq!(client.kind, 3, "CLIENT");
    assert_eq!(
        attribute(client, "http.request.method").as_deref(),
        Some("POST")
    );
    assert_eq!(
        attribute(client, "server.address").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(
        attribute(client, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(
        attribute(client, "zenlayer.request_id"),
        Some(response.request_id.clone())
    );
    let sent = app.simulator.received_for("ReleaseDisk")[0]
        .header("traceparent")
        .unwrap()
        .to_owned();
    assert_eq!(
        sent,
        format!("00-{TRACE_ID}-{}-01", hex(&client.span_id)),
        "Zenlayer got the client span's context"
    );
}
