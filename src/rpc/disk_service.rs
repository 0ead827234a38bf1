//! `zenlayer.vm.v1.DiskService`: the steps of a release, in order. Check
//! the request, check the caller, then record-and-forward. A refusal is
//! recorded too, and stays a refusal if it cannot be. Each call ends with
//! one log line and its metrics.

use super::codes::code_name;
use super::error::CallError;
use super::forward::Forwarder;
use super::refusal::refuse;
use super::{CallContext, attempt};
use crate::audit::{Attempt, AuditLog};
use crate::auth::Authentication;
use crate::domain::ReleaseRequest;
use crate::metrics::Metrics;
use crate::pb::disk_service_server::DiskService;
use crate::pb::{ReleaseDiskRequest, ReleaseDiskResponse};
use crate::tls;
use tokio_util::task::TaskTracker;
use tonic::{Request, Response, Status};
use tonic_types::StatusExt as _;

/// The `DiskService` implementation.
#[derive(Debug, Clone)]
pub struct DiskApi {
    audit: AuditLog,
    forwarder: Forwarder,
    metrics: Metrics,
    /// Where refusal records are written, beyond the caller's reach.
    tasks: TaskTracker,
}

/// How the gateway decided on a call, as metrics and logs label it.
#[derive(Debug, Clone, Copy)]
enum Decision {
    Allowed,
    Denied,
    Invalid,
}

impl Decision {
    fn label(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Denied => "denied",
            Self::Invalid => "invalid",
        }
    }
}

impl DiskApi {
    pub fn new(
        audit: AuditLog,
        forwarder: Forwarder,
        metrics: Metrics,
        tasks: TaskTracker,
    ) -> Self {
        Self {
            audit,
            forwarder,
            metrics,
            tasks,
        }
    }

    async fn release(
        &self,
        call: &CallContext,
        authentication: Authentication,
        attempt: Attempt,
        request: ReleaseDiskRequest,
    ) -> (Decision, Result<ReleaseDiskResponse, Status>) {
        let parsed =
            ReleaseRequest::parse(&request.disk_id, &request.idempotency_key, &request.reason);
        let request = match parsed {
            Ok(request) => request,
            Err(violations) => {
                let status = refuse(
                    &self.audit,
                    &self.tasks,
                    call,
                    attempt,
                    CallError::Invalid(violations),
                )
                .await;
                return (Decision::Invalid, Err(status));
            }
        };
        let caller = match authentication.result {
            Ok(caller) => caller,
            Err(error) => {
                return (
                    Decision::Denied,
                    Err(refuse(
                        &self.audit,
                        &self.tasks,
                        call,
                        attempt,
                        CallError::Denied(error),
                    )
                    .await),
                );
            }
        };
        (
            Decision::Allowed,
            self.forwarder
                .forward(call.clone(), attempt, caller, request)
                .await,
        )
    }
}

#[tonic::async_trait]
impl DiskService for DiskApi {
    async fn release_disk(
        &self,
        request: Request<ReleaseDiskRequest>,
    ) -> Result<Response<ReleaseDiskResponse>, Status> {
        let _in_flight = self.metrics.call_started();
        let call = CallContext::of(&request);
        let authentication = Authentication::of(&request);
        let principal = authentication.principal.as_ref().map(|p| p.subject.clone());
        let peer = request.remote_addr();
        let peer_identity = request
            .peer_certs()
            .and_then(|chain| tls::peer_identity(&chain));
        let request = request.into_inner();
        let disk_id = request.disk_id.clone();
        let attempt = attempt::received(&call, &authentication, peer, peer_identity, &request);
        let (decision, result) = self.release(&call, authentication, attempt, request).await;
        let code = match &result {
            Ok(_) => tonic::Code::Ok,
            Err(status) => status.code(),
        };
        let elapsed = call.received_at.elapsed();
        self.metrics
            .call_finished(code_name(code), decision.label(), elapsed);
        tracing::Span::current().record("rpc.grpc.status_code", code as i32);
        log_call(principal.as_deref(), &disk_id, decision, &result, elapsed);
        result.map(Response::new)
    }
}

/// The one line each call leaves in the log; the call's span adds the
/// request id, call id and trace id.
fn log_call(
    principal: Option<&str>,
    disk_id: &str,
    decision: Decision,
    result: &Result<ReleaseDiskResponse, Status>,
    elapsed: std::time::Duration,
) {
    let duration_ms = elapsed.as_millis() as u64;
    let disk_id = disk_id.chars().take(80).collect::<String>();
    match result {
        Ok(response) => tracing::info!(
            principal, disk_id, decision = decision.label(), outcome = "succeeded", grpc.code = "OK",
            zenlayer.request_id = %response.request_id, replayed = response.replayed, duration_ms,
            "ReleaseDisk succeeded"
        ),
        Err(status) => {
            let info = status.get_details_error_info();
            let reason = info.as_ref().map(|i| i.reason.as_str()).unwrap_or_default();
            let upstream = info
                .as_ref()
                .and_then(|i| i.metadata.get("upstream_request_id").cloned())
                .unwrap_or_default();
            let outcome = match decision {
                Decision::Allowed if reason == "OUTCOME_UNKNOWN" => "unknown",
                Decision::Allowed => "failed",
                Decision::Denied | Decision::Invalid => "refused",
            };
            tracing::info!(
                principal,
                disk_id,
                decision = decision.label(),
                outcome,
                grpc.code = code_name(status.code()),
                reason,
                zenlayer.request_id = upstream,
                duration_ms,
                message = status.message(),
                "ReleaseDisk did not release"
            );
        }
    }
}
