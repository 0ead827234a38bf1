//! The schema policies are validated against and requests checked with,
//! parsed once per process from the file embedded in the binary.

use cedar_policy::{EntityUid, Schema};
use std::sync::LazyLock;

/// The schema's text, as README shows it.
pub const SCHEMA_TEXT: &str = include_str!("schema.cedarschema");

static SCHEMA: LazyLock<Schema> = LazyLock::new(|| {
    let (schema, _warnings) =
        Schema::from_cedarschema_str(SCHEMA_TEXT).expect("the embedded schema parses");
    schema
});

static RELEASE_DISK: LazyLock<EntityUid> = LazyLock::new(|| action("ReleaseDisk"));
static GET_RELEASE: LazyLock<EntityUid> = LazyLock::new(|| action("GetRelease"));

pub(super) fn schema() -> &'static Schema {
    &SCHEMA
}

/// The action a call is decided as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Action {
    ReleaseDisk,
    GetRelease,
}

impl Action {
    pub(super) fn uid(self) -> &'static EntityUid {
        match self {
            Self::ReleaseDisk => &RELEASE_DISK,
            Self::GetRelease => &GET_RELEASE,
        }
    }
}

fn action(name: &str) -> EntityUid {
    format!("Action::{name:?}")
        .parse()
        .expect("an action of the schema")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_schema_parses_and_declares_both_actions() {
        let actions = schema()
            .actions()
            .map(ToString::to_string)
            .collect::<Vec<_>>();
        for action in [Action::ReleaseDisk, Action::GetRelease] {
            assert!(actions.contains(&action.uid().to_string()), "{actions:?}");
        }
    }
}
