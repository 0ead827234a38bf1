//! The upstream client: one method per Zenlayer action the gateway forwards.
//!
//! ReleaseDisk is irreversible, so the client retries only what certainly
//! did not reach Zenlayer: a rate-limit refusal, or a connection that could
//! not be made. Anything sent without an answer is reported as an unknown
//! outcome, never silently resent.

use super::answer::{Accepted, MAX_ANSWER_BYTES, interpret};
use super::config::{Credential, ZenlayerSettings};
use super::disk::{DiskSnapshot, find_in};
use super::signing::{ALGORITHM, SignedParts, authorization_header};
use super::{Fate, UpstreamError};
use crate::auth::Authorized;
use crate::deadline::{Deadline, UpstreamBudget};
use crate::domain::DiskId;
use anyhow::Context as _;
use http::header::{AUTHORIZATION, CONTENT_TYPE as CONTENT_TYPE_HEADER};
use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::trace::TraceContextExt as _;
use reqwest::Url;
use secrecy::ExposeSecret;
use std::time::Duration;
use tracing::{Instrument as _, Span, field::Empty, instrument};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

const CONTENT_TYPE: &str = "application/json";
const ACTION: HeaderName = HeaderName::from_static("x-zc-action");
const VERSION: HeaderName = HeaderName::from_static("x-zc-version");
const SERVICE: HeaderName = HeaderName::from_static("x-zc-service");
const TIMESTAMP: HeaderName = HeaderName::from_static("x-zc-timestamp");
const SIGNATURE_METHOD: HeaderName = HeaderName::from_static("x-zc-signature-method");

/// Connecting is quick or it is not happening; a hung connect is retried
/// while the rest of the budget allows, since nothing was sent yet.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The longest `Retry-After` the gateway waits out itself.
const RETRY_AFTER_CAP: Duration = Duration::from_secs(10);

impl ZenlayerSettings {
    /// The upstream client these settings describe.
    pub fn client(&self) -> anyhow::Result<ZenlayerClient> {
        ZenlayerClient::new(self)
    }
}

/// What may be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// A call that must not run twice: retried only when Zenlayer
    /// certainly did not act (rate limited, or never connected).
    OnlyUnacted,
    /// A read: also retried when Zenlayer failed or did not answer.
    Transient,
}

/// What `DescribeDisks` said about one disk.
#[derive(Debug, Clone, PartialEq)]
pub struct Described {
    /// Its entry, or `None` if Zenlayer did not list it.
    pub disk: Option<DiskSnapshot>,
    /// The describe's own requestId.
    pub request_id: String,
}

/// Disks one `DescribeDisks` may ask about: one page of the largest size
/// Zenlayer allows.
pub const MAX_DISKS_PER_DESCRIBE: usize = 1000;

/// What one disk's entry in a `DescribeDisks` answer may take: its fields
/// and its tags (tens of them, each key and value up to a few hundred
/// bytes), with room to spare. An answer about several disks may be this
/// much longer per disk than one about a single disk.
const MAX_DISK_ENTRY_BYTES: usize = 16 * 1024;

/// What one `DescribeDisks` said of several disks.
#[derive(Debug, Clone)]
pub struct DescribedDisks {
    /// Each disk's entry, in the order asked, `None` for one not listed.
    pub disks: Vec<Option<DiskSnapshot>>,
    /// The describe's own requestId.
    pub request_id: String,
}

/// A client for Zenlayer's VM API (`<base>/api/v2/vm`).
#[derive(Debug, Clone)]
pub struct ZenlayerClient {
    http: reqwest::Client,
    endpoint: Url,
    /// The `Host` header exactly as it goes on the wire, since it is signed.
    host: String,
    credential: Credential,
    /// `X-ZC-Version`, checked once at start-up.
    api_version: HeaderValue,
    timeout: Duration,
    rate_limit_retries: u32,
    retry_backoff: Duration,
    preflight: bool,
}

impl ZenlayerClient {
    pub fn new(settings: &ZenlayerSettings) -> anyhow::Result<Self> {
        let endpoint = settings
            .base_url
            .join("api/v2/vm")
            .context("ZENLAYER_BASE_URL cannot take the /api/v2/vm path")?;
        let host = match (endpoint.host_str(), endpoint.port()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_owned(),
            (None, _) => anyhow::bail!("ZENLAYER_BASE_URL has no host"),
        };
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("zenlayer-gateway/", env!("CARGO_PKG_VERSION")))
            // The signed Host header must be the one sent: never follow a
            // redirect to another host with our signature.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .context("build the Zenlayer HTTP client")?;
        Ok(Self {
            http,
            endpoint,
            host,
            credential: settings.credential.clone(),
            api_version: HeaderValue::from_str(&settings.api_version)
                .context("ZENLAYER_API_VERSION is not a valid header value")?,
            timeout: settings.timeout,
            rate_limit_retries: settings.rate_limit_retries,
            retry_backoff: settings.retry_backoff,
            preflight: settings.preflight,
        })
    }

    /// The longest a call's upstream work can take with every retry and
    /// backoff: the pre-flight look (retried as much as the release) and
    /// then the release. After this, no gateway can still be waiting for
    /// Zenlayer's answer to a call it received.
    pub fn longest_call(&self) -> Duration {
        let attempts = self.rate_limit_retries + 1;
        let pauses = (0..self.rate_limit_retries)
            .map(|retry| self.backoff(retry).max(RETRY_AFTER_CAP))
            .sum::<Duration>();
        let one = self.timeout.saturating_mul(attempts) + pauses;
        if self.preflight {
            one.saturating_mul(2)
        } else {
            one
        }
    }

    /// Whether each disk is to be looked at before it is released.
    pub fn preflight(&self) -> bool {
        self.preflight
    }

    fn backoff(&self, retries: u32) -> Duration {
        self.retry_backoff.saturating_mul(1 << retries.min(16))
    }

    /// Asks Zenlayer to release `disk_id` permanently. Only an authorized
    /// caller can be forwarded: the proof is required, not merely checked.
    /// `trace`: the trace id of the call this serves, sent in `traceparent`
    /// when spans are not exported (otherwise the client span's context is).
    #[instrument(target = "zenlayer_gateway::trace", name = "zenlayer.release_disk", skip_all, fields(
        disk_id = %disk_id,
        zenlayer.request_id = Empty,
        zenlayer.code = Empty,
        attempts = Empty,
    ))]
    pub async fn release_disk(
        &self,
        _caller: &Authorized,
        disk_id: &DiskId,
        deadline: Deadline,
        trace: Option<&str>,
    ) -> Result<Accepted, UpstreamError> {
        let body = serde_json::json!({ "diskId": disk_id.as_str() }).to_string();
        let result = self
            .call_with_retries(
                "ReleaseDisk",
                body.as_bytes(),
                MAX_ANSWER_BYTES,
                deadline,
                Retry::OnlyUnacted,
                trace,
            )
            .await;
        record_result(&result);
        result
    }

    /// Asks Zenlayer what it knows of `disk_id` (`DescribeDisks` with
    /// `diskIds: [id]`): its entry, or `None` when it is not listed. A read,
    /// so unlike a release it is retried on 5xx answers and timeouts too,
    /// within the deadline. `trace`: the call's trace id, as for
    /// [`release_disk`](Self::release_disk).
    #[instrument(target = "zenlayer_gateway::trace", name = "zenlayer.describe_disks", skip_all, fields(
        disk_id = %disk_id,
        zenlayer.request_id = Empty,
        zenlayer.code = Empty,
        attempts = Empty,
    ))]
    pub async fn describe_disk(
        &self,
        disk_id: &DiskId,
        deadline: Deadline,
        trace: Option<&str>,
    ) -> Result<Described, UpstreamError> {
        let body = serde_json::json!({ "diskIds": [disk_id.as_str()] }).to_string();
        let result = self
            .call_with_retries(
                "DescribeDisks",
                body.as_bytes(),
                MAX_ANSWER_BYTES,
                deadline,
                Retry::Transient,
                trace,
            )
            .await;
        record_result(&result);
        result.map(|accepted| Described {
            disk: find_in(&accepted.response, disk_id.as_str()),
            request_id: accepted.request_id,
        })
    }

    /// Asks Zenlayer about several disks at once (`DescribeDisks` with
    /// `diskIds` and a page as large as the list, at most
    /// [`MAX_DISKS_PER_DESCRIBE`]): for each id in order, its entry or `None`
    /// when it is not listed. An answer that lists fewer disks than its
    /// `totalCount` is an error: a disk left off a page must never look gone.
    /// Retried like [`describe_disk`](Self::describe_disk).
    #[instrument(target = "zenlayer_gateway::trace", name = "zenlayer.describe_disks", skip_all, fields(
        disks = disk_ids.len(),
        zenlayer.request_id = Empty,
        zenlayer.code = Empty,
        attempts = Empty,
    ))]
    pub async fn describe_disks(
        &self,
        disk_ids: &[DiskId],
        deadline: Deadline,
    ) -> Result<DescribedDisks, UpstreamError> {
        assert!(
            (1..=MAX_DISKS_PER_DESCRIBE).contains(&disk_ids.len()),
            "one page of disk ids"
        );
        let ids: Vec<&str> = disk_ids.iter().map(DiskId::as_str).collect();
        let body =
            serde_json::json!({ "diskIds": ids, "pageSize": ids.len(), "pageNum": 1 }).to_string();
        let result = self
            .call_with_retries(
                "DescribeDisks",
                body.as_bytes(),
                MAX_ANSWER_BYTES + ids.len() * MAX_DISK_ENTRY_BYTES,
                deadline,
                Retry::Transient,
                None,
            )
            .await;
        record_result(&result);
        let accepted = result?;
        let disks =
            entries_of(&accepted.response, &ids).map_err(|detail| UpstreamError::Unreadable {
                http_status: 200,
                detail: format!(
                    "DescribeDisks (requestId {}): {detail}",
                    accepted.request_id
                ),
            })?;
        Ok(DescribedDisks {
            disks,
            request_id: accepted.request_id,
        })
    }

    async fn call_with_retries(
        &self,
        action: &str,
        body: &[u8],
        answer_cap: usize,
        deadline: Deadline,
        retry: Retry,
        trace: Option<&str>,
    ) -> Result<Accepted, UpstreamError> {
        let mut retries = 0;
        loop {
            Span::current().record("attempts", retries + 1);
            let budget = deadline.upstream_budget(self.timeout)?;
            let error = match self
                .send_once(action, body, answer_cap, budget, trace)
                .await
            {
                Ok(accepted) => return Ok(accepted),
                Err(error) => error,
            };
            let pause = self.pause_before_retry(&error, retries, retry);
            match pause {
                Some(pause) if deadline.allows_pause(pause) => {
                    tracing::warn!(error = %error, action, retry_in_ms = pause.as_millis() as u64, "retrying a call that is safe to retry");
                    tokio::time::sleep(pause).await;
                    retries += 1;
                }
                _ => return Err(error),
            }
        }
    }

    /// Exponential backoff (1 s, 2 s, 4 s by default, as Zenlayer's SDKs do),
    /// or `None` when the error must not or need not be retried.
    fn pause_before_retry(
        &self,
        error: &UpstreamError,
        retries: u32,
        retry: Retry,
    ) -> Option<Duration> {
        let safe = match retry {
            Retry::OnlyUnacted => error.retryable(),
            Retry::Transient => error.retryable() || error.fate() == Fate::MayHaveActed,
        };
        if !safe || retries >= self.rate_limit_retries {
            return None;
        }
        let backoff = self.backoff(retries);
        match error {
            // A longer wait than this is better left to the caller, who is
            // told how long through RetryInfo.
            UpstreamError::RateLimited {
                retry_after: Some(after),
                ..
            } if *after > RETRY_AFTER_CAP => None,
            UpstreamError::RateLimited {
                retry_after: Some(after),
                ..
            } => Some(backoff.max(*after)),
            _ => Some(backoff),
        }
    }

    /// One signed attempt, in an HTTP client span whose context travels to
    /// Zenlayer as `traceparent` (or, when spans are not exported, `trace`
    /// with a span id of its own). The body is signed and sent as the same
    /// bytes; each attempt is signed afresh so its timestamp is current.
    async fn send_once(
        &self,
        action: &str,
        body: &[u8],
        answer_cap: usize,
        budget: UpstreamBudget,
        trace: Option<&str>,
    ) -> Result<Accepted, UpstreamError> {
        let span = tracing::info_span!(
            target: crate::telemetry::TRACE_ONLY,
            "POST",
            otel.kind = "client",
            http.request.method = "POST",
            server.address = %self.endpoint.host_str().unwrap_or_default(),
            server.port = self.endpoint.port_or_known_default().unwrap_or_default(),
            url.full = %self.endpoint,
            zenlayer.action = action,
            http.response.status_code = Empty,
            zenlayer.request_id = Empty,
            zenlayer.code = Empty,
        );
        let mut headers = self.headers(action, body);
        let context = span.context();
        if context.span().span_context().is_valid() {
            opentelemetry::global::get_text_map_propagator(|propagator| {
                propagator.inject_context(
                    &context,
                    &mut opentelemetry_http::HeaderInjector(&mut headers),
                )
            });
        } else if let Some(parent) = trace.and_then(traceparent) {
            headers.insert("traceparent", parent);
        }
        let result = self
            .exchange(headers, body, answer_cap, budget)
            .instrument(span.clone())
            .await;
        let _entered = span.enter();
        record_result(&result);
        result
    }

    async fn exchange(
        &self,
        headers: HeaderMap,
        body: &[u8],
        answer_cap: usize,
        budget: UpstreamBudget,
    ) -> Result<Accepted, UpstreamError> {
        let caller_bound = budget.caller_bound;
        let response = self
            .http
            .post(self.endpoint.clone())
            .headers(headers)
            .body(body.to_vec())
            .timeout(budget.timeout)
            .send()
            .await
            .map_err(|e| sent_error(e, caller_bound))?;
        let status = response.status();
        Span::current().record("http.response.status_code", status.as_u16());
        let headers = response.headers().clone();
        let answer = read_capped(response, answer_cap)
            .await
            .map_err(|e| sent_error(e, caller_bound))?;
        interpret(status, &headers, &answer)
    }

    fn headers(&self, action: &str, body: &[u8]) -> HeaderMap {
        // Names and fixed values as constants: a name given as text is
        // copied into a new allocation on every insert.
        let mut headers = HeaderMap::with_capacity(8);
        let text = |value: &str| HeaderValue::from_str(value).expect("header values are ASCII");
        headers.insert(CONTENT_TYPE_HEADER, HeaderValue::from_static(CONTENT_TYPE));
        headers.insert(ACTION, text(action));
        headers.insert(VERSION, self.api_version.clone());
        headers.insert(SERVICE, HeaderValue::from_static("vm"));
        let mut put = |name: HeaderName, mut value: HeaderValue| {
            value.set_sensitive(name == AUTHORIZATION);
            headers.insert(name, value);
        };
        match &self.credential {
            Credential::AccessKey { id, password } => {
                let timestamp = chrono::Utc::now().timestamp();
                let signature = SignedParts {
                    content_type: CONTENT_TYPE,
                    host: &self.host,
                    body,
                    timestamp,
                }
                .sign(password.expose_secret().as_bytes());
                put(TIMESTAMP, HeaderValue::from(timestamp));
                put(SIGNATURE_METHOD, HeaderValue::from_static(ALGORITHM));
                put(AUTHORIZATION, text(&authorization_header(id, &signature)));
            }
            Credential::Token(token) => {
                put(
                    AUTHORIZATION,
                    text(&format!("Bearer {}", token.expose_secret())),
                );
            }
        }
        headers
    }
}

/// A W3C `traceparent` for a request of trace `trace_id` (32 hex digits),
/// with a fresh span id, sampled.
fn traceparent(trace_id: &str) -> Option<HeaderValue> {
    let span_id = rand::random::<u64>().max(1);
    HeaderValue::from_str(&format!("00-{trace_id}-{span_id:016x}-01")).ok()
}

/// A transport error: before the request was written it is `NotSent` and
/// safe to retry; after, the outcome is unknown.
fn sent_error(error: reqwest::Error, caller_deadline: bool) -> UpstreamError {
    if error.is_connect() {
        UpstreamError::NotSent(error)
    } else {
        UpstreamError::OutcomeUnknown {
            caller_deadline,
            source: error,
        }
    }
}

/// Reads at most `cap` bytes of the answer (a longer one is cut short, and
/// so unreadable).
async fn read_capped(
    mut response: reqwest::Response,
    cap: usize,
) -> Result<Vec<u8>, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = cap - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() == cap {
            break;
        }
    }
    Ok(body)
}

/// Each of `ids`' entries in a `DescribeDisks` answer, in order, `None` for
/// one not listed; an error when the answer lists fewer disks than its
/// `totalCount` (or says none), since a disk left off the page is not gone.
fn entries_of(
    response: &serde_json::Value,
    ids: &[&str],
) -> Result<Vec<Option<DiskSnapshot>>, String> {
    let listed = response["dataSet"].as_array().map_or(0, Vec::len);
    match response["totalCount"].as_u64() {
        Some(total) if total <= listed as u64 => {
            Ok(ids.iter().map(|id| find_in(response, id)).collect())
        }
        Some(total) => Err(format!("listed {listed} disks of a totalCount of {total}")),
        None => Err("no totalCount".to_owned()),
    }
}

fn record_result(result: &Result<Accepted, UpstreamError>) {
    let span = Span::current();
    match result {
        Ok(accepted) => {
            span.record("zenlayer.request_id", accepted.request_id.as_str());
        }
        Err(error) => {
            if let Some(id) = error.upstream_request_id() {
                span.record("zenlayer.request_id", id);
            }
            if let Some(code) = error.zenlayer_code() {
                span.record("zenlayer.code", code);
            }
        }
    }
}

#[cfg(test)]
mod tests;
