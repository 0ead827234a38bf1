//! The simulator's disks and the state changes Zenlayer's disk actions make:
//! `TerminateDisk` puts a pay-as-you-go data disk into the recycle bin and
//! `ReleaseDisk` destroys a disk from the bin. Each refusal uses the code
//! Zenlayer uses for it, because the gateway decides by code.
//!
//! Upstream a release finishes asynchronously: the disk shows `DELETING`
//! for a while, then is no longer listed. With a release time of zero (the
//! default) it is gone before the answer is sent, which keeps most tests
//! deterministic; a release time above zero imitates Zenlayer's delay.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use http::StatusCode;
use std::time::Duration;
use tokio::time::Instant;

use super::disk::{ChargeType, Disk, DiskStatus, DiskType};
use super::reply::ApiError;

/// A disk plus what Zenlayer records about it but a caller does not choose.
#[derive(Debug, Clone)]
pub(crate) struct StoredDisk {
    pub disk: Disk,
    pub create_time: DateTime<Utc>,
    /// For a disk being released: when it stops being listed.
    gone_at: Option<Instant>,
}

/// All disks, ordered by id so listings are stable.
#[derive(Debug, Default)]
pub(crate) struct Inventory {
    disks: BTreeMap<String, StoredDisk>,
    /// How long a released disk stays `DELETING` before it is gone.
    release_takes: Duration,
    /// Disks being released, in the order they go (all take as long).
    going: std::collections::VecDeque<(Instant, String)>,
}

impl Inventory {
    pub fn new(disks: Vec<Disk>) -> Inventory {
        let mut inventory = Inventory::default();
        for disk in disks {
            inventory.put(disk);
        }
        inventory
    }

    /// Releases take `release_takes` to finish.
    pub fn with_release_time(mut self, release_takes: Duration) -> Inventory {
        self.release_takes = release_takes;
        self
    }

    /// Forgets the disks whose release has finished by now; every request
    /// and every look from a handle calls this first. It looks only at the
    /// disks being released, so that a large inventory costs nothing here.
    pub fn settle(&mut self) {
        let now = Instant::now();
        while let Some((gone_at, _)) = self.going.front()
            && *gone_at <= now
        {
            let (gone_at, disk_id) = self.going.pop_front().expect("just looked");
            // Unless it was put back (with another status) meanwhile.
            if self
                .disks
                .get(&disk_id)
                .is_some_and(|stored| stored.gone_at == Some(gone_at))
            {
                self.disks.remove(&disk_id);
            }
        }
    }

    /// Adds or replaces a disk. A replaced disk keeps its creation time, as
    /// it would upstream when only its state changes.
    pub fn put(&mut self, disk: Disk) {
        let create_time = self
            .disks
            .get(&disk.disk_id)
            .map_or_else(Utc::now, |stored| stored.create_time);
        let stored = StoredDisk {
            disk,
            create_time,
            gone_at: None,
        };
        self.disks.insert(stored.disk.disk_id.clone(), stored);
    }

    /// Takes a disk out, as if its release had finished.
    pub fn remove(&mut self, disk_id: &str) -> Option<Disk> {
        self.disks.remove(disk_id).map(|stored| stored.disk)
    }

    pub fn get(&self, disk_id: &str) -> Option<&Disk> {
        self.disks.get(disk_id).map(|stored| &stored.disk)
    }

    pub fn iter(&self) -> impl Iterator<Item = &StoredDisk> {
        self.disks.values()
    }

    /// The stored disk with this id, if any.
    pub fn stored(&self, disk_id: &str) -> Option<&StoredDisk> {
        self.disks.get(disk_id)
    }

    pub fn len(&self) -> usize {
        self.disks.len()
    }

    pub fn release(&mut self, disk_id: &str) -> Result<(), ApiError> {
        let disk = self.existing(disk_id)?;
        refuse_system_disk(disk)?;
        match disk.disk_status {
            DiskStatus::Recycled => {}
            DiskStatus::Recycling => {
                return Err(ApiError::bad_request(
                    "UNSUPPORTED_OPERATION_RECYCLE_STATUS",
                    "the disk is still being moved into the recycle bin",
                ));
            }
            _ => {
                return Err(ApiError::bad_request(
                    "UNSUPPORTED_OPERATION_DISK_NOT_BEING_RECYCLE",
                    "the disk is not in the recycle bin",
                ));
            }
        }
        if self.release_takes.is_zero() {
            self.disks.remove(disk_id);
        } else if let Some(stored) = self.disks.get_mut(disk_id) {
            let gone_at = Instant::now() + self.release_takes;
            stored.disk.disk_status = DiskStatus::Deleting;
            stored.gone_at = Some(gone_at);
            self.going.push_back((gone_at, disk_id.to_owned()));
        }
        Ok(())
    }

    pub fn terminate(&mut self, disk_id: &str) -> Result<(), ApiError> {
        let disk = self.existing(disk_id)?;
        refuse_system_disk(disk)?;
        if matches!(
            disk.disk_status,
            DiskStatus::Recycled | DiskStatus::Recycling
        ) {
            return Err(ApiError::bad_request(
                "UNSUPPORTED_OPERATION_DISK_BEING_RECYCLE",
                "the disk is already in the recycle bin",
            ));
        }
        if disk.charge_type != ChargeType::Postpaid {
            return Err(ApiError::bad_request(
                "UNSUPPORTED_OPERATION_DISK_CHARGE_TYPE",
                "only pay-as-you-go disks can be terminated",
            ));
        }
        if disk.disk_status != DiskStatus::Available {
            return Err(ApiError::bad_request(
                "UNSUPPORTED_OPERATION_DISK_STATUS",
                "only an AVAILABLE (detached) disk can be terminated",
            ));
        }
        self.set_status(disk_id, DiskStatus::Recycled);
        Ok(())
    }

    fn existing(&self, disk_id: &str) -> Result<&Disk, ApiError> {
        self.get(disk_id).ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "INVALID_DISK_NOT_FOUND",
                format!("disk {disk_id} does not exist"),
            )
        })
    }

    fn set_status(&mut self, disk_id: &str, status: DiskStatus) {
        if let Some(stored) = self.disks.get_mut(disk_id) {
            stored.disk.disk_status = status;
        }
    }
}

fn refuse_system_disk(disk: &Disk) -> Result<(), ApiError> {
    if disk.disk_type == DiskType::System {
        return Err(ApiError::bad_request(
            "UNSUPPORTED_OPERATION_DISK_SYSTEM_TYPE",
            "system disks cannot be released or terminated",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::disk::sample_disks;
    use super::*;

    fn code(result: Result<(), ApiError>) -> String {
        result.unwrap_err().code
    }

    #[test]
    fn every_sample_disk_gets_its_documented_release_answer() {
        let mut inventory = Inventory::new(sample_disks());
        assert_eq!(inventory.release("disk-recycled-data"), Ok(()));
        assert_eq!(
            code(inventory.release("disk-recycled-data")),
            "INVALID_DISK_NOT_FOUND"
        );
        assert_eq!(
            code(inventory.release("disk-system")),
            "UNSUPPORTED_OPERATION_DISK_SYSTEM_TYPE"
        );
        assert_eq!(
            code(inventory.release("disk-recycled-system")),
            "UNSUPPORTED_OPERATION_DISK_SYSTEM_TYPE"
        );
        assert_eq!(
            code(inventory.release("disk-in-use")),
            "UNSUPPORTED_OPERATION_DISK_NOT_BEING_RECYCLE"
        );
        assert_eq!(
            code(inventory.release("disk-recycling")),
            "UNSUPPORTED_OPERATION_RECYCLE_STATUS"
        );
    }

    #[test]
    fn terminate_only_recycles_available_postpaid_data_disks() {
        let mut inventory = Inventory::new(sample_disks());
        assert_eq!(
            code(inventory.terminate("disk-in-use")),
            "UNSUPPORTED_OPERATION_DISK_STATUS"
        );
        assert_eq!(
            code(inventory.terminate("disk-prepaid")),
            "UNSUPPORTED_OPERATION_DISK_CHARGE_TYPE"
        );
        assert_eq!(
            code(inventory.terminate("disk-system")),
            "UNSUPPORTED_OPERATION_DISK_SYSTEM_TYPE"
        );
        assert_eq!(
            code(inventory.terminate("missing")),
            "INVALID_DISK_NOT_FOUND"
        );
        assert_eq!(inventory.terminate("disk-available"), Ok(()));
        assert_eq!(
            inventory.get("disk-available").unwrap().disk_status,
            DiskStatus::Recycled
        );
        assert_eq!(
            code(inventory.terminate("disk-available")),
            "UNSUPPORTED_OPERATION_DISK_BEING_RECYCLE"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_release_shows_deleting_then_the_disk_is_gone() {
        let mut inventory =
            Inventory::new(sample_disks()).with_release_time(Duration::from_secs(5));
        assert_eq!(inventory.release("disk-recycled-data"), Ok(()));
        inventory.settle();
        assert_eq!(
            inventory.get("disk-recycled-data").unwrap().disk_status,
            DiskStatus::Deleting
        );
        assert_eq!(
            code(inventory.release("disk-recycled-data")),
            "UNSUPPORTED_OPERATION_DISK_NOT_BEING_RECYCLE"
        );
        tokio::time::advance(Duration::from_secs(6)).await;
        inventory.settle();
        assert!(inventory.get("disk-recycled-data").is_none());
    }

    #[test]
    fn replacing_a_disk_keeps_its_creation_time() {
        let mut inventory = Inventory::new(sample_disks());
        let before = inventory.disks["disk-in-use"].create_time;
        inventory.put(Disk::new(
            "disk-in-use",
            DiskType::Data,
            DiskStatus::Recycled,
        ));
        assert_eq!(inventory.disks["disk-in-use"].create_time, before);
        assert_eq!(
            inventory.get("disk-in-use").unwrap().disk_status,
            DiskStatus::Recycled
        );
    }
}
