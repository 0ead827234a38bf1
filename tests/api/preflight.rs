//! The look before the release: what the disk was is recorded before it is
//! gone, and a disk that cannot or need not be released never gets a
//! `ReleaseDisk`.

use crate::helpers::{
    TestApp, assert_error, eventually, request, spawn_app, spawn_app_with_settings,
};
use serde_json::{Value, json};
use std::time::Duration;
use tonic::Code;
use tonic_types::StatusExt as _;
use uuid::Uuid;
use zenlayer_gateway::simulator::{Disk, DiskStatus, DiskType, Fault};

async fn view_row(app: &TestApp, audit_id: &str) -> Value {
    let id = Uuid::parse_str(audit_id).unwrap();
    eventually(
        Duration::from_secs(10),
        "the call's finished row",
        || async {
            let row: Value = sqlx::query_scalar(
                "SELECT row_to_json(c) FROM audit.release_disk_calls c WHERE call_id = $1",
            )
            .bind(id)
            .fetch_one(&app.db)
            .await
            .unwrap();
            (row["outcome"] != "pending").then_some(row)
        },
    )
    .await
}

fn audit_id(status: &tonic::Status) -> String {
    status.get_details_error_info().unwrap().metadata["audit_id"].clone()
}

#[tokio::test]
async fn the_disks_attributes_are_recorded_and_readable_after_it_is_gone() {
    let app = spawn_app().await;
    let mut disk = Disk::new("disk-pg-data", DiskType::Data, DiskStatus::Recycled)
        .tagged("team", "billing")
        .tagged("env", "prod");
    disk.disk_name = "billing-postgres-data".to_owned();
    disk.zone_id = "FRA-A".to_owned();
    disk.disk_size = 500;
    app.simulator.put_disk(disk);
    let response = app
        .release(request("disk-pg-data"))
        .await
        .unwrap()
        .into_inner();
    assert!(app.simulator.disk("disk-pg-data").is_none(), "released");
    let row = view_row(&app, &response.audit_id).await;
    assert_eq!(row["outcome"], "succeeded");
    assert_eq!(row["disk_name"], "billing-postgres-data");
    assert_eq!(row["zone_id"], "FRA-A");
    assert_eq!(row["disk_size_gib"], 500);
    assert_eq!(row["disk_type"], "DATA");
    assert_eq!(row["disk_status_before"], "RECYCLED");
    assert_eq!(row["disk_tags"], json!({"team": "billing", "env": "prod"}));
    assert_eq!(row["disk_snapshot"]["diskId"], "disk-pg-data");
    assert_eq!(row["disk_snapshot"]["diskCategory"], "Standard NVMe SSD");
    assert_eq!(row["zenlayer_action"], "ReleaseDisk");
    let describes = app.simulator.action_requests("DescribeDisks");
    assert_eq!((describes, app.simulator.release_disk_requests()), (1, 1));
}

#[tokio::test]
async fn nul_characters_in_what_zenlayer_sends_are_recorded_as_u_fffd_and_lose_nothing() {
    let app = spawn_app().await;
    let mut disk = Disk::new("disk-odd-tags", DiskType::Data, DiskStatus::Recycled)
        .tagged("team", "bill\0ing")
        .tagged("odd\0key", "x");
    disk.disk_name = "name\0with-nul".to_owned();
    app.simulator.put_disk(disk);
    let response = app
        .release(request("disk-odd-tags"))
        .await
        .expect("a NUL in the disk's attributes does not fail the audit write")
        .into_inner();
    assert!(app.simulator.disk("disk-odd-tags").is_none(), "released");
    let row = view_row(&app, &response.audit_id).await;
    assert_eq!(row["outcome"], "succeeded");
    assert_eq!(row["disk_name"], "name\u{FFFD}with-nul");
    assert_eq!(
        row["disk_tags"],
        json!({"team": "bill\u{FFFD}ing", "odd\u{FFFD}key": "x"})
    );
    assert_eq!(row["disk_snapshot"]["diskName"], "name\u{FFFD}with-nul");

    // Zenlayer's own code, with a NUL, on an answer to the release.
    app.simulator.fail_release(
        Fault::Status {
            http_status: 400,
            code: "ODD\0CODE".to_owned(),
        },
        1,
    );
    let status = app
        .release(request("disk-recycled-data"))
        .await
        .unwrap_err();
    let row = view_row(&app, &audit_id(&status)).await;
    assert_eq!(row["outcome"], "failed", "the outcome was recorded");
    assert_eq!(row["zenlayer_code"], "ODD\u{FFFD}CODE");
}

#[tokio::test]
async fn a_refusal_by_the_pre_flight_is_recorded_with_what_was_seen() {
    let app = spawn_app().await;
    let status = app.release(request("disk-in-use")).await.unwrap_err();
    assert_error(
        &status,
        Code::FailedPrecondition,
        "UNSUPPORTED_OPERATION_DISK_NOT_BEING_RECYCLE",
    );
    let row = view_row(&app, &audit_id(&status)).await;
    assert_eq!(row["decision"], "allowed");
    assert_eq!(row["outcome"], "failed");
    assert_eq!(row["grpc_code"], "FAILED_PRECONDITION");
    assert_eq!(row["zenlayer_action"], "DescribeDisks");
    assert_eq!(row["disk_status_before"], "IN_USE");
    assert_eq!(
        row["zenlayer_request_id"].as_str(),
        app.simulator.received_for("DescribeDisks")[0]
            .answered_request_id
            .as_deref()
    );
    let missing = app.release(request("disk-never-was")).await.unwrap_err();
    let row = view_row(&app, &audit_id(&missing)).await;
    assert_eq!(row["grpc_code"], "NOT_FOUND");
    assert_eq!(row["disk_snapshot"], Value::Null, "nothing was listed");
    assert_eq!(app.simulator.release_disk_requests(), 0);
}

#[tokio::test]
async fn a_describe_outage_refuses_with_nothing_released_and_leaves_the_key_free() {
    let app = spawn_app().await;
    app.simulator.fail_describe(
        Fault::Status {
            http_status: 500,
            code: "INTERNAL_SERVER_ERROR".into(),
        },
        100,
    );
    let mut call = request("disk-recycled-data");
    call.get_mut().idempotency_key = "through-an-outage".to_owned();
    let status = app.release(call).await.unwrap_err();
    let metadata = assert_error(&status, Code::Unavailable, "PREFLIGHT_UNAVAILABLE");
    assert_eq!(metadata["zenlayer_action"], "DescribeDisks");
    assert!(
        status.message().contains("nothing was released"),
        "{}",
        status.message()
    );
    assert!(
        app.simulator.action_requests("DescribeDisks") > 1,
        "a read is retried on a 5xx"
    );
    assert_eq!(app.simulator.release_disk_requests(), 0);
    let row = view_row(&app, &audit_id(&status)).await;
    assert_eq!(
        (row["outcome"].as_str(), row["grpc_code"].as_str()),
        (Some("failed"), Some("UNAVAILABLE"))
    );

    app.simulator.clear_faults();
    let mut retry = request("disk-recycled-data");
    retry.get_mut().idempotency_key = "through-an-outage".to_owned();
    let released = app.release(retry).await.unwrap().into_inner();
    assert!(
        !released.replayed,
        "the key was never taken by the refused call"
    );
    assert_eq!(app.simulator.release_disk_requests(), 1);
}

#[tokio::test]
async fn a_describe_that_fails_once_is_retried_and_the_release_goes_ahead() {
    let app = spawn_app().await;
    app.simulator.fail_describe(Fault::ProxyHtml, 1);
    app.release(request("disk-recycled-data")).await.unwrap();
    assert_eq!(app.simulator.action_requests("DescribeDisks"), 2);
    assert_eq!(app.simulator.release_disk_requests(), 1);
}

#[tokio::test]
async fn without_the_pre_flight_the_release_is_sent_unlooked_and_zenlayer_decides() {
    let app = spawn_app_with_settings(&[("ZENLAYER_PREFLIGHT", "false")]).await;
    let response = app
        .release(request("disk-recycled-data"))
        .await
        .unwrap()
        .into_inner();
    let status = app.release(request("disk-in-use")).await.unwrap_err();
    let metadata = assert_error(
        &status,
        Code::FailedPrecondition,
        "UNSUPPORTED_OPERATION_DISK_NOT_BEING_RECYCLE",
    );
    assert_eq!(metadata["http_status"], "400", "Zenlayer's own answer");
    assert_eq!(app.simulator.action_requests("DescribeDisks"), 0);
    let row = view_row(&app, &response.audit_id).await;
    assert_eq!(row["disk_snapshot"], Value::Null);
    assert_eq!(row["outcome"], "succeeded");
}
