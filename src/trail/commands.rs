//! The `audit` commands of the binary that concern the log: `verify`,
//! `prove` and `keygen`. Each runs with an `audit_reader` login and never
//! needs more (keygen needs no database at all).

use super::checkpoint::{LogKey, open_with_any};
use super::proof::verify_inclusion;
use super::verify::{Anchor, stored_anchors, verify};
use super::{Trail, checkpoint::Checkpoint};
use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use sqlx::PgPool;
use std::path::{Path, PathBuf};
use uuid::Uuid;

/// Recomputes the log and checks every stored checkpoint and every one in
/// `checkpoint_files` (each signed by one of `public_keys`: a log's keys
/// across rotations); an error names the first break.
pub async fn verify_log(
    pool: &PgPool,
    checkpoint_files: &[PathBuf],
    public_keys: &[PathBuf],
) -> anyhow::Result<()> {
    let keys = read_keys(public_keys)?;
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    if !checkpoint_files.is_empty() && keys.is_empty() {
        anyhow::bail!(
            "--checkpoint needs --public-key: a checkpoint is evidence only once its signature is checked"
        );
    }
    let mut anchors = Vec::new();
    for path in checkpoint_files {
        let note =
            std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        let checkpoint = open_with_any(&note, &keys)
            .with_context(|| format!("checkpoint {}", path.display()))?;
        anchors.push(Anchor {
            checkpoint,
            source: path.display().to_string(),
        });
    }
    let mut db = pool
        .acquire()
        .await
        .context("connect to the audit database")?;
    let (stored, unheld) = stored_anchors(&mut db, &keys).await?;
    anchors.extend(stored);
    if keys.is_empty() {
        println!(
            "note: no --public-key given, so the stored checkpoints' signatures were not checked (only their roots)"
        );
    }
    let report = verify(&mut db, &anchors).await?;
    // A break in the tree first: it says what was done to the events; a
    // stored checkpoint that does not hold says less.
    match report.broken.or(unheld) {
        None => {
            println!(
                "intact: {} events, root {}, {} checkpoints hold",
                report.size,
                hex::encode(report.root),
                report.checkpoints
            );
            Ok(())
        }
        Some(broken) => anyhow::bail!("the audit log is broken: {broken}"),
    }
}

/// The verifier keys in `paths`, one per file.
fn read_keys(paths: &[PathBuf]) -> anyhow::Result<Vec<String>> {
    paths
        .iter()
        .map(|path| {
            let key = std::fs::read_to_string(path)
                .with_context(|| format!("read the verifier key {}", path.display()))?;
            Ok(key.trim().to_owned())
        })
        .collect()
}

/// Prints, as JSON, the proof that call `audit_id`'s events are in the log:
/// against the newest checkpoint one of `public_keys` verifies, or, with
/// none, the newest stored one, unverified (and it says so).
pub async fn prove_call(
    pool: &PgPool,
    audit_id: &str,
    public_keys: &[PathBuf],
) -> anyhow::Result<()> {
    let call_id = Uuid::parse_str(audit_id.trim()).context("AUDIT_ID is a UUID")?;
    let trail = Trail::new(pool.clone(), read_keys(public_keys)?);
    let signature_checked = trail.checks_signatures();
    let proof = trail.prove_call(call_id).await?;
    if proof.events.is_empty() {
        anyhow::bail!("no call with audit id {call_id} is in the audit log");
    }
    let Checkpoint { size, root, .. } = proof.checkpoint;
    let included = |e: &super::LoggedEvent| {
        e.in_checkpoint && verify_inclusion(&e.leaf, e.log_index, size, &e.inclusion_path, &root)
    };
    let events: Vec<_> = proof
        .events
        .iter()
        .map(|e| {
            serde_json::json!({
                "log_index": e.log_index,
                "kind": e.kind,
                "leaf": BASE64.encode(&e.leaf),
                "leaf_hash": hex::encode(e.leaf_hash),
                "in_checkpoint": e.in_checkpoint,
                "inclusion_path": e.inclusion_path.iter().map(hex::encode).collect::<Vec<_>>(),
                "included": included(e),
                "verified": signature_checked && included(e),
            })
        })
        .collect();
    let out = serde_json::json!({
        "audit_id": call_id.to_string(),
        "checkpoint": proof.checkpoint_note,
        "tree_size": size,
        "root_hash": hex::encode(root),
        "checkpoint_signature_checked": signature_checked,
        "events": events,
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

/// Writes a new signing key for the log named `origin` to `out` (mode
/// 0600) and prints the verifier key to hand to whoever checks checkpoints.
pub fn generate_key(origin: &str, out: &Path) -> anyhow::Result<()> {
    let (private, public) = LogKey::generate(origin);
    LogKey::from_text(&private).map_err(|e| anyhow::anyhow!("origin {origin:?}: {e}"))?;
    write_private(out, &private)?;
    println!("{public}");
    Ok(())
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("create {} (it must not exist yet)", path.display()))?;
    writeln!(file, "{text}")?;
    Ok(())
}
