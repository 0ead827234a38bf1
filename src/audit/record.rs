//! What the audit trail records, as values. Building a record never fails
//! and never holds a secret: the token is reduced to its fingerprint before
//! it gets here.

use crate::decision::Decision;
use crate::zenlayer::DiskSnapshot;
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// Caller-supplied text is stored as given, but PostgreSQL text cannot hold
/// NUL, and a megabyte of junk in a disk id field is not evidence: NUL
/// becomes U+FFFD and text is cut at `max_chars`. (A valid request cannot
/// carry either into the trail: reasons with NUL are refused; what reaches
/// here changed is the raw text of a refused request, or a token's claims.)
pub(super) fn storable(text: &str, max_chars: usize) -> String {
    text.chars()
        .take(max_chars)
        .map(|c| if c == '\0' { '\u{FFFD}' } else { c })
        .collect()
}

/// Who called, as far as the token told.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller {
    pub principal: Option<String>,
    pub issuer: Option<String>,
    pub client_id: Option<String>,
    pub token_jti: Option<String>,
    pub token_fingerprint: Option<String>,
    pub roles: Vec<String>,
}

/// A refusal as the audit trail records it, complete when written: the
/// decision, its stable reason, and the status the caller got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusalRecord {
    /// `Denied` or `Invalid`, never `Allowed`.
    pub decision: Decision,
    /// Stable code, e.g. `TOKEN_EXPIRED`, `ROLE_MISSING`, `INVALID_DISK_ID`.
    pub reason: String,
    /// The gRPC code the caller got, e.g. `UNAUTHENTICATED`.
    pub grpc_code: &'static str,
    pub message: String,
}

/// A call as received and decided: the first record of every call.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub call_id: Uuid,
    pub received_at: DateTime<Utc>,
    pub caller: Caller,
    pub peer_addr: Option<String>,
    /// The subject of the caller's TLS client certificate (RFC 4514), when
    /// the listener requires one.
    pub peer_identity: Option<String>,
    pub user_agent: Option<String>,
    pub x_request_id: String,
    pub trace_id: String,
    pub disk_id: String,
    pub reason: String,
    pub idempotency_key: Option<String>,
    /// Set for a refused call, whose whole record this is; `None` for an
    /// allowed one.
    pub refusal: Option<RefusalRecord>,
    /// The earlier call whose answer this one repeated (same idempotency key).
    pub replay_of: Option<Uuid>,
    /// The disk as the pre-flight `DescribeDisks` listed it, when it did.
    pub disk: Option<DiskSnapshot>,
    /// Hex SHA-256 of the policy set in force when the call was decided.
    pub policy_set_hash: Option<String>,
    /// What the enforced policies decided; `None` for a call refused or
    /// answered before they were asked.
    pub policy: Option<PolicyRecord>,
    /// What the shadow policies would have decided, when there are some.
    pub shadow_policy: Option<PolicyRecord>,
}

/// One policy set's decision on a call, as the audit trail records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRecord {
    /// `permit`, `deny` or `error`.
    pub decision: &'static str,
    /// The policies that decided (for `error`, those that failed).
    pub policy_ids: Vec<String>,
    /// Hex SHA-256 of the set that decided.
    pub set_hash: String,
}

/// How an allowed call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutcomeKind {
    Succeeded,
    Failed,
    /// Sent to Zenlayer, with no answer: the disk may or may not be gone.
    Unknown,
}

/// The second record of an allowed call.
#[derive(Debug, Clone)]
pub struct OutcomeRecord {
    pub call_id: Uuid,
    pub completed_at: DateTime<Utc>,
    pub answer: Answer,
    /// Zenlayer certainly did not act (nothing sent, or refused before it
    /// ran): the call's idempotency key is freed so a retry can try again.
    pub frees_key: bool,
}

/// What a call ended with: enough to tell the caller the same thing again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub kind: OutcomeKind,
    pub grpc_code: String,
    /// The `ErrorInfo.reason` the caller got, when the call failed.
    pub error_reason: Option<String>,
    pub error_message: Option<String>,
    pub zenlayer_code: Option<String>,
    pub zenlayer_request_id: Option<String>,
    pub http_status: Option<u16>,
    /// The Zenlayer action the request id and HTTP status belong to.
    pub zenlayer_action: Option<String>,
}

/// A caller's claim on an idempotency key, for one disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub issuer: String,
    pub principal: String,
    pub key: String,
    pub disk_id: String,
}

/// The call that holds a key already, and how it ended if it has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriorCall {
    pub call_id: Uuid,
    pub disk_id: String,
    pub answer: Option<Answer>,
}

/// What recording an attempt with a claim found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// Stored (and the key, if any, claimed for this call), as the audit
    /// log's entry `log_index` (an attempt's receipt; `None` for an
    /// outcome, which no caller is given a receipt for).
    Stored { log_index: Option<u64> },
    /// Nothing stored: another call holds the key.
    KeyTaken(PriorCall),
    /// Stored as a refusal: the release would exceed a budget.
    OverBudget {
        over: crate::budget::OverBudget,
        log_index: Option<u64>,
    },
}

impl Attempt {
    pub fn decision(&self) -> Decision {
        self.refusal
            .as_ref()
            .map_or(Decision::Allowed, |r| r.decision)
    }
}

impl OutcomeKind {
    /// The name the audit trail and the metrics use.
    pub fn label(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Unknown => "unknown",
        }
    }

    pub(super) fn from_label(label: &str) -> Option<Self> {
        match label {
            "succeeded" => Some(Self::Succeeded),
            "failed" => Some(Self::Failed),
            "unknown" => Some(Self::Unknown),
            _ => None,
        }
    }
}
