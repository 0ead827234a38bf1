//! `DescribeDisks`: filtering, paging and the `dataSet` entry shape.
//!
//! It is how a client learns what became of a release whose answer it never
//! got, so the listing must reflect every change the other actions make. The
//! entry carries every field Zenlayer documents; those the simulator does not
//! model (category, expiry, tags) get fixed, plausible values so that clients
//! which deserialize them strictly still work.

use chrono::SecondsFormat;
use serde_json::{Value, json};

use super::disk::{DiskStatus, DiskType};
use super::inventory::{Inventory, StoredDisk};
use super::params::Params;
use super::reply::ApiError;

const DEFAULT_PAGE_SIZE: u64 = 20;
const MAX_PAGE_SIZE: u64 = 1000;

/// Which disks a `DescribeDisks` call asks for, and which page of them.
#[derive(Debug, Default)]
pub(crate) struct DiskQuery {
    pub disk_ids: Option<Vec<String>>,
    pub disk_status: Option<DiskStatus>,
    pub disk_type: Option<DiskType>,
    pub zone_id: Option<String>,
    pub page_num: u64,
    pub page_size: u64,
}

impl DiskQuery {
    pub fn from_params(params: &Params) -> Result<DiskQuery, ApiError> {
        Ok(DiskQuery {
            // An empty id list is what the SDKs send for "no filter".
            disk_ids: params
                .optional_str_list("diskIds")?
                .filter(|ids| !ids.is_empty()),
            disk_status: enum_param(params, "diskStatus")?,
            disk_type: enum_param(params, "diskType")?,
            zone_id: params.optional_str("zoneId")?.map(str::to_owned),
            page_num: params.int_in_range("pageNum", 1, 1, u64::from(u32::MAX))?,
            page_size: params.int_in_range("pageSize", DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE)?,
        })
    }

    fn matches(&self, stored: &StoredDisk) -> bool {
        let disk = &stored.disk;
        self.disk_ids
            .as_ref()
            .is_none_or(|ids| ids.contains(&disk.disk_id))
            && self
                .disk_status
                .is_none_or(|status| status == disk.disk_status)
            && self.disk_type.is_none_or(|kind| kind == disk.disk_type)
            && self
                .zone_id
                .as_ref()
                .is_none_or(|zone| *zone == disk.zone_id)
    }

    /// The `response` fields: `totalCount` counts every match, `dataSet`
    /// holds only the requested page.
    pub fn run(&self, inventory: &Inventory) -> serde_json::Map<String, Value> {
        let matching: Vec<&StoredDisk> = match &self.disk_ids {
            // Looked up by id, as Zenlayer would by its index, rather than
            // scanned: a large inventory must not make every look slow.
            Some(ids) => {
                let mut ids: Vec<&String> = ids.iter().collect();
                ids.sort();
                ids.dedup();
                ids.into_iter()
                    .filter_map(|id| inventory.stored(id))
                    .filter(|d| self.matches(d))
                    .collect()
            }
            None => inventory.iter().filter(|d| self.matches(d)).collect(),
        };
        let skip = (self.page_num - 1).saturating_mul(self.page_size);
        let page: Vec<Value> = matching
            .iter()
            .skip(usize::try_from(skip).unwrap_or(usize::MAX))
            .take(usize::try_from(self.page_size).unwrap_or(usize::MAX))
            .map(|stored| disk_entry(stored))
            .collect();
        let mut fields = serde_json::Map::new();
        fields.insert("totalCount".to_owned(), json!(matching.len()));
        fields.insert("dataSet".to_owned(), Value::Array(page));
        fields
    }
}

/// Reads an enum parameter by its wire name; an unknown name is a bad value,
/// not a bad type.
fn enum_param<T: serde::de::DeserializeOwned>(
    params: &Params,
    name: &str,
) -> Result<Option<T>, ApiError> {
    let Some(text) = params.optional_str(name)? else {
        return Ok(None);
    };
    serde_json::from_value(Value::String(text.to_owned()))
        .map(Some)
        .map_err(|_| {
            ApiError::bad_request(
                "INVALID_PARAMETER_VALUE",
                format!("{name} {text:?} is not known"),
            )
        })
}

/// One `dataSet` entry.
pub(crate) fn disk_entry(stored: &StoredDisk) -> Value {
    let disk = &stored.disk;
    json!({
        "diskId": disk.disk_id,
        "diskName": disk.disk_name,
        "zoneId": disk.zone_id,
        "diskType": disk.disk_type,
        // Zenlayer's system disks go with their instance; data disks can move.
        "portable": disk.disk_type == DiskType::Data,
        "diskCategory": "Standard NVMe SSD",
        "diskSize": disk.disk_size,
        "diskStatus": disk.disk_status,
        "instanceId": disk.instance_id,
        "instanceName": disk.instance_id,
        "chargeType": disk.charge_type,
        "createTime": stored.create_time.to_rfc3339_opts(SecondsFormat::Secs, true),
        "expiredTime": null,
        "period": null,
        "autoRenew": false,
        // As the official SDKs model it: an object holding a list of pairs.
        "tags": {
            "tags": disk.tags.iter().map(|(key, value)| json!({"key": key, "value": value})).collect::<Vec<_>>()
        },
    })
}

#[cfg(test)]
mod tests {
    use super::super::disk::sample_disks;
    use super::*;

    fn run(body: &str) -> Value {
        let query = DiskQuery::from_params(&Params::parse(body.as_bytes()).unwrap()).unwrap();
        Value::Object(query.run(&Inventory::new(sample_disks())))
    }

    fn ids(response: &Value) -> Vec<&str> {
        let entries = response["dataSet"].as_array().unwrap();
        entries
            .iter()
            .map(|d| d["diskId"].as_str().unwrap())
            .collect()
    }

    #[test]
    fn filters_combine_and_total_count_ignores_paging() {
        let response = run(r#"{"diskType": "DATA", "diskStatus": "AVAILABLE"}"#);
        assert_eq!(ids(&response), ["disk-available", "disk-prepaid"]);
        let response = run(r#"{"diskType": "DATA", "pageSize": 1, "pageNum": 2}"#);
        assert_eq!(response["totalCount"], 5);
        assert_eq!(ids(&response), ["disk-in-use"]);
        assert_eq!(ids(&run(r#"{"pageNum": 99}"#)), Vec::<&str>::new());
    }

    #[test]
    fn unknown_status_names_are_invalid_values() {
        let params = Params::parse(br#"{"diskStatus": "GONE"}"#).unwrap();
        let error = DiskQuery::from_params(&params).unwrap_err();
        assert_eq!(error.code, "INVALID_PARAMETER_VALUE");
    }
}
