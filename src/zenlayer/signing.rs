//! ZC2-HMAC-SHA256, Zenlayer Cloud API 2.0's request signature.
//!
//! The gateway signs with this module. The simulator verifies with a
//! checker of its own (`simulator::signature`), written from Zenlayer's
//! documentation rather than from this code, so that a canonicalisation bug
//! here cannot hide behind the same bug there. The published test vectors
//! pin both to Zenlayer's own algorithm.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// The algorithm name, sent in `X-ZC-Signature-Method` and in `Authorization`.
pub const ALGORITHM: &str = "ZC2-HMAC-SHA256";

/// Zenlayer signs exactly these headers, in this order.
pub const SIGNED_HEADERS: &str = "content-type;host";

/// What a signature covers. The timestamp is Unix seconds, as sent in
/// `X-ZC-Timestamp`; the body is the exact bytes that go on the wire.
#[derive(Debug, Clone, Copy)]
pub struct SignedParts<'a> {
    pub content_type: &'a str,
    pub host: &'a str,
    pub body: &'a [u8],
    pub timestamp: i64,
}

impl SignedParts<'_> {
    /// SHA-256 of the canonical request, lower-case hex.
    pub fn canonical_request_hash(&self) -> String {
        // Header values are normalised (trimmed, lower-cased) before signing;
        // the canonical URI is always "/" and the query string always empty.
        let canonical_request = format!(
            "POST\n/\n\ncontent-type:{}\nhost:{}\n\n{SIGNED_HEADERS}\n{}",
            self.content_type.trim().to_ascii_lowercase(),
            self.host.trim().to_ascii_lowercase(),
            lower_hex(&Sha256::digest(self.body)),
        );
        lower_hex(&Sha256::digest(canonical_request.as_bytes()))
    }

    fn string_to_sign(&self) -> String {
        format!(
            "{ALGORITHM}\n{}\n{}",
            self.timestamp,
            self.canonical_request_hash()
        )
    }

    /// The lower-case hex signature for `secret` (the AccessKeyPassword).
    pub fn sign(&self, secret: &[u8]) -> String {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts keys of any length");
        mac.update(self.string_to_sign().as_bytes());
        lower_hex(&mac.finalize().into_bytes())
    }
}

/// A 32-byte digest as 64 lower-case hex digits, written in one go
/// (`hex::encode` builds its string a character at a time: three digests
/// per signed request).
fn lower_hex(digest: &[u8]) -> String {
    let mut digits = [0u8; 64];
    hex::encode_to_slice(digest, &mut digits).expect("a 32-byte digest");
    String::from_utf8(digits.to_vec()).expect("hex digits are ASCII")
}

/// The `Authorization` header value for a signature made with `access_key_id`.
pub fn authorization_header(access_key_id: &str, signature: &str) -> String {
    format!(
        "{ALGORITHM} Credential={access_key_id}, SignedHeaders={SIGNED_HEADERS}, Signature={signature}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Vector {
        secret: &'static str,
        timestamp: i64,
        content_type: &'static str,
        body: &'static str,
        canonical_hash: &'static str,
        signature: &'static str,
    }

    const RELEASE_SECRET: &str = "Gu5t9xGARNpq86cd98joQYCN3";

    /// Vectors A–D from Zenlayer's API reference; A is Zenlayer's own example.
    const VECTORS: [Vector; 4] = [
        Vector {
            secret: "Gu5t9xGARNpq86cd98joQYCN3",
            timestamp: 1_673_361_177,
            content_type: "application/json; charset=utf-8",
            body: r#"{"pageSize":10,"pageNum":1,"zoneId":"HKG-A"}"#,
            canonical_hash: "29396f9dfa0f03820b931e8aa06e20cda197e73285ebd76aceb83f7dede493ee",
            signature: "efb356c32e55c781e10dc676da59462c22596d82e91c57803666243379555b2f",
        },
        Vector {
            secret: RELEASE_SECRET,
            timestamp: 1_700_000_000,
            content_type: "application/json",
            body: r#"{"diskId":"your-disk-id"}"#,
            canonical_hash: "509ce333d48502fa0f71dba32f433c1e4a13339679457001b86ef77a05f9bc59",
            signature: "8654b2cd4d5e5c02a73a24248af06dbd160daacf72fa285644aee8e86f0a63d0",
        },
        Vector {
            secret: RELEASE_SECRET,
            timestamp: 1_700_000_000,
            content_type: "application/json",
            body: r#"{"diskId": "your-disk-id"}"#,
            canonical_hash: "0ef012d016ba1239af6d2ea6ab0925003f3b275b5a29bd5080f55a6c82fd6de5",
            signature: "3ecf4b2719e5703f05a069943dd2cc5292f524fcff98e9aaf60ae429149591f3",
        },
        Vector {
            secret: RELEASE_SECRET,
            timestamp: 1_700_000_000,
            content_type: "application/json; charset=utf-8",
            body: r#"{"diskId":"your-disk-id"}"#,
            canonical_hash: "266369d45919f8df0be96495aa73c21536d9c9cb1ea127338434bde86f8947e1",
            signature: "306d06d6189aab24ebe5c4d330496a1152a438c43e3460c19d935f2cb39e6383",
        },
    ];

    fn parts(v: &Vector) -> SignedParts<'_> {
        SignedParts {
            content_type: v.content_type,
            host: "console.zenlayer.com",
            body: v.body.as_bytes(),
            timestamp: v.timestamp,
        }
    }

    #[test]
    fn signer_reproduces_every_published_vector() {
        for (name, v) in ["A", "B", "C", "D"].iter().zip(&VECTORS) {
            let parts = parts(v);
            assert_eq!(
                parts.canonical_request_hash(),
                v.canonical_hash,
                "vector {name}"
            );
            assert_eq!(
                parts.sign(v.secret.as_bytes()),
                v.signature,
                "vector {name}"
            );
        }
    }

    #[test]
    fn header_values_are_signed_trimmed_and_lower_cased() {
        // Zenlayer lower-cases and trims the signed header values, so vector
        // D's signature holds however the same values are spelled.
        let d = &VECTORS[3];
        let spelled = SignedParts {
            content_type: " Application/JSON; charset=UTF-8 ",
            host: "Console.Zenlayer.com ",
            ..parts(d)
        };
        assert_eq!(spelled.canonical_request_hash(), d.canonical_hash);
        assert_eq!(spelled.sign(d.secret.as_bytes()), d.signature);
    }

    #[test]
    fn authorization_header_names_the_key_the_headers_and_the_signature() {
        let header = authorization_header("AKIDz8krbsJ5yKBZQpn74WFkmLPx3", "abc123");
        assert_eq!(
            header,
            "ZC2-HMAC-SHA256 Credential=AKIDz8krbsJ5yKBZQpn74WFkmLPx3, SignedHeaders=content-type;host, Signature=abc123"
        );
    }
}
