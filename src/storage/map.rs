//! One core's in-memory map of versioned values. Pure data structure, no I/O.
//!
//! Owns: the newest known version of every key this core stores, including tombstones.
//! Rule (last-write-wins): a write applies only if its version is newer than the stored one;
//! an older write is refused as stale and told the stored version; an equal version is the same
//! write seen again and changes nothing. Deletes store a versioned tombstone, so an older write
//! arriving later (a retry, read repair, replay) cannot bring the key back.
//!
//! Memory: one 32-byte table slot plus one allocation holding key and value together.

use hashbrown::hash_table::{Entry as TableEntry, HashTable};

use crate::core::version::Version;
use crate::limits::{KEY_BYTES_MAX, WAL_RECORD_HEADER_BYTES};

/// One key's slot: key and value share one allocation (`blob = key ++ value`), so a 16-byte
/// key with a 100-byte value costs one 128-byte malloc chunk plus this 32-byte slot.
struct Slot {
    blob: Box<[u8]>,
    hlc: u64,
    writer: u32,
    key_len: u16,
    live: bool,
}

const _: () = assert!(std::mem::size_of::<Slot>() == 32);
const _: () = assert!(KEY_BYTES_MAX <= u16::MAX as usize);

impl Slot {
    fn new(key: &[u8], value: Option<&[u8]>, version: Version) -> Slot {
        let v = value.unwrap_or_default();
        let mut blob = Vec::with_capacity(key.len() + v.len());
        blob.extend_from_slice(key);
        blob.extend_from_slice(v);
        Slot {
            blob: blob.into_boxed_slice(),
            hlc: version.hlc,
            writer: version.writer,
            key_len: key.len() as u16,
            live: value.is_some(),
        }
    }

    fn key(&self) -> &[u8] {
        &self.blob[..self.key_len as usize]
    }

    fn value(&self) -> Option<&[u8]> {
        self.live.then(|| &self.blob[self.key_len as usize..])
    }

    fn version(&self) -> Version {
        Version {
            hlc: self.hlc,
            writer: self.writer,
        }
    }
}

/// The result of applying a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// Stored; `was_live` tells whether a live value was replaced.
    New { was_live: bool },
    /// Already stored at this exact version.
    Same { was_live: bool },
    /// Refused: the stored version is newer.
    Stale { stored: Version },
}

#[derive(Default)]
pub struct Map {
    table: HashTable<Slot>,
    hasher: ahash::RandomState,
    live: usize,
    /// Bytes a snapshot of this map takes in the WAL (every slot as one record).
    record_bytes: u64,
    /// Heap bytes of every slot's blob, each rounded up to the allocator's 16-byte granule.
    blob_heap_bytes: u64,
}

/// Heap bytes of one blob allocation (mimalloc's small size classes are 16-byte multiples).
fn blob_heap_bytes(len: usize) -> u64 {
    len.div_ceil(16) as u64 * 16
}

/// Table bytes per bucket: the 32-byte slot and hashbrown's control byte.
const TABLE_BYTES_PER_BUCKET: u64 = 33;

/// WAL bytes of one slot's record.
fn slot_record_bytes(s: &Slot) -> u64 {
    (WAL_RECORD_HEADER_BYTES + s.blob.len()) as u64
}

impl Map {
    pub fn new() -> Map {
        Map::default()
    }

    fn find(&self, key: &[u8]) -> Option<&Slot> {
        self.table
            .find(self.hasher.hash_one(key), |s| s.key() == key)
    }

    /// The stored version of `key`, tombstones included.
    pub fn version_of(&self, key: &[u8]) -> Option<Version> {
        self.find(key).map(Slot::version)
    }

    /// The live value for `key` and its version.
    pub fn get(&self, key: &[u8]) -> Option<(&[u8], Version)> {
        let s = self.find(key)?;
        s.value().map(|v| (v, s.version()))
    }

    /// Apply a put (`Some`) or delete (`None`) at `version`.
    pub fn apply(&mut self, key: &[u8], value: Option<&[u8]>, version: Version) -> Applied {
        let hasher = &self.hasher;
        let hash = hasher.hash_one(key);
        match self
            .table
            .entry(hash, |s| s.key() == key, |s| hasher.hash_one(s.key()))
        {
            TableEntry::Occupied(mut e) => {
                let slot = e.get_mut();
                let was_live = slot.live;
                let stored = slot.version();
                if version < stored {
                    return Applied::Stale { stored };
                }
                if version == stored {
                    return Applied::Same { was_live };
                }
                let old_bytes = slot_record_bytes(slot);
                let old_heap = blob_heap_bytes(slot.blob.len());
                *slot = Slot::new(key, value, version);
                self.record_bytes = self.record_bytes - old_bytes + slot_record_bytes(slot);
                self.blob_heap_bytes =
                    self.blob_heap_bytes - old_heap + blob_heap_bytes(slot.blob.len());
                self.live = self.live - usize::from(was_live) + usize::from(value.is_some());
                Applied::New { was_live }
            }
            TableEntry::Vacant(e) => {
                let slot = Slot::new(key, value, version);
                self.record_bytes += slot_record_bytes(&slot);
                self.blob_heap_bytes += blob_heap_bytes(slot.blob.len());
                e.insert(slot);
                self.live += usize::from(value.is_some());
                Applied::New { was_live: false }
            }
        }
    }

    /// Drop `key` if its stored version is `up_to` or older (the key moved to other nodes).
    /// Returns whether it was dropped.
    pub fn forget(&mut self, key: &[u8], up_to: Version) -> bool {
        let hash = self.hasher.hash_one(key);
        match self.table.find_entry(hash, |s| s.key() == key) {
            Ok(e) if e.get().version() <= up_to => {
                let (slot, _) = e.remove();
                self.live -= usize::from(slot.live);
                self.record_bytes -= slot_record_bytes(&slot);
                self.blob_heap_bytes -= blob_heap_bytes(slot.blob.len());
                true
            }
            _ => false,
        }
    }

    /// Live keys (tombstones excluded).
    pub fn live_len(&self) -> usize {
        self.live
    }

    /// Bytes a snapshot of this map takes in the WAL (live values and tombstones).
    pub fn record_bytes(&self) -> u64 {
        self.record_bytes
    }

    /// Memory this map holds: its table (every bucket, used or not) and every key and value
    /// allocation. What `--max-memory` limits (connection buffers and code come on top).
    pub fn memory_bytes(&self) -> u64 {
        self.table.capacity() as u64 * TABLE_BYTES_PER_BUCKET + self.blob_heap_bytes
    }

    /// Whether storing `value_len` bytes under `key` would take more memory than it holds
    /// now: a new key, or a value larger than the stored one.
    pub fn would_grow(&self, key: &[u8], value_len: usize) -> bool {
        match self.find(key) {
            None => true,
            Some(s) => blob_heap_bytes(key.len() + value_len) > blob_heap_bytes(s.blob.len()),
        }
    }

    /// Keys including tombstones.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Every key with its value (`None` for a tombstone) and version.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], Option<&[u8]>, Version)> {
        self.table.iter().map(|s| (s.key(), s.value(), s.version()))
    }

    /// The newest version stored (seeds the core's clock after replay).
    pub fn max_version(&self) -> Version {
        self.table
            .iter()
            .map(Slot::version)
            .max()
            .unwrap_or(Version::ZERO)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forget_drops_only_the_given_version_or_older() {
        let v = |hlc| Version { hlc, writer: 1 };
        let mut m = Map::new();
        m.apply(b"a", Some(b"1"), v(5));
        m.apply(b"b", None, v(5));
        assert!(!m.forget(b"a", v(4)), "a newer write is kept");
        assert_eq!(m.live_len(), 1);
        assert!(m.forget(b"a", v(5)));
        assert!(m.forget(b"b", v(9)), "tombstones too");
        assert!(!m.forget(b"missing", v(9)));
        assert_eq!((m.len(), m.live_len()), (0, 0));
        assert_eq!(m.get(b"a"), None);
    }

    fn v(hlc: u64) -> Version {
        Version { hlc, writer: 1 }
    }

    #[test]
    fn memory_follows_the_blobs_and_growth_is_told_apart() {
        let mut m = Map::new();
        assert!(m.would_grow(b"k", 10), "a new key grows");
        m.apply(b"k", Some(&[0u8; 40]), v(1));
        let one = m.memory_bytes();
        assert!(one >= TABLE_BYTES_PER_BUCKET + 48, "{one}");
        assert!(!m.would_grow(b"k", 40), "same size");
        assert!(!m.would_grow(b"k", 3), "smaller");
        assert!(m.would_grow(b"k", 100), "larger");
        m.apply(b"k", None, v(2));
        assert!(m.memory_bytes() < one, "a tombstone keeps only the key");
    }

    /// The snapshot size the compaction trigger compares the WAL with.
    #[test]
    fn record_bytes_follow_every_change() {
        let h = WAL_RECORD_HEADER_BYTES as u64;
        let mut m = Map::new();
        m.apply(b"k", Some(b"abc"), v(1));
        assert_eq!(m.record_bytes(), h + 4);
        m.apply(b"k", Some(b"abcdef"), v(2));
        assert_eq!(m.record_bytes(), h + 7, "an overwrite replaces, not adds");
        m.apply(b"k", Some(b"x"), v(1));
        assert_eq!(m.record_bytes(), h + 7, "a stale write changes nothing");
        m.apply(b"k", None, v(3));
        assert_eq!(m.record_bytes(), h + 1, "a tombstone keeps its key");
        m.apply(b"j", Some(b"12"), v(1));
        assert!(m.forget(b"k", v(3)));
        assert_eq!(m.record_bytes(), h + 3);
        let total: u64 = m
            .iter()
            .map(|(k, v, _)| h + (k.len() + v.map_or(0, <[u8]>::len)) as u64)
            .sum();
        assert_eq!(m.record_bytes(), total);
    }

    #[test]
    fn newer_wins_older_is_stale_equal_is_same() {
        let mut m = Map::new();
        assert_eq!(
            m.apply(b"k", Some(b"a"), v(2)),
            Applied::New { was_live: false }
        );
        assert_eq!(
            m.apply(b"k", Some(b"old"), v(1)),
            Applied::Stale { stored: v(2) }
        );
        assert_eq!(m.get(b"k"), Some((&b"a"[..], v(2))));
        assert_eq!(
            m.apply(b"k", Some(b"a"), v(2)),
            Applied::Same { was_live: true }
        );
        assert_eq!(
            m.apply(b"k", Some(b"b"), v(3)),
            Applied::New { was_live: true }
        );
        assert_eq!(m.get(b"k"), Some((&b"b"[..], v(3))));
    }

    #[test]
    fn tombstones_win_over_older_writes() {
        let mut m = Map::new();
        m.apply(b"k", Some(b"a"), v(1));
        assert_eq!(m.apply(b"k", None, v(5)), Applied::New { was_live: true });
        assert_eq!(m.get(b"k"), None);
        assert_eq!(
            m.apply(b"k", Some(b"late"), v(4)),
            Applied::Stale { stored: v(5) }
        );
        assert_eq!(m.get(b"k"), None);
        assert_eq!((m.live_len(), m.len()), (0, 1));
        assert_eq!(
            m.apply(b"k", Some(b"new"), v(6)),
            Applied::New { was_live: false }
        );
        assert_eq!(m.live_len(), 1);
    }

    #[test]
    fn ties_are_broken_by_writer() {
        let mut m = Map::new();
        m.apply(b"k", Some(b"w1"), Version { hlc: 9, writer: 1 });
        let r = m.apply(b"k", Some(b"w2"), Version { hlc: 9, writer: 2 });
        assert_eq!(r, Applied::New { was_live: true });
        assert_eq!(m.max_version(), Version { hlc: 9, writer: 2 });
    }

    #[test]
    fn delete_of_missing_key_is_not_live() {
        let mut m = Map::new();
        assert_eq!(m.apply(b"k", None, v(1)), Applied::New { was_live: false });
        assert_eq!(m.live_len(), 0);
    }
}
