//! Validated request values. Each has one constructor, `parse`; holding one
//! means it is valid, so no later step re-checks it.

use std::fmt;

/// Why a request field was refused: the field's name and a sentence a person
/// can act on. Becomes a `google.rpc.BadRequest` field violation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: &'static str,
    pub description: String,
}

const MAX_ID_LEN: usize = 64;

/// Zenlayer ids and idempotency keys share one shape: short, and free of
/// anything that could smuggle a path, a quote or a control character into
/// a log line or an upstream body.
fn check_id(field: &'static str, value: &str, example: &str) -> Result<(), FieldViolation> {
    let violation = |description: String| FieldViolation { field, description };
    if value.is_empty() {
        return Err(violation(format!("{field} is required, e.g. {example:?}")));
    }
    if value.chars().count() > MAX_ID_LEN {
        return Err(violation(format!(
            "{field} is {} characters long; at most {MAX_ID_LEN} are allowed",
            value.chars().count()
        )));
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Err(violation(format!(
            "{field} contains {bad:?}; only A-Z, a-z, 0-9, '-' and '_' are allowed"
        )));
    }
    Ok(())
}

/// A Zenlayer disk id: 1–64 characters of `[A-Za-z0-9_-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DiskId(String);

impl DiskId {
    pub fn parse(value: &str) -> Result<Self, FieldViolation> {
        check_id("disk_id", value, "disk-3f9a2c")?;
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DiskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A caller's idempotency key: 1–64 characters of `[A-Za-z0-9_-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// `Ok(None)` for an empty key: keys are optional.
    pub fn parse(value: &str) -> Result<Option<Self>, FieldViolation> {
        if value.is_empty() {
            return Ok(None);
        }
        check_id(
            "idempotency_key",
            value,
            "7d3c0a52-5c1e-4be5-9a57-0c9e1f7f3b1a",
        )?;
        Ok(Some(Self(value.to_owned())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The caller's free-text justification, kept verbatim for the audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reason(String);

impl Reason {
    pub const MAX_CHARS: usize = 1024;

    /// Any text up to the limit, except NUL: PostgreSQL text cannot hold
    /// it, and a reason the audit trail would have to alter is refused
    /// rather than stored as something the caller did not write.
    pub fn parse(value: &str) -> Result<Self, FieldViolation> {
        let violation = |description: String| FieldViolation {
            field: "reason",
            description,
        };
        if value.chars().count() > Self::MAX_CHARS {
            return Err(violation(format!(
                "reason is longer than {} characters",
                Self::MAX_CHARS
            )));
        }
        if value.contains('\0') {
            return Err(violation(
                "reason contains a NUL character (U+0000), which the audit trail cannot hold; remove it".to_owned(),
            ));
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A `ReleaseDisk` request whose every field has been checked.
#[derive(Debug, Clone)]
pub struct ReleaseRequest {
    pub disk_id: DiskId,
    pub idempotency_key: Option<IdempotencyKey>,
    pub reason: Reason,
}

impl ReleaseRequest {
    /// Checks the disk id first, as callers are promised, then the rest.
    pub fn parse(
        disk_id: &str,
        idempotency_key: &str,
        reason: &str,
    ) -> Result<Self, Vec<FieldViolation>> {
        let disk_id = DiskId::parse(disk_id);
        let idempotency_key = IdempotencyKey::parse(idempotency_key);
        let reason = Reason::parse(reason);
        match (disk_id, idempotency_key, reason) {
            (Ok(disk_id), Ok(idempotency_key), Ok(reason)) => Ok(Self {
                disk_id,
                idempotency_key,
                reason,
            }),
            (d, k, r) => Err([d.err(), k.err(), r.err()].into_iter().flatten().collect()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_ids_of_the_documented_shape_are_accepted() {
        for id in ["disk-3f9a2c", "A", "a_b-C9", &"x".repeat(64)] {
            assert_eq!(DiskId::parse(id).unwrap().as_str(), id);
        }
    }

    #[test]
    fn disk_ids_outside_the_shape_are_refused_with_a_reason() {
        let cases = [
            ("", "required"),
            (&*"x".repeat(65), "65 characters"),
            ("../etc/passwd", "'.'"),
            ("disk 1", "' '"),
            ("disk'--", "'\\''"),
            ("dïsk", "'ï'"),
        ];
        for (id, expected) in cases {
            let violation = DiskId::parse(id).unwrap_err();
            assert_eq!(violation.field, "disk_id");
            assert!(
                violation.description.contains(expected),
                "{id:?}: {}",
                violation.description
            );
        }
    }

    #[test]
    fn idempotency_keys_are_optional_but_checked_when_present() {
        assert_eq!(IdempotencyKey::parse("").unwrap(), None);
        let key = "7d3c0a52-5c1e-4be5-9a57-0c9e1f7f3b1a";
        assert_eq!(IdempotencyKey::parse(key).unwrap().unwrap().as_str(), key);
        assert_eq!(
            IdempotencyKey::parse("a/b").unwrap_err().field,
            "idempotency_key"
        );
    }

    #[test]
    fn a_reason_with_a_nul_is_refused_and_other_text_kept_as_given() {
        let violation = Reason::parse("CHG-1\0 rm").unwrap_err();
        assert!(violation.description.contains("NUL"), "{violation:?}");
        let odd = "tab\there, newline\n, emoji 🧹, U+FFFD \u{FFFD}";
        assert_eq!(Reason::parse(odd).unwrap().as_str(), odd);
    }

    #[test]
    fn a_reason_of_exactly_1024_characters_is_kept_verbatim_and_1025_are_refused() {
        // Characters, not bytes: a reason in another script gets as many.
        for unit in ["r", "é", "变"] {
            let at_limit = unit.repeat(1024);
            assert_eq!(Reason::parse(&at_limit).unwrap().as_str(), at_limit);
            let over = Reason::parse(&unit.repeat(1025)).unwrap_err();
            assert_eq!(over.field, "reason");
            assert_eq!(over.description, "reason is longer than 1024 characters");
        }
    }

    #[test]
    fn a_request_reports_every_bad_field() {
        let long_reason = "r".repeat(Reason::MAX_CHARS + 1);
        let violations = ReleaseRequest::parse("", "a b", &long_reason).unwrap_err();
        let fields: Vec<_> = violations.iter().map(|v| v.field).collect();
        assert_eq!(fields, ["disk_id", "idempotency_key", "reason"]);
    }
}

/// Request fields as any caller may send them.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    /// Few cases in the usual run; `PROPTEST_CASES` asks for more. Failures
    /// are not persisted to files: each one found is committed as a test.
    fn config() -> ProptestConfig {
        ProptestConfig {
            cases: std::env::var("PROPTEST_CASES")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(64),
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    fn id_shaped(c: char) -> bool {
        c.is_ascii_alphanumeric() || c == '-' || c == '_'
    }

    /// Mostly id-like text with the odd stranger, or anything at all.
    fn texts() -> impl Strategy<Value = String> {
        prop_oneof![
            "[A-Za-z0-9_-]{0,70}",
            "[A-Za-z0-9_-]{0,10}[^A-Za-z0-9_-][A-Za-z0-9_-]{0,10}",
            any::<String>(),
        ]
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn a_disk_id_is_accepted_exactly_when_it_has_the_documented_shape(value in texts()) {
            let shaped = (1..=64).contains(&value.chars().count()) && value.chars().all(id_shaped);
            match DiskId::parse(&value) {
                Ok(id) => {
                    prop_assert!(shaped);
                    prop_assert_eq!(id.as_str(), value.as_str());
                }
                Err(violation) => {
                    prop_assert!(!shaped);
                    prop_assert_eq!(violation.field, "disk_id");
                }
            }
        }

        #[test]
        fn an_idempotency_key_is_optional_and_otherwise_id_shaped(value in texts()) {
            let shaped = value.chars().count() <= 64 && value.chars().all(id_shaped);
            match IdempotencyKey::parse(&value) {
                Ok(None) => prop_assert!(value.is_empty()),
                Ok(Some(key)) => prop_assert_eq!(key.as_str(), value.as_str()),
                Err(violation) => {
                    prop_assert!(!shaped);
                    prop_assert_eq!(violation.field, "idempotency_key");
                }
            }
        }

        #[test]
        fn a_reason_is_kept_verbatim_or_refused(value in any::<String>()) {
            let fits = value.chars().count() <= Reason::MAX_CHARS && !value.contains('\0');
            match Reason::parse(&value) {
                Ok(reason) => {
                    prop_assert!(fits);
                    prop_assert_eq!(reason.as_str(), value.as_str());
                }
                Err(violation) => {
                    prop_assert!(!fits);
                    prop_assert_eq!(violation.field, "reason");
                }
            }
        }
    }
}
