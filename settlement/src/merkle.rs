//! An RFC 6962 (Certificate Transparency) Merkle tree over byte leaves, with inclusion proofs.
//!
//! Hashing is domain-separated so a leaf can never be passed off as an interior node:
//! `leaf = SHA-256(0x00 ‖ bytes)`, `node = SHA-256(0x01 ‖ left ‖ right)`, and the tree of no
//! leaves has the root `SHA-256("")`. For `n > 1` leaves the left subtree holds the largest power
//! of two smaller than `n` leaves and the right subtree the rest (RFC 6962 §2.1). We chose this
//! standard over a home-made one so that anyone can check a proof with any CT library or a few
//! lines of any language (docs/settlement.md has one in Python).
//!
//! The tree is built once, level by level, and kept: the root costs `n − 1` node hashes and every
//! proof is then read off the stored levels in `O(log n)`, so proving every receipt of a batch is
//! `O(n log n)` in total and never rehashes. Building level by level and promoting a level's
//! unpaired last node unchanged to the level above gives exactly RFC 6962's left-full shape (the
//! tests check this against a recursive transcription of the RFC and its published vectors).

use sha2::{Digest, Sha256};

/// A SHA-256 digest: a leaf hash, a node hash or a root.
pub type Hash = [u8; 32];

/// The hash of a leaf: `SHA-256(0x00 ‖ bytes)`.
pub fn leaf_hash(bytes: &[u8]) -> Hash {
    Sha256::new()
        .chain_update([0x00])
        .chain_update(bytes)
        .finalize()
        .into()
}

/// The hash of an interior node: `SHA-256(0x01 ‖ left ‖ right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    Sha256::new()
        .chain_update([0x01])
        .chain_update(left)
        .chain_update(right)
        .finalize()
        .into()
}

/// The root of the tree with no leaves: `SHA-256("")`.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// A built tree: every level from the leaf hashes (level 0) up to the root (the last level, one
/// hash), so proofs need no hashing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MerkleTree {
    levels: Vec<Vec<Hash>>,
}

impl MerkleTree {
    /// Builds the tree over `leaves` (each one's bytes, in order).
    pub fn from_leaves<L: AsRef<[u8]>>(leaves: &[L]) -> Self {
        Self::from_leaf_hashes(leaves.iter().map(|l| leaf_hash(l.as_ref())).collect())
    }

    /// Builds the tree over leaves already hashed with [`leaf_hash`].
    pub fn from_leaf_hashes(leaves: Vec<Hash>) -> Self {
        let mut levels = vec![leaves];
        while let Some(below) = levels.last().filter(|level| level.len() > 1) {
            let above = below
                .chunks(2)
                .map(|pair| match pair {
                    [left, right] => node_hash(left, right),
                    // The unpaired last node moves up unchanged: RFC 6962's split rule.
                    [lone] => *lone,
                    _ => unreachable!("chunks(2) yields one or two hashes"),
                })
                .collect();
            levels.push(above);
        }
        Self { levels }
    }

    /// Leaves in the tree.
    pub fn len(&self) -> usize {
        self.levels[0].len()
    }

    /// Whether the tree has no leaves.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The tree's root ([`empty_root`] for no leaves).
    pub fn root(&self) -> Hash {
        match self.levels.last().and_then(|top| top.first()) {
            Some(root) => *root,
            None => empty_root(),
        }
    }

    /// The hash of leaf `index`.
    pub fn leaf(&self, index: usize) -> Option<Hash> {
        self.levels[0].get(index).copied()
    }

    /// The inclusion proof of leaf `index` (RFC 6962 §2.1.1 audit path): sibling hashes from the
    /// leaf up to the root; `None` if there is no such leaf.
    pub fn proof(&self, index: usize) -> Option<Vec<Hash>> {
        if index >= self.len() {
            return None;
        }
        let mut path = Vec::with_capacity(self.levels.len());
        let mut i = index;
        for level in &self.levels[..self.levels.len() - 1] {
            let sibling = i ^ 1;
            // A node without a sibling (the unpaired last one) moves up: no hash on the path.
            if let Some(hash) = level.get(sibling) {
                path.push(*hash);
            }
            i /= 2;
        }
        Some(path)
    }
}

/// Whether `leaf` (its bytes) is leaf `index` of a tree of `tree_size` leaves with root `root`,
/// by the audit path `path` (siblings from the leaf up).
pub fn verify(leaf: &[u8], index: u64, tree_size: u64, path: &[Hash], root: &Hash) -> bool {
    verify_hash(&leaf_hash(leaf), index, tree_size, path, root)
}

/// [`verify`] for a leaf already hashed: the algorithm of RFC 9162 §2.1.3.2 (which states RFC
/// 6962's audit-path check precisely), so a path of the wrong length, a wrong index or a wrong
/// size fails.
pub fn verify_hash(leaf: &Hash, index: u64, tree_size: u64, path: &[Hash], root: &Hash) -> bool {
    if index >= tree_size {
        return false;
    }
    let (mut f, mut s) = (index, tree_size - 1);
    let mut r = *leaf;
    for p in path {
        if s == 0 {
            return false;
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    s == 0 && r == *root
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6962 §2.1 transcribed literally (recursive, split at the largest power of two smaller
    /// than `n`): the independent reference the level-by-level build is checked against.
    fn rfc_root(leaves: &[Vec<u8>]) -> Hash {
        match leaves.len() {
            0 => empty_root(),
            1 => leaf_hash(&leaves[0]),
            n => {
                let k = split(n);
                node_hash(&rfc_root(&leaves[..k]), &rfc_root(&leaves[k..]))
            }
        }
    }

    /// RFC 6962 §2.1.1 `PATH(m, D[n])`, literally.
    fn rfc_path(m: usize, leaves: &[Vec<u8>]) -> Vec<Hash> {
        let n = leaves.len();
        if n <= 1 {
            return Vec::new();
        }
        let k = split(n);
        if m < k {
            let mut path = rfc_path(m, &leaves[..k]);
            path.push(rfc_root(&leaves[k..]));
            path
        } else {
            let mut path = rfc_path(m - k, &leaves[k..]);
            path.push(rfc_root(&leaves[..k]));
            path
        }
    }

    /// The largest power of two smaller than `n` (n > 1).
    fn split(n: usize) -> usize {
        let mut k = 1;
        while k * 2 < n {
            k *= 2;
        }
        k
    }

    fn h(text: &str) -> Hash {
        hex::decode(text).unwrap().try_into().unwrap()
    }

    /// The reference inputs of Certificate Transparency's `merkle_tree_test.cc` (the same
    /// vectors are in transparency-dev/merkle's `testonly` package).
    fn ct_leaves() -> Vec<Vec<u8>> {
        [
            "",
            "00",
            "10",
            "2021",
            "3031",
            "40414243",
            "5051525354555657",
            "606162636465666768696a6b6c6d6e6f",
        ]
        .iter()
        .map(|l| hex::decode(l).unwrap())
        .collect()
    }

    /// Their published roots for sizes 0..=8.
    const CT_ROOTS: [&str; 9] = [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    #[test]
    fn roots_match_the_certificate_transparency_vectors() {
        let leaves = ct_leaves();
        for (size, expected) in CT_ROOTS.iter().enumerate() {
            let tree = MerkleTree::from_leaves(&leaves[..size]);
            assert_eq!(hex::encode(tree.root()), *expected, "size {size}");
            assert_eq!(tree.len(), size);
        }
    }

    #[test]
    fn proofs_match_the_certificate_transparency_vectors() {
        let tree = MerkleTree::from_leaves(&ct_leaves());
        let root = h(CT_ROOTS[8]);
        for (index, expected) in [
            (
                0,
                [
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                5,
                [
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
        ] {
            let path = tree.proof(index).unwrap();
            assert_eq!(path, expected.map(h).to_vec(), "leaf {index}");
            assert!(verify(&ct_leaves()[index], index as u64, 8, &path, &root));
        }
    }

    /// A seeded linear congruential generator: reproducible random trees without a new crate.
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            self.0 >> 33
        }
    }

    /// `n` distinct leaves (each starts with its index) of random length and content.
    fn random_leaves(rng: &mut Lcg, n: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| {
                let len = (rng.next() % 40) as usize;
                let mut leaf = (i as u32).to_be_bytes().to_vec();
                leaf.extend((0..len).map(|_| rng.next() as u8));
                leaf
            })
            .collect()
    }

    #[test]
    fn every_leaf_of_every_size_up_to_300_proves_as_the_rfc_says() {
        let mut rng = Lcg(6962);
        for n in 1..=300 {
            let leaves = random_leaves(&mut rng, n);
            let tree = MerkleTree::from_leaves(&leaves);
            let root = tree.root();
            assert_eq!(root, rfc_root(&leaves), "root of {n}");
            // The recursive PATH is quadratic: compare it on every index of small trees and on
            // a sample of the larger ones; verification covers every index of every size.
            for (m, leaf) in leaves.iter().enumerate() {
                let path = tree.proof(m).unwrap();
                if n <= 64 || m % 17 == 0 || m == n - 1 {
                    assert_eq!(path, rfc_path(m, &leaves), "path of {m} in {n}");
                }
                assert!(verify(leaf, m as u64, n as u64, &path, &root), "{m} of {n}");
            }
            assert_eq!(tree.proof(n), None);
        }
    }

    /// For leaf `m` of `n`, from the leaf up: whether each sibling on the path is on the left;
    /// `None` for an index outside the tree.
    fn shape(m: u64, n: u64) -> Option<Vec<bool>> {
        if m >= n {
            return None;
        }
        let (mut i, mut len, mut sides) = (m, n, Vec::new());
        while len > 1 {
            if i % 2 == 1 {
                sides.push(true);
            } else if i + 1 < len {
                sides.push(false);
            }
            i /= 2;
            len = len.div_ceil(2);
        }
        Some(sides)
    }

    #[test]
    fn a_changed_leaf_path_index_size_or_root_fails() {
        let mut rng = Lcg(42);
        for n in 1..=40 {
            let leaves = random_leaves(&mut rng, n);
            let tree = MerkleTree::from_leaves(&leaves);
            let root = tree.root();
            for (m, leaf) in leaves.iter().enumerate() {
                let path = tree.proof(m).unwrap();
                let (m, n64) = (m as u64, n as u64);
                // Every single flipped bit of the path and of the root in small trees, a spread
                // of bits in larger ones (debug-build SHA-256 is slow).
                let bits: Vec<usize> = if n <= 12 {
                    (0..256).collect()
                } else {
                    vec![0, 7, 8, 131, 248, 255]
                };
                for i in 0..path.len() {
                    for &bit in &bits {
                        let mut bad = path.clone();
                        bad[i][bit / 8] ^= 1 << (bit % 8);
                        assert!(!verify(leaf, m, n64, &bad, &root), "path {i}:{bit}");
                    }
                }
                for &bit in &bits {
                    let mut bad = root;
                    bad[bit / 8] ^= 1 << (bit % 8);
                    assert!(!verify(leaf, m, n64, &path, &bad), "root bit {bit}");
                }
                let mut other = leaf.clone();
                other.push(0);
                assert!(!verify(&other, m, n64, &path, &root), "another leaf");
                // The index and size steer the hashing only through the shape of the path
                // (which side each sibling is on): any other shape fails. (The size a proof is
                // checked with is the receipt count posted with the root, not the prover's word.)
                let own = shape(m, n64);
                for wrong in (0..n64 + 2).filter(|&w| w != m) {
                    if shape(wrong, n64) != own {
                        assert!(!verify(leaf, wrong, n64, &path, &root), "index {wrong}");
                    }
                }
                for size in 0..n64 * 2 + 2 {
                    if size != n64 && shape(m, size) != own {
                        assert!(!verify(leaf, m, size, &path, &root), "size {size}");
                    }
                }
                if !path.is_empty() {
                    assert!(
                        !verify(leaf, m, n64, &path[..path.len() - 1], &root),
                        "short"
                    );
                }
                let mut longer = path.clone();
                longer.push([0xab; 32]);
                assert!(!verify(leaf, m, n64, &longer, &root), "long");
            }
        }
    }

    #[test]
    fn a_tree_without_leaves_proves_nothing() {
        let tree = MerkleTree::from_leaves::<Vec<u8>>(&[]);
        assert!(tree.is_empty());
        assert_eq!(tree.root(), h(CT_ROOTS[0]));
        assert_eq!(tree.proof(0), None);
        assert!(!verify(b"", 0, 0, &[], &tree.root()));
    }
}
