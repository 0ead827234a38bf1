//! What the upstream client is built from. It lives here, not in
//! `settings`, so that `settings` depends on `zenlayer` and not the other
//! way round; `settings` reads it from the environment.

use reqwest::Url;
use secrecy::SecretString;
use std::time::Duration;

/// The gateway's own Zenlayer credential.
#[derive(Debug, Clone)]
pub enum Credential {
    /// ZC2-HMAC-SHA256 with an AccessKeyId and AccessKeyPassword.
    AccessKey { id: String, password: SecretString },
    /// A personal access token, sent as `Authorization: Bearer`.
    Token(SecretString),
}

/// Zenlayer's API and the gateway's credential for it.
#[derive(Debug, Clone)]
pub struct ZenlayerSettings {
    /// `ZENLAYER_BASE_URL`; requests go to `<base>/api/v2/vm`.
    pub base_url: Url,
    /// `ZENLAYER_ACCESS_KEY_ID` + `ZENLAYER_ACCESS_KEY_PASSWORD`, or
    /// `ZENLAYER_ACCESS_TOKEN`.
    pub credential: Credential,
    /// `ZENLAYER_API_VERSION`, sent as `X-ZC-Version`.
    pub api_version: String,
    /// `ZENLAYER_TIMEOUT_MS`: cap on one upstream call.
    pub timeout: Duration,
    /// `ZENLAYER_RATE_LIMIT_RETRIES`: retries after `REQUEST_LIMIT_EXCEEDED`.
    pub rate_limit_retries: u32,
    /// `ZENLAYER_RETRY_BACKOFF_MS`: first backoff; it doubles on each retry.
    pub retry_backoff: Duration,
    /// `ZENLAYER_PREFLIGHT`: look at each disk with `DescribeDisks` before
    /// releasing it (off only for keys that may not describe disks).
    pub preflight: bool,
}
