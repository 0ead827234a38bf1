//! ReleaseDisk, TerminateDisk and DescribeDisks as a signed client sees them.

use serde_json::json;

use super::{assert_request_id, call, start};
use crate::simulator::{Disk, DiskStatus, DiskType};

#[tokio::test]
async fn release_of_a_recycled_data_disk_succeeds_and_removes_it() {
    let sim = start().await;
    let answer = call(&sim, "ReleaseDisk", r#"{"diskId":"disk-recycled-data"}"#).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let json = answer.json();
    assert_request_id(&json["requestId"]);
    assert_eq!(json["response"], json!({ "requestId": json["requestId"] }));
    assert_eq!(sim.disk("disk-recycled-data"), None);

    let again = call(&sim, "ReleaseDisk", r#"{"diskId":"disk-recycled-data"}"#).await;
    assert_eq!(
        (again.status, again.code().as_str()),
        (404, "INVALID_DISK_NOT_FOUND")
    );
    assert_eq!(sim.release_disk_requests(), 2);
}

#[tokio::test]
async fn release_of_a_system_disk_is_refused_as_system_type() {
    let sim = start().await;
    let answer = call(&sim, "ReleaseDisk", r#"{"diskId":"disk-system"}"#).await;
    assert_eq!(
        (answer.status, answer.code().as_str()),
        (400, "UNSUPPORTED_OPERATION_DISK_SYSTEM_TYPE")
    );
    assert!(sim.disk("disk-system").is_some());
}

#[tokio::test]
async fn release_of_an_in_use_disk_is_refused_as_not_in_the_recycle_bin() {
    let sim = start().await;
    let answer = call(&sim, "ReleaseDisk", r#"{"diskId":"disk-in-use"}"#).await;
    assert_eq!(
        (answer.status, answer.code().as_str()),
        (400, "UNSUPPORTED_OPERATION_DISK_NOT_BEING_RECYCLE")
    );
    assert_eq!(
        sim.disk("disk-in-use").unwrap().disk_status,
        DiskStatus::InUse
    );
}

#[tokio::test]
async fn release_without_a_disk_id_or_with_a_non_json_body_is_a_parameter_error() {
    let sim = start().await;
    let missing = call(&sim, "ReleaseDisk", "{}").await;
    assert_eq!(
        (missing.status, missing.code().as_str()),
        (400, "MISSING_PARAMETER")
    );
    let wrong_type = call(&sim, "ReleaseDisk", r#"{"diskId": 42}"#).await;
    assert_eq!(wrong_type.code(), "INVALID_PARAMETER_TYPE");
    let not_json = call(&sim, "ReleaseDisk", "diskId=disk-recycled-data").await;
    assert_eq!(
        (not_json.status, not_json.code().as_str()),
        (400, "INVALID_PARAMETER_TYPE")
    );
    assert!(sim.disk("disk-recycled-data").is_some());
}

#[tokio::test]
async fn terminate_then_release_destroys_an_available_disk() {
    let sim = start().await;
    let body = r#"{"diskId":"disk-available"}"#;
    let early = call(&sim, "ReleaseDisk", body).await;
    assert_eq!(early.code(), "UNSUPPORTED_OPERATION_DISK_NOT_BEING_RECYCLE");

    let terminated = call(&sim, "TerminateDisk", body).await;
    assert_eq!(terminated.status, 200, "{}", terminated.text);
    assert_eq!(
        sim.disk("disk-available").unwrap().disk_status,
        DiskStatus::Recycled
    );
    let twice = call(&sim, "TerminateDisk", body).await;
    assert_eq!(twice.code(), "UNSUPPORTED_OPERATION_DISK_BEING_RECYCLE");

    assert_eq!(call(&sim, "ReleaseDisk", body).await.status, 200);
    assert_eq!(sim.disk("disk-available"), None);
}

#[tokio::test]
async fn terminate_refuses_system_attached_and_unknown_disks() {
    let sim = start().await;
    let system = call(&sim, "TerminateDisk", r#"{"diskId":"disk-system"}"#).await;
    assert_eq!(system.code(), "UNSUPPORTED_OPERATION_DISK_SYSTEM_TYPE");
    let attached = call(&sim, "TerminateDisk", r#"{"diskId":"disk-in-use"}"#).await;
    assert_eq!(
        (attached.status, attached.code().as_str()),
        (400, "UNSUPPORTED_OPERATION_DISK_STATUS")
    );
    let unknown = call(&sim, "TerminateDisk", r#"{"diskId":"nope"}"#).await;
    assert_eq!(
        (unknown.status, unknown.code().as_str()),
        (404, "INVALID_DISK_NOT_FOUND")
    );
}

#[tokio::test]
async fn describe_disks_filters_by_id_and_status_and_drops_released_disks() {
    let sim = start().await;
    let body =
        r#"{"diskIds": ["disk-recycled-data", "disk-in-use", "nope"], "diskStatus": "RECYCLED"}"#;
    let answer = call(&sim, "DescribeDisks", body).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let response = &answer.json()["response"];
    assert_request_id(&response["requestId"]);
    assert_eq!(response["totalCount"], 1);
    let disk = &response["dataSet"][0];
    assert_eq!(disk["diskId"], "disk-recycled-data");
    assert_eq!(disk["diskType"], "DATA");
    assert_eq!(disk["diskStatus"], "RECYCLED");
    assert_eq!(disk["chargeType"], "POSTPAID");
    assert!(disk["createTime"].as_str().unwrap().ends_with('Z'));

    call(&sim, "ReleaseDisk", r#"{"diskId":"disk-recycled-data"}"#).await;
    let after = call(&sim, "DescribeDisks", body).await.json();
    assert_eq!(after["response"]["totalCount"], 0);
    assert_eq!(after["response"]["dataSet"], json!([]));
}

#[tokio::test]
async fn describe_disks_pages_and_caps_page_size_at_1000() {
    let sim = start().await;
    sim.put_disk(Disk::new(
        "disk-zz-extra",
        DiskType::Data,
        DiskStatus::Available,
    ));
    let all = call(&sim, "DescribeDisks", "{}").await.json();
    let total = all["response"]["totalCount"].as_u64().unwrap();
    assert_eq!(total, 8);
    let page = call(&sim, "DescribeDisks", r#"{"pageSize": 3, "pageNum": 3}"#)
        .await
        .json();
    assert_eq!(page["response"]["totalCount"], 8);
    let ids: Vec<&str> = page["response"]["dataSet"]
        .as_array()
        .unwrap()
        .iter()
        .map(|disk| disk["diskId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["disk-system", "disk-zz-extra"]);
    let too_big = call(&sim, "DescribeDisks", r#"{"pageSize": 1001}"#).await;
    assert_eq!(
        (too_big.status, too_big.code().as_str()),
        (400, "INVALID_PARAMETER_EXCEED_MAXIMUM")
    );
}
