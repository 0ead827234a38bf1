//! Who made the call and from where, as OCSF `actor`, `src_endpoint` and
//! `http_request`, from the call's attempt.

use crate::export::event::AttemptRow;
use crate::export::fields::Fields;
use serde_json::Value;
use std::net::SocketAddr;

/// `actor`: the token's principal, issuer, client and roles, the mTLS
/// identity, and the gateway's decision. A call refused before a token was
/// verified has no principal: its user is `unauthenticated` (type Other),
/// still with the presented token's fingerprint when there was one.
pub fn actor(a: &AttemptRow) -> Fields {
    let groups: Vec<Value> = a
        .roles
        .iter()
        .map(|role| {
            Fields::new()
                .with("name", role.as_str())
                .with("type", "role")
                .into()
        })
        .collect();
    let user = match &a.principal {
        Some(principal) => Fields::new()
            .with("uid", principal.as_str())
            .with("name", principal.as_str()),
        None => Fields::new()
            .with("name", "unauthenticated")
            .with("type_id", 99)
            .with("type", "Unauthenticated"),
    }
    .maybe("credential_uid", a.token_fingerprint.as_deref())
    .maybe("groups", (!groups.is_empty()).then_some(groups));
    let idp = Fields::new()
        .maybe("name", a.issuer.as_deref())
        .maybe("issuer", a.issuer.as_deref());
    let session = Fields::new().maybe("uid", a.token_jti.as_deref());
    Fields::new()
        .nested("user", user)
        .nested("idp", idp)
        .nested("session", session)
        .maybe("app_uid", a.client_id.as_deref())
        .maybe("app_name", a.peer_identity.as_deref())
        .with(
            "authorizations",
            vec![Value::from(
                Fields::new().with("decision", a.decision.as_str()),
            )],
        )
}

/// `src_endpoint`: the peer's address. It is always known over TCP; were it
/// not, the endpoint is named `unknown`, since OCSF needs one of its ids.
pub fn src_endpoint(a: &AttemptRow) -> Fields {
    match a.peer_addr.as_deref().map(|p| (p, p.parse::<SocketAddr>())) {
        Some((_, Ok(peer))) => Fields::new()
            .with("ip", peer.ip().to_string())
            .with("port", peer.port()),
        Some((raw, Err(_))) => Fields::new().with("name", raw),
        None => Fields::new().with("name", "unknown"),
    }
}

/// `http_request`: the gRPC call's HTTP/2 request, with the caller's user
/// agent and the call's `x-request-id` as its uid.
pub fn http_request(a: &AttemptRow) -> Fields {
    Fields::new()
        .with("uid", a.x_request_id.as_str())
        .maybe("user_agent", a.user_agent.as_deref())
}
