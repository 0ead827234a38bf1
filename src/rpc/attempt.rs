//! The audit record of a call as received: who, what, why, when, from where.

use super::CallContext;
use super::received::Received;
use crate::audit::{Attempt, Caller};
use crate::auth::Authentication;
use crate::domain::ReleaseRequest;

/// The first record of a call, before it is decided. The request's fields
/// come from the validated request when there is one, and as sent when
/// there is not (an invalid request is recorded as the caller sent it).
pub fn received(
    call: &CallContext,
    authentication: &Authentication,
    received: &Received,
    parsed: Option<&ReleaseRequest>,
) -> Attempt {
    let principal = authentication.principal.as_ref();
    let raw = &received.message;
    let (disk_id, reason, idempotency_key) = match parsed {
        Some(request) => (
            request.disk_id.as_str(),
            request.reason.as_str(),
            request.idempotency_key.as_ref().map(|k| k.as_str()),
        ),
        None => (
            raw.disk_id.as_str(),
            raw.reason.as_str(),
            Some(raw.idempotency_key.as_str()).filter(|k| !k.is_empty()),
        ),
    };
    Attempt {
        call_id: call.call_id,
        received_at: call.received_wall,
        caller: Caller {
            principal: principal.map(|p| p.subject.clone()),
            issuer: principal.map(|p| p.issuer.clone()),
            client_id: principal.and_then(|p| p.client_id.clone()),
            token_jti: principal.and_then(|p| p.token_id.clone()),
            token_fingerprint: authentication.token_fingerprint.clone(),
            roles: principal.map(|p| p.roles.clone()).unwrap_or_default(),
        },
        peer_addr: received.peer.map(|p| p.to_string()),
        peer_identity: received.peer_identity.clone(),
        user_agent: call.user_agent.clone(),
        x_request_id: call.request_id.clone(),
        trace_id: call.trace_id.clone(),
        disk_id: disk_id.to_owned(),
        reason: reason.to_owned(),
        idempotency_key: idempotency_key.map(str::to_owned),
        refusal: None,
        replay_of: None,
        disk: None,
        policy_set_hash: None,
        policy: None,
        shadow_policy: None,
    }
}
