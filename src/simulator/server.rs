//! The accept loop and the per-request path through the simulator.
//!
//! Each connection is served by hyper's HTTP/1 connection driver rather than
//! a framework's server, because `Fault::DropConnection` needs a service that
//! can fail: when the service future returns `Err`, hyper closes the
//! connection without writing a response, which is exactly the failure to
//! imitate. A request goes: read the whole body, then control endpoints
//! aside, record it, route it, consult the fault queue, answer.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

use super::faults::{self, Outcome};
use super::reply::{self, AnsweredRequestId, ApiError, Reply};
use super::state::Shared;
use super::sync::lock;
use super::traffic::ReceivedRequest;
use super::{api, control};

/// Zenlayer's one API path; the version lives in a header, not the path.
const API_PATH: &str = "/api/v2/vm";

/// Far above any real request body, which is a few hundred bytes.
const MAX_BODY_BYTES: usize = 1 << 20;

/// The reason a request got no answer. hyper closes the connection when the
/// service fails, so this is how a request's connection gets dropped.
#[derive(Debug, thiserror::Error)]
#[error("connection closed without an answer")]
pub(crate) struct NoAnswer;

pub(crate) async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    // Dropping the guard (also on panic) tells `stopped()` waiters that the
    // listener is gone.
    let _stopped = shared.stopped.clone().drop_guard();
    loop {
        let accepted = tokio::select! {
            () = shared.shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _peer)) => {
                tokio::spawn(serve_connection(stream, Arc::clone(&shared)));
            }
            Err(error) => {
                // Usually out of file descriptors; retrying at once would spin.
                tracing::warn!(%error, "simulator could not accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn serve_connection(stream: TcpStream, shared: Arc<Shared>) {
    let shutdown = shared.shutdown.clone();
    let service = service_fn(move |request| handle(Arc::clone(&shared), request));
    let connection = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        // Dropped and hung requests end here on purpose; so do clients that
        // give up. Neither is the simulator's problem.
        tracing::debug!(%error, "simulator connection ended with an error");
    }
}

async fn handle(shared: Arc<Shared>, request: Request<Incoming>) -> Result<Reply, NoAnswer> {
    let (parts, body) = request.into_parts();
    let body = read_body(body).await?;
    let path = parts.uri.path();
    if path.starts_with(control::PREFIX) {
        return Ok(control::handle(&shared, &parts.method, path, &body));
    }
    let sequence = shared.traffic.record(ReceivedRequest {
        method: parts.method.clone(),
        path: path.to_owned(),
        action: super::auth::header(&parts.headers, "x-zc-action").map(str::to_owned),
        headers: parts.headers.clone(),
        body: body.clone(),
        answered_request_id: None,
        sequence: 0,
    });
    let reply = answer_api(&shared, &parts, &body).await?;
    if let Some(AnsweredRequestId(id)) = reply.extensions().get::<AnsweredRequestId>() {
        shared.traffic.answered(sequence, id.clone());
    }
    Ok(reply)
}

async fn answer_api(
    shared: &Shared,
    parts: &http::request::Parts,
    body: &Bytes,
) -> Result<Reply, NoAnswer> {
    let path = parts.uri.path();
    if let Some(reply) = misrouted(&parts.method, path) {
        return Ok(reply);
    }
    let action = super::auth::header(&parts.headers, "x-zc-action");
    let fault = lock(&shared.faults).take(action);
    if let Some(fault) = fault {
        match faults::apply(fault, &shared.shutdown).await {
            Outcome::Proceed => {}
            Outcome::Answer(reply) => return Ok(reply),
            Outcome::Drop => return Err(NoAnswer),
            Outcome::ActThen(instead) => {
                let _acted = api::answer(shared, &parts.headers, body);
                return instead.ok_or(NoAnswer);
            }
        }
    }
    Ok(api::answer(shared, &parts.headers, body))
}

/// A body that cannot be read in full (the client went away, or it exceeds
/// the limit) gets no answer: the request never completely arrived.
async fn read_body(body: Incoming) -> Result<Bytes, NoAnswer> {
    match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(_) => Err(NoAnswer),
    }
}

fn misrouted(method: &Method, path: &str) -> Option<Reply> {
    if path != API_PATH {
        let error = ApiError::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("no API at {path}"),
        );
        return Some(reply::error(&error));
    }
    if method != Method::POST {
        let error = ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "METHOD_NOT_ALLOWED",
            format!("{API_PATH} accepts POST only"),
        );
        let mut reply = reply::error(&error);
        reply
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return Some(reply);
    }
    None
}
