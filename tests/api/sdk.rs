//! The simulator is what every test and `dev` trust to be Zenlayer, so it is
//! checked by a client nobody here wrote: Zenlayer's official Python SDK
//! (installed by the test command), signing and reading exactly as it does
//! against Zenlayer, with the clients of both VM API versions.

use crate::helpers::{ACCESS_KEY_ID, ACCESS_KEY_PASSWORD, spawn_simulator};
use std::time::Duration;

#[tokio::test]
async fn zenlayers_python_sdk_signs_reads_and_fails_against_the_simulator_as_against_zenlayer() {
    // Releases finish a moment after they are accepted, as at Zenlayer, so
    // that the SDK sees `DELETING` before the disk goes.
    let simulator = spawn_simulator(Duration::from_secs(1)).await;
    let domain = simulator
        .base_url()
        .trim_start_matches("http://")
        .to_owned();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/sdk/simulator_conformance.py"
    );
    let run = tokio::process::Command::new("python3")
        .args([script, &domain, ACCESS_KEY_ID, ACCESS_KEY_PASSWORD])
        .output();
    let output = tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("the SDK check finishes")
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "the official SDK disagrees with the simulator (is zenlayercloud-sdk-python installed? tests/run installs it):\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        simulator.release_disk_requests(),
        7,
        "every call really reached it"
    );
    assert_eq!(
        simulator.action_requests("TerminateDisk"),
        1,
        "the newer client's TerminateDisk reached it"
    );
}
