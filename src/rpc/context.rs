//! Per-call context, set by a tower layer in front of every service: the
//! request id (the caller's `x-request-id`, or a fresh one), when the call
//! arrived and the caller's deadline. The layer opens the call's span, so
//! every log line of the call carries the request id, and echoes the id in
//! the response metadata.

use crate::deadline::Deadline;
use http::{HeaderValue, Request, Response};
use opentelemetry::trace::TraceContextExt as _;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::time::Instant;
use tower::{Layer, Service};
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// What the gateway knows about a call before its handler runs.
#[derive(Debug, Clone)]
pub struct CallContext {
    /// The call's id in the audit trail (time-ordered, so ids sort by arrival).
    pub call_id: uuid::Uuid,
    pub request_id: String,
    /// The W3C trace id: the caller's, from `traceparent`, or a new one.
    pub trace_id: String,
    pub user_agent: Option<String>,
    pub received_at: Instant,
    pub received_wall: chrono::DateTime<chrono::Utc>,
    pub deadline: Deadline,
}

impl CallContext {
    fn from_headers(headers: &http::HeaderMap) -> Self {
        let received_at = Instant::now();
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        Self {
            call_id: uuid::Uuid::now_v7(),
            request_id: caller_request_id(headers)
                .unwrap_or_else(|| uuid::Uuid::now_v7().to_string()),
            trace_id: text("traceparent")
                .and_then(trace_id_of)
                .unwrap_or_else(new_trace_id),
            user_agent: text("user-agent").map(|ua| ua.chars().take(256).collect()),
            received_at,
            received_wall: chrono::Utc::now(),
            deadline: Deadline::from_grpc_timeout(text("grpc-timeout"), received_at),
        }
    }

    /// The context of a call, or a fresh one if the layer was bypassed
    /// (which only a misassembled server could do).
    pub fn of<T>(request: &tonic::Request<T>) -> Self {
        request
            .extensions()
            .get::<Self>()
            .cloned()
            .unwrap_or_else(|| Self::from_headers(&http::HeaderMap::new()))
    }
}

/// The trace id of a W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`).
fn trace_id_of(traceparent: &str) -> Option<String> {
    let mut parts = traceparent.split('-');
    let (_version, trace_id) = (parts.next()?, parts.next()?);
    let valid = trace_id.len() == 32
        && trace_id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && trace_id.bytes().any(|b| b != b'0');
    valid.then(|| trace_id.to_owned())
}

fn new_trace_id() -> String {
    format!("{:032x}", rand::random::<u128>().max(1))
}

/// A caller's id is kept only if it is short and plain, so that it cannot
/// forge log lines or bloat every record it is copied into.
fn caller_request_id(headers: &http::HeaderMap) -> Option<String> {
    let value = headers.get(REQUEST_ID_HEADER)?.to_str().ok()?;
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_.:/+=".contains(c);
    (!value.is_empty() && value.len() <= 128 && value.chars().all(plain)).then(|| value.to_owned())
}

/// Installs [`CallContext`] and the call's span.
#[derive(Debug, Clone, Default)]
pub struct CallContextLayer;

impl<S> Layer<S> for CallContextLayer {
    type Service = CallContextService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        CallContextService { inner }
    }
}

#[derive(Debug, Clone)]
pub struct CallContextService<S> {
    inner: S,
}

impl<S, B, RB> Service<Request<B>> for CallContextService<S>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
    RB: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        if let Some(refused) = not_grpc(&request) {
            return Box::pin(async move { Ok(refused) });
        }
        let mut call = CallContext::from_headers(request.headers());
        let span = server_span(&request, &mut call);
        let header = HeaderValue::from_str(&call.request_id).expect("request ids are plain ASCII");
        request.extensions_mut().insert(call);
        // The service that was made ready is the one that must be called.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(
            async move {
                let mut response = inner.call(request).await?;
                // A refusal travels in the headers (trailers-only); a success's
                // code is recorded by the handler, as it sits in the trailers.
                if let Some(code) = response
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok()?.parse::<i32>().ok())
                {
                    crate::telemetry::record_grpc_status(code);
                    too_large_as_resource_exhausted(code, response.headers_mut());
                }
                response.headers_mut().insert(REQUEST_ID_HEADER, header);
                Ok(response)
            }
            .instrument(span),
        )
    }
}

/// A request that is not gRPC (its content type does not start with
/// `application/grpc`) is refused with HTTP 415, as the gRPC over HTTP/2
/// specification asks, before any handler could act on it.
fn not_grpc<B, RB: Default>(request: &Request<B>) -> Option<Response<RB>> {
    let grpc = request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if grpc {
        return None;
    }
    let mut refused = Response::new(RB::default());
    *refused.status_mut() = http::StatusCode::UNSUPPORTED_MEDIA_TYPE;
    refused.headers_mut().insert(
        http::header::ACCEPT,
        HeaderValue::from_static("application/grpc"),
    );
    Some(refused)
}

/// The transport refuses a message over its decoding limit as OUT_OF_RANGE
/// before any handler runs; gRPC's code for a message too large is
/// RESOURCE_EXHAUSTED. No handler of the gateway answers OUT_OF_RANGE, so
/// the code alone says which refusal this is.
fn too_large_as_resource_exhausted(code: i32, headers: &mut http::HeaderMap) {
    if code == tonic::Code::OutOfRange as i32 {
        let exhausted = (tonic::Code::ResourceExhausted as i32).to_string();
        headers.insert(
            "grpc-status",
            HeaderValue::from_str(&exhausted).expect("digits"),
        );
        headers.insert(
            "grpc-message",
            HeaderValue::from_static(
                "the request message is far larger than any valid one; it was not read",
            ),
        );
    }
}

/// The call's server span, named and described as OpenTelemetry's RPC
/// conventions ask, continuing the caller's trace. The call's trace id is
/// the span's, so logs, traces and the audit row agree.
///
/// When spans are not exported the span is only what log lines read from
/// it, all known at once: nothing else would read the rest, and each
/// field costs the log layer a formatting per call.
fn server_span<B>(request: &Request<B>, call: &mut CallContext) -> tracing::Span {
    if !crate::telemetry::spans_exported() {
        return tracing::info_span!(
            "grpc.call",
            request_id = %call.request_id,
            call_id = %call.call_id,
            trace_id = %call.trace_id,
        );
    }
    let path = request.uri().path().trim_start_matches('/');
    let (service, method) = path.split_once('/').unwrap_or((path, ""));
    let span = tracing::info_span!(
        "grpc.call",
        otel.name = %path,
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = %service,
        rpc.method = %method,
        rpc.grpc.status_code = tracing::field::Empty,
        request_id = %call.request_id,
        call_id = %call.call_id,
        trace_id = tracing::field::Empty,
    );
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&opentelemetry_http::HeaderExtractor(request.headers()))
    });
    let _ = span.set_parent(parent);
    let trace_id = span.context().span().span_context().trace_id();
    if trace_id != opentelemetry::trace::TraceId::INVALID {
        call.trace_id = trace_id.to_string();
    }
    span.record("trace_id", call.trace_id.as_str());
    span
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(id: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert(REQUEST_ID_HEADER, HeaderValue::from_str(id).unwrap());
        h
    }

    #[test]
    fn the_callers_trace_id_is_continued_and_a_bad_one_replaced() {
        let mut h = http::HeaderMap::new();
        h.insert(
            "traceparent",
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        assert_eq!(
            CallContext::from_headers(&h).trace_id,
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        h.insert(
            "traceparent",
            HeaderValue::from_static("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
        );
        let minted = CallContext::from_headers(&h).trace_id;
        assert_eq!(minted.len(), 32);
        assert_ne!(minted, "0".repeat(32));
    }

    #[test]
    fn a_plain_caller_request_id_is_kept() {
        let id = "3f1c9a6e-0b7d-4c1e-9a57-0c9e1f7f3b1a";
        assert_eq!(CallContext::from_headers(&headers(id)).request_id, id);
    }

    #[test]
    fn an_unsafe_or_huge_request_id_is_replaced() {
        for id in ["a b", "x\"}{", &"a".repeat(129), ""] {
            let minted = CallContext::from_headers(&headers(id)).request_id;
            assert_ne!(minted, id);
            assert!(uuid::Uuid::parse_str(&minted).is_ok());
        }
    }
}
