//! The disk record the simulator keeps, spelled the way Zenlayer spells it.
//!
//! These types are public because the gateway's tests and its `dev` command
//! seed the inventory with them; their serde names are Zenlayer's wire names
//! (camelCase fields, SCREAMING_SNAKE_CASE enums) so the same JSON works for
//! the control endpoints and for `DescribeDisks`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The instance the sample disks are attached to. Nothing checks that it
/// exists: the simulator models disks, not instances.
const SAMPLE_INSTANCE_ID: &str = "instance-sample";

/// One cloud disk as the simulator knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Disk {
    pub disk_id: String,
    pub disk_name: String,
    pub zone_id: String,
    pub disk_type: DiskType,
    pub disk_status: DiskStatus,
    pub charge_type: ChargeType,
    pub disk_size: u32,
    pub instance_id: Option<String>,
    /// Zenlayer's tags, key to value.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DiskType {
    System,
    Data,
}

/// Zenlayer's `diskStatus` values. `Recycled` means "in the recycle bin",
/// the only state from which `ReleaseDisk` may destroy a disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DiskStatus {
    Creating,
    InUse,
    Available,
    Changing,
    Attaching,
    Detaching,
    Deleting,
    Recycled,
    Recycling,
}

/// Pay-as-you-go (`Postpaid`) or subscription (`Prepaid`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ChargeType {
    Postpaid,
    Prepaid,
}

impl Disk {
    /// A 20 GB pay-as-you-go disk in `HKG-A`, named after its id. Disks in a
    /// state that implies an attachment get an instance id, so that tests
    /// built from this look like something Zenlayer could answer.
    pub fn new(disk_id: &str, disk_type: DiskType, disk_status: DiskStatus) -> Disk {
        let attached = matches!(
            disk_status,
            DiskStatus::InUse | DiskStatus::Attaching | DiskStatus::Detaching
        );
        Disk {
            disk_id: disk_id.to_owned(),
            disk_name: disk_id.to_owned(),
            zone_id: "HKG-A".to_owned(),
            disk_type,
            disk_status,
            charge_type: ChargeType::Postpaid,
            disk_size: 20,
            instance_id: attached.then(|| SAMPLE_INSTANCE_ID.to_owned()),
            tags: BTreeMap::new(),
        }
    }

    /// The same disk with one more tag.
    pub fn tagged(mut self, key: &str, value: &str) -> Disk {
        self.tags.insert(key.to_owned(), value.to_owned());
        self
    }

    fn with_charge_type(mut self, charge_type: ChargeType) -> Disk {
        self.charge_type = charge_type;
        self
    }
}

/// One disk for every answer ReleaseDisk and TerminateDisk can give; the ids
/// say which answer to expect.
pub fn sample_disks() -> Vec<Disk> {
    use DiskStatus::*;
    use DiskType::*;
    vec![
        Disk::new("disk-recycled-data", Data, Recycled),
        Disk::new("disk-in-use", Data, InUse),
        Disk::new("disk-system", System, InUse),
        Disk::new("disk-available", Data, Available),
        Disk::new("disk-recycling", Data, Recycling),
        // A terminated instance's non-portable system disk lands in the
        // recycle bin too, and still cannot be released.
        Disk::new("disk-recycled-system", System, Recycled),
        Disk::new("disk-prepaid", Data, Available).with_charge_type(ChargeType::Prepaid),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disks_use_zenlayer_wire_names() {
        let json = serde_json::to_value(Disk::new("d", DiskType::Data, DiskStatus::InUse)).unwrap();
        assert_eq!(json["diskId"], "d");
        assert_eq!(json["diskType"], "DATA");
        assert_eq!(json["diskStatus"], "IN_USE");
        assert_eq!(json["chargeType"], "POSTPAID");
        assert_eq!(json["instanceId"], SAMPLE_INSTANCE_ID);
    }

    #[test]
    fn a_disk_without_instance_id_deserializes() {
        let disk: Disk = serde_json::from_str(
            r#"{"diskId":"d","diskName":"n","zoneId":"z","diskType":"SYSTEM",
                "diskStatus":"RECYCLED","chargeType":"PREPAID","diskSize":40}"#,
        )
        .unwrap();
        assert_eq!(disk.instance_id, None);
        assert_eq!(disk.disk_status, DiskStatus::Recycled);
    }
}
