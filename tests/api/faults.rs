//! The fault suite: PostgreSQL stopped in the middle of a burst, a gateway
//! killed with releases in flight, and a soak with faults sprinkled in.
//! Each asserts what callers heard, what the audit trail holds and what
//! Zenlayer received: above all, no `ReleaseDisk` without its attempt row.

use crate::helpers::{
    AppOptions, OwnPostgres, TestApp, as_gateway, eventually, request, spawn_app_with,
    test_settings, unauthenticated_request,
};
use crate::processes::GatewayProcess;
use std::collections::HashMap;
use std::time::Duration;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_types::StatusExt as _;
use zenlayer_gateway::simulator::{Disk, DiskStatus, DiskType, Fault};

/// `count` data disks in the recycle bin, named `prefix-<i>`.
fn recycled_disks(app: &TestApp, prefix: &str, count: usize) -> Vec<String> {
    (0..count)
        .map(|i| {
            let disk = format!("{prefix}-{i}");
            app.simulator
                .put_disk(Disk::new(&disk, DiskType::Data, DiskStatus::Recycled));
            disk
        })
        .collect()
}

/// Every `ReleaseDisk` Zenlayer received has an allowed attempt recorded
/// for its disk (as many as were received, since none is ever resent).
async fn assert_every_release_has_its_attempt(app: &TestApp) {
    let mut received: HashMap<String, i64> = HashMap::new();
    for sent in app.simulator.received_for("ReleaseDisk") {
        let body: serde_json::Value = serde_json::from_slice(&sent.body).unwrap();
        let disk = body["diskId"].as_str().expect("a diskId").to_owned();
        *received.entry(disk).or_default() += 1;
    }
    for (disk, times) in received {
        let attempts: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM audit.release_disk_calls WHERE disk_id = $1 AND decision = 'allowed'",
        )
        .bind(&disk)
        .fetch_one(&app.db)
        .await
        .unwrap();
        assert!(
            attempts >= times,
            "{disk}: {times} ReleaseDisk sent, {attempts} attempts recorded"
        );
    }
}

async fn overall_health(app: &TestApp) -> Option<i32> {
    let mut health = app.health().await;
    let check = HealthCheckRequest {
        service: String::new(),
    };
    Some(health.check(check).await.ok()?.into_inner().status)
}

async fn count(app: &TestApp, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&app.db).await.unwrap()
}

#[tokio::test]
async fn postgres_stopped_in_the_middle_of_a_burst_and_restarted() {
    let mut postgres = OwnPostgres::start().await;
    let app = spawn_app_with(AppOptions {
        admin_database_url: Some(postgres.admin_url()),
        settings: [
            ("DATABASE_ACQUIRE_TIMEOUT_MS", "500"),
            ("DATABASE_STATEMENT_TIMEOUT_MS", "1000"),
            ("GATEWAY_ABANDONED_MARGIN_MS", "200"),
            ("GATEWAY_RECOVERY_INTERVAL_MS", "100"),
            ("GATEWAY_FOLLOW_UP_INTERVAL_MS", "100"),
            ("GATEWAY_RECONCILE_AFTER_MS", "200"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
        ..Default::default()
    })
    .await;
    let disks = recycled_disks(&app, "disk-burst", 40);
    // Each release waits at Zenlayer, so the burst is still going when the
    // database stops.
    app.simulator
        .fail_release(Fault::Latency(Duration::from_millis(200)), 40);
    // Calls keep arriving, one every 25 ms, before, during and after the
    // moment the database stops.
    let client = app.disks().await;
    let burst = tokio::spawn(async move {
        let mut calls = Vec::new();
        for disk in disks {
            let mut client = client.clone();
            let mut call = request(&disk);
            call.set_timeout(Duration::from_secs(5));
            calls.push(tokio::spawn(async move { client.release_disk(call).await }));
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        calls
    });
    eventually(Duration::from_secs(10), "the burst under way", || async {
        (app.simulator.release_disk_requests() >= 3).then_some(())
    })
    .await;
    postgres.stop().await;
    let (mut released, mut unavailable) = (0, 0);
    for call in burst.await.unwrap() {
        let heard = tokio::time::timeout(Duration::from_secs(15), call)
            .await
            .expect("every caller hears")
            .unwrap();
        match heard {
            Ok(_) => released += 1,
            Err(status) => {
                // Answered by the gateway (with its ErrorInfo), not by the
                // client giving up.
                let info = status.get_details_error_info();
                assert!(info.is_some(), "{status:?}");
                unavailable += usize::from(status.code() == Code::Unavailable);
            }
        }
    }
    assert!(unavailable > 0, "some calls met the outage");
    assert!(released > 0, "some were released before it");
    eventually(Duration::from_secs(10), "health NOT_SERVING", || async {
        (overall_health(&app).await == Some(ServingStatus::NotServing as i32)).then_some(())
    })
    .await;

    postgres.start_again().await;
    eventually(Duration::from_secs(30), "health SERVING again", || async {
        (overall_health(&app).await == Some(ServingStatus::Serving as i32)).then_some(())
    })
    .await;
    let after = recycled_disks(&app, "disk-after-outage", 1);
    eventually(Duration::from_secs(10), "a call served again", || async {
        app.release(request(&after[0])).await.ok()
    })
    .await;
    eventually(
        Duration::from_secs(30),
        "outcomes the outage kept from being written to be recorded",
        || async {
            let open = count(
                &app,
                "SELECT count(*) FROM audit.release_disk_calls WHERE outcome IN ('pending', 'unknown')",
            )
            .await;
            (open == 0).then_some(())
        },
    )
    .await;
    assert_every_release_has_its_attempt(&app).await;
}

#[tokio::test]
async fn a_gateway_killed_with_forty_releases_in_flight_leaves_every_attempt_with_an_outcome() {
    let app = spawn_app_with(AppOptions::default()).await;
    let disks = recycled_disks(&app, "disk-inflight", 40);
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
        ("DATABASE_MAX_CONNECTIONS", "20"),
    ] {
        env.insert(key.into(), value.into());
    }
    let gateway = GatewayProcess::spawn(&env).await;
    // Zenlayer holds every release long enough for all to be in flight.
    app.simulator
        .fail_release(Fault::Latency(Duration::from_millis(1_500)), 40);
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", gateway.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let client = zenlayer_gateway::pb::disk_service_client::DiskServiceClient::new(channel);
    let calls: Vec<_> = disks
        .iter()
        .map(|disk| {
            let mut client = client.clone();
            let call = request(disk);
            tokio::spawn(async move { client.release_disk(call).await })
        })
        .collect();
    eventually(
        Duration::from_secs(20),
        "40 releases at Zenlayer",
        || async { (app.simulator.release_disk_requests() >= 40).then_some(()) },
    )
    .await;
    gateway.kill().await;
    for call in calls {
        assert!(call.await.unwrap().is_err(), "no caller heard an answer");
    }
    let _restarted = GatewayProcess::spawn(&env).await;
    eventually(
        Duration::from_secs(60),
        "every attempt to end with an outcome",
        || async {
            let open = count(
                &app,
                "SELECT count(*) FROM audit.release_disk_calls WHERE outcome IN ('pending', 'unknown')",
            )
            .await;
            (open == 0).then_some(())
        },
    )
    .await;
    let attempts = count(
        &app,
        "SELECT count(*) FROM audit.release_disk_calls WHERE decision = 'allowed'",
    )
    .await;
    assert_eq!(attempts, 40);
    assert_eq!(
        app.simulator.release_disk_requests(),
        40,
        "nothing was resent"
    );
    // What Zenlayer did decides each outcome.
    for disk in &disks {
        let outcome: String =
            sqlx::query_scalar("SELECT outcome FROM audit.release_disk_calls WHERE disk_id = $1")
                .bind(disk)
                .fetch_one(&app.db)
                .await
                .unwrap();
        let gone = app.simulator.disk(disk).is_none();
        assert_eq!(outcome, if gone { "succeeded" } else { "failed" }, "{disk}");
    }
    assert_every_release_has_its_attempt(&app).await;
}

/// The soak's length: `SOAK_SECONDS`, or a few seconds in the usual run.
fn soak_length() -> Duration {
    let seconds = std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    Duration::from_secs(seconds)
}

#[tokio::test]
async fn a_soak_with_faults_sprinkled_in_leaves_no_call_pending_and_no_release_unrecorded() {
    let app = spawn_app_with(AppOptions {
        settings: [
            ("ZENLAYER_RATE_LIMIT_RETRIES", "0"),
            ("ZENLAYER_TIMEOUT_MS", "1000"),
            ("GATEWAY_FOLLOW_UP_INTERVAL_MS", "50"),
            ("GATEWAY_RECONCILE_AFTER_MS", "300"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
        ..Default::default()
    })
    .await;
    let client = app.disks().await;
    let until = tokio::time::Instant::now() + soak_length();
    let workers: Vec<_> = (0..8)
        .map(|worker| {
            let mut client = client.clone();
            let simulator = app.simulator.clone();
            tokio::spawn(async move {
                let mut calls = 0usize;
                while tokio::time::Instant::now() < until {
                    let disk = format!("disk-soak-{worker}-{calls}");
                    simulator.put_disk(Disk::new(&disk, DiskType::Data, DiskStatus::Recycled));
                    let fault = match calls % 13 {
                        3 => Some(Fault::Status {
                            http_status: 500,
                            code: "INTERNAL_SERVER_ERROR".into(),
                        }),
                        5 => Some(Fault::ActThenDrop),
                        7 => Some(Fault::RateLimited),
                        9 => Some(Fault::Latency(Duration::from_millis(50))),
                        _ => None,
                    };
                    if let Some(fault) = fault {
                        simulator.fail_release(fault, 1);
                    }
                    let call = if calls % 13 == 11 {
                        unauthenticated_request(&disk)
                    } else {
                        request(&disk)
                    };
                    let _ = client.release_disk(call).await;
                    calls += 1;
                }
                calls
            })
        })
        .collect();
    let mut calls = 0;
    for worker in workers {
        calls += worker.await.unwrap();
    }
    eprintln!("soak: {calls} calls");
    eventually(
        Duration::from_secs(30),
        "no call left pending or unknown",
        || async {
            let open = count(
                &app,
                "SELECT count(*) FROM audit.release_disk_calls WHERE outcome IN ('pending', 'unknown')",
            )
            .await;
            (open == 0).then_some(())
        },
    )
    .await;
    let recorded = count(&app, "SELECT count(*) FROM audit.release_disk_calls").await;
    assert_eq!(recorded as usize, calls, "every call left its record");
    let allowed = count(
        &app,
        "SELECT count(*) FROM audit.release_disk_calls WHERE decision = 'allowed'",
    )
    .await;
    assert_eq!(
        app.simulator.release_disk_requests() as i64,
        allowed,
        "each allowed attempt reached Zenlayer once, and nothing else did"
    );
    assert_every_release_has_its_attempt(&app).await;
}
