//! `--format jsonl`: each event as the trail holds it. One object per line:
//! the event's place in the log, its kind, and the rows it names, column
//! for column (every column always present, null when empty). Every line
//! carries its call's attempt, so a consumer needs no join.

use super::event::{AttemptRow, AuditEvent, ConfirmationRow, FreezeEvent, OutcomeRow, Stage};
use super::time::rfc3339;
use serde_json::{Value, json};

/// The event as one JSON object.
pub fn render(event: &AuditEvent) -> Value {
    let mut line = json!({
        "log_index": event.log_index,
        "kind": event.stage.kind(),
        "call_id": event.attempt.call_id.to_string(),
        "row_id": event.stage.row_id(),
        "recorded_at": rfc3339(event.recorded_at),
        "attempt": attempt(&event.attempt),
    });
    match &event.stage {
        Stage::Attempt => {}
        Stage::Outcome(row) => line["outcome"] = outcome(row),
        Stage::Confirmation(row) => line["confirmation"] = confirmation(row),
    }
    line
}

/// A freeze or unfreeze: no call, so no attempt; the freeze row instead.
pub fn render_freeze(f: &FreezeEvent) -> Value {
    json!({
        "log_index": f.log_index,
        "kind": "freeze",
        "call_id": null,
        "row_id": f.freeze_id,
        "recorded_at": rfc3339(f.recorded_at),
        "freeze": {
            "freeze_id": f.freeze_id,
            "action": f.action,
            "reason": f.reason,
            "operator": f.operator,
            "recorded_at": rfc3339(f.recorded_at),
        },
    })
}

fn attempt(a: &AttemptRow) -> Value {
    json!({
        "call_id": a.call_id.to_string(),
        "received_at": rfc3339(a.received_at),
        "recorded_at": rfc3339(a.recorded_at),
        "principal": a.principal,
        "issuer": a.issuer,
        "client_id": a.client_id,
        "token_jti": a.token_jti,
        "token_fingerprint": a.token_fingerprint,
        "roles": a.roles,
        "peer_addr": a.peer_addr,
        "peer_identity": a.peer_identity,
        "user_agent": a.user_agent,
        "x_request_id": a.x_request_id,
        "trace_id": a.trace_id,
        "disk_id": a.disk_id,
        "reason": a.reason,
        "idempotency_key": a.idempotency_key,
        "replay_of": a.replay_of.map(|id| id.to_string()),
        "decision": a.decision,
        "decision_reason": a.decision_reason,
        "refusal_grpc_code": a.refusal_grpc_code,
        "refusal_message": a.refusal_message,
        "disk_name": a.disk_name,
        "zone_id": a.zone_id,
        "disk_size_gib": a.disk_size_gib,
        "disk_type": a.disk_type,
        "disk_status_before": a.disk_status_before,
        "disk_tags": a.disk_tags,
        "disk_snapshot": a.disk_snapshot,
        "policy_set_hash": a.policy_set_hash,
        "policy_decision": a.policy_decision,
        "policy_ids": a.policy_ids,
        "shadow_policy_set_hash": a.shadow_policy_set_hash,
        "shadow_policy_decision": a.shadow_policy_decision,
        "shadow_policy_ids": a.shadow_policy_ids,
    })
}

fn outcome(o: &OutcomeRow) -> Value {
    json!({
        "outcome_id": o.outcome_id,
        "completed_at": rfc3339(o.completed_at),
        "recorded_at": rfc3339(o.recorded_at),
        "outcome": o.outcome,
        "grpc_code": o.grpc_code,
        "error_reason": o.error_reason,
        "zenlayer_code": o.zenlayer_code,
        "zenlayer_request_id": o.zenlayer_request_id,
        "http_status": o.http_status,
        "error_message": o.error_message,
        "zenlayer_action": o.zenlayer_action,
        "recorded_by": o.recorded_by,
    })
}

fn confirmation(c: &ConfirmationRow) -> Value {
    json!({
        "confirmation_id": c.confirmation_id,
        "recorded_at": rfc3339(c.recorded_at),
        "confirmation": c.confirmation,
        "checked_at": rfc3339(c.checked_at),
        "zenlayer_request_id": c.zenlayer_request_id,
        "disk_status": c.disk_status,
        "recorded_by": c.recorded_by,
    })
}
