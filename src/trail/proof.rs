//! Inclusion and consistency proofs (RFC 6962 §2.1.1–2.1.2) from stored
//! subtree hashes. Which nodes a proof needs, and how a proof is checked,
//! come from `ct-merkle`; what is ours is finding each node's hash without
//! reading the leaves: a node on the tree's right edge covers an incomplete
//! range, whose hash is made from the complete subtrees stored for it.

use super::hash::{Hash, node_hash, split};
use ct_merkle::{ConsistencyProof, InclusionProof, RootHash};
use sha2_merkle::{Sha256, digest};
use std::collections::HashMap;
use std::ops::Range;

/// A complete subtree: `level` (its height) and `index`; it covers leaves
/// `[index << level, (index + 1) << level)`.
pub type Subtree = (u32, u64);

/// Where the hashes of complete subtrees come from.
pub type Subtrees = HashMap<Subtree, Hash>;

/// The leaves under the node `ct-merkle` numbers `node` (in-order: leaf i
/// is 2i, a node of height k has k trailing ones), in a tree of `size`.
fn node_range(node: u64, size: u64) -> Range<u64> {
    let level = node.trailing_ones();
    let start = (node >> (level + 1)) << level;
    start..(start + (1 << level)).min(size)
}

/// The complete subtrees that make up `range` (a node's leaves).
fn parts(range: Range<u64>, out: &mut Vec<Subtree>) {
    let n = range.end - range.start;
    if n.is_power_of_two() && range.start.is_multiple_of(n) {
        out.push((n.trailing_zeros(), range.start / n));
        return;
    }
    let k = split(n);
    parts(range.start..range.start + k, out);
    parts(range.start + k..range.end, out);
}

fn range_hash(range: Range<u64>, subtrees: &Subtrees) -> Option<Hash> {
    let n = range.end - range.start;
    if n.is_power_of_two() && range.start.is_multiple_of(n) {
        return subtrees
            .get(&(n.trailing_zeros(), range.start / n))
            .copied();
    }
    let k = split(n);
    let left = range_hash(range.start..range.start + k, subtrees)?;
    let right = range_hash(range.start + k..range.end, subtrees)?;
    Some(node_hash(&left, &right))
}

/// What a proof (or a root) needs read from storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    nodes: Vec<Range<u64>>,
    pub needed: Vec<Subtree>,
}

impl Plan {
    fn of(nodes: Vec<Range<u64>>) -> Self {
        let mut needed = Vec::new();
        for range in &nodes {
            parts(range.clone(), &mut needed);
        }
        needed.sort_unstable();
        needed.dedup();
        Self { nodes, needed }
    }

    /// The root of a tree of `size` (≥ 1).
    pub fn root(size: u64) -> Self {
        Self::of(std::iter::once(0..size).collect())
    }

    /// The inclusion proof of leaf `index` in a tree of `size`.
    pub fn inclusion(index: u64, size: u64) -> Self {
        let nodes = ct_merkle::indices_for_inclusion_proof(size, index);
        Self::of(nodes.into_iter().map(|n| node_range(n, size)).collect())
    }

    /// The proof that the tree of `old_size` (≥ 1) is a prefix of the tree
    /// of `new_size`.
    pub fn consistency(old_size: u64, new_size: u64) -> Self {
        let nodes = ct_merkle::indices_for_consistency_proof(old_size, new_size - old_size);
        Self::of(nodes.into_iter().map(|n| node_range(n, new_size)).collect())
    }

    /// The proof's hashes, in order (for a root plan: the root alone);
    /// `None` if a needed subtree is missing.
    pub fn hashes(&self, subtrees: &Subtrees) -> Option<Vec<Hash>> {
        self.nodes
            .iter()
            .map(|range| range_hash(range.clone(), subtrees))
            .collect()
    }
}

fn root_hash(root: &Hash, size: u64) -> RootHash<Sha256> {
    RootHash::new((*root).into(), size)
}

fn digests(path: &[Hash]) -> Vec<digest::Output<Sha256>> {
    path.iter().map(|h| (*h).into()).collect()
}

/// Whether `path` proves that the leaf with bytes `leaf` is leaf `index` of
/// the tree of `size` with `root`.
pub fn verify_inclusion(leaf: &[u8], index: u64, size: u64, path: &[Hash], root: &Hash) -> bool {
    let proof = InclusionProof::<Sha256>::from_digests(&digests(path));
    root_hash(root, size)
        .verify_inclusion(&leaf, index, &proof)
        .is_ok()
}

/// Whether `path` proves that the tree (`old_size`, `old_root`) is a prefix
/// of the tree (`new_size`, `new_root`).
pub fn verify_consistency(
    old_size: u64,
    old_root: &Hash,
    new_size: u64,
    new_root: &Hash,
    path: &[Hash],
) -> bool {
    if old_size == new_size {
        return old_root == new_root && path.is_empty();
    }
    let proof = ConsistencyProof::<Sha256>::from_digests(&digests(path));
    root_hash(new_root, new_size)
        .verify_consistency(&root_hash(old_root, old_size), &proof)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::super::hash::{leaf_hash, root_of};
    use super::*;

    /// Every complete subtree of `leaves`, as the database keeps them.
    fn stored(leaves: &[Hash]) -> Subtrees {
        let mut subtrees = Subtrees::new();
        let mut level = 0;
        let mut row: Vec<Hash> = leaves.to_vec();
        while !row.is_empty() {
            for (i, h) in row.iter().enumerate() {
                subtrees.insert((level, i as u64), *h);
            }
            row = row
                .chunks_exact(2)
                .map(|p| node_hash(&p[0], &p[1]))
                .collect();
            level += 1;
        }
        subtrees
    }

    fn leaf(i: u64) -> Vec<u8> {
        format!("leaf {i}").into_bytes()
    }

    #[test]
    fn roots_from_stored_subtrees_match_the_definition() {
        let leaves: Vec<Hash> = (0..40).map(|i| leaf_hash(&leaf(i))).collect();
        let subtrees = stored(&leaves);
        for size in 1..=40u64 {
            let root = Plan::root(size).hashes(&subtrees).unwrap();
            assert_eq!(root, vec![root_of(&leaves[..size as usize])], "size {size}");
        }
    }

    #[test]
    fn every_inclusion_proof_verifies_and_no_other_leaf_does() {
        let leaves: Vec<Hash> = (0..23).map(|i| leaf_hash(&leaf(i))).collect();
        let subtrees = stored(&leaves);
        for size in 1..=23u64 {
            let root = root_of(&leaves[..size as usize]);
            for index in 0..size {
                let path = Plan::inclusion(index, size).hashes(&subtrees).unwrap();
                assert!(verify_inclusion(&leaf(index), index, size, &path, &root));
                assert!(!verify_inclusion(
                    &leaf(index + 1),
                    index,
                    size,
                    &path,
                    &root
                ));
                if size > 1 {
                    let other = (index + 1) % size;
                    assert!(!verify_inclusion(&leaf(index), other, size, &path, &root));
                }
            }
        }
    }

    #[test]
    fn every_consistency_proof_verifies_and_a_rewritten_history_does_not() {
        let leaves: Vec<Hash> = (0..21).map(|i| leaf_hash(&leaf(i))).collect();
        let subtrees = stored(&leaves);
        let mut forged = leaves.clone();
        forged[2] = leaf_hash(b"forged");
        for new in 1..=21u64 {
            let new_root = root_of(&leaves[..new as usize]);
            for old in 1..=new {
                let old_root = root_of(&leaves[..old as usize]);
                let path = if old == new {
                    Vec::new()
                } else {
                    Plan::consistency(old, new).hashes(&subtrees).unwrap()
                };
                assert!(
                    verify_consistency(old, &old_root, new, &new_root, &path),
                    "{old}→{new}"
                );
                if old > 2 {
                    let forged_root = root_of(&forged[..old as usize]);
                    assert!(!verify_consistency(
                        old,
                        &forged_root,
                        new,
                        &new_root,
                        &path
                    ));
                }
            }
        }
    }

    /// What a plan says to read is all it needs: the gateway reads only
    /// those rows, so a plan that asked for too little (or the wrong
    /// subtrees) would fail every proof in production.
    #[test]
    fn the_subtrees_a_plan_asks_for_are_enough_and_are_complete() {
        let leaves: Vec<Hash> = (0..23).map(|i| leaf_hash(&leaf(i))).collect();
        let all = stored(&leaves);
        for size in 1..=23u64 {
            let mut plans = vec![Plan::root(size)];
            plans.extend((0..size).map(|index| Plan::inclusion(index, size)));
            plans.extend((1..size).map(|old| Plan::consistency(old, size)));
            for plan in plans {
                let only: Subtrees = plan
                    .needed
                    .iter()
                    .map(|subtree| {
                        let (level, index) = *subtree;
                        assert!(
                            (index + 1) << level <= size,
                            "{subtree:?} is not complete in a tree of {size}"
                        );
                        (*subtree, all[subtree])
                    })
                    .collect();
                assert_eq!(plan.hashes(&only), plan.hashes(&all), "{plan:?}");
                assert!(plan.hashes(&only).is_some(), "{plan:?}");
            }
        }
    }

    #[test]
    fn a_missing_subtree_is_reported_not_guessed() {
        let leaves: Vec<Hash> = (0..5).map(|i| leaf_hash(&leaf(i))).collect();
        let mut subtrees = stored(&leaves);
        subtrees.remove(&(2, 0));
        assert_eq!(Plan::root(5).hashes(&subtrees), None);
    }
}
