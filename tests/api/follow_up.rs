//! After the call: accepted releases confirmed (or not) from DescribeDisks,
//! and every unknown outcome resolved, by one gateway or several.

use crate::helpers::{
    AppOptions, ReplicaLock, TestApp, another_gateway, as_gateway, assert_error, eventually,
    metric, request, spawn_app_with, test_settings, until_the_release_is_sent,
};
use crate::processes::GatewayProcess;
use serde_json::Value;
use std::time::Duration;
use tonic::Code;
use tonic_types::StatusExt as _;
use uuid::Uuid;
use zenlayer_gateway::pb::{ReleaseDiskRequest, ReleaseDiskResponse};
use zenlayer_gateway::simulator::{Disk, DiskStatus, DiskType, Fault};

/// Follow-ups every 50 ms, reconciliation 300 ms after an unknown outcome.
fn quick(extra: &[(&str, &str)]) -> AppOptions {
    let mut settings: std::collections::HashMap<String, String> = [
        ("GATEWAY_FOLLOW_UP_INTERVAL_MS", "50"),
        ("GATEWAY_RECONCILE_AFTER_MS", "300"),
        ("ZENLAYER_TIMEOUT_MS", "500"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    settings.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    AppOptions {
        settings,
        ..Default::default()
    }
}

async fn row(app: &TestApp, call_id: &str) -> Value {
    sqlx::query_scalar("SELECT row_to_json(c) FROM audit.release_disk_calls c WHERE call_id = $1")
        .bind(Uuid::parse_str(call_id).unwrap())
        .fetch_one(&app.db)
        .await
        .unwrap()
}

/// Waits until the view's `column` of the call is `wanted`; returns the row.
async fn becomes(app: &TestApp, call_id: &str, column: &str, wanted: &str) -> Value {
    let what = format!("{column} of {call_id} to become {wanted}");
    eventually(Duration::from_secs(20), &what, || async {
        Some(row(app, call_id).await).filter(|r| r[column] == wanted)
    })
    .await
}

fn keyed(disk_id: &str, key: &str) -> tonic::Request<ReleaseDiskRequest> {
    let mut call = request(disk_id);
    call.get_mut().idempotency_key = key.to_owned();
    call
}

fn audit_id(status: &tonic::Status) -> String {
    status.get_details_error_info().unwrap().metadata["audit_id"].clone()
}

/// Releases `disk_id`, which Zenlayer accepts and then lists again, as it
/// was before.
async fn release_still_listed(app: &TestApp, disk_id: &str) -> ReleaseDiskResponse {
    let response = app.release(request(disk_id)).await.unwrap().into_inner();
    app.simulator
        .put_disk(Disk::new(disk_id, DiskType::Data, DiskStatus::Recycled));
    response
}

#[tokio::test]
async fn an_asynchronous_release_is_confirmed_once_the_disk_is_gone() {
    let app = spawn_app_with(AppOptions {
        release_takes: Duration::from_millis(400),
        ..quick(&[])
    })
    .await;
    let response = app
        .release(request("disk-recycled-data"))
        .await
        .unwrap()
        .into_inner();
    let deleting = app.simulator.disk("disk-recycled-data");
    assert_eq!(
        deleting.map(|d| d.disk_status),
        Some(DiskStatus::Deleting),
        "accepted, not done"
    );
    let confirmed = becomes(&app, &response.audit_id, "confirmation", "confirmed").await;
    assert!(confirmed["confirmed_at"].is_string());
    assert!(app.simulator.disk("disk-recycled-data").is_none());
    assert!(
        app.simulator.action_requests("DescribeDisks") >= 3,
        "the pre-flight, at least one look at a DELETING disk, and the one that confirmed"
    );
    let confirmations = r#"zenlayer_gateway_release_confirmations_total{confirmation="confirmed"}"#;
    assert_eq!(metric(&app, confirmations).await, 1);
}

#[tokio::test]
async fn sweeps_that_zenlayer_fails_are_counted_as_failed_and_the_release_confirmed_after() {
    // No retries: each DescribeDisks that fails stops its sweep.
    let app = spawn_app_with(AppOptions {
        release_takes: Duration::from_millis(400),
        ..quick(&[("ZENLAYER_RATE_LIMIT_RETRIES", "0")])
    })
    .await;
    let sweeps =
        |result: &str| format!("zenlayer_gateway_follow_up_sweeps_total{{result=\"{result}\"}}");
    assert_eq!(metric(&app, &sweeps("failed")).await, 0);
    let response = app
        .release(request("disk-recycled-data"))
        .await
        .unwrap()
        .into_inner();
    // The disk is DELETING for 400 ms: every sweep from now on looks at it
    // first, so each of the three faults stops one sweep.
    app.simulator.fail_describe(
        Fault::Status {
            http_status: 500,
            code: "INTERNAL_SERVER_ERROR".into(),
        },
        3,
    );
    let confirmed = becomes(&app, &response.audit_id, "confirmation", "confirmed").await;
    assert!(confirmed["confirmed_at"].is_string());
    assert_eq!(
        metric(&app, &sweeps("failed")).await,
        3,
        "one failed sweep for each DescribeDisks that failed"
    );
    let ok_before = metric(&app, &sweeps("ok")).await;
    eventually(
        Duration::from_secs(10),
        "a sweep to succeed again",
        || async { (metric(&app, &sweeps("ok")).await > ok_before).then_some(()) },
    )
    .await;
    assert_eq!(metric(&app, &sweeps("failed")).await, 3, "and no more");
}

#[tokio::test]
async fn a_disk_still_listed_after_the_confirmation_window_is_not_confirmed() {
    let app = spawn_app_with(quick(&[("GATEWAY_CONFIRM_WITHIN_MS", "500")])).await;
    let response = release_still_listed(&app, "disk-recycled-data").await;
    let row = becomes(&app, &response.audit_id, "confirmation", "not_confirmed").await;
    assert_eq!(row["confirmed_at"], Value::Null);
    assert_eq!(
        row["outcome"], "succeeded",
        "the outcome stands; the doubt is beside it"
    );
    let status: String = sqlx::query_scalar(
        "SELECT disk_status FROM audit.release_confirmations WHERE call_id = $1",
    )
    .bind(Uuid::parse_str(&response.audit_id).unwrap())
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(status, "RECYCLED");
    let not_confirmed =
        r#"zenlayer_gateway_release_confirmations_total{confirmation="not_confirmed"}"#;
    assert_eq!(metric(&app, not_confirmed).await, 1);
}

#[tokio::test]
async fn a_release_that_acted_and_lost_its_answer_is_reconciled_as_succeeded() {
    let app = spawn_app_with(quick(&[])).await;
    app.simulator.fail_release(Fault::ActThenDrop, 1);
    let status = app
        .release(keyed("disk-recycled-data", "lost-answer"))
        .await
        .unwrap_err();
    assert_error(&status, Code::Unavailable, "OUTCOME_UNKNOWN");
    assert!(
        app.simulator.disk("disk-recycled-data").is_none(),
        "it acted"
    );
    let call_id = audit_id(&status);
    let row = becomes(&app, &call_id, "outcome", "succeeded").await;
    assert_eq!(row["outcome_recorded_by"], "reconciliation");
    assert_eq!(row["zenlayer_action"], "DescribeDisks");
    assert_eq!(row["confirmation"], "confirmed");
    // A retry with the key hears the reconciled outcome, and sends nothing.
    let retried = app
        .release(keyed("disk-recycled-data", "lost-answer"))
        .await
        .unwrap()
        .into_inner();
    assert!(retried.replayed);
    assert_eq!(
        retried.request_id, "",
        "the release's own requestId was never received; the describe's is not it"
    );
    assert_eq!(app.simulator.release_disk_requests(), 1);
}

#[tokio::test]
async fn an_unacted_500_is_reconciled_as_failed_and_its_key_freed_for_a_real_retry() {
    let app = spawn_app_with(quick(&[])).await;
    app.simulator.fail_release(
        Fault::Status {
            http_status: 500,
            code: "INTERNAL_SERVER_ERROR".into(),
        },
        1,
    );
    let status = app
        .release(keyed("disk-recycled-data", "not-acted"))
        .await
        .unwrap_err();
    assert_error(&status, Code::Unavailable, "INTERNAL_SERVER_ERROR");
    let call_id = audit_id(&status);
    let row = becomes(&app, &call_id, "outcome", "failed").await;
    assert_eq!(row["outcome_recorded_by"], "reconciliation");
    assert!(
        row["error_message"]
            .as_str()
            .is_some_and(|m| m.contains("RECYCLED")),
        "{row}"
    );
    let held: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM idempotency.keys WHERE idempotency_key = 'not-acted'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(held, 0, "the key is freed");
    let retried = app
        .release(keyed("disk-recycled-data", "not-acted"))
        .await
        .unwrap()
        .into_inner();
    assert!(!retried.replayed, "the retry really released");
    assert!(app.simulator.disk("disk-recycled-data").is_none());
    assert_eq!(app.simulator.release_disk_requests(), 2);
}

#[tokio::test]
async fn a_gateway_killed_mid_release_has_the_call_reconciled_after_restart() {
    let app = spawn_app_with(quick(&[])).await;
    let mut env = test_settings(
        &as_gateway(&app.database_url),
        &app.simulator,
        &app.key_server,
    );
    for (key, value) in [
        ("GATEWAY_LOG_FORMAT", "json"),
        ("ZENLAYER_TIMEOUT_MS", "2000"),
        ("ZENLAYER_RATE_LIMIT_RETRIES", "0"),
        ("GATEWAY_ABANDONED_MARGIN_MS", "200"),
        ("GATEWAY_RECOVERY_INTERVAL_MS", "100"),
        ("GATEWAY_FOLLOW_UP_INTERVAL_MS", "100"),
        ("GATEWAY_RECONCILE_AFTER_MS", "200"),
    ] {
        env.insert(key.into(), value.into());
    }
    let gateway = GatewayProcess::spawn(&env).await;
    app.simulator
        .fail_release(Fault::Latency(Duration::from_millis(1000)), 1);
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", gateway.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut disks = zenlayer_gateway::pb::disk_service_client::DiskServiceClient::new(channel);
    let mut call = request("disk-recycled-data");
    call.metadata_mut()
        .insert("x-request-id", "killed-mid-release".parse().unwrap());
    let in_flight = tokio::spawn(async move { disks.release_disk(call).await });
    until_the_release_is_sent(&app).await;
    gateway.kill().await;
    assert!(in_flight.await.unwrap().is_err(), "the caller never heard");
    let call_id: Uuid = sqlx::query_scalar(
        "SELECT call_id FROM audit.release_disk_calls WHERE x_request_id = 'killed-mid-release'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(row(&app, &call_id.to_string()).await["outcome"], "pending");

    let _restarted = GatewayProcess::spawn(&env).await;
    let resolved = eventually(
        Duration::from_secs(30),
        "the call to be reconciled",
        || async {
            let row = row(&app, &call_id.to_string()).await;
            (row["outcome_recorded_by"] == "reconciliation").then_some(row)
        },
    )
    .await;
    let gone = app.simulator.disk("disk-recycled-data").is_none();
    let expected = if gone { "succeeded" } else { "failed" };
    assert_eq!(resolved["outcome"], expected, "what Zenlayer says decides");
    let marked: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit.release_outcomes WHERE call_id = $1 AND recorded_by = 'recovery'",
    )
    .bind(call_id)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(marked, 1, "the recovery sweep marked it unknown first");
    assert_eq!(
        app.simulator.release_disk_requests(),
        1,
        "nothing was resent"
    );
}

#[tokio::test]
async fn two_gateways_reconciling_one_backlog_resolve_each_call_once() {
    // The first gateway makes the backlog and never reconciles it.
    let first = spawn_app_with(quick(&[("GATEWAY_RECONCILE_AFTER_MS", "86400000")])).await;
    let mut calls = Vec::new();
    for i in 0..12 {
        let disk = format!("disk-backlog-{i}");
        first
            .simulator
            .put_disk(Disk::new(&disk, DiskType::Data, DiskStatus::Recycled));
        // Half acted before losing the answer, half did not act at all.
        let fault = if i % 2 == 0 {
            Fault::ActThenDrop
        } else {
            Fault::Status {
                http_status: 502,
                code: "INTERNAL_SERVER_ERROR".into(),
            }
        };
        first.simulator.fail_release(fault, 1);
        let status = first.release(request(&disk)).await.unwrap_err();
        calls.push((audit_id(&status), i % 2 == 0));
    }
    // Two gateway processes on the first gateway's database and Zenlayer.
    let mut env = test_settings(
        &as_gateway(&first.database_url),
        &first.simulator,
        &first.key_server,
    );
    for (key, value) in [
        ("GATEWAY_LOG_FORMAT", "json"),
        ("GATEWAY_FOLLOW_UP_INTERVAL_MS", "50"),
        ("GATEWAY_RECONCILE_AFTER_MS", "300"),
    ] {
        env.insert(key.into(), value.into());
    }
    let gateways = [
        GatewayProcess::spawn(&env).await,
        GatewayProcess::spawn(&env).await,
    ];
    for (call_id, acted) in &calls {
        let expected = if *acted { "succeeded" } else { "failed" };
        let row = becomes(&first, call_id, "outcome", expected).await;
        assert_eq!(row["outcome_recorded_by"], "reconciliation");
    }
    let per_call: Vec<i64> = sqlx::query_scalar(
        "SELECT count(*) FROM audit.release_outcomes WHERE recorded_by = 'reconciliation' GROUP BY call_id",
    )
    .fetch_all(&first.db)
    .await
    .unwrap();
    assert_eq!(per_call.len(), calls.len());
    assert!(per_call.iter().all(|n| *n == 1), "{per_call:?}");
    // Each gateway logs the calls it resolved: together, each call once.
    let resolved = || {
        gateways
            .iter()
            .map(|g| g.logged("an unknown outcome reconciled"))
            .sum::<usize>()
    };
    eventually(
        Duration::from_secs(10),
        "both gateways' log lines",
        || async { (resolved() >= calls.len()).then_some(()) },
    )
    .await;
    assert_eq!(resolved(), calls.len(), "no call was resolved twice");
}

/// `n` accepted releases by a gateway that follows up only at start-up
/// (before them); returns it, their audit ids, and how many DescribeDisks
/// it had asked by then.
async fn unconfirmed_backlog(n: usize) -> (TestApp, Vec<String>, u64) {
    let first = spawn_app_with(quick(&[("GATEWAY_FOLLOW_UP_INTERVAL_MS", "3600000")])).await;
    let mut calls = Vec::new();
    for i in 0..n {
        let disk = format!("disk-backlog-{i:03}");
        first
            .simulator
            .put_disk(Disk::new(&disk, DiskType::Data, DiskStatus::Recycled));
        let response = first.release(request(&disk)).await.unwrap().into_inner();
        calls.push(response.audit_id);
    }
    let described = first.simulator.action_requests("DescribeDisks");
    (first, calls, described)
}

/// Waits until every one of `calls` is confirmed, and no other call is.
async fn all_confirmed(app: &TestApp, calls: &[String]) {
    let what = format!("{} confirmations", calls.len());
    eventually(Duration::from_secs(20), &what, || async {
        let confirmed: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM audit.release_confirmations WHERE confirmation = 'confirmed'",
        )
        .fetch_one(&app.db)
        .await
        .unwrap();
        (confirmed == calls.len() as i64).then_some(())
    })
    .await;
    for call_id in calls {
        assert_eq!(row(app, call_id).await["confirmation"], "confirmed");
    }
}

#[tokio::test]
async fn a_backlog_of_released_disks_is_confirmed_a_hundred_to_a_describe() {
    let (first, calls, described) = unconfirmed_backlog(150).await;
    let _follower = another_gateway(&first, &[("GATEWAY_FOLLOW_UP_INTERVAL_MS", "50")]).await;
    all_confirmed(&first, &calls).await;
    // 100 disks, then the other 50, each batch in one DescribeDisks; with
    // nothing left to confirm, later sweeps ask nothing.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        first.simulator.action_requests("DescribeDisks") - described,
        2
    );
}

#[tokio::test]
async fn one_sweep_confirms_a_backlog_larger_than_a_batch() {
    // The follower sweeps once, at start-up, and then not for an hour: that
    // one sweep must confirm the whole backlog, not one batch of it.
    let (first, calls, described) = unconfirmed_backlog(230).await;
    let _follower = another_gateway(&first, &[("GATEWAY_FOLLOW_UP_INTERVAL_MS", "3600000")]).await;
    all_confirmed(&first, &calls).await;
    assert_eq!(
        first.simulator.action_requests("DescribeDisks") - described,
        3,
        "100, 100 and 30 disks, each batch in one DescribeDisks"
    );
}

#[tokio::test]
async fn a_release_left_listed_is_looked_at_again_after_later_ones_are_confirmed() {
    let app = spawn_app_with(quick(&[("GATEWAY_CONFIRM_WITHIN_MS", "3600000")])).await;
    // Accepted, yet still listed: nothing to confirm yet.
    let early = release_still_listed(&app, "disk-recycled-data").await;
    app.simulator.put_disk(Disk::new(
        "disk-later",
        DiskType::Data,
        DiskStatus::Recycled,
    ));
    let later = app
        .release(request("disk-later"))
        .await
        .unwrap()
        .into_inner();
    becomes(&app, &later.audit_id, "confirmation", "confirmed").await;
    // Sweeps have walked past the early release's place in the log since.
    let looks = app.simulator.action_requests("DescribeDisks");
    eventually(Duration::from_secs(20), "two more sweeps", || async {
        (app.simulator.action_requests("DescribeDisks") >= looks + 2).then_some(())
    })
    .await;
    assert_eq!(row(&app, &early.audit_id).await["confirmation"], "pending");

    assert!(app.simulator.remove_disk("disk-recycled-data").is_some());
    becomes(&app, &early.audit_id, "confirmation", "confirmed").await;
}

#[tokio::test]
async fn a_release_another_replica_holds_is_confirmed_once_it_lets_go() {
    let (first, calls, _) = unconfirmed_backlog(2).await;
    // Another replica is confirming the first release as the follower starts.
    let other = ReplicaLock::hold(&first.database_url, follow_up_lock(&calls[0])).await;
    let _follower = another_gateway(&first, &[("GATEWAY_FOLLOW_UP_INTERVAL_MS", "50")]).await;
    becomes(&first, &calls[1], "confirmation", "confirmed").await;
    // Sweeps go on, walking past the held release.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(row(&first, &calls[0]).await["confirmation"], "pending");

    other.release().await;
    becomes(&first, &calls[0], "confirmation", "confirmed").await;
}

/// A call's follow-up lock, as a replica following the call up holds it.
fn follow_up_lock(call_id: &str) -> String {
    format!("hashtextextended('{call_id}', 7215)")
}

#[tokio::test]
async fn a_call_another_replica_is_reconciling_is_left_to_it() {
    let app = spawn_app_with(quick(&[("GATEWAY_RECONCILE_AFTER_MS", "1500")])).await;
    app.simulator.fail_release(
        Fault::Status {
            http_status: 500,
            code: "INTERNAL_SERVER_ERROR".into(),
        },
        1,
    );
    let status = app
        .release(request("disk-recycled-data"))
        .await
        .unwrap_err();
    let call_id = audit_id(&status);
    // Another replica takes the call up before this one's sweep may.
    let other = ReplicaLock::hold(&app.database_url, follow_up_lock(&call_id)).await;
    let described = app.simulator.received_for("DescribeDisks").len();
    // Well past the settling time, through dozens of sweeps.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    assert_eq!(
        row(&app, &call_id).await["outcome"],
        "unknown",
        "left alone"
    );
    assert_eq!(
        app.simulator.received_for("DescribeDisks").len(),
        described,
        "not even looked at"
    );
    other.release().await;
    let row = becomes(&app, &call_id, "outcome", "failed").await;
    assert_eq!(row["outcome_recorded_by"], "reconciliation");
}
