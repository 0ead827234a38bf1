//! Settings for the verifiable audit log: the key checkpoints are signed
//! with, and how often.

use super::reader::Reader;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct TrailSettings {
    /// `AUDIT_LOG_SIGNING_KEY_FILE`: the log's Ed25519 signing key, in
    /// signed-note form (`zenlayer-gateway audit keygen` writes one). Kept
    /// out of the database, so that whoever controls the database cannot
    /// sign a rewritten history. Without it no checkpoints are signed.
    pub signing_key_file: Option<PathBuf>,
    /// `AUDIT_CHECKPOINT_INTERVAL_MS`: how often new events are hashed and a checkpoint is signed
    /// while the log grows (and once more at shutdown).
    pub checkpoint_interval: Duration,
}

impl TrailSettings {
    pub(super) fn read(r: &mut Reader) -> Self {
        Self {
            signing_key_file: r
                .raw("AUDIT_LOG_SIGNING_KEY_FILE")
                .filter(|p| !p.is_empty())
                .map(PathBuf::from),
            checkpoint_interval: r.millis("AUDIT_CHECKPOINT_INTERVAL_MS", 10_000, (50, 3_600_000)),
        }
    }
}
