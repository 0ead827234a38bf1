//! Settings for the freeze switch.

use super::reader::Reader;
use std::time::Duration;

/// `GATEWAY_FREEZE_POLL_INTERVAL_MS`: how often the freeze state is read
/// even when no notification came (a notification lost with its
/// connection, a listener that cannot connect). A freeze normally arrives
/// by notification at once; this bounds how late it can be otherwise.
pub(super) fn poll_interval(r: &mut Reader) -> Duration {
    r.millis("GATEWAY_FREEZE_POLL_INTERVAL_MS", 1_000, (100, 3_600_000))
}
