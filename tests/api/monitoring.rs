//! The alerting rules and the dashboard in `deploy/` name only series that a
//! running gateway exports, and the latency SLO's bucket is one it has.

use crate::helpers::{
    TestApp, eventually, request, spawn_app_with_settings, stall_attempts, unauthenticated_request,
};
use std::collections::BTreeSet;
use std::time::Duration;
use zenlayer_gateway::simulator::{Disk, DiskStatus, DiskType, Fault};

/// The files whose queries must name exported series.
const QUERIES: [&str; 3] = [
    "deploy/monitoring/rules.yml",
    "deploy/monitoring/rules.test.yml",
    "deploy/kubernetes/components/monitoring/zenlayer-gateway-dashboard.json",
];

/// Every series name a scrape can hold: those sampled, and, from the
/// `# TYPE` lines, those of families that have no sample yet.
fn exported_series(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(family) = line.strip_prefix("# TYPE ") {
            let mut parts = family.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                _ => &[""],
            };
            for suffix in suffixes {
                names.insert(format!("{name}{suffix}"));
            }
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_owned());
        }
    }
    names
}

/// The gateway's series named in `text`: `zenlayer_gateway_…` words
/// (recording rules, `zenlayer_gateway:…`, are the rules' own).
fn referenced_series(text: &str) -> BTreeSet<String> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut names = BTreeSet::new();
    for (at, _) in text.match_indices("zenlayer_gateway_") {
        if text[..at].chars().next_back().is_some_and(word) {
            continue;
        }
        let rest = &text[at..];
        let end = rest.find(|c: char| !word(c)).unwrap_or(rest.len());
        names.insert(rest[..end].to_owned());
    }
    names
}

#[test]
fn referenced_series_are_read_as_whole_words() {
    let names = referenced_series(
        r#"sum(rate(zenlayer_gateway_release_calls_total{grpc_code="OK"}[5m])) / zenlayer_gateway:release_call_errors:ratio_rate5m and not_zenlayer_gateway_x"#,
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["zenlayer_gateway_release_calls_total"]
    );
}

/// The scrape once every family has a sample (a family with labels is not
/// listed before its first): a release confirmed, one whose answer was lost
/// and that is reconciled, and a refusal whose record could not be written
/// (the attempts table locked past the statement timeout).
async fn scrape_with_every_family(app: &TestApp) -> String {
    app.simulator.put_disk(Disk::new(
        "disk-lost-answer",
        DiskType::Data,
        DiskStatus::Recycled,
    ));
    app.release(request("disk-recycled-data")).await.unwrap();
    app.simulator.fail_release(Fault::ActThenDrop, 1);
    app.release(request("disk-lost-answer")).await.unwrap_err();
    let stall = stall_attempts(app).await;
    app.release(unauthenticated_request("disk-in-use"))
        .await
        .unwrap_err();
    sqlx::Connection::close(stall).await.unwrap();
    let families = [
        "zenlayer_gateway_release_confirmations_total{",
        "zenlayer_gateway_reconciliations_total{",
        "zenlayer_gateway_audit_write_failures_total{",
    ];
    eventually(Duration::from_secs(20), "every family sampled", || async {
        let text = reqwest::get(format!("http://{}/metrics", app.admin_addr))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        families
            .iter()
            .all(|f| text.lines().any(|l| l.starts_with(f)))
            .then_some(text)
    })
    .await
}

#[tokio::test]
async fn alerts_and_dashboard_name_only_series_the_gateway_exports() {
    let app = spawn_app_with_settings(&[
        ("GATEWAY_FOLLOW_UP_INTERVAL_MS", "50"),
        ("GATEWAY_RECONCILE_AFTER_MS", "300"),
        ("DATABASE_STATEMENT_TIMEOUT_MS", "300"),
    ])
    .await;
    let text = scrape_with_every_family(&app).await;
    let exported = exported_series(&text);
    let root = env!("CARGO_MANIFEST_DIR");
    let mut referenced = BTreeSet::new();
    for file in QUERIES {
        let content = std::fs::read_to_string(format!("{root}/{file}")).unwrap();
        let names = referenced_series(&content);
        assert!(names.len() >= 5, "{file} names only {names:?}");
        let unknown: Vec<_> = names.difference(&exported).collect();
        assert!(
            unknown.is_empty(),
            "{file} names series the gateway does not export: {unknown:?}\nexported: {exported:?}"
        );
        referenced.extend(names);
    }
    // Every exported series is watched somewhere (a histogram's _sum aside).
    let unwatched: Vec<_> = exported
        .iter()
        .filter(|name| !name.ends_with("_sum") && !referenced.contains(*name))
        .collect();
    assert!(
        unwatched.is_empty(),
        "neither on the dashboard nor in the rules: {unwatched:?}"
    );
    // The latency SLO counts calls within 2.56 s by that bucket's label.
    assert!(
        text.lines().any(|l| l
            .starts_with(r#"zenlayer_gateway_release_call_duration_seconds_bucket{le="2.56"} "#)),
        "no 2.56 s bucket in:\n{text}"
    );
}
