//! End-to-end tests: a spawned simulator on a real TCP port, driven by the
//! same HTTP client library the gateway uses, with requests signed by the
//! gateway's own signer. Each test gets its own simulator, so tests share
//! no state and may run in parallel.

mod actions;
mod auth;
mod control;
mod faults;
mod server;

use reqwest::{Client, RequestBuilder};
use serde_json::Value;
use tokio::net::TcpListener;

use super::{Credential, SimulatorConfig, SimulatorHandle, sample_disks, spawn};
use crate::zenlayer::signing::{ALGORITHM, SignedParts, authorization_header};

pub(super) const KEY_ID: &str = "AKIDsimulatorTestKey";
pub(super) const PASSWORD: &str = "simulator-test-password";
pub(super) const TOKEN: &str = "simulator-test-token";

pub(super) async fn start() -> SimulatorHandle {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = SimulatorConfig {
        credentials: vec![
            Credential::AccessKey {
                id: KEY_ID.into(),
                password: PASSWORD.into(),
            },
            Credential::Token(TOKEN.into()),
        ],
        disks: sample_disks(),
        ..Default::default()
    };
    spawn(config, listener).await.unwrap()
}

pub(super) fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A fresh client per request, so that no test's request rides on a
/// connection an earlier request (or fault) left behind.
pub(super) fn client() -> Client {
    Client::builder().build().unwrap()
}

/// An unsigned API request carrying `action` and `body`.
pub(super) fn unsigned(sim: &SimulatorHandle, action: &str, body: &str) -> RequestBuilder {
    client()
        .post(format!("{}/api/v2/vm", sim.base_url()))
        .header("content-type", "application/json")
        .header("x-zc-action", action)
        .header("x-zc-version", "2023-03-13")
        .body(body.to_owned())
}

/// What a ZC2 signature is made with; tests vary one field at a time.
#[derive(Debug, Clone, Copy)]
pub(super) struct Signer<'a> {
    pub key_id: &'a str,
    pub password: &'a str,
    pub timestamp: i64,
    pub host: Option<&'a str>,
}

impl Signer<'_> {
    pub fn valid() -> Signer<'static> {
        Signer {
            key_id: KEY_ID,
            password: PASSWORD,
            timestamp: now(),
            host: None,
        }
    }

    /// Adds ZC2 headers for a signature over `signed_body`, which is normally
    /// the body the request carries.
    pub fn sign(
        &self,
        sim: &SimulatorHandle,
        request: RequestBuilder,
        signed_body: &str,
    ) -> RequestBuilder {
        let host = self
            .host
            .map_or_else(|| sim.addr().to_string(), str::to_owned);
        let parts = SignedParts {
            content_type: "application/json",
            host: &host,
            body: signed_body.as_bytes(),
            timestamp: self.timestamp,
        };
        let signature = parts.sign(self.password.as_bytes());
        request
            .header("x-zc-timestamp", self.timestamp.to_string())
            .header("x-zc-signature-method", ALGORITHM)
            .header(
                "authorization",
                authorization_header(self.key_id, &signature),
            )
    }
}

/// A correctly signed request.
pub(super) fn signed(sim: &SimulatorHandle, action: &str, body: &str) -> RequestBuilder {
    Signer::valid().sign(sim, unsigned(sim, action, body), body)
}

/// An answer's status, headers and body (as JSON when it is JSON).
#[derive(Debug)]
pub(super) struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub text: String,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|_| panic!("not JSON: {:?}", self.text))
    }

    /// The Zenlayer error code; fails the test unless this is an error body.
    pub fn code(&self) -> String {
        let json = self.json();
        assert_request_id(&json["requestId"]);
        json["code"].as_str().expect("an error code").to_owned()
    }
}

pub(super) async fn send(request: RequestBuilder) -> Answer {
    send_built(request.build().unwrap()).await
}

pub(super) async fn send_built(request: reqwest::Request) -> Answer {
    let response = client().execute(request).await.expect("an HTTP answer");
    Answer {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        text: response.text().await.unwrap(),
    }
}

/// `request` with header `name` replaced by `value`, or removed if `None`.
/// (Adding a header to a builder appends a second value instead.)
pub(super) fn replacing(
    request: RequestBuilder,
    name: &'static str,
    value: Option<&str>,
) -> reqwest::Request {
    let mut request = request.build().unwrap();
    match value {
        Some(value) => request.headers_mut().insert(name, value.parse().unwrap()),
        None => request.headers_mut().remove(name),
    };
    request
}

/// A correctly signed call.
pub(super) async fn call(sim: &SimulatorHandle, action: &str, body: &str) -> Answer {
    send(signed(sim, action, body)).await
}

pub(super) fn assert_request_id(id: &Value) {
    let id = id.as_str().expect("requestId is a string");
    let uuid = id.strip_prefix('T').expect("requestId starts with T");
    assert!(uuid::Uuid::parse_str(uuid).is_ok(), "{id}");
    assert_eq!(id, id.to_uppercase());
}

/// Waits, without sleeping, until `condition` holds; for the few tests that
/// must act while a request is in flight on the server.
pub(super) async fn until(condition: impl Fn() -> bool) {
    let wait = async {
        while !condition() {
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), wait)
        .await
        .expect("condition reached");
}
