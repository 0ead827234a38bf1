//! How exported events write time: RFC 3339 in UTC with the database's
//! microseconds, and OCSF's milliseconds since the epoch.

use chrono::{DateTime, SecondsFormat, Utc};

pub fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// OCSF `timestamp_t`.
pub fn epoch_millis(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}
