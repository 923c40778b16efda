//! One core's in-memory map of versioned values. Pure data structure, no I/O.
//!
//! Owns: the newest known version of every key this core stores, including tombstones.
//! Rule (last-write-wins): a write applies only if its version is newer than the stored one;
//! an older write is refused as stale and told the stored version; an equal version is the same
//! write seen again and changes nothing. Deletes store a versioned tombstone, so an older write
//! arriving later (a retry, read repair, replay) cannot bring the key back.
//! Collections are the exception: a write where either side is a collection cell is joined
//! with the stored value (`core::crdt::collection::join`), never just kept or dropped by
//! version, so a delta from any path, in any order, any number of times, lands once.
//!
//! Values are cells (`core::cell`): the map reads one only for its expiry. It indexes the keys
//! that expire by (expiry, key hash), so `expire_due` finds the due ones without a scan, and
//! turns each into a tombstone of the same version (a read of either is "missing", and the
//! version keeps older writes out); tombstones are purged by compaction after their grace.
//!
//! Memory: one 16-byte table slot plus one allocation holding version, key and value, and an
//! index entry for a key that expires.

use std::cell::OnceCell;
use std::collections::{BTreeSet, HashMap};
use std::ptr::NonNull;

use hashbrown::hash_table::{Entry as TableEntry, HashTable};

use crate::core::cell;
use crate::core::crdt::collection::{self, Collection, Outcome, Side};
use crate::core::version::Version;
use crate::limits::{KEY_BYTES_MAX, STORED_VALUE_BYTES_CEILING, WAL_RECORD_HEADER_BYTES};

/// A slot's blob opens with the version's `hlc` and the key's length, little-endian.
const BLOB_HLC_BYTES: usize = 8;
const BLOB_KEY_LEN_BYTES: usize = 2;
/// Bytes before the key in a slot's blob.
const BLOB_HEADER_BYTES: usize = BLOB_HLC_BYTES + BLOB_KEY_LEN_BYTES;

/// `Slot::len_live`'s bit saying the slot holds a value (clear: a tombstone).
const LIVE_BIT: u32 = 1 << 31;

/// One key's slot: a thin pointer to one allocation holding the version's `hlc`, the key and
/// the value (`blob = hlc ++ key_len ++ key ++ value`), its length, and the version's writer.
/// A 16-byte key with a 100-byte value (101 as a cell) costs one 128-byte malloc chunk plus
/// this 16-byte slot. (The table is at most 7/8 full and often half, so every byte of the slot
/// costs about two per key: a fat `Box<[u8]>` pointer made it 24 bytes, a 32-byte slot before
/// that.)
struct Slot {
    blob: NonNull<u8>,
    /// The blob's length, and `LIVE_BIT`.
    len_live: u32,
    writer: u32,
}

const _: () = assert!(std::mem::size_of::<Slot>() == 16);
const _: () = assert!(KEY_BYTES_MAX <= u16::MAX as usize);
const _: () =
    assert!(BLOB_HEADER_BYTES + KEY_BYTES_MAX + STORED_VALUE_BYTES_CEILING < LIVE_BIT as usize);

// SAFETY: a slot owns its blob exclusively, as the `Box<[u8]>` it was made from did; nothing
// else points into it once the slot is built.
unsafe impl Send for Slot {}

impl Slot {
    fn new(key: &[u8], value: Option<&[u8]>, version: Version) -> Slot {
        let v = value.unwrap_or_default();
        let mut blob = Vec::with_capacity(BLOB_HEADER_BYTES + key.len() + v.len());
        blob.extend_from_slice(&version.hlc.to_le_bytes());
        blob.extend_from_slice(&(key.len() as u16).to_le_bytes());
        blob.extend_from_slice(key);
        blob.extend_from_slice(v);
        let blob: &mut [u8] = Box::leak(blob.into_boxed_slice());
        let len = blob.len() as u32;
        Slot {
            blob: NonNull::from(blob).cast::<u8>(),
            len_live: len | if value.is_some() { LIVE_BIT } else { 0 },
            writer: version.writer,
        }
    }

    /// Store `value` at `version` in this slot's own blob when it is the same size (an
    /// overwrite of a fixed-size value, the common case): no allocation, no copy of the key.
    /// False (nothing changed) when the size differs.
    fn overwrite(&mut self, value: Option<&[u8]>, version: Version) -> bool {
        let v = value.unwrap_or_default();
        let at = BLOB_HEADER_BYTES + self.key_len();
        if at + v.len() != self.blob_len() {
            return false;
        }
        // SAFETY: as in `blob()`; `&mut self` makes this the only reference to the blob.
        let blob = unsafe { std::slice::from_raw_parts_mut(self.blob.as_ptr(), self.blob_len()) };
        blob[..BLOB_HLC_BYTES].copy_from_slice(&version.hlc.to_le_bytes());
        blob[at..].copy_from_slice(v);
        self.len_live = self.blob_len() as u32 | if value.is_some() { LIVE_BIT } else { 0 };
        self.writer = version.writer;
        true
    }

    fn blob(&self) -> &[u8] {
        // SAFETY: `blob` and the length came from `Box::leak` of a boxed slice of exactly that
        // length, which this slot owns until it is dropped.
        unsafe { std::slice::from_raw_parts(self.blob.as_ptr(), self.blob_len()) }
    }

    fn blob_len(&self) -> usize {
        (self.len_live & !LIVE_BIT) as usize
    }

    fn live(&self) -> bool {
        self.len_live & LIVE_BIT != 0
    }

    fn key_len(&self) -> usize {
        let mut len = [0u8; BLOB_KEY_LEN_BYTES];
        len.copy_from_slice(&self.blob()[BLOB_HLC_BYTES..BLOB_HEADER_BYTES]);
        u16::from_le_bytes(len) as usize
    }

    fn key(&self) -> &[u8] {
        &self.blob()[BLOB_HEADER_BYTES..BLOB_HEADER_BYTES + self.key_len()]
    }

    fn value(&self) -> Option<&[u8]> {
        self.live()
            .then(|| &self.blob()[BLOB_HEADER_BYTES + self.key_len()..])
    }

    fn version(&self) -> Version {
        let mut hlc = [0u8; BLOB_HLC_BYTES];
        hlc.copy_from_slice(&self.blob()[..BLOB_HLC_BYTES]);
        Version {
            hlc: u64::from_le_bytes(hlc),
            writer: self.writer,
        }
    }

    fn expires_at_ms(&self) -> Option<u64> {
        self.value().and_then(cell::expires_at_ms)
    }

    fn is_collection(&self) -> bool {
        is_collection(self.value())
    }

    /// Whether the slot counts as a key (`live_len`, DBSIZE): a value, and not an emptied
    /// collection (which Redis would have deleted; kept here for its causal context).
    fn counted(&self) -> bool {
        counted(self.value())
    }
}

fn counted(value: Option<&[u8]>) -> bool {
    match value {
        None => false,
        Some(v) if is_collection(Some(v)) => cell::decode(v).is_ok_and(|c| match c.value {
            [MARKER, empty] => *empty == 0,
            other => collection::stored_elements(other).is_some_and(|n| n > 0),
        }),
        Some(_) => true,
    }
}

/// Whether a cell holds a collection (joined with what is stored, never replacing it).
fn is_collection(value: Option<&[u8]>) -> bool {
    value
        .and_then(|v| v.first())
        .is_some_and(|t| t & !cell::TAG_EXPIRES == cell::TAG_COLLECTION)
}

impl Drop for Slot {
    fn drop(&mut self) {
        let raw = std::ptr::slice_from_raw_parts_mut(self.blob.as_ptr(), self.blob_len());
        // SAFETY: as in `blob()`; the slot is dropped once, so the box is rebuilt once.
        drop(unsafe { Box::from_raw(raw) });
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
    /// Live keys that expire: (expiry ms, key hash).
    expiring: BTreeSet<(u64, u64)>,
    /// FLUSHALL's version: nothing at or below it is stored (`flush_below`).
    floor: Version,
    /// Collections, decoded: a collection key's slot holds a marker cell (its kind, expiry
    /// and whether it is empty), its state lives here, so a delta joins in O(its size), and
    /// the encoded cell is made only when a reader asks (and kept until the next change).
    colls: HashMap<Box<[u8]>, HeldCollection, ahash::RandomState>,
    /// Estimated heap bytes of the collections (each one's encoded size when last measured,
    /// plus the deltas joined since: an upper bound).
    coll_bytes: u64,
}

struct HeldCollection {
    state: Collection,
    cell: OnceCell<Box<[u8]>>,
    /// The estimate counted in `coll_bytes`.
    bytes: u64,
    /// `bytes` when last measured (a walk): the estimate is measured again once it doubles,
    /// so measuring costs O(1) per write amortised.
    measured: u64,
}

/// A collection slot's value after the cell header: this byte (never a collection format),
/// then 1 if it holds no element.
const MARKER: u8 = 0xff;

fn marker(state: &Collection) -> Box<[u8]> {
    let empty = u8::from(state.is_empty());
    cell::encode_kind(
        cell::Kind::Collection,
        &[MARKER, empty],
        state.expires_at_ms(),
    )
}

/// Heap bytes a decoded collection holds per byte of its encoding (B-tree nodes, boxes).
const COLLECTION_HEAP_PER_ENCODED_BYTE: u64 = 3;

/// What joining a collection write leaves for the slot.
enum Join {
    /// Neither side is a collection: last-write-wins.
    NotMine,
    /// Nothing changes.
    Same,
    /// The slot's new version and value.
    Store(Version, Option<Box<[u8]>>),
    /// Refused (bytes that are not a collection).
    Refused(Version),
}

/// Memory of one expiry index entry: 16 bytes and the B-tree's nodes around it (estimate).
const EXPIRY_INDEX_BYTES_PER_KEY: u64 = 32;

/// Heap bytes of one blob allocation (mimalloc's small size classes are 16-byte multiples).
fn blob_heap_bytes(len: usize) -> u64 {
    len.div_ceil(16) as u64 * 16
}

/// Table bytes per bucket: the 16-byte slot and hashbrown's control byte.
const TABLE_BYTES_PER_BUCKET: u64 = 17;

/// WAL bytes of one slot's record.
fn slot_record_bytes(s: &Slot) -> u64 {
    (WAL_RECORD_HEADER_BYTES + s.blob_len() - BLOB_HEADER_BYTES) as u64
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
        s.value().map(|v| (self.resolved(s.key(), v), s.version()))
    }

    /// A slot's value as readers see it: a collection's encoded state for its marker.
    fn resolved<'a>(&'a self, key: &[u8], value: &'a [u8]) -> &'a [u8] {
        if !is_collection(Some(value)) {
            return value;
        }
        match self.colls.get(key) {
            Some(h) => h.cell.get_or_init(|| h.state.to_cell()),
            None => value,
        }
    }

    /// A read of some fields of the collection `key` holds: the projection's cell
    /// (`collection::Collection::project`) and the key's version; `None` when it holds no
    /// collection (read it whole).
    pub fn get_fields(
        &self,
        key: &[u8],
        fields: &[&[u8]],
        now_ms: u64,
    ) -> Option<(Box<[u8]>, Version)> {
        let h = self.colls.get(key)?;
        let version = self.version_of(key)?;
        Some((h.state.project(fields, now_ms).to_cell(), version))
    }

    /// What `key` holds, cheaply: its version, the kind of its value (`None`: a tombstone)
    /// and the value's expiry.
    pub fn kind_of(&self, key: &[u8]) -> Option<(Version, Option<cell::Kind>, Option<u64>)> {
        let s = self.find(key)?;
        let c = s.value().and_then(|v| cell::decode(v).ok());
        Some((
            s.version(),
            c.map(|c| c.kind),
            c.and_then(|c| c.expires_at_ms),
        ))
    }

    /// An upper bound of the encoded size of the collection `key` holds (0: none).
    pub fn collection_encoded_bytes(&self, key: &[u8]) -> u64 {
        self.colls
            .get(key)
            .map_or(0, |h| h.bytes / COLLECTION_HEAP_PER_ENCODED_BYTE)
    }

    /// The encoded size of the collection `key` holds, measured (a walk), the estimate reset.
    pub fn measure_collection(&mut self, key: &[u8]) -> u64 {
        let Some(h) = self.colls.get_mut(key) else {
            return 0;
        };
        let encoded = h.state.encoded_len() as u64;
        self.coll_bytes -= h.bytes;
        h.bytes = encoded * COLLECTION_HEAP_PER_ENCODED_BYTE;
        h.measured = h.bytes;
        self.coll_bytes += h.bytes;
        encoded
    }

    /// Run `f` on the collection `key` holds (`None`: it holds none); its encoded form is
    /// made again when next read.
    pub fn with_collection<R>(
        &mut self,
        key: &[u8],
        f: impl FnOnce(&mut Collection) -> R,
    ) -> Option<R> {
        let h = self.colls.get_mut(key)?;
        h.cell = OnceCell::new();
        Some(f(&mut h.state))
    }

    /// Join a write into a stored collection, or a collection into a stored value.
    fn join_collection(&mut self, key: &[u8], value: Option<&[u8]>, version: Version) -> Join {
        let stored = self
            .find(key)
            .map(|s| (s.version(), s.value().map(Box::<[u8]>::from)));
        let theirs = match collection::incoming((version, value)) {
            Ok(t) => t,
            Err(_) => return Join::Refused(stored.as_ref().map_or(version, |s| s.0)),
        };
        let delta_bytes = value.map_or(0, |v| v.len() as u64);
        let incoming = (version, value);
        match self.colls.remove(key) {
            Some(mut h) => {
                self.coll_bytes -= h.bytes;
                let state = std::mem::take(&mut h.state);
                let outcome = collection::join_into(Side::Coll(state), incoming, theirs);
                self.joined(key, outcome, Some(h), delta_bytes)
            }
            None => {
                let side = match &stored {
                    None => Side::Missing,
                    Some((v, c)) => Side::Whole((*v, c.as_deref())),
                };
                let outcome = collection::join_into(side, incoming, theirs);
                self.joined(key, outcome, None, delta_bytes)
            }
        }
    }

    /// Keep what `join_into` left.
    fn joined(
        &mut self,
        key: &[u8],
        outcome: Outcome,
        held: Option<HeldCollection>,
        delta_bytes: u64,
    ) -> Join {
        match outcome {
            Outcome::NotMine => Join::NotMine,
            Outcome::Unchanged(state) => {
                let Some((state, mut h)) = state.zip(held) else {
                    return Join::Same;
                };
                // a command ran on the state in place (`with_collection`): its delta brings
                // nothing new, but the slot's version and marker follow the state
                let behind = self.find(key).is_some_and(|s| {
                    s.version() < state.top || s.value() != Some(&marker(&state)[..])
                });
                if !behind {
                    h.state = state;
                    self.coll_bytes += h.bytes;
                    self.colls.insert(key.into(), h);
                    return Join::Same;
                }
                self.joined(key, Outcome::Coll(state), Some(h), delta_bytes)
            }
            Outcome::Whole(v, c) => Join::Store(v, c),
            Outcome::Coll(state) => {
                let measure =
                    |s: &Collection| s.encoded_len() as u64 * COLLECTION_HEAP_PER_ENCODED_BYTE;
                let (bytes, measured) = match held {
                    // a delta joined: what it brought, at most
                    Some(h) => {
                        let grown = h.bytes + delta_bytes * COLLECTION_HEAP_PER_ENCODED_BYTE;
                        if grown > 2 * h.measured.max(1024) {
                            let m = measure(&state);
                            (m, m)
                        } else {
                            (grown, h.measured)
                        }
                    }
                    None => {
                        let m = measure(&state);
                        (m, m)
                    }
                };
                let slot = Join::Store(state.top, Some(marker(&state)));
                self.coll_bytes += bytes;
                let h = HeldCollection {
                    state,
                    cell: OnceCell::new(),
                    bytes,
                    measured,
                };
                self.colls.insert(key.into(), h);
                slot
            }
        }
    }

    /// Apply a put (`Some`) or delete (`None`) at `version`.
    pub fn apply(&mut self, key: &[u8], value: Option<&[u8]>, version: Version) -> Applied {
        if version <= self.floor {
            // written before a FLUSHALL: gone with it, from whichever path it comes back
            return Applied::Stale { stored: self.floor };
        }
        let joined = if is_collection(value) || self.find(key).is_some_and(Slot::is_collection) {
            match self.join_collection(key, value, version) {
                Join::NotMine => None,
                Join::Same => {
                    let was_live = self.find(key).is_some_and(Slot::live);
                    return Applied::Same { was_live };
                }
                Join::Store(v, cell) => Some((v, cell)),
                Join::Refused(stored) => return Applied::Stale { stored },
            }
        } else {
            None
        };
        let hasher = &self.hasher;
        let hash = hasher.hash_one(key);
        let (value, version) = match &joined {
            Some((v, cell)) => (cell.as_deref(), *v),
            None => (value, version),
        };
        match self
            .table
            .entry(hash, |s| s.key() == key, |s| hasher.hash_one(s.key()))
        {
            TableEntry::Occupied(mut e) => {
                let slot = e.get_mut();
                let was_live = slot.live();
                let was_counted = slot.counted();
                let stored = slot.version();
                if joined.is_none() && version < stored {
                    return Applied::Stale { stored };
                }
                if joined.is_none() && version == stored {
                    return Applied::Same { was_live };
                }
                let old_bytes = slot_record_bytes(slot);
                let old_heap = blob_heap_bytes(slot.blob_len());
                if let Some(at) = slot.expires_at_ms() {
                    self.expiring.remove(&(at, hash));
                }
                if !slot.overwrite(value, version) {
                    *slot = Slot::new(key, value, version);
                }
                if let Some(at) = slot.expires_at_ms() {
                    self.expiring.insert((at, hash));
                }
                self.record_bytes = self.record_bytes - old_bytes + slot_record_bytes(slot);
                self.blob_heap_bytes =
                    self.blob_heap_bytes - old_heap + blob_heap_bytes(slot.blob_len());
                self.live = self.live - usize::from(was_counted) + usize::from(counted(value));
                Applied::New { was_live }
            }
            TableEntry::Vacant(e) => {
                let slot = Slot::new(key, value, version);
                if let Some(at) = slot.expires_at_ms() {
                    self.expiring.insert((at, hash));
                }
                self.record_bytes += slot_record_bytes(&slot);
                self.blob_heap_bytes += blob_heap_bytes(slot.blob_len());
                e.insert(slot);
                self.live += usize::from(counted(value));
                Applied::New { was_live: false }
            }
        }
    }

    /// FLUSHALL at `version`: drop every key (tombstones too) written before it, and refuse
    /// every later write at or below it. Returns how many keys were dropped.
    pub fn flush_below(&mut self, version: Version) -> usize {
        self.floor = self.floor.max(version);
        let floor = self.floor;
        let before = self.table.len();
        let hasher = &self.hasher;
        let mut removed = Vec::new();
        self.table.retain(|s| {
            let keep = s.version() > floor;
            if !keep {
                let expiry = s.expires_at_ms().map(|at| (at, hasher.hash_one(s.key())));
                removed.push((
                    s.counted(),
                    slot_record_bytes(s),
                    blob_heap_bytes(s.blob_len()),
                    expiry,
                ));
            }
            keep
        });
        let (table, colls) = (&self.table, &mut self.colls);
        let hasher = &self.hasher;
        let mut freed = 0;
        colls.retain(|k, h| {
            let kept = table
                .find(hasher.hash_one(k), |s| s.key() == &k[..])
                .is_some();
            if !kept {
                freed += h.bytes;
            }
            kept
        });
        self.coll_bytes -= freed;
        for (live, record, heap, expiry) in removed {
            self.live -= usize::from(live);
            self.record_bytes -= record;
            self.blob_heap_bytes -= heap;
            if let Some(e) = expiry {
                self.expiring.remove(&e);
            }
        }
        before - self.table.len()
    }

    /// The version below which nothing is stored (`Version::ZERO`: never flushed).
    pub fn floor(&self) -> Version {
        self.floor
    }

    /// Drop `key` if its stored version is `up_to` or older (the key moved to other nodes).
    /// Returns whether it was dropped.
    pub fn forget(&mut self, key: &[u8], up_to: Version) -> bool {
        let hash = self.hasher.hash_one(key);
        match self.table.find_entry(hash, |s| s.key() == key) {
            Ok(e) if e.get().version() <= up_to => {
                let (slot, _) = e.remove();
                if let Some(at) = slot.expires_at_ms() {
                    self.expiring.remove(&(at, hash));
                }
                if let Some(h) = self.colls.remove(key) {
                    self.coll_bytes -= h.bytes;
                }
                self.live -= usize::from(slot.counted());
                self.record_bytes -= slot_record_bytes(&slot);
                self.blob_heap_bytes -= blob_heap_bytes(slot.blob_len());
                true
            }
            _ => false,
        }
    }

    /// Turn at most `max` keys that expired by `now_ms` into tombstones of their versions
    /// (dropping their values' memory). Returns how many.
    pub fn expire_due(&mut self, now_ms: u64, max: usize) -> usize {
        let mut done = 0;
        while done < max {
            let Some(&(at, hash)) = self.expiring.first() else {
                break;
            };
            if at > now_ms {
                break;
            }
            self.expiring.pop_first();
            // Any slot of this hash that expires at this instant is due (two keys sharing
            // both are equally expired).
            let Some(slot) = self.table.find_mut(hash, |s| s.expires_at_ms() == Some(at)) else {
                continue;
            };
            if slot.is_collection() {
                // its elements read as gone from the instant on; the next write folds the
                // expiry into the collection's floor (`collection::Collection::begin`)
                continue;
            }
            let old_bytes = slot_record_bytes(slot);
            let old_heap = blob_heap_bytes(slot.blob_len());
            let tombstone = Slot::new(slot.key(), None, slot.version());
            *slot = tombstone;
            self.record_bytes = self.record_bytes - old_bytes + slot_record_bytes(slot);
            self.blob_heap_bytes =
                self.blob_heap_bytes - old_heap + blob_heap_bytes(slot.blob_len());
            self.live -= 1;
            done += 1;
        }
        done
    }

    /// Whether `key` holds a value that has not expired at `now_ms`.
    pub fn live_at(&self, key: &[u8], now_ms: u64) -> bool {
        self.find(key).is_some_and(|s| {
            s.counted()
                && s.value()
                    .and_then(|v| cell::decode(v).ok())
                    .is_some_and(|c| !c.expired(now_ms))
        })
    }

    /// Keys that expire and have not yet been turned into tombstones.
    pub fn expiring_len(&self) -> usize {
        self.expiring.len()
    }

    /// Live keys (tombstones excluded).
    pub fn live_len(&self) -> usize {
        self.live
    }

    /// Bytes a snapshot of this map takes in the WAL (live values and tombstones).
    pub fn record_bytes(&self) -> u64 {
        self.record_bytes + self.coll_bytes / COLLECTION_HEAP_PER_ENCODED_BYTE
    }

    /// Memory this map holds: its table (every bucket, used or not) and every key and value
    /// allocation. What `--max-memory` limits (connection buffers and code come on top).
    pub fn memory_bytes(&self) -> u64 {
        self.table.capacity() as u64 * TABLE_BYTES_PER_BUCKET
            + self.blob_heap_bytes
            + self.expiring.len() as u64 * EXPIRY_INDEX_BYTES_PER_KEY
            + self.coll_bytes
    }

    /// Whether storing `value_len` bytes under `key` would take more memory than it holds
    /// now: a new key, or a value larger than the stored one.
    pub fn would_grow(&self, key: &[u8], value_len: usize) -> bool {
        match self.find(key) {
            None => true,
            Some(s) => {
                blob_heap_bytes(BLOB_HEADER_BYTES + key.len() + value_len)
                    > blob_heap_bytes(s.blob_len())
            }
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
        self.table.iter().map(|s| {
            let value = s.value().map(|v| self.resolved(s.key(), v));
            (s.key(), value, s.version())
        })
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
    #[test]
    fn collection_deltas_join_in_any_order_and_a_later_del_wins() {
        use crate::core::crdt::collection::{at_key, Type};
        let ver = |hlc| Version { hlc, writer: 1 };
        let delta = |hlc, field: &[u8]| {
            let mut st = at_key(None).unwrap();
            let mut ch = st.begin(hlc as u32, ver(hlc), 0);
            ch.put(&mut st, Type::Hash, field, b"v", 0).unwrap();
            ch.delta.to_cell()
        };
        let (a, b) = (delta(10, b"a"), delta(11, b"b"));
        let (mut m1, mut m2) = (Map::new(), Map::new());
        for (m, order) in [
            (&mut m1, [(&a, 10), (&b, 11)]),
            (&mut m2, [(&b, 11), (&a, 10)]),
        ] {
            for (d, hlc) in order {
                assert!(matches!(
                    m.apply(b"h", Some(d), ver(hlc)),
                    Applied::New { .. }
                ));
            }
            // the same delta again changes nothing (a join is idempotent; the store does not
            // look for it: logging a repeated delta costs its size)
            let before = m.get(b"h").map(|(c, v)| (c.to_vec(), v));
            m.apply(b"h", Some(&a), ver(10));
            assert_eq!(m.get(b"h").map(|(c, v)| (c.to_vec(), v)), before);
        }
        assert_eq!(m1.get(b"h"), m2.get(b"h"));
        let (cellb, _) = m1.get(b"h").unwrap();
        let c = cell::decode(cellb).unwrap();
        let state = collection::Collection::of_cell(&c, ver(11)).unwrap();
        assert_eq!(state.len(0), 2, "both fields survive");
        // DEL at 12, then a late delta at 9: the key stays deleted (no key counted)
        m1.apply(b"h", None, ver(12));
        assert_eq!((m1.live_len(), m1.live_at(b"h", 0)), (0, false));
        let late = delta(9, b"z");
        m1.apply(b"h", Some(&late), ver(9));
        assert_eq!((m1.live_len(), m1.live_at(b"h", 0)), (0, false));
        assert_eq!(m1.version_of(b"h"), Some(ver(12)), "versions never go back");
    }

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

    /// An overwrite of the same size reuses the slot's blob; every other one makes a new one.
    /// Either way the key, the value, the version (writer included), liveness and the byte
    /// counts are what a fresh slot would hold.
    #[test]
    fn an_overwrite_in_place_holds_what_a_new_slot_would() {
        let w = |hlc, writer| Version { hlc, writer };
        let mut m = Map::new();
        m.apply(b"k", Some(b"\0aaaa"), w(1, 1));
        let bytes = (m.memory_bytes(), m.live_len());
        let ptr = m.find(b"k").map(|s| s.blob.as_ptr());
        m.apply(b"k", Some(b"\0bbbb"), w(2, 7));
        assert_eq!(m.find(b"k").map(|s| s.blob.as_ptr()), ptr, "same blob");
        assert_eq!(m.get(b"k"), Some((&b"\0bbbb"[..], w(2, 7))));
        assert_eq!((m.memory_bytes(), m.live_len()), bytes);
        // a tombstone whose blob is the same size (an empty value before it)
        m.apply(b"e", Some(b""), w(1, 1));
        m.apply(b"e", None, w(3, 2));
        assert_eq!((m.get(b"e"), m.version_of(b"e")), (None, Some(w(3, 2))));
        assert!(!m.live_at(b"e", 0));
        // a longer value: a new blob, still right
        m.apply(b"k", Some(b"\0a longer value"), w(4, 1));
        assert_eq!(m.get(b"k"), Some((&b"\0a longer value"[..], w(4, 1))));
        assert_eq!(m.live_len(), 1);
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
    fn a_flush_drops_what_came_before_and_refuses_it_later() {
        let mut m = Map::new();
        m.apply(b"a", Some(&expiring(b"1", 100)), v(1));
        m.apply(b"b", None, v(2));
        m.apply(b"c", Some(b"x"), v(4));
        assert_eq!(m.flush_below(v(3)), 2);
        assert_eq!((m.len(), m.live_len(), m.expiring_len()), (1, 1, 0));
        assert_eq!(m.floor(), v(3));
        // at the floor and below: refused (the coordinator retries above it); past it: stored
        assert_eq!(
            m.apply(b"a", Some(b"y"), v(3)),
            Applied::Stale { stored: v(3) }
        );
        assert_eq!(
            m.apply(b"a", Some(b"y"), v(2)),
            Applied::Stale { stored: v(3) }
        );
        assert_eq!(
            m.apply(b"a", Some(b"y"), v(5)),
            Applied::New { was_live: false }
        );
        // a lower flush never lowers the floor
        assert_eq!(m.flush_below(v(1)), 0);
        assert_eq!(m.floor(), v(3));
        let mut fresh = Map::new();
        fresh.apply(b"c", Some(b"x"), v(4));
        fresh.apply(b"a", Some(b"y"), v(5));
        assert_eq!(m.memory_bytes(), fresh.memory_bytes());
        assert_eq!(m.record_bytes(), fresh.record_bytes());
    }

    fn expiring(value: &[u8], at: u64) -> Box<[u8]> {
        cell::encode(value, Some(at))
    }

    #[test]
    fn due_keys_become_tombstones_of_their_version_and_nothing_else_changes() {
        let mut m = Map::new();
        m.apply(b"a", Some(&expiring(b"1", 100)), v(1));
        m.apply(b"b", Some(&expiring(b"2", 200)), v(1));
        m.apply(b"c", Some(&cell::encode(b"3", None)), v(1));
        assert_eq!(m.expiring_len(), 2);
        assert!(m.live_at(b"a", 99) && !m.live_at(b"a", 100));
        assert_eq!(m.expire_due(99, 10), 0, "nothing due yet");
        assert_eq!(m.expire_due(150, 10), 1);
        assert_eq!(m.get(b"a"), None);
        assert_eq!(m.version_of(b"a"), Some(v(1)), "the version stays");
        assert_eq!(
            m.apply(b"a", Some(&cell::encode(b"old", None)), v(0)),
            Applied::Stale { stored: v(1) },
            "an older write cannot come back"
        );
        assert_eq!((m.live_len(), m.len(), m.expiring_len()), (2, 3, 1));
        assert_eq!(m.expire_due(u64::MAX, 10), 1);
        assert_eq!(
            m.get(b"c").map(|(_, ver)| ver),
            Some(v(1)),
            "no expiry: kept"
        );
        let h = WAL_RECORD_HEADER_BYTES as u64;
        assert_eq!(
            m.record_bytes(),
            3 * h + 3 + 2,
            "two tombstones and one cell"
        );
    }

    #[test]
    fn the_index_follows_overwrites_deletes_and_forgets_and_is_bounded_per_call() {
        let mut m = Map::new();
        m.apply(b"k", Some(&expiring(b"1", 100)), v(1));
        m.apply(b"k", Some(&expiring(b"1", 500)), v(2));
        assert_eq!(m.expiring_len(), 1, "a new expiry replaces the old");
        m.apply(b"k", Some(&cell::encode(b"1", None)), v(3));
        assert_eq!(m.expiring_len(), 0, "PERSIST-like overwrite");
        assert_eq!(m.expire_due(u64::MAX, 10), 0);
        assert!(m.get(b"k").is_some());
        m.apply(b"k", Some(&expiring(b"1", 100)), v(4));
        m.apply(b"k", None, v(5));
        assert_eq!(m.expiring_len(), 0, "a delete drops it");
        m.apply(b"j", Some(&expiring(b"1", 100)), v(1));
        assert!(m.forget(b"j", v(1)));
        assert_eq!(m.expiring_len(), 0, "a forget drops it");
        for i in 0..5u64 {
            m.apply(
                format!("x{i}").as_bytes(),
                Some(&expiring(b"v", 10 + i)),
                v(1),
            );
        }
        let before = m.memory_bytes();
        assert_eq!(m.expire_due(100, 2), 2, "at most max per call");
        assert_eq!(m.expire_due(100, 10), 3);
        assert!(m.memory_bytes() < before);
    }

    #[test]
    fn delete_of_missing_key_is_not_live() {
        let mut m = Map::new();
        assert_eq!(m.apply(b"k", None, v(1)), Applied::New { was_live: false });
        assert_eq!(m.live_len(), 0);
    }
}
