//! `zenlayer.vm.v1.DiskService`: hands each call to its own task on the
//! release path and waits for the answer. The task, not this handler,
//! renders the call's log line and metrics, so a caller that hangs up does
//! not take them (or the audit record) along. If the caller's deadline is
//! about to pass first, the handler answers DEADLINE_EXCEEDED with the
//! call's audit id itself, rather than leave the caller a bare CANCELLED.

use super::CallContext;
use super::explain;
use super::get_release::{ReadFrom, ReleaseReader};
use super::outcome::{Audited, Outcome};
use super::received::{self, Received};
use super::release::ReleasePath;
use crate::decision::Refusal;
use crate::pb::disk_service_server::DiskService;
use crate::pb::{
    ConsistencyProof, ConsistencyProofRequest, GetReleaseRequest, Release, ReleaseDiskRequest,
    ReleaseDiskResponse, ReleaseProof,
};
use tokio::sync::oneshot;
use tokio_util::task::TaskTracker;
use tonic::{Code, Request, Response, Status};
use tracing::Instrument as _;

/// The `DiskService` implementation.
#[derive(Debug, Clone)]
pub struct DiskApi {
    path: ReleasePath,
    reader: ReleaseReader,
    /// The calls in flight, which shutdown lets finish.
    tasks: TaskTracker,
}

impl DiskApi {
    pub fn new(path: ReleasePath, reader: ReleaseReader, tasks: TaskTracker) -> Self {
        Self {
            path,
            reader,
            tasks,
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
        let received = Received::of(request);
        let (answer, answered) = oneshot::channel();
        let answer_by = call.deadline.answer_by();
        // The fallbacks' statuses are built only when one is needed: most
        // calls answer in time, and building one costs more than the copy.
        let context = call.clone();
        let task = self.path.clone().run(call, received, answer);
        self.tasks.spawn(task.in_current_span());
        let answered = async {
            answered
                .await
                .unwrap_or_else(|_| explain::ended_without_answer().reply(&context))
        };
        let reply = match answer_by {
            Some(wait) => match tokio::time::timeout(wait, answered).await {
                Ok(reply) => reply,
                Err(_) => explain::answer_overdue().reply(&context),
            },
            None => answered.await,
        };
        reply.map(Response::new)
    }

    async fn get_release(
        &self,
        request: Request<GetReleaseRequest>,
    ) -> Result<Response<Release>, Status> {
        let call = CallContext::of(&request);
        if received::several_messages(&request) {
            // A read leaves no audit record, so neither does this refusal.
            let violation = received::several_messages_violation();
            let outcome = Outcome {
                audited: Audited::No,
                ..explain::refused(&Refusal::Invalid(vec![violation]))
            };
            return Err(outcome.status(&call));
        }
        let peer_identity = peer_identity(&request);
        let release = self
            .reader
            .get(
                &call,
                read_from(&request, &peer_identity),
                request.get_ref(),
            )
            .await;
        tracing::info!(
            audit_id = %request.get_ref().audit_id.chars().take(64).collect::<String>(),
            grpc.code = super::codes::code_name(release.as_ref().map_or_else(|s| s.code(), |_| Code::Ok)),
            "GetRelease answered"
        );
        release.map(Response::new)
    }

    async fn get_release_proof(
        &self,
        request: Request<GetReleaseRequest>,
    ) -> Result<Response<ReleaseProof>, Status> {
        let call = CallContext::of(&request);
        let peer_identity = peer_identity(&request);
        let proof = self
            .reader
            .prove(
                &call,
                read_from(&request, &peer_identity),
                request.get_ref(),
            )
            .await;
        tracing::info!(
            audit_id = %request.get_ref().audit_id.chars().take(64).collect::<String>(),
            grpc.code = super::codes::code_name(proof.as_ref().map_or_else(|s| s.code(), |_| Code::Ok)),
            "GetReleaseProof answered"
        );
        proof.map(Response::new)
    }

    async fn get_consistency_proof(
        &self,
        request: Request<ConsistencyProofRequest>,
    ) -> Result<Response<ConsistencyProof>, Status> {
        let call = CallContext::of(&request);
        let proof = self
            .reader
            .consistency(&call, request.metadata().as_ref(), request.get_ref())
            .await;
        tracing::info!(
            from_size = request.get_ref().from_size,
            to_size = request.get_ref().to_size,
            grpc.code =
                super::codes::code_name(proof.as_ref().map_or_else(|s| s.code(), |_| Code::Ok)),
            "GetConsistencyProof answered"
        );
        proof.map(Response::new)
    }
}

/// The subject of the caller's TLS client certificate, when it sent one.
fn peer_identity<T>(request: &Request<T>) -> Option<String> {
    request
        .peer_certs()
        .and_then(|chain| crate::tls::peer_identity(&chain))
}

fn read_from<'a, T>(request: &'a Request<T>, peer_identity: &'a Option<String>) -> ReadFrom<'a> {
    ReadFrom {
        headers: request.metadata().as_ref(),
        peer: request.remote_addr(),
        peer_identity: peer_identity.as_deref(),
    }
}
