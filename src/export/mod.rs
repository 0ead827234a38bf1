//! `audit export`: the audit trail as JSON lines, for SIEMs. Events come
//! from `audit.events` in `log_index` order, which is commit order, and
//! each carries its index as the cursor to resume after, so an exporter
//! restarted with `--after` neither skips nor repeats one. It only reads,
//! through a read-only session: an `audit_reader` login is enough.

mod event;
mod fields;
mod jsonl;
mod ocsf;
mod options;
mod stream;
mod time;
mod trail;

pub use options::{ExportOptions, Format, Start};
pub use stream::ExportError;

use crate::settings::DatabaseSettings;
use sqlx::postgres::PgPoolOptions;
use std::future::Future;
use std::io::Write;

/// Exports to `out` with one connection to the audit database, in a
/// read-only session bounded by the statement timeout. Returns the cursor
/// of the last event written, if any.
pub async fn export(
    database: &DatabaseSettings,
    options: &ExportOptions,
    out: &mut impl Write,
    stop: impl Future<Output = ()>,
) -> anyhow::Result<Option<i64>> {
    use anyhow::Context as _;
    let timeout = database.statement_timeout.as_millis().to_string();
    let connect = database
        .connect_options()
        .context("DATABASE_URL")?
        .options([
            ("statement_timeout", timeout.as_str()),
            ("default_transaction_read_only", "on"),
        ]);
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(database.acquire_timeout)
        .connect_lazy_with(connect);
    let exported = stream::run(&pool, options, out, stop).await;
    pool.close().await;
    exported.map_err(|error| anyhow::Error::new(error).context("audit export"))
}
