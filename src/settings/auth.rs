//! Settings for caller authentication: where the token signing keys come
//! from and what a token must say.

use super::reader::Reader;
use super::url::upstream_url;
use crate::auth::{Authenticator, JwksCache, KeySet, KeySource, TokenPolicy};
use crate::metrics::Metrics;
use anyhow::Context as _;
use jsonwebtoken::Algorithm;
use reqwest::Url;
use secrecy::{ExposeSecret, SecretString};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Where verification keys come from.
#[derive(Debug, Clone)]
pub enum KeySourceSettings {
    /// `JWT_JWKS_URL`, refreshed every `refresh_interval`
    /// (`JWT_JWKS_REFRESH_INTERVAL_MS`) and, for unknown key ids, at most once
    /// per `refetch_cooldown` (`JWT_JWKS_REFETCH_COOLDOWN_MS`).
    Jwks {
        url: Url,
        refresh_interval: Duration,
        refetch_cooldown: Duration,
    },
    /// `JWT_PUBLIC_KEYS_FILE`: PEM public keys or a JWKS document.
    File(PathBuf),
    /// `JWT_HS256_SECRET`: a shared secret, never alongside public keys.
    Hs256(SecretString),
}

/// Caller authentication settings.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub keys: KeySourceSettings,
    /// `JWT_ISSUER`, `JWT_AUDIENCE`, `JWT_ALGORITHMS`, `JWT_LEEWAY_SECONDS`,
    /// `JWT_ROLES_CLAIM`, `JWT_GROUPS_CLAIM`.
    pub policy: TokenPolicy,
    /// `RELEASE_DISK_ROLE`.
    pub release_role: String,
    /// `AUDIT_ROLE`: may read any call with `GetRelease` (by the default
    /// policies).
    pub audit_role: String,
}

const DEFAULT_ALGORITHMS: &str = "RS256,ES256,EdDSA";

impl AuthSettings {
    pub(super) fn read(r: &mut Reader) -> Self {
        let keys = read_key_source(r);
        let issuer = r.raw("JWT_ISSUER").unwrap_or_else(|| {
            r.problem("JWT_ISSUER is required (the `iss` every caller token must carry)");
            String::new()
        });
        let leeway_seconds = r.or("JWT_LEEWAY_SECONDS", "a whole number of seconds", 30);
        if leeway_seconds > 300 {
            r.problem(format!(
                "JWT_LEEWAY_SECONDS={leeway_seconds} is too lenient: at most 300"
            ));
        }
        let policy = TokenPolicy {
            issuer,
            audience: r
                .raw("JWT_AUDIENCE")
                .unwrap_or_else(|| "zenlayer-gateway".to_owned()),
            algorithms: read_algorithms(r, &keys),
            leeway_seconds,
            roles_claim: r
                .raw("JWT_ROLES_CLAIM")
                .unwrap_or_else(|| "roles".to_owned()),
            groups_claim: r
                .raw("JWT_GROUPS_CLAIM")
                .unwrap_or_else(|| "groups".to_owned()),
        };
        Self {
            keys,
            policy,
            release_role: r
                .raw("RELEASE_DISK_ROLE")
                .unwrap_or_else(|| "disk:release".to_owned()),
            audit_role: r
                .raw("AUDIT_ROLE")
                .unwrap_or_else(|| "disk:audit".to_owned()),
        }
    }

    /// The authenticator these settings describe. A JWKS source starts
    /// fetching at once and refreshes until `shutdown`.
    pub fn authenticator(
        &self,
        shutdown: &CancellationToken,
        metrics: &Metrics,
    ) -> anyhow::Result<Authenticator> {
        let keys = match &self.keys {
            KeySourceSettings::Jwks {
                url,
                refresh_interval,
                refetch_cooldown,
            } => {
                let cache = Arc::new(JwksCache::new(
                    url.clone(),
                    *refetch_cooldown,
                    metrics.clone(),
                )?);
                cache
                    .clone()
                    .spawn_refresher(*refresh_interval, shutdown.clone());
                KeySource::Jwks(cache)
            }
            KeySourceSettings::File(path) => KeySource::Fixed(Arc::new(load_key_file(path)?)),
            KeySourceSettings::Hs256(secret) => KeySource::Fixed(Arc::new(
                KeySet::from_hs256_secret(secret.expose_secret().as_bytes()),
            )),
        };
        Ok(Authenticator::new(
            keys,
            self.policy.clone(),
            &self.release_role,
        ))
    }
}

fn load_key_file(path: &PathBuf) -> anyhow::Result<KeySet> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("JWT_PUBLIC_KEYS_FILE {} cannot be read", path.display()))?;
    let parsed = if bytes.trim_ascii_start().starts_with(b"{") {
        KeySet::from_jwks(&bytes)
    } else {
        KeySet::from_pem(&bytes)
    };
    parsed.map_err(|e| anyhow::anyhow!("JWT_PUBLIC_KEYS_FILE {}: {e}", path.display()))
}

fn read_key_source(r: &mut Reader) -> KeySourceSettings {
    let url = r.raw("JWT_JWKS_URL");
    let file = r.raw("JWT_PUBLIC_KEYS_FILE");
    let secret = r.secret("JWT_HS256_SECRET");
    match (url, file, secret) {
        (Some(url), None, None) => KeySourceSettings::Jwks {
            url: upstream_url(r, "JWT_JWKS_URL", &url),
            refresh_interval: r.millis(
                "JWT_JWKS_REFRESH_INTERVAL_MS",
                300_000,
                (1_000, 86_400_000),
            ),
            refetch_cooldown: r.millis("JWT_JWKS_REFETCH_COOLDOWN_MS", 30_000, (0, 3_600_000)),
        },
        (None, Some(file), None) => KeySourceSettings::File(PathBuf::from(file)),
        (None, None, Some(secret)) => KeySourceSettings::Hs256(secret),
        (None, None, None) => {
            r.problem("caller tokens cannot be checked: set JWT_JWKS_URL (or JWT_PUBLIC_KEYS_FILE, or JWT_HS256_SECRET)");
            KeySourceSettings::File(PathBuf::new())
        }
        (_, _, Some(_)) => {
            // Mixing a shared secret with public keys is how RS/HS confusion
            // attacks get in.
            r.problem(
                "JWT_HS256_SECRET cannot be combined with JWT_JWKS_URL or JWT_PUBLIC_KEYS_FILE",
            );
            KeySourceSettings::File(PathBuf::new())
        }
        (Some(_), Some(_), None) => {
            r.problem("set JWT_JWKS_URL or JWT_PUBLIC_KEYS_FILE, not both");
            KeySourceSettings::File(PathBuf::new())
        }
    }
}

fn read_algorithms(r: &mut Reader, keys: &KeySourceSettings) -> Vec<Algorithm> {
    let symmetric = matches!(keys, KeySourceSettings::Hs256(_));
    let default = if symmetric {
        "HS256"
    } else {
        DEFAULT_ALGORITHMS
    };
    let listed = r
        .raw("JWT_ALGORITHMS")
        .unwrap_or_else(|| default.to_owned());
    let mut algorithms = Vec::new();
    for name in listed.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        match name.parse::<Algorithm>() {
            Ok(alg) if (alg == Algorithm::HS256) != symmetric => r.problem(format!(
                "JWT_ALGORITHMS lists {name}, which does not match the key source (HS256 goes with JWT_HS256_SECRET and nothing else)"
            )),
            Ok(Algorithm::HS384 | Algorithm::HS512) => {
                r.problem(format!("JWT_ALGORITHMS lists {name}; of the HMAC algorithms only HS256 is supported"))
            }
            Ok(alg) => algorithms.push(alg),
            Err(_) => r.problem(format!("JWT_ALGORITHMS lists {name:?}, which is not an accepted JWS algorithm (\"none\" never is)")),
        }
    }
    if algorithms.is_empty() {
        r.problem("JWT_ALGORITHMS names no usable algorithm");
    }
    algorithms
}
