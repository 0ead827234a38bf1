//! `DiskService/GetReleaseProof` and `GetConsistencyProof`: the audit log's
//! proofs, for the same readers as `GetRelease`.

use super::CallContext;
use super::get_release::{ReadFrom, ReleaseReader, denied, unaudited};
use crate::pb::{
    ConsistencyProof, ConsistencyProofRequest, GetReleaseRequest, LoggedEvent, ReleaseProof,
};
use crate::trail::ProveError;
use tonic::{Code, Status};

impl ReleaseReader {
    pub async fn prove(
        &self,
        call: &CallContext,
        from: ReadFrom<'_>,
        request: &GetReleaseRequest,
    ) -> Result<ReleaseProof, Status> {
        let row = self.visible(call, from, request).await?;
        let call_id = row.call_id.unwrap_or_default();
        let proof = self
            .trail
            .prove_call(call_id)
            .await
            .map_err(|error| failed(call, &error))?;
        Ok(ReleaseProof {
            checkpoint: proof.checkpoint_note,
            tree_size: proof.checkpoint.size,
            root_hash: proof.checkpoint.root.to_vec(),
            events: proof
                .events
                .into_iter()
                .map(|e| LoggedEvent {
                    log_index: e.log_index,
                    kind: e.kind,
                    leaf: e.leaf,
                    leaf_hash: e.leaf_hash.to_vec(),
                    inclusion_path: e.inclusion_path.iter().map(|h| h.to_vec()).collect(),
                    in_checkpoint: e.in_checkpoint,
                })
                .collect(),
        })
    }

    pub async fn consistency(
        &self,
        call: &CallContext,
        headers: &http::HeaderMap,
        request: &ConsistencyProofRequest,
    ) -> Result<ConsistencyProof, Status> {
        self.authenticator
            .check_reader(headers)
            .await
            .map_err(|error| denied(call, error))?;
        let path = self
            .trail
            .consistency(request.from_size, request.to_size)
            .await
            .map_err(|error| failed(call, &error))?;
        Ok(ConsistencyProof {
            from_size: request.from_size,
            to_size: request.to_size,
            path: path.iter().map(|h| h.to_vec()).collect(),
        })
    }
}

fn failed(call: &CallContext, error: &ProveError) -> Status {
    let (code, reason, message) = match error {
        ProveError::NoCheckpoint => (
            Code::FailedPrecondition,
            "NO_CHECKPOINT",
            "no audit log checkpoint has been signed yet: the gateway signs one every AUDIT_CHECKPOINT_INTERVAL_MS once AUDIT_LOG_SIGNING_KEY_FILE is set; retry later".to_owned(),
        ),
        ProveError::Sizes(_) => (Code::InvalidArgument, "INVALID_TREE_SIZES", format!("{error}")),
        ProveError::Database(_)
        | ProveError::Incomplete
        | ProveError::RowMissing(_)
        | ProveError::Misattributed(_)
        | ProveError::Unhashable(_) => {
            tracing::error!(error = %error, "an audit log proof could not be built");
            (
                Code::Unavailable,
                "AUDIT_UNAVAILABLE",
                format!("the audit log proof could not be built ({error}); run `zenlayer-gateway audit verify`"),
            )
        }
    };
    unaudited(call, code, reason, message)
}
