//! The gateway's PostgreSQL database: its migrations and its health probe.

use sqlx::PgPool;
use std::time::Duration;

/// How long a connection may sit idle before it is pinged on its next use
/// (the database may have restarted since; a dead one is then replaced
/// unseen, instead of failing the statement that meets it).
pub const PING_WHEN_IDLE_FOR: Duration = Duration::from_secs(1);

/// The migrations under `migrations/`, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Applies every pending migration.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

/// Whether an attempt could be recorded now, within `timeout`: a row is
/// written to the attempts table and rolled back, so a database that
/// answers queries but cannot take writes there (a lock held on the table,
/// a read-only standby, a full disk) counts as down, as it does for calls.
/// Nothing is ever committed.
pub async fn can_record(pool: &PgPool, timeout: Duration) -> bool {
    let probe = async {
        let mut tx = pool.begin().await?;
        sqlx::query!(
            "INSERT INTO audit.release_attempts (call_id, received_at, x_request_id, trace_id, disk_id, decision)
             VALUES (gen_random_uuid(), clock_timestamp(), 'health-probe', 'health-probe', 'health-probe', 'allowed')"
        )
        .execute(&mut *tx)
        .await?;
        tx.rollback().await
    };
    matches!(tokio::time::timeout(timeout, probe).await, Ok(Ok(())))
}
