//! Calls, before any handler: at most so many in progress at once, each
//! request given a bounded time to arrive, and a unary request cut at its
//! first message.
//!
//! A call beyond the limit is answered RESOURCE_EXHAUSTED at once, so a
//! flood of streams that send headers and never a body holds no more than
//! the limit, and each of those for at most the read timeout.
//!
//! A unary call that carries a second message is not the call its caller
//! meant to make (or not a gRPC client at all): the body is ended where the
//! second message begins, so tonic decodes only the first, and the handler
//! refuses the call as INVALID_ARGUMENT (with its audit record, like any
//! invalid request) on seeing [`RequestMessages`].

use super::connections::{OpenStream, Tracked};
use super::frames::FrameCounter;
use crate::settings::TransportLimits;
use bytes::Bytes;
use http::{Request, Response};
use http_body::Frame;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::time::Sleep;
use tonic::Status;
use tonic::body::Body;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tower::{Layer, Service};

/// Methods whose request is a single message (unary and server streaming);
/// any other call's request may carry many.
const SINGLE_MESSAGE: &[&str] = &[
    "/zenlayer.vm.v1.DiskService/ReleaseDisk",
    "/zenlayer.vm.v1.DiskService/GetRelease",
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
];

/// Whether a single-message request carried more than one message. The
/// handler reads it once tonic has decoded the request (by then the body
/// has ended).
#[derive(Debug, Clone, Default)]
pub struct RequestMessages(Arc<AtomicBool>);

impl RequestMessages {
    pub fn several(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    fn mark_several(&self) {
        self.0.store(true, Ordering::Release);
    }
}

/// The bounds on calls, in front of every service.
#[derive(Debug, Clone)]
pub struct IntakeLayer {
    pending: Arc<Semaphore>,
    limit: usize,
    read_timeout: Duration,
}

impl IntakeLayer {
    pub fn new(limits: &TransportLimits) -> Self {
        Self {
            pending: Arc::new(Semaphore::new(limits.max_pending_calls)),
            limit: limits.max_pending_calls,
            read_timeout: limits.request_read_timeout,
        }
    }
}

impl<S> Layer<S> for IntakeLayer {
    type Service = Intake<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Intake {
            inner,
            bounds: self.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Intake<S> {
    inner: S,
    bounds: IntakeLayer,
}

impl<S, RB> Service<Request<Body>> for Intake<S>
where
    S: Service<Request<Body>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    RB: http_body::Body<Data = Bytes> + Send + 'static,
    RB::Error: Into<tonic::codegen::StdError>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        let stream = connection_of(request.extensions_mut()).map(|c| c.opened());
        let Ok(permit) = self.bounds.pending.clone().try_acquire_owned() else {
            let refused = Status::resource_exhausted(format!(
                "the gateway has {} calls in progress, its limit; nothing was done, retry with backoff",
                self.bounds.limit
            ));
            return Box::pin(async move { Ok(refused.into_http()) });
        };
        let messages = RequestMessages::default();
        let single = SINGLE_MESSAGE.contains(&request.uri().path());
        let body = std::mem::take(request.body_mut());
        let counter = single.then(|| (FrameCounter::default(), messages.clone()));
        *request.body_mut() = Body::new(ArrivingBody::new(body, self.bounds.read_timeout, counter));
        request.extensions_mut().insert(messages);
        // The service that was made ready is the one that must be called.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let response = inner.call(request).await?;
            // A call stops being pending once it is answered; its stream
            // stays open until the answer's last byte is sent.
            drop(permit);
            Ok(response.map(|body| {
                Body::new(StreamBody {
                    body: Body::new(body),
                    _stream: stream,
                })
            }))
        })
    }
}

/// The connection a request came on, taking tonic's record of it back out
/// of [`Tracked`] so that `Request::remote_addr` and `peer_certs` find it.
fn connection_of(extensions: &mut http::Extensions) -> Option<Arc<super::connections::Activity>> {
    fn untrack<C: Clone + Send + Sync + 'static>(
        extensions: &mut http::Extensions,
    ) -> Option<Arc<super::connections::Activity>> {
        let tracked = extensions.remove::<Tracked<C>>()?;
        extensions.insert(tracked.info);
        Some(tracked.activity)
    }
    untrack::<TcpConnectInfo>(extensions)
        .or_else(|| untrack::<TlsConnectInfo<TcpConnectInfo>>(extensions))
}

/// A request body that must arrive in time, and, for a single-message
/// method, ends where a second message would begin.
struct ArrivingBody {
    /// Replaced by an empty body once ended, so that whatever more the
    /// client sends is discarded rather than buffered.
    inner: Body,
    /// `None` once the body has ended.
    read_by: Option<Pin<Box<Sleep>>>,
    read_timeout: Duration,
    counter: Option<(FrameCounter, RequestMessages)>,
}

impl ArrivingBody {
    fn new(
        inner: Body,
        read_timeout: Duration,
        counter: Option<(FrameCounter, RequestMessages)>,
    ) -> Self {
        Self {
            inner,
            read_by: Some(Box::pin(tokio::time::sleep(read_timeout))),
            read_timeout,
            counter,
        }
    }

    fn end(&mut self) {
        self.inner = Body::default();
        self.read_by = None;
    }

    /// A data chunk: passed on, up to where a second message begins.
    fn data(&mut self, data: Bytes) -> Frame<Bytes> {
        match &mut self.counter {
            Some((counter, messages)) => {
                if let Some(at) = counter.second_message_at(&data) {
                    messages.mark_several();
                    self.end();
                    return Frame::data(data.slice(..at));
                }
            }
            None => {
                // A streaming request may pause between messages, but not
                // for longer than the read timeout.
                if let Some(read_by) = &mut self.read_by {
                    read_by
                        .as_mut()
                        .reset(tokio::time::Instant::now() + self.read_timeout);
                }
            }
        }
        Frame::data(data)
    }
}

impl http_body::Body for ArrivingBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        let Some(read_by) = &mut this.read_by else {
            return Poll::Ready(None);
        };
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => Poll::Ready(Some(Ok(this.data(data)))),
                Err(trailers) => Poll::Ready(Some(Ok(trailers))),
            },
            Poll::Ready(Some(Err(error))) => {
                this.end();
                Poll::Ready(Some(Err(error)))
            }
            Poll::Ready(None) => {
                this.end();
                Poll::Ready(None)
            }
            Poll::Pending => {
                if read_by.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.end();
                Poll::Ready(Some(Err(Status::unavailable(format!(
                    "the request did not arrive within {} ms; nothing was done",
                    this.read_timeout.as_millis()
                )))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.read_by.is_none() || self.inner.is_end_stream()
    }
}

/// A response body that keeps its stream counted as open until it is sent.
struct StreamBody<B> {
    body: B,
    _stream: Option<OpenStream>,
}

impl<B> http_body::Body for StreamBody<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
