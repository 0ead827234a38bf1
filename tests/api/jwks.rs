//! The JWKS key source under faults: a slow endpoint flooded with unknown
//! key ids by callers who give up, and an endpoint that is down when the
//! gateway starts. Each wait polls against a deadline.

use crate::helpers::{
    TestApp, assert_error, eventually, spawn_app_with_settings, unauthenticated_request,
};
use crate::tokens::{self, KeyServer, RSA, RSA_NEXT, bearer, good_claims};
use jsonwebtoken::{Algorithm, Header};
use std::time::Duration;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_types::StatusExt as _;
use zenlayer_gateway::pb::disk_service_client::DiskServiceClient;

const DISK_SERVICE: &str = "zenlayer.vm.v1.DiskService";

/// The health entries that say whether the gateway can serve releases.
const READINESS: [&str; 3] = ["", DISK_SERVICE, "jwks"];

/// The deadline of a caller who is not testing deadlines.
const PATIENT: Duration = Duration::from_secs(5);

/// A token signed by a published key but naming a key id nobody publishes.
fn token_with_unknown_kid(n: usize) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(format!("unknown-{n}"));
    RSA.sign_with_header(header, &good_claims())
}

/// One ReleaseDisk call over `channel` with `token`, abandoned by the
/// caller after `deadline`.
async fn release_with(channel: Channel, token: &str, deadline: Duration) -> Result<String, Status> {
    let mut request = unauthenticated_request("disk-recycled-data");
    request
        .metadata_mut()
        .insert("authorization", bearer(token));
    // The deadline travels as `grpc-timeout` only: the gateway, not a timer
    // racing it in the client, gives up for the caller (and says so).
    let timeout = format!("{}m", deadline.as_millis());
    request
        .metadata_mut()
        .insert("grpc-timeout", timeout.parse().unwrap());
    let mut client = DiskServiceClient::new(channel);
    match tokio::time::timeout(
        deadline + Duration::from_secs(5),
        client.release_disk(request),
    )
    .await
    {
        Ok(answer) => answer.map(|r| r.into_inner().request_id),
        Err(_) => Err(Status::deadline_exceeded("the gateway never answered")),
    }
}

/// `service`'s status on the gRPC port, or `None` if it is not reported.
async fn status_of(health: &mut HealthClient<Channel>, service: &str) -> Option<i32> {
    let request = HealthCheckRequest {
        service: service.to_owned(),
    };
    health
        .check(request)
        .await
        .ok()
        .map(|r| r.into_inner().status)
}

/// Whether every readiness entry and `/readyz` say `wanted`.
async fn readiness_is(app: &TestApp, wanted: ServingStatus) -> bool {
    let mut health = app.health().await;
    for service in READINESS {
        if status_of(&mut health, service).await != Some(wanted as i32) {
            return false;
        }
    }
    let readyz = reqwest::get(format!("http://{}/readyz", app.admin_addr))
        .await
        .expect("the admin listener answers")
        .status()
        .as_u16();
    readyz
        == if wanted == ServingStatus::Serving {
            200
        } else {
            503
        }
}

/// Waits until every readiness entry and `/readyz` say `wanted`.
async fn until_readiness_is(app: &TestApp, wanted: ServingStatus, within: Duration) {
    let what = format!("{READINESS:?} and /readyz to say {wanted:?}");
    eventually(within, &what, || async {
        readiness_is(app, wanted).await.then_some(())
    })
    .await;
}

/// Waits until the key server has been asked at least `count` times.
async fn until_fetched(key_server: &KeyServer, count: u64, within: Duration) {
    let what = format!("{count} JWKS fetches");
    eventually(within, &what, || async {
        (key_server.fetches() >= count).then_some(())
    })
    .await;
}

/// `calls` calls with unknown key ids, one every `spacing`, each given up
/// after `deadline`, over a few connections; their outcomes.
async fn flood_unknown_kids(
    app: &TestApp,
    calls: usize,
    spacing: Duration,
    deadline: Duration,
) -> Vec<Result<String, Status>> {
    let mut channels = Vec::new();
    for _ in 0..8 {
        channels.push(app.channel().await);
    }
    let mut launches = tokio::time::interval(spacing);
    let mut flood = tokio::task::JoinSet::new();
    for n in 0..calls {
        launches.tick().await;
        let channel = channels[n % channels.len()].clone();
        let token = token_with_unknown_kid(n);
        flood.spawn(async move { release_with(channel, &token, deadline).await });
    }
    let all = async {
        let mut outcomes = Vec::new();
        while let Some(outcome) = flood.join_next().await {
            outcomes.push(outcome.expect("a call task"));
        }
        outcomes
    };
    tokio::time::timeout(Duration::from_secs(30), all)
        .await
        .expect("every caller is answered or gives up")
}

#[tokio::test]
async fn two_hundred_callers_who_give_up_on_unknown_key_ids_cause_one_jwks_fetch_not_one_each() {
    let app = spawn_app_with_settings(&[("JWT_JWKS_REFETCH_COOLDOWN_MS", "60000")]).await;
    until_readiness_is(&app, ServingStatus::Serving, Duration::from_secs(10)).await;
    let before = app.key_server.fetches();
    // The fetch the flood causes is the only way to learn this key.
    app.key_server.publish(RSA_NEXT);
    app.key_server.set_delay(Duration::from_millis(1500));

    // 200 calls over 3 s, each abandoned after 600 ms: the fetch outlives
    // every caller waiting on it.
    let outcomes = flood_unknown_kids(
        &app,
        200,
        Duration::from_millis(15),
        Duration::from_millis(600),
    )
    .await;

    let fetched = app.key_server.fetches() - before;
    assert!(
        (1..=2).contains(&fetched),
        "{fetched} JWKS fetches for 200 callers within a 60 s cooldown"
    );
    for outcome in &outcomes {
        let status = outcome.as_ref().expect_err("no token names a known key");
        match status.code() {
            Code::Unauthenticated => {
                assert_error(status, Code::Unauthenticated, "TOKEN_KEY_UNKNOWN");
            }
            // Gave up while the fetch was under way.
            Code::DeadlineExceeded | Code::Cancelled => {}
            other => panic!("unexpected {other:?}: {status:?}"),
        }
    }
    // Every call the gateway received is recorded, also those whose caller
    // gave up while the key lookup was under way: each answer that names an
    // audit id (the refusal, or the gateway's DEADLINE_EXCEEDED before the
    // caller's own timer) leads to a refusal row.
    let audit_ids: Vec<uuid::Uuid> = outcomes
        .iter()
        .filter_map(|outcome| outcome.as_ref().err()?.get_details_error_info())
        .filter_map(|info| info.metadata.get("audit_id")?.parse().ok())
        .collect();
    assert!(
        !audit_ids.is_empty(),
        "the gateway answered some of them: {:?}",
        outcomes.first()
    );
    eventually(
        Duration::from_secs(30),
        "a refusal row for each call the gateway answered",
        || async {
            let rows: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM audit.release_disk_calls
                 WHERE call_id = ANY($1) AND decision = 'denied'
                   AND decision_reason = 'TOKEN_KEY_UNKNOWN'",
            )
            .bind(&audit_ids)
            .fetch_one(&app.db)
            .await
            .unwrap();
            (rows == audit_ids.len() as i64).then_some(())
        },
    )
    .await;
    app.key_server.set_delay(Duration::ZERO);
    let within_cooldown = release_with(app.channel().await, &token_with_unknown_kid(200), PATIENT)
        .await
        .expect_err("an unknown key id");
    assert_error(&within_cooldown, Code::Unauthenticated, "TOKEN_KEY_UNKNOWN");
    release_with(app.channel().await, &RSA_NEXT.sign(&good_claims()), PATIENT)
        .await
        .expect("the fetch every caller gave up on still ran to its end and kept its keys");
    assert_eq!(
        app.key_server.fetches() - before,
        fetched,
        "and no more fetches"
    );
    assert_eq!(
        app.simulator.release_disk_requests(),
        1,
        "only the good call reached Zenlayer"
    );
}

#[tokio::test]
async fn keys_are_fetched_within_seconds_of_the_jwks_coming_back_and_health_follows() {
    let key_server = KeyServer::start(&[RSA]).await;
    key_server.set_failing(true);
    let app = spawn_app_with_settings(&[
        ("JWT_JWKS_URL", &key_server.url),
        ("JWT_JWKS_REFETCH_COOLDOWN_MS", "30000"),
    ])
    .await;

    // Down for a while: the first fetch and three retries fail.
    until_fetched(&key_server, 4, Duration::from_secs(10)).await;
    let refused = release_with(app.channel().await, &tokens::good_token(), PATIENT)
        .await
        .expect_err("no key to check the token with");
    assert_error(&refused, Code::Unavailable, "KEY_SOURCE_UNAVAILABLE");
    let recorded: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit.release_disk_calls WHERE decision_reason = 'KEY_SOURCE_UNAVAILABLE'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(recorded, 1, "the refusal is audited: the database is up");
    // It is the keys, not the database, that keep readiness down: it stays
    // down for many of the health monitor's 50 ms database probes.
    for _ in 0..10 {
        assert!(readiness_is(&app, ServingStatus::NotServing).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut health = app.health().await;
    assert_eq!(
        status_of(&mut health, "liveness").await,
        Some(ServingStatus::Serving as i32),
        "liveness ignores the keys"
    );

    key_server.set_failing(false);
    // Well under the 30 s cooldown.
    eventually(
        Duration::from_secs(3),
        "a call to be accepted after the JWKS came back",
        || async {
            release_with(app.channel().await, &tokens::good_token(), PATIENT)
                .await
                .ok()
        },
    )
    .await;
    until_readiness_is(&app, ServingStatus::Serving, Duration::from_secs(2)).await;
}
