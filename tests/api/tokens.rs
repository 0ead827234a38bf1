//! The test identity provider: fixture signing keys, a real HTTP JWKS
//! endpoint whose key set, health and speed can change mid-test, and token
//! minting.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const ISSUER: &str = "https://idp.test.internal";
pub const AUDIENCE: &str = "zenlayer-gateway";
pub const RELEASE_ROLE: &str = "disk:release";
pub const SUBJECT: &str = "svc-disk-janitor";

/// A fixture key pair and the kid the test IdP publishes it under.
#[derive(Debug, Clone, Copy)]
pub struct Signer {
    pub kid: &'static str,
    pub alg: Algorithm,
    pem: &'static [u8],
}

pub const RSA: Signer = Signer {
    kid: "rsa-1",
    alg: Algorithm::RS256,
    pem: include_bytes!("../fixtures/jwt/rsa-private.pem"),
};
pub const RSA_NEXT: Signer = Signer {
    kid: "rsa-2",
    alg: Algorithm::RS256,
    pem: include_bytes!("../fixtures/jwt/rsa2-private.pem"),
};
pub const EC: Signer = Signer {
    kid: "ec-1",
    alg: Algorithm::ES256,
    pem: include_bytes!("../fixtures/jwt/ec-private.pem"),
};
pub const ED: Signer = Signer {
    kid: "ed-1",
    alg: Algorithm::EdDSA,
    pem: include_bytes!("../fixtures/jwt/ed-private.pem"),
};
/// Never published: what an attacker with their own key would sign with.
pub const UNRELATED: Signer = Signer {
    kid: "rsa-1",
    alg: Algorithm::RS256,
    pem: include_bytes!("../fixtures/jwt/unrelated-private.pem"),
};
pub const RSA_PUBLIC_PEM: &[u8] = include_bytes!("../fixtures/jwt/rsa-public.pem");

impl Signer {
    pub fn encoding_key(&self) -> EncodingKey {
        match self.alg {
            Algorithm::ES256 => EncodingKey::from_ec_pem(self.pem),
            Algorithm::EdDSA => EncodingKey::from_ed_pem(self.pem),
            _ => EncodingKey::from_rsa_pem(self.pem),
        }
        .expect("a fixture key")
    }

    pub fn jwk(&self) -> Jwk {
        let mut jwk = Jwk::from_encoding_key(&self.encoding_key(), self.alg).expect("a public JWK");
        jwk.common.key_id = Some(self.kid.to_owned());
        jwk
    }

    /// Signs `claims` with this key, under this key's kid.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.to_owned());
        self.sign_with_header(header, claims)
    }

    pub fn sign_with_header(&self, header: Header, claims: &Value) -> String {
        jsonwebtoken::encode(&header, claims, &self.encoding_key()).expect("sign a test token")
    }
}

pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Claims of a token that should be let through.
pub fn good_claims() -> Value {
    json!({
        "iss": ISSUER, "aud": [AUDIENCE, "other-service"], "sub": SUBJECT,
        "azp": "disk-janitor", "jti": uuid::Uuid::new_v4().to_string(),
        "iat": now() - 10, "exp": now() + 600, "roles": [RELEASE_ROLE, "viewer"],
    })
}

/// A token that should be let through.
pub fn good_token() -> String {
    RSA.sign(&good_claims())
}

/// The `authorization` value for `token`.
pub fn bearer(token: &str) -> tonic::metadata::MetadataValue<tonic::metadata::Ascii> {
    format!("Bearer {token}").parse().expect("an ASCII header")
}

/// A JWKS endpoint served over real HTTP.
#[derive(Debug, Clone)]
pub struct KeyServer {
    pub url: String,
    state: Arc<KeyServerState>,
}

#[derive(Debug)]
struct KeyServerState {
    keys: Mutex<Vec<Jwk>>,
    failing: Mutex<bool>,
    delay: Mutex<Duration>,
    fetches: AtomicU64,
}

impl KeyServer {
    pub async fn start(signers: &[Signer]) -> Self {
        let state = Arc::new(KeyServerState {
            keys: Mutex::new(signers.iter().map(Signer::jwk).collect()),
            failing: Mutex::new(false),
            delay: Mutex::new(Duration::ZERO),
            fetches: AtomicU64::new(0),
        });
        let app = Router::new()
            .route("/.well-known/jwks.json", get(serve_jwks))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the key server");
        let url = format!(
            "http://{}/.well-known/jwks.json",
            listener.local_addr().unwrap()
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, state }
    }

    /// Publishes another key, as an IdP does before rotating to it.
    pub fn publish(&self, signer: Signer) {
        self.state.keys.lock().unwrap().push(signer.jwk());
    }

    /// Publishes exactly these keys, withdrawing every other.
    pub fn replace(&self, signers: &[Signer]) {
        *self.state.keys.lock().unwrap() = signers.iter().map(Signer::jwk).collect();
    }

    /// Makes the endpoint answer 503 (or recover).
    pub fn set_failing(&self, failing: bool) {
        *self.state.failing.lock().unwrap() = failing;
    }

    /// Makes the endpoint wait `delay` before answering each fetch.
    pub fn set_delay(&self, delay: Duration) {
        *self.state.delay.lock().unwrap() = delay;
    }

    pub fn fetches(&self) -> u64 {
        self.state.fetches.load(Ordering::SeqCst)
    }
}

async fn serve_jwks(
    State(state): State<Arc<KeyServerState>>,
) -> Result<axum::Json<JwkSet>, StatusCode> {
    state.fetches.fetch_add(1, Ordering::SeqCst);
    let delay = *state.delay.lock().unwrap();
    tokio::time::sleep(delay).await;
    if *state.failing.lock().unwrap() {
        return Err(StatusCode::SERVICE_UNAVAILABLE);
    }
    Ok(axum::Json(JwkSet {
        keys: state.keys.lock().unwrap().clone(),
    }))
}
