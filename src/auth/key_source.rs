//! Where verification keys come from: fixed (a PEM or JWKS file, or the
//! HS256 secret) or an issuer's JWKS URL, cached and refreshed.
//!
//! A JWKS is refreshed on a schedule and when a token names a key id the
//! cache lacks (so a rotated key is picked up without a restart), at most
//! once per cooldown (so a flood of random key ids cannot hammer the
//! issuer). A failed refresh keeps the keys already held.

use super::AuthError;
use super::keys::KeySet;
use crate::metrics::Metrics;
use reqwest::Url;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// A JWKS document larger than this is not a key set.
const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// The keys in use, and how to get newer ones.
#[derive(Debug, Clone)]
pub enum KeySource {
    Fixed(Arc<KeySet>),
    Jwks(Arc<JwksCache>),
}

impl KeySource {
    /// The keys to verify with now.
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
            Self::Jwks(cache) => {
                cache.refresh_unless_recent().await;
                cache.cached()
            }
        }
    }
}

/// A cached JWKS fetched over HTTP(S).
#[derive(Debug)]
pub struct JwksCache {
    http: reqwest::Client,
    url: Url,
    keys: RwLock<Option<Arc<KeySet>>>,
    /// Held while fetching, so concurrent misses cause one fetch; holds the
    /// time and error of the last attempt.
    last_attempt: tokio::sync::Mutex<Option<(Instant, Option<String>)>>,
    cooldown: Duration,
    metrics: Metrics,
}

impl JwksCache {
    pub fn new(url: Url, cooldown: Duration, metrics: Metrics) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(10))
            // A redirect could lead off HTTPS, past the check on the URL.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            http,
            url,
            keys: RwLock::new(None),
            last_attempt: tokio::sync::Mutex::new(None),
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

    async fn current(&self) -> Result<Arc<KeySet>, AuthError> {
        if let Some(keys) = self.cached() {
            return Ok(keys);
        }
        self.refresh_unless_recent().await;
        match self.cached() {
            Some(keys) => Ok(keys),
            None => {
                let last = self.last_attempt.lock().await;
                let why = last
                    .as_ref()
                    .and_then(|(_, e)| e.clone())
                    .unwrap_or_else(|| "not fetched yet".into());
                Err(AuthError::KeySourceDown(format!(
                    "JWKS at {} unavailable: {why}",
                    self.url
                )))
            }
        }
    }

    /// Fetches unless another fetch was attempted within the cooldown.
    async fn refresh_unless_recent(&self) {
        let mut last = self.last_attempt.lock().await;
        if last
            .as_ref()
            .is_some_and(|(at, _)| at.elapsed() < self.cooldown)
        {
            return;
        }
        let error = self.fetch().await.err();
        *last = Some((Instant::now(), error));
    }

    /// Fetches now, whatever the cooldown (the scheduled refresh).
    pub async fn refresh(&self) -> Result<(), String> {
        let mut last = self.last_attempt.lock().await;
        let result = self.fetch().await;
        *last = Some((Instant::now(), result.clone().err()));
        result
    }

    #[tracing::instrument(name = "jwks.fetch", skip_all, fields(url = %self.url))]
    async fn fetch(&self) -> Result<(), String> {
        let result = async {
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
        .await;
        match result {
            Ok(keys) => {
                tracing::info!(keys = keys.len(), "JWKS loaded");
                *self
                    .keys
                    .write()
                    .expect("the key cache lock is never poisoned") = Some(Arc::new(keys));
                Ok(())
            }
            Err(error) => {
                self.metrics.jwks_refresh_failed();
                tracing::warn!(error = %error, "JWKS refresh failed; keeping the keys already held");
                Err(error)
            }
        }
    }

    /// Refreshes every `interval` until `shutdown`, starting now.
    pub fn spawn_refresher(self: Arc<Self>, interval: Duration, shutdown: CancellationToken) {
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = ticks.tick() => { let _ = self.refresh().await; }
                }
            }
        });
    }
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
