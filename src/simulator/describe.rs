//! `DescribeDisks`: filtering, paging and the `dataSet` entry shape.
//!
//! It is how a client learns what became of a release whose answer it never
//! got, so the listing must reflect every change the other actions make. The
//! entry carries every field Zenlayer documents; those the simulator does not
//! model (category, expiry) get fixed, plausible values so that clients
//! which deserialize them strictly still work.
//!
//! Every filter Zenlayer documents is applied, never dropped: a client that
//! filters and then acts on what it was given (a cleanup job releasing "the
//! disks tagged `tmp`") must not be handed every disk by the stand-in it is
//! tested against. Filters combine with AND; a list filter matches a disk
//! holding any of its values, as `diskIds` does; `tagKeys` and `tags` take
//! at most 20 items each. Zenlayer documents neither how `diskName` matches
//! nor what a list's items combine by: the simulator matches names exactly
//! and lists by any item, the narrower reading for a name. `resourceGroupId`
//! is the one parameter the SDKs send that is not applied: the simulator has
//! no resource groups, so it refuses the parameter rather than ignore it.

use chrono::SecondsFormat;
use serde_json::{Value, json};

use super::disk::{DiskStatus, DiskType};
use super::inventory::{Inventory, StoredDisk};
use super::params::Params;
use super::reply::ApiError;

const DEFAULT_PAGE_SIZE: u64 = 20;
const MAX_PAGE_SIZE: u64 = 1000;
/// Items in a `tagKeys` or `tags` filter at most.
const MAX_TAG_FILTERS: usize = 20;
/// The one category the simulator's disks have.
const DISK_CATEGORY: &str = "Standard NVMe SSD";

/// Which disks a `DescribeDisks` call asks for, and which page of them.
#[derive(Debug, Default)]
pub(crate) struct DiskQuery {
    pub disk_ids: Option<Vec<String>>,
    pub disk_status: Option<DiskStatus>,
    pub disk_type: Option<DiskType>,
    pub zone_id: Option<String>,
    pub disk_name: Option<String>,
    pub disk_category: Option<String>,
    pub disk_size: Option<u64>,
    pub portable: Option<bool>,
    pub instance_id: Option<String>,
    pub tag_keys: Option<Vec<String>>,
    pub tags: Option<Vec<(String, String)>>,
    pub page_num: u64,
    pub page_size: u64,
}

impl DiskQuery {
    pub fn from_params(params: &Params) -> Result<DiskQuery, ApiError> {
        if params.optional_str("resourceGroupId")?.is_some() {
            return Err(ApiError::bad_request(
                "INVALID_PARAMETER_VALUE",
                "the simulator has no resource groups: leave resourceGroupId out",
            ));
        }
        Ok(DiskQuery {
            // An empty id list is what the SDKs send for "no filter".
            disk_ids: params
                .optional_str_list("diskIds")?
                .filter(|ids| !ids.is_empty()),
            disk_status: enum_param(params, "diskStatus")?,
            disk_type: enum_param(params, "diskType")?,
            zone_id: params.optional_str("zoneId")?.map(str::to_owned),
            disk_name: params.optional_str("diskName")?.map(str::to_owned),
            disk_category: params.optional_str("diskCategory")?.map(str::to_owned),
            disk_size: optional_int(params, "diskSize")?,
            portable: params.optional_bool("portable")?,
            instance_id: params.optional_str("instanceId")?.map(str::to_owned),
            tag_keys: params.optional_list(
                "tagKeys",
                MAX_TAG_FILTERS,
                |item| item.as_str().map(str::to_owned),
                "an array of strings",
            )?,
            tags: params.optional_list(
                "tags",
                MAX_TAG_FILTERS,
                tag_pair,
                "an array of {key, value}",
            )?,
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
            && self
                .disk_name
                .as_ref()
                .is_none_or(|name| *name == disk.disk_name)
            && self
                .disk_category
                .as_ref()
                .is_none_or(|category| category == DISK_CATEGORY)
            && self
                .disk_size
                .is_none_or(|size| size == u64::from(disk.disk_size))
            && self
                .portable
                .is_none_or(|portable| portable == is_portable(disk.disk_type))
            && self
                .instance_id
                .as_ref()
                .is_none_or(|id| disk.instance_id.as_ref() == Some(id))
            && self
                .tag_keys
                .as_ref()
                .is_none_or(|keys| keys.iter().any(|key| disk.tags.contains_key(key)))
            && self.tags.as_ref().is_none_or(|pairs| {
                pairs
                    .iter()
                    .any(|(key, value)| disk.tags.get(key) == Some(value))
            })
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

/// A positive integer filter (a size in GiB), or none when absent.
fn optional_int(params: &Params, name: &str) -> Result<Option<u64>, ApiError> {
    // Absent reads as 0, which a present value cannot be.
    match params.int_in_range(name, 0, 1, u64::from(u32::MAX))? {
        0 => Ok(None),
        size => Ok(Some(size)),
    }
}

/// One `{"key": …, "value": …}` of a `tags` filter.
fn tag_pair(item: &serde_json::Value) -> Option<(String, String)> {
    Some((
        item.get("key")?.as_str()?.to_owned(),
        item.get("value")?.as_str()?.to_owned(),
    ))
}

/// Zenlayer's system disks go with their instance; data disks can move.
fn is_portable(disk_type: DiskType) -> bool {
    disk_type == DiskType::Data
}

/// One `dataSet` entry.
pub(crate) fn disk_entry(stored: &StoredDisk) -> Value {
    let disk = &stored.disk;
    json!({
        "diskId": disk.disk_id,
        "diskName": disk.disk_name,
        "zoneId": disk.zone_id,
        "diskType": disk.disk_type,
        "portable": is_portable(disk.disk_type),
        "diskCategory": DISK_CATEGORY,
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

    /// `sample_disks` with a tagged disk and one of another size.
    fn run_tagged(body: &str) -> Result<Value, ApiError> {
        let mut disks = sample_disks();
        disks[0] = disks[0]
            .clone()
            .tagged("team", "billing")
            .tagged("tmp", "yes");
        disks[1] = disks[1].clone().tagged("team", "search");
        disks[2].disk_size = 40;
        let query = DiskQuery::from_params(&Params::parse(body.as_bytes()).unwrap())?;
        Ok(Value::Object(query.run(&Inventory::new(disks))))
    }

    #[test]
    fn every_documented_filter_narrows_the_listing() {
        let listed = |body: &str| ids(&run_tagged(body).unwrap()).join(",");
        assert_eq!(listed(r#"{"diskName": "disk-in-use"}"#), "disk-in-use");
        assert_eq!(listed(r#"{"diskName": "disk"}"#), "");
        assert_eq!(listed(r#"{"diskSize": 40}"#), "disk-system");
        assert_eq!(
            listed(r#"{"portable": false}"#),
            "disk-recycled-system,disk-system"
        );
        assert_eq!(
            listed(r#"{"instanceId": "instance-sample", "diskType": "DATA"}"#),
            "disk-in-use"
        );
        assert_eq!(listed(r#"{"diskCategory": "HDD"}"#), "");
        assert_eq!(
            run_tagged(r#"{"diskCategory": "Standard NVMe SSD"}"#).unwrap()["totalCount"],
            7
        );
        assert_eq!(
            listed(r#"{"tagKeys": ["tmp", "owner"]}"#),
            "disk-recycled-data"
        );
        assert_eq!(
            listed(r#"{"tagKeys": ["team"]}"#),
            "disk-in-use,disk-recycled-data"
        );
        assert_eq!(
            listed(
                r#"{"tags": [{"key": "team", "value": "search"}, {"key": "tmp", "value": "no"}]}"#
            ),
            "disk-in-use"
        );
        assert_eq!(
            run_tagged(r#"{"tags": [{"key": "team", "value": "nobody"}]}"#).unwrap()["totalCount"],
            0
        );
    }

    #[test]
    fn filters_zenlayer_caps_or_the_simulator_cannot_apply_are_refused() {
        let code = |body: &str| run_tagged(body).unwrap_err().code;
        let keys: Vec<String> = (0..21).map(|i| format!("k{i}")).collect();
        assert_eq!(
            code(&serde_json::json!({ "tagKeys": keys }).to_string()),
            "INVALID_PARAMETER_EXCEED_LENGTH"
        );
        assert!(run_tagged(&serde_json::json!({ "tagKeys": keys[..20] }).to_string()).is_ok());
        assert_eq!(
            code(r#"{"tags": [{"key": "team"}]}"#),
            "INVALID_PARAMETER_TYPE"
        );
        assert_eq!(code(r#"{"portable": "yes"}"#), "INVALID_PARAMETER_TYPE");
        assert_eq!(
            code(r#"{"resourceGroupId": "rg-1"}"#),
            "INVALID_PARAMETER_VALUE"
        );
    }

    #[test]
    fn unknown_status_names_are_invalid_values() {
        let params = Params::parse(br#"{"diskStatus": "GONE"}"#).unwrap();
        let error = DiskQuery::from_params(&params).unwrap_err();
        assert_eq!(error.code, "INVALID_PARAMETER_VALUE");
    }
}
