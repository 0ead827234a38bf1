//! The one way an audit write fails.

/// The audit database could not store a record. Its message carries the
/// database's reason, so every log line that quotes it says why.
#[derive(Debug, thiserror::Error)]
#[error("the audit trail could not be written: {0}")]
pub struct AuditError(sqlx::Error);

impl From<sqlx::Error> for AuditError {
    fn from(error: sqlx::Error) -> Self {
        Self(error)
    }
}
