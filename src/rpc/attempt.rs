//! The audit record of a call as received: who, what, why, when, from where.

use super::CallContext;
use crate::audit::{Attempt, Caller, Decision};
use crate::auth::Authentication;
use crate::pb::ReleaseDiskRequest;
use std::net::SocketAddr;

/// The first record of a call, before the decision is known.
pub fn received(
    call: &CallContext,
    authentication: &Authentication,
    peer: Option<SocketAddr>,
    peer_identity: Option<String>,
    request: &ReleaseDiskRequest,
) -> Attempt {
    let principal = authentication.principal.as_ref();
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
        peer_addr: peer.map(|p| p.to_string()),
        peer_identity,
        user_agent: call.user_agent.clone(),
        x_request_id: call.request_id.clone(),
        trace_id: call.trace_id.clone(),
        disk_id: request.disk_id.clone(),
        reason: request.reason.clone(),
        idempotency_key: Some(request.idempotency_key.clone()).filter(|k| !k.is_empty()),
        decision: Decision::Allowed,
        replay_of: None,
    }
}
