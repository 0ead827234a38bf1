//! A bounded cache of tokens already verified, so that a caller making many
//! calls with one token pays for its signature check once (an RS256 verify
//! costs tens of microseconds here; a lookup, well under one). As Envoy's
//! `jwt_cache_config` does, it is keyed by the whole token (its SHA-256, so
//! the cache holds no token), and it never weakens a check:
//! - `exp` and `nbf` are checked again on every hit, with the same leeway;
//! - an entry is only good with the key set that verified it: once the key
//!   set is replaced (a JWKS refresh, a rotation, a revoked key), every entry
//!   verified with the old set is verified afresh on its next use;
//! - only successes are cached: a refusal is always decided anew.

use super::Principal;
use super::keys::KeySet;
use base64::Engine as _;
use lru::LruCache;
use serde::Deserialize;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, Weak};

/// Enough for every service of a large fleet with a token or two each.
const CAPACITY: NonZeroUsize = NonZeroUsize::new(10_000).expect("not zero");

/// The SHA-256 of a presented token.
pub type TokenDigest = [u8; 32];

#[derive(Debug)]
struct Entry {
    principal: Principal,
    /// `exp` and `nbf`, Unix seconds.
    expires: i64,
    not_before: Option<i64>,
    verified_with: Weak<KeySet>,
}

#[derive(Debug)]
pub struct VerifiedTokens {
    entries: Mutex<LruCache<TokenDigest, Entry>>,
    leeway: i64,
}

#[derive(Deserialize)]
struct Times {
    exp: i64,
    nbf: Option<i64>,
}

impl VerifiedTokens {
    pub fn new(leeway_seconds: u64) -> Self {
        Self {
            entries: Mutex::new(LruCache::new(CAPACITY)),
            leeway: i64::try_from(leeway_seconds).unwrap_or(i64::MAX),
        }
    }

    /// The principal of a token verified before with `keys`, if it is
    /// still within its validity.
    pub fn get(&self, digest: &TokenDigest, keys: &Arc<KeySet>, now: i64) -> Option<Principal> {
        let mut entries = self.lock();
        let entry = entries.get(digest)?;
        let same_keys = Weak::ptr_eq(&entry.verified_with, &Arc::downgrade(keys));
        let valid = now <= entry.expires.saturating_add(self.leeway)
            && entry
                .not_before
                .is_none_or(|nbf| now >= nbf.saturating_sub(self.leeway));
        if same_keys && valid {
            return Some(entry.principal.clone());
        }
        entries.pop(digest);
        None
    }

    /// Remembers `token`, just verified with `keys`, as `principal`.
    pub fn put(&self, digest: TokenDigest, token: &str, principal: &Principal, keys: &Arc<KeySet>) {
        // The token was verified a moment ago, so its payload is the issuer's.
        let Some(times) = payload_times(token) else {
            return;
        };
        let entry = Entry {
            principal: principal.clone(),
            expires: times.exp,
            not_before: times.nbf,
            verified_with: Arc::downgrade(keys),
        };
        self.lock().put(digest, entry);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<TokenDigest, Entry>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn payload_times(token: &str) -> Option<Times> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(exp: i64, nbf: Option<i64>) -> String {
        let encode = |v: &serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        let header = encode(&serde_json::json!({"alg": "RS256"}));
        let payload = encode(&serde_json::json!({"exp": exp, "nbf": nbf}));
        format!("{header}.{payload}.signature")
    }

    fn principal() -> Principal {
        Principal {
            subject: "svc".into(),
            issuer: "iss".into(),
            client_id: None,
            token_id: None,
            roles: vec!["disk:release".into()],
            groups: Vec::new(),
        }
    }

    #[test]
    fn a_hit_is_rechecked_for_expiry_and_not_before_with_the_leeway() {
        let cache = VerifiedTokens::new(30);
        let keys = Arc::new(KeySet::from_hs256_secret(b"secret"));
        let digest = [1; 32];
        cache.put(digest, &token(1_000, Some(500)), &principal(), &keys);
        assert_eq!(cache.get(&digest, &keys, 900), Some(principal()));
        assert_eq!(
            cache.get(&digest, &keys, 1_030),
            Some(principal()),
            "within leeway"
        );
        assert_eq!(cache.get(&digest, &keys, 1_031), None, "expired");
        assert_eq!(cache.get(&digest, &keys, 900), None, "and forgotten");
        cache.put(digest, &token(1_000, Some(500)), &principal(), &keys);
        assert_eq!(cache.get(&digest, &keys, 469), None, "not yet valid");
    }

    #[test]
    fn an_entry_is_good_only_with_the_key_set_that_verified_it() {
        let cache = VerifiedTokens::new(0);
        let keys = Arc::new(KeySet::from_hs256_secret(b"secret"));
        let digest = [2; 32];
        cache.put(digest, &token(i64::MAX, None), &principal(), &keys);
        let refreshed = Arc::new(KeySet::from_hs256_secret(b"secret"));
        assert_eq!(cache.get(&digest, &refreshed, 0), None);
        assert_eq!(cache.get(&digest, &keys, 0), None, "and is dropped");
    }

    #[test]
    fn the_cache_is_bounded() {
        let cache = VerifiedTokens::new(0);
        let keys = Arc::new(KeySet::from_hs256_secret(b"secret"));
        for n in 0..(CAPACITY.get() + 10) {
            let mut digest = [0; 32];
            digest[..8].copy_from_slice(&(n as u64).to_le_bytes());
            cache.put(digest, &token(i64::MAX, None), &principal(), &keys);
        }
        assert_eq!(cache.lock().len(), CAPACITY.get());
        assert_eq!(cache.get(&[0; 32], &keys, 0), None, "the oldest went first");
    }
}
