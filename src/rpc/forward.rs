//! The part of a release that must not be cut short: record the attempt,
//! call Zenlayer, record the outcome. It runs in a task of its own, so a
//! caller who cancels or whose deadline expires cannot drop it halfway; the
//! caller's deadline still bounds the upstream call. Shutdown waits for
//! these tasks (within the grace period).

use super::CallContext;
use super::error::{Audited, CallError, code_name};
use crate::audit::{Attempt, AuditLog, Outcome, OutcomeKind};
use crate::auth::Authorized;
use crate::domain::DiskId;
use crate::pb::ReleaseDiskResponse;
use crate::zenlayer::{Accepted, UpstreamError, ZenlayerClient};
use tokio::sync::oneshot;
use tokio_util::task::TaskTracker;
use tonic::Status;
use tracing::Instrument as _;

/// Forwards authorized releases, recording each step.
#[derive(Debug, Clone)]
pub struct Forwarder {
    audit: AuditLog,
    zenlayer: ZenlayerClient,
    tasks: TaskTracker,
}

impl Forwarder {
    pub fn new(audit: AuditLog, zenlayer: ZenlayerClient, tasks: TaskTracker) -> Self {
        Self {
            audit,
            zenlayer,
            tasks,
        }
    }

    /// Runs the release to its end, whatever happens to the caller, and
    /// returns what the caller should be told.
    pub async fn forward(
        &self,
        call: CallContext,
        attempt: Attempt,
        caller: Authorized,
        disk_id: DiskId,
    ) -> Result<ReleaseDiskResponse, Status> {
        let (answer, answered) = oneshot::channel();
        let this = self.clone();
        let task = async move { this.run(call, attempt, caller, disk_id, answer).await };
        self.tasks.spawn(task.in_current_span());
        answered.await.unwrap_or_else(|_| {
            Err(Status::internal(
                "the release ended without an answer; check the audit trail",
            ))
        })
    }

    async fn run(
        &self,
        call: CallContext,
        attempt: Attempt,
        caller: Authorized,
        disk_id: DiskId,
        answer: oneshot::Sender<Result<ReleaseDiskResponse, Status>>,
    ) {
        if let Err(source) = self.audit.record_attempt(&attempt).await {
            let error = CallError::AuditUnavailable { disk_id, source };
            error.alert_operator();
            let _ = answer.send(Err(error.status(&call, Audited::No)));
            return;
        }
        let result = self
            .zenlayer
            .release_disk(&caller, &disk_id, call.deadline)
            .await;
        let (reply, outcome) = conclude(&call, disk_id, result);
        // The caller hears first; a slow outcome write must not delay or
        // spoil an answer Zenlayer already gave.
        let _ = answer.send(reply);
        if let Err(error) = self.audit.record_outcome(&outcome).await {
            tracing::error!(call_id = %call.call_id, error = %error, "the outcome could not be recorded; the recovery sweep will mark this call unknown");
        }
    }
}

/// The caller's answer and the outcome record for one upstream result.
fn conclude(
    call: &CallContext,
    disk_id: DiskId,
    result: Result<Accepted, UpstreamError>,
) -> (Result<ReleaseDiskResponse, Status>, Outcome) {
    let completed_at = chrono::Utc::now();
    match result {
        Ok(accepted) => {
            let outcome = Outcome {
                call_id: call.call_id,
                completed_at,
                kind: OutcomeKind::Succeeded,
                grpc_code: "OK",
                zenlayer_code: None,
                zenlayer_request_id: Some(accepted.request_id.clone()),
                http_status: Some(200),
                error_message: None,
            };
            let response = ReleaseDiskResponse {
                request_id: accepted.request_id,
                audit_id: call.call_id.to_string(),
                replayed: false,
            };
            (Ok(response), outcome)
        }
        Err(source) => {
            let kind = if source.outcome_unknown() {
                OutcomeKind::Unknown
            } else {
                OutcomeKind::Failed
            };
            let zenlayer_code = source.zenlayer_code().map(str::to_owned);
            let zenlayer_request_id = source.upstream_request_id().map(str::to_owned);
            let http_status = source.http_status();
            let error = CallError::Upstream { disk_id, source };
            error.alert_operator();
            let status = error.status(call, Audited::Yes);
            let outcome = Outcome {
                call_id: call.call_id,
                completed_at,
                kind,
                grpc_code: code_name(status.code()),
                zenlayer_code,
                zenlayer_request_id,
                http_status,
                error_message: Some(status.message().to_owned()),
            };
            (Err(status), outcome)
        }
    }
}
