//! `--format ocsf`: each event as an OCSF 1.8 API Activity (class 6003 in
//! category 6, Application Activity). Every event is about one
//! `ReleaseDisk` call, so every event is activity 4, Delete (type 600304):
//! the attempt (authorized, or refused), each outcome, and the
//! confirmation. Outcomes and confirmations carry their call's actor,
//! endpoint and disk from the attempt, so each event stands alone; they
//! share `api.request.uid` (the audit id). README maps every field.

mod caller;
mod resource;
mod verdict;

use super::event::{AttemptRow, AuditEvent, FreezeEvent, OutcomeRow, Stage};
use super::fields::Fields;
use super::time::{epoch_millis, rfc3339};
use crate::rpc::codes::code_from_name;
use chrono::{DateTime, Utc};
use serde_json::Value;
pub use verdict::Verdict;

/// The OCSF version the events follow (`metadata.version`).
pub const OCSF_VERSION: &str = "1.8.0";
/// API Activity, in Application Activity.
pub const CLASS_UID: u32 = 6003;
pub const CATEGORY_UID: u32 = 6;
/// Delete: a release removes the disk for good.
pub const ACTIVITY_DELETE: u32 = 4;

/// The event as one OCSF object.
pub fn render(event: &AuditEvent) -> Value {
    let a = &event.attempt;
    let verdict = Verdict::of(event);
    let (status_id, status) = verdict.status();
    let (severity_id, severity) = verdict.severity();
    let (started, ended) = span(event);
    Fields::new()
        .with("activity_id", ACTIVITY_DELETE)
        .with("activity_name", "Delete")
        .with("category_uid", CATEGORY_UID)
        .with("category_name", "Application Activity")
        .with("class_uid", CLASS_UID)
        .with("class_name", "API Activity")
        .with("type_uid", CLASS_UID * 100 + ACTIVITY_DELETE)
        .with("type_name", "API Activity: Delete")
        .with("severity_id", severity_id)
        .with("severity", severity)
        .with("status_id", status_id)
        .with("status", status)
        .maybe("status_code", status_code(event))
        .maybe("status_detail", status_detail(event))
        .with(
            "message",
            format!("ReleaseDisk {}: {}", a.disk_id, verdict.summary()),
        )
        .with("time", epoch_millis(occurred(event)))
        .maybe("start_time", started.map(epoch_millis))
        .maybe("end_time", ended.map(epoch_millis))
        .maybe(
            "duration",
            started.zip(ended).map(|(s, e)| (e - s).num_milliseconds()),
        )
        .with("metadata", metadata(event))
        .with("cloud", resource::cloud(a))
        .with("actor", caller::actor(a))
        .with("api", api(event))
        .with("src_endpoint", caller::src_endpoint(a))
        .with("http_request", caller::http_request(a))
        .with("resources", vec![Value::from(resource::disk(a))])
        .with("unmapped", unmapped(event))
        .into()
}

/// Update: a freeze changes what the gateway allows.
pub const ACTIVITY_UPDATE: u32 = 3;

/// A freeze or unfreeze of releases, as API Activity Update by the operator
/// who ran it (a database login, not a token's principal), from an endpoint
/// the trail does not know.
pub fn render_freeze(f: &FreezeEvent) -> Value {
    let operation = match f.action.as_str() {
        "freeze" => "FreezeReleases",
        _ => "UnfreezeReleases",
    };
    let product = Fields::new()
        .with("name", env!("CARGO_PKG_NAME"))
        .with("version", env!("CARGO_PKG_VERSION"));
    let metadata = Fields::new()
        .with("version", OCSF_VERSION)
        .with("product", product)
        .with("uid", format!("freeze:{}", f.freeze_id))
        .with("sequence", f.log_index)
        .with("event_code", "freeze")
        .with("log_name", "audit.events")
        .with("logged_time", epoch_millis(f.recorded_at))
        .with("original_time", rfc3339(f.recorded_at));
    let actor = Fields::new().with(
        "user",
        Fields::new()
            .with("name", f.operator.as_str())
            .with("uid", f.operator.as_str()),
    );
    let api = Fields::new()
        .with("operation", operation)
        .with("service", Fields::new().with("name", "zenlayer-gateway"))
        .with(
            "request",
            Fields::new()
                .with("uid", format!("freeze:{}", f.freeze_id))
                .with("data", Fields::new().with("reason", f.reason.as_str())),
        );
    Fields::new()
        .with("activity_id", ACTIVITY_UPDATE)
        .with("activity_name", "Update")
        .with("category_uid", CATEGORY_UID)
        .with("category_name", "Application Activity")
        .with("class_uid", CLASS_UID)
        .with("class_name", "API Activity")
        .with("type_uid", CLASS_UID * 100 + ACTIVITY_UPDATE)
        .with("type_name", "API Activity: Update")
        // A freeze stops every release: operators and the SOC want to see it.
        .with("severity_id", 3)
        .with("severity", "Medium")
        .with("status_id", 1)
        .with("status", "Success")
        .with(
            "message",
            format!("{operation} by {}: {}", f.operator, f.reason),
        )
        .with("time", epoch_millis(f.recorded_at))
        .with("metadata", metadata)
        .with("actor", actor)
        .with("api", api)
        .with("src_endpoint", Fields::new().with("name", "unknown"))
        .with(
            "unmapped",
            Fields::new()
                .with("freeze_action", f.action.as_str())
                .with("freeze_reason", f.reason.as_str()),
        )
        .into()
}

/// `time`: when what the event records happened: the call received (an
/// attempt), ended (an outcome), or looked at by `DescribeDisks` (a
/// confirmation). When it was written is `metadata.logged_time`.
fn occurred(event: &AuditEvent) -> DateTime<Utc> {
    match &event.stage {
        Stage::Attempt => event.attempt.received_at,
        Stage::Outcome(outcome) => outcome.completed_at,
        Stage::Confirmation(confirmation) => confirmation.checked_at,
    }
}

/// From receipt to the end of the call, for events that end one: a refusal
/// (complete when its attempt is written) and an outcome.
fn span(event: &AuditEvent) -> (Option<DateTime<Utc>>, Option<DateTime<Utc>>) {
    let a = &event.attempt;
    match &event.stage {
        Stage::Attempt if a.refusal_grpc_code.is_some() => {
            (Some(a.received_at), Some(a.recorded_at))
        }
        Stage::Outcome(outcome) => (Some(a.received_at), Some(outcome.completed_at)),
        Stage::Attempt | Stage::Confirmation(_) => (None, None),
    }
}

fn status_code(event: &AuditEvent) -> Option<&str> {
    match &event.stage {
        Stage::Attempt => event.attempt.refusal_grpc_code.as_deref(),
        Stage::Outcome(outcome) => Some(&outcome.grpc_code),
        Stage::Confirmation(confirmation) => Some(&confirmation.confirmation),
    }
}

fn status_detail(event: &AuditEvent) -> Option<String> {
    match &event.stage {
        Stage::Attempt => event.attempt.refusal_message.clone(),
        Stage::Outcome(outcome) => outcome.error_message.clone(),
        Stage::Confirmation(confirmation) => confirmation
            .disk_status
            .as_ref()
            .map(|status| format!("DescribeDisks still listed the disk as {status}")),
    }
}

fn metadata(event: &AuditEvent) -> Fields {
    let product = Fields::new()
        .with("name", env!("CARGO_PKG_NAME"))
        .with("version", env!("CARGO_PKG_VERSION"));
    let uid = match event.stage.row_id() {
        Some(row) => format!("{}:{}:{row}", event.attempt.call_id, event.stage.kind()),
        None => format!("{}:{}", event.attempt.call_id, event.stage.kind()),
    };
    Fields::new()
        .with("version", OCSF_VERSION)
        .with("product", product)
        .with("profiles", vec!["cloud"])
        .with("uid", uid)
        .with("correlation_uid", event.attempt.trace_id.as_str())
        .with("sequence", event.log_index)
        .with("event_code", event.stage.kind())
        .with("log_name", "audit.events")
        .with("logged_time", epoch_millis(event.recorded_at))
        .with("original_time", rfc3339(occurred(event)))
}

/// `api`: the operation, what the caller asked for (`request.data`), and
/// what it was answered, with Zenlayer's part (`response.data`), once the
/// call has an answer.
fn api(event: &AuditEvent) -> Fields {
    let a = &event.attempt;
    let asked = Fields::new()
        .with("disk_id", a.disk_id.as_str())
        .with("reason", a.reason.as_str())
        .maybe("idempotency_key", a.idempotency_key.as_deref());
    let request = Fields::new()
        .with("uid", a.call_id.to_string())
        .with("data", asked);
    let response = match &event.stage {
        Stage::Attempt => refusal_response(a),
        Stage::Outcome(outcome) => outcome_response(outcome),
        Stage::Confirmation(_) => Fields::new(),
    };
    Fields::new()
        .with("operation", "ReleaseDisk")
        .with(
            "service",
            Fields::new().with("name", "zenlayer.vm.v1.DiskService"),
        )
        .with("request", request)
        .nested("response", response)
}

fn refusal_response(a: &AttemptRow) -> Fields {
    let Some(code) = a.refusal_grpc_code.as_deref() else {
        return Fields::new();
    };
    Fields::new()
        .with("code", code_from_name(code) as i32)
        .maybe("error", a.decision_reason.as_deref())
        .maybe("error_message", a.refusal_message.as_deref())
        .with("data", Fields::new().with("grpc_code", code))
}

fn outcome_response(o: &OutcomeRow) -> Fields {
    let zenlayer = Fields::new()
        .with("grpc_code", o.grpc_code.as_str())
        .maybe("zenlayer_action", o.zenlayer_action.as_deref())
        .maybe("zenlayer_code", o.zenlayer_code.as_deref())
        .maybe("zenlayer_request_id", o.zenlayer_request_id.as_deref())
        .maybe("http_status", o.http_status);
    Fields::new()
        .with("code", code_from_name(&o.grpc_code) as i32)
        .maybe("error", o.error_reason.as_deref())
        .maybe("error_message", o.error_message.as_deref())
        .with("data", zenlayer)
}

/// The trail's own fields that OCSF has no attribute for.
fn unmapped(event: &AuditEvent) -> Fields {
    let a = &event.attempt;
    let common = Fields::new()
        .with("decision", a.decision.as_str())
        .maybe("decision_reason", a.decision_reason.as_deref())
        .maybe("replay_of", a.replay_of.map(|id| id.to_string()));
    match &event.stage {
        Stage::Attempt => common,
        Stage::Outcome(outcome) => common
            .with("outcome", outcome.outcome.as_str())
            .with("outcome_recorded_by", outcome.recorded_by.as_str()),
        Stage::Confirmation(c) => common
            .with("confirmation", c.confirmation.as_str())
            .with("confirmation_recorded_by", c.recorded_by.as_str())
            .maybe("disk_status", c.disk_status.as_deref())
            .maybe("describe_request_id", c.zenlayer_request_id.as_deref()),
    }
}
