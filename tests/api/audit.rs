//! The audit trail, read the way security teams read it: through
//! `audit.release_disk_calls`, over a real PostgreSQL connection.

use crate::helpers::{
    ACCESS_KEY_PASSWORD, AppOptions, OwnPostgres, TestApp, captured_logs, eventually, spawn_app,
    spawn_app_with, spawn_app_with_settings, until_the_release_is_sent,
};
use crate::helpers::{assert_error, request, unauthenticated_request};
use crate::tokens::{self, RSA, bearer, good_claims, now};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::{Connection as _, PgConnection};
use std::time::Duration;
use tonic::Code;
use tonic_types::StatusExt as _;
use uuid::Uuid;
use zenlayer_gateway::simulator::Fault;

/// The view's row for `call_id`, as JSON.
async fn call_row(app: &TestApp, call_id: &str) -> Value {
    let id = Uuid::parse_str(call_id).expect("audit ids are UUIDs");
    sqlx::query_scalar::<_, Value>(
        "SELECT row_to_json(c) FROM audit.release_disk_calls c WHERE call_id = $1",
    )
    .bind(id)
    .fetch_one(&app.db)
    .await
    .expect("the call has a row")
}

/// Waits (polling the table, bounded) until the call's outcome is `wanted`.
async fn outcome_becomes(app: &TestApp, call_id: &str, wanted: &str) -> Value {
    let what = format!("the outcome to become {wanted}");
    eventually(Duration::from_secs(30), &what, || async {
        Some(call_row(app, call_id).await).filter(|row| row["outcome"] == wanted)
    })
    .await
}

/// The `audit_id` an error status carries in its ErrorInfo.
fn audit_id(status: &tonic::Status) -> String {
    let info = status.get_details_error_info().expect("an ErrorInfo");
    info.metadata.get("audit_id").cloned().expect("an audit_id")
}

#[tokio::test]
async fn a_successful_release_is_recorded_with_who_what_why_and_zenlayers_answer() {
    let app = spawn_app().await;
    let token = tokens::good_token();
    let mut call = request("disk-recycled-data");
    call.metadata_mut().insert("authorization", bearer(&token));
    call.metadata_mut()
        .insert("x-request-id", "incident-7".parse().unwrap());
    call.metadata_mut().insert(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            .parse()
            .unwrap(),
    );
    let response = app.release(call).await.unwrap().into_inner();

    let row = outcome_becomes(&app, &response.audit_id, "succeeded").await;
    assert_eq!(row["decision"], "allowed");
    assert_eq!(row["zenlayer_request_id"], response.request_id);
    assert_eq!(row["grpc_code"], "OK");
    assert_eq!(row["http_status"], 200);
    assert_eq!(row["principal"], tokens::SUBJECT);
    assert_eq!(row["issuer"], tokens::ISSUER);
    assert_eq!(row["client_id"], "disk-janitor");
    assert!(row["token_jti"].as_str().is_some_and(|j| !j.is_empty()));
    assert_eq!(
        row["token_fingerprint"],
        hex::encode(Sha256::digest(token.as_bytes()))
    );
    assert_eq!(row["roles"], json!(["disk:release", "viewer"]));
    assert_eq!(row["disk_id"], "disk-recycled-data");
    assert_eq!(row["reason"], "CHG-1234 remove leftover volume");
    assert_eq!(row["x_request_id"], "incident-7");
    assert_eq!(row["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert!(
        row["peer_addr"]
            .as_str()
            .is_some_and(|p| p.starts_with("127.0.0.1:"))
    );
    assert!(
        row["user_agent"]
            .as_str()
            .is_some_and(|ua| ua.contains("tonic"))
    );
    assert!(row["completed_at"].is_string() && row["duration_ms"].as_i64().is_some_and(|d| d >= 0));
}

#[tokio::test]
async fn every_kind_of_refusal_is_recorded_with_its_reason_and_never_forwarded() {
    let app = spawn_app().await;
    let mut disks = app.disks().await;
    let expired = RSA.sign(&{
        let mut c = good_claims();
        c["exp"] = json!(now() - 60);
        c
    });
    let no_role = RSA.sign(&{
        let mut c = good_claims();
        c["roles"] = json!(["viewer"]);
        c
    });
    let mut bad_token = unauthenticated_request("disk-recycled-data");
    bad_token
        .metadata_mut()
        .insert("authorization", bearer(&expired));
    let mut without_role = unauthenticated_request("disk-recycled-data");
    without_role
        .metadata_mut()
        .insert("authorization", bearer(&no_role));
    let cases = [
        (
            unauthenticated_request("disk-recycled-data"),
            "denied",
            "TOKEN_MISSING",
            "UNAUTHENTICATED",
        ),
        (bad_token, "denied", "TOKEN_EXPIRED", "UNAUTHENTICATED"),
        (without_role, "denied", "ROLE_MISSING", "PERMISSION_DENIED"),
        (
            request("bad disk id!"),
            "invalid",
            "INVALID_DISK_ID",
            "INVALID_ARGUMENT",
        ),
    ];
    for (call, decision, reason, code) in cases {
        let status = disks.release_disk(call).await.unwrap_err();
        let row = call_row(&app, &audit_id(&status)).await;
        assert_eq!(
            (row["decision"].as_str(), row["decision_reason"].as_str()),
            (Some(decision), Some(reason)),
            "{row}"
        );
        assert_eq!(row["grpc_code"], code);
        assert_eq!(row["outcome"], "failed");
        assert_eq!(row["error_message"], status.message());
        assert!(row["zenlayer_request_id"].is_null());
    }
    let no_role_row = sqlx::query_scalar::<_, Value>(
        "SELECT row_to_json(c) FROM audit.release_disk_calls c WHERE decision_reason = 'ROLE_MISSING'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(
        no_role_row["principal"],
        tokens::SUBJECT,
        "a verified caller without the role is named"
    );
    assert_eq!(
        no_role_row["token_fingerprint"],
        hex::encode(Sha256::digest(no_role.as_bytes()))
    );
    assert_eq!(app.simulator.requests_received(), 0);
}

#[tokio::test]
async fn a_zenlayer_error_is_recorded_as_failed_with_its_code_status_and_request_id() {
    let app = spawn_app().await;
    app.simulator.fail_release(
        Fault::Status {
            http_status: 404,
            code: "INVALID_DISK_NOT_FOUND".into(),
        },
        1,
    );
    let status = app
        .release(request("disk-recycled-data"))
        .await
        .unwrap_err();
    let row = outcome_becomes(&app, &audit_id(&status), "failed").await;
    assert_eq!(row["decision"], "allowed");
    assert_eq!(row["zenlayer_code"], "INVALID_DISK_NOT_FOUND");
    assert_eq!(row["http_status"], 404);
    assert_eq!(row["grpc_code"], "NOT_FOUND");
    assert_eq!(
        row["zenlayer_request_id"].as_str(),
        app.simulator.received_for("ReleaseDisk")[0]
            .answered_request_id
            .as_deref()
    );
    assert_eq!(row["error_message"], status.message());
}

#[tokio::test]
async fn an_unanswered_call_is_recorded_as_unknown() {
    let app = spawn_app_with_settings(&[("ZENLAYER_TIMEOUT_MS", "300")]).await;
    app.simulator.fail_release(Fault::Hang, 1);
    let status = app
        .release(request("disk-recycled-data"))
        .await
        .unwrap_err();
    let row = outcome_becomes(&app, &audit_id(&status), "unknown").await;
    assert_eq!(row["grpc_code"], "UNAVAILABLE");
    assert_eq!(row["outcome_recorded_by"], "call");
}

#[tokio::test]
async fn without_its_database_the_gateway_refuses_to_forward_and_recovers_when_it_returns() {
    let mut postgres = OwnPostgres::start().await;
    let app = spawn_app_with(AppOptions {
        admin_database_url: Some(postgres.admin_url()),
        ..Default::default()
    })
    .await;
    postgres.stop().await;

    let status = app
        .release(request("disk-recycled-data"))
        .await
        .unwrap_err();
    assert_error(&status, Code::Unavailable, "AUDIT_UNAVAILABLE");
    assert!(
        status
            .message()
            .contains("the release was not sent to Zenlayer"),
        "{}",
        status.message()
    );
    assert_eq!(app.simulator.release_disk_requests(), 0);

    postgres.start_again().await;
    let response = app
        .release(request("disk-recycled-data"))
        .await
        .expect("recovers without a restart");
    assert_eq!(app.simulator.release_disk_requests(), 1);
    outcome_becomes(&app, &response.into_inner().audit_id, "succeeded").await;
}

#[tokio::test]
async fn a_caller_that_cancels_still_leaves_a_completed_record() {
    let app = spawn_app().await;
    app.simulator
        .fail_release(Fault::Latency(Duration::from_millis(500)), 1);
    let mut disks = app.disks().await;
    let mut call = request("disk-recycled-data");
    call.metadata_mut()
        .insert("x-request-id", "cancelled-call".parse().unwrap());
    let in_flight = tokio::spawn(async move { disks.release_disk(call).await });
    until_the_release_is_sent(&app).await;
    in_flight.abort();
    let call_id: Uuid = sqlx::query_scalar(
        "SELECT call_id FROM audit.release_disk_calls WHERE x_request_id = 'cancelled-call'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    let row = outcome_becomes(&app, &call_id.to_string(), "succeeded").await;
    assert_eq!(
        row["zenlayer_request_id"].as_str(),
        app.simulator.received_for("ReleaseDisk")[0]
            .answered_request_id
            .as_deref()
    );
}

#[tokio::test]
async fn audit_rows_cannot_be_changed_by_the_gateway_by_readers_or_by_the_owner() {
    let app = spawn_app().await;
    app.release(request("disk-recycled-data")).await.unwrap();
    let mut admin = PgConnection::connect(&app.database_url).await.unwrap();
    let tampering = [
        "UPDATE audit.release_attempts SET principal = 'someone-else'",
        "DELETE FROM audit.release_attempts",
        "TRUNCATE audit.release_attempts CASCADE",
        "UPDATE audit.release_outcomes SET outcome = 'failed'",
        "DELETE FROM audit.release_outcomes",
        "TRUNCATE audit.release_outcomes",
    ];
    for role in ["zenlayer_gateway", "audit_reader", "postgres"] {
        for statement in tampering {
            let result = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "BEGIN; SET LOCAL ROLE {role}; {statement}; COMMIT;"
            )))
            .execute(&mut admin)
            .await;
            let error = result.expect_err(&format!("{role} could run {statement}"));
            if role == "postgres" {
                // A superuser has every privilege: only the guard stops it.
                assert!(
                    error.to_string().contains("append-only"),
                    "{statement}: {error}"
                );
            }
            sqlx::raw_sql("ROLLBACK").execute(&mut admin).await.unwrap();
        }
    }
    let insert = sqlx::raw_sql(
        "BEGIN; SET LOCAL ROLE audit_reader; INSERT INTO audit.release_attempts (call_id, received_at, x_request_id, trace_id, disk_id, decision) VALUES (gen_random_uuid(), now(), 'x', 'x', 'x', 'allowed'); COMMIT;",
    )
    .execute(&mut admin)
    .await;
    assert!(insert.is_err(), "audit_reader cannot write");
    sqlx::raw_sql("ROLLBACK").execute(&mut admin).await.unwrap();
    let readable: i64 =
        sqlx::query_scalar("SELECT count(*) FROM (SELECT 1 FROM audit.release_disk_calls) v")
            .fetch_one(&app.db)
            .await
            .unwrap();
    let as_reader = sqlx::raw_sql(
        "BEGIN; SET LOCAL ROLE audit_reader; SELECT * FROM audit.release_disk_calls; COMMIT;",
    )
    .execute(&mut admin)
    .await;
    assert!(
        as_reader.is_ok(),
        "audit_reader can read the view: {as_reader:?}"
    );
    assert_eq!(readable, 1);
}

#[tokio::test]
async fn a_call_left_pending_by_a_stopped_gateway_is_marked_unknown_after_a_restart() {
    let first = spawn_app().await;
    let abandoned = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO audit.release_attempts (call_id, received_at, principal, x_request_id, trace_id, disk_id, decision)
         VALUES ($1, now() - interval '1 hour', 'svc', 'r', 't', 'disk-recycled-data', 'allowed')",
    )
    .bind(abandoned)
    .execute(&first.db)
    .await
    .unwrap();
    let database_url = first.database_url.clone();
    first.shut_down().await.unwrap();

    let second = spawn_app_with(AppOptions {
        database_url: Some(database_url),
        ..Default::default()
    })
    .await;
    let row = outcome_becomes(&second, &abandoned.to_string(), "unknown").await;
    assert_eq!(row["outcome_recorded_by"], "recovery");
    assert!(
        row["error_message"]
            .as_str()
            .unwrap()
            .contains("DescribeDisks")
    );
}

#[tokio::test]
async fn a_recent_pending_call_is_left_alone_by_the_recovery_sweep() {
    let app = spawn_app_with_settings(&[("GATEWAY_RECOVERY_INTERVAL_MS", "20")]).await;
    let recent = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO audit.release_attempts (call_id, received_at, x_request_id, trace_id, disk_id, decision)
         VALUES ($1, now(), 'r', 't', 'disk-x', 'allowed')",
    )
    .bind(recent)
    .execute(&app.db)
    .await
    .unwrap();
    // Let several sweeps pass, then check: a call within the upstream
    // timeout may still be answered.
    let old = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO audit.release_attempts (call_id, received_at, x_request_id, trace_id, disk_id, decision)
         VALUES ($1, now() - interval '1 day', 'r', 't', 'disk-y', 'allowed')",
    )
    .bind(old)
    .execute(&app.db)
    .await
    .unwrap();
    outcome_becomes(&app, &old.to_string(), "unknown").await;
    assert_eq!(
        call_row(&app, &recent.to_string()).await["outcome"],
        "pending"
    );
}

#[tokio::test]
async fn neither_tokens_nor_the_zenlayer_secret_reach_the_audit_tables_or_the_logs() {
    let app = spawn_app().await;
    let token = tokens::good_token();
    let mut disks = app.disks().await;
    for disk in ["disk-recycled-data", "disk-in-use", "bad id"] {
        let mut call = unauthenticated_request(disk);
        call.metadata_mut().insert("authorization", bearer(&token));
        let _ = disks.release_disk(call).await;
    }
    let mut expired = unauthenticated_request("disk-system");
    let expired_token = RSA.sign(&{
        let mut c = good_claims();
        c["exp"] = json!(now() - 60);
        c
    });
    expired
        .metadata_mut()
        .insert("authorization", bearer(&expired_token));
    let _ = disks.release_disk(expired).await;

    let everything: String = sqlx::query_scalar(
        "SELECT coalesce(string_agg(t, ' '), '') FROM (
            SELECT row_to_json(a)::text AS t FROM audit.release_attempts a
            UNION ALL SELECT row_to_json(o)::text FROM audit.release_outcomes o) rows",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    let logs = captured_logs();
    assert!(
        everything.contains("disk-in-use"),
        "the check reads real rows"
    );
    assert!(logs.contains("disk-in-use"), "the check reads real logs");
    for secret in [token.as_str(), expired_token.as_str(), ACCESS_KEY_PASSWORD] {
        let signature = secret.rsplit('.').next().unwrap();
        assert!(
            !everything.contains(signature),
            "a secret is in the audit tables"
        );
        assert!(!logs.contains(signature), "a secret is in the logs");
    }
}

#[tokio::test]
async fn a_server_side_failure_at_zenlayer_is_recorded_as_unknown_not_failed() {
    let app = spawn_app().await;
    for code in ["INTERNAL_SERVER_ERROR", "REQUEST_TIMED_OUT"] {
        app.simulator.fail_release(
            Fault::Status {
                http_status: 500,
                code: code.to_owned(),
            },
            1,
        );
        let status = app
            .release(request("disk-recycled-data"))
            .await
            .unwrap_err();
        assert_error(&status, Code::Unavailable, code);
        assert!(
            status.message().contains("may or may not"),
            "{}",
            status.message()
        );
        let row = outcome_becomes(&app, &audit_id(&status), "unknown").await;
        assert_eq!(row["zenlayer_code"], code);
    }
    app.simulator.fail_release(
        Fault::Status {
            http_status: 503,
            code: "SERVICE_TEMPORARY_UNAVAILABLE".to_owned(),
        },
        1,
    );
    let status = app
        .release(request("disk-recycled-data"))
        .await
        .unwrap_err();
    outcome_becomes(&app, &audit_id(&status), "failed").await;
}
