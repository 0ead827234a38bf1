//! What a decision is about, as plain values the call path already holds:
//! who calls, what they ask for, and when and from where.

use crate::auth::Principal;
use crate::zenlayer::DiskSnapshot;
use chrono::{DateTime, Utc};
use std::net::IpAddr;

/// Who is calling: the verified token, and the client certificate with mTLS.
#[derive(Debug, Clone, Copy)]
pub struct CallerFacts<'a> {
    pub principal: &'a Principal,
    pub peer_identity: Option<&'a str>,
    pub ip: Option<IpAddr>,
    /// When the call was received.
    pub at: DateTime<Utc>,
}

/// A release to decide on. `disk` is the pre-flight's snapshot: `None`
/// when the pre-flight is off or the disk was not listed.
#[derive(Debug, Clone, Copy)]
pub struct ReleaseFacts<'a> {
    pub caller: CallerFacts<'a>,
    pub disk_id: &'a str,
    pub disk: Option<&'a DiskSnapshot>,
    pub reason: &'a str,
    pub has_idempotency_key: bool,
}

/// A call in the audit trail that someone asks to read.
#[derive(Debug, Clone, Copy)]
pub struct ReadFacts<'a> {
    pub caller: CallerFacts<'a>,
    pub call_id: &'a str,
    pub disk_id: &'a str,
    pub call_subject: Option<&'a str>,
    pub call_issuer: Option<&'a str>,
}
