//! A batch of audit events as the columns of one multi-row statement: the
//! writer turns whatever records are queued into arrays, one per column,
//! that `store::write_batch` unnests into rows.

use super::record::{Attempt, Claim, OutcomeRecord, storable};
use crate::zenlayer::DiskSnapshot;
use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

/// Caller-supplied fields are capped at this many characters.
const MAX_FIELD_CHARS: usize = 2048;

/// Idempotency keys to claim, one entry per keyed attempt.
#[derive(Debug, Default)]
pub(super) struct Claims {
    pub issuer: Vec<String>,
    pub principal: Vec<String>,
    pub key: Vec<String>,
    pub disk_id: Vec<String>,
    pub call_id: Vec<Uuid>,
}

/// Attempts to store. An attempt whose `claims_key` is set is stored only
/// if its claim is won, in the same statement.
#[derive(Debug, Default)]
pub(super) struct Attempts {
    pub call_id: Vec<Uuid>,
    pub received_at: Vec<DateTime<Utc>>,
    pub principal: Vec<Option<String>>,
    pub issuer: Vec<Option<String>>,
    pub client_id: Vec<Option<String>>,
    pub token_jti: Vec<Option<String>>,
    pub token_fingerprint: Vec<Option<String>>,
    /// Each row's roles as a JSON array (an array of arrays would not
    /// unnest row by row).
    pub roles: Vec<Value>,
    pub peer_addr: Vec<Option<String>>,
    pub user_agent: Vec<Option<String>>,
    pub x_request_id: Vec<String>,
    pub trace_id: Vec<String>,
    pub disk_id: Vec<String>,
    pub reason: Vec<String>,
    pub idempotency_key: Vec<Option<String>>,
    pub decision: Vec<&'static str>,
    pub decision_reason: Vec<Option<String>>,
    pub refusal_grpc_code: Vec<Option<&'static str>>,
    pub refusal_message: Vec<Option<String>>,
    pub replay_of: Vec<Option<Uuid>>,
    pub peer_identity: Vec<Option<String>>,
    pub disk_snapshot: Vec<Option<Value>>,
    pub disk_name: Vec<Option<String>>,
    pub zone_id: Vec<Option<String>>,
    pub disk_size_gib: Vec<Option<i64>>,
    pub disk_type: Vec<Option<String>>,
    pub disk_status_before: Vec<Option<String>>,
    pub disk_tags: Vec<Option<Value>>,
    pub policy_set_hash: Vec<Option<String>>,
    pub policy_decision: Vec<Option<&'static str>>,
    /// As JSON arrays, like `roles`.
    pub policy_ids: Vec<Option<Value>>,
    pub shadow_policy_set_hash: Vec<Option<String>>,
    pub shadow_policy_decision: Vec<Option<&'static str>>,
    pub shadow_policy_ids: Vec<Option<Value>>,
    pub claims_key: Vec<bool>,
}

/// Outcomes to store; a retried one already stored is skipped.
#[derive(Debug, Default)]
pub(super) struct Outcomes {
    pub call_id: Vec<Uuid>,
    pub completed_at: Vec<DateTime<Utc>>,
    pub outcome: Vec<&'static str>,
    pub grpc_code: Vec<String>,
    pub error_reason: Vec<Option<String>>,
    pub zenlayer_code: Vec<Option<String>>,
    pub zenlayer_request_id: Vec<Option<String>>,
    pub http_status: Vec<Option<i32>>,
    pub error_message: Vec<Option<String>>,
    pub zenlayer_action: Vec<Option<String>>,
}

/// Everything one statement writes.
#[derive(Debug, Default)]
pub(super) struct Batch {
    pub claims: Claims,
    pub attempts: Attempts,
    pub outcomes: Outcomes,
    /// Calls whose idempotency keys are freed (Zenlayer certainly did not act).
    pub freed: Vec<Uuid>,
}

fn text(value: &str) -> String {
    storable(value, MAX_FIELD_CHARS)
}

fn opt_text(value: &Option<String>) -> Option<String> {
    value.as_deref().map(text)
}

/// What Zenlayer sent, kept whole but for NUL (U+0000), which PostgreSQL's
/// text and jsonb cannot hold and which would otherwise fail the write (and
/// with it the release) for a disk whose name or tags carry one.
fn zenlayer_text(value: &Option<String>) -> Option<String> {
    value.as_deref().map(nul_free)
}

/// A JSON value from Zenlayer with every NUL in its strings and keys stored
/// as U+FFFD, as for text.
fn zenlayer_json(value: &Value) -> Value {
    match value {
        Value::String(s) => Value::String(nul_free(s)),
        Value::Array(items) => Value::Array(items.iter().map(zenlayer_json).collect()),
        Value::Object(fields) => zenlayer_object(fields),
        Value::Null | Value::Bool(_) | Value::Number(_) => value.clone(),
    }
}

fn zenlayer_object(fields: &serde_json::Map<String, Value>) -> Value {
    Value::Object(
        fields
            .iter()
            .map(|(k, v)| (nul_free(k), zenlayer_json(v)))
            .collect(),
    )
}

fn nul_free(s: &str) -> String {
    if s.contains('\0') {
        storable(s, usize::MAX)
    } else {
        s.to_owned()
    }
}

impl Batch {
    /// Adds an attempt, and the claim on its key if it has one.
    pub fn attempt(&mut self, attempt: &Attempt, claim: Option<&Claim>) {
        if let Some(claim) = claim {
            let c = &mut self.claims;
            c.issuer.push(claim.issuer.clone());
            c.principal.push(claim.principal.clone());
            c.key.push(claim.key.clone());
            c.disk_id.push(claim.disk_id.clone());
            c.call_id.push(attempt.call_id);
        }
        let a = &mut self.attempts;
        let caller = &attempt.caller;
        let refusal = attempt.refusal.as_ref();
        let disk = attempt.disk.as_ref();
        let disk_text = |field: fn(&DiskSnapshot) -> &Option<String>| {
            disk.and_then(|d| zenlayer_text(field(d)))
        };
        a.call_id.push(attempt.call_id);
        a.received_at.push(attempt.received_at);
        a.principal.push(opt_text(&caller.principal));
        a.issuer.push(opt_text(&caller.issuer));
        a.client_id.push(opt_text(&caller.client_id));
        a.token_jti.push(opt_text(&caller.token_jti));
        a.token_fingerprint.push(caller.token_fingerprint.clone());
        a.roles.push(Value::Array(
            caller
                .roles
                .iter()
                .map(|r| Value::String(text(r)))
                .collect(),
        ));
        a.peer_addr.push(attempt.peer_addr.clone());
        a.user_agent.push(opt_text(&attempt.user_agent));
        a.x_request_id.push(text(&attempt.x_request_id));
        a.trace_id.push(attempt.trace_id.clone());
        a.disk_id.push(storable(&attempt.disk_id, 256));
        a.reason.push(text(&attempt.reason));
        a.idempotency_key.push(opt_text(&attempt.idempotency_key));
        a.decision.push(attempt.decision().label());
        a.decision_reason.push(refusal.map(|r| r.reason.clone()));
        a.refusal_grpc_code.push(refusal.map(|r| r.grpc_code));
        a.refusal_message.push(refusal.map(|r| text(&r.message)));
        a.replay_of.push(attempt.replay_of);
        a.peer_identity.push(opt_text(&attempt.peer_identity));
        a.disk_snapshot.push(disk.map(|d| zenlayer_json(&d.entry)));
        a.disk_name.push(disk_text(|d| &d.disk_name));
        a.zone_id.push(disk_text(|d| &d.zone_id));
        a.disk_size_gib.push(disk.and_then(|d| d.disk_size_gib));
        a.disk_type.push(disk_text(|d| &d.disk_type));
        a.disk_status_before.push(disk_text(|d| &d.disk_status));
        a.disk_tags.push(disk.map(|d| zenlayer_object(&d.tags)));
        let ids =
            |ids: &[String]| Value::Array(ids.iter().map(|i| Value::String(text(i))).collect());
        let policy = attempt.policy.as_ref();
        let shadow = attempt.shadow_policy.as_ref();
        a.policy_set_hash.push(attempt.policy_set_hash.clone());
        a.policy_decision.push(policy.map(|p| p.decision));
        a.policy_ids.push(policy.map(|p| ids(&p.policy_ids)));
        a.shadow_policy_set_hash
            .push(shadow.map(|p| p.set_hash.clone()));
        a.shadow_policy_decision.push(shadow.map(|p| p.decision));
        a.shadow_policy_ids.push(shadow.map(|p| ids(&p.policy_ids)));
        a.claims_key.push(claim.is_some());
    }

    /// Adds an outcome, and frees its call's key when it says so.
    pub fn outcome(&mut self, outcome: &OutcomeRecord) {
        let o = &mut self.outcomes;
        let answer = &outcome.answer;
        o.call_id.push(outcome.call_id);
        o.completed_at.push(outcome.completed_at);
        o.outcome.push(answer.kind.label());
        o.grpc_code.push(answer.grpc_code.clone());
        o.error_reason.push(zenlayer_text(&answer.error_reason));
        o.zenlayer_code.push(zenlayer_text(&answer.zenlayer_code));
        o.zenlayer_request_id
            .push(zenlayer_text(&answer.zenlayer_request_id));
        o.http_status.push(answer.http_status.map(i32::from));
        o.error_message.push(opt_text(&answer.error_message));
        o.zenlayer_action.push(answer.zenlayer_action.clone());
        if outcome.frees_key {
            self.freed.push(outcome.call_id);
        }
    }
}
