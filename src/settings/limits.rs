//! What one caller, or all of them together, may hold of the gateway at
//! once: connections, streams, header bytes, the time a request may take to
//! arrive, calls in progress. Each bound is a setting, so an operator can
//! size it to the container's memory limit; the defaults keep a gateway
//! under abuse within about 200 MiB (see README, "Resource limits").

use super::reader::Reader;
use std::time::Duration;

/// Bounds on the gRPC listener's transport.
#[derive(Debug, Clone)]
pub struct TransportLimits {
    /// `GATEWAY_MAX_CONNECTIONS`: connections held at once; past it, new
    /// ones wait in the kernel's accept queue until one closes.
    pub max_connections: usize,
    /// `GATEWAY_MAX_STREAMS_PER_CONNECTION`: HTTP/2 streams open at once on
    /// one connection (SETTINGS_MAX_CONCURRENT_STREAMS); more are refused
    /// with RST_STREAM(REFUSED_STREAM).
    pub max_streams_per_connection: u32,
    /// `GATEWAY_MAX_PENDING_CALLS`: calls in progress on all connections
    /// together; past it, a call is answered RESOURCE_EXHAUSTED at once.
    pub max_pending_calls: usize,
    /// `GATEWAY_MAX_HEADER_LIST_BYTES`: the request's headers and metadata
    /// together (SETTINGS_MAX_HEADER_LIST_SIZE, as HTTP/2 counts them).
    pub max_header_list_bytes: u32,
    /// `GATEWAY_REQUEST_READ_TIMEOUT_MS`: how long a unary request's message
    /// may take to arrive once its headers have (for a streaming call: the
    /// longest pause between its messages).
    pub request_read_timeout: Duration,
    /// `GATEWAY_IDLE_TIMEOUT_MS`: a connection with no stream open for this
    /// long is closed (also one that never opens a stream, e.g. preface only).
    pub idle_timeout: Duration,
    /// `GATEWAY_KEEPALIVE_INTERVAL_MS`: how often a connection is pinged
    /// (HTTP/2 PING), so a peer that vanished is noticed.
    pub keepalive_interval: Duration,
    /// `GATEWAY_KEEPALIVE_TIMEOUT_MS`: a ping unanswered for this long
    /// closes the connection.
    pub keepalive_timeout: Duration,
    /// `GATEWAY_MAX_PENDING_RESET_STREAMS`: streams a client opened and reset
    /// before they were served (the "rapid reset" attack); past it the
    /// connection is closed with GOAWAY.
    pub max_pending_reset_streams: usize,
    /// `GATEWAY_MAX_LOCAL_ERROR_RESETS`: streams the gateway had to reset for
    /// a client's protocol errors; past it the connection is closed.
    pub max_local_error_resets: usize,
}

impl TransportLimits {
    pub(super) fn read(r: &mut Reader) -> Self {
        Self {
            max_connections: count(r, "GATEWAY_MAX_CONNECTIONS", 1_024, (1, 100_000)),
            max_streams_per_connection: count(
                r,
                "GATEWAY_MAX_STREAMS_PER_CONNECTION",
                100,
                (1, 10_000),
            ) as u32,
            max_pending_calls: count(r, "GATEWAY_MAX_PENDING_CALLS", 1_024, (1, 1_000_000)),
            max_header_list_bytes: count(
                r,
                "GATEWAY_MAX_HEADER_LIST_BYTES",
                16 * 1024,
                (1_024, 1024 * 1024),
            ) as u32,
            request_read_timeout: r.millis(
                "GATEWAY_REQUEST_READ_TIMEOUT_MS",
                10_000,
                (10, 600_000),
            ),
            idle_timeout: r.millis("GATEWAY_IDLE_TIMEOUT_MS", 300_000, (10, 86_400_000)),
            keepalive_interval: r.millis("GATEWAY_KEEPALIVE_INTERVAL_MS", 30_000, (10, 3_600_000)),
            keepalive_timeout: r.millis("GATEWAY_KEEPALIVE_TIMEOUT_MS", 10_000, (10, 600_000)),
            max_pending_reset_streams: count(
                r,
                "GATEWAY_MAX_PENDING_RESET_STREAMS",
                20,
                (1, 10_000),
            ),
            max_local_error_resets: count(r, "GATEWAY_MAX_LOCAL_ERROR_RESETS", 1_024, (1, 100_000)),
        }
    }
}

/// A whole number within `range`.
fn count(r: &mut Reader, key: &str, default: usize, range: (usize, usize)) -> usize {
    let expected = format!("a whole number from {} to {}", range.0, range.1);
    let value = r.or(key, &expected, default);
    if !(range.0..=range.1).contains(&value) {
        r.problem(format!(
            "{key}={value} is out of range: expected {expected}"
        ));
    }
    value
}
