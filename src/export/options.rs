//! What an export reads, from where, and how it writes it.

use chrono::{DateTime, Utc};
use std::time::Duration;

/// How events are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OCSF 1.8 API Activity.
    Ocsf,
    /// The trail's own rows.
    Jsonl,
}

/// Where an export begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The first event ever recorded.
    Beginning,
    /// The first event, in log order, recorded at or after this time.
    Since(DateTime<Utc>),
    /// The event after this cursor (a `log_index` an export wrote).
    After(i64),
}

/// What to export, and how.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    pub format: Format,
    pub start: Start,
    /// Keep polling for new events once the log's end is reached.
    pub follow: bool,
    /// Events per query (memory holds one page).
    pub page_size: i64,
    /// How long to wait at the log's end before looking again.
    pub poll_interval: Duration,
}
