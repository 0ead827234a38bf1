//! The `/_simulator/` control endpoints, driven the way the `dev` command or
//! a staging operator would: plain JSON over HTTP.

use serde_json::{Value, json};

use super::{call, client};
use crate::simulator::{DiskStatus, SimulatorHandle};

async fn control(
    sim: &SimulatorHandle,
    method: reqwest::Method,
    endpoint: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let url = format!("{}/_simulator/{endpoint}", sim.base_url());
    let mut request = client().request(method, url);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test]
async fn faults_injected_over_http_apply_and_show_in_stats() {
    let sim = super::start().await;
    let fault = json!({ "fault": { "type": "status", "httpStatus": 500, "code": "INTERNAL_SERVER_ERROR" }, "times": 2 });
    let (status, _) = control(&sim, reqwest::Method::POST, "faults", Some(fault)).await;
    assert_eq!(status, 200);

    let answer = call(&sim, "ReleaseDisk", r#"{"diskId":"disk-recycled-data"}"#).await;
    assert_eq!(
        (answer.status, answer.code().as_str()),
        (500, "INTERNAL_SERVER_ERROR")
    );

    let (_, stats) = control(&sim, reqwest::Method::GET, "stats", None).await;
    assert_eq!(
        stats["requestsReceived"], 1,
        "control calls are not counted"
    );
    assert_eq!(stats["releaseDiskRequests"], 1);
    assert_eq!(stats["requestsByAction"], json!({ "ReleaseDisk": 1 }));
    assert_eq!(stats["pendingFaults"][0]["times"], 1);
    assert_eq!(
        stats["pendingFaults"][0]["fault"]["code"],
        "INTERNAL_SERVER_ERROR"
    );

    let (_, cleared) = control(&sim, reqwest::Method::DELETE, "faults", None).await;
    assert_eq!(cleared["pendingFaults"], json!([]));
    assert_eq!(call(&sim, "DescribeDisks", "{}").await.status, 200);
}

#[tokio::test]
async fn disks_can_be_listed_and_replaced_over_http() {
    let sim = super::start().await;
    let (_, listed) = control(&sim, reqwest::Method::GET, "disks", None).await;
    assert_eq!(listed["totalCount"], 7);

    let disk = json!({
        "diskId": "disk-in-use", "diskName": "moved", "zoneId": "SEL-A", "diskType": "DATA",
        "diskStatus": "RECYCLED", "chargeType": "POSTPAID", "diskSize": 100
    });
    let (status, stored) = control(&sim, reqwest::Method::POST, "disks", Some(disk)).await;
    assert_eq!(status, 200);
    assert_eq!(stored["disk"]["diskStatus"], "RECYCLED");
    assert_eq!(
        sim.disk("disk-in-use").unwrap().disk_status,
        DiskStatus::Recycled
    );
    let answer = call(&sim, "ReleaseDisk", r#"{"diskId":"disk-in-use"}"#).await;
    assert_eq!(answer.status, 200);
}

#[tokio::test]
async fn the_request_log_is_readable_over_http() {
    let sim = super::start().await;
    call(&sim, "DescribeDisks", r#"{"pageSize": 5}"#).await;
    let (_, log) = control(&sim, reqwest::Method::GET, "requests", None).await;
    let request = &log["requests"][0];
    assert_eq!(request["action"], "DescribeDisks");
    assert_eq!(request["body"], r#"{"pageSize": 5}"#);
    let headers = request["headers"].as_array().unwrap();
    assert!(headers.contains(&json!(["x-zc-action", "DescribeDisks"])));
}

#[tokio::test]
async fn malformed_control_calls_are_refused_without_side_effects() {
    let sim = super::start().await;
    let bad_status = json!({ "fault": { "type": "emptyBody", "httpStatus": 99 } });
    let (status, _) = control(&sim, reqwest::Method::POST, "faults", Some(bad_status)).await;
    assert_eq!(status, 400);
    let (status, _) = control(
        &sim,
        reqwest::Method::POST,
        "faults",
        Some(json!({ "fault": { "type": "meteor" } })),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = control(
        &sim,
        reqwest::Method::POST,
        "disks",
        Some(json!({ "diskId": "half" })),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = control(&sim, reqwest::Method::PUT, "stats", None).await;
    assert_eq!(status, 405);
    let (status, _) = control(&sim, reqwest::Method::GET, "nothing-here", None).await;
    assert_eq!(status, 404);
    assert_eq!(sim.disk("half"), None);
    assert_eq!(call(&sim, "DescribeDisks", "{}").await.status, 200);
}
