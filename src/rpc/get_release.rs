//! `DiskService/GetRelease`: what the audit trail knows about one call,
//! for whom the policies let read it (by default: the caller who made it,
//! or a holder of the audit role). A call that does not exist and one the
//! caller may not see are answered alike, so that the answer never reveals
//! that someone else's call exists; a policy that fails to evaluate hides
//! the call too, and is logged for operators.

use super::CallContext;
use super::explain;
use super::outcome::{Audited, Outcome};
use crate::audit::{AuditLog, CallRow};
use crate::auth::{AuthError, Authenticator, Reader};
use crate::decision::Refusal;
use crate::pb::{Disk, GetReleaseRequest, Release};
use crate::policy::{CallerFacts, Policies, ReadFacts, Verdict};
use crate::trail::Trail;
use crate::zenlayer::Fate;
use serde_json::Value;
use tonic::{Code, Status};
use uuid::Uuid;

/// Reads calls back for their callers.
#[derive(Debug, Clone)]
pub struct ReleaseReader {
    pub(super) authenticator: Authenticator,
    audit: AuditLog,
    policies: Policies,
    pub(super) trail: Trail,
}

/// Where a read comes from.
#[derive(Debug, Clone, Copy)]
pub struct ReadFrom<'a> {
    pub headers: &'a http::HeaderMap,
    pub peer: Option<std::net::SocketAddr>,
    pub peer_identity: Option<&'a str>,
}

impl ReleaseReader {
    pub fn new(
        authenticator: Authenticator,
        audit: AuditLog,
        policies: Policies,
        trail: Trail,
    ) -> Self {
        Self {
            authenticator,
            audit,
            policies,
            trail,
        }
    }

    pub async fn get(
        &self,
        call: &CallContext,
        from: ReadFrom<'_>,
        request: &GetReleaseRequest,
    ) -> Result<Release, Status> {
        self.visible(call, from, request).await.map(release_of)
    }

    /// The call `request` names, if the policies let the caller read it.
    pub(super) async fn visible(
        &self,
        call: &CallContext,
        from: ReadFrom<'_>,
        request: &GetReleaseRequest,
    ) -> Result<CallRow, Status> {
        let headers = from.headers;
        let reader = self
            .authenticator
            .check_reader(headers)
            .await
            .map_err(|error| denied(call, error))?;
        // Echoed in messages at most this long: a megabyte of "id" must not
        // become a header the caller's library refuses to read.
        let shown: String = request.audit_id.chars().take(64).collect();
        let not_found = || {
            unaudited(
                call,
                Code::NotFound,
                "RELEASE_NOT_FOUND",
                format!(
                    "no call with audit_id {shown:?} is visible to you: it does not exist, or another caller made it (the audit role reads every call)",
                ),
            )
        };
        let Ok(call_id) = Uuid::parse_str(request.audit_id.trim()) else {
            return Err(unaudited(
                call,
                Code::InvalidArgument,
                "INVALID_AUDIT_ID",
                format!(
                    "audit_id {shown:?} is not an audit id: use the UUID a ReleaseDisk answer or error carried as auditId / audit_id",
                ),
            ));
        };
        let row = self.audit.call(call_id).await.map_err(|error| {
            tracing::error!(error = %error, "the audit trail cannot be read");
            unaudited(
                call,
                Code::Unavailable,
                "AUDIT_UNAVAILABLE",
                "the audit trail cannot be read right now; retry later".to_owned(),
            )
        })?;
        match row {
            Some(row) if self.may_read(call, &from, &reader, &row) => Ok(row),
            Some(_) | None => Err(not_found()),
        }
    }

    /// The policies' decision on reading `row`; an evaluation error hides it.
    fn may_read(
        &self,
        call: &CallContext,
        from: &ReadFrom<'_>,
        reader: &Reader,
        row: &CallRow,
    ) -> bool {
        let call_id = row.call_id.map(|id| id.to_string()).unwrap_or_default();
        let facts = ReadFacts {
            caller: CallerFacts {
                principal: reader.principal(),
                peer_identity: from.peer_identity,
                ip: from.peer.map(|p| p.ip()),
                at: call.received_wall,
            },
            call_id: &call_id,
            disk_id: row.disk_id.as_deref().unwrap_or_default(),
            call_subject: row.principal.as_deref(),
            call_issuer: row.issuer.as_deref(),
        };
        let verdict = self.policies.decide_read(&facts);
        if let Verdict::Error { policy_ids, errors } = &verdict {
            tracing::error!(policy_ids = ?policy_ids, errors = ?errors, "a policy could not be evaluated for GetRelease: the call is shown as not found");
        }
        verdict.permits()
    }
}

/// A status for a read, which leaves no audit record to point at.
pub(super) fn unaudited(call: &CallContext, code: Code, reason: &str, message: String) -> Status {
    let outcome = Outcome {
        audited: Audited::No,
        ..Outcome::new(code, reason, message, Fate::NotActed)
    };
    outcome.status(call)
}

pub(super) fn denied(call: &CallContext, error: AuthError) -> Status {
    let outcome = Outcome {
        audited: Audited::No,
        ..explain::refused(&Refusal::Denied(error))
    };
    outcome.status(call)
}

fn time(at: Option<chrono::DateTime<chrono::Utc>>) -> String {
    at.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

fn release_of(row: CallRow) -> Release {
    let text = |value: Option<String>| value.unwrap_or_default();
    let disk = row.disk_snapshot.as_ref().map(|entry| Disk {
        disk_name: row.disk_name.clone().unwrap_or_default(),
        zone_id: row.zone_id.clone().unwrap_or_default(),
        disk_size_gib: row.disk_size_gib.unwrap_or_default(),
        disk_type: row.disk_type.clone().unwrap_or_default(),
        disk_status: row.disk_status_before.clone().unwrap_or_default(),
        tags: tags_of(row.disk_tags.as_ref()),
        entry_json: entry.to_string(),
    });
    Release {
        audit_id: row.call_id.map(|id| id.to_string()).unwrap_or_default(),
        disk_id: text(row.disk_id),
        principal: text(row.principal),
        issuer: text(row.issuer),
        reason: text(row.reason),
        idempotency_key: text(row.idempotency_key),
        received_at: time(row.received_at),
        decision: text(row.decision),
        decision_reason: text(row.decision_reason),
        outcome: text(row.outcome),
        outcome_recorded_by: text(row.outcome_recorded_by),
        completed_at: time(row.completed_at),
        grpc_code: text(row.grpc_code),
        error_message: text(row.error_message),
        zenlayer_request_id: text(row.zenlayer_request_id),
        zenlayer_code: text(row.zenlayer_code),
        zenlayer_action: text(row.zenlayer_action),
        disk,
        confirmation: text(row.confirmation),
        confirmed_at: time(row.confirmed_at),
        replay_of: row.replay_of.map(|id| id.to_string()).unwrap_or_default(),
    }
}

/// Tag values are shown as text, whatever JSON they were.
fn tags_of(tags: Option<&Value>) -> std::collections::HashMap<String, String> {
    let Some(Value::Object(tags)) = tags else {
        return Default::default();
    };
    tags.iter()
        .map(|(key, value)| {
            let value = value
                .as_str()
                .map_or_else(|| value.to_string(), str::to_owned);
            (key.clone(), value)
        })
        .collect()
}
