//! Queued misbehaviour: the ways Zenlayer, or whatever stands in front of it,
//! fails a request that has already arrived.
//!
//! A fault is taken from the queue only by a request to the API endpoint
//! (`POST /api/v2/vm`, whatever its action and credentials), after the
//! request has been read in full and counted, so a test can tell "the request
//! got there and then failed" from "the request never got there". Control
//! endpoints never take a fault, so a stuck simulator can always be repaired
//! through them. Faults come before the credential checks because the layers
//! they imitate (rate limiter, CDN, proxy) sit in front of Zenlayer's API.

use std::collections::VecDeque;
use std::time::Duration;

use http::{HeaderValue, StatusCode};
use tokio_util::sync::CancellationToken;

use super::reply::{self, ApiError, Reply};

/// One way to fail a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Waits, then answers as if nothing were wrong.
    Latency(Duration),
    /// A Zenlayer JSON error with this status and code, e.g. 500
    /// `INTERNAL_SERVER_ERROR` or 503 `SERVICE_TEMPORARY_UNAVAILABLE`.
    Status { http_status: u16, code: String },
    /// 429 `REQUEST_LIMIT_EXCEEDED`, Zenlayer's rate limit.
    RateLimited,
    /// 403 with `cf-mitigated: challenge` and an HTML page: the CDN wants a
    /// browser to prove itself. No API JSON.
    SecurityChallenge,
    /// 451 with a plain-text body: blocked by security policy.
    Blocked,
    /// 502 with an HTML body, as a reverse proxy answers when its upstream
    /// is down.
    ProxyHtml,
    /// This status with no body at all.
    EmptyBody(u16),
    /// Closes the connection without sending any response.
    DropConnection,
    /// Never answers; the connection stays open until the client gives up
    /// (or the simulator shuts down).
    Hang,
    /// Carries the request out, then closes the connection without an
    /// answer: the client cannot know that it acted.
    ActThenDrop,
    /// Carries the request out, then answers 500 `INTERNAL_SERVER_ERROR`,
    /// as a Zenlayer that failed after acting would.
    ActThenFail,
}

/// What the request handler does after consulting a fault.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Carry on and answer normally.
    Proceed,
    /// Send this instead of the normal answer.
    Answer(Reply),
    /// Close the connection without answering.
    Drop,
    /// Carry the request out, then send this instead of its answer (or, for
    /// `None`, close the connection).
    ActThen(Option<Reply>),
}

/// One queued fault: what, for how many more requests, and for which
/// action (`None`: whatever the action).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pending {
    pub fault: Fault,
    pub remaining: usize,
    pub action: Option<String>,
}

/// Pending faults in the order they will be applied.
#[derive(Debug, Default)]
pub(crate) struct FaultQueue {
    pending: VecDeque<Pending>,
}

impl FaultQueue {
    pub fn push(&mut self, fault: Fault, times: usize) {
        self.push_for(None, fault, times);
    }

    /// Queues `fault` for the next `times` requests naming `action` (all
    /// requests, for `None`).
    pub fn push_for(&mut self, action: Option<&str>, fault: Fault, times: usize) {
        if times > 0 {
            self.pending.push_back(Pending {
                fault,
                remaining: times,
                action: action.map(str::to_owned),
            });
        }
    }

    /// The fault for the next request, which names `action`, if any: the
    /// oldest queued one that applies to it.
    pub fn take(&mut self, action: Option<&str>) -> Option<Fault> {
        let index = self
            .pending
            .iter()
            .position(|p| p.action.is_none() || p.action.as_deref() == action)?;
        let pending = &mut self.pending[index];
        pending.remaining -= 1;
        let fault = pending.fault.clone();
        if pending.remaining == 0 {
            self.pending.remove(index);
        }
        Some(fault)
    }

    pub fn clear(&mut self) {
        self.pending.clear();
    }

    pub fn iter(&self) -> impl Iterator<Item = &Pending> {
        self.pending.iter()
    }
}

/// Carries out `fault`. `shutdown` ends waits early so that a stopping
/// simulator does not keep connections open for a fault's sake.
pub(crate) async fn apply(fault: Fault, shutdown: &CancellationToken) -> Outcome {
    let reply = match fault {
        Fault::Latency(delay) => {
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = shutdown.cancelled() => {}
            }
            return Outcome::Proceed;
        }
        Fault::Hang => {
            shutdown.cancelled().await;
            return Outcome::Drop;
        }
        Fault::DropConnection => return Outcome::Drop,
        Fault::ActThenDrop => return Outcome::ActThen(None),
        Fault::ActThenFail => {
            return Outcome::ActThen(Some(reply::error(&ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL_SERVER_ERROR",
                "an internal error occurred after the request was carried out",
            ))));
        }
        Fault::Status { http_status, code } => reply::error(&ApiError::new(
            status_or_500(http_status),
            &code,
            "injected failure",
        )),
        Fault::RateLimited => reply::error(&ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "REQUEST_LIMIT_EXCEEDED",
            "request rate limit exceeded",
        )),
        Fault::SecurityChallenge => security_challenge(),
        Fault::Blocked => reply::with_body(
            StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS,
            "text/plain; charset=utf-8",
            "Access denied: this request was blocked by the security policy.\n",
        ),
        Fault::ProxyHtml => reply::with_body(StatusCode::BAD_GATEWAY, "text/html", PROXY_HTML),
        Fault::EmptyBody(status) => reply::empty(status_or_500(status)),
    };
    Outcome::Answer(reply)
}

fn security_challenge() -> Reply {
    let mut reply = reply::with_body(
        StatusCode::FORBIDDEN,
        "text/html; charset=UTF-8",
        CHALLENGE_HTML,
    );
    reply
        .headers_mut()
        .insert("cf-mitigated", HeaderValue::from_static("challenge"));
    reply
}

/// Statuses outside 200–599 cannot be sent as a final answer; they become a
/// plain server error rather than a malformed response.
pub(crate) fn status_or_500(status: u16) -> StatusCode {
    match StatusCode::from_u16(status) {
        Ok(code) if (200..600).contains(&status) => code,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

const CHALLENGE_HTML: &str = "<!DOCTYPE html><html lang=\"en-US\"><head><title>Just a moment...</title></head>\
<body><noscript>Enable JavaScript and cookies to continue</noscript></body></html>\n";

const PROXY_HTML: &str = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n\
<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queued_faults_apply_in_order_and_run_out() {
        let mut queue = FaultQueue::default();
        queue.push(Fault::RateLimited, 2);
        queue.push(Fault::Hang, 0);
        queue.push(Fault::Blocked, 1);
        assert_eq!(queue.take(None), Some(Fault::RateLimited));
        assert_eq!(queue.take(Some("ReleaseDisk")), Some(Fault::RateLimited));
        assert_eq!(queue.take(None), Some(Fault::Blocked));
        assert_eq!(queue.take(None), None);
    }

    #[test]
    fn a_fault_for_one_action_leaves_the_others_alone() {
        let mut queue = FaultQueue::default();
        queue.push_for(Some("DescribeDisks"), Fault::Hang, 1);
        queue.push_for(Some("ReleaseDisk"), Fault::ProxyHtml, 1);
        assert_eq!(queue.take(Some("ReleaseDisk")), Some(Fault::ProxyHtml));
        assert_eq!(queue.take(Some("ReleaseDisk")), None);
        assert_eq!(queue.take(Some("DescribeDisks")), Some(Fault::Hang));
    }

    #[test]
    fn unsendable_statuses_become_500() {
        assert_eq!(status_or_500(503), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(status_or_500(101), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(status_or_500(1000), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
