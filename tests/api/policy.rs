//! Cedar policies decide on the caller, the disk as the pre-flight saw it
//! and the call's context; every decision is recorded, and a refused call
//! never reaches Zenlayer's `ReleaseDisk`.

use crate::helpers::{
    AppOptions, TestApp, assert_error, captured_logs, eventually, request, settings_for_build,
    spawn_app_with,
};
use crate::tokens::{RSA, bearer, good_claims};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::Code;
use tonic_types::StatusExt as _;
use uuid::Uuid;
use zenlayer_gateway::pb::ReleaseDiskRequest;
use zenlayer_gateway::simulator::{Disk, DiskStatus, DiskType};

const EXAMPLES: &str = "deploy/policies/gateway.cedar";

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(EXAMPLES)
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A release by a caller in `groups`, with `reason`.
fn release_by(groups: &[&str], disk_id: &str, reason: &str) -> tonic::Request<ReleaseDiskRequest> {
    let mut claims = good_claims();
    claims["groups"] = json!(groups);
    let mut call = request(disk_id);
    call.get_mut().reason = reason.to_owned();
    call.metadata_mut()
        .insert("authorization", bearer(&RSA.sign(&claims)));
    call
}

fn recycled(disk_id: &str, zone: &str, tags: &[(&str, &str)]) -> Disk {
    let mut disk = Disk::new(disk_id, DiskType::Data, DiskStatus::Recycled);
    disk.zone_id = zone.to_owned();
    tags.iter()
        .fold(disk, |disk, (key, value)| disk.tagged(key, value))
}

async fn spawn_with(settings: &[(&str, &str)]) -> TestApp {
    spawn_app_with(AppOptions {
        settings: settings
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..Default::default()
    })
    .await
}

async fn spawn_with_examples() -> TestApp {
    let file = examples();
    spawn_with(&[("GATEWAY_POLICY_FILE", file.to_str().unwrap())]).await
}

async fn call_row(app: &TestApp, audit_id: &str) -> Value {
    let id = Uuid::parse_str(audit_id).unwrap();
    eventually(
        Duration::from_secs(10),
        "the call's finished row",
        || async {
            let row: Value = sqlx::query_scalar(
                "SELECT row_to_json(c) FROM audit.release_disk_calls c WHERE call_id = $1",
            )
            .bind(id)
            .fetch_optional(&app.db)
            .await
            .unwrap()?;
            (row["outcome"] != "pending").then_some(row)
        },
    )
    .await
}

/// Asserts a refusal by policy `ids`, recorded with the disk as seen and
/// nothing sent to Zenlayer's ReleaseDisk; returns the audit row.
async fn assert_policy_denied(app: &TestApp, status: &tonic::Status, ids: &str) -> Value {
    let metadata = assert_error(status, Code::PermissionDenied, "POLICY_DENIED");
    assert_eq!(metadata["policy_ids"], ids, "{status:?}");
    let row = call_row(app, &metadata["audit_id"]).await;
    assert_eq!(row["decision"], "denied");
    assert_eq!(row["decision_reason"], "POLICY_DENIED");
    assert_eq!(row["outcome"], "failed");
    assert_eq!(row["grpc_code"], "PERMISSION_DENIED");
    assert_eq!(row["policy_decision"], "deny");
    let recorded = row["policy_ids"].as_array().unwrap();
    let recorded = recorded
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect::<Vec<_>>();
    assert_eq!(recorded.join(","), ids);
    assert_eq!(
        app.simulator.release_disk_requests(),
        0,
        "nothing was released"
    );
    row
}

#[tokio::test]
async fn without_a_policy_file_the_default_policy_permits_and_is_recorded() {
    let app = spawn_with(&[]).await;
    let response = app
        .release(request("disk-recycled-data"))
        .await
        .unwrap()
        .into_inner();
    let row = call_row(&app, &response.audit_id).await;
    assert_eq!(row["outcome"], "succeeded");
    assert_eq!(row["policy_decision"], "permit");
    assert_eq!(row["policy_ids"], json!(["release-role"]));
    let default = zenlayer_gateway::policy::default_policy_text("disk:release", "disk:audit");
    assert_eq!(row["policy_set_hash"], sha256_hex(default.as_bytes()));
    assert!(row["shadow_policy_decision"].is_null());
}

#[tokio::test]
async fn a_protected_disk_is_refused_until_its_tag_changes() {
    let app = spawn_with_examples().await;
    let tags = [("team", "billing"), ("protected", "true")];
    app.simulator
        .put_disk(recycled("disk-guarded", "HKG-A", &tags));
    let status = app
        .release(release_by(&["billing"], "disk-guarded", "cleanup"))
        .await
        .unwrap_err();
    let row = assert_policy_denied(&app, &status, "never-release-protected").await;
    assert_eq!(
        row["disk_tags"]["protected"], "true",
        "the disk as seen is recorded"
    );
    let file = std::fs::read(examples()).unwrap();
    assert_eq!(row["policy_set_hash"], sha256_hex(&file));
    assert!(app.simulator.disk("disk-guarded").is_some());

    let tags = [("team", "billing"), ("protected", "false")];
    app.simulator
        .put_disk(recycled("disk-guarded", "HKG-A", &tags));
    let response = app
        .release(release_by(&["billing"], "disk-guarded", "cleanup"))
        .await
        .unwrap()
        .into_inner();
    let row = call_row(&app, &response.audit_id).await;
    assert_eq!(
        (row["outcome"].as_str(), row["policy_decision"].as_str()),
        (Some("succeeded"), Some("permit"))
    );
    assert!(app.simulator.disk("disk-guarded").is_none(), "released");
}

#[tokio::test]
async fn a_team_releases_only_disks_tagged_with_one_of_its_groups() {
    let app = spawn_with_examples().await;
    app.simulator
        .put_disk(recycled("disk-search", "HKG-A", &[("team", "search")]));
    app.simulator
        .put_disk(recycled("disk-untagged", "HKG-A", &[]));
    for disk in ["disk-search", "disk-untagged"] {
        let status = app
            .release(release_by(&["billing", "oncall"], disk, "cleanup"))
            .await
            .unwrap_err();
        assert_policy_denied(&app, &status, "team-owns-disk").await;
    }
    app.release(release_by(&["search"], "disk-search", "cleanup"))
        .await
        .expect("a member of the disk's team releases it");
    assert_eq!(app.simulator.release_disk_requests(), 1);
}

#[tokio::test]
async fn a_production_disk_without_a_change_ticket_is_refused() {
    let app = spawn_with_examples().await;
    app.simulator
        .put_disk(recycled("disk-prod", "FRA-A", &[("team", "billing")]));
    let status = app
        .release(release_by(
            &["billing"],
            "disk-prod",
            "remove leftover volume",
        ))
        .await
        .unwrap_err();
    assert_policy_denied(&app, &status, "production-needs-ticket-and-window").await;
}

#[tokio::test]
async fn with_the_pre_flight_off_the_policies_see_only_the_disk_id() {
    let file = examples();
    let app = spawn_with(&[
        ("GATEWAY_POLICY_FILE", file.to_str().unwrap()),
        ("ZENLAYER_PREFLIGHT", "false"),
    ])
    .await;
    let status = app
        .release(release_by(&["billing"], "disk-recycled-data", "no ticket"))
        .await
        .unwrap_err();
    let ids = "never-release-protected,production-needs-ticket-and-window,team-owns-disk";
    assert_policy_denied(&app, &status, ids).await;
    assert_eq!(app.simulator.requests_received(), 0);
}

#[tokio::test]
async fn a_policy_that_cannot_be_evaluated_denies_with_policy_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policies.cedar");
    std::fs::write(
        &path,
        r#"@id("permit-all") permit (principal, action, resource);
@id("overflows")
forbid (principal, action == Action::"ReleaseDisk", resource is Disk)
when { resource has size_gib && resource.size_gib * 9223372036854775807 > 0 };
"#,
    )
    .unwrap();
    let app = spawn_with(&[("GATEWAY_POLICY_FILE", path.to_str().unwrap())]).await;
    let status = app
        .release(request("disk-recycled-data"))
        .await
        .unwrap_err();
    let metadata = assert_error(&status, Code::PermissionDenied, "POLICY_ERROR");
    assert_eq!(metadata["policy_ids"], "overflows");
    let row = call_row(&app, &metadata["audit_id"]).await;
    assert_eq!(row["decision_reason"], "POLICY_ERROR");
    assert_eq!(row["policy_decision"], "error");
    assert_eq!(row["policy_ids"], json!(["overflows"]));
    assert_eq!(app.simulator.release_disk_requests(), 0);
    assert!(captured_logs().contains("a policy could not be evaluated"));
}

#[tokio::test]
async fn shadow_decisions_are_recorded_and_disagreements_counted() {
    let shadow = examples();
    let app = spawn_with(&[("GATEWAY_POLICY_SHADOW_FILE", shadow.to_str().unwrap())]).await;
    let tags = [("team", "billing"), ("protected", "true")];
    app.simulator
        .put_disk(recycled("disk-shadowed", "HKG-A", &tags));
    app.simulator
        .put_disk(recycled("disk-agreed", "HKG-A", &[("team", "billing")]));
    let disagreed = app
        .release(release_by(&["billing"], "disk-shadowed", "cleanup"))
        .await
        .expect("the shadow set is never enforced")
        .into_inner();
    let agreed = app
        .release(release_by(&["billing"], "disk-agreed", "cleanup"))
        .await
        .unwrap()
        .into_inner();
    let first = call_row(&app, &disagreed.audit_id).await;
    assert_eq!(first["policy_decision"], "permit");
    assert_eq!(first["shadow_policy_decision"], "deny");
    assert_eq!(
        first["shadow_policy_ids"],
        json!(["never-release-protected"])
    );
    let file = std::fs::read(&shadow).unwrap();
    assert_eq!(first["shadow_policy_set_hash"], sha256_hex(&file));
    let second = call_row(&app, &agreed.audit_id).await;
    assert_eq!(second["shadow_policy_decision"], "permit");
    let metrics = reqwest::get(format!("http://{}/metrics", app.admin_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let counted =
        r#"zenlayer_gateway_policy_shadow_disagreements_total{enforced="permit",shadow="deny"} 1"#;
    assert!(metrics.contains(counted), "{metrics}");
    assert_eq!(
        metrics
            .matches("policy_shadow_disagreements_total{")
            .count(),
        1
    );
}

/// Replaces `path` the way deploy tools do: a new file renamed over it.
fn replace(path: &Path, text: &str) {
    let next = path.with_extension("next");
    std::fs::write(&next, text).unwrap();
    std::fs::rename(&next, path).unwrap();
}

/// Waits until the gateway's log says `what` about `path`.
async fn logged(path: &Path, what: &str) {
    let path = path.display().to_string();
    eventually(Duration::from_secs(10), what, || async {
        captured_logs()
            .lines()
            .any(|line| line.contains(&path) && line.contains(what))
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_replaced_policy_file_takes_effect_without_a_restart_and_a_broken_one_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policies.cedar");
    let permissive = zenlayer_gateway::policy::default_policy_text("disk:release", "disk:audit");
    std::fs::write(&path, &permissive).unwrap();
    let app = spawn_with(&[
        ("GATEWAY_POLICY_FILE", path.to_str().unwrap()),
        ("GATEWAY_POLICY_RELOAD_INTERVAL_MS", "20"),
    ])
    .await;
    app.simulator.put_disk(recycled("disk-one", "HKG-A", &[]));
    app.simulator.put_disk(recycled("disk-two", "HKG-A", &[]));

    replace(&path, "permit (principal, action resource);");
    logged(&path, "cannot be loaded").await;
    let kept = app
        .release(request("disk-one"))
        .await
        .expect("the old set stays")
        .into_inner();
    assert_eq!(
        call_row(&app, &kept.audit_id).await["policy_set_hash"],
        sha256_hex(permissive.as_bytes())
    );

    let strict = format!(
        "{permissive}\n@id(\"stop-all\")\nforbid (principal, action == Action::\"ReleaseDisk\", resource);\n"
    );
    replace(&path, &strict);
    logged(&path, "calls from now on are decided by the new policies").await;
    let status = app.release(request("disk-two")).await.unwrap_err();
    let row = assert_policy_denied_after(&app, &status, "stop-all").await;
    assert_eq!(row["policy_set_hash"], sha256_hex(strict.as_bytes()));
    assert!(app.simulator.disk("disk-two").is_some());
}

/// As [`assert_policy_denied`], for a test that released something before.
async fn assert_policy_denied_after(app: &TestApp, status: &tonic::Status, ids: &str) -> Value {
    let released = app.simulator.release_disk_requests();
    let metadata = assert_error(status, Code::PermissionDenied, "POLICY_DENIED");
    assert_eq!(metadata["policy_ids"], ids);
    let row = call_row(app, &metadata["audit_id"]).await;
    assert_eq!(row["policy_decision"], "deny");
    assert_eq!(app.simulator.release_disk_requests(), released);
    row
}

#[tokio::test]
async fn a_policy_file_that_does_not_validate_stops_start_up_naming_the_policy_and_position() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policies.cedar");
    std::fs::write(
        &path,
        "@id(\"fine\")\npermit (principal, action == Action::\"ReleaseDisk\", resource);\n\n@id(\"typo\")\nforbid (principal, action, resource is Disk)\n  when { resource.zonee == \"FRA-A\" };\n",
    )
    .unwrap();
    let settings = settings_for_build(&[("GATEWAY_POLICY_FILE", path.to_str().unwrap())]).await;
    let error = zenlayer_gateway::startup::Application::build(settings)
        .await
        .expect_err("a bad policy file stops start-up");
    let message = format!("{error:#}");
    assert!(message.contains("GATEWAY_POLICY_FILE"), "{message}");
    assert!(
        message.contains("policy typo, line 6, column 10"),
        "{message}"
    );
}

#[tokio::test]
async fn the_caller_sees_which_policy_refused_it_in_the_error_details() {
    let app = spawn_with_examples().await;
    let tags = [("team", "billing"), ("protected", "true")];
    app.simulator
        .put_disk(recycled("disk-details", "HKG-A", &tags));
    let status = app
        .release(release_by(&["billing"], "disk-details", "cleanup"))
        .await
        .unwrap_err();
    assert!(
        status.message().contains("never-release-protected"),
        "{status:?}"
    );
    let info = status.get_details_error_info().unwrap();
    assert_eq!(info.metadata["policy_ids"], "never-release-protected");
}
