//! The path of one release, as steps over values: authenticate, validate,
//! decide (a freeze included); then either record the refusal, or look at
//! the disk (`DescribeDisks`, a read), ask the policies about it (a refusal
//! by policy is recorded like any other), record the attempt with what was
//! seen and decided (claiming its idempotency key, within the release
//! budgets) and call Zenlayer's `ReleaseDisk`; then answer and record the
//! outcome. Nothing is released before the attempt is durably recorded.
//! The whole path runs in a task of its own, so a caller who cancels, or
//! whose deadline expires, cannot cut it short: every call the gateway
//! received leaves its record, and a recorded attempt always gets its
//! outcome. The caller's deadline still bounds the upstream call. Shutdown
//! waits for these tasks (within the grace period).
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
use crate::freeze::{FreezeState, FreezeWatch};
use crate::metrics::Metrics;
use crate::policy::{CallerFacts, Judgement, Policies, ReleaseFacts, Verdict};
use crate::zenlayer::{DiskSnapshot, ZenlayerClient};
use std::net::SocketAddr;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// Everything a release needs, shared by every call.
#[derive(Debug, Clone)]
pub struct ReleasePath {
    authenticator: Authenticator,
    audit: AuditLog,
    zenlayer: ZenlayerClient,
    policies: Policies,
    freeze: FreezeWatch,
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
        policies: Policies,
        freeze: FreezeWatch,
        metrics: Metrics,
    ) -> Self {
        Self {
            authenticator,
            audit,
            zenlayer,
            policies,
            freeze,
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
        let mut attempt =
            attempt::received(&call, &authentication, &received, parsed.as_ref().ok());
        // Every call records the set in force; one the policies decide,
        // the set that decided it.
        attempt.policy_set_hash = Some(self.policies.set_hash().to_string());
        let principal = authentication.principal.as_ref().map(|p| p.subject.clone());
        let freeze = self.freeze.current();
        let concluded = match decide(received.bytes, parsed, authentication.result, &freeze) {
            Ok(Decided {
                request,
                caller,
                frozen: None,
            }) => {
                self.forward(&call, attempt, &caller, &request, received.peer)
                    .await
            }
            Ok(Decided {
                request,
                caller,
                frozen: Some(refusal),
            }) => {
                self.frozen(&call, attempt, &caller, &request, &refusal)
                    .await
            }
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
        crate::telemetry::record_grpc_status(outcome.code as i32);
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
        match self.audit.record_attempt(&attempt, None).await {
            Ok(Recorded::Stored { log_index }) => outcome.log_index = log_index,
            Ok(Recorded::KeyTaken(_) | Recorded::OverBudget { .. }) => {}
            Err(error) => {
                tracing::error!(error = %error, attempt = ?attempt, "a refused call could not be recorded in the audit trail; this log line is its record");
                outcome.audited = Audited::No;
            }
        }
        outcome
    }

    /// Looks at the disk; asks the policies (before telling anything the
    /// look found, so that a caller the policies refuse learns nothing
    /// about the disk); records the attempt (with what it saw), claiming
    /// the key; then calls Zenlayer. A key another call holds is found by
    /// the claim, in the attempt's own write, so the usual call makes no
    /// extra trip to the database for it; only a call the look would stop
    /// asks first who holds its key (see `held`).
    async fn forward(
        &self,
        call: &CallContext,
        mut attempt: Attempt,
        caller: &Authorized,
        request: &ReleaseRequest,
        peer: Option<SocketAddr>,
    ) -> Concluded {
        let claim = claim_of(caller, request);
        let described = if self.zenlayer.preflight() {
            match self.look(call, &mut attempt, request).await {
                Ok(request_id) => Some(request_id),
                Err(outcome) => {
                    let attempt = match self.held(call, attempt, claim.as_ref(), request).await {
                        Ok(answered) => return answered,
                        Err(attempt) => attempt,
                    };
                    return Concluded::answered(
                        self.conclude("preflight", call, attempt, outcome).await,
                    );
                }
            }
        } else {
            None
        };
        let stopped = described
            .and_then(|request_id| preflight_refusal(request, attempt.disk.as_ref(), &request_id));
        if stopped.is_some() {
            attempt = match self.held(call, attempt, claim.as_ref(), request).await {
                Ok(answered) => return answered,
                Err(attempt) => attempt,
            };
        }
        if let Err(refusal) = self.judge(&mut attempt, caller, request, peer) {
            return Concluded::answered(self.refuse(attempt, &refusal).await);
        }
        if let Some(outcome) = stopped {
            return Concluded::answered(self.conclude("preflight", call, attempt, outcome).await);
        }
        // The look can take seconds; a freeze recorded meanwhile stops the
        // release before anything is sent.
        if let Some(refusal) = freeze_refusal(&self.freeze.current()) {
            return self.frozen(call, attempt, caller, request, &refusal).await;
        }
        let log_index = match self.audit.record_attempt(&attempt, claim.as_ref()).await {
            Ok(Recorded::Stored { log_index }) => log_index,
            Ok(Recorded::KeyTaken(holder)) => {
                return Concluded::answered(self.replay(call, attempt, holder, request).await);
            }
            Ok(Recorded::OverBudget { over, log_index }) => {
                let refusal = Refusal::OverBudget(over);
                alerts::refusal(&refusal);
                let mut outcome = explain::refused(&refusal);
                outcome.log_index = log_index;
                return Concluded::answered(outcome);
            }
            Err(error) => {
                alerts::audit_unavailable(&error);
                tracing::error!(attempt = ?attempt, "a call refused because its attempt could not be recorded; this log line is its record");
                return Concluded::answered(explain::audit_unavailable(&request.disk_id));
            }
        };
        let started = Instant::now();
        let result = self
            .zenlayer
            .release_disk(
                caller,
                &request.disk_id,
                call.deadline,
                Some(&call.trace_id),
            )
            .await;
        let mut outcome = match result {
            Ok(accepted) => explain::accepted(accepted),
            Err(error) => {
                alerts::upstream(&error);
                explain::upstream_failed(&request.disk_id, &error)
            }
        };
        outcome.log_index = log_index;
        outcome.count_upstream(&self.metrics, started.elapsed());
        let record = outcome.record(call, claim.is_some());
        Concluded {
            outcome,
            record: Some(record),
        }
    }

    /// For a keyed call the look stopped: the answer of the call already
    /// holding its key, if any, since a retry after a success must get the
    /// same answer, not NOT_FOUND for the disk its first call released (and
    /// a key's earlier answer comes before the policies). Gives the attempt
    /// back when there is no holder.
    async fn held(
        &self,
        call: &CallContext,
        attempt: Attempt,
        claim: Option<&Claim>,
        request: &ReleaseRequest,
    ) -> Result<Concluded, Attempt> {
        let Some(claim) = claim else {
            return Err(attempt);
        };
        match self.audit.key_holder(claim).await {
            Ok(None) => Err(attempt),
            Ok(Some(holder)) => Ok(Concluded::answered(
                self.replay(call, attempt, holder, request).await,
            )),
            Err(error) => {
                alerts::audit_unavailable(&error);
                tracing::error!(attempt = ?attempt, "a call refused because who holds its key could not be read; this log line is its record");
                Ok(Concluded::answered(explain::audit_unavailable(
                    &request.disk_id,
                )))
            }
        }
    }

    /// A call a freeze refuses. A freeze stops releases, not the answer to
    /// one made before it: a keyed retry of a call made is answered from
    /// that call (its success, or that it is in flight). Only for a freeze
    /// known to be in force: with the state unknown the database is likely
    /// unreachable too, and the caller is better told to retry.
    async fn frozen(
        &self,
        call: &CallContext,
        mut attempt: Attempt,
        caller: &Authorized,
        request: &ReleaseRequest,
        refusal: &Refusal,
    ) -> Concluded {
        if matches!(refusal, Refusal::Frozen(_)) {
            let claim = claim_of(caller, request);
            attempt = match self.held(call, attempt, claim.as_ref(), request).await {
                Ok(answered) => return answered,
                Err(attempt) => attempt,
            };
        }
        Concluded::answered(self.refuse(attempt, refusal).await)
    }

    /// Looks at the disk before releasing it: keeps what Zenlayer listed in
    /// the attempt and returns the describe's request id; refuses (with
    /// nothing released) when the disk could not be looked at.
    async fn look(
        &self,
        call: &CallContext,
        attempt: &mut Attempt,
        request: &ReleaseRequest,
    ) -> Result<String, Outcome> {
        let looked = self
            .zenlayer
            .describe_disk(
                &request.disk_id,
                call.deadline.first_half(),
                Some(&call.trace_id),
            )
            .await;
        let described = looked.map_err(|error| {
            alerts::upstream(&error);
            explain::preflight_unavailable(&request.disk_id, &error)
        })?;
        attempt.disk = described.disk;
        Ok(described.request_id)
    }

    /// Asks the enforced policies (and the shadow ones) about the release,
    /// with the disk as the pre-flight saw it, and keeps what they decided
    /// in the attempt. A denial or an evaluation error refuses the call.
    fn judge(
        &self,
        attempt: &mut Attempt,
        caller: &Authorized,
        request: &ReleaseRequest,
        peer: Option<SocketAddr>,
    ) -> Result<(), Refusal> {
        let facts = ReleaseFacts {
            caller: CallerFacts {
                principal: caller.principal(),
                peer_identity: attempt.peer_identity.as_deref(),
                ip: peer.map(|p| p.ip()),
                at: attempt.received_at,
            },
            disk_id: request.disk_id.as_str(),
            disk: attempt.disk.as_ref(),
            reason: request.reason.as_str(),
            has_idempotency_key: request.idempotency_key.is_some(),
        };
        let judgement = self.policies.decide_release(&facts);
        self.render_judgement(attempt, &judgement);
        match judgement.enforced {
            Verdict::Permit { .. } => Ok(()),
            Verdict::Deny { policy_ids } => Err(Refusal::PolicyDenied { policy_ids }),
            Verdict::Error { policy_ids, .. } => Err(Refusal::PolicyError { policy_ids }),
        }
    }

    /// The judgement as the audit trail, the metrics and the error log see it.
    fn render_judgement(&self, attempt: &mut Attempt, judgement: &Judgement) {
        alerts::policy_failed("enforced", &judgement.enforced);
        attempt.policy_set_hash = Some(judgement.set_hash.to_string());
        attempt.policy = Some(policy_record(&judgement.enforced, &judgement.set_hash));
        if let Some((shadow, hash)) = &judgement.shadow {
            alerts::policy_failed("shadow", shadow);
            attempt.shadow_policy = Some(policy_record(shadow, hash));
            if judgement.shadow_disagrees() {
                self.metrics
                    .shadow_disagreed(judgement.enforced.label(), shadow.label());
            }
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
        match self.audit.record_concluded(kind, &attempt, &record).await {
            Ok(log_index) => outcome.log_index = log_index,
            Err(error) => {
                tracing::error!(error = %error, attempt = ?attempt, outcome = ?record, "a call could not be recorded in the audit trail; this log line is its record");
                outcome.audited = Audited::No;
            }
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

/// The key a call claims, if it sent one: scoped to its caller.
fn claim_of(caller: &Authorized, request: &ReleaseRequest) -> Option<Claim> {
    request.idempotency_key.as_ref().map(|key| Claim {
        issuer: caller.principal().issuer.clone(),
        principal: caller.principal().subject.clone(),
        key: key.as_str().to_owned(),
        disk_id: request.disk_id.as_str().to_owned(),
    })
}

/// A call that may go on: a valid request from a caller who may release,
/// and the refusal of a freeze in force, which a keyed retry of a call
/// already made is answered before (from that call).
struct Decided {
    request: ReleaseRequest,
    caller: Authorized,
    frozen: Option<Refusal>,
}

/// The decision, made once: an oversized or invalid request is refused
/// before the caller is judged (so callers learn of their own mistakes
/// first), then the caller's token and role, then a freeze (which only a
/// caller who may release hears of).
fn decide(
    bytes: usize,
    parsed: Result<ReleaseRequest, Vec<crate::domain::FieldViolation>>,
    authorized: Result<Authorized, AuthError>,
    freeze: &FreezeState,
) -> Result<Decided, Refusal> {
    if bytes > MAX_REQUEST_BYTES {
        return Err(Refusal::TooLarge {
            bytes,
            limit: MAX_REQUEST_BYTES,
        });
    }
    let request = parsed.map_err(Refusal::Invalid)?;
    let caller = authorized.map_err(Refusal::Denied)?;
    Ok(Decided {
        request,
        caller,
        frozen: freeze_refusal(freeze),
    })
}

/// The refusal a freeze state makes, if any: asked when a call is decided
/// and again just before its attempt is written, so that a freeze recorded
/// while the call was looking at the disk still stops it.
fn freeze_refusal(freeze: &FreezeState) -> Option<Refusal> {
    match freeze {
        FreezeState::Open => None,
        FreezeState::Frozen(freeze) => Some(Refusal::Frozen(freeze.clone())),
        FreezeState::Unknown => Some(Refusal::FreezeUnknown),
    }
}

/// What the pre-flight saw, judged: the refusal of a disk that is not
/// listed or cannot be released (nothing released), if it is one. Zenlayer's
/// answer to the release still decides: the disk can change meanwhile.
fn preflight_refusal(
    request: &ReleaseRequest,
    disk: Option<&DiskSnapshot>,
    describe_request_id: &str,
) -> Option<Outcome> {
    match disk {
        Some(disk) if releasable(disk) => None,
        disk => Some(explain::preflight_refused(
            &request.disk_id,
            disk,
            describe_request_id,
        )),
    }
}

fn policy_record(verdict: &Verdict, set_hash: &str) -> crate::audit::PolicyRecord {
    crate::audit::PolicyRecord {
        decision: verdict.label(),
        policy_ids: verdict.policy_ids().to_vec(),
        set_hash: set_hash.to_owned(),
    }
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
