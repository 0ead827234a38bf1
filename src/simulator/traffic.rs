//! What arrived: request counters and a log of the requests themselves.
//!
//! Tests use the counters to prove how many calls really reached "Zenlayer"
//! (a retry that should not happen, a rejected call that still went out) and
//! the log to prove what those calls carried, e.g. a `traceparent` header.
//! Everything outside the control endpoints is recorded, whatever the answer.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::{HeaderMap, Method};

use super::sync::lock;

/// The log keeps only the most recent requests, so a long-running staging
/// simulator does not grow without bound; tests stay far below this.
const LOG_CAPACITY: usize = 10_000;

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct ReceivedRequest {
    pub method: Method,
    pub path: String,
    /// `X-ZC-Action`, if present and text.
    pub action: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The `requestId` the simulator answered with, once it answered with
    /// Zenlayer API JSON.
    pub answered_request_id: Option<String>,
    pub(crate) sequence: u64,
}

impl ReceivedRequest {
    /// A header's value, if present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }
}

#[derive(Debug, Default)]
pub(crate) struct Traffic {
    total: AtomicU64,
    by_action: Mutex<BTreeMap<String, u64>>,
    log: Mutex<VecDeque<ReceivedRequest>>,
}

impl Traffic {
    /// Logs a request as it arrives; returns its sequence number.
    pub fn record(&self, mut request: ReceivedRequest) -> u64 {
        let sequence = self.total.fetch_add(1, Ordering::SeqCst);
        request.sequence = sequence;
        if let Some(action) = &request.action {
            *lock(&self.by_action).entry(action.clone()).or_default() += 1;
        }
        let mut log = lock(&self.log);
        if log.len() == LOG_CAPACITY {
            log.pop_front();
        }
        log.push_back(request);
        sequence
    }

    /// Notes the `requestId` that request `sequence` was answered with.
    pub fn answered(&self, sequence: u64, request_id: String) {
        let mut log = lock(&self.log);
        if let Some(entry) = log.iter_mut().rev().find(|r| r.sequence == sequence) {
            entry.answered_request_id = Some(request_id);
        }
    }

    pub fn total(&self) -> u64 {
        self.total.load(Ordering::SeqCst)
    }

    pub fn for_action(&self, action: &str) -> u64 {
        lock(&self.by_action).get(action).copied().unwrap_or(0)
    }

    pub fn by_action(&self) -> BTreeMap<String, u64> {
        lock(&self.by_action).clone()
    }

    pub fn log(&self) -> Vec<ReceivedRequest> {
        lock(&self.log).iter().cloned().collect()
    }
}
