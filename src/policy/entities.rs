//! The Cedar request for a call, built from its facts: the caller as a
//! `Caller` entity, the disk (or audit record) as the resource, and the
//! context. Neither the entities nor the request are checked against the
//! schema on each call (checking the entities was a sixth of the cost of a
//! decision, checking the request a quarter of the cost of building it):
//! both are built only here, from typed facts, so that every shape they
//! take conforms is shown once by the tests below instead.
//! An attribute of the wrong type would in any case fail evaluation, and an
//! error denies.

use super::facts::{CallerFacts, ReadFacts, ReleaseFacts};
use super::schema::Action;
use cedar_policy::{
    Context, Entities, Entity, EntityId, EntityTypeName, EntityUid, Request, RestrictedExpression,
};
use chrono::{Datelike as _, Timelike as _};
use serde_json::Value;
use std::cell::RefCell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::str::FromStr as _;
use std::sync::LazyLock;

/// A request and the entities it refers to.
pub(super) struct Built {
    pub request: Request,
    pub entities: Entities,
}

type Attrs = HashMap<String, RestrictedExpression>;

static CALLER: LazyLock<EntityTypeName> = LazyLock::new(|| type_name("Caller"));
static DISK: LazyLock<EntityTypeName> = LazyLock::new(|| type_name("Disk"));
static RELEASE: LazyLock<EntityTypeName> = LazyLock::new(|| type_name("Release"));

fn type_name(name: &str) -> EntityTypeName {
    EntityTypeName::from_str(name).expect("a type of the schema")
}

fn uid(type_name: &EntityTypeName, id: &str) -> EntityUid {
    EntityUid::from_type_name_and_id(type_name.clone(), EntityId::new(id))
}

fn text(value: &str) -> RestrictedExpression {
    RestrictedExpression::new_string(value.to_owned())
}

fn texts(values: &[String]) -> RestrictedExpression {
    RestrictedExpression::new_set(values.iter().map(|v| text(v)))
}

/// Puts `value` under `name` when there is one: optional attributes are
/// absent, never empty, so that `has` tells.
fn put(attrs: &mut Attrs, name: &str, value: Option<RestrictedExpression>) {
    if let Some(value) = value {
        attrs.insert(name.to_owned(), value);
    }
}

pub(super) fn release(facts: &ReleaseFacts<'_>) -> anyhow::Result<Built> {
    let (caller_uid, caller) = kept_caller(&facts.caller)?;
    let (disk_uid, disk) = disk(facts)?;
    let context = release_context(facts)?;
    build(
        Action::ReleaseDisk,
        caller_uid,
        caller,
        disk_uid,
        disk,
        context,
    )
}

// A job that releases disks calls again and again with one token, from one
// address, for one reason: the caller entity and the context of its last
// release are kept per thread and used again while they are the same. Cedar
// evaluates every attribute of an entity and every pair of a context as it
// builds them, and in the benchmark's profile that building was more than
// half of a decision. One entry each: nothing to bound, and a caller that
// changes only costs what building always did.

/// The caller entity built last on this thread, and what it was built from.
struct KeptCaller {
    principal: crate::auth::Principal,
    peer_identity: Option<String>,
    uid: EntityUid,
    entity: Entity,
}

/// The release context built last on this thread, and what it was built from.
struct KeptContext {
    second: i64,
    ip: Option<IpAddr>,
    reason: String,
    has_idempotency_key: bool,
    context: Context,
}

thread_local! {
    static LAST_CALLER: RefCell<Option<KeptCaller>> = const { RefCell::new(None) };
    static LAST_CONTEXT: RefCell<Option<KeptContext>> = const { RefCell::new(None) };
}

/// [`caller`], kept: the attributes an entity is built from are all of the
/// principal's and the peer identity, so equal ones build an equal entity.
fn kept_caller(facts: &CallerFacts<'_>) -> anyhow::Result<(EntityUid, Entity)> {
    LAST_CALLER.with_borrow_mut(|last| {
        if let Some(kept) = last.as_ref().filter(|kept| {
            kept.principal == *facts.principal
                && kept.peer_identity.as_deref() == facts.peer_identity
        }) {
            return Ok((kept.uid.clone(), kept.entity.clone()));
        }
        let (uid, entity) = caller(facts)?;
        *last = Some(KeptCaller {
            principal: facts.principal.clone(),
            peer_identity: facts.peer_identity.map(str::to_owned),
            uid: uid.clone(),
            entity: entity.clone(),
        });
        Ok((uid, entity))
    })
}

/// A release's context, kept: it is made of the second of the call, the
/// caller's address, the reason and whether a key was sent, nothing else.
fn release_context(facts: &ReleaseFacts<'_>) -> anyhow::Result<Context> {
    let second = facts.caller.at.timestamp();
    let ip = facts.caller.ip;
    LAST_CONTEXT.with_borrow_mut(|last| {
        if let Some(kept) = last.as_ref().filter(|kept| {
            kept.second == second
                && kept.ip == ip
                && kept.has_idempotency_key == facts.has_idempotency_key
                && kept.reason == facts.reason
        }) {
            return Ok(kept.context.clone());
        }
        let context = fresh_release_context(facts)?;
        *last = Some(KeptContext {
            second,
            ip,
            reason: facts.reason.to_owned(),
            has_idempotency_key: facts.has_idempotency_key,
            context: context.clone(),
        });
        Ok(context)
    })
}

/// A release's context, built: the clock's pairs, the reason and whether a
/// key was sent.
fn fresh_release_context(facts: &ReleaseFacts<'_>) -> anyhow::Result<Context> {
    let mut pairs = clock(&facts.caller);
    pairs.insert("reason".to_owned(), text(facts.reason));
    pairs.insert(
        "has_idempotency_key".to_owned(),
        RestrictedExpression::new_bool(facts.has_idempotency_key),
    );
    Ok(Context::from_pairs(pairs)?)
}

pub(super) fn read(facts: &ReadFacts<'_>) -> anyhow::Result<Built> {
    let (caller_uid, caller) = caller(&facts.caller)?;
    let release_uid = uid(&RELEASE, facts.call_id);
    let mut attrs = Attrs::new();
    attrs.insert("id".to_owned(), text(facts.call_id));
    attrs.insert("disk_id".to_owned(), text(facts.disk_id));
    put(&mut attrs, "caller_subject", facts.call_subject.map(text));
    put(&mut attrs, "caller_issuer", facts.call_issuer.map(text));
    let release = Entity::new(release_uid.clone(), attrs, Default::default())?;
    let context = Context::from_pairs(clock(&facts.caller))?;
    build(
        Action::GetRelease,
        caller_uid,
        caller,
        release_uid,
        release,
        context,
    )
}

fn build(
    action: Action,
    principal_uid: EntityUid,
    principal: Entity,
    resource_uid: EntityUid,
    resource: Entity,
    context: Context,
) -> anyhow::Result<Built> {
    let request = Request::new(
        principal_uid,
        action.uid().clone(),
        resource_uid,
        context,
        None,
    )?;
    let entities = Entities::from_entities([principal, resource], None)?;
    Ok(Built { request, entities })
}

fn caller(facts: &CallerFacts<'_>) -> anyhow::Result<(EntityUid, Entity)> {
    let p = facts.principal;
    let caller_uid = uid(&CALLER, &p.subject);
    let mut attrs = Attrs::new();
    attrs.insert("subject".to_owned(), text(&p.subject));
    attrs.insert("issuer".to_owned(), text(&p.issuer));
    attrs.insert("roles".to_owned(), texts(&p.roles));
    attrs.insert("groups".to_owned(), texts(&p.groups));
    put(&mut attrs, "client_id", p.client_id.as_deref().map(text));
    put(&mut attrs, "peer_identity", facts.peer_identity.map(text));
    let entity = Entity::new(caller_uid.clone(), attrs, Default::default())?;
    Ok((caller_uid, entity))
}

fn disk(facts: &ReleaseFacts<'_>) -> anyhow::Result<(EntityUid, Entity)> {
    let disk_uid = uid(&DISK, facts.disk_id);
    let mut attrs = Attrs::new();
    attrs.insert("id".to_owned(), text(facts.disk_id));
    attrs.insert(
        "described".to_owned(),
        RestrictedExpression::new_bool(facts.disk.is_some()),
    );
    let mut tags = Vec::new();
    if let Some(d) = facts.disk {
        let optional = [
            ("name", &d.disk_name),
            ("zone", &d.zone_id),
            ("type", &d.disk_type),
            ("category", &d.disk_category),
            ("status", &d.disk_status),
            ("instance_id", &d.instance_id),
        ];
        for (name, value) in optional {
            put(&mut attrs, name, value.as_deref().map(text));
        }
        put(
            &mut attrs,
            "size_gib",
            d.disk_size_gib.map(RestrictedExpression::new_long),
        );
        tags = d
            .tags
            .iter()
            .map(|(key, value)| (key.clone(), text(&tag_text(value))))
            .collect();
    }
    let entity = Entity::new_with_tags(disk_uid.clone(), attrs, [], tags)?;
    Ok((disk_uid, entity))
}

/// Tags are text to policies: a string as it is, anything else (a number
/// Zenlayer might send) as its JSON, and no value as the empty string.
fn tag_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// When and from where, as every action's context has it. The UTC parts
/// are spelled out because Cedar's datetime has no weekday.
fn clock(facts: &CallerFacts<'_>) -> Attrs {
    let at = facts.at;
    let mut context = Attrs::new();
    let long = |n: u32| RestrictedExpression::new_long(i64::from(n));
    context.insert("time".to_owned(), datetime(at));
    context.insert(
        "utc_weekday".to_owned(),
        long(at.weekday().number_from_monday()),
    );
    context.insert("utc_hour".to_owned(), long(at.hour()));
    context.insert("utc_minute".to_owned(), long(at.minute()));
    put(&mut context, "caller_ip", facts.ip.map(ip));
    context
}

// Cedar builds an extension value's expression by parsing the extension's
// name (`datetime`, `ip`) with its whole grammar, lexer tables included,
// every time: in the benchmark's profile the two names were a third of the
// instructions of a decision. Neither can be built another way through
// Cedar's API, so the expressions are kept per thread: the caller's
// address (callers are few, and the map is bounded) and the time for the
// current second. A second is the context's precision: change windows and
// cut-off times are written in minutes at the finest, and at a
// millisecond's precision nearly every call paid for the parse (the exact
// time of a call is in its audit row).

/// Addresses kept per thread at most; past it the map starts again.
const IPS_KEPT: usize = 1024;

thread_local! {
    static IPS: RefCell<HashMap<IpAddr, RestrictedExpression>> = RefCell::new(HashMap::new());
    static NOW: RefCell<Option<(i64, RestrictedExpression)>> = const { RefCell::new(None) };
}

/// `at` as Cedar's `datetime`, to the second (rounded down).
fn datetime(at: chrono::DateTime<chrono::Utc>) -> RestrictedExpression {
    let second = at.timestamp();
    NOW.with_borrow_mut(|now| match now {
        Some((kept, expression)) if *kept == second => expression.clone(),
        _ => {
            let expression = RestrictedExpression::new_datetime(
                at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            );
            *now = Some((second, expression.clone()));
            expression
        }
    })
}

/// `address` as Cedar's `ip`. An IPv4 caller of a dual-stack listener
/// arrives as an IPv4-mapped IPv6 address (`::ffff:10.1.2.3`), which Cedar
/// refuses to read: it is its IPv4 address, and policies see it as one.
fn ip(address: IpAddr) -> RestrictedExpression {
    let address = address.to_canonical();
    IPS.with_borrow_mut(|kept| {
        if let Some(expression) = kept.get(&address) {
            return expression.clone();
        }
        if kept.len() >= IPS_KEPT {
            kept.clear();
        }
        let expression = RestrictedExpression::new_ip(address.to_string());
        kept.insert(address, expression.clone());
        expression
    })
}

#[cfg(test)]
mod tests {
    use super::super::schema::schema;
    use super::*;
    use crate::auth::Principal;
    use crate::zenlayer::DiskSnapshot;
    use serde_json::json;

    fn principal(client_id: Option<&str>) -> Principal {
        Principal {
            subject: "svc-janitor".into(),
            issuer: "https://idp.example".into(),
            client_id: client_id.map(str::to_owned),
            token_id: None,
            roles: vec!["disk:release".into()],
            groups: vec!["billing".into()],
        }
    }

    fn caller<'a>(principal: &'a Principal, ip: Option<&str>) -> CallerFacts<'a> {
        CallerFacts {
            principal,
            peer_identity: ip.map(|_| "CN=janitor"),
            ip: ip.map(|ip| ip.parse().unwrap()),
            at: chrono::Utc::now(),
        }
    }

    /// The request and its entities are built without the schema's checks:
    /// every shape they take must pass them.
    fn assert_conforms(built: &Built) {
        let again = Entities::from_entities(built.entities.iter().cloned(), Some(schema()));
        assert!(again.is_ok(), "{:?}", again.err());
        let r = &built.request;
        let checked = Request::new(
            r.principal().expect("a known principal").clone(),
            r.action().expect("a known action").clone(),
            r.resource().expect("a known resource").clone(),
            r.context().expect("a known context").clone(),
            Some(schema()),
        );
        assert!(checked.is_ok(), "{:?}", checked.err());
    }

    #[test]
    fn a_request_off_the_schema_is_what_the_check_would_refuse() {
        // The check the test above relies on does refuse a context that is
        // off the schema: one without its reason.
        let principal = principal(None);
        let facts = ReleaseFacts {
            caller: caller(&principal, None),
            disk_id: "disk-1",
            disk: None,
            reason: "why",
            has_idempotency_key: false,
        };
        let built = release(&facts).unwrap();
        let r = &built.request;
        let mut pairs = clock(&facts.caller);
        pairs.insert(
            "has_idempotency_key".to_owned(),
            RestrictedExpression::new_bool(false),
        );
        let checked = Request::new(
            r.principal().unwrap().clone(),
            r.action().unwrap().clone(),
            r.resource().unwrap().clone(),
            Context::from_pairs(pairs).unwrap(),
            Some(schema()),
        );
        assert!(
            checked.is_err(),
            "a context without `reason` passed the check"
        );
    }

    #[test]
    fn every_shape_of_entity_conforms_to_the_schema() {
        let full = DiskSnapshot::from_entry(json!({
            "diskId": "disk-1", "diskName": "pg-data", "zoneId": "HKG-A", "diskType": "DATA",
            "diskSize": 200, "diskStatus": "RECYCLED", "diskCategory": "Standard NVMe SSD",
            "instanceId": "i-1",
            "tags": {"tags": [{"key": "team", "value": "billing"}, {"key": "cost", "value": 42},
                              {"key": "empty", "value": null}]}
        }));
        let bare = DiskSnapshot::from_entry(json!({"diskId": "disk-1"}));
        for client_id in [Some("janitor"), None] {
            let principal = principal(client_id);
            for ip in [Some("10.1.2.3"), None] {
                for disk in [Some(&full), Some(&bare), None] {
                    let facts = ReleaseFacts {
                        caller: caller(&principal, ip),
                        disk_id: "disk-1",
                        disk,
                        reason: "why",
                        has_idempotency_key: disk.is_some(),
                    };
                    assert_conforms(&release(&facts).unwrap());
                }
                for subject in [Some("svc-janitor"), None] {
                    let facts = ReadFacts {
                        caller: caller(&principal, ip),
                        call_id: "0190c0de-0000-7000-8000-000000000000",
                        disk_id: "disk-1",
                        call_subject: subject,
                        call_issuer: subject.map(|_| "https://idp.example"),
                    };
                    assert_conforms(&read(&facts).unwrap());
                }
            }
        }
    }

    #[test]
    fn a_kept_caller_or_context_is_used_only_for_the_same_facts() {
        let base = principal(Some("janitor"));
        let mut other_groups = base.clone();
        other_groups.groups.push("platform".into());
        let mut other_subject = base.clone();
        other_subject.subject = "svc-other".into();
        let t = chrono::DateTime::parse_from_rfc3339("2026-12-02T10:00:00.100Z")
            .unwrap()
            .to_utc();
        fn facts<'a>(
            principal: &'a Principal,
            peer_identity: Option<&'a str>,
            ip: Option<&str>,
            at: chrono::DateTime<chrono::Utc>,
            reason: &'a str,
            has_idempotency_key: bool,
        ) -> ReleaseFacts<'a> {
            ReleaseFacts {
                caller: CallerFacts {
                    principal,
                    peer_identity,
                    ip: ip.map(|ip| ip.parse().unwrap()),
                    at,
                },
                disk_id: "disk-1",
                disk: None,
                reason,
                has_idempotency_key,
            }
        }
        let (base, other_groups, other_subject) = (&base, &other_groups, &other_subject);
        let later = t + chrono::Duration::milliseconds(800);
        let next = t + chrono::Duration::seconds(1);
        let ip = Some("10.0.0.1");
        let (cert, ticket) = (Some("CN=janitor"), "ticket CHG-1");
        // Each differs from the one before it in one fact (or in none).
        let sequence = [
            facts(base, None, ip, t, "cleanup", true),
            facts(base, None, ip, later, "cleanup", true),
            facts(other_groups, None, ip, later, "cleanup", true),
            facts(other_subject, None, ip, later, "cleanup", true),
            facts(other_subject, cert, ip, later, "cleanup", true),
            facts(other_subject, cert, ip, later, ticket, true),
            facts(other_subject, cert, ip, later, ticket, false),
            facts(other_subject, cert, ip, next, ticket, false),
            facts(other_subject, cert, Some("10.0.0.2"), next, ticket, false),
            facts(other_subject, cert, None, next, ticket, false),
            facts(base, None, ip, t, "cleanup", true),
        ];
        for (n, f) in sequence.iter().enumerate() {
            let built = release(f).unwrap();
            let (_, fresh_caller) = super::caller(&f.caller).unwrap();
            let kept_caller = built
                .entities
                .iter()
                .find(|e| e.uid().type_name() == &*CALLER)
                .unwrap();
            // (An entity's `==` compares its uid alone.)
            assert!(kept_caller.deep_eq(&fresh_caller), "step {n}");
            let fresh_context = fresh_release_context(f).unwrap();
            assert_eq!(
                format!("{:?}", built.request.context().unwrap()),
                format!("{fresh_context:?}"),
                "step {n}"
            );
        }
    }

    #[test]
    fn kept_times_and_addresses_are_the_ones_asked_for() {
        let t = chrono::DateTime::parse_from_rfc3339("2026-12-02T10:00:00.123Z")
            .unwrap()
            .to_utc();
        let whole = |text: &str| RestrictedExpression::new_datetime(text);
        let later = t + chrono::Duration::milliseconds(876);
        let next = t + chrono::Duration::milliseconds(877);
        // Kept, then asked again within its second, then a new second,
        // then back: always the second the time falls in.
        for (at, second) in [
            (t, "2026-12-02T10:00:00Z"),
            (later, "2026-12-02T10:00:00Z"),
            (next, "2026-12-02T10:00:01Z"),
            (t, "2026-12-02T10:00:00Z"),
            (next, "2026-12-02T10:00:01Z"),
        ] {
            assert_eq!(datetime(at), whole(second), "{at}");
        }
        assert_ne!(datetime(t), datetime(next));

        let address = |n: usize| IpAddr::from(std::net::Ipv6Addr::from(n as u128));
        let asked = |n: usize| {
            let expected = RestrictedExpression::new_ip(address(n).to_string());
            assert_eq!(ip(address(n)), expected, "{}", address(n));
        };
        let kept = || IPS.with_borrow(HashMap::len);
        // (Each test has a thread of its own, so the map starts empty.)
        (0..IPS_KEPT).chain([0, 1]).for_each(asked);
        assert_eq!(kept(), IPS_KEPT, "every address up to the bound is kept");
        // Past the bound the map starts again, and still answers right.
        (IPS_KEPT..IPS_KEPT + 2)
            .chain([0, IPS_KEPT])
            .for_each(asked);
        assert_eq!(kept(), 3);
    }
}
