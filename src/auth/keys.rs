//! The set of keys tokens may be signed with, from a JWKS document or PEM
//! files. A key is found by the token's `kid` only within this set: header
//! fields that point elsewhere (`jku`, `x5u`, `jwk`) are never followed.

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey};

/// One verification key and the algorithms it may verify.
#[derive(Clone)]
pub struct VerificationKey {
    pub kid: Option<String>,
    pub key: DecodingKey,
    /// Algorithms whose key type matches this key (and, when the JWK names
    /// an `alg`, only that one): an RSA key never verifies an HS256 token.
    pub algorithms: Vec<Algorithm>,
}

impl std::fmt::Debug for VerificationKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerificationKey")
            .field("kid", &self.kid)
            .field("algorithms", &self.algorithms)
            .finish()
    }
}

/// The keys the gateway trusts right now.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: Vec<VerificationKey>,
}

const RSA_ALGORITHMS: [Algorithm; 6] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];

impl KeySet {
    pub fn new(keys: Vec<VerificationKey>) -> Self {
        Self { keys }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Keys that may verify a token with this `kid` and `alg`. A token that
    /// names a `kid` gets only that key; one without gets every key of the
    /// right type (key sets from PEM files have no ids).
    pub fn candidates<'a>(
        &'a self,
        kid: Option<&'a str>,
        alg: Algorithm,
    ) -> impl Iterator<Item = &'a VerificationKey> {
        self.keys.iter().filter(move |k| {
            let id_matches = match (kid, k.kid.as_deref()) {
                (Some(wanted), Some(have)) => wanted == have,
                (Some(_), None) | (None, _) => true,
            };
            id_matches && k.algorithms.contains(&alg)
        })
    }

    /// Whether a key with this id is published at all.
    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
            || self.keys.iter().all(|k| k.kid.is_none())
    }

    /// Parses a JWKS document. Keys the gateway cannot use (encryption keys,
    /// unknown types, symmetric keys) are skipped, not fatal: an IdP may
    /// publish more than signing keys.
    pub fn from_jwks(json: &[u8]) -> Result<Self, String> {
        let set: JwkSet =
            serde_json::from_slice(json).map_err(|e| format!("not a JWKS document: {e}"))?;
        let keys = set
            .keys
            .iter()
            .filter(|jwk| {
                !matches!(
                    jwk.common.public_key_use,
                    Some(jsonwebtoken::jwk::PublicKeyUse::Encryption)
                )
            })
            .filter_map(|jwk| {
                let algorithms = jwk_algorithms(&jwk.algorithm, jwk.common.key_algorithm)?;
                let key = DecodingKey::from_jwk(jwk).ok()?;
                Some(VerificationKey {
                    kid: jwk.common.key_id.clone(),
                    key,
                    algorithms,
                })
            })
            .collect::<Vec<_>>();
        if keys.is_empty() {
            return Err("the JWKS document holds no usable signing key".to_owned());
        }
        Ok(Self { keys })
    }

    /// Parses one or more PEM public keys (RSA, EC P-256/P-384, Ed25519).
    pub fn from_pem(pem: &[u8]) -> Result<Self, String> {
        let blocks = pem::parse_many(pem).map_err(|e| format!("not a PEM file: {e}"))?;
        let keys = blocks
            .iter()
            .enumerate()
            .map(|(index, block)| {
                pem_key(pem::encode(block).as_bytes())
                    .map_err(|e| format!("PEM key #{}: {e}", index + 1))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if keys.is_empty() {
            return Err("no PEM public key found".to_owned());
        }
        Ok(Self { keys })
    }

    /// A shared HS256 secret (only ever on its own, see settings).
    pub fn from_hs256_secret(secret: &[u8]) -> Self {
        Self {
            keys: vec![VerificationKey {
                kid: None,
                key: DecodingKey::from_secret(secret),
                algorithms: vec![Algorithm::HS256],
            }],
        }
    }
}

/// A PEM parser for one key type, and the algorithms that type verifies.
type PemParser = (
    fn(&[u8]) -> jsonwebtoken::errors::Result<DecodingKey>,
    &'static [Algorithm],
);

fn pem_key(block: &[u8]) -> Result<VerificationKey, String> {
    let attempts: [PemParser; 3] = [
        (DecodingKey::from_rsa_pem, &RSA_ALGORITHMS),
        (
            DecodingKey::from_ec_pem,
            &[Algorithm::ES256, Algorithm::ES384],
        ),
        (DecodingKey::from_ed_pem, &[Algorithm::EdDSA]),
    ];
    attempts
        .iter()
        .find_map(|(parse, algorithms)| {
            parse(block).ok().map(|key| VerificationKey {
                kid: None,
                key,
                algorithms: algorithms.to_vec(),
            })
        })
        .ok_or_else(|| "not an RSA, EC or Ed25519 public key".to_owned())
}

fn jwk_algorithms(
    params: &AlgorithmParameters,
    declared: Option<KeyAlgorithm>,
) -> Option<Vec<Algorithm>> {
    let by_type: Vec<Algorithm> = match params {
        AlgorithmParameters::RSA(_) => RSA_ALGORITHMS.to_vec(),
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 => vec![Algorithm::ES384],
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(_) => vec![Algorithm::EdDSA],
        // Symmetric keys in a published key set would let anyone who can
        // read the set sign tokens.
        _ => return None,
    };
    match declared {
        None => Some(by_type),
        Some(declared) => {
            let declared: Algorithm = declared.to_string().parse().ok()?;
            by_type.contains(&declared).then(|| vec![declared])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RSA_PUBLIC: &[u8] = include_bytes!("../../tests/fixtures/jwt/rsa-public.pem");
    const EC_PUBLIC: &[u8] = include_bytes!("../../tests/fixtures/jwt/ec-public.pem");
    const ED_PUBLIC: &[u8] = include_bytes!("../../tests/fixtures/jwt/ed-public.pem");

    #[test]
    fn a_pem_file_may_hold_several_keys_of_different_types() {
        let bundle = [RSA_PUBLIC, EC_PUBLIC, ED_PUBLIC].concat();
        let set = KeySet::from_pem(&bundle).unwrap();
        assert_eq!(set.len(), 3);
        assert_eq!(set.candidates(None, Algorithm::RS256).count(), 1);
        assert_eq!(set.candidates(None, Algorithm::ES256).count(), 1);
        assert_eq!(set.candidates(None, Algorithm::EdDSA).count(), 1);
        assert_eq!(set.candidates(None, Algorithm::HS256).count(), 0);
    }

    #[test]
    fn symmetric_and_encryption_keys_in_a_jwks_are_ignored() {
        let jwks = br#"{"keys":[
            {"kty":"oct","kid":"shared","k":"c2VjcmV0"},
            {"kty":"RSA","kid":"enc","use":"enc","n":"sXch","e":"AQAB"}
        ]}"#;
        assert!(KeySet::from_jwks(jwks).is_err());
    }

    #[test]
    fn a_jwk_that_declares_its_alg_verifies_only_that_alg() {
        let jwks = br#"{"keys":[{"kty":"RSA","kid":"k1","alg":"RS256","n":"sXch","e":"AQAB"}]}"#;
        let set = KeySet::from_jwks(jwks).unwrap();
        assert_eq!(set.candidates(Some("k1"), Algorithm::RS256).count(), 1);
        assert_eq!(set.candidates(Some("k1"), Algorithm::PS256).count(), 0);
        assert_eq!(set.candidates(Some("k2"), Algorithm::RS256).count(), 0);
        assert!(!set.has_kid("k2"));
    }

    #[test]
    fn a_shared_secret_verifies_tokens_signed_with_it_and_no_others() {
        use jsonwebtoken::{EncodingKey, Header, Validation};
        let set = KeySet::from_hs256_secret(b"the shared secret");
        assert_eq!((set.len(), set.is_empty()), (1, false));
        assert!(KeySet::default().is_empty());
        let claims = serde_json::json!({"sub": "alice", "exp": 4_000_000_000u64});
        let sign = |secret: &[u8]| {
            jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &claims,
                &EncodingKey::from_secret(secret),
            )
            .unwrap()
        };
        let mut validation = Validation::new(Algorithm::HS256);
        validation.required_spec_claims.clear();
        let verifies = |token: &str| {
            set.candidates(None, Algorithm::HS256).any(|k| {
                jsonwebtoken::decode::<serde_json::Value>(token, &k.key, &validation).is_ok()
            })
        };
        assert!(verifies(&sign(b"the shared secret")));
        assert!(!verifies(&sign(b"another secret")));
        assert_eq!(set.candidates(None, Algorithm::RS256).count(), 0);
    }

    #[test]
    fn debug_shows_a_keys_id_and_algorithms_but_not_the_key() {
        let set = KeySet::from_hs256_secret(b"the shared secret");
        let jwks = br#"{"keys":[{"kty":"RSA","kid":"k1","alg":"RS256","n":"sXch","e":"AQAB"}]}"#;
        let rsa = KeySet::from_jwks(jwks).unwrap();
        let shown = format!("{set:?} {rsa:?}");
        for expected in ["kid: Some(\"k1\")", "RS256", "HS256"] {
            assert!(shown.contains(expected), "{shown}");
        }
        assert!(!shown.contains("the shared secret"), "{shown}");
        assert!(!shown.contains("sXch"), "{shown}");
    }

    #[test]
    fn an_elliptic_curve_key_verifies_only_its_curves_algorithm() {
        let jwks = br#"{"keys":[
            {"kty":"EC","kid":"p384","crv":"P-384",
             "x":"AHDH7cIJCZgwl6eTAabp8sMIRlMAEjZ3MXR8W1Uiyim1UjBf3DE3EgsGuWev-Mg8",
             "y":"YVLBFHT-ma0uPzX3ThNUBHkDIrVKWqLHv8FGFK4V9FU80c7J34DHiJfwvet-EVFd"}
        ]}"#;
        let set = KeySet::from_jwks(jwks).unwrap();
        assert_eq!(set.candidates(Some("p384"), Algorithm::ES384).count(), 1);
        assert_eq!(set.candidates(Some("p384"), Algorithm::ES256).count(), 0);
    }
}
