//! What on-call does at 3 a.m.: the real grpcurl binary against the gateway,
//! through server reflection only (no .proto files on hand).

use crate::helpers::{TestApp, spawn_app};
use crate::tokens;
use std::process::Output;

async fn grpcurl(args: &[&str]) -> Output {
    let binary = std::env::var("GRPCURL").unwrap_or_else(|_| "grpcurl".to_owned());
    tokio::process::Command::new(&binary)
        .args(args)
        .output()
        .await
        .unwrap_or_else(|e| {
            panic!("cannot run {binary} ({e}); the README's test command installs it")
        })
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "grpcurl failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test]
async fn grpcurl_lists_the_services_through_reflection() {
    let app = spawn_app().await;
    let listed = stdout(&grpcurl(&["-plaintext", &app.addr.to_string(), "list"]).await);
    for service in ["zenlayer.vm.v1.DiskService", "grpc.health.v1.Health"] {
        assert!(
            listed.lines().any(|l| l == service),
            "{service} missing from:\n{listed}"
        );
    }
}

#[tokio::test]
async fn grpcurl_describes_disk_service_with_its_documentation() {
    let app = spawn_app().await;
    let addr = app.addr.to_string();
    let service = stdout(
        &grpcurl(&[
            "-plaintext",
            &addr,
            "describe",
            "zenlayer.vm.v1.DiskService",
        ])
        .await,
    );
    assert!(service.contains("rpc ReleaseDisk ( .zenlayer.vm.v1.ReleaseDiskRequest ) returns ( .zenlayer.vm.v1.ReleaseDiskResponse )"), "{service}");
    assert!(
        service.contains("irreversible"),
        "doc comments are served: {service}"
    );
    let message = stdout(
        &grpcurl(&[
            "-plaintext",
            &addr,
            "describe",
            "zenlayer.vm.v1.ReleaseDiskRequest",
        ])
        .await,
    );
    assert!(message.contains("string idempotency_key = 2;"), "{message}");
}

#[tokio::test]
async fn grpcurl_releases_a_disk_through_reflection() {
    let app = spawn_app().await;
    let printed = grpcurl_release(&app).await;
    let answered = app.simulator.received_for("ReleaseDisk")[0]
        .answered_request_id
        .clone()
        .unwrap();
    assert_eq!(printed["requestId"], answered);
}

#[tokio::test]
async fn grpcurl_reads_a_release_back_by_its_audit_id() {
    let app = spawn_app().await;
    let authorization = format!("authorization: Bearer {}", tokens::good_token());
    let released = grpcurl_release(&app).await;
    let audit_id = released["auditId"].as_str().unwrap();
    let output = grpcurl(&[
        "-plaintext",
        "-H",
        &authorization,
        "-d",
        &format!(r#"{{"auditId": "{audit_id}"}}"#),
        &app.addr.to_string(),
        "zenlayer.vm.v1.DiskService/GetRelease",
    ])
    .await;
    let release: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(release["auditId"], audit_id);
    assert_eq!(release["outcome"], "succeeded");
    assert_eq!(release["zenlayerRequestId"], released["requestId"]);
    assert_eq!(release["disk"]["diskStatus"], "RECYCLED");
}

/// Releases `disk-recycled-data` with grpcurl, as on-call would; what it printed.
async fn grpcurl_release(app: &TestApp) -> serde_json::Value {
    let authorization = format!("authorization: Bearer {}", tokens::good_token());
    let output = grpcurl(&[
        "-plaintext",
        "-H",
        &authorization,
        "-d",
        r#"{"diskId": "disk-recycled-data", "reason": "CHG-1234"}"#,
        &app.addr.to_string(),
        "zenlayer.vm.v1.DiskService/ReleaseDisk",
    ])
    .await;
    serde_json::from_str(&stdout(&output)).expect("grpcurl prints JSON")
}
