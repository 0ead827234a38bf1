//! Where verification keys come from: fixed (a PEM or JWKS file, or the
//! HS256 secret) or an issuer's JWKS URL, cached and refreshed.
//!
//! A JWKS is refreshed on a schedule and when a token names a key id the
//! cache lacks (so a rotated key is picked up without a restart). Callers
//! start at most one fetch per cooldown, counted from when it started, so a
//! flood of random key ids cannot hammer the issuer. A refresh is one
//! spawned task that every waiter shares: a caller who gives up leaves it
//! running, so the fetch still ends (or times out), is recorded, and counts
//! against the cooldown.
//!
//! Until a first key set is held every call is refused, so the refresher
//! retries with a short backoff and callers may wait on a fetch more often
//! than the cooldown allows: holding them to it would only prolong the
//! outage. A failed refresh keeps the keys already held.

use super::AuthError;
use super::keys::KeySet;
use crate::metrics::Metrics;
use reqwest::Url;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// A JWKS document larger than this is not a key set.
const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// The longest one fetch may take, body included: a refresh always ends,
/// so its waiters and the single-flight slot are always freed.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// While no key set is held, the refresher retries after this, doubling up
/// to [`MAX_RETRY_DELAY`].
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(250);
const MAX_RETRY_DELAY: Duration = Duration::from_secs(5);

/// While no key set is held, callers may start a fetch this often (or once
/// per cooldown, if that is shorter): enough to end an outage as soon as the
/// issuer is back, few enough not to add to its load.
const NO_KEYS_CALLER_INTERVAL: Duration = Duration::from_secs(1);

/// The keys in use, and how to get newer ones.
#[derive(Debug, Clone)]
pub enum KeySource {
    Fixed(Arc<KeySet>),
    Jwks(Arc<JwksCache>),
}

impl KeySource {
    /// The keys to verify with now. Fails only while no key set has ever
    /// been fetched.
    pub async fn current(&self) -> Result<Arc<KeySet>, AuthError> {
        match self {
            Self::Fixed(keys) => Ok(keys.clone()),
            Self::Jwks(cache) => cache.current().await,
        }
    }

    /// Newer keys after a token named an unknown key id, if a refresh is
    /// allowed now and brought any.
    pub async fn refreshed(&self) -> Option<Arc<KeySet>> {
        match self {
            Self::Fixed(_) => None,
            Self::Jwks(cache) => cache.refreshed().await,
        }
    }

    /// Whether a key set is held, and when that changes: health reports it.
    /// A fixed source always holds one.
    pub fn held(&self) -> watch::Receiver<bool> {
        match self {
            Self::Fixed(_) => watch::channel(true).1,
            Self::Jwks(cache) => cache.held.subscribe(),
        }
    }
}

/// A cached JWKS fetched over HTTP(S).
#[derive(Debug)]
pub struct JwksCache {
    http: reqwest::Client,
    url: Url,
    keys: RwLock<Option<Arc<KeySet>>>,
    /// Whether `keys` holds a set. Once true it stays true.
    held: watch::Sender<bool>,
    flight: Mutex<Flight>,
    cooldown: Duration,
    metrics: Metrics,
}

/// The single-flight slot, and what callers have caused.
#[derive(Debug, Default)]
struct Flight {
    /// The refresh under way: waiters clone this and wait for `true`.
    running: Option<watch::Receiver<bool>>,
    /// When a caller last started a fetch: the cooldown runs from here.
    last_caller_start: Option<Instant>,
    /// Why the last fetch failed, for the operators' log.
    last_error: Option<String>,
}

/// Who asks for a refresh, which decides whether it may start one.
#[derive(Debug, Clone, Copy)]
enum Trigger {
    /// The refresher, which keeps its own pace.
    Schedule,
    /// A caller, who may start one fetch per `interval`.
    Caller { interval: Duration },
}

impl JwksCache {
    pub fn new(url: Url, cooldown: Duration, metrics: Metrics) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(FETCH_TIMEOUT)
            // A redirect could lead off HTTPS, past the check on the URL.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            http,
            url,
            keys: RwLock::new(None),
            held: watch::Sender::new(false),
            flight: Mutex::new(Flight::default()),
            cooldown,
            metrics,
        })
    }

    fn cached(&self) -> Option<Arc<KeySet>> {
        self.keys
            .read()
            .expect("the key cache lock is never poisoned")
            .clone()
    }

    fn flight(&self) -> std::sync::MutexGuard<'_, Flight> {
        self.flight
            .lock()
            .expect("the flight lock is never poisoned")
    }

    async fn current(self: &Arc<Self>) -> Result<Arc<KeySet>, AuthError> {
        if let Some(keys) = self.cached() {
            return Ok(keys);
        }
        let interval = self.cooldown.min(NO_KEYS_CALLER_INTERVAL);
        self.refresh(Trigger::Caller { interval }).await;
        self.cached().ok_or_else(|| self.unavailable())
    }

    async fn refreshed(self: &Arc<Self>) -> Option<Arc<KeySet>> {
        let interval = self.cooldown;
        self.refresh(Trigger::Caller { interval }).await;
        self.cached()
    }

    /// The detail goes to the operators' log only: callers learn nothing
    /// about where the keys live.
    fn unavailable(&self) -> AuthError {
        let why = self
            .flight()
            .last_error
            .clone()
            .unwrap_or_else(|| "not fetched yet".into());
        AuthError::KeySourceDown(format!("JWKS at {} unavailable: {why}", self.url))
    }

    /// Waits for the refresh under way, or for one started now if `trigger`
    /// may start one; returns at once otherwise. Dropping the wait leaves
    /// the refresh running.
    async fn refresh(self: &Arc<Self>, trigger: Trigger) {
        if let Some(mut done) = self.join_or_start(trigger) {
            // An error means the refresh task is gone: nothing to wait for.
            let _ = done.wait_for(|done| *done).await;
        }
    }

    /// The refresh to wait for: the one under way, else a new one if
    /// `trigger` may start it now.
    fn join_or_start(self: &Arc<Self>, trigger: Trigger) -> Option<watch::Receiver<bool>> {
        let mut flight = self.flight();
        // A closed channel is a refresh task that died; it must not block
        // every later refresh.
        if let Some(running) = flight.running.as_ref().filter(|r| r.has_changed().is_ok()) {
            return Some(running.clone());
        }
        if let Trigger::Caller { interval } = trigger {
            let now = Instant::now();
            if !caller_may_start(flight.last_caller_start, now, interval) {
                return None;
            }
            flight.last_caller_start = Some(now);
        }
        let (report, done) = watch::channel(false);
        flight.running = Some(done.clone());
        tokio::spawn(self.clone().run(report));
        Some(done)
    }

    /// One refresh, run to its end whatever its waiters do: the outcome is
    /// recorded and the slot freed before they are woken.
    async fn run(self: Arc<Self>, report: watch::Sender<bool>) {
        let error = self.fetch().await.err();
        {
            let mut flight = self.flight();
            flight.running = None;
            flight.last_error = error;
        }
        report.send_replace(true);
    }

    #[tracing::instrument(name = "jwks.fetch", skip_all, fields(url = %self.url))]
    async fn fetch(&self) -> Result<(), String> {
        let downloaded = tokio::time::timeout(FETCH_TIMEOUT, self.download())
            .await
            .unwrap_or_else(|_| Err(format!("no complete answer within {FETCH_TIMEOUT:?}")));
        match downloaded {
            Ok(keys) => {
                tracing::info!(keys = keys.len(), "JWKS loaded");
                *self
                    .keys
                    .write()
                    .expect("the key cache lock is never poisoned") = Some(Arc::new(keys));
                self.held.send_replace(true);
                Ok(())
            }
            Err(error) => {
                self.metrics.jwks_refresh_failed();
                tracing::warn!(
                    error = %error,
                    keys_held = self.cached().is_some(),
                    "JWKS refresh failed; any keys already held stay in use"
                );
                Err(error)
            }
        }
    }

    async fn download(&self) -> Result<KeySet, String> {
        let response = self
            .http
            .get(self.url.clone())
            .send()
            .await
            .map_err(|e| format!("fetch failed: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("HTTP {}", response.status().as_u16()));
        }
        let body = read_at_most(response, MAX_JWKS_BYTES).await?;
        KeySet::from_jwks(&body)
    }

    /// Refreshes every `interval` until `shutdown`, starting now; until a
    /// key set is held, retries after 250 ms, doubling up to 5 s.
    pub fn spawn_refresher(self: Arc<Self>, interval: Duration, shutdown: CancellationToken) {
        tokio::spawn(async move {
            let mut retry = FIRST_RETRY_DELAY;
            loop {
                self.refresh(Trigger::Schedule).await;
                let wait = if self.cached().is_some() {
                    interval
                } else {
                    let wait = retry;
                    retry = next_retry(retry);
                    wait
                };
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(wait) => {}
                }
            }
        });
    }
}

fn next_retry(delay: Duration) -> Duration {
    (delay * 2).min(MAX_RETRY_DELAY)
}

/// Whether a caller may start a fetch at `now`: once `interval` has passed
/// since a caller last started one (the interval itself included).
fn caller_may_start(last_start: Option<Instant>, now: Instant, interval: Duration) -> bool {
    last_start.is_none_or(|at| now - at >= interval)
}

/// The body, refused (not truncated) past `limit`: half a key set is not one.
async fn read_at_most(mut response: reqwest::Response, limit: usize) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| format!("read failed: {e}"))?
    {
        if body.len() + chunk.len() > limit {
            return Err(format!("the document exceeds {limit} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests;
