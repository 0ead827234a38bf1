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
/// simulator does not grow without bound; tests stay far below this. It is
/// bounded both in entries and in the bytes of the bodies it holds.
const LOG_CAPACITY: usize = 10_000;
const LOG_BODY_BYTES: usize = 16 * 1024 * 1024;

/// Distinct actions counted by name; any further ones share one counter,
/// so that random action names cannot grow the table without bound.
const ACTION_NAMES: usize = 64;
const OTHER_ACTIONS: &str = "(other)";

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
    log: Mutex<Log>,
}

#[derive(Debug, Default)]
struct Log {
    entries: VecDeque<ReceivedRequest>,
    body_bytes: usize,
}

impl Traffic {
    /// Logs a request as it arrives; returns its sequence number.
    pub fn record(&self, mut request: ReceivedRequest) -> u64 {
        let sequence = self.total.fetch_add(1, Ordering::SeqCst);
        request.sequence = sequence;
        if let Some(action) = &request.action {
            let mut counts = lock(&self.by_action);
            let known = counts.contains_key(action) || counts.len() < ACTION_NAMES;
            let name = if known {
                action.as_str()
            } else {
                OTHER_ACTIONS
            };
            *counts.entry(name.to_owned()).or_default() += 1;
        }
        let mut log = lock(&self.log);
        log.body_bytes += request.body.len();
        log.entries.push_back(request);
        while log.entries.len() > LOG_CAPACITY || log.body_bytes > LOG_BODY_BYTES {
            let Some(oldest) = log.entries.pop_front() else {
                break;
            };
            log.body_bytes -= oldest.body.len();
        }
        sequence
    }

    /// Notes the `requestId` that request `sequence` was answered with.
    pub fn answered(&self, sequence: u64, request_id: String) {
        let mut log = lock(&self.log);
        if let Some(entry) = log
            .entries
            .iter_mut()
            .rev()
            .find(|r| r.sequence == sequence)
        {
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
        lock(&self.log).entries.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(action: &str, body: usize) -> ReceivedRequest {
        ReceivedRequest {
            method: Method::POST,
            path: "/api/v2/vm".into(),
            action: Some(action.to_owned()),
            headers: HeaderMap::new(),
            body: Bytes::from(vec![b'x'; body]),
            answered_request_id: None,
            sequence: 0,
        }
    }

    #[test]
    fn the_log_is_bounded_in_bytes_and_keeps_the_newest() {
        let traffic = Traffic::default();
        for _ in 0..40 {
            traffic.record(request("ReleaseDisk", 1024 * 1024));
        }
        let log = traffic.log();
        assert_eq!(log.len(), LOG_BODY_BYTES / (1024 * 1024));
        assert_eq!(log.last().unwrap().sequence, 39);
        assert_eq!(traffic.total(), 40, "every request is still counted");
    }

    #[test]
    fn random_action_names_share_one_counter_past_the_limit() {
        let traffic = Traffic::default();
        for n in 0..1000 {
            traffic.record(request(&format!("Action{n}"), 0));
        }
        let counts = traffic.by_action();
        assert_eq!(counts.len(), ACTION_NAMES + 1);
        assert_eq!(counts[OTHER_ACTIONS], 1000 - ACTION_NAMES as u64);
    }
}
