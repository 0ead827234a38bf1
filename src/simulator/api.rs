//! Answering `POST /api/v2/vm` in Zenlayer's order: credentials first, then
//! the action named by `X-ZC-Action`, then the API version named by
//! `X-ZC-Version`, then the action's parameters, then the disk state. A
//! request that fails two checks gets the earlier one's code, as it would
//! from Zenlayer.

use http::{HeaderMap, StatusCode};
use serde_json::Map;

use super::auth::header;
use super::describe::DiskQuery;
use super::params::Params;
use super::reply::{self, ApiError, Reply};
use super::state::Shared;
use super::sync::lock;

/// The actions the simulator implements; any other name is refused the way
/// Zenlayer refuses an action the key may not call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    ReleaseDisk,
    DescribeDisks,
    TerminateDisk,
}

impl Action {
    fn from_headers(headers: &HeaderMap) -> Result<Action, ApiError> {
        match header(headers, "x-zc-action") {
            Some("ReleaseDisk") => Ok(Action::ReleaseDisk),
            Some("DescribeDisks") => Ok(Action::DescribeDisks),
            Some("TerminateDisk") => Ok(Action::TerminateDisk),
            other => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "AUTHFAILURE_UNAUTHORIZED_OPERATION",
                format!("action {:?} is not permitted", other.unwrap_or("")),
            )),
        }
    }
}

/// The VM API versions that have the actions above with the shapes served
/// here: the one the SDKs and Terraform send, and the newer one.
pub(crate) const VERSIONS: [&str; 2] = ["2023-03-13", "2026-04-01"];

/// `X-ZC-Version` is required: a client that forgets it, or names a version
/// that does not exist, must fail here as it would against Zenlayer rather
/// than pass every test and break in production. Zenlayer does not document
/// the codes; these are its parameter codes for a missing and a wrong value.
fn check_version(headers: &HeaderMap) -> Result<(), ApiError> {
    match header(headers, "x-zc-version") {
        Some(version) if VERSIONS.contains(&version) => Ok(()),
        None | Some("") => Err(ApiError::bad_request(
            "MISSING_PARAMETER",
            "the X-ZC-Version header is required",
        )),
        Some(version) => Err(ApiError::bad_request(
            "INVALID_PARAMETER_VALUE",
            format!(
                "X-ZC-Version {version:?} is not a VM API version; use one of {}",
                VERSIONS.join(", ")
            ),
        )),
    }
}

pub(crate) fn answer(shared: &Shared, headers: &HeaderMap, body: &[u8]) -> Reply {
    match run(shared, headers, body) {
        Ok(fields) => reply::success(fields),
        Err(error) => reply::error(&error),
    }
}

fn run(
    shared: &Shared,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Map<String, serde_json::Value>, ApiError> {
    shared
        .credentials
        .check(headers, body, chrono::Utc::now().timestamp())?;
    let action = Action::from_headers(headers)?;
    check_version(headers)?;
    let params = Params::parse(body)?;
    let mut inventory = lock(&shared.inventory);
    inventory.settle();
    match action {
        Action::ReleaseDisk => {
            let disk_id = params.required_str("diskId")?;
            inventory.release(disk_id)?;
            Ok(Map::new())
        }
        Action::TerminateDisk => {
            let disk_id = params.required_str("diskId")?;
            inventory.terminate(disk_id)?;
            Ok(Map::new())
        }
        Action::DescribeDisks => {
            let query = DiskQuery::from_params(&params)?;
            Ok(query.run(&inventory))
        }
    }
}
