//! One audit event as the exporter reads it: its place in the log and the
//! row it names, with the call's attempt beside every outcome and
//! confirmation, so that each exported line stands on its own.

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// An event of `audit.events` with the rows it names.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    /// `audit.events.log_index`: the event's place in commit order, and the
    /// cursor `--after` resumes from.
    pub log_index: i64,
    /// When the event's row was recorded.
    pub recorded_at: DateTime<Utc>,
    /// The call's first record (for an attempt event, the event's own row).
    pub attempt: AttemptRow,
    pub stage: Stage,
}

/// Which of the three append-only tables the event's row is in.
#[derive(Debug, Clone)]
pub enum Stage {
    Attempt,
    Outcome(OutcomeRow),
    Confirmation(ConfirmationRow),
}

impl Stage {
    /// `audit.events.kind`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Attempt => "attempt",
            Self::Outcome(_) => "outcome",
            Self::Confirmation(_) => "confirmation",
        }
    }

    /// `audit.events.row_id`: the outcome or confirmation id.
    pub fn row_id(&self) -> Option<i64> {
        match self {
            Self::Attempt => None,
            Self::Outcome(outcome) => Some(outcome.outcome_id),
            Self::Confirmation(confirmation) => Some(confirmation.confirmation_id),
        }
    }
}

/// A row of `audit.release_attempts`.
#[derive(Debug, Clone)]
pub struct AttemptRow {
    pub call_id: Uuid,
    pub received_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    pub principal: Option<String>,
    pub issuer: Option<String>,
    pub client_id: Option<String>,
    pub token_jti: Option<String>,
    pub token_fingerprint: Option<String>,
    pub roles: Vec<String>,
    pub peer_addr: Option<String>,
    pub peer_identity: Option<String>,
    pub user_agent: Option<String>,
    pub x_request_id: String,
    pub trace_id: String,
    pub disk_id: String,
    pub reason: String,
    pub idempotency_key: Option<String>,
    pub replay_of: Option<Uuid>,
    pub decision: String,
    pub decision_reason: Option<String>,
    pub refusal_grpc_code: Option<String>,
    pub refusal_message: Option<String>,
    pub disk_name: Option<String>,
    pub zone_id: Option<String>,
    pub disk_size_gib: Option<i64>,
    pub disk_type: Option<String>,
    pub disk_status_before: Option<String>,
    pub disk_tags: Option<serde_json::Value>,
    pub disk_snapshot: Option<serde_json::Value>,
    pub policy_set_hash: Option<String>,
    pub policy_decision: Option<String>,
    pub policy_ids: Option<Vec<String>>,
    pub shadow_policy_set_hash: Option<String>,
    pub shadow_policy_decision: Option<String>,
    pub shadow_policy_ids: Option<Vec<String>>,
}

/// A row of `audit.release_outcomes`.
#[derive(Debug, Clone)]
pub struct OutcomeRow {
    pub outcome_id: i64,
    pub completed_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    pub outcome: String,
    pub grpc_code: String,
    pub error_reason: Option<String>,
    pub zenlayer_code: Option<String>,
    pub zenlayer_request_id: Option<String>,
    pub http_status: Option<i32>,
    pub error_message: Option<String>,
    pub zenlayer_action: Option<String>,
    pub recorded_by: String,
}

/// A row of `audit.release_confirmations`.
#[derive(Debug, Clone)]
pub struct ConfirmationRow {
    pub confirmation_id: i64,
    pub recorded_at: DateTime<Utc>,
    pub confirmation: String,
    pub checked_at: DateTime<Utc>,
    pub zenlayer_request_id: Option<String>,
    pub disk_status: Option<String>,
    pub recorded_by: String,
}

/// A freeze or unfreeze of releases (`audit.release_freezes`): an event of
/// the log that belongs to no call.
#[derive(Debug, Clone)]
pub struct FreezeEvent {
    pub log_index: i64,
    pub recorded_at: DateTime<Utc>,
    pub freeze_id: i64,
    /// `freeze` or `unfreeze`.
    pub action: String,
    pub reason: String,
    /// The database login that ran the command.
    pub operator: String,
}

/// One exported entry of the log.
#[derive(Debug, Clone)]
pub enum Exported {
    Call(Box<AuditEvent>),
    Freeze(FreezeEvent),
}

impl Exported {
    /// The entry's place in the log: its cursor.
    pub fn log_index(&self) -> i64 {
        match self {
            Self::Call(event) => event.log_index,
            Self::Freeze(freeze) => freeze.log_index,
        }
    }
}
