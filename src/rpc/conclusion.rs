//! How a release ends, as values: the caller's answer and the outcome
//! record for one upstream result, and which earlier answers a retry with
//! the same idempotency key may repeat.

use super::CallContext;
use super::codes::code_name;
use super::error::{Audited, CallError};
use crate::audit::{Answer, Outcome, OutcomeKind};
use crate::domain::DiskId;
use crate::pb::ReleaseDiskResponse;
use crate::zenlayer::{Accepted, UpstreamError};
use tonic::Status;
use tonic_types::StatusExt as _;

pub(super) type Reply = Result<ReleaseDiskResponse, Status>;

/// What a call's task ends with: the caller's answer and, for a forwarded
/// call, the outcome still to record.
pub(super) struct Concluded {
    pub caller: Reply,
    pub outcome: Option<Outcome>,
}

impl Concluded {
    pub fn answered(caller: Reply) -> Self {
        Self {
            caller,
            outcome: None,
        }
    }
}

/// A held key's answer is repeated only if the call ended in a way a retry
/// could not improve on: success, Zenlayer's own refusal, or no answer (the
/// disk may be gone; resending blindly is what keys exist to prevent).
pub(super) fn replayable(answer: &Answer) -> bool {
    match answer.kind {
        OutcomeKind::Succeeded | OutcomeKind::Unknown => true,
        OutcomeKind::Failed => answer.zenlayer_code.is_some() || answer.http_status.is_some(),
    }
}

/// The caller's answer and the outcome record for one upstream result.
pub(super) fn conclude(
    call: &CallContext,
    disk_id: DiskId,
    result: Result<Accepted, UpstreamError>,
    has_key: bool,
) -> Concluded {
    let completed_at = chrono::Utc::now();
    match result {
        Ok(accepted) => {
            let answer = Answer {
                kind: OutcomeKind::Succeeded,
                grpc_code: "OK".to_owned(),
                error_reason: None,
                error_message: None,
                zenlayer_code: None,
                zenlayer_request_id: Some(accepted.request_id.clone()),
                http_status: Some(200),
            };
            let response = ReleaseDiskResponse {
                request_id: accepted.request_id,
                audit_id: call.call_id.to_string(),
                replayed: false,
            };
            let outcome = Outcome {
                call_id: call.call_id,
                completed_at,
                answer,
                frees_key: false,
            };
            Concluded {
                caller: Ok(response),
                outcome: Some(outcome),
            }
        }
        Err(source) => {
            let kind = if source.outcome_unknown() {
                OutcomeKind::Unknown
            } else {
                OutcomeKind::Failed
            };
            let frees_key = has_key && source.zenlayer_did_not_act();
            let error = CallError::Upstream { disk_id, source };
            error.alert_operator();
            let status = error.status(call, Audited::Yes);
            let CallError::Upstream { source, .. } = &error else {
                unreachable!("built as Upstream above")
            };
            let answer = Answer {
                kind,
                zenlayer_code: source.zenlayer_code().map(str::to_owned),
                zenlayer_request_id: source.upstream_request_id().map(str::to_owned),
                http_status: source.http_status(),
                ..failed_answer(&status)
            };
            let outcome = Outcome {
                call_id: call.call_id,
                completed_at,
                answer,
                frees_key,
            };
            Concluded {
                caller: Err(status),
                outcome: Some(outcome),
            }
        }
    }
}

/// A failed call's answer as the caller saw it.
pub(super) fn failed_answer(status: &Status) -> Answer {
    Answer {
        kind: OutcomeKind::Failed,
        grpc_code: code_name(status.code()).to_owned(),
        error_reason: status.get_details_error_info().map(|info| info.reason),
        error_message: Some(status.message().to_owned()),
        zenlayer_code: None,
        zenlayer_request_id: None,
        http_status: None,
    }
}
