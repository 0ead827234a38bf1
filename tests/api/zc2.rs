//! ZC2-HMAC-SHA256 written once more, straight from Zenlayer's API reference
//! and for the tests alone, so that what the gateway sends is checked
//! against the documentation, not against the gateway's own signer (or the
//! simulator's verifier). Pinned to the reference's vector B below.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

fn hex_sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The `Authorization` header Zenlayer expects for these inputs.
pub fn authorization(
    access_key_id: &str,
    password: &str,
    timestamp: &str,
    content_type: &str,
    host: &str,
    body: &[u8],
) -> String {
    let canonical_request = format!(
        "POST\n/\n\ncontent-type:{}\nhost:{}\n\ncontent-type;host\n{}",
        content_type.trim().to_lowercase(),
        host.trim().to_lowercase(),
        hex_sha256(body)
    );
    let string_to_sign = format!(
        "ZC2-HMAC-SHA256\n{timestamp}\n{}",
        hex_sha256(canonical_request.as_bytes())
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(password.as_bytes()).unwrap();
    mac.update(string_to_sign.as_bytes());
    let signature = hex::encode(mac.finalize().into_bytes());
    format!(
        "ZC2-HMAC-SHA256 Credential={access_key_id}, SignedHeaders=content-type;host, Signature={signature}"
    )
}

#[test]
fn this_signer_reproduces_the_references_vector_b() {
    let header = authorization(
        "AKIDz8krbsJ5yKBZQpn74WFkmLPx3",
        "Gu5t9xGARNpq86cd98joQYCN3",
        "1700000000",
        "application/json",
        "console.zenlayer.com",
        br#"{"diskId":"your-disk-id"}"#,
    );
    assert_eq!(
        header,
        "ZC2-HMAC-SHA256 Credential=AKIDz8krbsJ5yKBZQpn74WFkmLPx3, SignedHeaders=content-type;host, Signature=8654b2cd4d5e5c02a73a24248af06dbd160daacf72fa285644aee8e86f0a63d0"
    );
}
