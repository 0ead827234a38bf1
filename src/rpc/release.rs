//! The path of one release, as steps over values: authenticate, validate,
//! decide; then either record the refusal, or look at the disk
//! (`DescribeDisks`, a read), record the attempt with what was seen
//! (claiming its idempotency key) and call Zenlayer's `ReleaseDisk`; then
//! answer and record the outcome. Nothing is released before the attempt is
//! durably recorded. The whole path runs in a task of its own, so a caller who
//! cancels, or whose deadline expires, cannot cut it short: every call the
//! gateway received leaves its record, and a recorded attempt always gets
//! its outcome. The caller's deadline still bounds the upstream call.
//! Shutdown waits for these tasks (within the grace period).
//!
//! A key another call holds is answered from that call: its result if it
//! ended with Zenlayer's answer (or with no answer: the outcome stays
//! unknown, and nothing is resent), ABORTED while it is in flight, and
//! FAILED_PRECONDITION if it was for another disk.

use super::outcome::{Audited, Outcome};
use super::received::Received;
use super::render::Reply;
use super::{CallContext, alerts, attempt, explain};
use crate::audit::{Answer, Attempt, AuditLog, Claim, OutcomeKind, PriorCall, Recorded};
use crate::auth::{AuthError, Authenticator, Authorized};
use crate::decision::Refusal;
use crate::domain::ReleaseRequest;
use crate::metrics::Metrics;
use crate::zenlayer::{DiskSnapshot, ZenlayerClient};
use tokio::sync::oneshot;
use tokio::time::Instant;

/// Everything a release needs, shared by every call.
#[derive(Debug, Clone)]
pub struct ReleasePath {
    authenticator: Authenticator,
    audit: AuditLog,
    zenlayer: ZenlayerClient,
    metrics: Metrics,
}

/// How a call ended, and the outcome record still to write for a call
/// that was forwarded.
struct Concluded {
    outcome: Outcome,
    record: Option<crate::audit::OutcomeRecord>,
}

/// Who and what the call's log line names.
struct Reported<'a> {
    principal: Option<&'a str>,
    disk_id: &'a str,
}

impl Concluded {
    fn answered(outcome: Outcome) -> Self {
        Self {
            outcome,
            record: None,
        }
    }
}

impl ReleasePath {
    pub fn new(
        authenticator: Authenticator,
        audit: AuditLog,
        zenlayer: ZenlayerClient,
        metrics: Metrics,
    ) -> Self {
        Self {
            authenticator,
            audit,
            zenlayer,
            metrics,
        }
    }

    /// Runs the call to its end, whatever happens to the caller: answers
    /// through `answer` as soon as it can, then finishes recording.
    pub async fn run(self, call: CallContext, received: Received, answer: oneshot::Sender<Reply>) {
        let _in_flight = self.metrics.call_started();
        let authentication = self.authenticator.check(&received.headers).await;
        let raw = &received.message;
        let parsed = received.parse();
        let attempt = attempt::received(&call, &authentication, &received, parsed.as_ref().ok());
        let principal = authentication.principal.as_ref().map(|p| p.subject.clone());
        let concluded = match decide(received.bytes, parsed, authentication.result) {
            Ok((request, caller)) => self.forward(&call, attempt, &caller, &request).await,
            Err(refusal) => Concluded::answered(self.refuse(attempt, &refusal).await),
        };
        let reported = Reported {
            principal: principal.as_deref(),
            disk_id: &raw.disk_id,
        };
        self.answer(&call, concluded, reported, answer).await;
    }

    /// Records the outcome (briefly, before the caller hears, so that a
    /// retry with the same key finds it; a slow database must not delay or
    /// spoil an answer Zenlayer already gave, so the write then carries on in
    /// the background), renders the call's metrics and log line, answers.
    async fn answer(
        &self,
        call: &CallContext,
        concluded: Concluded,
        reported: Reported<'_>,
        answer: oneshot::Sender<Reply>,
    ) {
        let Concluded { outcome, record } = concluded;
        let recorded = match &record {
            Some(record) => {
                let wait = call.deadline.outcome_wait();
                let first = tokio::time::timeout(wait, self.audit.record_outcome_once(record));
                matches!(first.await, Ok(Ok(())))
            }
            None => true,
        };
        let elapsed = call.received_at.elapsed();
        outcome.count(&self.metrics, elapsed);
        tracing::Span::current().record("rpc.grpc.status_code", outcome.code as i32);
        outcome.log(reported.principal, reported.disk_id, elapsed);
        let _ = answer.send(outcome.reply(call));
        if let Some(record) = record.filter(|_| !recorded)
            && let Err(error) = self.audit.record_outcome(&record).await
        {
            tracing::error!(call_id = %record.call_id, error = %error, "the outcome could not be recorded; the recovery sweep will mark this call unknown");
        }
    }

    /// Records a refused call, whose whole record its attempt row is. A
    /// refusal stands even when it cannot be recorded; the log then holds it.
    async fn refuse(&self, mut attempt: Attempt, refusal: &Refusal) -> Outcome {
        alerts::refusal(refusal);
        let mut outcome = explain::refused(refusal);
        attempt.refusal = outcome.refusal_record();
        if let Err(error) = self.audit.record_attempt(&attempt, None).await {
            tracing::error!(error = %error, attempt = ?attempt, "a refused call could not be recorded in the audit trail; this log line is its record");
            outcome.audited = Audited::No;
        }
        outcome
    }

    /// Answers from the call already holding the key, if any; looks at the
    /// disk; records the attempt (with what it saw), claiming the key; then
    /// calls Zenlayer.
    async fn forward(
        &self,
        call: &CallContext,
        mut attempt: Attempt,
        caller: &Authorized,
        request: &ReleaseRequest,
    ) -> Concluded {
        let claim = request.idempotency_key.as_ref().map(|key| Claim {
            issuer: caller.principal().issuer.clone(),
            principal: caller.principal().subject.clone(),
            key: key.as_str().to_owned(),
            disk_id: request.disk_id.as_str().to_owned(),
        });
        // Before the pre-flight: a retry after a success must get the same
        // answer, not NOT_FOUND for the disk its first call released.
        if let Some(claim) = &claim {
            match self.audit.key_holder(claim).await {
                Ok(None) => {}
                Ok(Some(holder)) => {
                    return Concluded::answered(self.replay(call, attempt, holder, request).await);
                }
                Err(error) => {
                    alerts::audit_unavailable(&error);
                    return Concluded::answered(explain::audit_unavailable(&request.disk_id));
                }
            }
        }
        if self.zenlayer.preflight() {
            match self.preflight(call, &mut attempt, request).await {
                Ok(()) => {}
                Err(outcome) => {
                    return Concluded::answered(
                        self.conclude("preflight", call, attempt, outcome).await,
                    );
                }
            }
        }
        match self.audit.record_attempt(&attempt, claim.as_ref()).await {
            Ok(Recorded::Stored) => {}
            Ok(Recorded::KeyTaken(holder)) => {
                return Concluded::answered(self.replay(call, attempt, holder, request).await);
            }
            Err(error) => {
                alerts::audit_unavailable(&error);
                return Concluded::answered(explain::audit_unavailable(&request.disk_id));
            }
        }
        let started = Instant::now();
        let result = self
            .zenlayer
            .release_disk(caller, &request.disk_id, call.deadline)
            .await;
        let outcome = match result {
            Ok(accepted) => explain::accepted(accepted),
            Err(error) => {
                alerts::upstream(&error);
                explain::upstream_failed(&request.disk_id, &error)
            }
        };
        outcome.count_upstream(&self.metrics, started.elapsed());
        let record = outcome.record(call, claim.is_some());
        Concluded {
            outcome,
            record: Some(record),
        }
    }

    /// Looks at the disk before releasing it: keeps what Zenlayer listed in
    /// the attempt, and refuses (with nothing released) a disk that is not
    /// listed, cannot be released, or could not be looked at. Zenlayer's
    /// answer to the release still decides: the disk can change meanwhile.
    async fn preflight(
        &self,
        call: &CallContext,
        attempt: &mut Attempt,
        request: &ReleaseRequest,
    ) -> Result<(), Outcome> {
        let looked = self
            .zenlayer
            .describe_disk(&request.disk_id, call.deadline.first_half())
            .await;
        let described = looked.map_err(|error| {
            alerts::upstream(&error);
            explain::preflight_unavailable(&request.disk_id, &error)
        })?;
        attempt.disk = described.disk;
        match &attempt.disk {
            Some(disk) if releasable(disk) => Ok(()),
            disk => Err(explain::preflight_refused(
                &request.disk_id,
                disk.as_ref(),
                &described.request_id,
            )),
        }
    }

    /// Records a call that ended before its release was sent, with its
    /// outcome, in one transaction; `kind` names the write in the metrics.
    async fn conclude(
        &self,
        kind: &'static str,
        call: &CallContext,
        attempt: Attempt,
        mut outcome: Outcome,
    ) -> Outcome {
        let record = outcome.record(call, false);
        if let Err(error) = self.audit.record_concluded(kind, &attempt, &record).await {
            tracing::error!(error = %error, attempt = ?attempt, outcome = ?record, "a call could not be recorded in the audit trail; this log line is its record");
            outcome.audited = Audited::No;
        }
        outcome
    }

    /// Answers a call whose key another call holds, and records it (with
    /// its outcome, atomically) as a replay of that call.
    async fn replay(
        &self,
        call: &CallContext,
        mut attempt: Attempt,
        holder: PriorCall,
        request: &ReleaseRequest,
    ) -> Outcome {
        attempt.replay_of = Some(holder.call_id).filter(|id| !id.is_nil());
        if holder.disk_id != request.disk_id.as_str() {
            let refusal = Refusal::KeyReused {
                key_disk: holder.disk_id,
            };
            return self.refuse(attempt, &refusal).await;
        }
        let outcome = match holder.answer.filter(replayable) {
            Some(answer) => explain::replayed(&answer, holder.call_id),
            None => explain::key_in_flight(),
        };
        self.conclude("replay", call, attempt, outcome).await
    }
}

/// The largest request message accepted. A valid one is a few hundred
/// bytes; the transport lets through somewhat larger ones (see `startup`),
/// so that they are refused here, with their record, rather than unseen.
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;

/// The decision, made once: an oversized or invalid request is refused
/// before the caller is judged (so callers learn of their own mistakes
/// first), then the caller's token and role.
fn decide(
    bytes: usize,
    parsed: Result<ReleaseRequest, Vec<crate::domain::FieldViolation>>,
    authorized: Result<Authorized, AuthError>,
) -> Result<(ReleaseRequest, Authorized), Refusal> {
    if bytes > MAX_REQUEST_BYTES {
        return Err(Refusal::TooLarge {
            bytes,
            limit: MAX_REQUEST_BYTES,
        });
    }
    let request = parsed.map_err(Refusal::Invalid)?;
    let caller = authorized.map_err(Refusal::Denied)?;
    Ok((request, caller))
}

/// Only a data disk in the recycle bin can be released.
fn releasable(disk: &DiskSnapshot) -> bool {
    !disk.is_system() && disk.disk_status.as_deref() == Some("RECYCLED")
}

/// A held key's answer is repeated only if the call ended in a way a retry
/// could not improve on: success, Zenlayer's own refusal, or no answer (the
/// disk may be gone; resending blindly is what keys exist to prevent).
fn replayable(answer: &Answer) -> bool {
    match answer.kind {
        OutcomeKind::Succeeded | OutcomeKind::Unknown => true,
        OutcomeKind::Failed => answer.zenlayer_code.is_some() || answer.http_status.is_some(),
    }
}
