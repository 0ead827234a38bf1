//! A call as it arrived, taken apart from tonic's request so that it can
//! travel into the task that handles it.

use crate::domain::{FieldViolation, ReleaseRequest};
use crate::pb::ReleaseDiskRequest;
use crate::tls;
use crate::transport::RequestMessages;
use std::net::SocketAddr;
use tonic::Request;

/// What the caller sent, and from where.
#[derive(Debug)]
pub struct Received {
    /// The request's metadata, where the caller's token is.
    pub headers: http::HeaderMap,
    pub peer: Option<SocketAddr>,
    /// The subject of the caller's TLS client certificate, with mTLS.
    pub peer_identity: Option<String>,
    pub message: ReleaseDiskRequest,
    /// The message's encoded size, as it arrived.
    pub bytes: usize,
    /// The call carried more than one message (only the first was read).
    pub several_messages: bool,
}

impl Received {
    pub fn of(request: Request<ReleaseDiskRequest>) -> Self {
        let peer = request.remote_addr();
        let peer_identity = request
            .peer_certs()
            .and_then(|chain| tls::peer_identity(&chain));
        let several_messages = several_messages(&request);
        let (metadata, _, message) = request.into_parts();
        Self {
            headers: metadata.into_headers(),
            peer,
            peer_identity,
            bytes: prost::Message::encoded_len(&message),
            message,
            several_messages,
        }
    }

    /// The request's fields, validated; a call that carried a second
    /// message is invalid whatever its first says, since the caller cannot
    /// have meant both.
    pub fn parse(&self) -> Result<ReleaseRequest, Vec<FieldViolation>> {
        let raw = &self.message;
        let parsed = ReleaseRequest::parse(&raw.disk_id, &raw.idempotency_key, &raw.reason);
        if !self.several_messages {
            return parsed;
        }
        let mut violations = vec![several_messages_violation()];
        violations.extend(parsed.err().unwrap_or_default());
        Err(violations)
    }
}

/// Whether the transport saw more than one message in this unary call.
pub fn several_messages<T>(request: &Request<T>) -> bool {
    request
        .extensions()
        .get::<RequestMessages>()
        .is_some_and(RequestMessages::several)
}

/// Recorded as `INVALID_REQUEST`.
pub fn several_messages_violation() -> FieldViolation {
    FieldViolation {
        field: "request",
        description: "a unary call carries exactly one request message; this one carried more, and none of it was acted on".to_owned(),
    }
}
