//! Group commit: concurrent calls' audit records share one commit, and
//! every guarantee of a commit per record still holds — each attempt is
//! durable before its release is sent, a key is claimed once, one record
//! the database refuses fails alone, and the event log stays gap-free.

use crate::helpers::{
    AppOptions, TestApp, admin_database_url, as_gateway, assert_error, eventually, fresh_database,
    metric, request, spawn_app, spawn_app_with, stall_attempts,
};
use crate::pg_relay::PgRelay;
use crate::tokens::{bearer, good_token};
use std::time::Duration;
use tonic::{Code, Request, Status};
use uuid::Uuid;
use zenlayer_gateway::pb::{ReleaseDiskRequest, ReleaseDiskResponse};
use zenlayer_gateway::simulator::{Disk, DiskStatus, DiskType};

fn releasable(app: &TestApp, disk_id: &str) {
    app.simulator
        .put_disk(Disk::new(disk_id, DiskType::Data, DiskStatus::Recycled));
}

/// How many calls the audit trail holds as released.
async fn succeeded(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM audit.release_disk_calls WHERE outcome = 'succeeded'")
        .fetch_one(&app.db)
        .await
        .unwrap()
}

/// Sends every call at once, each on its own connection.
async fn all_at_once(
    app: &TestApp,
    calls: Vec<Request<ReleaseDiskRequest>>,
) -> Vec<Result<ReleaseDiskResponse, Status>> {
    let mut running = Vec::new();
    for call in calls {
        let mut client = app.disks().await;
        running.push(tokio::spawn(async move {
            client.release_disk(call).await.map(|r| r.into_inner())
        }));
    }
    let mut answers = Vec::new();
    for call in running {
        answers.push(call.await.unwrap());
    }
    answers
}

/// Holds every audit write until `calls` calls have looked at their disks
/// and are waiting to be recorded, so that they reach the writer together;
/// then lets them through.
async fn gathered<T>(app: &TestApp, calls: usize, send: impl std::future::Future<Output = T>) -> T {
    let stall = stall_attempts(app).await;
    let sent = tokio::spawn({
        let simulator = app.simulator.clone();
        async move {
            eventually(Duration::from_secs(20), "every pre-flight", || async {
                (simulator.received_for("DescribeDisks").len() >= calls).then_some(())
            })
            .await;
            // Each call is a moment from its look to its write.
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert_eq!(
                simulator.release_disk_requests(),
                0,
                "nothing is sent before its attempt is committed"
            );
            sqlx::Connection::close(stall).await.unwrap();
        }
    });
    let answers = send.await;
    sent.await.unwrap();
    answers
}

async fn events(app: &TestApp) -> Vec<(i64, String, Uuid)> {
    sqlx::query_as("SELECT log_index, kind, call_id FROM audit.events ORDER BY log_index")
        .fetch_all(&app.db)
        .await
        .unwrap()
}

#[tokio::test]
async fn concurrent_calls_share_commits_and_each_is_recorded_before_it_is_sent() {
    let app = spawn_app().await;
    let disks: Vec<String> = (0..24).map(|i| format!("disk-batch-{i:02}")).collect();
    for disk in &disks {
        releasable(&app, disk);
    }
    let calls = disks.iter().map(|d| request(d)).collect();
    let answers = gathered(&app, disks.len(), all_at_once(&app, calls)).await;

    for answer in &answers {
        assert!(answer.is_ok(), "{answer:?}");
    }
    assert_eq!(app.simulator.release_disk_requests(), 24);
    let batches = metric(&app, "zenlayer_gateway_audit_batch_records_count").await;
    let records = metric(&app, "zenlayer_gateway_audit_batch_records_sum").await;
    assert_eq!(records, 48, "an attempt and an outcome per call");
    assert!(
        batches < records / 2,
        "{records} records in {batches} writes: concurrent calls share commits"
    );
    assert_eq!(succeeded(&app).await, 24);
}

#[tokio::test]
async fn the_event_log_numbers_every_record_without_gaps_in_commit_order() {
    let app = spawn_app().await;
    for i in 0..12 {
        releasable(&app, &format!("disk-log-{i:02}"));
    }
    let mut calls: Vec<_> = (0..12)
        .map(|i| request(&format!("disk-log-{i:02}")))
        .collect();
    calls.push(crate::helpers::unauthenticated_request("disk-log-00"));
    let answers = gathered(&app, 12, all_at_once(&app, calls)).await;
    assert_eq!(answers.iter().filter(|a| a.is_ok()).count(), 12);

    let events = events(&app).await;
    let indexes: Vec<i64> = events.iter().map(|e| e.0).collect();
    assert_eq!(
        indexes,
        (0..25).collect::<Vec<_>>(),
        "12 attempts, 12 outcomes and a refusal, numbered 0.. with no gap"
    );
    for (index, kind, call_id) in events.iter().filter(|e| e.1 == "outcome") {
        let attempt = events
            .iter()
            .find(|e| e.1 == "attempt" && e.2 == *call_id)
            .expect("every outcome's attempt is in the log");
        assert!(attempt.0 < *index, "{kind} {call_id} before its attempt");
    }
    let head: i64 = sqlx::query_scalar("SELECT size FROM audit.log_head")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(head, 25);
}

#[tokio::test]
async fn one_key_claimed_twice_in_one_batch_is_released_once() {
    let app = spawn_app().await;
    let token = good_token();
    let calls = (0..8)
        .map(|_| {
            let mut call = crate::helpers::unauthenticated_request("disk-recycled-data");
            call.get_mut().idempotency_key = "one-batch-key".to_owned();
            call.metadata_mut().insert("authorization", bearer(&token));
            call
        })
        .collect();
    let answers = gathered(&app, 8, all_at_once(&app, calls)).await;

    assert_eq!(
        app.simulator.release_disk_requests(),
        1,
        "exactly one upstream ReleaseDisk"
    );
    let forwarded = answers
        .iter()
        .filter(|a| matches!(a, Ok(r) if !r.replayed))
        .count();
    assert_eq!(forwarded, 1, "{answers:?}");
    for answer in answers.iter().filter(|a| a.is_err()) {
        assert_error(
            answer.as_ref().unwrap_err(),
            Code::Aborted,
            "IDEMPOTENCY_KEY_IN_FLIGHT",
        );
    }
    let claimed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit.release_attempts WHERE idempotency_key = 'one-batch-key' AND replay_of IS NULL AND decision = 'allowed'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(claimed, 1, "one call holds the key; the others are replays");
}

#[tokio::test]
async fn a_record_the_database_refuses_fails_alone_and_is_not_sent() {
    // As an owner's faulty trigger, a check, a bad value or a deadlock
    // would: the database refuses this one attempt, and only it.
    for (errcode, as_what) in [
        ("P0001", "a trigger's exception"),
        ("23514", "a check constraint"),
        ("22023", "an invalid value"),
        ("40P01", "a deadlock"),
    ] {
        refused_alone(errcode, as_what).await;
    }
}

/// Seven calls, the fourth of which (`disk-refused-by-db`) the database
/// refuses with `errcode` every time it is written: batches of one, one
/// and five, the refused one in the five.
async fn one_refused_with(errcode: &str) -> (TestApp, Vec<Result<(), Status>>) {
    let app = spawn_app().await;
    for i in 0..6 {
        releasable(&app, &format!("disk-good-{i}"));
    }
    releasable(&app, "disk-refused-by-db");
    // The codes are the test's own constants.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE FUNCTION pg_temp_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF NEW.disk_id = 'disk-refused-by-db' THEN
                 RAISE EXCEPTION 'refused for the test' USING ERRCODE = '{errcode}';
             END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER refuse_one BEFORE INSERT ON audit.release_attempts
             FOR EACH ROW EXECUTE FUNCTION pg_temp_refuse();"
    )))
    .execute(&app.db)
    .await
    .unwrap();
    let mut disks: Vec<String> = (0..6).map(|i| format!("disk-good-{i}")).collect();
    disks.insert(3, "disk-refused-by-db".to_owned());
    let stall = stall_attempts(&app).await;
    let (calls, _) = two_batches_and_a_queue(&app, &disks).await;
    sqlx::Connection::close(stall).await.unwrap();
    let mut answers = Vec::new();
    for call in calls {
        let answer = tokio::time::timeout(Duration::from_secs(20), call)
            .await
            .expect("the call ends");
        answers.push(answer.unwrap());
    }
    (app, answers)
}

async fn refused_alone(errcode: &str, as_what: &str) {
    let (app, answers) = one_refused_with(errcode).await;
    for (i, answer) in answers.iter().enumerate() {
        if i == 3 {
            assert_error(
                answer.as_ref().unwrap_err(),
                Code::Unavailable,
                "AUDIT_UNAVAILABLE",
            );
        } else {
            assert!(answer.is_ok(), "{as_what}: call {i}: {answer:?}");
        }
    }
    assert_eq!(app.simulator.release_disk_requests(), 6, "{as_what}");
    assert!(
        app.simulator
            .received_for("ReleaseDisk")
            .iter()
            .all(|r| !String::from_utf8_lossy(&r.body).contains("disk-refused-by-db")),
        "{as_what}: the call without its attempt row was never sent"
    );
}

#[tokio::test]
async fn a_batch_failed_by_the_server_or_a_timeout_fails_whole_and_is_not_written_again() {
    // Errors that say nothing about one record: a statement that may have
    // committed, a statement cancelled (as a timeout cancels it), a full
    // disk. The batch holding the fourth call fails with it.
    for (errcode, as_what) in [
        ("40003", "a statement whose completion is unknown"),
        ("57014", "a cancelled statement"),
        ("53100", "a full disk"),
    ] {
        let (app, answers) = one_refused_with(errcode).await;
        let failed: Vec<usize> = (0..answers.len())
            .filter(|&i| answers[i].is_err())
            .collect();
        assert_eq!(
            failed,
            [2, 3, 4, 5, 6],
            "{as_what}: the calls batched with the fourth fail with it: {answers:?}"
        );
        for &i in &failed {
            assert_error(
                answers[i].as_ref().unwrap_err(),
                Code::Unavailable,
                "AUDIT_UNAVAILABLE",
            );
        }
        let released = (answers.len() - failed.len()) as u64;
        assert_eq!(app.simulator.release_disk_requests(), released, "{as_what}");
        let attempts: i64 = sqlx::query_scalar("SELECT count(*) FROM audit.release_attempts")
            .fetch_one(&app.db)
            .await
            .unwrap();
        assert_eq!(
            attempts, released as i64,
            "{as_what}: no record of the failed batch was written again"
        );
    }
}

/// While the attempts table is stalled: releases of `disks`, the first two
/// each a batch of one (whose backends are returned) holding the writer's
/// two batch slots, the others queued behind them, to be written as one
/// batch once a slot frees. Returns once every call is waiting.
async fn two_batches_and_a_queue(
    app: &TestApp,
    disks: &[String],
) -> (Vec<tokio::task::JoinHandle<Result<(), Status>>>, [i32; 2]) {
    let mut calls = vec![sent(app, &disks[0]).await];
    let first_batch = waiting_batch(app, &[]).await;
    calls.push(sent(app, &disks[1]).await);
    let second_batch = waiting_batch(app, &[first_batch]).await;
    for disk in &disks[2..] {
        calls.push(sent(app, disk).await);
    }
    eventually(Duration::from_secs(20), "every pre-flight", || async {
        (app.simulator.received_for("DescribeDisks").len() == disks.len()).then_some(())
    })
    .await;
    // Each call is a moment from its look to its write.
    tokio::time::sleep(Duration::from_millis(200)).await;
    (calls, [first_batch, second_batch])
}

/// The backend of the one audit batch waiting on a lock that is not in
/// `seen`, once there is one (readers of the stalled table wait too).
async fn waiting_batch(app: &TestApp, seen: &[i32]) -> i32 {
    eventually(Duration::from_secs(20), "a batch waiting", || async {
        sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity
              WHERE datname = current_database() AND wait_event_type = 'Lock'
                AND query LIKE '%audit.write_batch(%' AND pid <> ALL($1)",
        )
        .bind(seen)
        .fetch_optional(&app.db)
        .await
        .unwrap()
    })
    .await
}

/// A release of `disk` on its way, on its own connection.
async fn sent(app: &TestApp, disk: &str) -> tokio::task::JoinHandle<Result<(), Status>> {
    let mut client = app.disks().await;
    let call = request(disk);
    tokio::spawn(async move { client.release_disk(call).await.map(drop) })
}

async fn terminate(app: &TestApp, backend: i32) {
    let killed: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(backend)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert!(killed);
}

#[tokio::test]
async fn batches_whose_connection_is_lost_are_not_written_again_and_nothing_is_sent() {
    let app = spawn_app().await;
    let disks: Vec<String> = (0..5).map(|i| format!("disk-lost-batch-{i}")).collect();
    for disk in &disks {
        releasable(&app, disk);
    }
    let stall = stall_attempts(&app).await;
    // Batches of one, one and (once the slots free) three.
    let (mut queued, [first_batch, second_batch]) = two_batches_and_a_queue(&app, &disks).await;
    let second = queued.remove(1);
    let first = queued.remove(0);
    // Each batch's connection dies while it waits (the server says so with
    // an error first, unlike a refused record's): whether a lost connection
    // committed is not known in general, so no batch, of one record or of
    // several, may be written again on another connection.
    terminate(&app, first_batch).await;
    terminate(&app, second_batch).await;
    let ended = |call: tokio::task::JoinHandle<Result<(), Status>>| async move {
        tokio::time::timeout(Duration::from_secs(20), call)
            .await
            .expect("the call ends")
            .unwrap()
    };
    for call in [first, second] {
        let status = ended(call).await.unwrap_err();
        assert_error(&status, Code::Unavailable, "AUDIT_UNAVAILABLE");
    }
    let third_batch = waiting_batch(&app, &[first_batch, second_batch]).await;
    terminate(&app, third_batch).await;
    sqlx::Connection::close(stall).await.unwrap();
    for call in queued {
        let status = ended(call).await.unwrap_err();
        assert_error(&status, Code::Unavailable, "AUDIT_UNAVAILABLE");
    }
    // Given time to be written again, none is, and nothing is released.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.simulator.release_disk_requests(), 0);
    let attempts: i64 = sqlx::query_scalar("SELECT count(*) FROM audit.release_attempts")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(attempts, 0, "a lost batch was written again");
    let batches = metric(&app, "zenlayer_gateway_audit_batch_records_count").await;
    let records = metric(&app, "zenlayer_gateway_audit_batch_records_sum").await;
    assert_eq!((batches, records), (3, 5), "batches of one, one and three");
}

/// The writer keeps its connections between batches, rather than handing
/// each back to the pool, which would test it with one more round trip.
/// One that died while kept (as a database restarted meanwhile leaves it)
/// is tested once it has sat idle a while, and replaced: the next call
/// loses nothing.
#[tokio::test]
async fn a_kept_connection_that_died_while_idle_is_replaced_unseen() {
    let app = spawn_app().await;
    releasable(&app, "disk-kept-1");
    releasable(&app, "disk-kept-2");
    let mut client = app.disks().await;
    let first = client.release_disk(request("disk-kept-1")).await.unwrap();
    let writers: Vec<i32> = sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity
          WHERE datname = current_database() AND state = 'idle'
            AND query LIKE '%audit.write_batch(%'",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert!(!writers.is_empty(), "the writer keeps its connections");
    for backend in writers {
        terminate(&app, backend).await;
    }
    // Longer than a kept connection is used untested.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let second = client
        .release_disk(request("disk-kept-2"))
        .await
        .expect("written on a fresh connection");
    let receipts = [first, second].map(|r| r.into_inner().audit_log_index);
    assert!(receipts.iter().all(Option::is_some), "{receipts:?}");
    assert_eq!(succeeded(&app).await, 2);
    assert_eq!(app.simulator.release_disk_requests(), 2);
}

/// A lone call's audit records cost one round trip each: the batch and its
/// receipts in one call, on a connection the writer keeps (the pool would
/// test a connection handed back with one more). Counted on the wire, in
/// the Sync messages the writer's connection sends.
#[tokio::test]
async fn a_lone_release_makes_one_round_trip_per_audit_record() {
    const CALLS: usize = 20;
    let database_url = fresh_database(&admin_database_url()).await;
    let mut through_relay = reqwest::Url::parse(&as_gateway(&database_url)).unwrap();
    let upstream = format!(
        "{}:{}",
        through_relay.host_str().unwrap(),
        through_relay.port().unwrap_or(5432)
    );
    let relay = PgRelay::start(
        tokio::net::lookup_host(&upstream)
            .await
            .unwrap()
            .next()
            .unwrap(),
    )
    .await;
    through_relay.set_host(Some("127.0.0.1")).unwrap();
    through_relay.set_port(Some(relay.addr.port())).unwrap();
    // In the clear, so that the relay can read the messages.
    through_relay
        .query_pairs_mut()
        .append_pair("sslmode", "disable");
    let app = spawn_app_with(AppOptions {
        database_url: Some(database_url),
        settings: [("DATABASE_URL".to_owned(), through_relay.to_string())].into(),
        ..Default::default()
    })
    .await;
    let mut client = app.disks().await;
    // The first call prepares the writer's statement on its connection.
    for n in 0..=CALLS {
        releasable(&app, &format!("disk-lone-{n}"));
    }
    client.release_disk(request("disk-lone-0")).await.unwrap();
    let before = relay.audit_writer_syncs();
    for n in 1..=CALLS {
        client
            .release_disk(request(&format!("disk-lone-{n}")))
            .await
            .unwrap();
    }
    let trips = relay.audit_writer_syncs() - before;
    // An attempt and an outcome each. A few more may come from a second
    // kept connection's first use, or a ping after a pause of a second on
    // a loaded machine; handing connections back to the pool would add two
    // a call.
    assert!(
        (2 * CALLS..=2 * CALLS + CALLS / 4).contains(&trips),
        "{trips} round trips for {CALLS} calls"
    );
}
