//! `audit verify`: recomputes the log from the rows alone — every leaf from
//! its row, the tree from the leaves — and checks it against the stored
//! leaf hashes, the stored subtrees, every stored checkpoint and every
//! checkpoint given (kept outside the database, which is what makes them
//! evidence). It names the first break it finds and what kind it is.

use super::checkpoint::Checkpoint;
use super::hash::{Frontier, Hash, leaf_hash};
use super::newest::holding;
use super::proof::Plan;
use super::prove::{RowLeaf, leaves_of};
use super::store;
use sqlx::PgConnection;
use std::fmt;

/// Events read at a time: memory stays bounded however long the log is.
const PAGE: i64 = 1000;

/// A checkpoint to check, and where it came from.
#[derive(Debug, Clone)]
pub struct Anchor {
    pub checkpoint: Checkpoint,
    pub source: String,
}

/// What is wrong with the log, at the first place it is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Break {
    /// No log entry has this index, though later ones exist: an entry was
    /// deleted (or the numbering rewritten).
    Gap { index: u64 },
    /// The entry names a row that no longer exists: the row was deleted.
    RowMissing {
        index: u64,
        kind: String,
        id: String,
    },
    /// The row does not hash to the leaf recorded for its place: it was
    /// changed, or moved to another place.
    LeafDiffers {
        index: u64,
        kind: String,
        id: String,
    },
    /// The entry's copy of its row's call or time is not the row's: the
    /// entry was changed (repointed to another call, or redated).
    EntryDiffers {
        index: u64,
        kind: String,
        id: String,
    },
    /// No leaf hash is stored for an entry the stored tree covers.
    LeafMissing { index: u64 },
    /// The log is shorter than its own stored tree: entries were removed
    /// from its end.
    ShorterThanTree { size: u64, hashed: u64 },
    /// The log is shorter than its own counter of events: entries were
    /// removed from its end.
    ShorterThanCounter { size: u64, numbered: u64 },
    /// The log holds more entries than its counter has numbered: the
    /// counter was moved back (the next event would reuse an index).
    CounterBehind { size: u64, numbered: u64 },
    /// A row that no log entry names: added around the log.
    Unlogged { kind: String, id: String },
    /// The log is shorter than a checkpoint: entries were removed from its end.
    Truncated {
        size: u64,
        checkpoint: u64,
        source: String,
    },
    /// The first `size` leaves do not have the root a checkpoint signed:
    /// history before that checkpoint was rewritten.
    RootDiffers { size: u64, source: String },
    /// The stored subtrees (from which proofs are served) disagree with the
    /// leaves.
    SubtreesDiffer { size: u64 },
    /// A stored checkpoint that does not hold: not signed by a key given,
    /// unreadable, or its row claiming another size than it signs.
    CheckpointUnheld { checkpoint_id: i64, why: String },
    /// One stored subtree is missing or does not hash its leaves.
    SubtreeDiffers { level: u32, index: u64 },
    /// Leaf hashes are stored past the stored tree's head: the head was
    /// moved back (the gateway can hash nothing more until it is mended).
    HeadBehindTree { hashed: u64 },
}

impl fmt::Display for Break {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Gap { index } => write!(
                f,
                "leaf {index}: missing from the log (an entry was deleted)"
            ),
            Self::RowMissing { index, kind, id } => write!(
                f,
                "leaf {index}: its {kind} row {id} is missing (the row was deleted, or the entry changed to name another)"
            ),
            Self::LeafDiffers { index, kind, id } => write!(
                f,
                "leaf {index}: the {kind} row {id} does not match the leaf recorded at this place (the row was changed, or moved)"
            ),
            Self::EntryDiffers { index, kind, id } => write!(
                f,
                "leaf {index}: the log entry names a call or time that its {kind} row {id} does not hold (the entry was changed)"
            ),
            Self::ShorterThanCounter { size, numbered } => write!(
                f,
                "leaf {size}: the log ends here, but its counter has numbered {numbered} events (the newest events were removed)"
            ),
            Self::CounterBehind { size, numbered } => write!(
                f,
                "leaf {numbered}: the log's counter ends here, but the log holds {size} entries (the counter was moved back)"
            ),
            Self::LeafMissing { index } => write!(f, "leaf {index}: no leaf hash is stored for it"),
            Self::ShorterThanTree { size, hashed } => write!(
                f,
                "leaf {size}: the log ends here, but its stored tree covers {hashed} leaves (the newest events were removed)"
            ),
            Self::Unlogged { kind, id } => write!(
                f,
                "{kind} row {id} is in no log entry (it was added around the log: forged)"
            ),
            Self::Truncated {
                size,
                checkpoint,
                source,
            } => write!(
                f,
                "leaf {size}: the log ends here, but checkpoint {source} covers {checkpoint} leaves (the newest events were removed)"
            ),
            Self::RootDiffers { size, source } => write!(
                f,
                "the first {size} leaves do not have the root that checkpoint {source} signed (the history it covers was rewritten)"
            ),
            Self::SubtreeDiffers { level, index } => write!(
                f,
                "the stored subtree at level {level}, index {index} (leaves {first} to {last}) is missing or does not match its leaves (proofs served through it would fail)",
                first = index << level,
                last = ((index + 1) << level) - 1
            ),
            Self::CheckpointUnheld { checkpoint_id, why } => write!(
                f,
                "stored checkpoint (audit.checkpoints.checkpoint_id {checkpoint_id}) does not hold: {why} (a row added or changed in the table, or signed by a key not given with --public-key)"
            ),
            Self::HeadBehindTree { hashed } => write!(
                f,
                "leaf {hashed}: the stored tree's head says it covers {hashed} leaves, but leaf hashes are stored past it (audit.tree_head was moved back)"
            ),
            Self::SubtreesDiffer { size } => write!(
                f,
                "the stored subtrees of the tree of {size} leaves do not match its leaves (proofs served from them would fail)"
            ),
        }
    }
}

/// What a verification found.
#[derive(Debug, Clone)]
pub struct Report {
    pub size: u64,
    pub root: Hash,
    pub checkpoints: usize,
    pub broken: Option<Break>,
}

/// The stored checkpoints: those that hold (with `verifier_keys`, whose
/// signature verifies with one of them), to check the tree against, and
/// the first that does not, a break of its own.
pub async fn stored_anchors(
    db: &mut PgConnection,
    verifier_keys: &[&str],
) -> Result<(Vec<Anchor>, Option<Break>), VerifyError> {
    let mut anchors = Vec::new();
    let mut unheld = None;
    for stored in store::checkpoints(db).await? {
        match holding(&stored, verifier_keys) {
            Ok(checkpoint) => {
                let source = format!(
                    "stored checkpoint_id {} (size {})",
                    stored.checkpoint_id, stored.tree_size
                );
                anchors.push(Anchor { checkpoint, source });
            }
            Err(why) => {
                unheld.get_or_insert(Break::CheckpointUnheld {
                    checkpoint_id: stored.checkpoint_id,
                    why,
                });
            }
        }
    }
    Ok((anchors, unheld))
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("the audit database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("{0}")]
    Rows(#[from] super::prove::ProveError),
}

/// Recomputes the log and checks it against `anchors`.
pub async fn verify(db: &mut PgConnection, anchors: &[Anchor]) -> Result<Report, VerifyError> {
    let mut anchors: Vec<&Anchor> = anchors.iter().collect();
    anchors.sort_by_key(|a| a.checkpoint.size);
    let mut pending = anchors.iter().peekable();
    let mut frontier = Frontier::default();
    let report = |frontier: &Frontier, broken| Report {
        size: frontier.size(),
        root: frontier.root(),
        checkpoints: anchors.len(),
        broken,
    };
    // Events from here on are numbered but may not be hashed yet: no leaf
    // hash stored for them is no break.
    let (hashed, stored_past_head) = store::hashed_size_and_leaves_past(db).await?;
    if stored_past_head {
        let frontier = Frontier::default();
        return Ok(report(&frontier, Some(Break::HeadBehindTree { hashed })));
    }
    // Every event read below was numbered by the time it committed; those
    // numbered now will all be read, however many arrive meanwhile.
    let numbered = store::numbered_size(db).await?;
    let mut hashed_root = None;
    // A checkpoint of the empty tree holds trivially; skip those.
    while pending.next_if(|a| a.checkpoint.size == 0).is_some() {}
    loop {
        let from = frontier.size() as i64;
        let events = store::events(db, from, PAGE).await?;
        if events.is_empty() {
            break;
        }
        let leaves = match leaves_of(db, &events).await {
            Ok(leaves) => leaves.into_iter().map(Some).collect::<Vec<_>>(),
            Err(super::prove::ProveError::RowMissing(_)) => rows_one_by_one(db, &events).await?,
            Err(error) => return Err(error.into()),
        };
        // The interior subtrees the page's leaves complete, as recomputed,
        // for those the stored tree covers.
        let mut made: Vec<((u32, u64), Hash)> = Vec::new();
        let mut broken = None;
        for (event, leaf) in events.iter().zip(leaves) {
            let hash = match checked_leaf(event, leaf, frontier.size(), hashed) {
                Ok(hash) => hash,
                Err(at_leaf) => {
                    broken = Some(at_leaf);
                    break;
                }
            };
            frontier.push_noting(hash, |node, hash| {
                let (level, index) = node;
                if (index + 1) << level <= hashed {
                    made.push((node, hash));
                }
            });
            if frontier.size() == hashed {
                hashed_root = Some(frontier.root());
            }
            while let Some(anchor) = pending.next_if(|a| a.checkpoint.size == frontier.size()) {
                if anchor.checkpoint.root != frontier.root() {
                    broken = Some(Break::RootDiffers {
                        size: frontier.size(),
                        source: anchor.source.clone(),
                    });
                    break;
                }
            }
            if broken.is_some() {
                break;
            }
        }
        // A subtree completed by the leaves before a break is the earlier
        // break of the two.
        if let Some(subtree) = stored_subtrees_differ(db, &made).await? {
            return Ok(report(&frontier, Some(subtree)));
        }
        if let Some(broken) = broken {
            return Ok(report(&frontier, Some(broken)));
        }
    }
    if let Some(anchor) = pending.next() {
        let broken = Break::Truncated {
            size: frontier.size(),
            checkpoint: anchor.checkpoint.size,
            source: anchor.source.clone(),
        };
        return Ok(report(&frontier, Some(broken)));
    }
    if frontier.size() < hashed {
        let broken = Break::ShorterThanTree {
            size: frontier.size(),
            hashed,
        };
        return Ok(report(&frontier, Some(broken)));
    }
    if frontier.size() < numbered {
        let broken = Break::ShorterThanCounter {
            size: frontier.size(),
            numbered,
        };
        return Ok(report(&frontier, Some(broken)));
    }
    let numbered = store::numbered_size(db).await?;
    if numbered < frontier.size() {
        let broken = Break::CounterBehind {
            size: frontier.size(),
            numbered,
        };
        return Ok(report(&frontier, Some(broken)));
    }
    if let Some((kind, id)) = store::unlogged(db).await?.into_iter().next() {
        return Ok(report(&frontier, Some(Break::Unlogged { kind, id })));
    }
    if hashed > 0 {
        let plan = Plan::root(hashed);
        let subtrees = store::subtrees(db, &plan.needed).await?;
        let stored = plan.hashes(&subtrees).and_then(|r| r.first().copied());
        if stored != hashed_root {
            return Ok(report(
                &frontier,
                Some(Break::SubtreesDiffer { size: hashed }),
            ));
        }
    }
    Ok(report(&frontier, None))
}

/// The hash of the leaf at `index`, once its entry and row hold: the
/// entry's place, its row present and as the entry copies it, and the
/// leaf as stored (when the stored tree, of `hashed` leaves, covers it).
fn checked_leaf(
    event: &store::EventRow,
    leaf: Option<RowLeaf>,
    index: u64,
    hashed: u64,
) -> Result<Hash, Break> {
    if event.log_index as u64 != index {
        return Err(Break::Gap { index });
    }
    let id = match event.kind.as_str() {
        "attempt" => event.call_id.map(|c| c.to_string()).unwrap_or_default(),
        _ => event.row_id.map(|r| r.to_string()).unwrap_or_default(),
    };
    let kind = event.kind.clone();
    let Some(leaf) = leaf else {
        return Err(Break::RowMissing { index, kind, id });
    };
    if !leaf.matches(event) {
        return Err(Break::EntryDiffers { index, kind, id });
    }
    let hash = leaf_hash(&leaf.bytes);
    match &event.leaf_hash {
        None if index < hashed => Err(Break::LeafMissing { index }),
        Some(stored) if stored.as_slice() != hash => Err(Break::LeafDiffers { index, kind, id }),
        None | Some(_) => Ok(hash),
    }
}

/// The first of `made` (interior subtrees recomputed from the leaves) that
/// the database stores otherwise, or not at all.
async fn stored_subtrees_differ(
    db: &mut PgConnection,
    made: &[((u32, u64), Hash)],
) -> Result<Option<Break>, VerifyError> {
    if made.is_empty() {
        return Ok(None);
    }
    let wanted: Vec<_> = made.iter().map(|(node, _)| *node).collect();
    let stored = store::subtrees(db, &wanted).await?;
    let differs = made
        .iter()
        .find(|(node, hash)| stored.get(node) != Some(hash))
        .map(|&((level, index), _)| Break::SubtreeDiffers { level, index });
    Ok(differs)
}

/// The leaves of a page in which some row is missing: each on its own, so
/// that the missing one is named.
async fn rows_one_by_one(
    db: &mut PgConnection,
    events: &[store::EventRow],
) -> Result<Vec<Option<RowLeaf>>, VerifyError> {
    let mut leaves = Vec::with_capacity(events.len());
    for event in events {
        match leaves_of(db, std::slice::from_ref(event)).await {
            Ok(mut one) => leaves.push(one.pop()),
            Err(super::prove::ProveError::RowMissing(_)) => leaves.push(None),
            Err(error) => return Err(error.into()),
        }
    }
    Ok(leaves)
}
