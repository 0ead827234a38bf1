//! Every rendering of an [`Outcome`]: the caller's answer (a response, or a
//! `tonic::Status` with `ErrorInfo`, `RetryInfo` and `BadRequest`), the audit
//! records, the metric labels and the call's one log line. Each reads the
//! outcome; none reads another rendering.

use super::CallContext;
use super::codes::code_name;
use super::outcome::{Audited, Outcome, RELEASE_DISK};
use crate::audit::{Answer, OutcomeRecord, RefusalRecord};
use crate::decision::Decision;
use crate::metrics::Metrics;
use crate::pb::ReleaseDiskResponse;
use std::collections::HashMap;
use std::time::Duration;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// `ErrorInfo.domain` of every error the gateway returns.
pub const ERROR_DOMAIN: &str = "zenlayer-gateway";

/// What the caller is answered.
pub type Reply = Result<ReleaseDiskResponse, Status>;

impl Outcome {
    pub fn reply(&self, call: &CallContext) -> Reply {
        match self.code {
            Code::Ok => Ok(ReleaseDiskResponse {
                request_id: self.release_request_id().unwrap_or_default().to_owned(),
                audit_id: call.call_id.to_string(),
                replayed: self.replay_of.is_some(),
                audit_log_index: self.log_index,
            }),
            _ => Err(self.status(call)),
        }
    }

    /// Zenlayer's requestId for the release itself. A success learned by
    /// reconciliation (the release's answer was lost, `DescribeDisks` then
    /// showed the disk gone) has none: the describe's id would send whoever
    /// quotes it to Zenlayer support after the wrong request.
    fn release_request_id(&self) -> Option<&str> {
        match self.upstream.action.as_deref() {
            None | Some(RELEASE_DISK) => self.upstream.request_id.as_deref(),
            Some(_) => None,
        }
    }

    pub(super) fn status(&self, call: &CallContext) -> Status {
        let mut details = ErrorDetails::new();
        for v in &self.violations {
            details.add_bad_request_violation(v.field, &v.description);
        }
        if let Some(after) = self.retry_after {
            details.set_retry_info(Some(after));
        }
        let reason = self.reason.as_deref().unwrap_or_default();
        details.set_error_info(reason, ERROR_DOMAIN, self.error_metadata(call));
        Status::with_error_details(self.code, &self.message, details)
    }

    /// What every error carries so that a caller can quote it.
    fn error_metadata(&self, call: &CallContext) -> HashMap<String, String> {
        let mut metadata = HashMap::from([("x_request_id".to_owned(), call.request_id.clone())]);
        let mut put = |key: &str, value: String| metadata.insert(key.to_owned(), value);
        if self.audited == Audited::Yes {
            put("audit_id", call.call_id.to_string());
            if let Some(index) = self.log_index {
                put("audit_log_index", index.to_string());
            }
        }
        if let Some(id) = &self.upstream.request_id {
            put("upstream_request_id", id.clone());
        }
        if let Some(status) = self.upstream.http_status {
            put("http_status", status.to_string());
        }
        // Most outcomes are about the release; only another action is named.
        if let Some(action) = self
            .upstream
            .action
            .as_deref()
            .filter(|a| *a != RELEASE_DISK)
        {
            put("zenlayer_action", action.to_owned());
        }
        // Comma-separated; Cedar ids cannot be empty, and an empty value
        // says that no policy permitted the call.
        if let Some(ids) = &self.policy_ids {
            put("policy_ids", ids.join(","));
        }
        if let Some(original) = self.replay_of {
            put("replayed", "true".to_owned());
            put("original_audit_id", original.to_string());
        }
        metadata
    }

    /// The answer as the audit trail keeps it, enough to tell it again.
    pub fn answer(&self) -> Answer {
        Answer {
            kind: self.kind(),
            grpc_code: code_name(self.code).to_owned(),
            error_reason: self.reason.clone(),
            error_message: Some(self.message.clone()).filter(|_| self.code != Code::Ok),
            zenlayer_code: self.upstream.zenlayer_code.clone(),
            zenlayer_request_id: self.upstream.request_id.clone(),
            http_status: self.upstream.http_status,
            zenlayer_action: self.upstream.action.clone(),
        }
    }

    /// The outcome record of an allowed call; `has_key` says whether it
    /// claimed an idempotency key that its fate may free.
    pub fn record(&self, call: &CallContext, has_key: bool) -> OutcomeRecord {
        OutcomeRecord {
            call_id: call.call_id,
            completed_at: chrono::Utc::now(),
            answer: self.answer(),
            frees_key: has_key && self.frees_key(),
        }
    }

    /// The refusal as the attempt row records it; `None` for allowed calls.
    pub fn refusal_record(&self) -> Option<RefusalRecord> {
        let reason = self.refusal_reason.clone()?;
        Some(RefusalRecord {
            decision: self.decision,
            reason,
            grpc_code: code_name(self.code),
            message: self.message.clone(),
        })
    }

    /// Counts the call.
    pub fn count(&self, metrics: &Metrics, elapsed: Duration) {
        metrics.call_finished(code_name(self.code), self.decision.label(), elapsed);
    }

    /// Times the upstream call this outcome came from.
    pub fn count_upstream(&self, metrics: &Metrics, elapsed: Duration) {
        let code = self.upstream.zenlayer_code.as_deref().unwrap_or_default();
        metrics.upstream_finished(self.kind().label(), code, elapsed);
    }

    /// The one line each call leaves in the log; the call's span adds the
    /// request id, call id and trace id. The status message goes in
    /// `error_message`: a field named `message` would collide with the
    /// event's own message and leave JSON logs with a duplicate key.
    pub fn log(&self, principal: Option<&str>, disk_id: &str, elapsed: Duration) {
        let duration_ms = elapsed.as_millis() as u64;
        let disk_id = disk_id.chars().take(80).collect::<String>();
        let decision = self.decision.label();
        let outcome = self.label();
        let grpc_code = code_name(self.code);
        let request_id = self.upstream.request_id.as_deref().unwrap_or_default();
        match (self.code, self.decision) {
            (Code::Ok, Decision::Allowed) => tracing::info!(
                principal,
                disk_id,
                decision,
                outcome,
                grpc.code = grpc_code,
                zenlayer.request_id = request_id,
                replayed = self.replay_of.is_some(),
                duration_ms,
                "ReleaseDisk succeeded"
            ),
            _ => tracing::info!(
                principal,
                disk_id,
                decision,
                outcome,
                grpc.code = grpc_code,
                reason = self.reason.as_deref().unwrap_or_default(),
                zenlayer.request_id = request_id,
                duration_ms,
                error_message = self.message,
                "ReleaseDisk did not release"
            ),
        }
    }
}
