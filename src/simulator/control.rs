//! HTTP control endpoints under `/_simulator/`, for the `dev` command and for
//! staging, where no Rust code holds a `SimulatorHandle`. They offer the
//! handle's powers as JSON:
//!
//! - `GET /_simulator/stats`: request counts, pending faults, disk count
//! - `GET /_simulator/disks`: every disk, in `DescribeDisks` entry form
//! - `POST /_simulator/disks`: add or replace one disk (a `Disk` as JSON)
//! - `GET /_simulator/requests`: the request log
//! - `POST /_simulator/faults`: `{"fault": {"type": "rateLimited"}, "times": 2}`,
//!   with `"action": "DescribeDisks"` to fail only requests of that action
//! - `DELETE /_simulator/faults`: drop every pending fault
//!
//! They need no credentials (the simulator guards nothing real) and are
//! neither counted nor subject to faults, so they observe without disturbing.

use std::time::Duration;

use http::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::describe::disk_entry;
use super::disk::Disk;
use super::faults::Fault;
use super::reply::{self, Reply};
use super::state::Shared;
use super::sync::lock;
use super::traffic::ReceivedRequest;

pub(crate) const PREFIX: &str = "/_simulator/";

/// A fault as JSON. `Fault` itself holds a `Duration` and tuple variants,
/// which have no pleasant internally tagged form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
enum FaultSpec {
    Latency { millis: u64 },
    Status { http_status: u16, code: String },
    RateLimited,
    SecurityChallenge,
    Blocked,
    ProxyHtml,
    EmptyBody { http_status: u16 },
    DropConnection,
    Hang,
    ActThenDrop,
    ActThenFail,
}

#[derive(Debug, Deserialize)]
struct InjectRequest {
    fault: FaultSpec,
    #[serde(default = "one")]
    times: usize,
    /// Only requests naming this `X-ZC-Action`; every request when absent.
    #[serde(default)]
    action: Option<String>,
}

fn one() -> usize {
    1
}

pub(crate) fn handle(shared: &Shared, method: &Method, path: &str, body: &[u8]) -> Reply {
    let endpoint = path.strip_prefix(PREFIX).unwrap_or_default();
    match (endpoint, method.as_str()) {
        ("stats", "GET") => stats(shared),
        ("disks", "GET") => list_disks(shared),
        ("disks", "POST") => put_disk(shared, body),
        ("requests", "GET") => requests(shared),
        ("faults", "POST") => inject(shared, body),
        ("faults", "DELETE") => {
            lock(&shared.faults).clear();
            reply::json_reply(StatusCode::OK, &json!({ "pendingFaults": [] }))
        }
        ("stats" | "disks" | "requests" | "faults", _) => {
            failure(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here")
        }
        _ => failure(StatusCode::NOT_FOUND, "no such control endpoint"),
    }
}

fn stats(shared: &Shared) -> Reply {
    let body = json!({
        "requestsReceived": shared.traffic.total(),
        "requestsByAction": shared.traffic.by_action(),
        "releaseDiskRequests": shared.traffic.for_action("ReleaseDisk"),
        "pendingFaults": pending_faults(shared),
        "disks": lock(&shared.inventory).len(),
    });
    reply::json_reply(StatusCode::OK, &body)
}

fn pending_faults(shared: &Shared) -> Value {
    let faults = lock(&shared.faults);
    let pending = faults.iter().map(
        |p| json!({ "fault": FaultSpec::from(&p.fault), "times": p.remaining, "action": p.action }),
    );
    Value::Array(pending.collect())
}

fn list_disks(shared: &Shared) -> Reply {
    let inventory = lock(&shared.inventory);
    let entries: Vec<Value> = inventory.iter().map(disk_entry).collect();
    let body = json!({ "totalCount": entries.len(), "dataSet": entries });
    reply::json_reply(StatusCode::OK, &body)
}

fn put_disk(shared: &Shared, body: &[u8]) -> Reply {
    let disk: Disk = match serde_json::from_slice(body) {
        Ok(disk) => disk,
        Err(error) => return failure(StatusCode::BAD_REQUEST, &format!("not a disk: {error}")),
    };
    let disk_id = disk.disk_id.clone();
    let mut inventory = lock(&shared.inventory);
    inventory.put(disk);
    let stored = inventory
        .iter()
        .find(|stored| stored.disk.disk_id == disk_id);
    let entry = stored.map(disk_entry).unwrap_or(Value::Null);
    reply::json_reply(StatusCode::OK, &json!({ "disk": entry }))
}

fn requests(shared: &Shared) -> Reply {
    let log: Vec<Value> = shared.traffic.log().iter().map(request_entry).collect();
    reply::json_reply(StatusCode::OK, &json!({ "requests": log }))
}

/// Header values that are not text, and bodies that are not UTF-8, are shown
/// lossily: this view is for people, the handle's `received()` is exact.
fn request_entry(request: &ReceivedRequest) -> Value {
    let headers: Vec<Value> = request
        .headers
        .iter()
        .map(|(name, value)| json!([name.as_str(), String::from_utf8_lossy(value.as_bytes())]))
        .collect();
    json!({
        "method": request.method.as_str(),
        "path": request.path,
        "action": request.action,
        "headers": headers,
        "body": String::from_utf8_lossy(&request.body),
    })
}

fn inject(shared: &Shared, body: &[u8]) -> Reply {
    let request: InjectRequest = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(error) => return failure(StatusCode::BAD_REQUEST, &format!("not a fault: {error}")),
    };
    if let FaultSpec::Status { http_status, .. } | FaultSpec::EmptyBody { http_status } =
        request.fault
        && !(200..600).contains(&http_status)
    {
        return failure(
            StatusCode::BAD_REQUEST,
            "httpStatus must be within 200..=599",
        );
    }
    lock(&shared.faults).push_for(
        request.action.as_deref(),
        request.fault.into(),
        request.times,
    );
    reply::json_reply(
        StatusCode::OK,
        &json!({ "pendingFaults": pending_faults(shared) }),
    )
}

fn failure(status: StatusCode, message: &str) -> Reply {
    reply::json_reply(status, &json!({ "error": message }))
}

impl From<FaultSpec> for Fault {
    fn from(spec: FaultSpec) -> Fault {
        match spec {
            FaultSpec::Latency { millis } => Fault::Latency(Duration::from_millis(millis)),
            FaultSpec::Status { http_status, code } => Fault::Status { http_status, code },
            FaultSpec::RateLimited => Fault::RateLimited,
            FaultSpec::SecurityChallenge => Fault::SecurityChallenge,
            FaultSpec::Blocked => Fault::Blocked,
            FaultSpec::ProxyHtml => Fault::ProxyHtml,
            FaultSpec::EmptyBody { http_status } => Fault::EmptyBody(http_status),
            FaultSpec::DropConnection => Fault::DropConnection,
            FaultSpec::Hang => Fault::Hang,
            FaultSpec::ActThenDrop => Fault::ActThenDrop,
            FaultSpec::ActThenFail => Fault::ActThenFail,
        }
    }
}

impl From<&Fault> for FaultSpec {
    fn from(fault: &Fault) -> FaultSpec {
        match fault.clone() {
            Fault::Latency(delay) => FaultSpec::Latency {
                millis: u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            },
            Fault::Status { http_status, code } => FaultSpec::Status { http_status, code },
            Fault::RateLimited => FaultSpec::RateLimited,
            Fault::SecurityChallenge => FaultSpec::SecurityChallenge,
            Fault::Blocked => FaultSpec::Blocked,
            Fault::ProxyHtml => FaultSpec::ProxyHtml,
            Fault::EmptyBody(http_status) => FaultSpec::EmptyBody { http_status },
            Fault::DropConnection => FaultSpec::DropConnection,
            Fault::Hang => FaultSpec::Hang,
            Fault::ActThenDrop => FaultSpec::ActThenDrop,
            Fault::ActThenFail => FaultSpec::ActThenFail,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_json_names_are_camel_case_and_tagged_by_type() {
        let request: InjectRequest = serde_json::from_str(
            r#"{"fault": {"type": "status", "httpStatus": 503, "code": "SERVICE_TEMPORARY_UNAVAILABLE"}}"#,
        )
        .unwrap();
        assert_eq!(request.times, 1);
        assert_eq!(
            Fault::from(request.fault),
            Fault::Status {
                http_status: 503,
                code: "SERVICE_TEMPORARY_UNAVAILABLE".into()
            }
        );
        let latency =
            serde_json::to_value(FaultSpec::from(&Fault::Latency(Duration::from_millis(250))));
        assert_eq!(
            latency.unwrap(),
            json!({ "type": "latency", "millis": 250 })
        );
        let drop = serde_json::from_value::<FaultSpec>(json!({ "type": "dropConnection" }));
        assert_eq!(Fault::from(drop.unwrap()), Fault::DropConnection);
    }
}
