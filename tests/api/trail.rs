//! The verifiable audit log: receipts, inclusion and consistency proofs
//! checked by a verifier written from README alone, checkpoints that are
//! never signed over a rewritten history, and `audit verify` catching each
//! kind of tampering by a superuser with the append-only guard disabled —
//! in the manner of aws-cli's CloudTrail log-validation tests.

use crate::helpers::{
    AppOptions, TestApp, admin_database_url, another_gateway, as_gateway, assert_error, command,
    eventually, login_in, operator_login, request, spawn_app_with, spawn_app_with_settings,
    test_settings, unauthenticated_request,
};
use crate::processes::GatewayProcess;
use base64::Engine as _;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::Code;
use uuid::Uuid;
use zenlayer_gateway::metrics::Metrics;
use zenlayer_gateway::pb::{
    ConsistencyProofRequest, GetReleaseRequest, ReleaseDiskResponse, ReleaseProof,
};
use zenlayer_gateway::simulator::{Disk, DiskStatus, DiskType};
use zenlayer_gateway::trail::Checkpointer;
use zenlayer_gateway::trail::checkpoint::LogKey;

/// A log signing key on disk, with its verifier key.
struct LogKeys {
    dir: tempfile::TempDir,
}

impl LogKeys {
    /// A key made as an operator makes one: `audit keygen`, whose standard
    /// output is the verifier key.
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let public = keygen(&dir.path().join("log.key"));
        assert!(public.status.success(), "{public:?}");
        std::fs::write(dir.path().join("log.pub"), public.stdout).unwrap();
        Self { dir }
    }

    fn private(&self) -> String {
        self.dir.path().join("log.key").display().to_string()
    }

    fn public(&self) -> PathBuf {
        self.dir.path().join("log.pub")
    }

    /// Keeps `note` outside the database, as a security team's cron job would.
    fn keep(&self, name: &str, note: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, note).unwrap();
        path
    }
}

/// Runs `zenlayer-gateway audit keygen`, writing the private key to `out`.
fn keygen(out: &Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_zenlayer-gateway"))
        .args([
            "audit",
            "keygen",
            "--origin",
            "audit.test/zenlayer-gateway",
            "--out",
        ])
        .arg(out)
        .env_clear()
        .output()
        .unwrap()
}

fn signing(keys: &LogKeys) -> HashMap<String, String> {
    HashMap::from([
        ("AUDIT_LOG_SIGNING_KEY_FILE".to_owned(), keys.private()),
        ("AUDIT_CHECKPOINT_INTERVAL_MS".to_owned(), "100".to_owned()),
    ])
}

async fn signing_app(keys: &LogKeys) -> TestApp {
    signing_app_with(keys, &[]).await
}

/// A gateway signing with `keys`, with `extra` settings over the signing ones.
async fn signing_app_with(keys: &LogKeys, extra: &[(&str, &str)]) -> TestApp {
    let mut settings = signing(keys);
    settings.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    spawn_app_with(AppOptions {
        settings,
        ..Default::default()
    })
    .await
}

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part);
    }
    hasher.finalize().into()
}

fn node(left: &[u8], right: &[u8]) -> [u8; 32] {
    sha256(&[&[1], left, right])
}

/// RFC 9162 §2.1.3.2, as README points to it: the root an inclusion proof
/// leads to.
fn root_from_inclusion(
    index: u64,
    size: u64,
    leaf_hash: &[u8],
    path: &[Vec<u8>],
) -> Option<Vec<u8>> {
    if index >= size {
        return None;
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = leaf_hash.to_vec();
    for p in path {
        if s == 0 {
            return None;
        }
        if f & 1 == 1 || f == s {
            r = node(p, &r).to_vec();
            if f & 1 == 0 {
                while f & 1 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            }
        } else {
            r = node(&r, p).to_vec();
        }
        f >>= 1;
        s >>= 1;
    }
    (s == 0).then_some(r)
}

/// RFC 9162 §2.1.4.2: whether `path` proves (first, first_root) a prefix of
/// (second, second_root).
fn consistent(
    first: u64,
    first_root: &[u8],
    second: u64,
    second_root: &[u8],
    path: &[Vec<u8>],
) -> bool {
    if first == second {
        return path.is_empty() && first_root == second_root;
    }
    let mut path = path.to_vec();
    if first.is_power_of_two() {
        path.insert(0, first_root.to_vec());
    }
    let (mut f, mut s) = (first - 1, second - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let (mut fr, mut sr) = (path[0].clone(), path[0].clone());
    for c in &path[1..] {
        if s == 0 {
            return false;
        }
        if f & 1 == 1 || f == s {
            fr = node(c, &fr).to_vec();
            sr = node(c, &sr).to_vec();
            if f & 1 == 0 {
                while f & 1 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            }
        } else {
            sr = node(&sr, c).to_vec();
        }
        f >>= 1;
        s >>= 1;
    }
    fr == first_root && sr == second_root && s == 0
}

/// README's leaf encoding of a field.
fn field(value: Option<&[u8]>) -> Vec<u8> {
    match value {
        None => vec![0],
        Some(bytes) => [&[1u8][..], &(bytes.len() as u32).to_be_bytes(), bytes].concat(),
    }
}

/// The attempt's leaf bytes, from its row as `psql` would show it, per
/// README — independent of the gateway's encoder.
async fn attempt_leaf_from_row(app: &TestApp, call_id: Uuid, log_index: i64) -> Vec<u8> {
    let row: (serde_json::Value,) = sqlx::query_as(
        "SELECT to_jsonb(a) || jsonb_build_object(
                'received_us', (extract(epoch FROM received_at) * 1000000)::bigint,
                'recorded_us', (extract(epoch FROM recorded_at) * 1000000)::bigint,
                'snapshot_text', disk_snapshot::text, 'tags_text', disk_tags::text)
         FROM audit.release_attempts a WHERE call_id = $1",
    )
    .bind(call_id)
    .fetch_one(&app.db)
    .await
    .unwrap();
    let r = row.0;
    let text = |name: &str| field(r[name].as_str().map(str::as_bytes));
    let int = |name: &str| {
        field(
            r[name]
                .as_i64()
                .map(|v| v.to_be_bytes())
                .as_ref()
                .map(|b| &b[..]),
        )
    };
    let uuid = |name: &str| {
        field(
            r[name]
                .as_str()
                .map(|u| Uuid::parse_str(u).unwrap().as_bytes().to_vec())
                .as_deref(),
        )
    };
    let texts = |name: &str| match r[name].as_array() {
        None => field(None),
        Some(items) => {
            let mut inner = (items.len() as u32).to_be_bytes().to_vec();
            for item in items {
                inner.extend(field(item.as_str().map(str::as_bytes)));
            }
            field(Some(&inner))
        }
    };
    let roles = texts("roles");
    [
        b"zenlayer-gateway/attempt/v1\n".to_vec(),
        field(Some(&log_index.to_be_bytes())),
        uuid("call_id"),
        int("received_us"),
        int("recorded_us"),
        text("principal"),
        text("issuer"),
        text("client_id"),
        text("token_jti"),
        text("token_fingerprint"),
        roles,
        text("peer_addr"),
        text("peer_identity"),
        text("user_agent"),
        text("x_request_id"),
        text("trace_id"),
        text("disk_id"),
        text("reason"),
        text("idempotency_key"),
        uuid("replay_of"),
        text("decision"),
        text("decision_reason"),
        text("refusal_grpc_code"),
        text("refusal_message"),
        text("snapshot_text"),
        text("disk_name"),
        text("zone_id"),
        int("disk_size_gib"),
        text("disk_type"),
        text("disk_status_before"),
        text("tags_text"),
        text("policy_set_hash"),
        text("policy_decision"),
        texts("policy_ids"),
        text("shadow_policy_set_hash"),
        text("shadow_policy_decision"),
        texts("shadow_policy_ids"),
    ]
    .concat()
}

/// The tree size of the largest checkpoint stored.
async fn newest_checkpoint_size(app: &TestApp) -> u64 {
    let newest: i64 = sqlx::query_scalar("SELECT max(tree_size) FROM audit.checkpoints")
        .fetch_one(&app.db)
        .await
        .unwrap();
    newest as u64
}

/// The call's proof once the newest checkpoint covers all its events.
async fn proof_once_checkpointed(app: &TestApp, audit_id: &str) -> ReleaseProof {
    let client = app.disks().await;
    eventually(
        Duration::from_secs(10),
        "a checkpoint covering the call",
        || {
            let mut client = client.clone();
            let mut read = tonic::Request::new(GetReleaseRequest {
                audit_id: audit_id.to_owned(),
            });
            *read.metadata_mut() = request("any").metadata().clone();
            async move {
                let proof = client.get_release_proof(read).await.ok()?.into_inner();
                let covered =
                    !proof.events.is_empty() && proof.events.iter().all(|e| e.in_checkpoint);
                covered.then_some(proof)
            }
        },
    )
    .await
}

fn note_root(note: &str) -> (u64, Vec<u8>) {
    let mut lines = note.lines();
    lines.next();
    let size = lines.next().unwrap().parse().unwrap();
    let root = base64::engine::general_purpose::STANDARD
        .decode(lines.next().unwrap())
        .unwrap();
    (size, root)
}

#[tokio::test]
async fn a_release_has_a_receipt_whose_inclusion_proof_verifies_against_the_signed_checkpoint() {
    let keys = LogKeys::new();
    let app = signing_app(&keys).await;
    let response = app
        .release(request("disk-recycled-data"))
        .await
        .unwrap()
        .into_inner();
    let refused = app
        .release(unauthenticated_request("disk-in-use"))
        .await
        .unwrap_err();
    let metadata = assert_error(&refused, Code::Unauthenticated, "TOKEN_MISSING");
    let refusal_index: u64 = metadata["audit_log_index"].parse().unwrap();

    let proof = proof_once_checkpointed(&app, &response.audit_id).await;
    let (size, root) = note_root(&proof.checkpoint);
    assert_eq!(
        (size, root.clone()),
        (proof.tree_size, proof.root_hash.clone())
    );
    // The note is signed by the log's key.
    let public = std::fs::read_to_string(keys.public()).unwrap();
    zenlayer_gateway::trail::checkpoint::open(&proof.checkpoint, public.trim()).unwrap();

    let kinds: Vec<&str> = proof.events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["attempt", "outcome"]);
    let attempt = &proof.events[0];
    assert_eq!(
        Some(attempt.log_index),
        response.audit_log_index,
        "the receipt names the attempt"
    );
    assert_ne!(attempt.log_index, refusal_index);
    let call_id = Uuid::parse_str(&response.audit_id).unwrap();
    let recomputed = attempt_leaf_from_row(&app, call_id, attempt.log_index as i64).await;
    assert_eq!(
        recomputed, attempt.leaf,
        "the leaf is README's encoding of the row"
    );
    for event in &proof.events {
        let leaf_hash = sha256(&[&[0], &event.leaf]);
        assert_eq!(leaf_hash.to_vec(), event.leaf_hash);
        let reached = root_from_inclusion(event.log_index, size, &leaf_hash, &event.inclusion_path);
        assert_eq!(
            reached,
            Some(root.clone()),
            "{} {}",
            event.kind,
            event.log_index
        );
        let forged = sha256(&[&[0], b"forged"]);
        let reached = root_from_inclusion(event.log_index, size, &forged, &event.inclusion_path);
        assert_ne!(reached, Some(root.clone()));
    }
    // `audit prove` says the same, as JSON, each proof checked, against a
    // checkpoint whose signature it checked with the key given.
    let proved = audit_prove(&app, &response.audit_id, Some(&keys.public())).await;
    assert_eq!(proved["events"][0]["log_index"], attempt.log_index);
    assert!(proved["tree_size"].as_u64().unwrap() >= size);
    assert_eq!(proved["checkpoint_signature_checked"], true);
    for event in proved["events"].as_array().unwrap() {
        assert_eq!(event["included"], true, "{event}");
        assert_eq!(event["verified"], true, "{event}");
    }
    // Without the key, the paths still lead to the root, but nothing is
    // called verified: the checkpoint's signature was not checked.
    let unchecked = audit_prove(&app, &response.audit_id, None).await;
    assert_eq!(unchecked["checkpoint_signature_checked"], false);
    for event in unchecked["events"].as_array().unwrap() {
        assert_eq!(event["included"], true, "{event}");
        assert_eq!(event["verified"], false, "{event}");
    }
    // The admin listener serves the same newest checkpoint.
    let served = served_checkpoint(&app).await;
    assert!(note_root(&served).0 >= size);
}

#[tokio::test]
async fn consistency_proofs_between_checkpoints_verify_and_bad_sizes_are_refused() {
    let keys = LogKeys::new();
    let app = signing_app(&keys).await;
    let first = app
        .release(request("disk-recycled-data"))
        .await
        .unwrap()
        .into_inner();
    let before = proof_once_checkpointed(&app, &first.audit_id).await;
    let mut last = String::new();
    for i in 0..5 {
        let disk = format!("disk-more-{i}");
        app.simulator
            .put_disk(Disk::new(&disk, DiskType::Data, DiskStatus::Recycled));
        last = app
            .release(request(&disk))
            .await
            .unwrap()
            .into_inner()
            .audit_id;
    }
    // A later checkpoint: the one that covers the last call.
    let after = proof_once_checkpointed(&app, &last).await;
    assert!(after.tree_size > before.tree_size);

    let mut client = app.disks().await;
    let proof = client
        .get_consistency_proof(consistency_request(before.tree_size, after.tree_size))
        .await
        .unwrap()
        .into_inner();
    assert!(consistent(
        before.tree_size,
        &before.root_hash,
        after.tree_size,
        &after.root_hash,
        &proof.path
    ));
    assert!(!consistent(
        before.tree_size,
        &sha256(&[b"another history"]),
        after.tree_size,
        &after.root_hash,
        &proof.path
    ));
    // A tree is consistent with itself, and the proof of it is empty.
    let same = client
        .get_consistency_proof(consistency_request(after.tree_size, after.tree_size))
        .await
        .unwrap()
        .into_inner();
    assert!(same.path.is_empty(), "{:?}", same.path);
    let status = client
        .get_consistency_proof(consistency_request(after.tree_size, before.tree_size))
        .await
        .unwrap_err();
    assert_error(&status, Code::InvalidArgument, "INVALID_TREE_SIZES");
    let status = client
        .get_consistency_proof(tonic::Request::new(ConsistencyProofRequest {
            from_size: 1,
            to_size: 2,
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
}

/// A `GetConsistencyProof` call with a token allowed to read the trail.
fn consistency_request(from_size: u64, to_size: u64) -> tonic::Request<ConsistencyProofRequest> {
    let mut call = tonic::Request::new(ConsistencyProofRequest { from_size, to_size });
    *call.metadata_mut() = request("x").metadata().clone();
    call
}

/// Runs `zenlayer-gateway audit verify` as an `audit_reader` login.
async fn verify(database_url: &str, keys: &LogKeys, kept: &[&Path]) -> (bool, String) {
    verify_with(database_url, Some(&keys.public()), kept).await
}

/// `audit verify`, with the verifier key `public_key` if there is one.
async fn verify_with(
    database_url: &str,
    public_key: Option<&Path>,
    kept: &[&Path],
) -> (bool, String) {
    let keys: Vec<PathBuf> = public_key.into_iter().map(Path::to_path_buf).collect();
    verify_with_keys(database_url, &keys, kept).await
}

/// `audit verify`, with every verifier key in `public_keys`.
async fn verify_with_keys(
    database_url: &str,
    public_keys: &[PathBuf],
    kept: &[&Path],
) -> (bool, String) {
    let reader = reader_login(database_url).await;
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_zenlayer-gateway"));
    command
        .args(["audit", "verify"])
        .env_clear()
        .env("DATABASE_URL", reader);
    for key in public_keys {
        command.arg("--public-key").arg(key);
    }
    for path in kept {
        command.arg("--checkpoint").arg(path);
    }
    let out = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("audit verify finishes")
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

/// `database_url` as a login that is only a member of `audit_reader`.
async fn reader_login(database_url: &str) -> String {
    let pool = sqlx::PgPool::connect(database_url).await.unwrap();
    let url = login_in(&pool, database_url, "audit_reader_test", "audit_reader").await;
    pool.close().await;
    url
}

/// A copy of `database_url`'s database, for one tampering.
async fn copy_of(database_url: &str, name: &str) -> String {
    let source = reqwest::Url::parse(database_url).unwrap();
    let source_name = source.path().trim_start_matches('/').to_owned();
    let admin = sqlx::PgPool::connect(&admin_database_url()).await.unwrap();
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()")
        .bind(&source_name)
        .execute(&admin)
        .await
        .unwrap();
    let copy = format!("{source_name}_{name}");
    // The names are the test's own, never a caller's.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE DATABASE \"{copy}\" TEMPLATE \"{source_name}\""
    )))
    .execute(&admin)
    .await
    .unwrap();
    admin.close().await;
    let mut url = source;
    url.set_path(&copy);
    url.to_string()
}

/// Runs `sql` as a superuser with every trigger (the append-only guard,
/// the log's numbering, foreign keys) switched off.
async fn tamper(database_url: &str, sql: &str) {
    use sqlx::Connection as _;
    let mut db = sqlx::PgConnection::connect(database_url).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "SET session_replication_role = replica; {sql}"
    )))
    .execute(&mut db)
    .await
    .unwrap();
}

/// The log's leaves and subtrees recomputed from the rows as they are now,
/// as a forger who controls the database would.
const REBUILD_TREE: &str = "
    DELETE FROM audit.log_nodes;
    SELECT audit.add_leaves(0, ARRAY(
        SELECT CASE e.kind
            WHEN 'attempt' THEN (SELECT audit.attempt_leaf(e.log_index, a) FROM audit.release_attempts a WHERE a.call_id = e.call_id)
            WHEN 'outcome' THEN (SELECT audit.outcome_leaf(e.log_index, o) FROM audit.release_outcomes o WHERE o.outcome_id = e.row_id)
            ELSE (SELECT audit.confirmation_leaf(e.log_index, c) FROM audit.release_confirmations c WHERE c.confirmation_id = e.row_id)
        END FROM audit.events e ORDER BY e.log_index));
    UPDATE audit.tree_head SET size = (SELECT count(*) FROM audit.events);";

/// The events from index 10 on removed, with their rows and leaves, and
/// the log's counter moved back.
const TRUNCATE_TO_10: &str = "
    DELETE FROM audit.release_outcomes o USING audit.events e
        WHERE e.kind = 'outcome' AND e.row_id = o.outcome_id AND e.log_index >= 10;
    DELETE FROM audit.release_attempts a USING audit.events e
        WHERE e.kind = 'attempt' AND e.call_id = a.call_id AND e.log_index >= 10;
    DELETE FROM audit.log_nodes WHERE level = 0 AND node_index >= 10;
    DELETE FROM audit.events WHERE log_index >= 10;
    UPDATE audit.log_head SET size = 10;";

#[tokio::test]
async fn audit_verify_names_each_kind_of_tampering_and_passes_an_untouched_trail() {
    let keys = LogKeys::new();
    // No confirmations while the trail is built (the tests' follow-up sweeps
    // only at start-up): its size is known.
    let app = signing_app(&keys).await;
    let mut calls = Vec::new();
    for i in 0..6 {
        let disk = format!("disk-trail-{i}");
        app.simulator
            .put_disk(Disk::new(&disk, DiskType::Data, DiskStatus::Recycled));
        calls.push(app.release(request(&disk)).await.unwrap().into_inner());
    }
    app.release(unauthenticated_request("disk-trail-0"))
        .await
        .unwrap_err();
    let last = calls.last().unwrap().audit_id.clone();
    // 6 attempts, 6 outcomes, 1 refusal, all under the kept checkpoint (a
    // checkpoint signed before the refusal covers the last call too).
    let proof = eventually(
        Duration::from_secs(20),
        "a checkpoint of all 13 events",
        || async {
            let proof = proof_once_checkpointed(&app, &last).await;
            (proof.tree_size >= 13).then_some(proof)
        },
    )
    .await;
    assert_eq!(proof.tree_size, 13);
    let kept = keys.keep("kept.checkpoint", &proof.checkpoint);
    let database_url = app.database_url.clone();
    app.shut_down().await.unwrap();

    let (ok, said) = verify(&database_url, &keys, &[&kept]).await;
    assert!(ok, "an untouched trail verifies: {said}");
    assert!(said.contains("intact: 13 events"), "{said}");

    let third = &calls[2].audit_id;
    let fourth = &calls[3].audit_id;
    let attempt_gone = format!("leaf 6: its attempt row {fourth} is missing");
    let entry_changed = |index: u64, kind: &str, id: &str| {
        format!(
            "leaf {index}: the log entry names a call or time that its {kind} row {id} does not hold"
        )
    };
    let third_outcome = outcome_id_of(&database_url, third).await;
    let outcome_entry_changed = entry_changed(5, "outcome", &third_outcome.to_string());
    let attempt_entry_changed = entry_changed(4, "attempt", third);
    let attempt_changed = format!("leaf 4: the attempt row {third} does not match the leaf");
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "changed",
            format!("UPDATE audit.release_attempts SET reason = 'nothing to see' WHERE call_id = '{third}'"),
            "row was changed",
        ),
        (
            "deleted",
            format!("DELETE FROM audit.release_outcomes WHERE call_id = '{third}'"),
            // Each call's attempt and outcome are two events in a row.
            "leaf 5: its outcome row",
        ),
        (
            // The report names the call whose attempt is gone.
            "attempt deleted",
            format!("DELETE FROM audit.release_attempts WHERE call_id = '{fourth}'"),
            &attempt_gone,
        ),
        (
            "forged",
            "INSERT INTO audit.release_attempts (call_id, received_at, x_request_id, trace_id, disk_id, decision)
             VALUES (gen_random_uuid(), now() - interval '1 day', 'r', 't', 'disk-never-asked', 'allowed')"
                .to_owned(),
            "forged",
        ),
        (
            "swapped",
            "UPDATE audit.events SET log_index = 1000000 WHERE log_index = 4;
             UPDATE audit.events SET log_index = 4 WHERE log_index = 5;
             UPDATE audit.events SET log_index = 5 WHERE log_index = 1000000;"
                .to_owned(),
            "leaf 4:",
        ),
        (
            "truncated",
            format!("{TRUNCATE_TO_10} UPDATE audit.tree_head SET size = 10;"),
            "the newest events were removed",
        ),
        (
            // Every row untouched, but a stored subtree the root is made
            // from changed: the proofs served from it would not verify.
            "subtrees",
            "UPDATE audit.log_nodes SET hash = sha256('\\x00'::bytea) WHERE level = 3 AND node_index = 0"
                .to_owned(),
            "the stored subtree at level 3, index 0 (leaves 0 to 7)",
        ),
        (
            // A subtree no root uses but proofs do: the inclusion proofs of
            // leaves 2 and 3 go through it.
            "interior_subtree",
            "UPDATE audit.log_nodes SET hash = sha256('\\x00'::bytea) WHERE level = 1 AND node_index = 0"
                .to_owned(),
            "the stored subtree at level 1, index 0 (leaves 0 to 1)",
        ),
        (
            "interior_subtree_deleted",
            "DELETE FROM audit.log_nodes WHERE level = 2 AND node_index = 1".to_owned(),
            "the stored subtree at level 2, index 1 (leaves 4 to 7) is missing",
        ),
        (
            // The tree's head moved back over leaves it had hashed.
            "head_moved_back",
            "UPDATE audit.tree_head SET size = 10".to_owned(),
            "leaf 10: the stored tree's head says it covers 10 leaves, but leaf hashes are stored past it",
        ),
        (
            // A leaf's stored hash removed, the subtrees above it kept.
            "leaf_hash_deleted",
            "DELETE FROM audit.log_nodes WHERE level = 0 AND node_index = 5".to_owned(),
            "leaf 5: no leaf hash is stored for it",
        ),
        (
            "rewritten",
            format!(
                "UPDATE audit.release_attempts SET principal = 'someone-else' WHERE call_id = '{third}'; DELETE FROM audit.checkpoints; {REBUILD_TREE}"
            ),
            "was rewritten",
        ),
        (
            // The third call's outcome entry made to name the fourth call:
            // the fourth call's proofs would claim it. The leaf (from the
            // row) is untouched; the entry's copy of the row's call is not.
            "repointed",
            format!("UPDATE audit.events SET call_id = '{fourth}' WHERE log_index = 5"),
            &outcome_entry_changed,
        ),
        (
            "redated",
            "UPDATE audit.events SET recorded_at = recorded_at - interval '1 hour' WHERE log_index = 4"
                .to_owned(),
            &attempt_entry_changed,
        ),
        (
            // A NULL element (the gateway never writes one) still hashes,
            // to a leaf that differs, rather than failing to read.
            "null_role",
            format!(
                "UPDATE audit.release_attempts SET roles = roles || NULL::text WHERE call_id = '{third}'"
            ),
            &attempt_changed,
        ),
        (
            // A junk checkpoint row does not hide what was done to a row.
            "junk_checkpoint_and_changed_row",
            format!(
                "INSERT INTO audit.checkpoints (tree_size, root_hash, note) VALUES (5, sha256('x'), 'junk');
                 UPDATE audit.release_attempts SET reason = 'nothing to see' WHERE call_id = '{third}'"
            ),
            "row was changed",
        ),
        (
            "junk_checkpoint",
            "INSERT INTO audit.checkpoints (tree_size, root_hash, note) VALUES (5, sha256('x'), 'junk')"
                .to_owned(),
            "does not hold: ",
        ),
        (
            // The next event would take an index the log already holds.
            "counter_moved_back",
            "UPDATE audit.log_head SET size = 12".to_owned(),
            "leaf 12: the log's counter ends here, but the log holds 13 entries",
        ),
    ];
    for (name, sql, expected) in cases {
        let copy = copy_of(&database_url, name).await;
        tamper(&copy, &sql).await;
        let (ok, said) = verify(&copy, &keys, &[&kept]).await;
        assert!(!ok, "{name}: verify must fail: {said}");
        assert!(
            said.contains(expected),
            "{name}: expected {expected:?} in: {said}"
        );
        if name == "truncated" {
            // The checkpoints stored in the database are evidence too:
            // without the kept copy, they still show the removed events.
            let (ok, said) = verify(&copy, &keys, &[]).await;
            assert!(!ok, "{name}, stored checkpoints only: {said}");
            assert!(said.contains(expected), "{name}: {said}");
        }
    }
    // Every checkpoint gone as well, none kept: the database's own tree
    // still shows the removed events, unless its head is moved back too.
    let copy = copy_of(&database_url, "truncated_below_the_tree").await;
    tamper(
        &copy,
        &format!("{TRUNCATE_TO_10} DELETE FROM audit.checkpoints;"),
    )
    .await;
    let (ok, said) = verify(&copy, &keys, &[]).await;
    assert!(!ok, "verify must fail: {said}");
    assert!(
        said.contains("leaf 10: the log ends here, but its stored tree covers 13 leaves"),
        "{said}"
    );
    // The newest event removed with its row, leaf and stored tree, and
    // every checkpoint with them, none kept: only the counter that
    // numbered it is left to show it.
    let copy = copy_of(&database_url, "truncated_past_every_checkpoint").await;
    tamper(
        &copy,
        "DELETE FROM audit.release_attempts a USING audit.events e
             WHERE e.kind = 'attempt' AND e.call_id = a.call_id AND e.log_index >= 12;
         DELETE FROM audit.log_nodes WHERE level = 0 AND node_index >= 12;
         DELETE FROM audit.events WHERE log_index >= 12;
         UPDATE audit.tree_head SET size = 12;
         DELETE FROM audit.checkpoints;",
    )
    .await;
    let (ok, said) = verify(&copy, &keys, &[]).await;
    assert!(!ok, "verify must fail: {said}");
    assert!(
        said.contains("leaf 12: the log ends here, but its counter has numbered 13 events"),
        "{said}"
    );
}

/// One release, signed and kept: its database, the kept checkpoint that
/// covers it and its proof.
struct SignedRelease {
    database_url: String,
    kept: PathBuf,
    proof: ReleaseProof,
}

/// A gateway signing with `keys` releases one disk; the checkpoint that
/// covers it is kept outside the database as `name`, and the gateway shut
/// down.
async fn one_release_signed_and_kept(keys: &LogKeys, name: &str) -> SignedRelease {
    let (app, _, proof) = signing_app_with_one_release(keys).await;
    let kept = keys.keep(name, &proof.checkpoint);
    let database_url = app.database_url.clone();
    app.shut_down().await.unwrap();
    SignedRelease {
        database_url,
        kept,
        proof,
    }
}

/// `audit prove AUDIT_ID` as an `audit_reader` login, with the verifier
/// key `public_key` if there is one: its JSON.
async fn audit_prove(
    app: &TestApp,
    audit_id: &str,
    public_key: Option<&Path>,
) -> serde_json::Value {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_zenlayer-gateway"));
    command
        .args(["audit", "prove", audit_id])
        .env_clear()
        .env("DATABASE_URL", reader_login(&app.database_url).await);
    if let Some(key) = public_key {
        command.arg("--public-key").arg(key);
    }
    let out = command.output().await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The checkpoint the admin listener serves.
async fn served_checkpoint(app: &TestApp) -> String {
    reqwest::get(format!("http://{}/audit/checkpoint", app.admin_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Waits until `app` has counted a refusal to sign a checkpoint.
async fn until_a_refusal_to_sign(app: &TestApp) {
    eventually(Duration::from_secs(10), "a refusal to sign", || async {
        let refused =
            crate::helpers::metric(app, "zenlayer_gateway_audit_log_checkpoints_refused_total")
                .await;
        (refused >= 1).then_some(())
    })
    .await;
}

/// A gateway signing with `keys`, once it has released one disk and
/// signed a checkpoint that covers it: the gateway, the call, its proof.
async fn signing_app_with_one_release(
    keys: &LogKeys,
) -> (TestApp, ReleaseDiskResponse, ReleaseProof) {
    let app = signing_app(keys).await;
    let call = app
        .release(request("disk-recycled-data"))
        .await
        .unwrap()
        .into_inner();
    let proof = proof_once_checkpointed(&app, &call.audit_id).await;
    (app, call, proof)
}

/// Changes call `audit_id`'s attempt and rebuilds the tree over it, as a
/// forger who controls the database would.
async fn rewrite_history(database_url: &str, audit_id: &str) {
    tamper(
        database_url,
        &format!(
            "UPDATE audit.release_attempts SET reason = 'rewritten' WHERE call_id = '{audit_id}'; {REBUILD_TREE}"
        ),
    )
    .await;
}

/// Releases `disk`, a recycled data disk put in the simulator for it.
async fn release_a_new_disk(app: &TestApp, disk: &str) -> ReleaseDiskResponse {
    app.simulator
        .put_disk(Disk::new(disk, DiskType::Data, DiskStatus::Recycled));
    app.release(request(disk)).await.unwrap().into_inner()
}

async fn outcome_id_of(database_url: &str, call_id: &str) -> i64 {
    let pool = sqlx::PgPool::connect(database_url).await.unwrap();
    let id = sqlx::query_scalar(
        "SELECT outcome_id FROM audit.release_outcomes WHERE call_id = $1::text::uuid",
    )
    .bind(call_id)
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    id
}

#[tokio::test]
async fn an_empty_log_verifies() {
    let keys = LogKeys::new();
    let app = signing_app(&keys).await;
    let database_url = app.database_url.clone();
    app.shut_down().await.unwrap();
    let (ok, said) = verify(&database_url, &keys, &[]).await;
    assert!(ok, "{said}");
    assert!(said.contains("intact: 0 events"), "{said}");
}

#[tokio::test]
async fn without_the_verifier_key_audit_verify_checks_roots_only_and_refuses_kept_checkpoints() {
    let keys = LogKeys::new();
    let SignedRelease {
        database_url, kept, ..
    } = one_release_signed_and_kept(&keys, "kept.checkpoint").await;

    // The stored checkpoints' roots are still checked, and it says their
    // signatures were not.
    let (ok, said) = verify_with(&database_url, None, &[]).await;
    assert!(ok, "{said}");
    assert!(said.contains("intact: "), "{said}");
    assert!(said.contains("signatures were not checked"), "{said}");
    // A checkpoint someone kept is evidence only with its signature checked.
    let (ok, said) = verify_with(&database_url, None, &[&kept]).await;
    assert!(!ok, "{said}");
    assert!(said.contains("--checkpoint needs --public-key"), "{said}");
}

#[tokio::test]
async fn across_a_rotation_of_the_signing_key_audit_verify_takes_every_key_the_log_had() {
    let old_keys = LogKeys::new();
    let SignedRelease {
        database_url,
        kept: kept_before,
        proof: before,
        ..
    } = one_release_signed_and_kept(&old_keys, "before.checkpoint").await;

    // The same log, signed from now on with a new key.
    let new_keys = LogKeys::new();
    let app = spawn_app_with(AppOptions {
        settings: signing(&new_keys),
        database_url: Some(database_url.clone()),
        ..Default::default()
    })
    .await;
    let second = release_a_new_disk(&app, "disk-after-rotation").await;
    let after = proof_once_checkpointed(&app, &second.audit_id).await;
    assert!(after.tree_size > before.tree_size);
    let kept_after = new_keys.keep("after.checkpoint", &after.checkpoint);
    app.shut_down().await.unwrap();

    let both = [old_keys.public(), new_keys.public()];
    let (ok, said) = verify_with_keys(&database_url, &both, &[&kept_before, &kept_after]).await;
    assert!(ok, "both keys given, every checkpoint holds: {said}");
    assert!(said.contains("intact: "), "{said}");
    // With the new key alone, the checkpoints the old key signed are not
    // evidence: verify says so instead of passing them over.
    let (ok, said) = verify_with_keys(&database_url, &[new_keys.public()], &[&kept_after]).await;
    assert!(!ok, "{said}");
    assert!(
        said.contains("stored checkpoint (audit.checkpoints.checkpoint_id 1) does not hold"),
        "{said}"
    );
}

#[test]
fn audit_keygen_writes_a_key_only_its_owner_reads_and_never_overwrites_one() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("log.key");
    let made = keygen(&out);
    assert!(made.status.success(), "{made:?}");
    let private = std::fs::read_to_string(&out).unwrap();
    let key = LogKey::from_text(private.trim()).unwrap();
    assert_eq!(key.origin(), "audit.test/zenlayer-gateway");
    // What it prints is the verifier key of the key it wrote.
    assert_eq!(
        String::from_utf8_lossy(&made.stdout).trim(),
        key.verifier_key()
    );
    let mode = std::fs::metadata(&out).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");

    let again = keygen(&out);
    assert!(!again.status.success(), "{again:?}");
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("must not exist yet"),
        "{again:?}"
    );
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        private,
        "the key was overwritten"
    );
}

#[tokio::test]
async fn a_stored_subtree_removed_is_a_refusal_to_sign_not_a_database_failure() {
    let keys = LogKeys::new();
    let (app, _, signed) = signing_app_with_one_release(&keys).await;
    assert_eq!(signed.tree_size, 2, "the attempt and the outcome");
    // The subtree over events 0 and 1: the next leaves are hashed onto it.
    tamper(
        &app.database_url,
        "DELETE FROM audit.log_nodes WHERE level = 1 AND node_index = 0",
    )
    .await;
    release_a_new_disk(&app, "disk-after").await;
    until_a_refusal_to_sign(&app).await;
    assert_eq!(
        newest_checkpoint_size(&app).await,
        2,
        "nothing signed over it"
    );
    // Caught by whichever comes first: the check of the tree already
    // signed, or hashing the new leaves onto the missing subtree.
    let logs = crate::helpers::captured_logs();
    assert!(
        logs.contains("stored subtrees are incomplete for a tree of 2 events")
            || logs.contains("stored subtree (level 1, index 0) is missing"),
        "operators are told"
    );
}

#[tokio::test]
async fn hashing_onto_a_missing_stored_subtree_is_refused_as_data_corruption() {
    let app = quiet_app().await;
    app.release(request("disk-recycled-data")).await.unwrap();
    assert_eq!(hash_the_log(&app.database_url).await.unwrap(), 2);
    // The subtree over events 0 and 1: the next leaves are hashed onto it.
    tamper(
        &app.database_url,
        "DELETE FROM audit.log_nodes WHERE level = 1 AND node_index = 0",
    )
    .await;
    release_a_new_disk(&app, "disk-after").await;
    let error = hash_the_log(&app.database_url).await.unwrap_err();
    let error = error.as_database_error().expect("refused by the database");
    assert_eq!(error.code().as_deref(), Some("XX001"), "data_corrupted");
    assert!(
        error
            .message()
            .contains("stored subtree (level 1, index 0) is missing"),
        "{}",
        error.message()
    );
}

#[tokio::test]
async fn checkpoint_rows_claiming_a_larger_tree_than_they_sign_hide_nothing() {
    let keys = LogKeys::new();
    let SignedRelease {
        database_url,
        proof: older,
        ..
    } = one_release_signed_and_kept(&keys, "kept.checkpoint").await;
    let restart = || async {
        spawn_app_with(AppOptions {
            settings: signing(&keys),
            database_url: Some(database_url.clone()),
            ..Default::default()
        })
        .await
    };
    // A second release, and a newer checkpoint over it.
    let app = restart().await;
    let second = release_a_new_disk(&app, "disk-second").await;
    let newer = proof_once_checkpointed(&app, &second.audit_id).await;
    assert!(newer.tree_size > older.tree_size);
    // Added by someone with the database: a note of a far larger tree,
    // signed by another key of the same name; and the older real note
    // under a size it does not sign, to pass for the newest.
    let (other, _) = LogKey::generate("audit.test/zenlayer-gateway");
    let forged = LogKey::from_text(&other).unwrap().sign(1_000_000, [9; 32]);
    tamper(
        &database_url,
        &format!(
            "INSERT INTO audit.checkpoints (tree_size, root_hash, note) VALUES
                 (1000000, sha256('x'), '{forged}'), (900000, sha256('x'), '{}');",
            older.checkpoint
        ),
    )
    .await;
    // What is served is the newest checkpoint the log's key signed.
    let served = proof_once_checkpointed(&app, &second.audit_id).await;
    assert_eq!(note_root(&served.checkpoint).0, newer.tree_size);
    let note = served_checkpoint(&app).await;
    assert_eq!(note_root(&note).0, newer.tree_size, "{note}");
    // History after the older checkpoint rewritten: it still extends the
    // older one, not the newer. A restarted gateway must check it against
    // the newer, which the planted rows would have hidden.
    rewrite_history(&database_url, &second.audit_id).await;
    app.shut_down().await.unwrap();
    let app = restart().await;
    release_a_new_disk(&app, "disk-after-forgery").await;
    until_a_refusal_to_sign(&app).await;
    let signed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit.checkpoints WHERE tree_size > $1 AND tree_size < 900000",
    )
    .bind(newer.tree_size as i64)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(signed, 0, "nothing signed over the rewritten history");
}

#[tokio::test]
async fn a_log_rewritten_at_the_same_length_is_caught_before_it_grows() {
    let keys = LogKeys::new();
    let (app, call, signed) = signing_app_with_one_release(&keys).await;
    rewrite_history(&app.database_url, &call.audit_id).await;
    // No new event: only the tree of the size already signed is checked.
    until_a_refusal_to_sign(&app).await;
    assert_eq!(newest_checkpoint_size(&app).await, signed.tree_size);
    assert!(crate::helpers::captured_logs().contains("history was rewritten"));
}

#[tokio::test]
async fn a_tree_head_moved_back_is_a_refusal_to_sign_not_a_database_failure() {
    let keys = LogKeys::new();
    let (app, _, _) = signing_app_with_one_release(&keys).await;
    tamper(&app.database_url, "UPDATE audit.tree_head SET size = 1").await;
    release_a_new_disk(&app, "disk-after").await;
    until_a_refusal_to_sign(&app).await;
    assert!(
        crate::helpers::captured_logs().contains(
            "leaf hashes are stored past the tree's head (audit.tree_head was moved back)"
        ),
        "operators are told what is wrong"
    );
}

#[tokio::test]
async fn a_rewritten_history_is_never_signed() {
    let keys = LogKeys::new();
    let (app, first, signed) = signing_app_with_one_release(&keys).await;
    tamper(
        &app.database_url,
        &format!(
            "UPDATE audit.release_attempts SET reason = 'rewritten' WHERE call_id = '{}'; {REBUILD_TREE}",
            first.audit_id
        ),
    )
    .await;
    app.simulator.put_disk(Disk::new(
        "disk-after",
        DiskType::Data,
        DiskStatus::Recycled,
    ));
    app.release(request("disk-after")).await.unwrap();
    // Several checkpoint intervals pass: none is signed over the new tree.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let newest = newest_checkpoint_size(&app).await;
    assert_eq!(newest, signed.tree_size, "no checkpoint after the rewrite");
    assert!(
        crate::helpers::captured_logs().contains("history was rewritten"),
        "the refusal to sign is logged for operators"
    );
    let refused =
        crate::helpers::metric(&app, "zenlayer_gateway_audit_log_checkpoints_refused_total").await;
    assert!(refused >= 1, "and counted, for the alert that pages");
    let signed =
        crate::helpers::metric(&app, "zenlayer_gateway_audit_log_checkpoints_signed_total").await;
    assert!(signed >= 1);
}

#[tokio::test]
async fn three_gateways_writing_at_once_leave_a_gap_free_trail_that_verifies() {
    let keys = LogKeys::new();
    // No confirmations meanwhile (the tests' follow-up sweeps only at
    // start-up): the trail's size is known.
    let settings = signing(&keys);
    let app = spawn_app_with(AppOptions {
        settings: settings.clone(),
        ..Default::default()
    })
    .await;
    let mut env = test_settings(
        &as_gateway(&app.database_url),
        &app.simulator,
        &app.key_server,
    );
    env.insert("GATEWAY_LOG_FORMAT".into(), "json".into());
    env.extend(settings);
    let mut gateways = Vec::new();
    for _ in 0..3 {
        gateways.push(GatewayProcess::spawn(&env).await);
    }
    let mut calls = Vec::new();
    for i in 0..30 {
        let disk = format!("disk-fleet-{i:02}");
        app.simulator
            .put_disk(Disk::new(&disk, DiskType::Data, DiskStatus::Recycled));
        let endpoint = format!("http://{}", gateways[i % 3].addr);
        calls.push(tokio::spawn(async move {
            let channel = tonic::transport::Channel::from_shared(endpoint)
                .unwrap()
                .connect()
                .await
                .unwrap();
            let mut client =
                zenlayer_gateway::pb::disk_service_client::DiskServiceClient::new(channel);
            client
                .release_disk(request(&disk))
                .await
                .map(|r| r.into_inner())
        }));
    }
    for call in calls {
        call.await.unwrap().unwrap();
    }
    for gateway in gateways {
        assert!(gateway.terminate().await.success());
    }
    let indexes: Vec<i64> =
        sqlx::query_scalar("SELECT log_index FROM audit.events ORDER BY log_index")
            .fetch_all(&app.db)
            .await
            .unwrap();
    assert_eq!(
        indexes,
        (0..60).collect::<Vec<i64>>(),
        "30 attempts and 30 outcomes, no gap"
    );
    let database_url = app.database_url.clone();
    app.shut_down().await.unwrap();
    let (ok, said) = verify(&database_url, &keys, &[]).await;
    assert!(ok, "{said}");
    assert!(said.contains("intact: 60 events"), "{said}");
}

/// A call's attempt event: its log index and the leaf hash the database
/// stored for it, once hashed (as each gateway does before it signs).
async fn stored_attempt_leaf(app: &TestApp, call_id: Uuid) -> (i64, Vec<u8>) {
    hash_the_log(&app.database_url).await.unwrap();
    sqlx::query_as(
        "SELECT e.log_index, n.hash FROM audit.events e
         JOIN audit.log_nodes n ON n.level = 0 AND n.node_index = e.log_index
         WHERE e.kind = 'attempt' AND e.call_id = $1",
    )
    .bind(call_id)
    .fetch_one(&app.db)
    .await
    .unwrap()
}

/// The leaf hash of one fixed attempt row, which README quotes so that an
/// implementation in another language can check itself against it.
const FIXED_LEAF_HASH: &str = "a3c367411f5f0b9db6675ef5ff94e6c23f8a97e9e7ffae90ba70cf6680cc64e1";

#[tokio::test]
async fn a_fixed_attempt_row_has_the_leaf_hash_readme_quotes() {
    let app = spawn_app_with(AppOptions::default()).await;
    let call_id = Uuid::parse_str("01930000-0000-7000-8000-000000000001").unwrap();
    sqlx::raw_sql(
        r#"INSERT INTO audit.release_attempts (call_id, received_at, recorded_at, principal, issuer,
               roles, x_request_id, trace_id, disk_id, reason, decision, disk_tags)
           VALUES ('01930000-0000-7000-8000-000000000001', '2026-12-01T00:00:00Z',
               '2026-12-01T00:00:00.5Z', 'svc-janitor', 'https://issuer.example', '{disk:release}',
               'req-1', '0af7651916cd43dd8448eb211c80319c', 'disk-3f9a2c', 'CHG-1234 cleanup',
               'allowed', '{"team": "billing"}')"#,
    )
    .execute(&app.db)
    .await
    .unwrap();
    let (index, stored) = stored_attempt_leaf(&app, call_id).await;
    assert_eq!(index, 0, "the first event of a fresh log");
    let from_readme = attempt_leaf_from_row(&app, call_id, index).await;
    assert_eq!(sha256(&[&[0], &from_readme]).to_vec(), stored);
    assert_eq!(hex::encode(&stored), FIXED_LEAF_HASH);
}

/// The `text[]` columns in every shape a row can hold them (empty, NULL
/// elements, several, non-ASCII, NULL), each row's stored leaf hash against
/// README's encoding.
#[tokio::test]
async fn array_columns_encode_as_readme_says() {
    let app = spawn_app_with(AppOptions::default()).await;
    let shapes = [
        ("{}", "{}", None),
        ("{NULL,disk:release}", "{p1,p2}", Some("{\"ü€😀\",\"\"}")),
        ("{\"a,b\",\"{c}\",\"\"}", "{}", Some("{x,NULL,y}")),
    ];
    for (i, (roles, policy_ids, shadow_ids)) in shapes.into_iter().enumerate() {
        let call_id = Uuid::parse_str(&format!("01930000-0000-7000-8000-00000000010{i}")).unwrap();
        sqlx::query(
            "INSERT INTO audit.release_attempts (call_id, received_at, roles, x_request_id,
                 trace_id, disk_id, decision, policy_ids, shadow_policy_ids)
             VALUES ($1, now(), $2::text[], 'req', 'trace', 'disk-1', 'allowed', $3::text[],
                 $4::text[])",
        )
        .bind(call_id)
        .bind(roles)
        .bind(policy_ids)
        .bind(shadow_ids)
        .execute(&app.db)
        .await
        .unwrap();
        let (index, stored) = stored_attempt_leaf(&app, call_id).await;
        let from_readme = attempt_leaf_from_row(&app, call_id, index).await;
        assert_eq!(
            sha256(&[&[0], &from_readme]).to_vec(),
            stored,
            "roles {roles}, policy_ids {policy_ids}, shadow_policy_ids {shadow_ids:?}"
        );
    }
}

/// Hashes every event numbered so far, as the gateway's role, the way the
/// gateways do before they sign a checkpoint.
async fn hash_the_log(database_url: &str) -> Result<i32, sqlx::Error> {
    use sqlx::Connection as _;
    let mut db = sqlx::PgConnection::connect(&as_gateway(database_url)).await?;
    sqlx::query_scalar("SELECT audit.hash_events(1000000)")
        .fetch_one(&mut db)
        .await
}

async fn sizes(app: &TestApp) -> (i64, i64) {
    sqlx::query_as("SELECT l.size, t.size FROM audit.log_head l, audit.tree_head t")
        .fetch_one(&app.db)
        .await
        .unwrap()
}

/// Without a signing key and with an hour between beats, nothing but the
/// calls themselves and the proof asked for touches the log.
async fn quiet_app() -> TestApp {
    app_keeping_the_log_every("3600000").await
}

/// Without a signing key, keeping the log every `interval_ms` (and hashing
/// it twenty times as often); like every test's gateway, it follows calls
/// up only at start-up.
async fn app_keeping_the_log_every(interval_ms: &str) -> TestApp {
    spawn_app_with_settings(&[("AUDIT_CHECKPOINT_INTERVAL_MS", interval_ms)]).await
}

#[tokio::test]
async fn calls_only_number_their_events_and_the_tree_is_hashed_when_a_proof_needs_it() {
    let app = quiet_app().await;
    app.simulator.put_disk(Disk::new(
        "disk-second",
        DiskType::Data,
        DiskStatus::Recycled,
    ));
    for disk in ["disk-recycled-data", "disk-second"] {
        app.release(request(disk)).await.unwrap();
    }
    // Two calls, each an attempt and an outcome: numbered, not hashed.
    assert_eq!(sizes(&app).await, (4, 0), "(numbered, hashed)");
    let leaves: i64 = sqlx::query_scalar("SELECT count(*) FROM audit.log_nodes")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(leaves, 0, "no node written on a call's path");

    // A proof to the log's size hashes what it needs first.
    let call = consistency_request(1, 4);
    let proof = app
        .disks()
        .await
        .get_consistency_proof(call)
        .await
        .unwrap()
        .into_inner();
    // From 1 leaf to 4: the second leaf, then the subtree of leaves 2..4.
    assert_eq!(proof.path.len(), 2);
    assert_eq!(sizes(&app).await, (4, 4));
    let stored = |level: i16, index: i64| {
        let db = app.db.clone();
        async move {
            sqlx::query_scalar::<_, Vec<u8>>(
                "SELECT hash FROM audit.log_nodes WHERE level = $1 AND node_index = $2",
            )
            .bind(level)
            .bind(index)
            .fetch_one(&db)
            .await
            .unwrap()
        }
    };
    assert_eq!(proof.path[0], stored(0, 1).await);
    assert_eq!(proof.path[1], stored(1, 1).await);
    assert_eq!(
        stored(2, 0).await,
        node(&stored(1, 0).await, &stored(1, 1).await).to_vec(),
        "the subtrees above the leaves are made as RFC 6962 says"
    );
    assert_eq!(
        hash_the_log(&app.database_url).await.unwrap(),
        0,
        "caught up"
    );
    let status = app
        .disks()
        .await
        .get_consistency_proof(consistency_request(1, 5))
        .await
        .unwrap_err();
    assert_error(&status, Code::InvalidArgument, "INVALID_TREE_SIZES");
    assert!(status.message().contains("<= 4"), "{}", status.message());
}

#[tokio::test]
async fn the_tree_is_never_extended_past_a_missing_row() {
    let app = quiet_app().await;
    let released = app
        .release(request("disk-recycled-data"))
        .await
        .unwrap()
        .into_inner();
    // The outcome (event 1) deleted before anything hashed it.
    tamper(
        &app.database_url,
        &format!(
            "DELETE FROM audit.release_outcomes WHERE call_id = '{}'",
            released.audit_id
        ),
    )
    .await;
    let error = hash_the_log(&app.database_url).await.unwrap_err();
    let error = error.as_database_error().expect("refused by the database");
    assert_eq!(error.code().as_deref(), Some("XX001"), "data_corrupted");
    assert!(
        error.message().contains("event 1 or its row is missing"),
        "{}",
        error.message()
    );
    assert_eq!(
        sizes(&app).await,
        (2, 0),
        "not even event 0 is hashed past it"
    );

    let call = consistency_request(1, 2);
    let status = app
        .disks()
        .await
        .get_consistency_proof(call)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        crate::helpers::captured_logs()
            .contains("the audit log cannot be hashed: audit log: event 1 or its row is missing"),
        "operators are told which event, as a break in the log rather than a database failure"
    );
}

#[tokio::test]
async fn a_database_that_refuses_for_another_reason_is_not_reported_as_tampering() {
    let keys = LogKeys::new();
    let app = signing_app(&keys).await;
    sqlx::query("REVOKE EXECUTE ON FUNCTION audit.hash_events(integer) FROM zenlayer_gateway")
        .execute(&app.db)
        .await
        .unwrap();
    app.release(request("disk-recycled-data")).await.unwrap();
    eventually(
        Duration::from_secs(10),
        "a checkpoint that failed on the database's refusal",
        || async {
            crate::helpers::captured_logs()
                .contains("permission denied for function hash_events")
                .then_some(())
        },
    )
    .await;
    let refused =
        crate::helpers::metric(&app, "zenlayer_gateway_audit_log_checkpoints_refused_total").await;
    assert_eq!(
        refused, 0,
        "a refused permission is an operator's problem, not a rewritten history: no page"
    );
}

#[tokio::test]
async fn the_tree_is_hashed_in_small_steps_between_checkpoints() {
    // Checkpoints every 20 s, so hashing beats every second: the events of
    // a call are hashed long before the first checkpoint beat.
    let app = app_keeping_the_log_every("20000").await;
    app.release(request("disk-recycled-data")).await.unwrap();
    eventually(
        Duration::from_secs(5),
        "the call's events hashed",
        || async { (sizes(&app).await == (2, 2)).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn events_not_yet_hashed_verify_as_intact() {
    let keys = LogKeys::new();
    let app = quiet_app().await;
    app.simulator.put_disk(Disk::new(
        "disk-second",
        DiskType::Data,
        DiskStatus::Recycled,
    ));
    for disk in ["disk-recycled-data", "disk-second"] {
        app.release(request(disk)).await.unwrap();
    }
    let mut gateway = {
        use sqlx::Connection as _;
        sqlx::PgConnection::connect(&as_gateway(&app.database_url))
            .await
            .unwrap()
    };
    let hashed: i32 = sqlx::query_scalar("SELECT audit.hash_events(2)")
        .fetch_one(&mut gateway)
        .await
        .unwrap();
    assert_eq!(hashed, 2);
    assert_eq!(sizes(&app).await, (4, 2), "two events wait to be hashed");
    // While the gateway runs (its shutdown would hash the rest).
    let (ok, said) = verify(&app.database_url, &keys, &[]).await;
    assert!(ok, "{said}");
    assert!(said.contains("intact: 4 events"), "{said}");
}

#[tokio::test]
async fn a_gateway_remembers_what_it_signed_when_newer_checkpoints_are_deleted() {
    let keys = LogKeys::new();
    let app = signing_app(&keys).await;
    app.simulator.put_disk(Disk::new(
        "disk-second",
        DiskType::Data,
        DiskStatus::Recycled,
    ));
    let first = app
        .release(request("disk-recycled-data"))
        .await
        .unwrap()
        .into_inner();
    let kept = proof_once_checkpointed(&app, &first.audit_id).await;
    let second = app
        .release(request("disk-second"))
        .await
        .unwrap()
        .into_inner();
    proof_once_checkpointed(&app, &second.audit_id).await;
    // Every checkpoint since the first one deleted, and the history after
    // it rewritten: the stored checkpoints alone would not show it.
    tamper(
        &app.database_url,
        &format!(
            "DELETE FROM audit.checkpoints WHERE tree_size > {size};
             UPDATE audit.release_attempts SET reason = 'rewritten' WHERE call_id = '{id}';
             {REBUILD_TREE}",
            size = kept.tree_size,
            id = second.audit_id
        ),
    )
    .await;
    app.simulator.put_disk(Disk::new(
        "disk-third",
        DiskType::Data,
        DiskStatus::Recycled,
    ));
    app.release(request("disk-third")).await.unwrap();
    // Several checkpoint intervals pass: this gateway signed a later tree
    // than the one rewritten, and signs nothing over it.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let newest = newest_checkpoint_size(&app).await;
    assert_eq!(newest, kept.tree_size, "no checkpoint over the rewrite");
    let refused =
        crate::helpers::metric(&app, "zenlayer_gateway_audit_log_checkpoints_refused_total").await;
    assert!(refused >= 1, "and the refusal counted, for the alert");
}

#[tokio::test]
async fn a_gateway_that_never_signed_checks_the_stored_checkpoint_before_it_signs() {
    let keys = LogKeys::new();
    let (app, first, signed) = signing_app_with_one_release(&keys).await;
    tamper(
        &app.database_url,
        &format!(
            "UPDATE audit.release_attempts SET reason = 'rewritten' WHERE call_id = '{}'; {REBUILD_TREE}",
            first.audit_id
        ),
    )
    .await;
    // A replica started after the rewrite, with no checkpoint of its own.
    let key = keys.private();
    let _late = another_gateway(
        &app,
        &[
            ("AUDIT_LOG_SIGNING_KEY_FILE", key.as_str()),
            ("AUDIT_CHECKPOINT_INTERVAL_MS", "100"),
        ],
    )
    .await;
    app.simulator.put_disk(Disk::new(
        "disk-after",
        DiskType::Data,
        DiskStatus::Recycled,
    ));
    app.release(request("disk-after")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let newest = newest_checkpoint_size(&app).await;
    assert_eq!(
        newest, signed.tree_size,
        "neither replica signs over the rewrite"
    );
}

#[tokio::test]
async fn a_gateway_without_a_signing_key_still_hashes_the_log_on_its_beat() {
    let app = spawn_app_with(AppOptions {
        settings: HashMap::from([("AUDIT_CHECKPOINT_INTERVAL_MS".to_owned(), "100".to_owned())]),
        ..Default::default()
    })
    .await;
    app.release(request("disk-recycled-data")).await.unwrap();
    eventually(
        Duration::from_secs(10),
        "the tree to cover every event numbered",
        || async {
            let (logged, hashed) = sizes(&app).await;
            (logged >= 2 && hashed == logged).then_some(())
        },
    )
    .await;
    // It signs nothing, and says so in the gauge the staleness alert
    // leaves out.
    assert_eq!(checkpoint_current_at(&app).await, 0);
}

const CHECKPOINT_CURRENT_AT: &str = "zenlayer_gateway_audit_log_checkpoint_current_at_seconds";

async fn checkpoint_current_at(app: &TestApp) -> u64 {
    crate::helpers::metric(app, CHECKPOINT_CURRENT_AT).await
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn a_signing_gateway_reports_when_it_last_found_the_log_covered_by_a_checkpoint() {
    let keys = LogKeys::new();
    let before = unix_now();
    let app = signing_app(&keys).await;
    let started = checkpoint_current_at(&app).await;
    assert!(
        started >= before,
        "its start time until it signs: {started}"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let call = app
        .release(request("disk-recycled-data"))
        .await
        .unwrap()
        .into_inner();
    proof_once_checkpointed(&app, &call.audit_id).await;
    eventually(Duration::from_secs(5), "the gauge to move on", || async {
        (checkpoint_current_at(&app).await > started).then_some(())
    })
    .await;
    // A log that stopped being signed: the gauge stays where it was.
    rewrite_history(&app.database_url, &call.audit_id).await;
    release_a_new_disk(&app, "disk-after").await;
    until_a_refusal_to_sign(&app).await;
    let stalled = checkpoint_current_at(&app).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(checkpoint_current_at(&app).await, stalled);
}

#[tokio::test]
async fn a_log_cut_short_under_a_running_gateway_is_reported_as_events_removed() {
    let keys = LogKeys::new();
    let app = signing_app(&keys).await;
    app.simulator.put_disk(Disk::new(
        "disk-second",
        DiskType::Data,
        DiskStatus::Recycled,
    ));
    app.release(request("disk-recycled-data")).await.unwrap();
    let second = app
        .release(request("disk-second"))
        .await
        .unwrap()
        .into_inner();
    let signed = proof_once_checkpointed(&app, &second.audit_id).await;
    assert!(signed.tree_size >= 4);
    // Everything after the first call removed, counters moved back.
    tamper(
        &app.database_url,
        "DELETE FROM audit.release_confirmations;
         DELETE FROM audit.release_outcomes o USING audit.events e
             WHERE e.kind = 'outcome' AND e.row_id = o.outcome_id AND e.log_index >= 2;
         DELETE FROM audit.release_attempts a USING audit.events e
             WHERE e.kind = 'attempt' AND e.call_id = a.call_id AND e.log_index >= 2;
         DELETE FROM audit.log_nodes WHERE node_index >= 1;
         DELETE FROM audit.events WHERE log_index >= 2;
         UPDATE audit.log_head SET size = 2;
         UPDATE audit.tree_head SET size = 2;",
    )
    .await;
    eventually(Duration::from_secs(10), "the refusal to sign", || async {
        crate::helpers::captured_logs()
            .contains(&format!(
                "the audit log holds 2 events, fewer than checkpoint {} already signed",
                signed.tree_size
            ))
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_replica_checks_the_newer_checkpoint_another_signed_not_only_its_own() {
    let keys = LogKeys::new();
    let key =
        || LogKey::from_text(std::fs::read_to_string(keys.private()).unwrap().trim()).unwrap();
    // Two replicas' checkpointers over one log, signing when the test says.
    let app = quiet_app().await;
    let pool = sqlx::PgPool::connect(&as_gateway(&app.database_url))
        .await
        .unwrap();
    let this = Checkpointer::new(pool.clone(), key(), Metrics::new());
    let other = Checkpointer::new(pool, key(), Metrics::new());
    for disk in ["disk-second", "disk-third"] {
        app.simulator
            .put_disk(Disk::new(disk, DiskType::Data, DiskStatus::Recycled));
    }
    app.release(request("disk-recycled-data")).await.unwrap();
    assert!(this.sign_now().await.unwrap().is_some());
    let second = app
        .release(request("disk-second"))
        .await
        .unwrap()
        .into_inner();
    assert!(other.sign_now().await.unwrap().is_some());
    // The second call rewritten: after this replica's own checkpoint, so
    // only the other's newer one shows it.
    tamper(
        &app.database_url,
        &format!(
            "UPDATE audit.release_attempts SET reason = 'rewritten' WHERE call_id = '{}'; {REBUILD_TREE}",
            second.audit_id
        ),
    )
    .await;
    app.release(request("disk-third")).await.unwrap();
    let failure = this
        .sign_now()
        .await
        .expect_err("a tree inconsistent with the newest checkpoint is never signed");
    assert!(
        failure.to_string().contains("history was rewritten"),
        "{failure}"
    );
}

#[tokio::test]
async fn a_trail_with_confirmations_freezes_and_unfreezes_verifies() {
    let keys = LogKeys::new();
    let app = signing_app_with(&keys, &[("GATEWAY_FOLLOW_UP_INTERVAL_MS", "50")]).await;
    let operator = operator_login(&app).await;
    let call = app
        .release(request("disk-recycled-data"))
        .await
        .unwrap()
        .into_inner();
    let call_id = Uuid::parse_str(&call.audit_id).unwrap();
    eventually(Duration::from_secs(10), "the release confirmed", || async {
        let confirmations: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM audit.release_confirmations WHERE call_id = $1",
        )
        .bind(call_id)
        .fetch_one(&app.db)
        .await
        .unwrap();
        (confirmations == 1).then_some(())
    })
    .await;
    command(&operator, &["freeze", "--reason", "audit drill"]).await;
    command(&operator, &["unfreeze", "--reason", "audit drill over"]).await;
    let database_url = app.database_url.clone();
    app.shut_down().await.unwrap();

    let kinds: Vec<(String, i64)> =
        sqlx::query_as("SELECT kind, count(*) FROM audit.events GROUP BY kind ORDER BY kind")
            .fetch_all(&sqlx::PgPool::connect(&database_url).await.unwrap())
            .await
            .unwrap();
    let kinds: Vec<(&str, i64)> = kinds.iter().map(|(k, n)| (k.as_str(), *n)).collect();
    assert_eq!(
        kinds,
        [
            ("attempt", 1),
            ("confirmation", 1),
            ("freeze", 2),
            ("outcome", 1)
        ]
    );
    // Each kind's leaf is recomputed from its own row: two freeze events
    // from two rows, the confirmation from its row.
    let (ok, said) = verify(&database_url, &keys, &[]).await;
    assert!(ok, "{said}");
    assert!(said.contains("intact: 5 events"), "{said}");
}

#[tokio::test]
async fn a_gateway_signs_its_first_checkpoint_one_interval_after_start_not_at_once() {
    // Every replica's restart would otherwise sign at once; the first beat
    // waits an interval (the last run's events were signed at its shutdown).
    let keys = LogKeys::new();
    let app = signing_app_with(&keys, &[("AUDIT_CHECKPOINT_INTERVAL_MS", "5000")]).await;
    let signed = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM audit.checkpoints")
            .fetch_one(&app.db)
            .await
            .unwrap()
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(signed().await, 0, "nothing signed at start");
    app.release(request("disk-recycled-data")).await.unwrap();
    eventually(
        Duration::from_secs(20),
        "the first beat's checkpoint",
        || async { (signed().await > 0).then_some(()) },
    )
    .await;
}
