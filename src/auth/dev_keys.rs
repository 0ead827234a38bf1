//! A development signing key and tokens made with it, for `dev` and the
//! `token` command. Never used by `serve`: production keys belong to an
//! identity provider, not to the gateway.

use anyhow::Context as _;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::time::Duration;

/// An Ed25519 key pair.
pub struct DevSigningKey {
    kid: String,
    pkcs8: Vec<u8>,
    public: Vec<u8>,
}

impl std::fmt::Debug for DevSigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevSigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// What a development token says.
#[derive(Debug, Clone)]
pub struct TokenClaims {
    pub issuer: String,
    pub audience: String,
    pub subject: String,
    pub roles: Vec<String>,
    /// Dotted path the roles are placed under, as `JWT_ROLES_CLAIM` reads it.
    pub roles_claim: String,
    pub lifetime: Duration,
}

impl DevSigningKey {
    pub fn generate() -> anyhow::Result<Self> {
        let document = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|_| anyhow::anyhow!("generate an Ed25519 key"))?;
        Self::from_pkcs8(document.as_ref())
    }

    /// Reads a key written by [`private_pem`](Self::private_pem).
    pub fn from_pem(pem_text: &[u8]) -> anyhow::Result<Self> {
        let block = pem::parse(pem_text).context("the signing key file is not PEM")?;
        Self::from_pkcs8(block.contents())
    }

    fn from_pkcs8(pkcs8: &[u8]) -> anyhow::Result<Self> {
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8)
            .map_err(|_| anyhow::anyhow!("not an Ed25519 PKCS#8 key"))?;
        let public = pair.public_key().as_ref().to_vec();
        let kid = format!("dev-{}", &hex::encode(Sha256::digest(&public))[..16]);
        Ok(Self {
            kid,
            pkcs8: pkcs8.to_vec(),
            public,
        })
    }

    pub fn private_pem(&self) -> String {
        pem::encode(&pem::Pem::new("PRIVATE KEY", self.pkcs8.clone()))
    }

    /// The public half as a JWKS document.
    pub fn jwks(&self) -> String {
        json!({"keys": [{
            "kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA",
            "kid": self.kid, "x": URL_SAFE_NO_PAD.encode(&self.public),
        }]})
        .to_string()
    }

    pub fn mint(&self, claims: &TokenClaims) -> anyhow::Result<String> {
        let now = chrono::Utc::now().timestamp();
        let mut body = json!({
            "iss": claims.issuer, "aud": claims.audience, "sub": claims.subject,
            "iat": now, "nbf": now, "exp": now + claims.lifetime.as_secs() as i64,
            "jti": uuid::Uuid::new_v4().to_string(),
        });
        place(&mut body, &claims.roles_claim, json!(claims.roles));
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        let key = EncodingKey::from_ed_der(&self.pkcs8);
        jsonwebtoken::encode(&header, &body, &key).context("sign the token")
    }
}

/// Puts `value` at a dotted path, creating objects on the way.
fn place(target: &mut Value, path: &str, value: Value) {
    let mut node = target;
    let mut segments = path.split('.').peekable();
    while let Some(segment) = segments.next() {
        if segments.peek().is_none() {
            node[segment] = value;
            return;
        }
        if !node[segment].is_object() {
            node[segment] = json!({});
        }
        node = &mut node[segment];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{KeySet, TokenPolicy};

    #[test]
    fn a_minted_token_verifies_against_the_published_key_set() {
        let key = DevSigningKey::generate().unwrap();
        let again = DevSigningKey::from_pem(key.private_pem().as_bytes()).unwrap();
        let claims = TokenClaims {
            issuer: "dev-issuer".into(),
            audience: "zenlayer-gateway".into(),
            subject: "alice".into(),
            roles: vec!["disk:release".into()],
            roles_claim: "realm_access.roles".into(),
            lifetime: Duration::from_secs(60),
        };
        let token = again.mint(&claims).unwrap();
        let policy = TokenPolicy {
            issuer: "dev-issuer".into(),
            audience: "zenlayer-gateway".into(),
            algorithms: vec![Algorithm::EdDSA],
            leeway_seconds: 0,
            roles_claim: "realm_access.roles".into(),
            groups_claim: "groups".into(),
        };
        let keys = KeySet::from_jwks(key.jwks().as_bytes()).unwrap();
        let principal = super::super::token::verify(&token, &keys, &policy).unwrap();
        assert_eq!(
            (principal.subject.as_str(), principal.roles.as_slice()),
            ("alice", &["disk:release".to_owned()][..])
        );
    }

    #[test]
    fn debug_names_the_key_and_shows_none_of_it() {
        let key = DevSigningKey::generate().unwrap();
        let shown = format!("{key:?}");
        assert!(shown.contains(&key.kid), "{shown}");
        let pem = key.private_pem();
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        for secret in [body, hex::encode(&key.pkcs8), format!("{:?}", key.pkcs8)] {
            assert!(!shown.contains(&secret), "{shown}");
        }
    }

    #[test]
    fn roles_placed_under_a_path_keep_what_is_already_there() {
        let mut body = json!({"sub": "alice", "realm_access": {"account": ["view"]}});
        place(&mut body, "realm_access.roles", json!(["disk:release"]));
        place(&mut body, "scope", json!("a b"));
        assert_eq!(
            body,
            json!({
                "sub": "alice",
                "realm_access": {"account": ["view"], "roles": ["disk:release"]},
                "scope": "a b",
            })
        );
        // A claim in the way that is not an object gives way to one.
        place(&mut body, "sub.roles", json!(["x"]));
        assert_eq!(body["sub"], json!({"roles": ["x"]}));
    }
}
