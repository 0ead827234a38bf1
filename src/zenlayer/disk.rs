//! What Zenlayer says a disk is, from a `DescribeDisks` entry: kept whole as
//! Zenlayer returned it (so that nothing it said is lost once the disk is
//! gone), with the attributes the gateway and security teams filter on read
//! out of it. Reading is lenient: a field Zenlayer leaves out or types
//! differently is absent here, never an error, since the entry is evidence.

use serde_json::{Map, Value};

/// One disk as `DescribeDisks` listed it.
#[derive(Debug, Clone, PartialEq)]
pub struct DiskSnapshot {
    /// The `dataSet` entry exactly as Zenlayer returned it.
    pub entry: Value,
    pub disk_name: Option<String>,
    pub zone_id: Option<String>,
    pub disk_size_gib: Option<i64>,
    /// `SYSTEM` or `DATA`.
    pub disk_type: Option<String>,
    /// `diskStatus`, e.g. `RECYCLED`, `IN_USE`, `DELETING`.
    pub disk_status: Option<String>,
    pub disk_category: Option<String>,
    pub instance_id: Option<String>,
    pub instance_name: Option<String>,
    /// Zenlayer's tags as one object, `{"team": "billing"}`.
    pub tags: Map<String, Value>,
}

impl DiskSnapshot {
    pub fn from_entry(entry: Value) -> Self {
        let text = |name: &str| {
            entry
                .get(name)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        Self {
            disk_name: text("diskName"),
            zone_id: text("zoneId"),
            disk_size_gib: entry.get("diskSize").and_then(Value::as_i64),
            disk_type: text("diskType"),
            disk_status: text("diskStatus"),
            disk_category: text("diskCategory"),
            instance_id: text("instanceId"),
            instance_name: text("instanceName"),
            tags: tags_of(entry.get("tags")),
            entry,
        }
    }

    pub fn is_system(&self) -> bool {
        self.disk_type.as_deref() == Some("SYSTEM")
    }
}

/// Zenlayer's models nest tags as `{"tags": [{"key": …, "value": …}]}`; a
/// plain list of pairs is read too.
fn tags_of(tags: Option<&Value>) -> Map<String, Value> {
    let list = match tags {
        Some(Value::Object(outer)) => outer.get("tags").and_then(Value::as_array),
        Some(Value::Array(list)) => Some(list),
        _ => None,
    };
    list.into_iter()
        .flatten()
        .filter_map(|tag| {
            let key = tag.get("key")?.as_str()?;
            let value = tag.get("value").cloned().unwrap_or(Value::Null);
            Some((key.to_owned(), value))
        })
        .collect()
}

/// The entry for `disk_id` in a `DescribeDisks` response, if listed.
pub(super) fn find_in(response: &Value, disk_id: &str) -> Option<DiskSnapshot> {
    response
        .get("dataSet")?
        .as_array()?
        .iter()
        .find(|entry| entry.get("diskId").and_then(Value::as_str) == Some(disk_id))
        .cloned()
        .map(DiskSnapshot::from_entry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_entry_is_kept_whole_and_its_attributes_read() {
        let entry = json!({
            "diskId": "disk-1", "diskName": "pg-data", "zoneId": "HKG-A", "diskType": "DATA",
            "diskSize": 200, "diskStatus": "RECYCLED", "diskCategory": "Standard NVMe SSD",
            "instanceId": "", "futureField": {"x": 1},
            "tags": {"tags": [{"key": "team", "value": "billing"}, {"key": "env", "value": "prod"}]}
        });
        let snapshot = find_in(&json!({"dataSet": [entry.clone()]}), "disk-1").unwrap();
        assert_eq!(snapshot.entry, entry);
        assert_eq!(snapshot.disk_name.as_deref(), Some("pg-data"));
        assert_eq!(snapshot.disk_size_gib, Some(200));
        assert_eq!(snapshot.disk_status.as_deref(), Some("RECYCLED"));
        assert_eq!(snapshot.instance_id, None, "an empty id is no id");
        assert_eq!(snapshot.tags["team"], "billing");
        assert_eq!(snapshot.tags["env"], "prod");
        assert!(!snapshot.is_system());
    }

    #[test]
    fn another_disk_or_an_odd_response_is_not_a_listing() {
        let response = json!({"dataSet": [{"diskId": "disk-2"}]});
        assert_eq!(find_in(&response, "disk-1"), None);
        assert_eq!(find_in(&json!({"dataSet": null}), "disk-1"), None);
        assert_eq!(find_in(&json!({}), "disk-1"), None);
        let odd = DiskSnapshot::from_entry(json!({"diskId": "d", "diskSize": "20", "tags": null}));
        assert_eq!(odd.disk_size_gib, None);
        assert!(odd.tags.is_empty());
    }
}
