//! Connections: at most so many held at once, each closed once it has had
//! no stream open for the idle timeout.
//!
//! The bound is a semaphore in front of the accept loop: while every slot
//! is taken, nothing more is accepted and new connections wait in the
//! kernel's queue, so a flood of connections costs the gateway nothing it
//! has not agreed to hold. A slot is given back when tonic drops the
//! connection.
//!
//! Idleness is judged by streams, not bytes: keep-alive pings and their
//! answers do not make a connection busy. tonic gives no handle on its
//! connections, so an idle one is ended from below, by its read side
//! reporting end of stream; hyper then closes it. Only a connection without
//! a stream in progress is ever ended, so no call is cut short.

use crate::settings::TransportLimits;
use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::{Instant, Sleep};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt as _};
use tonic::transport::server::Connected;

/// Connections from `incoming`, at most `max_connections` held at once.
/// The accept loop runs in a task of its own and ends (closing the
/// listener) once tonic drops the returned stream.
pub fn admit<S, IO, E>(
    incoming: S,
    limits: &TransportLimits,
) -> ReceiverStream<Result<Admitted<IO>, E>>
where
    S: Stream<Item = Result<IO, E>> + Send + 'static,
    IO: Send + 'static,
    E: Send + 'static,
{
    let (admitted, stream) = mpsc::channel(1);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let idle_timeout = limits.idle_timeout;
    tokio::spawn(async move {
        tokio::pin!(incoming);
        loop {
            let slot = tokio::select! {
                () = admitted.closed() => return,
                slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            };
            let next = tokio::select! {
                () = admitted.closed() => return,
                next = incoming.next() => next,
            };
            let Some(next) = next else { return };
            let next = next.map(|io| Admitted::new(io, slot, idle_timeout));
            if admitted.send(next).await.is_err() {
                return;
            }
        }
    });
    ReceiverStream::new(stream)
}

/// How many streams a connection has open, and since when it has had none.
#[derive(Debug)]
pub(super) struct Activity {
    streams: Mutex<Streams>,
}

#[derive(Debug)]
struct Streams {
    open: usize,
    idle_since: Instant,
}

impl Activity {
    fn new() -> Self {
        Self {
            streams: Mutex::new(Streams {
                open: 0,
                idle_since: Instant::now(),
            }),
        }
    }

    /// Counts a stream as open until the returned guard is dropped.
    pub(super) fn opened(self: &Arc<Self>) -> OpenStream {
        self.streams.lock().expect("never poisoned").open += 1;
        OpenStream(self.clone())
    }

    /// `None` while a stream is open.
    fn idle_since(&self) -> Option<Instant> {
        let streams = self.streams.lock().expect("never poisoned");
        (streams.open == 0).then_some(streams.idle_since)
    }
}

/// A stream in progress on a connection.
#[derive(Debug)]
pub(super) struct OpenStream(Arc<Activity>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        let mut streams = self.0.streams.lock().expect("never poisoned");
        streams.open -= 1;
        if streams.open == 0 {
            streams.idle_since = Instant::now();
        }
    }
}

/// What tonic records about a connection for each request, and the
/// connection's activity, which `calls` takes out again (putting tonic's
/// own record back where tonic looks for it).
#[derive(Debug, Clone)]
pub struct Tracked<C> {
    pub(super) info: C,
    pub(super) activity: Arc<Activity>,
}

/// An accepted connection holding its slot.
#[derive(Debug)]
pub struct Admitted<IO> {
    io: IO,
    /// Given back when hyper drops the connection.
    _slot: OwnedSemaphorePermit,
    activity: Arc<Activity>,
    idle_timeout: Duration,
    /// When to look again whether the connection has been idle too long.
    check: Pin<Box<Sleep>>,
}

impl<IO> Admitted<IO> {
    fn new(io: IO, slot: OwnedSemaphorePermit, idle_timeout: Duration) -> Self {
        Self {
            io,
            _slot: slot,
            activity: Arc::new(Activity::new()),
            idle_timeout,
            check: Box::pin(tokio::time::sleep(idle_timeout)),
        }
    }

    /// Whether the connection has had no stream open for the idle timeout;
    /// otherwise arranges to be woken when it next could have.
    fn idle_too_long(&mut self, cx: &mut Context<'_>) -> bool {
        while self.check.as_mut().poll(cx).is_ready() {
            let now = Instant::now();
            let next = match self.activity.idle_since() {
                Some(since) if now >= since + self.idle_timeout => return true,
                Some(since) => since + self.idle_timeout,
                None => now + self.idle_timeout,
            };
            self.check.as_mut().reset(next);
        }
        false
    }
}

impl<IO: Connected> Connected for Admitted<IO> {
    type ConnectInfo = Tracked<IO::ConnectInfo>;

    fn connect_info(&self) -> Self::ConnectInfo {
        Tracked {
            info: self.io.connect_info(),
            activity: self.activity.clone(),
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Admitted<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Poll::Ready(read) = Pin::new(&mut this.io).poll_read(cx, buf) {
            return Poll::Ready(read);
        }
        if this.idle_too_long(cx) {
            tracing::debug!(
                idle_timeout_ms = this.idle_timeout.as_millis() as u64,
                "closing an idle connection"
            );
            // Nothing added to `buf`: end of stream, which hyper answers by
            // closing the connection.
            return Poll::Ready(Ok(()));
        }
        Poll::Pending
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Admitted<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
