//! The export loop: pages of events after a cursor, written as lines and
//! flushed page by page; with `--follow`, polling for what comes next.
//!
//! Memory stays bounded by one page. Following polls rather than LISTENs:
//! it needs no trigger on the audit write path and no privilege beyond
//! reading, and a poll after a lost connection finds everything the
//! connection missed, which notifications would not.

use super::event::Exported;
use super::options::{ExportOptions, Format, Start};
use super::trail::{self, TrailError};
use sqlx::PgPool;
use std::future::Future;
use std::io::Write;
use std::time::Duration;

/// Backoff while following, when the database is away.
const RETRY_FIRST: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Why an export stopped early.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Trail(#[from] TrailError),
    #[error("writing to standard output failed")]
    Output(#[from] std::io::Error),
}

/// Writes events from `options.start` on to `out`, one per line, until the
/// log's end or, with `follow`, until `stop` resolves (between pages, so a
/// line is never cut). Returns the cursor of the last event written.
pub async fn run(
    pool: &PgPool,
    options: &ExportOptions,
    out: &mut impl Write,
    stop: impl Future<Output = ()>,
) -> Result<Option<i64>, ExportError> {
    tokio::pin!(stop);
    // The first read is never retried: a wrong URL or a missing grant is
    // reported at once instead of waited out.
    let mut cursor = start_cursor(pool, &options.start).await?;
    let mut last = None;
    let mut answered = false;
    let mut pause = RETRY_FIRST;
    loop {
        let page = match read_page(pool, cursor, options.page_size).await {
            Ok(page) => page,
            Err(error) if options.follow && answered => {
                tracing::warn!(error = %error, cursor, retry_in_ms = pause.as_millis() as u64, "reading the audit trail failed; retrying");
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = &mut stop => return Ok(last),
                }
                pause = (pause * 2).min(RETRY_MAX);
                continue;
            }
            Err(error) => return Err(error.into()),
        };
        (answered, pause) = (true, RETRY_FIRST);
        let calls = page
            .iter()
            .filter(|e| matches!(e, Exported::Call(_)))
            .count();
        let full = calls as i64 == options.page_size;
        for event in &page {
            write_line(out, options.format, event)?;
            cursor = event.log_index();
            last = Some(cursor);
        }
        out.flush()?;
        if full {
            continue;
        }
        if !options.follow {
            return Ok(last);
        }
        tokio::select! {
            () = tokio::time::sleep(options.poll_interval) => {}
            () = &mut stop => return Ok(last),
        }
    }
}

async fn start_cursor(pool: &PgPool, start: &Start) -> Result<i64, TrailError> {
    match start {
        Start::Beginning => Ok(-1),
        Start::After(cursor) => Ok(*cursor),
        Start::Since(since) => {
            let mut db = pool.acquire().await?;
            trail::cursor_before(&mut db, *since).await
        }
    }
}

async fn read_page(pool: &PgPool, cursor: i64, limit: i64) -> Result<Vec<Exported>, TrailError> {
    let mut db = pool.acquire().await?;
    trail::page(&mut db, cursor, limit).await
}

fn write_line(out: &mut impl Write, format: Format, event: &Exported) -> std::io::Result<()> {
    let line = match (format, event) {
        (Format::Jsonl, Exported::Call(event)) => super::jsonl::render(event),
        (Format::Jsonl, Exported::Freeze(freeze)) => super::jsonl::render_freeze(freeze),
        (Format::Ocsf, Exported::Call(event)) => super::ocsf::render(event),
        (Format::Ocsf, Exported::Freeze(freeze)) => super::ocsf::render_freeze(freeze),
    };
    serde_json::to_writer(&mut *out, &line)?;
    out.write_all(b"\n")
}
