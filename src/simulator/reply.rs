//! The shapes of everything the simulator sends back: Zenlayer's JSON success
//! and error bodies, each with a fresh `requestId`, and the non-API bodies
//! (HTML, plain text, nothing) that a proxy or security layer in front of
//! Zenlayer produces. Keeping them in one place keeps every answer consistent.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use serde_json::{Value, json};
use uuid::Uuid;

/// What the simulator's HTTP service answers with.
pub(crate) type Reply = Response<Full<Bytes>>;

/// The `requestId` an answer carries, kept beside it (never sent) so the
/// request log can say which id each request was answered with.
#[derive(Debug, Clone)]
pub(crate) struct AnsweredRequestId(pub String);

/// A Zenlayer API error: an HTTP status and an UPPER_SNAKE_CASE code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code: code.to_owned(),
            message: message.into(),
        }
    }

    pub fn bad_request(code: &str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unauthorized(code: &str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, code, message)
    }
}

/// `T` followed by an upper-case UUID v4, the form Zenlayer's ids take.
pub(crate) fn request_id() -> String {
    let mut buffer = Uuid::encode_buffer();
    let uuid = Uuid::new_v4().hyphenated().encode_upper(&mut buffer);
    format!("T{uuid}")
}

/// 200 with `response` holding `fields` plus the request id; Zenlayer repeats
/// the id inside `response`, and clients read it from either place.
pub(crate) fn success(mut fields: serde_json::Map<String, Value>) -> Reply {
    let id = request_id();
    fields.insert("requestId".to_owned(), Value::String(id.clone()));
    let mut reply = json_reply(
        StatusCode::OK,
        &json!({ "requestId": id, "response": fields }),
    );
    reply.extensions_mut().insert(AnsweredRequestId(id));
    reply
}

pub(crate) fn error(error: &ApiError) -> Reply {
    let id = request_id();
    let body = json!({
        "requestId": id,
        "code": error.code,
        "message": error.message,
    });
    let mut reply = json_reply(error.status, &body);
    reply.extensions_mut().insert(AnsweredRequestId(id));
    reply
}

pub(crate) fn json_reply(status: StatusCode, body: &Value) -> Reply {
    let bytes = serde_json::to_vec(body).expect("a JSON value always serializes");
    with_body(status, "application/json", bytes)
}

pub(crate) fn with_body(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Reply {
    let mut reply = Response::new(Full::new(body.into()));
    *reply.status_mut() = status;
    reply
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    reply
}

pub(crate) fn empty(status: StatusCode) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::new()));
    *reply.status_mut() = status;
    reply
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_look_like_zenlayers() {
        let id = request_id();
        assert_eq!(id.len(), 37);
        assert!(id.starts_with('T'));
        let uuid = Uuid::parse_str(&id[1..]).unwrap();
        assert_eq!(uuid.get_version_num(), 4);
        assert_eq!(id, id.to_uppercase());
    }
}
