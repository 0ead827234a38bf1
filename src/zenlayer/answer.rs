//! Reading Zenlayer's answers. Decisions rest on the HTTP status and the
//! `code` field only; `message` is for people and may change.

use super::UpstreamError;
use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use std::time::Duration;

/// How much of an answer is read: API answers are a few hundred bytes, and
/// a misbehaving proxy must not make the gateway buffer megabytes.
pub(super) const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Zenlayer accepted the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub request_id: String,
    /// The answer's `response` object (what a read asked for).
    pub response: serde_json::Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Success {
    request_id: Option<String>,
    #[serde(default)]
    response: serde_json::Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Failure {
    request_id: Option<String>,
    code: String,
    #[serde(default)]
    message: String,
}

/// Turns one HTTP answer into the release's result.
pub(super) fn interpret(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Accepted, UpstreamError> {
    if status == StatusCode::OK {
        return accepted(body);
    }
    let challenged = headers
        .get("cf-mitigated")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"challenge"));
    if status == StatusCode::FORBIDDEN && challenged {
        return Err(UpstreamError::SecurityChallenge);
    }
    if status.as_u16() == 451 {
        return Err(UpstreamError::RequestBlocked);
    }
    let http_status = status.as_u16();
    let failure = serde_json::from_slice::<Failure>(body)
        .ok()
        .filter(|f| !f.code.is_empty());
    match failure {
        Some(f) if f.code == "REQUEST_LIMIT_EXCEEDED" => {
            Err(rate_limited(http_status, f.request_id, headers))
        }
        None if status == StatusCode::TOO_MANY_REQUESTS => {
            Err(rate_limited(http_status, None, headers))
        }
        Some(f) => Err(UpstreamError::Api {
            http_status,
            code: f.code,
            message: f.message,
            request_id: f.request_id.filter(|id| !id.is_empty()),
        }),
        None => Err(UpstreamError::Unreadable {
            http_status,
            detail: describe_body(headers, body),
        }),
    }
}

fn accepted(body: &[u8]) -> Result<Accepted, UpstreamError> {
    let success = serde_json::from_slice::<Success>(body).ok();
    let accepted = success.and_then(|s| {
        let inner = s.response.get("requestId").and_then(|id| id.as_str());
        let request_id = s.request_id.or(inner.map(str::to_owned));
        let request_id = request_id.filter(|id| !id.is_empty())?;
        Some(Accepted {
            request_id,
            response: s.response,
        })
    });
    match accepted {
        Some(accepted) => Ok(accepted),
        None => Err(UpstreamError::Unreadable {
            http_status: 200,
            detail: "HTTP 200 without a requestId".to_owned(),
        }),
    }
}

fn rate_limited(
    http_status: u16,
    request_id: Option<String>,
    headers: &HeaderMap,
) -> UpstreamError {
    // Zenlayer documents no Retry-After, but honour one if an edge sends it.
    let retry_after = headers
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    UpstreamError::RateLimited {
        http_status,
        request_id,
        retry_after,
    }
}

/// A short description of a non-API body for logs: never the body itself,
/// which could be a large HTML page.
fn describe_body(headers: &HeaderMap, body: &[u8]) -> String {
    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("no content type");
    if body.is_empty() {
        format!("empty body ({content_type})")
    } else {
        format!(
            "{} byte body that is not Zenlayer API JSON ({content_type})",
            body.len()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("content-type", "application/json".parse().unwrap());
        h
    }

    #[test]
    fn success_yields_the_request_id_from_either_place() {
        let top = br#"{"requestId":"T1","response":{"requestId":"T1"}}"#;
        assert_eq!(
            interpret(StatusCode::OK, &json_headers(), top)
                .unwrap()
                .request_id,
            "T1"
        );
        let inner = br#"{"response":{"requestId":"T2"}}"#;
        assert_eq!(
            interpret(StatusCode::OK, &json_headers(), inner)
                .unwrap()
                .request_id,
            "T2"
        );
    }

    #[test]
    fn a_200_without_request_id_is_an_unknown_outcome() {
        let err = interpret(StatusCode::OK, &json_headers(), b"<html>").unwrap_err();
        assert_eq!(err.fate(), crate::zenlayer::Fate::MayHaveActed, "{err:?}");
    }

    #[test]
    fn api_errors_keep_code_status_and_request_id() {
        let body =
            br#"{"requestId":"T9","code":"INVALID_DISK_NOT_FOUND","message":"no such disk"}"#;
        match interpret(StatusCode::NOT_FOUND, &json_headers(), body).unwrap_err() {
            UpstreamError::Api {
                http_status,
                code,
                request_id,
                ..
            } => {
                assert_eq!(
                    (http_status, code.as_str(), request_id.as_deref()),
                    (404, "INVALID_DISK_NOT_FOUND", Some("T9"))
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rate_limits_are_recognised_by_code_or_status() {
        let body = br#"{"requestId":"T3","code":"REQUEST_LIMIT_EXCEEDED","message":""}"#;
        let err = interpret(StatusCode::TOO_MANY_REQUESTS, &json_headers(), body).unwrap_err();
        assert!(matches!(err, UpstreamError::RateLimited { .. }) && err.retryable());
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", "7".parse().unwrap());
        match interpret(StatusCode::TOO_MANY_REQUESTS, &headers, b"").unwrap_err() {
            UpstreamError::RateLimited { retry_after, .. } => {
                assert_eq!(retry_after, Some(Duration::from_secs(7)))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn edge_answers_are_told_apart_from_api_errors() {
        let mut challenge = HeaderMap::new();
        challenge.insert("cf-mitigated", "challenge".parse().unwrap());
        assert!(matches!(
            interpret(StatusCode::FORBIDDEN, &challenge, b"<html>").unwrap_err(),
            UpstreamError::SecurityChallenge
        ));
        let blocked = StatusCode::from_u16(451).unwrap();
        assert!(matches!(
            interpret(blocked, &HeaderMap::new(), b"").unwrap_err(),
            UpstreamError::RequestBlocked
        ));
        match interpret(
            StatusCode::BAD_GATEWAY,
            &HeaderMap::new(),
            b"<html>bad gateway</html>",
        )
        .unwrap_err()
        {
            UpstreamError::Unreadable {
                http_status: 502,
                detail,
            } => assert!(!detail.contains("bad gateway")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_403_with_an_api_error_and_no_challenge_is_zenlayers_refusal() {
        // The gateway's key lacks permission: on-call must see Zenlayer's
        // code (and be paged for it), not an edge challenge.
        let body =
            br#"{"requestId":"T4","code":"AUTHFAILURE_UNAUTHORIZED_OPERATION","message":"no"}"#;
        match interpret(StatusCode::FORBIDDEN, &json_headers(), body).unwrap_err() {
            UpstreamError::Api {
                http_status: 403,
                code,
                ..
            } => assert_eq!(code, "AUTHFAILURE_UNAUTHORIZED_OPERATION"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_unreadable_answer_is_described_by_its_size_and_content_type() {
        // What on-call reads in the log and the audit trail instead of the
        // body: enough to tell a proxy's HTML page from an empty answer.
        let mut html = HeaderMap::new();
        html.insert("content-type", "text/html".parse().unwrap());
        let page = b"<html>bad gateway</html>";
        match interpret(StatusCode::BAD_GATEWAY, &html, page).unwrap_err() {
            UpstreamError::Unreadable { detail, .. } => {
                assert!(detail.contains(&format!("{} byte", page.len())), "{detail}");
                assert!(detail.contains("text/html"), "{detail}");
                assert!(detail.contains("not Zenlayer API JSON"), "{detail}");
            }
            other => panic!("{other:?}"),
        }
        match interpret(StatusCode::SERVICE_UNAVAILABLE, &HeaderMap::new(), b"").unwrap_err() {
            UpstreamError::Unreadable { detail, .. } => {
                assert!(detail.contains("empty body"), "{detail}");
                assert!(detail.contains("no content type"), "{detail}");
            }
            other => panic!("{other:?}"),
        }
    }
}

/// Zenlayer's answers, and whatever a proxy in front of it sends: any status,
/// any headers, any bytes.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    /// Few cases in the usual run; `PROPTEST_CASES` asks for more. Failures
    /// are not persisted to files: each one found is committed as a test.
    fn config() -> ProptestConfig {
        ProptestConfig {
            cases: std::env::var("PROPTEST_CASES")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(64),
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    fn headers() -> impl Strategy<Value = HeaderMap> {
        let name = prop::sample::select(vec![
            "cf-mitigated",
            "retry-after",
            "content-type",
            "content-length",
        ]);
        prop::collection::vec((name, prop::collection::vec(any::<u8>(), 0..16)), 0..4).prop_map(
            |pairs| {
                let mut headers = HeaderMap::new();
                for (name, value) in pairs {
                    if let Ok(value) = http::HeaderValue::from_bytes(&value) {
                        headers.append(name, value);
                    }
                }
                headers
            },
        )
    }

    /// Bytes that are sometimes Zenlayer-shaped JSON, sometimes anything.
    fn bodies() -> impl Strategy<Value = Vec<u8>> {
        let json = (
            prop::option::of("[A-Za-z0-9_-]{0,12}"),
            prop::option::of("[A-Z_]{0,24}"),
        )
            .prop_map(|(id, code)| {
                serde_json::json!({ "requestId": id, "code": code, "response": { "requestId": id } })
                    .to_string()
                    .into_bytes()
            });
        prop_oneof![prop::collection::vec(any::<u8>(), 0..256), json]
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn any_answer_is_classified_without_panicking(
            status in 100u16..1000,
            headers in headers(),
            body in bodies(),
        ) {
            let status = StatusCode::from_u16(status).unwrap();
            match interpret(status, &headers, &body) {
                Ok(accepted) => {
                    prop_assert_eq!(status, StatusCode::OK);
                    prop_assert!(!accepted.request_id.is_empty());
                }
                Err(UpstreamError::SecurityChallenge) => {
                    prop_assert_eq!(status, StatusCode::FORBIDDEN);
                }
                Err(UpstreamError::RequestBlocked) => prop_assert_eq!(status.as_u16(), 451),
                Err(UpstreamError::Api { http_status, code, .. }) => {
                    prop_assert_eq!(http_status, status.as_u16());
                    prop_assert!(!code.is_empty() && code != "REQUEST_LIMIT_EXCEEDED");
                    prop_assert_ne!(status, StatusCode::OK);
                }
                Err(UpstreamError::RateLimited { http_status, .. }) => {
                    prop_assert_eq!(http_status, status.as_u16());
                    prop_assert_ne!(status, StatusCode::OK);
                }
                Err(UpstreamError::Unreadable { http_status, detail }) => {
                    prop_assert_eq!(http_status, status.as_u16());
                    // Never the body itself, which could be anything.
                    prop_assert!(detail.len() < 200, "{}", detail);
                }
                Err(other) => prop_assert!(false, "an answer cannot be {:?}", other),
            }
        }

        #[test]
        fn a_429_is_always_a_rate_limit(headers in headers(), body in bodies()) {
            let classified = interpret(StatusCode::TOO_MANY_REQUESTS, &headers, &body);
            let rate_limited = matches!(classified, Err(UpstreamError::RateLimited { .. }));
            let api = matches!(classified, Err(UpstreamError::Api { .. }));
            // An API answer with its own code is Zenlayer's word for it.
            prop_assert!(rate_limited || api, "{:?}", classified);
        }
    }
}
