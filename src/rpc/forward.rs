//! The part of a release that must not be cut short: record the attempt
//! (claiming its idempotency key), call Zenlayer, record the outcome. It
//! runs in a task of its own, so a caller who cancels or whose deadline
//! expires cannot drop it halfway; the caller's deadline still bounds the
//! upstream call. Shutdown waits for these tasks (within the grace period).
//!
//! A key another call holds is answered from that call: its result if it
//! ended with Zenlayer's answer (or with no answer: the outcome stays
//! unknown, and nothing is resent), ABORTED while it is in flight, and
//! FAILED_PRECONDITION if it was for another disk.

use super::CallContext;
use super::conclusion::{Concluded, Reply, conclude, failed_answer, replayable};
use super::error::{Audited, CallError};
use super::refusal::refuse;
use crate::audit::{Attempt, AuditLog, Claim, Outcome, OutcomeKind, PriorCall, Recorded};
use crate::auth::Authorized;
use crate::domain::{DiskId, ReleaseRequest};
use crate::metrics::Metrics;
use crate::pb::ReleaseDiskResponse;
use crate::zenlayer::ZenlayerClient;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;
use tonic::Status;
use tracing::Instrument as _;

/// How long an answer waits for its outcome to be recorded (less, when the
/// caller's deadline is nearer).
const OUTCOME_BEFORE_ANSWER: std::time::Duration = std::time::Duration::from_secs(1);

/// Kept back from the caller's deadline for the answer to reach them.
const ANSWER_TRAVEL: std::time::Duration = std::time::Duration::from_millis(20);

/// Forwards authorized releases, recording each step.
#[derive(Debug, Clone)]
pub struct Forwarder {
    audit: AuditLog,
    zenlayer: ZenlayerClient,
    tasks: TaskTracker,
    metrics: Metrics,
}

impl Forwarder {
    pub fn new(
        audit: AuditLog,
        zenlayer: ZenlayerClient,
        tasks: TaskTracker,
        metrics: Metrics,
    ) -> Self {
        Self {
            audit,
            zenlayer,
            tasks,
            metrics,
        }
    }

    /// Runs the release to its end, whatever happens to the caller, and
    /// returns what the caller should be told.
    pub async fn forward(
        &self,
        call: CallContext,
        attempt: Attempt,
        caller: Authorized,
        request: ReleaseRequest,
    ) -> Reply {
        let (answer, answered) = oneshot::channel();
        let this = self.clone();
        let task = async move {
            this.run_to_end(call, attempt, caller, request, answer)
                .await
        };
        self.tasks.spawn(task.in_current_span());
        answered.await.unwrap_or_else(|_| {
            Err(Status::internal(
                "the release ended without an answer; check the audit trail",
            ))
        })
    }

    /// The task's body: the release, the answer, and the outcome's record.
    async fn run_to_end(
        self,
        call: CallContext,
        attempt: Attempt,
        caller: Authorized,
        request: ReleaseRequest,
        answer: oneshot::Sender<Reply>,
    ) {
        let reply = self.run(&call, attempt, &caller, &request).await;
        let Some(outcome) = reply.outcome else {
            let _ = answer.send(reply.caller);
            return;
        };
        // Recorded before the caller hears, so that a retry with the same key
        // finds the outcome; but a slow database must not delay or spoil an
        // answer Zenlayer already gave, so the wait is short (and within the
        // caller's deadline) and the write carries on in the background.
        let wait = call
            .deadline
            .remaining()
            .map_or(OUTCOME_BEFORE_ANSWER, |left| {
                left.saturating_sub(ANSWER_TRAVEL)
                    .min(OUTCOME_BEFORE_ANSWER)
            });
        let first = tokio::time::timeout(wait, self.audit.record_outcome_once(&outcome)).await;
        let _ = answer.send(reply.caller);
        if !matches!(first, Ok(Ok(()))) {
            self.record_outcome(&outcome).await;
        }
    }

    async fn run(
        &self,
        call: &CallContext,
        attempt: Attempt,
        caller: &Authorized,
        request: &ReleaseRequest,
    ) -> Concluded {
        let claim = request.idempotency_key.as_ref().map(|key| Claim {
            issuer: caller.principal().issuer.clone(),
            principal: caller.principal().subject.clone(),
            key: key.as_str().to_owned(),
            disk_id: request.disk_id.as_str().to_owned(),
        });
        match self.audit.record_attempt(&attempt, claim.as_ref()).await {
            Ok(Recorded::Stored) => {}
            Ok(Recorded::KeyTaken(holder)) => {
                return Concluded::answered(
                    self.replay(call, attempt, holder, &request.disk_id).await,
                );
            }
            Err(source) => {
                let error = CallError::AuditUnavailable {
                    disk_id: request.disk_id.clone(),
                    source,
                };
                error.alert_operator();
                return Concluded::answered(Err(error.status(call, Audited::No)));
            }
        }
        let started = Instant::now();
        let result = self
            .zenlayer
            .release_disk(caller, &request.disk_id, call.deadline)
            .await;
        let concluded = conclude(call, request.disk_id.clone(), result, claim.is_some());
        if let Some(outcome) = &concluded.outcome {
            let answer = &outcome.answer;
            let code = answer.zenlayer_code.as_deref().unwrap_or_default();
            self.metrics
                .upstream_finished(answer.kind.label(), code, started.elapsed());
        }
        concluded
    }

    /// Answers a call whose key another call holds, and records it (with
    /// its outcome, atomically) as a replay of that call.
    async fn replay(
        &self,
        call: &CallContext,
        mut attempt: Attempt,
        holder: PriorCall,
        disk_id: &DiskId,
    ) -> Reply {
        attempt.replay_of = Some(holder.call_id).filter(|id| !id.is_nil());
        if holder.disk_id != disk_id.as_str() {
            return Err(refuse(
                &self.audit,
                &self.tasks,
                call,
                attempt,
                CallError::KeyReused {
                    key_disk: holder.disk_id,
                },
            )
            .await);
        }
        let (reply, answer) = match holder.answer.filter(replayable) {
            Some(answer) if answer.kind == OutcomeKind::Succeeded => {
                let response = ReleaseDiskResponse {
                    request_id: answer.zenlayer_request_id.clone().unwrap_or_default(),
                    audit_id: call.call_id.to_string(),
                    replayed: true,
                };
                (Ok(response), answer)
            }
            Some(answer) => {
                let status = CallError::Replayed {
                    answer: answer.clone(),
                    original: holder.call_id,
                }
                .status(call, Audited::Yes);
                (Err(status), answer)
            }
            None => {
                let status = CallError::KeyInFlight.status(call, Audited::Yes);
                let answer = failed_answer(&status);
                (Err(status), answer)
            }
        };
        let outcome = Outcome {
            call_id: call.call_id,
            completed_at: chrono::Utc::now(),
            answer,
            frees_key: false,
        };
        if let Err(error) = self.audit.record_concluded(&attempt, &outcome).await {
            tracing::error!(error = %error, attempt = ?attempt, outcome = ?outcome, "a replayed call could not be recorded in the audit trail; this log line is its record");
        }
        reply
    }

    async fn record_outcome(&self, outcome: &Outcome) {
        if let Err(error) = self.audit.record_outcome(outcome).await {
            tracing::error!(call_id = %outcome.call_id, error = %error, "the outcome could not be recorded; the recovery sweep will mark this call unknown");
        }
    }
}
