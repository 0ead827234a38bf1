//! The ways an audit write fails.

use std::sync::Arc;

/// The audit trail could not store a record. Its message carries the
/// database's reason, so every log line that quotes it says why. Cheap to
/// clone: one failed batch fails every record in it with the same error.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuditError {
    #[error("the audit trail could not be written: {0}")]
    Database(Arc<sqlx::Error>),
    /// The writer task is gone (the gateway is stopping).
    #[error("the audit trail could not be written: the audit writer has stopped")]
    WriterStopped,
}

impl From<sqlx::Error> for AuditError {
    fn from(error: sqlx::Error) -> Self {
        Self::Database(Arc::new(error))
    }
}
