//! The policies shipped in `deploy/` and the defaults, decided on calls
//! built as the release path builds them, at fixed times.

use super::*;
use crate::auth::Principal;
use crate::zenlayer::DiskSnapshot;
use chrono::{DateTime, TimeZone as _, Utc};
use serde_json::json;

const EXAMPLES: &str = include_str!("../../deploy/policies/gateway.cedar");

fn policies(text: &str) -> Policies {
    Policies::from_sets(
        LoadedSet::from_text(text, "test").unwrap(),
        None,
        PolicySettings::default(),
    )
}

fn examples() -> Policies {
    policies(EXAMPLES)
}

fn principal(roles: &[&str], groups: &[&str]) -> Principal {
    Principal {
        subject: "svc-janitor".into(),
        issuer: "https://idp.example".into(),
        client_id: Some("janitor".into()),
        token_id: None,
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
    }
}

/// Tuesday 2026-12-01, 10:30 UTC: inside the change window.
fn tuesday_morning() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 1, 10, 30, 0).unwrap()
}

fn disk(zone: &str, tags: serde_json::Value) -> DiskSnapshot {
    let tags = tags
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| json!({"key": k, "value": v}))
        .collect::<Vec<_>>();
    DiskSnapshot::from_entry(json!({
        "diskId": "disk-1", "diskName": "pg-data", "zoneId": zone, "diskType": "DATA",
        "diskSize": 200, "diskStatus": "RECYCLED", "diskCategory": "Standard NVMe SSD",
        "tags": {"tags": tags}
    }))
}

struct Call<'a> {
    principal: &'a Principal,
    disk: Option<&'a DiskSnapshot>,
    at: DateTime<Utc>,
    reason: &'a str,
}

impl Call<'_> {
    fn facts(&self) -> ReleaseFacts<'_> {
        ReleaseFacts {
            caller: CallerFacts {
                principal: self.principal,
                peer_identity: Some("CN=janitor,O=Example"),
                ip: Some("10.1.2.3".parse().unwrap()),
                at: self.at,
            },
            disk_id: "disk-1",
            disk: self.disk,
            reason: self.reason,
            has_idempotency_key: true,
        }
    }
}

fn decide(policies: &Policies, call: &Call<'_>) -> Verdict {
    policies.decide_release(&call.facts()).enforced
}

fn deny(id: &str) -> Verdict {
    Verdict::Deny {
        policy_ids: vec![id.to_owned()],
    }
}

fn permit() -> Verdict {
    Verdict::Permit {
        policy_ids: vec!["release-role".to_owned()],
    }
}

fn billing() -> Principal {
    principal(&["disk:release"], &["billing"])
}

#[test]
fn the_defaults_permit_the_release_role_and_nothing_else() {
    let defaults = policies(&default_policy_text("disk:release", "disk:audit"));
    let with_role = billing();
    let without = principal(&["viewer"], &[]);
    let at = tuesday_morning();
    let call = |p| Call {
        principal: p,
        disk: None,
        at,
        reason: "",
    };
    assert_eq!(decide(&defaults, &call(&with_role)), permit());
    assert_eq!(
        decide(&defaults, &call(&without)),
        Verdict::Deny { policy_ids: vec![] }
    );
}

#[test]
fn a_disk_tagged_protected_is_never_released() {
    let examples = examples();
    let caller = billing();
    let protected = disk("HKG-A", json!({"team": "billing", "protected": "true"}));
    let unprotected = disk("HKG-A", json!({"team": "billing", "protected": "false"}));
    let call = |d| Call {
        principal: &caller,
        disk: Some(d),
        at: tuesday_morning(),
        reason: "cleanup",
    };
    assert_eq!(
        decide(&examples, &call(&protected)),
        deny("never-release-protected")
    );
    assert_eq!(decide(&examples, &call(&unprotected)), permit());
    // Tags are free text: any value but `false` protects.
    for value in ["True", "TRUE", "yes", "1", ""] {
        let protected = disk("HKG-A", json!({"team": "billing", "protected": value}));
        let call = Call {
            principal: &caller,
            disk: Some(&protected),
            at: tuesday_morning(),
            reason: "cleanup",
        };
        assert_eq!(
            decide(&examples, &call),
            deny("never-release-protected"),
            "protected={value:?}"
        );
    }
}

#[test]
fn a_disk_listed_without_a_zone_counts_as_production() {
    let caller = billing();
    let zoneless = DiskSnapshot::from_entry(json!({
        "diskId": "disk-1", "diskType": "DATA", "diskStatus": "RECYCLED",
        "tags": {"tags": [{"key": "team", "value": "billing"}]}
    }));
    let call = |reason| Call {
        principal: &caller,
        disk: Some(&zoneless),
        at: tuesday_morning(),
        reason,
    };
    assert_eq!(
        decide(&examples(), &call("cleanup")),
        deny("production-needs-ticket-and-window")
    );
    assert_eq!(decide(&examples(), &call("CHG-77 cleanup")), permit());
}

#[test]
fn a_production_disk_needs_a_ticket_and_the_weekday_window() {
    let examples = examples();
    let caller = billing();
    let prod = disk("FRA-A", json!({"team": "billing"}));
    let staging = disk("HKG-A", json!({"team": "billing"}));
    let saturday = Utc.with_ymd_and_hms(2026, 12, 5, 10, 30, 0).unwrap();
    let evening = Utc.with_ymd_and_hms(2026, 12, 1, 17, 0, 0).unwrap();
    let early = Utc.with_ymd_and_hms(2026, 12, 4, 8, 59, 59).unwrap();
    let rule = "production-needs-ticket-and-window";
    let cases = [
        (
            &prod,
            tuesday_morning(),
            "CHG-1234 remove leftover volume",
            permit(),
        ),
        (
            &prod,
            tuesday_morning(),
            "remove leftover volume",
            deny(rule),
        ),
        // A ticket is CHG- and a number, not the word alone.
        (&prod, tuesday_morning(), "no CHG- needed", deny(rule)),
        (
            &prod,
            saturday,
            "CHG-1234 remove leftover volume",
            deny(rule),
        ),
        (
            &prod,
            evening,
            "CHG-1234 remove leftover volume",
            deny(rule),
        ),
        (&prod, early, "CHG-1234 remove leftover volume", deny(rule)),
        (&staging, saturday, "no ticket", permit()),
    ];
    for (disk, at, reason, expected) in cases {
        let call = Call {
            principal: &caller,
            disk: Some(disk),
            at,
            reason,
        };
        assert_eq!(decide(&examples, &call), expected, "{at} {reason:?}");
    }
}

#[test]
fn a_team_releases_only_the_disks_tagged_with_one_of_its_groups() {
    let examples = examples();
    let member = principal(&["disk:release"], &["oncall", "billing"]);
    let outsider = principal(&["disk:release"], &["search"]);
    let billing_disk = disk("HKG-A", json!({"team": "billing"}));
    let untagged = disk("HKG-A", json!({}));
    let call = |p, d| Call {
        principal: p,
        disk: Some(d),
        at: tuesday_morning(),
        reason: "x",
    };
    assert_eq!(decide(&examples, &call(&member, &billing_disk)), permit());
    assert_eq!(
        decide(&examples, &call(&outsider, &billing_disk)),
        deny("team-owns-disk")
    );
    assert_eq!(
        decide(&examples, &call(&member, &untagged)),
        deny("team-owns-disk")
    );
}

#[test]
fn a_disk_that_was_not_looked_at_is_refused_by_the_examples() {
    let caller = billing();
    let call = Call {
        principal: &caller,
        disk: None,
        at: tuesday_morning(),
        reason: "no ticket",
    };
    let Verdict::Deny { policy_ids } = decide(&examples(), &call) else {
        panic!("denied")
    };
    assert_eq!(
        policy_ids,
        [
            "never-release-protected",
            "production-needs-ticket-and-window",
            "team-owns-disk"
        ]
    );
}

#[test]
fn every_attribute_and_context_value_reaches_the_policies() {
    let text = r#"
        @id("all")
        permit (principal, action == Action::"ReleaseDisk", resource is Disk)
        when {
          principal.subject == "svc-janitor" && principal.issuer == "https://idp.example" &&
          principal has client_id && principal.client_id == "janitor" &&
          principal.roles.contains("disk:release") && principal.groups.contains("billing") &&
          principal has peer_identity && principal.peer_identity == "CN=janitor,O=Example" &&
          resource.id == "disk-1" && resource.described &&
          resource has name && resource.name == "pg-data" &&
          resource has zone && resource.zone == "HKG-A" &&
          resource has size_gib && resource.size_gib == 200 &&
          resource has type && resource.type == "DATA" &&
          resource has category && resource.category == "Standard NVMe SSD" &&
          resource has status && resource.status == "RECYCLED" &&
          !(resource has instance_id) &&
          resource.hasTag("cost") && resource.getTag("cost") == "42" &&
          context.time == datetime("2026-12-01T10:30:00Z") &&
          context.utc_weekday == 2 && context.utc_hour == 10 && context.utc_minute == 30 &&
          context.reason == "why" && context.has_idempotency_key &&
          context has caller_ip && context.caller_ip.isInRange(ip("10.0.0.0/8"))
        };
    "#;
    let caller = billing();
    // A tag Zenlayer sends as a number is text to policies.
    let snapshot = disk("HKG-A", json!({"cost": 42}));
    let call = Call {
        principal: &caller,
        disk: Some(&snapshot),
        at: tuesday_morning(),
        reason: "why",
    };
    assert_eq!(
        decide(&policies(text), &call),
        Verdict::Permit {
            policy_ids: vec!["all".into()]
        }
    );
}

#[test]
fn an_ipv4_caller_of_a_dual_stack_listener_is_seen_by_its_ipv4_address() {
    let text = r#"
        @id("office") permit (principal, action == Action::"ReleaseDisk", resource)
        when { context has caller_ip && context.caller_ip.isInRange(ip("10.0.0.0/8")) };
    "#;
    let caller = billing();
    let call = Call {
        principal: &caller,
        disk: None,
        at: tuesday_morning(),
        reason: "",
    };
    let mut facts = call.facts();
    facts.caller.ip = Some("::ffff:10.1.2.3".parse().unwrap());
    assert_eq!(
        policies(text).decide_release(&facts).enforced,
        Verdict::Permit {
            policy_ids: vec!["office".into()]
        }
    );
    // The defaults too: a mapped address is no evaluation error.
    let defaults = policies(&default_policy_text("disk:release", "disk:audit"));
    assert_eq!(defaults.decide_release(&facts).enforced, permit());
}

#[test]
fn an_evaluation_error_denies_even_when_a_permit_applies() {
    let text = r#"
        @id("permit-all") permit (principal, action, resource);
        @id("overflows")
        forbid (principal, action == Action::"ReleaseDisk", resource is Disk)
        when { resource has size_gib && resource.size_gib * 9223372036854775807 > 0 };
    "#;
    let caller = billing();
    let snapshot = disk("HKG-A", json!({}));
    let call = Call {
        principal: &caller,
        disk: Some(&snapshot),
        at: tuesday_morning(),
        reason: "",
    };
    let verdict = decide(&policies(text), &call);
    let Verdict::Error { policy_ids, errors } = &verdict else {
        panic!("{verdict:?}")
    };
    assert_eq!(policy_ids, &["overflows"]);
    assert!(errors[0].contains("overflow"), "{errors:?}");
    assert!(!verdict.permits());
}

#[test]
fn the_shadow_set_is_decided_beside_the_enforced_one() {
    let shadow = LoadedSet::from_text(EXAMPLES, "shadow").unwrap();
    let shadow_hash = shadow.hash.clone();
    let both = Policies::from_sets(
        LoadedSet::from_text(&default_policy_text("disk:release", "disk:audit"), "d").unwrap(),
        Some(shadow),
        PolicySettings::default(),
    );
    let caller = billing();
    let protected = disk("HKG-A", json!({"team": "billing", "protected": "true"}));
    let call = Call {
        principal: &caller,
        disk: Some(&protected),
        at: tuesday_morning(),
        reason: "",
    };
    let judgement = both.decide_release(&call.facts());
    assert_eq!(judgement.enforced, permit());
    assert_eq!(
        judgement.shadow,
        Some((deny("never-release-protected"), shadow_hash))
    );
    assert!(judgement.shadow_disagrees());
}

#[test]
fn reading_calls_follows_the_default_policies() {
    let defaults = policies(&default_policy_text("disk:release", "disk:audit"));
    let caller = billing();
    let auditor = principal(&["disk:audit"], &[]);
    let read = |p, subject: Option<&'static str>| ReadFacts {
        caller: CallerFacts {
            principal: p,
            peer_identity: None,
            ip: None,
            at: tuesday_morning(),
        },
        call_id: "01a21700-f9e6-716a-8c30-10939f97d555",
        disk_id: "disk-1",
        call_subject: subject,
        call_issuer: Some("https://idp.example"),
    };
    assert!(
        defaults
            .decide_read(&read(&caller, Some("svc-janitor")))
            .permits()
    );
    assert!(
        !defaults
            .decide_read(&read(&caller, Some("someone-else")))
            .permits()
    );
    assert!(!defaults.decide_read(&read(&caller, None)).permits());
    assert!(defaults.decide_read(&read(&auditor, None)).permits());
}

/// The shadow metric counts a disagreement only where one set would let a
/// release through and the other would not.
#[test]
fn the_shadow_disagrees_only_where_one_set_permits_and_the_other_does_not() {
    let judgement = |enforced: Verdict, shadow: Option<Verdict>| Judgement {
        enforced,
        set_hash: "enforced".into(),
        shadow: shadow.map(|s| (s, "shadow".into())),
    };
    let error = || Verdict::Error {
        policy_ids: Vec::new(),
        errors: Vec::new(),
    };
    assert!(!judgement(permit(), None).shadow_disagrees());
    assert!(!judgement(permit(), Some(permit())).shadow_disagrees());
    assert!(!judgement(deny("a"), Some(error())).shadow_disagrees());
    assert!(judgement(permit(), Some(deny("a"))).shadow_disagrees());
    assert!(judgement(error(), Some(permit())).shadow_disagrees());
}

/// A policy file replaced while the gateway runs is in force within its
/// reload interval.
#[tokio::test]
async fn a_changed_policy_file_is_reloaded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policies.cedar");
    std::fs::write(&path, EXAMPLES).unwrap();
    let settings = PolicySettings {
        file: Some(path.clone()),
        reload_interval: std::time::Duration::from_millis(20),
        ..PolicySettings::default()
    };
    let policies = Policies::load(&settings, "disk:release", "disk:audit").unwrap();
    let before = policies.set_hash();
    let stop = tokio_util::sync::CancellationToken::new();
    policies.spawn_reload(&stop);
    std::fs::write(&path, default_policy_text("disk:release", "disk:audit")).unwrap();
    let reloaded = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while policies.set_hash() == before {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
    stop.cancel();
    assert!(reloaded.is_ok(), "the new file was never loaded");
}
