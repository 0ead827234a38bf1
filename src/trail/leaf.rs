//! The leaf bytes of each audit event, computed from its row: the same
//! encoding the database's triggers use (README, "The event log"), written
//! again here from the specification so that each checks the other.
//!
//! A tag line `zenlayer-gateway/<kind>/v1\n`, then the log index and every
//! column in table order, each as a field: NULL is 0x00; a value is 0x01,
//! its length in bytes (4 bytes, big-endian), then its bytes. Text is
//! UTF-8; a uuid its 16 bytes; an instant microseconds since the Unix epoch
//! and a whole number, each as 8 bytes big-endian; jsonb the UTF-8 of its
//! PostgreSQL text form; a text[] its element count (4 bytes, big-endian),
//! then each element as a field.

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// Builds one leaf, field by field.
struct Leaf(Vec<u8>);

impl Leaf {
    fn new(kind: &str, log_index: i64) -> Self {
        let mut leaf = Self(format!("zenlayer-gateway/{kind}/v1\n").into_bytes());
        leaf.int(Some(log_index));
        leaf
    }

    fn field(&mut self, value: Option<&[u8]>) {
        match value {
            None => self.0.push(0x00),
            Some(bytes) => {
                self.0.push(0x01);
                let len = u32::try_from(bytes.len()).expect("a field fits in 4 GiB");
                self.0.extend_from_slice(&len.to_be_bytes());
                self.0.extend_from_slice(bytes);
            }
        }
    }

    fn text(&mut self, value: Option<&str>) {
        self.field(value.map(str::as_bytes));
    }

    fn uuid(&mut self, value: Option<Uuid>) {
        self.field(value.as_ref().map(|u| u.as_bytes().as_slice()));
    }

    fn time(&mut self, value: Option<DateTime<Utc>>) {
        self.int(value.map(|t| t.timestamp_micros()));
    }

    fn int(&mut self, value: Option<i64>) {
        self.field(value.map(i64::to_be_bytes).as_ref().map(|b| b.as_slice()));
    }

    /// A text[]; its elements may be NULL (the gateway never writes one,
    /// but a changed row may hold one, and must still hash, to a leaf that
    /// differs, rather than fail to read).
    fn texts(&mut self, value: Option<&[Option<String>]>) {
        let encoded = value.map(|items| {
            let mut inner = Leaf(Vec::new());
            let count = u32::try_from(items.len()).expect("a list fits in 4 G entries");
            inner.0.extend_from_slice(&count.to_be_bytes());
            for item in items {
                inner.text(item.as_deref());
            }
            inner.0
        });
        self.field(encoded.as_deref());
    }
}

/// An attempt row, as `audit.release_attempts` holds it (jsonb as text).
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
    pub roles: Vec<Option<String>>,
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
    pub disk_snapshot: Option<String>,
    pub disk_name: Option<String>,
    pub zone_id: Option<String>,
    pub disk_size_gib: Option<i64>,
    pub disk_type: Option<String>,
    pub disk_status_before: Option<String>,
    pub disk_tags: Option<String>,
    pub policy_set_hash: Option<String>,
    pub policy_decision: Option<String>,
    pub policy_ids: Option<Vec<Option<String>>>,
    pub shadow_policy_set_hash: Option<String>,
    pub shadow_policy_decision: Option<String>,
    pub shadow_policy_ids: Option<Vec<Option<String>>>,
}

/// An outcome row, as `audit.release_outcomes` holds it.
#[derive(Debug, Clone)]
pub struct OutcomeRow {
    pub outcome_id: i64,
    pub call_id: Uuid,
    pub completed_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    pub outcome: String,
    pub grpc_code: String,
    pub error_reason: Option<String>,
    pub zenlayer_code: Option<String>,
    pub zenlayer_request_id: Option<String>,
    pub http_status: Option<i32>,
    pub error_message: Option<String>,
    pub recorded_by: String,
    pub zenlayer_action: Option<String>,
}

/// A confirmation row, as `audit.release_confirmations` holds it.
#[derive(Debug, Clone)]
pub struct ConfirmationRow {
    pub confirmation_id: i64,
    pub call_id: Uuid,
    pub recorded_at: DateTime<Utc>,
    pub confirmation: String,
    pub checked_at: DateTime<Utc>,
    pub zenlayer_request_id: Option<String>,
    pub disk_status: Option<String>,
    pub recorded_by: String,
}

/// A freeze or unfreeze, as `audit.release_freezes` holds it.
#[derive(Debug, Clone)]
pub struct FreezeRow {
    pub freeze_id: i64,
    pub action: String,
    pub reason: String,
    pub operator: String,
    pub recorded_at: DateTime<Utc>,
}

impl FreezeRow {
    pub fn leaf(&self, log_index: i64) -> Vec<u8> {
        let mut l = Leaf::new("freeze", log_index);
        l.int(Some(self.freeze_id));
        l.text(Some(&self.action));
        l.text(Some(&self.reason));
        l.text(Some(&self.operator));
        l.time(Some(self.recorded_at));
        l.0
    }
}

impl AttemptRow {
    pub fn leaf(&self, log_index: i64) -> Vec<u8> {
        let mut l = Leaf::new("attempt", log_index);
        l.uuid(Some(self.call_id));
        l.time(Some(self.received_at));
        l.time(Some(self.recorded_at));
        l.text(self.principal.as_deref());
        l.text(self.issuer.as_deref());
        l.text(self.client_id.as_deref());
        l.text(self.token_jti.as_deref());
        l.text(self.token_fingerprint.as_deref());
        l.texts(Some(&self.roles));
        l.text(self.peer_addr.as_deref());
        l.text(self.peer_identity.as_deref());
        l.text(self.user_agent.as_deref());
        l.text(Some(&self.x_request_id));
        l.text(Some(&self.trace_id));
        l.text(Some(&self.disk_id));
        l.text(Some(&self.reason));
        l.text(self.idempotency_key.as_deref());
        l.uuid(self.replay_of);
        l.text(Some(&self.decision));
        l.text(self.decision_reason.as_deref());
        l.text(self.refusal_grpc_code.as_deref());
        l.text(self.refusal_message.as_deref());
        l.text(self.disk_snapshot.as_deref());
        l.text(self.disk_name.as_deref());
        l.text(self.zone_id.as_deref());
        l.int(self.disk_size_gib);
        l.text(self.disk_type.as_deref());
        l.text(self.disk_status_before.as_deref());
        l.text(self.disk_tags.as_deref());
        l.text(self.policy_set_hash.as_deref());
        l.text(self.policy_decision.as_deref());
        l.texts(self.policy_ids.as_deref());
        l.text(self.shadow_policy_set_hash.as_deref());
        l.text(self.shadow_policy_decision.as_deref());
        l.texts(self.shadow_policy_ids.as_deref());
        l.0
    }
}

impl OutcomeRow {
    pub fn leaf(&self, log_index: i64) -> Vec<u8> {
        let mut l = Leaf::new("outcome", log_index);
        l.int(Some(self.outcome_id));
        l.uuid(Some(self.call_id));
        l.time(Some(self.completed_at));
        l.time(Some(self.recorded_at));
        l.text(Some(&self.outcome));
        l.text(Some(&self.grpc_code));
        l.text(self.error_reason.as_deref());
        l.text(self.zenlayer_code.as_deref());
        l.text(self.zenlayer_request_id.as_deref());
        l.int(self.http_status.map(i64::from));
        l.text(self.error_message.as_deref());
        l.text(Some(&self.recorded_by));
        l.text(self.zenlayer_action.as_deref());
        l.0
    }
}

impl ConfirmationRow {
    pub fn leaf(&self, log_index: i64) -> Vec<u8> {
        let mut l = Leaf::new("confirmation", log_index);
        l.int(Some(self.confirmation_id));
        l.uuid(Some(self.call_id));
        l.time(Some(self.recorded_at));
        l.text(Some(&self.confirmation));
        l.time(Some(self.checked_at));
        l.text(self.zenlayer_request_id.as_deref());
        l.text(self.disk_status.as_deref());
        l.text(Some(&self.recorded_by));
        l.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_tagged_and_length_prefixed() {
        let mut l = Leaf(Vec::new());
        l.text(None);
        l.text(Some("é"));
        l.int(Some(-2));
        l.texts(Some(&[Some("a".to_owned()), None]));
        assert_eq!(
            l.0,
            [
                vec![0x00],
                vec![0x01, 0, 0, 0, 2, 0xc3, 0xa9],
                vec![
                    0x01, 0, 0, 0, 8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe
                ],
                vec![0x01, 0, 0, 0, 11, 0, 0, 0, 2, 0x01, 0, 0, 0, 1, b'a', 0x00],
            ]
            .concat()
        );
    }

    /// The row README quotes (also checked against the database's own
    /// encoding in the integration tests) has README's leaf hash.
    #[test]
    fn the_fixed_attempt_row_has_the_leaf_hash_readme_quotes() {
        let at = |text: &str| text.parse::<DateTime<Utc>>().unwrap();
        let row = AttemptRow {
            call_id: "01930000-0000-7000-8000-000000000001".parse().unwrap(),
            received_at: at("2026-12-01T00:00:00Z"),
            recorded_at: at("2026-12-01T00:00:00.5Z"),
            principal: Some("svc-janitor".into()),
            issuer: Some("https://issuer.example".into()),
            client_id: None,
            token_jti: None,
            token_fingerprint: None,
            roles: vec![Some("disk:release".into())],
            peer_addr: None,
            peer_identity: None,
            user_agent: None,
            x_request_id: "req-1".into(),
            trace_id: "0af7651916cd43dd8448eb211c80319c".into(),
            disk_id: "disk-3f9a2c".into(),
            reason: "CHG-1234 cleanup".into(),
            idempotency_key: None,
            replay_of: None,
            decision: "allowed".into(),
            decision_reason: None,
            refusal_grpc_code: None,
            refusal_message: None,
            disk_snapshot: None,
            disk_name: None,
            zone_id: None,
            disk_size_gib: None,
            disk_type: None,
            disk_status_before: None,
            disk_tags: Some(r#"{"team": "billing"}"#.into()),
            policy_set_hash: None,
            policy_decision: None,
            policy_ids: None,
            shadow_policy_set_hash: None,
            shadow_policy_decision: None,
            shadow_policy_ids: None,
        };
        assert_eq!(
            hex::encode(super::super::hash::leaf_hash(&row.leaf(0))),
            "a3c367411f5f0b9db6675ef5ff94e6c23f8a97e9e7ffae90ba70cf6680cc64e1"
        );
    }

    /// A field as README writes it, built independently of `Leaf`.
    fn f(value: Option<&[u8]>) -> Vec<u8> {
        match value {
            None => vec![0],
            Some(bytes) => [&[1][..], &(bytes.len() as u32).to_be_bytes(), bytes].concat(),
        }
    }

    fn n(value: i64) -> Vec<u8> {
        f(Some(&value.to_be_bytes()))
    }

    #[test]
    fn outcome_confirmation_and_freeze_leaves_hold_every_column_in_table_order() {
        let at = |micros: i64| DateTime::from_timestamp_micros(micros).unwrap();
        let call_id: Uuid = "01930000-0000-7000-8000-000000000001".parse().unwrap();
        let outcome = OutcomeRow {
            outcome_id: 7,
            call_id,
            completed_at: at(1),
            recorded_at: at(2),
            outcome: "failed".into(),
            grpc_code: "NOT_FOUND".into(),
            error_reason: Some("INVALID_DISK_NOT_FOUND".into()),
            zenlayer_code: Some("INVALID_DISK_NOT_FOUND".into()),
            zenlayer_request_id: Some("T1".into()),
            http_status: Some(404),
            error_message: None,
            recorded_by: "call".into(),
            zenlayer_action: Some("ReleaseDisk".into()),
        };
        let t = |text: &str| f(Some(text.as_bytes()));
        assert_eq!(
            outcome.leaf(3),
            [
                b"zenlayer-gateway/outcome/v1\n".to_vec(),
                n(3),
                n(7),
                f(Some(call_id.as_bytes())),
                n(1),
                n(2),
                t("failed"),
                t("NOT_FOUND"),
                t("INVALID_DISK_NOT_FOUND"),
                t("INVALID_DISK_NOT_FOUND"),
                t("T1"),
                n(404),
                f(None),
                t("call"),
                t("ReleaseDisk"),
            ]
            .concat()
        );
        let confirmation = ConfirmationRow {
            confirmation_id: 9,
            call_id,
            recorded_at: at(4),
            confirmation: "confirmed".into(),
            checked_at: at(5),
            zenlayer_request_id: Some("T2".into()),
            disk_status: None,
            recorded_by: "confirmation".into(),
        };
        assert_eq!(
            confirmation.leaf(4),
            [
                b"zenlayer-gateway/confirmation/v1\n".to_vec(),
                n(4),
                n(9),
                f(Some(call_id.as_bytes())),
                n(4),
                t("confirmed"),
                n(5),
                t("T2"),
                f(None),
                t("confirmation"),
            ]
            .concat()
        );
        let freeze = FreezeRow {
            freeze_id: 2,
            action: "freeze".into(),
            reason: "incident 42".into(),
            operator: "alice".into(),
            recorded_at: at(6),
        };
        assert_eq!(
            freeze.leaf(5),
            [
                b"zenlayer-gateway/freeze/v1\n".to_vec(),
                n(5),
                n(2),
                t("freeze"),
                t("incident 42"),
                t("alice"),
                n(6),
            ]
            .concat()
        );
    }

    #[test]
    fn an_instant_is_microseconds_since_the_epoch() {
        let mut l = Leaf(Vec::new());
        l.time(DateTime::from_timestamp_micros(1_000_001));
        assert_eq!(
            l.0,
            [vec![0x01, 0, 0, 0, 8], 1_000_001i64.to_be_bytes().to_vec()].concat()
        );
    }
}
