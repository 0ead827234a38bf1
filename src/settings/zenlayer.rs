//! Reading the upstream client's settings (`ZENLAYER_*`).

use super::reader::Reader;
use super::url::upstream_url;
use crate::zenlayer::{Credential, ZenlayerSettings};
use secrecy::{ExposeSecret, SecretString};

pub(super) fn read(r: &mut Reader) -> ZenlayerSettings {
    let raw = r.raw("ZENLAYER_BASE_URL");
    let base_url = upstream_url(
        r,
        "ZENLAYER_BASE_URL",
        raw.as_deref().unwrap_or("https://console.zenlayer.com"),
    );
    ZenlayerSettings {
        base_url,
        credential: read_credential(r),
        api_version: read_api_version(r),
        timeout: r.millis("ZENLAYER_TIMEOUT_MS", 10_000, (100, 600_000)),
        rate_limit_retries: r.or("ZENLAYER_RATE_LIMIT_RETRIES", "a whole number", 3),
        retry_backoff: r.millis("ZENLAYER_RETRY_BACKOFF_MS", 1_000, (1, 60_000)),
        preflight: r.or("ZENLAYER_PREFLIGHT", "true or false", true),
    }
}

fn read_api_version(r: &mut Reader) -> String {
    let version = r
        .raw("ZENLAYER_API_VERSION")
        .unwrap_or_else(|| "2023-03-13".to_owned());
    r.header_safe("ZENLAYER_API_VERSION", &version);
    version
}

fn read_credential(r: &mut Reader) -> Credential {
    let id = r.raw("ZENLAYER_ACCESS_KEY_ID");
    let password = r.secret("ZENLAYER_ACCESS_KEY_PASSWORD");
    let token = r.secret("ZENLAYER_ACCESS_TOKEN");
    if let Some(id) = &id {
        r.header_safe("ZENLAYER_ACCESS_KEY_ID", id);
    }
    if let Some(token) = &token {
        r.header_safe("ZENLAYER_ACCESS_TOKEN", token.expose_secret());
    }
    match (id, password, token) {
        (Some(id), Some(password), None) => Credential::AccessKey { id, password },
        (None, None, Some(token)) => Credential::Token(token),
        (Some(_), None, None) => missing(
            r,
            "ZENLAYER_ACCESS_KEY_PASSWORD is required with ZENLAYER_ACCESS_KEY_ID",
        ),
        (None, Some(_), None) => missing(
            r,
            "ZENLAYER_ACCESS_KEY_ID is required with ZENLAYER_ACCESS_KEY_PASSWORD",
        ),
        (None, None, None) => missing(
            r,
            "a Zenlayer credential is required: set ZENLAYER_ACCESS_KEY_ID and ZENLAYER_ACCESS_KEY_PASSWORD, or ZENLAYER_ACCESS_TOKEN",
        ),
        _ => missing(
            r,
            "set either ZENLAYER_ACCESS_KEY_ID/ZENLAYER_ACCESS_KEY_PASSWORD or ZENLAYER_ACCESS_TOKEN, not both",
        ),
    }
}

fn missing(r: &mut Reader, problem: &str) -> Credential {
    r.problem(problem);
    Credential::Token(SecretString::from(""))
}
