//! Which stored checkpoint is the newest. `audit.checkpoints.tree_size` is
//! a copy of what the note signs, not signed itself: a row added by
//! someone with the database could claim any size, and, taken as the
//! newest, would hide the real one from the checkpointer's consistency
//! check and from every proof served. The newest checkpoint is the largest
//! whose note holds: signed by the log's key (when the reader has it) and
//! stating the size its row claims (a reader without the key checks the
//! size only, and whoever it serves checks the signature).

use super::checkpoint::{Checkpoint, open_with_any, read_unverified};
use super::store::{self, StoredCheckpoint};
use sqlx::PgConnection;

/// Rows read at a time; the newest that holds is normally the first.
const PAGE: i64 = 32;

/// The largest stored checkpoint that holds, as stored and as read.
pub(super) async fn newest_checkpoint(
    db: &mut PgConnection,
    verifier_keys: &[&str],
) -> Result<Option<(StoredCheckpoint, Checkpoint)>, sqlx::Error> {
    let mut skipped = 0;
    let mut offset = 0;
    loop {
        let page = store::checkpoints_largest_first(db, offset, PAGE).await?;
        for stored in &page {
            match holding(stored, verifier_keys) {
                Ok(checkpoint) => {
                    if skipped > 0 {
                        tracing::error!(
                            skipped,
                            tree_size = stored.tree_size,
                            "stored audit log checkpoints larger than the newest that holds are not signed by the log's key, or claim another size than they sign; they are ignored: run `zenlayer-gateway audit verify`"
                        );
                    }
                    return Ok(Some((stored.clone(), checkpoint)));
                }
                Err(_) => skipped += 1,
            }
        }
        if (page.len() as i64) < PAGE {
            if skipped > 0 {
                tracing::error!(
                    skipped,
                    "no stored audit log checkpoint holds: each is not signed by the log's key, or claims another size than it signs; run `zenlayer-gateway audit verify`"
                );
            }
            return Ok(None);
        }
        offset += PAGE;
    }
}

/// The checkpoint `stored` holds, if it does: its note signed by one of
/// `verifier_keys` (read unverified when there are none) and stating the
/// size its row claims; otherwise why not.
pub(super) fn holding(
    stored: &StoredCheckpoint,
    verifier_keys: &[&str],
) -> Result<Checkpoint, String> {
    let read = match verifier_keys {
        [] => read_unverified(&stored.note),
        keys => open_with_any(&stored.note, keys),
    };
    let checkpoint = read.map_err(|error| error.to_string())?;
    if checkpoint.size as i64 != stored.tree_size {
        return Err(format!(
            "its row says size {}, but its note signs size {}",
            stored.tree_size, checkpoint.size
        ));
    }
    Ok(checkpoint)
}
