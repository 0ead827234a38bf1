//! Settings for the policies that decide who may release which disk: the
//! file the enforced set comes from, the shadow file, and how often both
//! are checked for changes.

use super::reader::Reader;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct PolicySettings {
    /// `GATEWAY_POLICY_FILE`; `None`: the default policies.
    pub file: Option<PathBuf>,
    /// `GATEWAY_POLICY_SHADOW_FILE`: evaluated and recorded, never enforced.
    pub shadow_file: Option<PathBuf>,
    /// `GATEWAY_POLICY_RELOAD_INTERVAL_MS`.
    pub reload_interval: Duration,
}

impl Default for PolicySettings {
    fn default() -> Self {
        Self {
            file: None,
            shadow_file: None,
            reload_interval: Duration::from_secs(5),
        }
    }
}

impl PolicySettings {
    pub(super) fn read(r: &mut Reader) -> Self {
        Self {
            file: r.raw("GATEWAY_POLICY_FILE").map(PathBuf::from),
            shadow_file: r.raw("GATEWAY_POLICY_SHADOW_FILE").map(PathBuf::from),
            reload_interval: r.millis("GATEWAY_POLICY_RELOAD_INTERVAL_MS", 5_000, (10, 3_600_000)),
        }
    }
}
