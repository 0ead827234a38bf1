//! The client against the simulator on a real TCP port.

use super::*;
use crate::simulator::{self, Disk, DiskStatus, DiskType, SimulatorConfig, SimulatorHandle};
use crate::zenlayer::Credential;
use secrecy::SecretString;
use tokio::net::TcpListener;

const KEY_ID: &str = "AKIDclientTestKey";
const PASSWORD: &str = "client-test-password";

async fn start(disks: Vec<Disk>) -> (SimulatorHandle, ZenlayerClient) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = SimulatorConfig {
        credentials: vec![simulator::Credential::AccessKey {
            id: KEY_ID.into(),
            password: PASSWORD.into(),
        }],
        disks,
        ..Default::default()
    };
    let sim = simulator::spawn(config, listener).await.unwrap();
    let settings = ZenlayerSettings {
        base_url: Url::parse(&sim.base_url()).unwrap(),
        credential: Credential::AccessKey {
            id: KEY_ID.into(),
            password: SecretString::from(PASSWORD),
        },
        api_version: "2023-03-13".into(),
        timeout: Duration::from_secs(10),
        rate_limit_retries: 0,
        retry_backoff: Duration::from_millis(10),
        preflight: true,
    };
    let client = settings.client().unwrap();
    (sim, client)
}

/// A disk that carries many long tags (as a team's cost, owner and ticket
/// labels make it) is described in full: an answer of several KiB is well
/// within what the gateway reads, and none of its tags is lost.
#[tokio::test]
async fn a_describe_answer_of_several_kib_is_read_whole() {
    let mut disk = Disk::new("disk-many-tags", DiskType::Data, DiskStatus::Recycled);
    for n in 0..20 {
        disk = disk.tagged(&format!("label-{n:02}"), &"v".repeat(200));
    }
    let (_sim, client) = start(vec![disk]).await;
    let disk_id = DiskId::parse("disk-many-tags").unwrap();
    let described = client
        .describe_disk(&disk_id, Deadline::NONE, None)
        .await
        .expect("the answer is read");
    let entry = described.disk.expect("the disk is listed");
    assert!(
        entry.entry.to_string().len() > 4 * 1024,
        "the answer is several KiB"
    );
    assert_eq!(entry.tags.len(), 20);
    assert_eq!(entry.tags["label-19"], "v".repeat(200));
}

#[tokio::test]
async fn several_disks_are_described_at_once_each_in_the_order_asked() {
    let (_sim, client) = start(vec![
        Disk::new("disk-b", DiskType::Data, DiskStatus::Recycled),
        Disk::new("disk-a", DiskType::Data, DiskStatus::Deleting),
    ])
    .await;
    let ids: Vec<DiskId> = ["disk-a", "disk-gone", "disk-b"]
        .iter()
        .map(|id| DiskId::parse(id).unwrap())
        .collect();
    let described = client.describe_disks(&ids, Deadline::NONE).await.unwrap();
    let statuses: Vec<Option<&str>> = described
        .disks
        .iter()
        .map(|d| d.as_ref().map(|d| d.disk_status.as_deref().unwrap_or("")))
        .collect();
    assert_eq!(statuses, [Some("DELETING"), None, Some("RECYCLED")]);
    assert!(!described.request_id.is_empty());
}

#[test]
fn an_answer_listing_fewer_disks_than_it_counts_is_refused_rather_than_read_as_gone() {
    let listed = serde_json::json!({
        "totalCount": 2,
        "dataSet": [{"diskId": "disk-a", "diskStatus": "RECYCLED"}]
    });
    assert_eq!(
        entries_of(&listed, &["disk-a", "disk-b"]).unwrap_err(),
        "listed 1 disks of a totalCount of 2"
    );
    let uncounted = serde_json::json!({"dataSet": []});
    assert!(entries_of(&uncounted, &["disk-a"]).is_err());
    let whole = serde_json::json!({
        "totalCount": 1,
        "dataSet": [{"diskId": "disk-a", "diskStatus": "RECYCLED"}]
    });
    let entries = entries_of(&whole, &["disk-b", "disk-a"]).unwrap();
    assert!(entries[0].is_none());
    assert_eq!(
        entries[1].as_ref().unwrap().disk_status.as_deref(),
        Some("RECYCLED")
    );
}

/// A hundred disks with many long tags make an answer far larger than one
/// about a single disk: it is read whole, not cut short and refused.
#[tokio::test]
async fn an_answer_about_a_hundred_heavily_tagged_disks_is_read_whole() {
    let disks: Vec<Disk> = (0..100)
        .map(|i| {
            let mut disk = Disk::new(
                &format!("disk-{i:03}"),
                DiskType::Data,
                DiskStatus::Recycled,
            );
            for n in 0..20 {
                disk = disk.tagged(&format!("label-{n:02}"), &"v".repeat(200));
            }
            disk
        })
        .collect();
    let (_sim, client) = start(disks).await;
    let ids: Vec<DiskId> = (0..100)
        .map(|i| DiskId::parse(&format!("disk-{i:03}")).unwrap())
        .collect();
    let described = client
        .describe_disks(&ids, Deadline::NONE)
        .await
        .expect("the answer is read whole");
    let size: usize = described
        .disks
        .iter()
        .map(|d| d.as_ref().expect("listed").entry.to_string().len())
        .sum();
    assert!(size > 400 * 1024, "an answer of {size} bytes");
    assert!(
        described
            .disks
            .iter()
            .all(|d| d.as_ref().unwrap().tags.len() == 20)
    );
}

/// A call still waiting for Zenlayer must never count as abandoned: with
/// the pre-flight, it may look (with every retry) before it releases.
#[test]
fn the_longest_call_covers_the_look_as_well_as_the_release() {
    let settings = |preflight| ZenlayerSettings {
        base_url: Url::parse("http://127.0.0.1:1").unwrap(),
        credential: Credential::AccessKey {
            id: KEY_ID.into(),
            password: SecretString::from(PASSWORD),
        },
        api_version: "2023-03-13".into(),
        timeout: Duration::from_secs(10),
        rate_limit_retries: 3,
        retry_backoff: Duration::from_secs(1),
        preflight,
    };
    let released_only = settings(false).client().unwrap().longest_call();
    let looked_first = settings(true).client().unwrap().longest_call();
    assert!(
        released_only >= Duration::from_secs(40),
        "{released_only:?}"
    );
    assert_eq!(looked_first, released_only * 2);
}
