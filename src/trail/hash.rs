//! RFC 6962 / RFC 9162 hashing: a leaf is SHA-256(0x00 ‖ leaf bytes), an
//! interior node SHA-256(0x01 ‖ left ‖ right), and a tree of n leaves
//! splits at the largest power of two below n.

use sha2::{Digest, Sha256};

/// A leaf, node or root hash.
pub type Hash = [u8; 32];

pub fn leaf_hash(leaf: &[u8]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0x00]);
    hasher.update(leaf);
    hasher.finalize().into()
}

pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0x01]);
    hasher.update(left);
    hasher.update(right);
    hasher.finalize().into()
}

/// The root of the empty tree: SHA-256 of nothing.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// A tree grown leaf by leaf that keeps only its right edge (one complete
/// subtree per bit set in its size), so that its root at every size is
/// known without keeping the leaves.
#[derive(Debug, Clone, Default)]
pub struct Frontier {
    size: u64,
    /// (level, hash) of each complete subtree on the right edge, largest
    /// (leftmost) first.
    edge: Vec<(u32, Hash)>,
}

impl Frontier {
    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn push(&mut self, leaf_hash: Hash) {
        self.push_noting(leaf_hash, |_, _| {});
    }

    /// Pushes a leaf, telling `made` each interior subtree it completes:
    /// its (level, index) and hash.
    pub fn push_noting(&mut self, leaf_hash: Hash, mut made: impl FnMut((u32, u64), Hash)) {
        let mut hash = leaf_hash;
        let mut level = 0;
        let size = self.size + 1;
        while let Some(&(top, left)) = self.edge.last() {
            if top != level {
                break;
            }
            self.edge.pop();
            hash = node_hash(&left, &hash);
            level += 1;
            made((level, (size >> level) - 1), hash);
        }
        self.edge.push((level, hash));
        self.size = size;
    }

    pub fn root(&self) -> Hash {
        let mut subtrees = self.edge.iter().rev();
        let Some(&(_, mut root)) = subtrees.next() else {
            return empty_root();
        };
        for (_, left) in subtrees {
            root = node_hash(left, &root);
        }
        root
    }
}

/// The root of `leaves` (hashes), by the definition itself: what the tests
/// check the faster ways against.
#[cfg(test)]
pub fn root_of(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = split(n as u64) as usize;
            node_hash(&root_of(&leaves[..k]), &root_of(&leaves[k..]))
        }
    }
}

/// The largest power of two below `n` (n ≥ 2): where a tree of n leaves
/// splits.
pub fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&[i as u8])).collect()
    }

    #[test]
    fn the_frontier_has_the_root_of_every_size() {
        let all = leaves(70);
        let mut frontier = Frontier::default();
        assert_eq!(frontier.root(), empty_root());
        for (i, leaf) in all.iter().enumerate() {
            frontier.push(*leaf);
            assert_eq!(frontier.size(), i as u64 + 1);
            assert_eq!(frontier.root(), root_of(&all[..=i]), "size {}", i + 1);
        }
    }

    #[test]
    fn trees_split_at_the_largest_power_of_two_below_their_size() {
        assert_eq!(split(2), 1);
        assert_eq!(split(3), 2);
        assert_eq!(split(4), 2);
        assert_eq!(split(5), 4);
        assert_eq!(split(8), 4);
        assert_eq!(split(9), 8);
    }

    #[test]
    fn hashes_match_the_rfc_6962_test_vectors() {
        // From the Certificate Transparency reference tests: the empty
        // tree, and the one-leaf tree of the empty leaf.
        assert_eq!(
            hex::encode(empty_root()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hex::encode(leaf_hash(&[])),
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
        );
        // The eight-leaf tree of transparency-dev/merkle's reference
        // inputs: "", 0x00, 0x10, 0x2021, 0x3031, 0x40414243, 0x5051525354555657,
        // 0x606162636465666768696a6b6c6d6e6f.
        let inputs: [&[u8]; 8] = [
            b"",
            &[0x00],
            &[0x10],
            &[0x20, 0x21],
            &[0x30, 0x31],
            &[0x40, 0x41, 0x42, 0x43],
            &[0x50, 0x51, 0x52, 0x53, 0x54, 0x55, 0x56, 0x57],
            &[
                0x60, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x6b, 0x6c, 0x6d,
                0x6e, 0x6f,
            ],
        ];
        let hashes: Vec<Hash> = inputs.iter().map(|l| leaf_hash(l)).collect();
        assert_eq!(
            hex::encode(root_of(&hashes)),
            "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"
        );
        assert_eq!(
            hex::encode(root_of(&hashes[..3])),
            "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77"
        );
    }
}
