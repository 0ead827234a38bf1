//! `audit export`, the real binary, as an `audit_reader` login and nothing
//! more: a trail built through real calls exports as OCSF API Activity that
//! the schema's own definitions accept, `--after` resumes exactly, and
//! `--follow` sees a new call within a second.

use crate::helpers::{
    TestApp, assert_error, eventually, login_in, request, spawn_app, spawn_app_with_settings,
    unauthenticated_request,
};
use crate::ocsf::Schema;
use crate::tokens;
use serde_json::Value;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt as _, BufReader, Lines};
use tokio::process::{ChildStdout, Command};
use tonic::Code;
use uuid::Uuid;
use zenlayer_gateway::simulator::{Disk, DiskStatus, DiskType, Fault};

/// A login that is a member of `audit_reader` and nothing else, as the
/// README tells security teams to create.
const READER_LOGIN: &str = "audit_reader_test";

async fn reader_url(app: &TestApp) -> String {
    login_in(&app.db, &app.database_url, READER_LOGIN, "audit_reader").await
}

fn export_command(database_url: &str, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_zenlayer-gateway"));
    command
        .args(["audit", "export"])
        .args(args)
        .env_clear()
        .env("DATABASE_URL", database_url)
        .env("GATEWAY_LOG_FORMAT", "json")
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    command
}

/// Runs an export to its end and returns its lines, parsed.
async fn export(database_url: &str, args: &[&str]) -> Vec<Value> {
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        export_command(database_url, args).output(),
    )
    .await
    .expect("the export ends")
    .expect("run the export");
    assert!(
        output.status.success(),
        "audit export {args:?}: {}",
        output.status
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).expect("every line is one JSON object"))
        .collect()
}

async fn event_count(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM audit.events")
        .fetch_one(&app.db)
        .await
        .unwrap()
}

/// Waits until the follow-up has confirmed the release `confirmed` and, when
/// given, reconciled the unknown outcome of `reconciled`.
async fn follow_up_done(app: &TestApp, confirmed: &str, reconciled: Option<&str>) {
    let expected = 1 + i64::from(reconciled.is_some());
    eventually(
        Duration::from_secs(20),
        "the follow-up's verdicts",
        || async {
            let settled: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM audit.release_disk_calls
             WHERE (call_id = $1 AND confirmation = 'confirmed')
                OR (call_id = $2 AND outcome_recorded_by = 'reconciliation')",
            )
            .bind(Uuid::parse_str(confirmed).unwrap())
            .bind(reconciled.map(|id| Uuid::parse_str(id).unwrap()))
            .fetch_one(&app.db)
            .await
            .unwrap();
            (settled == expected).then_some(())
        },
    )
    .await;
}

/// The audit id a call was answered with, in its response or its error.
fn audit_id_of(
    result: Result<tonic::Response<zenlayer_gateway::pb::ReleaseDiskResponse>, tonic::Status>,
) -> String {
    use tonic_types::StatusExt as _;
    match result {
        Ok(response) => response.into_inner().audit_id,
        Err(status) => status.get_details_error_info().unwrap().metadata["audit_id"].clone(),
    }
}

/// The events of one call, in log order.
fn of_call<'a>(events: &'a [Value], audit_id: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["api"]["request"]["uid"] == audit_id)
        .collect()
}

#[tokio::test]
async fn a_trail_of_real_calls_exports_as_ocsf_api_activity_the_schema_accepts() {
    let app = spawn_app_with_settings(&[
        ("GATEWAY_FOLLOW_UP_INTERVAL_MS", "100"),
        ("GATEWAY_RECONCILE_AFTER_MS", "200"),
    ])
    .await;
    let released = audit_id_of(app.release(request("disk-recycled-data")).await);
    let refused = app
        .release(unauthenticated_request("disk-available"))
        .await
        .unwrap_err();
    let refused =
        assert_error(&refused, Code::Unauthenticated, "TOKEN_MISSING")["audit_id"].clone();
    let looked = app.release(request("disk-in-use")).await.unwrap_err();
    let looked = assert_error(
        &looked,
        Code::FailedPrecondition,
        "UNSUPPORTED_OPERATION_DISK_NOT_BEING_RECYCLE",
    )["audit_id"]
        .clone();
    app.simulator.put_disk(Disk::new(
        "disk-unanswered",
        DiskType::Data,
        DiskStatus::Recycled,
    ));
    app.simulator.fail_release(
        Fault::Status {
            http_status: 500,
            code: "INTERNAL_SERVER_ERROR".into(),
        },
        1,
    );
    let unknown = audit_id_of(app.release(request("disk-unanswered")).await);
    // The follow-up confirms the release and reconciles the unknown outcome.
    follow_up_done(&app, &released, Some(&unknown)).await;

    // An operator's freeze and unfreeze: events of the log, of no call.
    sqlx::raw_sql(
        "INSERT INTO audit.release_freezes (action, reason, operator)
         VALUES ('freeze', 'drill', ''), ('unfreeze', 'drill over', '')",
    )
    .execute(&app.db)
    .await
    .unwrap();

    let events = export(&reader_url(&app).await, &["--format", "ocsf"]).await;

    let schema = Schema::load();
    assert_eq!(schema.version, "1.8.0");
    for event in &events {
        let problems = schema.validate("api_activity", event);
        assert!(problems.is_empty(), "{problems:#?}\nin {event:#}");
        assert_eq!(event["metadata"]["version"], schema.version);
        let update = event["metadata"]["event_code"] == "freeze";
        assert_eq!(event["type_uid"], if update { 600303 } else { 600304 });
    }
    let freezes: Vec<&str> = events
        .iter()
        .filter(|e| e["metadata"]["event_code"] == "freeze")
        .map(|e| e["api"]["operation"].as_str().unwrap())
        .collect();
    assert_eq!(freezes, ["FreezeReleases", "UnfreezeReleases"]);
    let sequence: Vec<i64> = events
        .iter()
        .map(|e| e["metadata"]["sequence"].as_i64().unwrap())
        .collect();
    assert_eq!(
        sequence,
        (0..event_count(&app).await).collect::<Vec<_>>(),
        "every event, in log order"
    );

    let kinds = |id: &str| -> Vec<(String, i64)> {
        of_call(&events, id)
            .iter()
            .map(|e| {
                (
                    e["metadata"]["event_code"].as_str().unwrap().to_owned(),
                    e["status_id"].as_i64().unwrap(),
                )
            })
            .collect()
    };
    let kind = |k: &str, s: i64| (k.to_owned(), s);
    assert_eq!(
        kinds(&released),
        [
            kind("attempt", 99),
            kind("outcome", 1),
            kind("confirmation", 1)
        ]
    );
    assert_eq!(kinds(&refused), [kind("attempt", 2)]);
    assert_eq!(kinds(&looked), [kind("attempt", 99), kind("outcome", 2)]);
    assert_eq!(
        kinds(&unknown),
        [kind("attempt", 99), kind("outcome", 0), kind("outcome", 2)]
    );

    let release = of_call(&events, &released)[1];
    assert_eq!(release["actor"]["user"]["uid"], tokens::SUBJECT);
    assert_eq!(release["actor"]["idp"]["issuer"], tokens::ISSUER);
    assert_eq!(
        release["actor"]["user"]["groups"][0]["name"],
        tokens::RELEASE_ROLE
    );
    assert_eq!(release["actor"]["authorizations"][0]["decision"], "allowed");
    assert_eq!(release["api"]["operation"], "ReleaseDisk");
    assert_eq!(release["api"]["response"]["code"], 0);
    assert_eq!(
        release["api"]["response"]["data"]["zenlayer_action"],
        "ReleaseDisk"
    );
    assert_eq!(release["resources"][0]["uid"], "disk-recycled-data");
    assert_eq!(release["resources"][0]["data"]["disk_type"], "DATA");
    assert_eq!(release["src_endpoint"]["ip"], "127.0.0.1");
    assert_eq!(release["severity_id"], 1);
    let trace_id: String =
        sqlx::query_scalar("SELECT trace_id FROM audit.release_attempts WHERE call_id = $1")
            .bind(Uuid::parse_str(&released).unwrap())
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(release["metadata"]["correlation_uid"], trace_id);

    let refusal = of_call(&events, &refused)[0];
    assert_eq!(refusal["actor"]["user"]["name"], "unauthenticated");
    assert_eq!(refusal["api"]["response"]["error"], "TOKEN_MISSING");
    assert_eq!(
        refusal["api"]["response"]["code"],
        Code::Unauthenticated as i32
    );
    assert_eq!(refusal["status_code"], "UNAUTHENTICATED");
    assert_eq!(refusal["severity_id"], 3);

    let preflight = of_call(&events, &looked)[1];
    assert_eq!(
        preflight["api"]["response"]["error"],
        "UNSUPPORTED_OPERATION_DISK_NOT_BEING_RECYCLE"
    );
    assert_eq!(
        preflight["api"]["response"]["data"]["zenlayer_action"],
        "DescribeDisks"
    );
    assert_eq!(preflight["resources"][0]["data"]["status_before"], "IN_USE");

    // The validator is not a rubber stamp: it rejects what OCSF does not allow.
    let mut broken = release.clone();
    broken.as_object_mut().unwrap().remove("actor");
    broken["status_id"] = 7.into();
    broken["severity"] = "Critical".into();
    broken["api"]["request"]["bogus"] = true.into();
    broken["src_endpoint"]["port"] = 70000.into();
    broken["metadata"]["profiles"] = serde_json::json!([]);
    let problems = schema.validate("api_activity", &broken);
    for expected in [
        "actor: required",
        "status_id: 7",
        "severity_id: 1 is",
        "api.request.bogus: not an attribute",
        "src_endpoint.port: 70000",
        "resources[0].zone: belongs to profile",
    ] {
        assert!(
            problems.iter().any(|p| p.starts_with(expected)),
            "{expected:?} not in {problems:#?}"
        );
    }

    let unanswered = of_call(&events, &unknown);
    assert_eq!(
        unanswered[1]["api"]["response"]["data"]["zenlayer_code"],
        "INTERNAL_SERVER_ERROR"
    );
    assert_eq!(unanswered[1]["severity_id"], 3);
    assert_eq!(
        unanswered[2]["unmapped"]["outcome_recorded_by"],
        "reconciliation"
    );
}

#[tokio::test]
async fn an_export_resumed_after_any_cursor_neither_skips_nor_repeats() {
    let app = spawn_app_with_settings(&[("GATEWAY_FOLLOW_UP_INTERVAL_MS", "100")]).await;
    let released = audit_id_of(app.release(request("disk-recycled-data")).await);
    for disk in ["disk-in-use", "disk-system"] {
        let _ = app.release(request(disk)).await;
    }
    let _ = app.release(unauthenticated_request("disk-available")).await;
    // Every export below must see the same trail: the release's confirmation,
    // the one event still to come, is awaited first.
    follow_up_done(&app, &released, None).await;
    let url = reader_url(&app).await;
    // Pages of two, so that every resume also crosses page boundaries.
    let all = export(&url, &["--format", "jsonl", "--page-size", "2"]).await;
    let indexes: Vec<i64> = all
        .iter()
        .map(|e| e["log_index"].as_i64().unwrap())
        .collect();
    assert_eq!(indexes, (0..event_count(&app).await).collect::<Vec<_>>());
    assert!(
        all.len() >= 8,
        "three attempts with outcomes, a confirmation and a refusal: {all:#?}"
    );
    for line in &all {
        assert!(line["attempt"]["call_id"] == line["call_id"], "{line}");
        match line["kind"].as_str().unwrap() {
            "attempt" => assert!(line.get("outcome").is_none() && line["row_id"].is_null()),
            "outcome" => assert_eq!(line["row_id"], line["outcome"]["outcome_id"]),
            "confirmation" => {
                assert_eq!(line["call_id"], released);
                assert_eq!(line["row_id"], line["confirmation"]["confirmation_id"]);
            }
            other => panic!("unexpected kind {other}"),
        }
        // Every attempt column is present, null or not, the policies' too.
        for column in [
            "policy_set_hash",
            "policy_decision",
            "policy_ids",
            "shadow_policy_set_hash",
            "shadow_policy_decision",
            "shadow_policy_ids",
        ] {
            assert!(line["attempt"].get(column).is_some(), "{column}: {line}");
        }
    }
    let released_attempt = &all
        .iter()
        .find(|e| e["call_id"] == released)
        .expect("the release's events")["attempt"];
    assert_eq!(released_attempt["policy_decision"], "permit");
    assert!(released_attempt["policy_set_hash"].is_string());

    for cursor in [0, 3, all.len() as i64 - 2, all.len() as i64 - 1] {
        let after = cursor.to_string();
        let resumed = export(
            &url,
            &["--format", "jsonl", "--page-size", "2", "--after", &after],
        )
        .await;
        assert_eq!(resumed, all[cursor as usize + 1..], "--after {cursor}");
    }

    let since = all[4]["recorded_at"].as_str().unwrap();
    let from = export(&url, &["--format", "jsonl", "--since", since]).await;
    let start = from[0]["log_index"].as_i64().unwrap() as usize;
    assert!(
        start <= 4,
        "--since starts at the first event recorded then"
    );
    assert!(
        all[..start]
            .iter()
            .all(|e| e["recorded_at"].as_str().unwrap() < since)
    );
    assert_eq!(from, all[start..]);
}

/// The next line of a following export, within `within`.
async fn next_line(lines: &mut Lines<BufReader<ChildStdout>>, within: Duration) -> Value {
    let line = tokio::time::timeout(within, lines.next_line())
        .await
        .unwrap_or_else(|_| panic!("no event within {within:?}"))
        .expect("read the export")
        .expect("the export is still running");
    serde_json::from_str(&line).unwrap()
}

#[tokio::test]
async fn a_following_export_writes_a_new_call_within_a_second() {
    let app = spawn_app().await;
    let _ = app.release(request("disk-in-use")).await;
    let recorded = event_count(&app).await;
    let mut child = export_command(&reader_url(&app).await, &["--format", "ocsf", "--follow"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the export");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for index in 0..recorded {
        let event = next_line(&mut lines, Duration::from_secs(30)).await;
        assert_eq!(event["metadata"]["sequence"], index);
    }

    let released = audit_id_of(app.release(request("disk-recycled-data")).await);
    let attempt = next_line(&mut lines, Duration::from_secs(1)).await;
    let outcome = next_line(&mut lines, Duration::from_secs(1)).await;

    assert_eq!(attempt["api"]["request"]["uid"], released);
    assert_eq!(attempt["metadata"]["sequence"], recorded);
    assert_eq!(outcome["api"]["request"]["uid"], released);
    assert_eq!(outcome["status"], "Success");
    let pid = child.id().unwrap().to_string();
    let stopped = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(stopped.success());
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("the export stops on SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");
}
