//! `zenlayer.vm.v1.DiskService`: the steps of a release, in order. Check
//! the request, check the caller, then record-and-forward. A refusal is
//! recorded too, and stays a refusal if it cannot be.

use super::error::{Audited, CallError, code_name};
use super::forward::Forwarder;
use super::{CallContext, attempt};
use crate::audit::{Attempt, AuditLog, Decision, Refusal};
use crate::auth::Authentication;
use crate::domain::ReleaseRequest;
use crate::pb::disk_service_server::DiskService;
use crate::pb::{ReleaseDiskRequest, ReleaseDiskResponse};
use crate::tls;
use tonic::{Request, Response, Status};

/// The `DiskService` implementation.
#[derive(Debug, Clone)]
pub struct DiskApi {
    audit: AuditLog,
    forwarder: Forwarder,
}

impl DiskApi {
    pub fn new(audit: AuditLog, forwarder: Forwarder) -> Self {
        Self { audit, forwarder }
    }

    async fn release(
        &self,
        call: CallContext,
        authentication: Authentication,
        attempt: Attempt,
        request: ReleaseDiskRequest,
    ) -> Result<ReleaseDiskResponse, Status> {
        let request = match ReleaseRequest::parse(
            &request.disk_id,
            &request.idempotency_key,
            &request.reason,
        ) {
            Ok(request) => request,
            Err(violations) => {
                return Err(self
                    .refuse(&call, attempt, CallError::Invalid(violations))
                    .await);
            }
        };
        let caller = match authentication.result {
            Ok(caller) => caller,
            Err(error) => return Err(self.refuse(&call, attempt, CallError::Denied(error)).await),
        };
        self.forwarder
            .forward(call, attempt, caller, request.disk_id)
            .await
    }

    /// Records a refusal and returns it. If the record cannot be stored the
    /// refusal stands, and the whole record goes to the log instead.
    async fn refuse(&self, call: &CallContext, mut attempt: Attempt, error: CallError) -> Status {
        error.alert_operator();
        let status = error.status(call, Audited::Yes);
        let refusal = Refusal {
            reason: error.refusal_reason(),
            grpc_code: code_name(status.code()),
            message: status.message().to_owned(),
        };
        attempt.decision = match error {
            CallError::Invalid(_) => Decision::Invalid(refusal),
            _ => Decision::Denied(refusal),
        };
        match self.audit.record_attempt(&attempt).await {
            Ok(()) => status,
            Err(audit_error) => {
                tracing::error!(error = %audit_error, attempt = ?attempt, "a refused call could not be recorded in the audit trail; this log line is its record");
                error.status(call, Audited::No)
            }
        }
    }
}

#[tonic::async_trait]
impl DiskService for DiskApi {
    async fn release_disk(
        &self,
        request: Request<ReleaseDiskRequest>,
    ) -> Result<Response<ReleaseDiskResponse>, Status> {
        let call = CallContext::of(&request);
        let authentication = Authentication::of(&request);
        let peer = request.remote_addr();
        let peer_identity = request
            .peer_certs()
            .and_then(|chain| tls::peer_identity(&chain));
        let request = request.into_inner();
        let attempt = attempt::received(&call, &authentication, peer, peer_identity, &request);
        match self.release(call, authentication, attempt, request).await {
            Ok(response) => {
                tracing::info!(zenlayer.request_id = %response.request_id, "disk released");
                Ok(Response::new(response))
            }
            Err(status) => {
                tracing::info!(grpc.code = ?status.code(), message = status.message(), "release not performed");
                Err(status)
            }
        }
    }
}
