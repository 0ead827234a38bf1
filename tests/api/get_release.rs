//! `GetRelease`: a caller reads back its own calls, the audit role reads
//! any, and nobody learns that someone else's call exists.

use crate::helpers::{
    AppOptions, TestApp, assert_error, eventually, request, spawn_app, spawn_app_with,
};
use crate::tokens::{RSA, bearer, good_claims, good_token};
use serde_json::json;
use std::time::Duration;
use tonic::{Code, Request, Status};
use tonic_types::StatusExt as _;
use zenlayer_gateway::pb::{GetReleaseRequest, Release};
use zenlayer_gateway::simulator::{Disk, DiskStatus, DiskType, Fault};

fn token_for(subject: &str, roles: &[&str]) -> String {
    let mut claims = good_claims();
    claims["sub"] = json!(subject);
    claims["roles"] = json!(roles);
    RSA.sign(&claims)
}

async fn get(app: &TestApp, token: Option<&str>, audit_id: &str) -> Result<Release, Status> {
    let mut call = Request::new(GetReleaseRequest {
        audit_id: audit_id.to_owned(),
    });
    if let Some(token) = token {
        call.metadata_mut().insert("authorization", bearer(token));
    }
    app.disks()
        .await
        .get_release(call)
        .await
        .map(|r| r.into_inner())
}

#[tokio::test]
async fn a_caller_reads_its_own_release_with_the_disk_as_it_was() {
    let app = spawn_app().await;
    let disk =
        Disk::new("disk-read-back", DiskType::Data, DiskStatus::Recycled).tagged("team", "billing");
    app.simulator.put_disk(disk);
    let released = app
        .release(request("disk-read-back"))
        .await
        .unwrap()
        .into_inner();
    let release = get(&app, Some(&good_token()), &released.audit_id)
        .await
        .unwrap();
    assert_eq!(release.audit_id, released.audit_id);
    assert_eq!(release.disk_id, "disk-read-back");
    assert_eq!(release.decision, "allowed");
    assert_eq!(release.outcome, "succeeded");
    assert_eq!(release.outcome_recorded_by, "call");
    assert_eq!(release.zenlayer_request_id, released.request_id);
    assert_eq!(release.zenlayer_action, "ReleaseDisk");
    assert_eq!(release.reason, "CHG-1234 remove leftover volume");
    assert!(!release.received_at.is_empty() && !release.completed_at.is_empty());
    let disk = release.disk.expect("the snapshot");
    assert_eq!(disk.disk_status, "RECYCLED");
    assert_eq!(disk.tags["team"], "billing");
    assert!(disk.entry_json.contains("\"diskId\":\"disk-read-back\""));
    assert!(
        ["pending", "confirmed"].contains(&release.confirmation.as_str()),
        "{}",
        release.confirmation
    );
}

#[tokio::test]
async fn another_callers_release_and_a_missing_one_are_both_not_found() {
    let app = spawn_app().await;
    let released = app
        .release(request("disk-recycled-data"))
        .await
        .unwrap()
        .into_inner();
    let stranger = token_for("someone-else", &["disk:release"]);
    let foreign = get(&app, Some(&stranger), &released.audit_id)
        .await
        .unwrap_err();
    assert_error(&foreign, Code::NotFound, "RELEASE_NOT_FOUND");
    let missing_id = uuid::Uuid::now_v7().to_string();
    let missing = get(&app, Some(&good_token()), &missing_id)
        .await
        .unwrap_err();
    assert_error(&missing, Code::NotFound, "RELEASE_NOT_FOUND");
    assert_eq!(
        foreign.message().replace(&released.audit_id, "ID"),
        missing.message().replace(&missing_id, "ID"),
        "the two answers cannot be told apart"
    );
    let info = foreign.get_details_error_info().unwrap();
    assert!(
        !info.metadata.contains_key("audit_id"),
        "a read is not audited"
    );
}

#[tokio::test]
async fn the_audit_role_reads_any_release() {
    let app = spawn_app().await;
    let released = app
        .release(request("disk-recycled-data"))
        .await
        .unwrap()
        .into_inner();
    let auditor = token_for("security-team", &["disk:audit"]);
    let release = get(&app, Some(&auditor), &released.audit_id).await.unwrap();
    assert_eq!(release.principal, crate::tokens::SUBJECT);
    assert_eq!(release.outcome, "succeeded");
}

#[tokio::test]
async fn a_bad_id_or_no_token_is_refused_with_what_to_fix() {
    let app = spawn_app().await;
    let bad = get(&app, Some(&good_token()), "not-a-uuid")
        .await
        .unwrap_err();
    assert_error(&bad, Code::InvalidArgument, "INVALID_AUDIT_ID");
    // A huge "id" is not echoed whole into the status's message header.
    let huge = get(&app, Some(&good_token()), &"x".repeat(10_000))
        .await
        .unwrap_err();
    assert_error(&huge, Code::InvalidArgument, "INVALID_AUDIT_ID");
    assert!(huge.message().len() < 400, "{}", huge.message().len());
    let anonymous = get(&app, None, &uuid::Uuid::now_v7().to_string())
        .await
        .unwrap_err();
    assert_error(&anonymous, Code::Unauthenticated, "TOKEN_MISSING");
}

#[tokio::test]
async fn a_caller_told_outcome_unknown_polls_until_the_outcome_is_known() {
    let app = spawn_app_with(AppOptions {
        settings: [
            ("GATEWAY_FOLLOW_UP_INTERVAL_MS", "50"),
            ("GATEWAY_RECONCILE_AFTER_MS", "200"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
        ..Default::default()
    })
    .await;
    app.simulator.fail_release(Fault::ActThenDrop, 1);
    let status = app
        .release(request("disk-recycled-data"))
        .await
        .unwrap_err();
    let audit_id = assert_error(&status, Code::Unavailable, "OUTCOME_UNKNOWN")["audit_id"].clone();
    let first = get(&app, Some(&good_token()), &audit_id).await.unwrap();
    assert_eq!(first.outcome, "unknown");
    let known = eventually(Duration::from_secs(20), "a known outcome", || async {
        let release = get(&app, Some(&good_token()), &audit_id).await.unwrap();
        (release.outcome != "unknown").then_some(release)
    })
    .await;
    assert_eq!(known.outcome, "succeeded");
    assert_eq!(known.outcome_recorded_by, "reconciliation");
}
