//! The simulator's own check of a ZC2-HMAC-SHA256 signature, as Zenlayer's
//! API reference describes it: parse `Authorization`, rebuild the canonical
//! request from the headers and body that actually arrived, and compare the
//! HMAC in constant time. It deliberately shares no code with the gateway's
//! signer (`zenlayer::signing`): a test that the simulator accepts what the
//! gateway sends is then a test of the gateway against the documentation.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

pub(crate) const ALGORITHM: &str = "ZC2-HMAC-SHA256";
pub(crate) const SIGNED_HEADERS: &str = "content-type;host";

/// The parts of a ZC2 `Authorization` header.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ParsedAuthorization<'a> {
    pub credential: &'a str,
    pub signed_headers: &'a str,
    pub signature: &'a str,
}

/// Parses `ZC2-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…`.
/// Returns `None` for anything else, which Zenlayer answers with
/// `AUTHFAILURE_INVALID_AUTHORIZATION`.
pub(crate) fn parse_authorization(header: &str) -> Option<ParsedAuthorization<'_>> {
    let rest = header.strip_prefix(ALGORITHM)?.strip_prefix(' ')?;
    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let (name, value) = part.trim().split_once('=')?;
        let slot = match name {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed_headers,
            "Signature" => &mut signature,
            _ => return None,
        };
        *slot = Some(value);
    }
    Some(ParsedAuthorization {
        credential: credential.filter(|c| !c.is_empty())?,
        signed_headers: signed_headers?,
        signature: signature?,
    })
}

/// What arrived and is covered by the signature.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Arrived<'a> {
    pub content_type: &'a str,
    pub host: &'a str,
    pub body: &'a [u8],
    pub timestamp: &'a str,
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The documented canonical request: method, URI `/`, empty query, the two
/// signed headers (values trimmed and lower-cased, each line ending in a
/// newline), an empty line, the signed header names, the body's hash.
fn canonical_request(arrived: &Arrived<'_>) -> String {
    let mut canonical = String::from("POST\n/\n\n");
    for (name, value) in [
        ("content-type", arrived.content_type),
        ("host", arrived.host),
    ] {
        canonical.push_str(name);
        canonical.push(':');
        canonical.push_str(&value.trim().to_lowercase());
        canonical.push('\n');
    }
    canonical.push('\n');
    canonical.push_str(SIGNED_HEADERS);
    canonical.push('\n');
    canonical.push_str(&sha256_hex(arrived.body));
    canonical
}

fn expected_mac(arrived: &Arrived<'_>, password: &[u8]) -> Hmac<Sha256> {
    let string_to_sign = [
        ALGORITHM,
        arrived.timestamp,
        &sha256_hex(canonical_request(arrived).as_bytes()),
    ]
    .join("\n");
    let mut mac = Hmac::<Sha256>::new_from_slice(password).expect("HMAC takes any key length");
    mac.update(string_to_sign.as_bytes());
    mac
}

/// Whether `signature_hex` is the signature of `arrived` under `password`,
/// spelled as Zenlayer documents it: lower-case hex. Accepting upper case
/// would let a client that sends it pass here and fail at Zenlayer.
pub(crate) fn verifies(arrived: &Arrived<'_>, password: &[u8], signature_hex: &str) -> bool {
    let lower_hex = signature_hex
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    lower_hex
        && hex::decode(signature_hex).is_ok_and(|signature| {
            expected_mac(arrived, password)
                .verify_slice(&signature)
                .is_ok()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: &str = "console.zenlayer.com";
    const RELEASE_SECRET: &str = "Gu5t9xGARNpq86cd98joQYCN3";

    /// Vectors A–D from Zenlayer's API reference (A is Zenlayer's own
    /// example): secret, timestamp, content type, body, canonical request
    /// hash, signature.
    const VECTORS: [(&str, &str, &str, &str, &str, &str); 4] = [
        (
            "Gu5t9xGARNpq86cd98joQYCN3",
            "1673361177",
            "application/json; charset=utf-8",
            r#"{"pageSize":10,"pageNum":1,"zoneId":"HKG-A"}"#,
            "29396f9dfa0f03820b931e8aa06e20cda197e73285ebd76aceb83f7dede493ee",
            "efb356c32e55c781e10dc676da59462c22596d82e91c57803666243379555b2f",
        ),
        (
            RELEASE_SECRET,
            "1700000000",
            "application/json",
            r#"{"diskId":"your-disk-id"}"#,
            "509ce333d48502fa0f71dba32f433c1e4a13339679457001b86ef77a05f9bc59",
            "8654b2cd4d5e5c02a73a24248af06dbd160daacf72fa285644aee8e86f0a63d0",
        ),
        (
            RELEASE_SECRET,
            "1700000000",
            "application/json",
            r#"{"diskId": "your-disk-id"}"#,
            "0ef012d016ba1239af6d2ea6ab0925003f3b275b5a29bd5080f55a6c82fd6de5",
            "3ecf4b2719e5703f05a069943dd2cc5292f524fcff98e9aaf60ae429149591f3",
        ),
        (
            RELEASE_SECRET,
            "1700000000",
            "application/json; charset=utf-8",
            r#"{"diskId":"your-disk-id"}"#,
            "266369d45919f8df0be96495aa73c21536d9c9cb1ea127338434bde86f8947e1",
            "306d06d6189aab24ebe5c4d330496a1152a438c43e3460c19d935f2cb39e6383",
        ),
    ];

    fn arrived<'a>(timestamp: &'a str, content_type: &'a str, body: &'a str) -> Arrived<'a> {
        Arrived {
            content_type,
            host: HOST,
            body: body.as_bytes(),
            timestamp,
        }
    }

    #[test]
    fn every_published_vector_verifies() {
        for (secret, timestamp, content_type, body, canonical_hash, signature) in VECTORS {
            let arrived = arrived(timestamp, content_type, body);
            assert_eq!(
                sha256_hex(canonical_request(&arrived).as_bytes()),
                canonical_hash
            );
            assert!(verifies(&arrived, secret.as_bytes(), signature), "{body}");
        }
    }

    #[test]
    fn a_wrong_key_a_changed_body_or_header_and_garbage_do_not_verify() {
        let (secret, timestamp, content_type, body, _, signature) = VECTORS[1];
        let good = arrived(timestamp, content_type, body);
        assert!(!verifies(&good, b"not-the-password", signature));
        let body_changed = arrived(timestamp, content_type, r#"{"diskId":"other"}"#);
        assert!(!verifies(&body_changed, secret.as_bytes(), signature));
        let later = arrived("1700000001", content_type, body);
        assert!(!verifies(&later, secret.as_bytes(), signature));
        let host_changed = Arrived {
            host: "console.zenlayer.com:8443",
            ..good
        };
        assert!(!verifies(&host_changed, secret.as_bytes(), signature));
        assert!(!verifies(&good, secret.as_bytes(), "zz-not-hex"));
    }

    #[test]
    fn header_values_are_compared_trimmed_and_lower_cased() {
        let (secret, timestamp, _, body, _, signature) = VECTORS[1];
        let shouted = arrived(timestamp, " Application/JSON ", body);
        assert!(verifies(&shouted, secret.as_bytes(), signature));
    }

    #[test]
    fn authorization_headers_are_parsed_or_refused() {
        let header = "ZC2-HMAC-SHA256 Credential=AKIDz8krbsJ5yKBZQpn74WFkmLPx3, SignedHeaders=content-type;host, Signature=abc123";
        assert_eq!(
            parse_authorization(header),
            Some(ParsedAuthorization {
                credential: "AKIDz8krbsJ5yKBZQpn74WFkmLPx3",
                signed_headers: SIGNED_HEADERS,
                signature: "abc123",
            })
        );
        assert_eq!(parse_authorization("Bearer abc"), None);
        assert_eq!(
            parse_authorization("ZC2-HMAC-SHA256 Credential=, Signature=x"),
            None
        );
    }
}
