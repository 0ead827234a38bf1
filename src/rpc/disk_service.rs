//! `zenlayer.vm.v1.DiskService`: the steps of a release, in order. Check
//! the request, check the caller, then record-and-forward. A refusal is
//! recorded too, and stays a refusal if it cannot be.

use super::error::CallError;
use super::forward::Forwarder;
use super::refusal::refuse;
use super::{CallContext, attempt};
use crate::audit::{Attempt, AuditLog};
use crate::auth::Authentication;
use crate::domain::ReleaseRequest;
use crate::pb::disk_service_server::DiskService;
use crate::pb::{ReleaseDiskRequest, ReleaseDiskResponse};
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
        let parsed =
            ReleaseRequest::parse(&request.disk_id, &request.idempotency_key, &request.reason);
        let request = match parsed {
            Ok(request) => request,
            Err(violations) => {
                return Err(
                    refuse(&self.audit, &call, attempt, CallError::Invalid(violations)).await,
                );
            }
        };
        let caller = match authentication.result {
            Ok(caller) => caller,
            Err(error) => {
                return Err(refuse(&self.audit, &call, attempt, CallError::Denied(error)).await);
            }
        };
        self.forwarder.forward(call, attempt, caller, request).await
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
        let request = request.into_inner();
        let attempt = attempt::received(&call, &authentication, peer, &request);
        match self.release(call, authentication, attempt, request).await {
            Ok(response) => {
                tracing::info!(zenlayer.request_id = %response.request_id, replayed = response.replayed, "disk released");
                Ok(Response::new(response))
            }
            Err(status) => {
                tracing::info!(grpc.code = ?status.code(), message = status.message(), "release not performed");
                Err(status)
            }
        }
    }
}
