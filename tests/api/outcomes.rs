//! One decision, rendered many times: for every fate a release can meet,
//! the caller's status, the audit view, the upstream metric and the per-call
//! log line all say the same thing.

use crate::helpers::{captured_logs, eventually, request, spawn_app};
use serde_json::Value;
use std::time::Duration;
use tonic::Code;
use tonic_types::StatusExt as _;
use uuid::Uuid;
use zenlayer_gateway::simulator::{Disk, DiskStatus, DiskType, Fault};

/// The per-call log line of the call sent with `x-request-id`.
async fn log_line(request_id: &str) -> Value {
    eventually(Duration::from_secs(10), "the call's log line", || async {
        captured_logs()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|l| {
                l["span"]["request_id"] == request_id
                    && l["fields"]["message"]
                        .as_str()
                        .is_some_and(|m| m.starts_with("ReleaseDisk "))
            })
    })
    .await
}

/// The upstream metric's count for `outcome` and `code`.
async fn upstream_count(admin: std::net::SocketAddr, outcome: &str, code: &str) -> u64 {
    let metrics = reqwest::get(format!("http://{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let series = format!(
        r#"zenlayer_gateway_upstream_request_duration_seconds_count{{outcome="{outcome}",zenlayer_code="{code}"}} "#
    );
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&series))
        .map_or(0, |n| n.parse().unwrap())
}

#[tokio::test]
async fn log_line_audit_view_and_metric_agree_on_every_fate() {
    let app = spawn_app().await;
    let mut disks = app.disks().await;
    // (fault, Zenlayer's code, gRPC code, the outcome all three must show)
    let cases = [
        (None, "", Code::Ok, "succeeded"),
        (
            Some(Fault::Status {
                http_status: 400,
                code: "INVALID_PARAMETER_VALUE".into(),
            }),
            "INVALID_PARAMETER_VALUE",
            Code::InvalidArgument,
            "failed",
        ),
        (
            Some(Fault::Status {
                http_status: 503,
                code: "SERVICE_TEMPORARY_UNAVAILABLE".into(),
            }),
            "SERVICE_TEMPORARY_UNAVAILABLE",
            Code::Unavailable,
            "failed",
        ),
        (
            Some(Fault::Status {
                http_status: 500,
                code: "INTERNAL_SERVER_ERROR".into(),
            }),
            "INTERNAL_SERVER_ERROR",
            Code::Unavailable,
            "unknown",
        ),
        (
            Some(Fault::Status {
                http_status: 504,
                code: "REQUEST_TIMED_OUT".into(),
            }),
            "REQUEST_TIMED_OUT",
            Code::Unavailable,
            "unknown",
        ),
        (Some(Fault::ProxyHtml), "", Code::Unavailable, "unknown"),
        (
            Some(Fault::DropConnection),
            "",
            Code::Unavailable,
            "unknown",
        ),
    ];
    for (i, (fault, zenlayer_code, code, outcome)) in cases.into_iter().enumerate() {
        let before = upstream_count(app.admin_addr, outcome, zenlayer_code).await;
        if let Some(fault) = fault {
            app.simulator.fail_release(fault, 1);
        }
        let request_id = format!("fate-{i}-{}", Uuid::new_v4().simple());
        // Succeeds only for the fault-free case; each needs a releasable disk.
        app.simulator
            .put_disk(Disk::new(&request_id, DiskType::Data, DiskStatus::Recycled));
        let mut call = request(&request_id);
        call.metadata_mut()
            .insert("x-request-id", request_id.parse().unwrap());
        let audit_id = match disks.release_disk(call).await {
            Ok(response) => {
                assert_eq!(code, Code::Ok);
                response.into_inner().audit_id
            }
            Err(status) => {
                assert_eq!(status.code(), code, "{status:?}");
                status.get_details_error_info().unwrap().metadata["audit_id"].clone()
            }
        };
        let line = log_line(&request_id).await;
        assert_eq!(
            line["fields"]["outcome"], outcome,
            "log line of {request_id}"
        );
        let view: String =
            sqlx::query_scalar("SELECT outcome FROM audit.release_disk_calls WHERE call_id = $1")
                .bind(Uuid::parse_str(&audit_id).unwrap())
                .fetch_one(&app.db)
                .await
                .unwrap();
        assert_eq!(view, outcome, "audit view of {request_id}");
        let after = upstream_count(app.admin_addr, outcome, zenlayer_code).await;
        assert_eq!(after, before + 1, "upstream metric of {request_id}");
    }
}
