//! The disk the call was about, as OCSF `resources` and `cloud`: what the
//! pre-flight `DescribeDisks` saw of it, before anything was released.

use crate::export::event::AttemptRow;
use crate::export::fields::Fields;
use serde_json::Value;

pub const PROVIDER: &str = "Zenlayer";

/// The one resource: the disk, the target of the release, with its tags and
/// what the pre-flight saw (`data`), when it saw the disk.
pub fn disk(a: &AttemptRow) -> Fields {
    let seen = Fields::new()
        .maybe("size_gib", a.disk_size_gib)
        .maybe("disk_type", a.disk_type.as_deref())
        .maybe("status_before", a.disk_status_before.as_deref())
        .maybe("snapshot", a.disk_snapshot.clone());
    Fields::new()
        .with("uid", a.disk_id.as_str())
        .maybe("name", a.disk_name.as_deref())
        .with("type", "disk")
        .with("role_id", 1)
        .with("role", "Target")
        .with("provider", PROVIDER)
        .maybe("zone", a.zone_id.as_deref())
        .maybe("tags", a.disk_tags.as_ref().and_then(tags))
        .nested("data", seen)
}

/// `cloud`: where the release took effect.
pub fn cloud(a: &AttemptRow) -> Fields {
    Fields::new()
        .with("provider", PROVIDER)
        .maybe("zone", a.zone_id.as_deref())
}

/// Zenlayer's tags as OCSF key/value objects; a value that is not a string
/// is written as its JSON text.
fn tags(tags: &Value) -> Option<Vec<Value>> {
    let tags = tags.as_object().filter(|t| !t.is_empty())?;
    let pairs = tags.iter().map(|(name, value)| {
        let value = match value {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        Fields::new()
            .with("name", name.as_str())
            .with("value", value)
            .into()
    });
    Some(pairs.collect())
}
