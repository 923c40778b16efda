//! Anti-entropy's hash tree (Dynamo §4.7) and the reconcile rule. Pure.
//!
//! Owns: how two replicas summarise the keys they share — every (key, version) pair, tombstones
//! included, hashed into one of `merkle::LEAVES` (2^`ANTI_ENTROPY_LEAF_BITS`) leaves chosen by the key's ring hash —
//! and what to do with a key once both sides' versions are known. Never reads a map, sends or
//! sleeps: the shell (`server::cluster::anti_entropy`) feeds it entries and carries out the actions.
//!
//! A leaf is the XOR of its entries' 64-bit hashes: order-free, so each core builds a partial
//! tree over its own keys and the node combines them with `merge`; equal sets give equal
//! leaves. The root is a hash of the leaves. Replicas compare roots first (equal: done, 8
//! bytes exchanged); only when they differ are the leaves compared, and only the keys of the
//! leaves that differ are listed and exchanged.

use crate::core::version::Version;
use crate::limits::ANTI_ENTROPY_LEAF_BITS;

/// Leaves per tree.
pub const LEAVES: usize = 1 << ANTI_ENTROPY_LEAF_BITS;

/// The leaf holding `key`: the top bits of its ring hash (spreads keys evenly).
pub fn leaf_of(key: &[u8]) -> usize {
    (crate::core::ring::hash(key) >> (32 - ANTI_ENTROPY_LEAF_BITS)) as usize
}

/// One entry's hash: MurmurHash3 x64 128 of key, hlc and writer, low 64 bits (the same on
/// every node: a fixed seed).
pub fn entry_hash(key: &[u8], version: Version) -> u64 {
    let mut buf = Vec::with_capacity(key.len() + 12);
    buf.extend_from_slice(key);
    buf.extend_from_slice(&version.hlc.to_le_bytes());
    buf.extend_from_slice(&version.writer.to_le_bytes());
    let mut cursor = std::io::Cursor::new(&buf);
    // Reading from an in-memory cursor cannot fail.
    murmur3::murmur3_x64_128(&mut cursor, 0x6b76_7374).unwrap_or(0) as u64
}

/// A replica's summary of the keys it shares with one peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tree {
    leaves: Vec<u64>,
}

impl Default for Tree {
    fn default() -> Tree {
        Tree {
            leaves: vec![0; LEAVES],
        }
    }
}

impl Tree {
    pub fn new() -> Tree {
        Tree::default()
    }

    /// Account for one (key, version) entry.
    pub fn add(&mut self, key: &[u8], version: Version) {
        self.leaves[leaf_of(key)] ^= entry_hash(key, version);
    }

    /// Combine with another part of the same replica's keys (another core's).
    pub fn merge(&mut self, other: &Tree) {
        for (a, b) in self.leaves.iter_mut().zip(&other.leaves) {
            *a ^= b;
        }
    }

    /// The root: a hash of every leaf.
    pub fn root(&self) -> u64 {
        let bytes = self.to_bytes();
        let mut cursor = std::io::Cursor::new(&bytes);
        murmur3::murmur3_x64_128(&mut cursor, 0x726f_6f74).unwrap_or(0) as u64
    }

    /// Indices of the leaves that differ from `other`'s.
    pub fn diff(&self, other: &Tree) -> Vec<usize> {
        (0..LEAVES)
            .filter(|&i| self.leaves[i] != other.leaves[i])
            .collect()
    }

    /// Wire form: the leaves, little-endian u64 each.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.leaves.iter().flat_map(|l| l.to_le_bytes()).collect()
    }

    /// From the wire form; `None` unless it is exactly `LEAVES` leaves.
    pub fn from_bytes(bytes: &[u8]) -> Option<Tree> {
        if bytes.len() != LEAVES * 8 {
            return None;
        }
        let leaves = bytes
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect();
        Some(Tree { leaves })
    }
}

/// What one side does with a key after comparing the two replicas' versions (`None`: the
/// replica does not hold it). Newest wins, tombstones included (Dynamo §4.7, last-write-wins).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// The peer's copy is newer or ours is missing: fetch it and store it here.
    Pull,
    /// Ours is newer or the peer's is missing: send it there.
    Push,
    /// Both hold the same version.
    Keep,
}

pub fn reconcile(mine: Option<Version>, theirs: Option<Version>) -> Action {
    match (mine, theirs) {
        (Some(m), Some(t)) if m == t => Action::Keep,
        (Some(m), Some(t)) if m > t => Action::Push,
        (Some(_), None) => Action::Push,
        (_, Some(_)) => Action::Pull,
        (None, None) => Action::Keep,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(hlc: u64) -> Version {
        Version { hlc, writer: 1 }
    }

    #[test]
    fn equal_sets_give_equal_roots_in_any_order_and_split() {
        let keys: Vec<String> = (0..500).map(|i| format!("k{i}")).collect();
        let mut a = Tree::new();
        for k in &keys {
            a.add(k.as_bytes(), v(7));
        }
        // the same entries, in reverse, built by two "cores" and merged
        let (mut b1, mut b2) = (Tree::new(), Tree::new());
        for (i, k) in keys.iter().rev().enumerate() {
            if i % 2 == 0 { &mut b1 } else { &mut b2 }.add(k.as_bytes(), v(7));
        }
        b1.merge(&b2);
        assert_eq!(a, b1);
        assert_eq!(a.root(), b1.root());
        assert!(a.diff(&b1).is_empty());
        assert_eq!(Tree::from_bytes(&a.to_bytes()), Some(a));
        assert_eq!(Tree::from_bytes(&[0; 8]), None);
    }

    #[test]
    fn a_missing_key_or_an_older_version_shows_in_exactly_its_leaf() {
        let mut a = Tree::new();
        let mut b = Tree::new();
        for i in 0..200 {
            let k = format!("k{i}");
            a.add(k.as_bytes(), v(1));
            if i != 17 {
                b.add(k.as_bytes(), v(1));
            }
        }
        assert_ne!(a.root(), b.root());
        assert_eq!(a.diff(&b), vec![leaf_of(b"k17")]);
        let mut c = b.clone();
        c.add(b"k17", v(0));
        assert_eq!(
            a.diff(&c),
            vec![leaf_of(b"k17")],
            "another version differs too"
        );
    }

    #[test]
    fn newest_wins_both_ways() {
        assert_eq!(reconcile(Some(v(2)), Some(v(1))), Action::Push);
        assert_eq!(reconcile(Some(v(1)), Some(v(2))), Action::Pull);
        assert_eq!(reconcile(Some(v(1)), Some(v(1))), Action::Keep);
        assert_eq!(reconcile(None, Some(v(1))), Action::Pull);
        assert_eq!(reconcile(Some(v(1)), None), Action::Push);
        assert_eq!(reconcile(None, None), Action::Keep);
    }
}
