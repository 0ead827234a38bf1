//! The freeze switch's SQL.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FreezeAction {
    Freeze,
    Unfreeze,
}

impl FreezeAction {
    /// The action a stored record names. Anything but `unfreeze` reads as a
    /// freeze: a record this gateway does not know (written by a newer
    /// replica during a rolling deploy, say) must stop releases, not let
    /// them go ahead.
    pub fn read(stored: &str) -> Self {
        match stored {
            "unfreeze" => Self::Unfreeze,
            _ => Self::Freeze,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Freeze => "freeze",
            Self::Unfreeze => "unfreeze",
        }
    }
}

/// One row of `audit.release_freezes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FreezeRecord {
    pub action: FreezeAction,
    pub reason: String,
    pub operator: String,
    pub recorded_at: DateTime<Utc>,
}

/// The newest freeze or unfreeze in the log's order (commit order; see
/// the migration that made it so), if there ever was one.
pub async fn current(db: &mut PgConnection) -> Result<Option<FreezeRecord>, sqlx::Error> {
    let row = sqlx::query!(
        r#"SELECT action AS "action!", reason AS "reason!", operator AS "operator!",
                  recorded_at AS "recorded_at!"
           FROM audit.freeze_in_force()"#
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| FreezeRecord {
        action: FreezeAction::read(&r.action),
        reason: r.reason,
        operator: r.operator,
        recorded_at: r.recorded_at,
    }))
}

/// Records a freeze or unfreeze; the database stamps who and when.
pub async fn record_freeze(
    db: &mut PgConnection,
    action: FreezeAction,
    reason: &str,
) -> Result<FreezeRecord, sqlx::Error> {
    let row = sqlx::query!(
        "INSERT INTO audit.release_freezes (action, reason, operator) VALUES ($1, $2, '')
         RETURNING reason, operator, recorded_at",
        action.label(),
        reason,
    )
    .fetch_one(db)
    .await?;
    Ok(FreezeRecord {
        action,
        reason: row.reason,
        operator: row.operator,
        recorded_at: row.recorded_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_unfreeze_lets_releases_go_ahead() {
        for action in [FreezeAction::Freeze, FreezeAction::Unfreeze] {
            assert_eq!(FreezeAction::read(action.label()), action);
        }
        for unknown in ["freeze_zone", "UNFREEZE", "", "unfreeze "] {
            assert_eq!(
                FreezeAction::read(unknown),
                FreezeAction::Freeze,
                "{unknown:?}"
            );
        }
    }
}
