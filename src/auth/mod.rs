//! Who may release a disk: authentication from the caller's JWT, then the
//! release role. Default deny: a call is forwarded only with an
//! [`Authorized`] proof, which only a verified token carrying the release
//! role produces; the policies then decide on the disk itself.

mod cache;
pub mod dev_keys;
mod error;
mod key_source;
mod keys;
mod principal;
mod token;

pub use error::{AuthError, Verdict};
pub use key_source::{JwksCache, KeySource};
pub use keys::KeySet;
pub use principal::{Authorized, Principal};
pub use token::{MAX_TOKEN_BYTES, TokenPolicy};

use cache::{TokenDigest, VerifiedTokens};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// What the gateway learned about a call's caller. Kept for the audit trail
/// whether or not the caller was let through.
#[derive(Debug, Clone)]
pub struct Authentication {
    /// SHA-256 of the presented token, so a leaked token can be traced in
    /// the audit trail without the trail holding the token.
    pub token_fingerprint: Option<String>,
    /// The verified caller, even when the role was missing.
    pub principal: Option<Principal>,
    pub result: Result<Authorized, AuthError>,
}

/// Verifies tokens and checks the release role.
#[derive(Debug, Clone)]
pub struct Authenticator {
    keys: KeySource,
    policy: Arc<TokenPolicy>,
    release_role: Arc<str>,
    verified: Arc<VerifiedTokens>,
}

/// A verified caller who wants to read calls from the audit trail; which
/// calls it may read is the policies' to decide. Only
/// [`Authenticator::check_reader`] makes one.
#[derive(Debug, Clone)]
pub struct Reader {
    principal: Principal,
}

impl Reader {
    pub fn principal(&self) -> &Principal {
        &self.principal
    }
}

impl Authenticator {
    pub fn new(keys: KeySource, policy: TokenPolicy, release_role: &str) -> Self {
        Self {
            keys,
            verified: Arc::new(VerifiedTokens::new(policy.leeway_seconds)),
            policy: Arc::new(policy),
            release_role: release_role.into(),
        }
    }

    /// Authenticates a caller who wants to read the audit trail; no role is
    /// needed to read one's own calls.
    #[tracing::instrument(
        target = "zenlayer_gateway::trace",
        name = "authorize_reader",
        skip_all
    )]
    pub async fn check_reader(&self, headers: &http::HeaderMap) -> Result<Reader, AuthError> {
        let token = token::bearer_token(headers)?;
        let principal = self
            .verify(token, &Sha256::digest(token.as_bytes()).into())
            .await?;
        Ok(Reader { principal })
    }

    /// Whether token signing keys are held, and when that changes: without
    /// them every call is refused, so health reports it.
    pub fn keys_held(&self) -> tokio::sync::watch::Receiver<bool> {
        self.keys.held()
    }

    /// Authenticates and authorizes the caller behind `headers`.
    #[tracing::instrument(target = "zenlayer_gateway::trace", name = "authorize", skip_all, fields(principal = tracing::field::Empty, auth.reason = tracing::field::Empty))]
    pub async fn check(&self, headers: &http::HeaderMap) -> Authentication {
        let (token_fingerprint, principal) = match token::bearer_token(headers) {
            Ok(token) => {
                let digest = TokenDigest::from(Sha256::digest(token.as_bytes()));
                (Some(hex::encode(digest)), self.verify(token, &digest).await)
            }
            Err(error) => (None, Err(error)),
        };
        let result = principal
            .clone()
            .and_then(|p| p.authorize(&self.release_role, &self.policy.roles_claim));
        let span = tracing::Span::current();
        if let Ok(p) = &principal {
            span.record("principal", p.subject.as_str());
        }
        if let Err(e) = &result {
            span.record("auth.reason", e.reason());
        }
        Authentication {
            token_fingerprint,
            principal: principal.ok(),
            result,
        }
    }

    /// The verified principal of `token` (whose SHA-256 is `digest`): from
    /// the cache when it was verified with the keys held now and is still
    /// valid, else by checking its signature and claims.
    async fn verify(&self, token: &str, digest: &TokenDigest) -> Result<Principal, AuthError> {
        let mut keys = self.keys.current().await?;
        let now = chrono::Utc::now().timestamp();
        if let Some(principal) = self.verified.get(digest, &keys, now) {
            return Ok(principal);
        }
        if token::names_unknown_key(token, &keys, &self.policy)
            && let Some(newer) = self.keys.refreshed().await
        {
            keys = newer;
        }
        let principal = token::verify(token, &keys, &self.policy)?;
        self.verified.put(*digest, token, &principal, &keys);
        Ok(principal)
    }
}
