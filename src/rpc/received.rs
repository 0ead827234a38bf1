//! A call as it arrived, taken apart from tonic's request so that it can
//! travel into the task that handles it.

use crate::pb::ReleaseDiskRequest;
use crate::tls;
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
}

impl Received {
    pub fn of(request: Request<ReleaseDiskRequest>) -> Self {
        let peer = request.remote_addr();
        let peer_identity = request
            .peer_certs()
            .and_then(|chain| tls::peer_identity(&chain));
        let (metadata, _, message) = request.into_parts();
        Self {
            headers: metadata.into_headers(),
            peer,
            peer_identity,
            bytes: prost::Message::encoded_len(&message),
            message,
        }
    }
}
