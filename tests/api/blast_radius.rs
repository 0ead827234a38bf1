//! Bounding the blast radius: release budgets enforced across replicas in
//! the attempt's transaction, and the freeze switch that stops every
//! release on every replica within a second. Every refusal is recorded and
//! none reaches Zenlayer's `ReleaseDisk`.

use crate::helpers::{
    AppOptions, ReplicaLock, TestApp, another_gateway, assert_error, command, eventually,
    operator_login, request, spawn_app, spawn_app_with, unauthenticated_request,
    until_the_release_is_sent,
};
use crate::tokens::{RSA, bearer, good_claims};
use serde_json::json;
use std::time::Duration;
use tonic::Code;
use tonic_types::StatusExt as _;
use zenlayer_gateway::simulator::{Disk, DiskStatus, DiskType, Fault};

fn releasable(app: &TestApp, disk_id: &str) {
    app.simulator
        .put_disk(Disk::new(disk_id, DiskType::Data, DiskStatus::Recycled));
}

fn with(settings: &[(&str, &str)]) -> AppOptions {
    AppOptions {
        settings: settings
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..Default::default()
    }
}

async fn client(
    addr: std::net::SocketAddr,
) -> zenlayer_gateway::pb::disk_service_client::DiskServiceClient<tonic::transport::Channel> {
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    zenlayer_gateway::pb::disk_service_client::DiskServiceClient::new(channel)
}

async fn refusals(app: &TestApp, reason: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM audit.release_disk_calls WHERE decision = 'denied' AND decision_reason = $1",
    )
    .bind(reason)
    .fetch_one(&app.db)
    .await
    .unwrap()
}

/// A refusal for a budget, and the delay its `RetryInfo` gives.
fn over_budget_delay(status: &tonic::Status) -> Duration {
    assert_error(status, Code::ResourceExhausted, "RELEASE_BUDGET_EXCEEDED");
    let retry = status.get_details_retry_info().expect("RetryInfo");
    retry.retry_delay.expect("a delay")
}

#[tokio::test]
async fn two_gateways_with_a_budget_of_50_release_exactly_50_of_80_concurrent_calls() {
    let budget = [("GATEWAY_RELEASE_BUDGET_PER_PRINCIPAL", "50/1h")];
    let app = spawn_app_with(with(&budget)).await;
    let other = another_gateway(&app, &budget).await;
    let addrs = [app.addr, other.addr];
    let mut calls = Vec::new();
    for i in 0..80 {
        let disk = format!("disk-budget-{i:02}");
        releasable(&app, &disk);
        let mut client = client(addrs[i % 2]).await;
        calls.push(tokio::spawn(async move {
            client.release_disk(request(&disk)).await
        }));
    }
    let (mut released, mut refused) = (0, 0);
    for call in calls {
        match call.await.unwrap() {
            Ok(_) => released += 1,
            Err(status) => {
                let delay = over_budget_delay(&status);
                assert!(
                    delay > Duration::from_secs(3000),
                    "the hour's first slot frees in about an hour: {delay:?}"
                );
                assert!(
                    status.message().contains("50 releases per 1h"),
                    "{}",
                    status.message()
                );
                refused += 1;
            }
        }
    }
    assert_eq!((released, refused), (50, 30));
    assert_eq!(
        app.simulator.release_disk_requests(),
        50,
        "nothing past the budget was sent"
    );
    assert_eq!(
        refusals(&app, "RELEASE_BUDGET_EXCEEDED").await,
        30,
        "every refusal recorded"
    );
}

/// The budget check's lock, as a replica in the middle of its own check
/// holds it (the key is the gateways' own, from `audit::store`).
const BUDGET_LOCK: &str = "hashtextextended('zenlayer-gateway release budgets', 7215)";

#[tokio::test]
async fn a_release_under_a_budget_waits_while_another_replica_counts() {
    let app = spawn_app_with(with(&[("GATEWAY_RELEASE_BUDGET_TOTAL", "5/1h")])).await;
    releasable(&app, "disk-budget-wait");
    // Another replica counting its releases against the budget.
    let other = ReplicaLock::hold(&app.database_url, BUDGET_LOCK.to_owned()).await;
    let mut disks = client(app.addr).await;
    let call = tokio::spawn(async move { disks.release_disk(request("disk-budget-wait")).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !call.is_finished(),
        "the release waits for the other replica's count to commit"
    );
    assert_eq!(
        app.simulator.release_disk_requests(),
        0,
        "nothing sent meanwhile"
    );
    other.release().await;
    let released = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("released once the count is done")
        .unwrap();
    assert!(released.is_ok(), "{released:?}");
    assert_eq!(app.simulator.release_disk_requests(), 1);
}

#[tokio::test]
async fn only_releases_zenlayer_may_have_acted_on_count_and_the_total_budget_spans_callers() {
    let app = spawn_app_with(with(&[
        ("GATEWAY_RELEASE_BUDGET_PER_PRINCIPAL", "2/1h"),
        ("GATEWAY_RELEASE_BUDGET_TOTAL", "3/1h"),
    ]))
    .await;
    for i in 0..5 {
        releasable(&app, &format!("disk-count-{i}"));
    }
    // Zenlayer refuses the first: it did not act, so it takes no slot.
    app.simulator.fail_release(
        Fault::Status {
            http_status: 400,
            code: "OPERATION_DENIED_DISK_LOCKED".into(),
        },
        1,
    );
    let first = app.release(request("disk-count-0")).await.unwrap_err();
    assert_ne!(first.code(), Code::ResourceExhausted);
    // A pre-flight refusal takes none either.
    app.release(request("disk-in-use")).await.unwrap_err();
    app.release(request("disk-count-1")).await.unwrap();
    app.release(request("disk-count-2")).await.unwrap();
    let status = app.release(request("disk-count-3")).await.unwrap_err();
    assert_error(&status, Code::ResourceExhausted, "RELEASE_BUDGET_EXCEEDED");
    assert!(
        status.message().contains("your release budget"),
        "{}",
        status.message()
    );

    // Another caller has a budget of its own, but the total has one slot left.
    let mut claims = good_claims();
    claims["sub"] = json!("another-service");
    let other = |disk: &str| {
        let mut call = unauthenticated_request(disk);
        call.metadata_mut()
            .insert("authorization", bearer(&RSA.sign(&claims)));
        call
    };
    app.release(other("disk-count-3")).await.unwrap();
    let status = app.release(other("disk-count-4")).await.unwrap_err();
    assert_error(&status, Code::ResourceExhausted, "RELEASE_BUDGET_EXCEEDED");
    assert!(
        status.message().contains("for all callers"),
        "{}",
        status.message()
    );
    assert_eq!(app.simulator.release_disk_requests(), 4);
    assert_eq!(refusals(&app, "RELEASE_BUDGET_EXCEEDED").await, 2);
}

#[tokio::test]
async fn a_freeze_stops_releases_on_every_replica_within_a_second_and_an_unfreeze_restores_them() {
    let app = spawn_app().await;
    let other = another_gateway(&app, &[]).await;
    let operator = operator_login(&app).await;
    for i in 0..4 {
        releasable(&app, &format!("disk-freeze-{i}"));
    }

    let said = command(
        &operator,
        &["freeze", "--reason", "incident 4711: runaway cleanup"],
    )
    .await;
    assert!(
        said.contains("releases frozen by release_operator_test"),
        "{said}"
    );
    for (i, addr) in [app.addr, other.addr].into_iter().enumerate() {
        until_frozen(addr).await;
        let disk = format!("disk-freeze-{i}");
        let status = client(addr)
            .await
            .release_disk(request(&disk))
            .await
            .unwrap_err();
        assert_error(&status, Code::FailedPrecondition, "RELEASES_FROZEN");
        assert!(
            status.message().contains("incident 4711"),
            "{}",
            status.message()
        );
        assert!(
            status.message().contains("release_operator_test"),
            "{}",
            status.message()
        );
    }
    let status = command(&operator, &["freeze", "status"]).await;
    assert!(status.starts_with("frozen since"), "{status}");
    assert!(status.contains("incident 4711"), "{status}");
    assert_eq!(
        app.simulator.release_disk_requests(),
        0,
        "nothing released while frozen"
    );
    assert!(
        refusals(&app, "RELEASES_FROZEN").await >= 2,
        "frozen calls are recorded"
    );

    command(
        &operator,
        &["unfreeze", "--reason", "incident 4711 resolved"],
    )
    .await;
    for (i, addr) in [app.addr, other.addr].into_iter().enumerate() {
        let disk = format!("disk-freeze-{}", i + 2);
        eventually(Duration::from_secs(1), "releases to resume", || {
            let disk = disk.clone();
            async move { client(addr).await.release_disk(request(&disk)).await.ok() }
        })
        .await;
    }
    assert_eq!(app.simulator.release_disk_requests(), 2);

    // Who, when and why, append-only and in the audit log like every event.
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT action, operator, reason FROM audit.release_freezes ORDER BY freeze_id",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(
        rows,
        [
            (
                "freeze".into(),
                "release_operator_test".into(),
                "incident 4711: runaway cleanup".into()
            ),
            (
                "unfreeze".into(),
                "release_operator_test".into(),
                "incident 4711 resolved".into()
            ),
        ]
    );
    let logged: i64 = sqlx::query_scalar("SELECT count(*) FROM audit.events WHERE kind = 'freeze'")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(logged, 2);
    let changed = sqlx::query("UPDATE audit.release_freezes SET reason = 'nothing happened'")
        .execute(&app.db)
        .await;
    assert!(changed.is_err(), "freezes are append-only");
    // The operator's login may flip the switch and nothing else.
    let mut as_operator = <sqlx::PgConnection as sqlx::Connection>::connect(&operator)
        .await
        .unwrap();
    let forged = sqlx::query("SELECT count(*) FROM audit.release_attempts")
        .execute(&mut as_operator)
        .await;
    assert!(
        forged.is_err(),
        "an operator cannot read or write the trail's calls"
    );
    other.terminate().await;
    let verified = command(&app.database_url, &["audit", "verify"]).await;
    assert!(
        verified.contains("intact"),
        "freeze events verify like the rest: {verified}"
    );
}

#[tokio::test]
async fn a_freeze_recorded_while_a_call_looks_at_the_disk_stops_that_release() {
    let app = spawn_app().await;
    let operator = operator_login(&app).await;
    releasable(&app, "disk-slow-look");
    let looked_before = app.simulator.action_requests("DescribeDisks");
    // The look takes three seconds: time for an operator to freeze.
    app.simulator
        .fail_describe(Fault::Latency(Duration::from_secs(3)), 1);
    let addr = app.addr;
    let call = tokio::spawn(async move {
        client(addr)
            .await
            .release_disk(request("disk-slow-look"))
            .await
    });
    let simulator = &app.simulator;
    eventually(Duration::from_secs(5), "the look to start", || async move {
        (simulator.action_requests("DescribeDisks") > looked_before).then_some(())
    })
    .await;
    command(&operator, &["freeze", "--reason", "incident 4713"]).await;
    let status = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("the call ends")
        .unwrap()
        .unwrap_err();
    assert_error(&status, Code::FailedPrecondition, "RELEASES_FROZEN");
    assert_eq!(app.simulator.release_disk_requests(), 0, "nothing sent");
    assert!(app.simulator.disk("disk-slow-look").is_some());
    assert_eq!(refusals(&app, "RELEASES_FROZEN").await, 1, "recorded");
}

/// Waits (a second at most) until the replica at `addr` refuses releases
/// for a freeze; probed with a disk Zenlayer does not list, so that a probe
/// answered before the freeze releases nothing.
async fn until_frozen(addr: std::net::SocketAddr) {
    eventually(
        Duration::from_secs(1),
        "the freeze to take effect",
        || async move {
            let status = client(addr)
                .await
                .release_disk(request("disk-nobody-has"))
                .await
                .err()?;
            (status.code() == Code::FailedPrecondition).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn an_unfreeze_planted_with_the_largest_id_does_not_outrank_a_later_freeze() {
    let app = spawn_app().await;
    let operator = operator_login(&app).await;
    releasable(&app, "disk-planted");
    // An operator login choosing the id itself, as the identity column
    // lets any inserter do.
    let planter = sqlx::PgPool::connect(&operator).await.unwrap();
    sqlx::query(
        "INSERT INTO audit.release_freezes (freeze_id, action, reason, operator)
         OVERRIDING SYSTEM VALUE VALUES (9223372036854775807, 'unfreeze', 'planted', '')",
    )
    .execute(&planter)
    .await
    .unwrap();
    planter.close().await;
    command(&operator, &["freeze", "--reason", "incident 4714"]).await;
    let status = command(&operator, &["freeze", "status"]).await;
    assert!(status.contains("frozen"), "{status}");
    assert!(status.contains("incident 4714"), "{status}");
    until_frozen(app.addr).await;
    let status = app.release(request("disk-planted")).await.unwrap_err();
    assert_error(&status, Code::FailedPrecondition, "RELEASES_FROZEN");
    assert!(
        status.message().contains("incident 4714"),
        "{}",
        status.message()
    );
    assert_eq!(app.simulator.release_disk_requests(), 0, "nothing sent");
}

#[tokio::test]
async fn a_replica_that_cannot_read_the_freeze_state_for_a_while_stops_releasing() {
    let app = spawn_app_with(with(&[("GATEWAY_FREEZE_POLL_INTERVAL_MS", "100")])).await;
    releasable(&app, "disk-unread");
    app.release(request("disk-recycled-data")).await.unwrap();
    // The freeze state can no longer be read, though the audit trail can
    // still be written: a freeze recorded now would go unseen.
    let superuser = sqlx::PgPool::connect(&app.database_url).await.unwrap();
    sqlx::query("REVOKE EXECUTE ON FUNCTION audit.freeze_in_force() FROM zenlayer_gateway")
        .execute(&superuser)
        .await
        .unwrap();
    // Probed with a disk Zenlayer does not list, so that a probe answered
    // before the state goes stale releases nothing.
    eventually(Duration::from_secs(5), "releases to be refused", || async {
        let status = app.release(request("disk-nobody-has")).await.err()?;
        (status.code() == Code::Unavailable).then_some(())
    })
    .await;
    let refused = app.release(request("disk-unread")).await.unwrap_err();
    assert_error(&refused, Code::Unavailable, "FREEZE_STATE_UNKNOWN");
    assert_eq!(
        app.simulator.release_disk_requests(),
        1,
        "nothing more sent"
    );
    assert!(
        refusals(&app, "FREEZE_STATE_UNKNOWN").await >= 1,
        "recorded"
    );
    // Readable again: releases resume.
    sqlx::query("GRANT EXECUTE ON FUNCTION audit.freeze_in_force() TO zenlayer_gateway")
        .execute(&superuser)
        .await
        .unwrap();
    eventually(Duration::from_secs(5), "releases to resume", || async {
        app.release(request("disk-unread")).await.ok()
    })
    .await;
    assert_eq!(app.simulator.release_disk_requests(), 2);
}

#[tokio::test]
async fn a_keyed_retry_during_a_freeze_is_answered_from_the_release_made_before_it() {
    let app = spawn_app().await;
    let operator = operator_login(&app).await;
    releasable(&app, "disk-before-freeze");
    let keyed = |disk: &str, key: &str| {
        let mut call = request(disk);
        call.get_mut().idempotency_key = key.to_owned();
        call
    };
    let first = app
        .release(keyed("disk-before-freeze", "freeze-retry-1"))
        .await
        .unwrap()
        .into_inner();
    command(&operator, &["freeze", "--reason", "incident 4715"]).await;
    until_frozen(app.addr).await;
    // The retry learns the disk was released (not "nothing was released").
    let retry = app
        .release(keyed("disk-before-freeze", "freeze-retry-1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((retry.request_id, retry.replayed), (first.request_id, true));
    // A new key is a new release: the freeze stops it.
    releasable(&app, "disk-during-freeze");
    let status = app
        .release(keyed("disk-during-freeze", "freeze-retry-2"))
        .await
        .unwrap_err();
    assert_error(&status, Code::FailedPrecondition, "RELEASES_FROZEN");
    assert_eq!(app.simulator.release_disk_requests(), 1);
}

#[tokio::test]
async fn a_freeze_needs_a_reason() {
    let app = spawn_app().await;
    let operator = operator_login(&app).await;
    // A command that fails, and what it said on stderr.
    let refused = |args: Vec<String>| {
        let operator = operator.clone();
        async move {
            let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_zenlayer-gateway"))
                .args(args)
                .env_clear()
                .env("DATABASE_URL", &operator)
                .output()
                .await
                .unwrap();
            assert!(!out.status.success());
            String::from_utf8_lossy(&out.stderr).into_owned()
        }
    };
    assert!(refused(vec!["freeze".into()]).await.contains("--reason"));
    // A blank or overlong one is told as such, and nothing is recorded.
    for reason in ["   ".to_owned(), "x".repeat(1025)] {
        let said = refused(vec!["freeze".into(), "--reason".into(), reason]).await;
        assert!(
            said.contains("--reason must say why, in 1 to 1024 characters"),
            "{said}"
        );
    }
    let freezes: i64 = sqlx::query_scalar("SELECT count(*) FROM audit.release_freezes")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(freezes, 0);
}

/// The backend of the gateway's LISTEN connection, once it listens.
async fn listener_backend(app: &TestApp) -> Option<i32> {
    sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity
         WHERE datname = current_database() AND query LIKE 'LISTEN %zenlayer_gateway_freezes%'",
    )
    .fetch_optional(&app.db)
    .await
    .unwrap()
}

async fn frozen(addr: std::net::SocketAddr) -> bool {
    let answer = client(addr)
        .await
        .release_disk(request("disk-nobody-has"))
        .await;
    matches!(answer, Err(status) if status.code() == Code::FailedPrecondition)
}

#[tokio::test]
async fn a_freeze_arrives_by_notification_alone_and_still_does_after_the_listening_connection_drops()
 {
    // Polled once an hour: only a notification can bring the switch in time.
    let app = spawn_app_with(with(&[("GATEWAY_FREEZE_POLL_INTERVAL_MS", "3600000")])).await;
    let operator = operator_login(&app).await;
    let (db, addr) = (&app, app.addr);
    let first = eventually(Duration::from_secs(5), "the gateway to listen", || {
        listener_backend(db)
    })
    .await;

    command(&operator, &["freeze", "--reason", "incident 4712"]).await;
    eventually(
        Duration::from_secs(1),
        "the freeze to arrive",
        || async move { frozen(addr).await.then_some(()) },
    )
    .await;

    // The connection it listens on is killed: it listens again on another.
    let killed: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(first)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert!(killed);
    eventually(
        Duration::from_secs(5),
        "the gateway to listen again",
        || async move { listener_backend(db).await.filter(|pid| *pid != first) },
    )
    .await;

    command(
        &operator,
        &["unfreeze", "--reason", "incident 4712 resolved"],
    )
    .await;
    eventually(
        Duration::from_secs(1),
        "the unfreeze to arrive",
        || async move { (!frozen(addr).await).then_some(()) },
    )
    .await;
    releasable(&app, "disk-after-relisten");
    client(app.addr)
        .await
        .release_disk(request("disk-after-relisten"))
        .await
        .expect("releases resume");
}

#[tokio::test]
async fn a_refusal_once_the_budget_is_spent_is_recorded_as_itself() {
    let app = spawn_app_with(with(&[
        ("GATEWAY_RELEASE_BUDGET_PER_PRINCIPAL", "1/1h"),
        ("GATEWAY_RELEASE_BUDGET_TOTAL", "1/1h"),
    ]))
    .await;
    releasable(&app, "disk-spent-0");
    app.release(request("disk-spent-0")).await.unwrap();
    // The same caller without the release role, and a caller with no token:
    // refused for what they are, not for a budget they could not use.
    let mut claims = good_claims();
    claims["roles"] = json!(["viewer"]);
    let mut no_role = unauthenticated_request("disk-spent-0");
    no_role
        .metadata_mut()
        .insert("authorization", bearer(&RSA.sign(&claims)));
    let status = app.release(no_role).await.unwrap_err();
    assert_error(&status, Code::PermissionDenied, "ROLE_MISSING");
    let status = app
        .release(unauthenticated_request("disk-spent-0"))
        .await
        .unwrap_err();
    assert_error(&status, Code::Unauthenticated, "TOKEN_MISSING");
    let recorded: Vec<String> = sqlx::query_scalar(
        "SELECT decision_reason FROM audit.release_attempts WHERE decision = 'denied' ORDER BY received_at",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(recorded, ["ROLE_MISSING", "TOKEN_MISSING"]);
    assert_eq!(refusals(&app, "RELEASE_BUDGET_EXCEEDED").await, 0);
}

#[tokio::test]
async fn a_full_budget_says_a_slot_frees_when_its_oldest_release_leaves_the_window() {
    let app = spawn_app_with(with(&[("GATEWAY_RELEASE_BUDGET_PER_PRINCIPAL", "2/1h")])).await;
    for i in 0..3 {
        releasable(&app, &format!("disk-window-{i}"));
    }
    app.release(request("disk-window-0")).await.unwrap();
    // The two releases in the window are well apart, so which one frees
    // the slot shows in the delay.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    app.release(request("disk-window-1")).await.unwrap();
    let status = app.release(request("disk-window-2")).await.unwrap_err();
    let delay = over_budget_delay(&status);
    let hour = Duration::from_secs(3600);
    assert!(
        delay <= hour - Duration::from_millis(1400) && delay > hour - Duration::from_secs(60),
        "the first release, 1.5 s older, frees the slot: {delay:?}"
    );
}

#[tokio::test]
async fn with_both_budgets_full_the_caller_is_told_when_both_have_room() {
    let app = spawn_app_with(with(&[
        ("GATEWAY_RELEASE_BUDGET_PER_PRINCIPAL", "1/10s"),
        ("GATEWAY_RELEASE_BUDGET_TOTAL", "1/1h"),
    ]))
    .await;
    for i in 0..2 {
        releasable(&app, &format!("disk-both-{i}"));
    }
    app.release(request("disk-both-0")).await.unwrap();
    // Full for this caller for 10 s, for everyone for an hour: a retry in
    // 10 s would only be refused again.
    let status = app.release(request("disk-both-1")).await.unwrap_err();
    let delay = over_budget_delay(&status);
    assert!(delay > Duration::from_secs(3500), "{delay:?}");
    assert_eq!(app.simulator.release_disk_requests(), 1);
}

#[tokio::test]
async fn a_release_counts_against_its_window_from_when_it_was_sent_not_when_it_was_asked() {
    let app = spawn_app_with(with(&[("GATEWAY_RELEASE_BUDGET_PER_PRINCIPAL", "1/3s")])).await;
    releasable(&app, "disk-slow-0");
    releasable(&app, "disk-slow-1");
    // The first call looks at its disk for 2.5 s, then takes the slot and
    // is sent: its release went out 2.5 s after it was asked for.
    app.simulator
        .fail_describe(Fault::Latency(Duration::from_millis(2500)), 1);
    let asked = tokio::time::Instant::now();
    app.release(request("disk-slow-0")).await.unwrap();
    // 3.5 s after the first was asked, 1 s after it was sent: inside the
    // 3 s window of the release, though not of the question.
    tokio::time::sleep_until(asked + Duration::from_millis(3500)).await;
    let status = app.release(request("disk-slow-1")).await.unwrap_err();
    let delay = over_budget_delay(&status);
    assert!(
        delay > Duration::from_millis(500) && delay <= Duration::from_millis(2100),
        "the slot frees 3 s after the first release was sent: {delay:?}"
    );
    assert_eq!(
        app.simulator.release_disk_requests(),
        1,
        "one release in 3 s"
    );
}

#[tokio::test]
async fn a_keyed_retry_of_a_call_in_flight_under_a_full_budget_hears_of_the_call_not_the_budget() {
    let app = spawn_app_with(with(&[("GATEWAY_RELEASE_BUDGET_PER_PRINCIPAL", "1/1h")])).await;
    app.simulator
        .fail_release(Fault::Latency(Duration::from_millis(1500)), 1);
    let keyed = || {
        let mut call = request("disk-recycled-data");
        call.get_mut().idempotency_key = "budget-retry-1".to_owned();
        call
    };
    let mut disks = app.disks().await;
    let call = keyed();
    let first = tokio::spawn(async move { disks.release_disk(call).await });
    until_the_release_is_sent(&app).await;
    // The first call holds the budget's one slot and the key: its retry
    // would not be sent whatever the budget, and is told why.
    let status = app.release(keyed()).await.unwrap_err();
    assert_error(&status, Code::Aborted, "IDEMPOTENCY_KEY_IN_FLIGHT");
    let first = first.await.unwrap().unwrap().into_inner();
    let later = app.release(keyed()).await.unwrap().into_inner();
    assert_eq!((later.request_id, later.replayed), (first.request_id, true));
    assert_eq!(app.simulator.release_disk_requests(), 1);
    assert_eq!(refusals(&app, "RELEASE_BUDGET_EXCEEDED").await, 0);
}

#[tokio::test]
async fn a_freeze_reaches_a_replica_that_is_shutting_down_but_still_serving() {
    let mut app = spawn_app_with(with(&[("GATEWAY_SHUTDOWN_DELAY_MS", "4000")])).await;
    let operator = operator_login(&app).await;
    releasable(&app, "disk-during-delay");
    let addr = app.addr;
    let mut open = client(addr).await;
    app.begin_shutdown();
    // Still served during the delay, so still bound by the switch.
    command(&operator, &["freeze", "--reason", "incident 4714"]).await;
    eventually(
        Duration::from_secs(1),
        "the freeze to reach the draining replica",
        || {
            let mut open = open.clone();
            async move {
                let status = open.release_disk(request("disk-nobody-has")).await.err()?;
                (status.code() == Code::FailedPrecondition).then_some(())
            }
        },
    )
    .await;
    let status = open
        .release_disk(request("disk-during-delay"))
        .await
        .unwrap_err();
    assert_error(&status, Code::FailedPrecondition, "RELEASES_FROZEN");
    assert_eq!(app.simulator.release_disk_requests(), 0);
}
