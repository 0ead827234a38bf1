//! What the newest freeze record means for releases.

use super::store::{FreezeAction, FreezeRecord};
use chrono::{DateTime, Utc};

/// Whether releases may go ahead, as this gateway last read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FreezeState {
    /// Not read yet (the database has not answered since start-up):
    /// releases wait for it, as they wait for the audit trail.
    Unknown,
    Open,
    Frozen(Freeze),
}

/// A freeze in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Freeze {
    pub reason: String,
    pub operator: String,
    pub since: DateTime<Utc>,
}

impl FreezeState {
    /// The state the newest record says.
    pub fn of(newest: Option<FreezeRecord>) -> Self {
        match newest {
            Some(record) if record.action == FreezeAction::Freeze => Self::Frozen(Freeze {
                reason: record.reason,
                operator: record.operator,
                since: record.recorded_at,
            }),
            Some(_) | None => Self::Open,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(action: FreezeAction) -> FreezeRecord {
        FreezeRecord {
            action,
            reason: "incident 42".into(),
            operator: "alice".into(),
            recorded_at: DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
        }
    }

    #[test]
    fn only_a_freeze_as_the_newest_record_stops_releases() {
        assert_eq!(FreezeState::of(None), FreezeState::Open);
        assert_eq!(
            FreezeState::of(Some(record(FreezeAction::Unfreeze))),
            FreezeState::Open
        );
        assert_eq!(
            FreezeState::of(Some(record(FreezeAction::Freeze))),
            FreezeState::Frozen(Freeze {
                reason: "incident 42".into(),
                operator: "alice".into(),
                since: DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
            })
        );
    }
}
