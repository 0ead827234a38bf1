//! `zenlayer.vm.v1.DiskService`: the steps of a release, in order.

use super::{CallContext, CallError};
use crate::auth::Authentication;
use crate::domain::ReleaseRequest;
use crate::pb::disk_service_server::DiskService;
use crate::pb::{ReleaseDiskRequest, ReleaseDiskResponse};
use crate::zenlayer::ZenlayerClient;
use tonic::{Request, Response, Status};

/// The `DiskService` implementation.
#[derive(Debug, Clone)]
pub struct DiskApi {
    zenlayer: ZenlayerClient,
}

impl DiskApi {
    pub fn new(zenlayer: ZenlayerClient) -> Self {
        Self { zenlayer }
    }

    async fn release(
        &self,
        call: &CallContext,
        authentication: Authentication,
        request: ReleaseDiskRequest,
    ) -> Result<ReleaseDiskResponse, CallError> {
        let request =
            ReleaseRequest::parse(&request.disk_id, &request.idempotency_key, &request.reason)
                .map_err(CallError::Invalid)?;
        let authorized = authentication.result.map_err(CallError::Denied)?;
        let accepted = self
            .zenlayer
            .release_disk(&authorized, &request.disk_id, call.deadline)
            .await
            .map_err(|source| CallError::Upstream {
                disk_id: request.disk_id.clone(),
                source,
            })?;
        Ok(ReleaseDiskResponse {
            request_id: accepted.request_id,
            audit_id: String::new(),
            replayed: false,
        })
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
        match self
            .release(&call, authentication, request.into_inner())
            .await
        {
            Ok(response) => {
                tracing::info!(zenlayer.request_id = %response.request_id, "disk released");
                Ok(Response::new(response))
            }
            Err(error) => {
                let status = error.into_status(&call);
                tracing::info!(grpc.code = ?status.code(), message = status.message(), "release refused");
                Err(status)
            }
        }
    }
}
