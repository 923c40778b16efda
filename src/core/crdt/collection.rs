//! A Redis collection — hash, set or sorted set — as one convergent state, and how it joins a
//! key's other values.
//!
//! Owns: the collection state (`Collection`: an observed-remove map of fields or members to
//! `field::Field` payloads, each with its write's version, plus a floor and an expiry
//! register), its deltas (what one command changed: O(change) bytes), their encoding, and
//! `join`, the one rule by which a stored value meets an incoming one on every path (a
//! replica write, read repair, a hint, a join stream, anti-entropy, WAL replay). Never does
//! I/O or reads a clock: versions, writers and `now_ms` come in from the caller.
//!
//! The rules:
//! - Fields and members: observed-remove (`or_map`): concurrent adds of different fields all
//!   survive; an add concurrent with a remove of the same field survives (add wins); a field's
//!   value is last-write-wins on its own version; HINCRBY/ZINCRBY are per-writer counters.
//! - Whole-key writes (DEL, SET of a string, an expiry that passed) are last-write-wins on the
//!   key's version, as for strings: one at version `v` raises the floor to `v`, and every
//!   element written at or below the floor is gone. Elements written after it stay: the key
//!   is then the newest whole-key write plus every collection write after it; if none is
//!   after it, the whole-key write (a string, or nothing) is what the key holds.
//! - The expiry is a register, last-write-wins on its version (EXPIRE, PERSIST). Once its
//!   instant passes, every element written before it reads as gone; the next write folds the
//!   instant into the floor.
//! - Kinds: a write refuses a key holding another kind (WRONGTYPE) where it runs; if two kinds
//!   still meet (writes through two homes at once), the kind of the newest element is the
//!   key's and the other kind's elements are hidden, not dropped, so the join stays a join.
//!
//! Bounds: `COLLECTION_ELEMENTS_MAX` fields or members and `COLLECTION_BYTES_MAX` bytes
//! encoded, both checked where a command runs, before it changes anything.

use std::collections::{BTreeMap, BTreeSet};

use crate::core::bytes::ByteReader;
use crate::core::cell::{self, Kind};
use crate::core::version::Version;

use super::context::{Context, Dot};
use super::field::{self, Field, Resolved};
use super::or_map::{Dots, OrMap};
use super::Crdt;

/// Fields of one hash, members of one set or sorted set.
pub const COLLECTION_ELEMENTS_MAX: usize = 1_000_000;

/// Bytes of one collection, encoded: one stored value (compaction writes it as one WAL
/// record), so the stored-value ceiling.
pub const COLLECTION_BYTES_MAX: u64 = crate::limits::VALUE_BYTES_CEILING as u64;

/// Whether a collection of `encoded` bytes may take a command adding `adding` more.
pub fn fits_bytes(encoded: u64, adding: u64) -> bool {
    encoded.saturating_add(adding) <= COLLECTION_BYTES_MAX
}

/// Encoding format of a collection value (the byte after the cell header).
const FORMAT: u8 = 1;

/// What a collection holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Type {
    Hash = 1,
    Set = 2,
    Zset = 3,
}

impl Type {
    fn of(b: u8) -> Option<Type> {
        match b {
            1 => Some(Type::Hash),
            2 => Some(Type::Set),
            3 => Some(Type::Zset),
            _ => None,
        }
    }

    /// Redis's TYPE answer.
    pub fn name(self) -> &'static str {
        match self {
            Type::Hash => "hash",
            Type::Set => "set",
            Type::Zset => "zset",
        }
    }
}

/// One dot's payload: its kind, its write's version (for the floor and expiry) and the field.
#[derive(Clone, Debug, PartialEq)]
pub struct Elem {
    pub ty: Type,
    pub version: Version,
    pub field: Field,
}

/// The expiry register: the instant (`None`: never) and the version that set it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Expiry {
    pub at_ms: Option<u64>,
    pub version: Version,
}

/// A collection's state, or a delta of one (`delta`: it names only what a command touched).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Collection {
    /// Elements at or below this version are gone (whole-key writes, folded expiries).
    pub floor: Version,
    /// The newest version this state has seen (the key's version in the store).
    pub top: Version,
    pub expiry: Expiry,
    /// Names the dots' writers (`dot_writer`): set by the first command on a key that held no
    /// collection, joined by max.
    pub epoch: Version,
    pub map: OrMap<Elem>,
    pub delta: bool,
    /// The kinds its elements may have (a superset: removes do not clear a bit), so the
    /// key's kind is known without a walk while it holds one kind, as it nearly always does.
    kinds: KindMask,
}

/// A bit per `Type` that may be present; equal whatever it holds (a cache, not state).
#[derive(Clone, Debug)]
struct KindMask(std::cell::Cell<u8>);

impl Default for KindMask {
    /// Known, and empty (as an empty collection is).
    fn default() -> KindMask {
        KindMask(std::cell::Cell::new(KINDS_KNOWN))
    }
}

impl PartialEq for KindMask {
    fn eq(&self, _: &KindMask) -> bool {
        true
    }
}

/// `KindMask`'s bit saying the mask is known (unset: nothing is known, walk).
const KINDS_KNOWN: u8 = 1 << 7;

impl KindMask {
    /// Note an element of `ty` (a known mask stays a superset; an unknown one stays unknown).
    fn add(&self, ty: Type) {
        let m = self.0.get();
        if m & KINDS_KNOWN != 0 {
            self.0.set(m | 1 << ty as u8);
        }
    }

    /// The one kind present, if the mask is known and names exactly one.
    fn single(&self) -> Option<Type> {
        let m = self.0.get();
        let kinds = m & !KINDS_KNOWN;
        (m & KINDS_KNOWN != 0 && kinds.count_ones() == 1)
            .then(|| Type::of(kinds.trailing_zeros() as u8))
            .flatten()
    }

    /// The exact mask of what `map` holds.
    fn of(map: &OrMap<Elem>) -> KindMask {
        let mask = KindMask::default();
        for e in map.iter().flat_map(|(_, dots)| dots.values()) {
            mask.add(e.ty);
        }
        mask
    }
}

/// Why bytes are not a collection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("collection value is truncated")]
    Short,
    #[error("collection value has unknown format {0}")]
    Format(u8),
    #[error("collection value has a bad tag")]
    BadTag,
}

/// Why a command on a collection was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("hash value is not an integer")]
    NotAnInteger,
    #[error("hash value is not a float")]
    NotAFloat,
    #[error("increment or decrement would overflow")]
    Overflow,
    #[error("increment would produce NaN or Infinity")]
    NotFinite,
    #[error("resulting score is not a number (NaN)")]
    NotAScore,
    #[error("collection is full: at most {COLLECTION_ELEMENTS_MAX} fields or members")]
    Full,
}

/// A version below every write at or after `at_ms` (where an expiry cuts).
fn cut(at_ms: u64) -> Version {
    Version::at_physical_ms(at_ms)
}

impl Crdt for Collection {
    fn merge(&mut self, other: &Collection) {
        let floor_before = self.floor;
        if other.delta {
            for e in other.map.iter().flat_map(|(_, dots)| dots.values()) {
                self.kinds.add(e.ty);
            }
            self.map.absorb(&other.map, self.delta);
        } else {
            if self.delta {
                // a delta joined with a full state is a full state
                let mut full = other.map.clone();
                full.merge(&self.map);
                self.map = full;
            } else {
                self.map.merge(&other.map);
            }
            self.delta = false;
        }
        self.floor = self.floor.max(other.floor);
        self.top = self.top.max(other.top);
        self.epoch = self.epoch.max(other.epoch);
        if other.expiry.version > self.expiry.version {
            self.expiry = other.expiry;
        }
        if self.delta {
            // a delta joined into a delta: filtered when it reaches a state
        } else if other.delta && self.floor == floor_before {
            // only what the delta brought can be at or below the floor: its keys alone
            let floor = self.floor;
            for key in other.map.iter().map(|(k, _)| k) {
                self.map.retain_key(key, |e| e.version > floor);
            }
        } else {
            self.drop_below_floor();
            self.kinds = KindMask::of(&self.map);
        }
    }
}

impl Collection {
    fn drop_below_floor(&mut self) {
        let floor = self.floor;
        if floor > Version::ZERO {
            self.map.retain_payloads(|e| e.version > floor);
        }
    }

    /// The version below which elements read as gone at `now_ms`.
    fn live_floor(&self, now_ms: u64) -> Version {
        match self.expiry.at_ms {
            Some(at) if at <= now_ms => self.floor.max(cut(at)),
            _ => self.floor,
        }
    }

    /// Whether an expiry has passed (its instant hides elements written before it).
    fn expired_part(&self, now_ms: u64) -> bool {
        self.expiry.at_ms.is_some_and(|at| at <= now_ms)
    }

    /// The key's kind at `now_ms`: that of its newest live element (`None`: empty). Without
    /// a walk while it holds one kind and no expiry has passed (what is at or below the floor
    /// is dropped, so every element held is live).
    pub fn kind(&self, now_ms: u64) -> Option<Type> {
        if self.map.is_empty() {
            return None;
        }
        if !self.expired_part(now_ms) {
            if let Some(ty) = self.kinds.single() {
                return Some(ty);
            }
        }
        let floor = self.live_floor(now_ms);
        let exact = KindMask::default();
        let newest = self
            .map
            .iter()
            .flat_map(|(_, dots)| dots.values())
            .inspect(|e| exact.add(e.ty))
            .filter(|e| e.version > floor)
            .max_by_key(|e| e.version)
            .map(|e| e.ty);
        self.kinds.0.set(exact.0.get());
        newest
    }

    /// The live dots of `key` of type `ty` at `now_ms`.
    fn live_dots<'a>(
        &'a self,
        dots: &'a Dots<Elem>,
        ty: Type,
        floor: Version,
    ) -> impl Iterator<Item = &'a Elem> + Clone + 'a {
        dots.values()
            .filter(move |e| e.ty == ty && e.version > floor)
    }

    /// Every live field or member of type `ty` and its value, in key order.
    pub fn entries(&self, ty: Type, now_ms: u64) -> Vec<(&[u8], Resolved<'_>)> {
        let floor = self.live_floor(now_ms);
        if self.kind(now_ms) != Some(ty) {
            return Vec::new();
        }
        self.map
            .iter()
            .filter_map(|(k, dots)| {
                field::resolve(self.live_dots(dots, ty, floor).map(|e| &e.field)).map(|r| (k, r))
            })
            .collect()
    }

    /// One field's value, if live and of type `ty`.
    pub fn get(&self, ty: Type, key: &[u8], now_ms: u64) -> Option<Resolved<'_>> {
        if self.kind(now_ms) != Some(ty) {
            return None;
        }
        let floor = self.live_floor(now_ms);
        let dots = self.map.get(key)?;
        field::resolve(self.live_dots(dots, ty, floor).map(|e| &e.field))
    }

    /// Live fields or members (of the key's kind).
    pub fn len(&self, now_ms: u64) -> usize {
        if !self.expired_part(now_ms) && self.kinds.single().is_some() {
            return self.map.len();
        }
        match self.kind(now_ms) {
            Some(ty) => {
                let floor = self.live_floor(now_ms);
                self.map
                    .iter()
                    .filter(|(_, dots)| self.live_dots(dots, ty, floor).next().is_some())
                    .count()
            }
            None => 0,
        }
    }

    /// Whether no element is stored at all (live or hidden).
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The expiry instant still ahead at `now_ms`, if any.
    pub fn expires_at_ms(&self) -> Option<u64> {
        self.expiry.at_ms
    }

    /// This state as a delta's base: start a command at `version` (above `top`). A passed
    /// expiry is folded into the floor first, so what it removed stays removed everywhere.
    pub fn begin(&mut self, writer: u32, version: Version, now_ms: u64) -> Change {
        let mut change = Change {
            delta: Collection {
                delta: true,
                top: version,
                ..Collection::default()
            },
            version,
            writer: 0,
        };
        if let Some(at) = self.expiry.at_ms.filter(|&at| at <= now_ms) {
            self.floor = self.floor.max(cut(at));
            self.expiry = Expiry {
                at_ms: None,
                version,
            };
            self.drop_below_floor();
            change.delta.floor = self.floor;
            change.delta.expiry = self.expiry;
        }
        if self.expiry.at_ms.is_some() && self.kind(now_ms).is_none() {
            // an emptied collection is no key: what is written now starts a new one, with no
            // expiry (as Redis deletes an emptied key, and its TTL with it)
            self.expiry = Expiry {
                at_ms: None,
                version,
            };
            change.delta.expiry = self.expiry;
        }
        self.top = self.top.max(version);
        if self.epoch <= self.floor {
            // a new collection on the key (or one that survived a whole-key write: its
            // context may be another replica's, without the dots this core issued before)
            self.epoch = version;
        }
        change.delta.epoch = self.epoch;
        change.writer = dot_writer(writer, self.epoch);
        change
    }
}

/// The writer id of dots a core issues for a key in `epoch`. A whole-key write drops a
/// collection with its causal context, so the next collection on the key starts a new epoch
/// (the version of its first command, above every epoch this core saw): naming the epoch in
/// the writer keeps a dot from ever being issued twice (a reissued dot would read as already
/// seen, and removed, on a replica that kept the old context).
fn dot_writer(writer: u32, epoch: Version) -> u64 {
    // splitmix64 of the writer and the epoch
    let mut z = u64::from(writer)
        ^ epoch.hlc.rotate_left(21)
        ^ (u64::from(epoch.writer) << 32)
        ^ 0x9e37_79b9_7f4a_7c15;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// One command's changes at one version, gathered as a delta.
pub struct Change {
    pub delta: Collection,
    version: Version,
    /// The dots' writer (`dot_writer`).
    writer: u64,
}

impl Change {
    fn elem(&self, ty: Type, field: Field) -> Elem {
        Elem {
            ty,
            version: self.version,
            field,
        }
    }

    /// Put `value` under `key` (HSET, SADD with an empty value, ZADD with a score's text):
    /// whether a live element of `ty` was there.
    pub fn put(
        &mut self,
        state: &mut Collection,
        ty: Type,
        key: &[u8],
        value: &[u8],
        now_ms: u64,
    ) -> Result<bool, CommandError> {
        let existed = state.get(ty, key, now_ms).is_some();
        if !existed && state.map.get(key).is_none() && state.map.len() >= COLLECTION_ELEMENTS_MAX {
            return Err(CommandError::Full);
        }
        let field = Field::Set {
            version: self.version,
            value: value.into(),
        };
        let d = state.map.put(self.writer, key, self.elem(ty, field));
        state.kinds.add(ty);
        self.delta.kinds.add(ty);
        self.delta.map.absorb(&d, true);
        Ok(existed)
    }

    /// Remove `key` (HDEL, SREM, ZREM): whether a live element of `ty` was there.
    pub fn remove(&mut self, state: &mut Collection, ty: Type, key: &[u8], now_ms: u64) -> bool {
        let existed = state.get(ty, key, now_ms).is_some();
        if let Some(d) = state.map.remove(key) {
            self.delta.map.absorb(&d, true);
        }
        existed
    }

    /// Add `by` to the integer under `key` (HINCRBY): the new value as this replica sees it.
    pub fn incr(
        &mut self,
        state: &mut Collection,
        ty: Type,
        key: &[u8],
        by: i64,
        now_ms: u64,
    ) -> Result<i64, CommandError> {
        let now = match state.get(ty, key, now_ms) {
            None => 0,
            Some(Resolved::Int(n)) => n,
            Some(Resolved::Bytes(b)) => std::str::from_utf8(b)
                .ok()
                .and_then(|t| crate::core::consensus::change::parse_i64(t.as_bytes()))
                .ok_or(CommandError::NotAnInteger)?,
            Some(Resolved::Float(_) | Resolved::NotANumber(_)) => {
                return Err(CommandError::NotAnInteger)
            }
        };
        let next = now.checked_add(by).ok_or(CommandError::Overflow)?;
        self.check_room(state, key)?;
        let writer = self.writer;
        let own = own_increment(state, writer, key, |f| match f {
            Field::Incr(n) => Some(*n as f64),
            _ => None,
        }) as i64;
        let d = state.map.add_beside(
            writer,
            key,
            self.elem(ty, Field::Incr(own.wrapping_add(by))),
            |d, e| d.writer == writer && matches!(e.field, Field::Incr(_)),
        );
        state.kinds.add(ty);
        self.delta.kinds.add(ty);
        self.delta.map.absorb(&d, true);
        Ok(next)
    }

    /// Add `by` to the number under `key` (HINCRBYFLOAT, ZINCRBY): the new value.
    pub fn incr_float(
        &mut self,
        state: &mut Collection,
        ty: Type,
        key: &[u8],
        by: f64,
        now_ms: u64,
    ) -> Result<f64, CommandError> {
        let now = match state.get(ty, key, now_ms) {
            None => 0.0,
            Some(Resolved::Int(n)) => n as f64,
            Some(Resolved::Float(x)) => x,
            Some(Resolved::Bytes(b)) => std::str::from_utf8(b)
                .ok()
                .and_then(|t| t.trim().parse::<f64>().ok())
                .filter(|x| !x.is_nan())
                .ok_or(CommandError::NotAFloat)?,
            Some(Resolved::NotANumber(_)) => return Err(CommandError::NotAFloat),
        };
        let next = now + by;
        // a hash field must stay finite; a score may be infinite, never NaN
        if next.is_nan() || (ty == Type::Hash && !next.is_finite()) {
            return Err(if ty == Type::Hash {
                CommandError::NotFinite
            } else {
                CommandError::NotAScore
            });
        }
        self.check_room(state, key)?;
        let writer = self.writer;
        let own = own_increment(state, writer, key, |f| match f {
            Field::IncrFloat(x) => Some(*x),
            _ => None,
        });
        let d = state.map.add_beside(
            writer,
            key,
            self.elem(ty, Field::IncrFloat(own + by)),
            |d, e| d.writer == writer && matches!(e.field, Field::IncrFloat(_)),
        );
        state.kinds.add(ty);
        self.delta.kinds.add(ty);
        self.delta.map.absorb(&d, true);
        Ok(next)
    }

    fn check_room(&self, state: &Collection, key: &[u8]) -> Result<(), CommandError> {
        if state.map.get(key).is_none() && state.map.len() >= COLLECTION_ELEMENTS_MAX {
            return Err(CommandError::Full);
        }
        Ok(())
    }

    /// Whether the command changed anything (a delta worth shipping).
    pub fn changed(&self) -> bool {
        !self.delta.map.is_empty() || self.delta.floor > Version::ZERO
    }
}

/// `writer`'s own increment of `key` so far (what its next increment folds in).
fn own_increment(
    state: &Collection,
    writer: u64,
    key: &[u8],
    of: impl Fn(&Field) -> Option<f64>,
) -> f64 {
    state
        .map
        .get(key)
        .into_iter()
        .flat_map(|dots| dots.iter())
        .filter(|(d, _)| d.writer == writer)
        .filter_map(|(_, e)| of(&e.field))
        .sum()
}

// ---- encoding ----

fn put_version(out: &mut Vec<u8>, v: Version) {
    out.extend_from_slice(&v.hlc.to_le_bytes());
    out.extend_from_slice(&v.writer.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

/// The shared cursor (`core::bytes`), its short reads as this module's error.
struct Reader<'a>(ByteReader<'a>);

impl<'a> Reader<'a> {
    fn u8(&mut self) -> Result<u8, DecodeError> {
        self.0.u8().ok_or(DecodeError::Short)
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        self.0.u32().ok_or(DecodeError::Short)
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        self.0.u64().ok_or(DecodeError::Short)
    }
    fn version(&mut self) -> Result<Version, DecodeError> {
        self.0.version().ok_or(DecodeError::Short)
    }
    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        self.0.bytes().ok_or(DecodeError::Short)
    }
}

/// Bytes of the header before the elements: format, flags, element count.
pub const HEADER_BYTES: usize = 1 + 1 + 4;

impl Collection {
    /// The value bytes (without the cell header). The element count comes first, so
    /// `stored_elements` reads it without a decode.
    pub fn encode(&self) -> Vec<u8> {
        let (entries, ctx) = self.map.parts();
        let mut out = Vec::with_capacity(64 + entries.len() * 48);
        out.push(FORMAT);
        out.push(u8::from(self.delta) | if self.expiry.at_ms.is_some() { 2 } else { 0 });
        let live = entries.values().filter(|d| !d.is_empty()).count() as u32;
        out.extend_from_slice(&live.to_le_bytes());
        put_version(&mut out, self.floor);
        put_version(&mut out, self.top);
        out.extend_from_slice(&self.expiry.at_ms.unwrap_or(0).to_le_bytes());
        put_version(&mut out, self.expiry.version);
        put_version(&mut out, self.epoch);
        let (vv, cloud) = ctx.parts();
        out.extend_from_slice(&(vv.len() as u32).to_le_bytes());
        for (w, c) in vv {
            out.extend_from_slice(&w.to_le_bytes());
            out.extend_from_slice(&c.to_le_bytes());
        }
        out.extend_from_slice(&(cloud.len() as u32).to_le_bytes());
        for d in cloud {
            out.extend_from_slice(&d.writer.to_le_bytes());
            out.extend_from_slice(&d.counter.to_le_bytes());
        }
        out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
        for (k, dots) in entries {
            put_bytes(&mut out, k);
            out.extend_from_slice(&(dots.len() as u32).to_le_bytes());
            for (d, e) in dots {
                out.extend_from_slice(&d.writer.to_le_bytes());
                out.extend_from_slice(&d.counter.to_le_bytes());
                out.push(e.ty as u8);
                put_version(&mut out, e.version);
                match &e.field {
                    Field::Set { version, value } => {
                        out.push(0);
                        put_version(&mut out, *version);
                        put_bytes(&mut out, value);
                    }
                    Field::Incr(n) => {
                        out.push(1);
                        out.extend_from_slice(&n.to_le_bytes());
                    }
                    Field::IncrFloat(x) => {
                        out.push(2);
                        out.extend_from_slice(&x.to_le_bytes());
                    }
                }
            }
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Collection, DecodeError> {
        let mut r = Reader(ByteReader::new(bytes));
        let format = r.u8()?;
        if format != FORMAT {
            return Err(DecodeError::Format(format));
        }
        let flags = r.u8()?;
        let _live = r.u32()?;
        let floor = r.version()?;
        let top = r.version()?;
        let at = r.u64()?;
        let expiry = Expiry {
            at_ms: (flags & 2 != 0).then_some(at),
            version: r.version()?,
        };
        let epoch = r.version()?;
        let mut vv = BTreeMap::new();
        for _ in 0..r.u32()? {
            let w = r.u64()?;
            vv.insert(w, r.u64()?);
        }
        let mut cloud = BTreeSet::new();
        for _ in 0..r.u32()? {
            let writer = r.u64()?;
            cloud.insert(Dot {
                writer,
                counter: r.u64()?,
            });
        }
        let mut entries = BTreeMap::new();
        for _ in 0..r.u32()? {
            let key: Box<[u8]> = r.bytes()?.into();
            let mut dots = Dots::default();
            for _ in 0..r.u32()? {
                let writer = r.u64()?;
                let dot = Dot {
                    writer,
                    counter: r.u64()?,
                };
                let ty = Type::of(r.u8()?).ok_or(DecodeError::BadTag)?;
                let version = r.version()?;
                let field = match r.u8()? {
                    0 => {
                        let version = r.version()?;
                        Field::Set {
                            version,
                            value: r.bytes()?.into(),
                        }
                    }
                    1 => Field::Incr(r.u64()? as i64),
                    2 => Field::IncrFloat(f64::from_bits(r.u64()?)),
                    _ => return Err(DecodeError::BadTag),
                };
                dots.insert(dot, Elem { ty, version, field });
            }
            entries.insert(key, dots);
        }
        if !r.0.is_empty() {
            return Err(DecodeError::BadTag);
        }
        let map = OrMap::from_parts(entries, Context::from_parts(vv, cloud));
        Ok(Collection {
            floor,
            top,
            expiry,
            epoch,
            kinds: KindMask::of(&map),
            map,
            delta: flags & 1 != 0,
        })
    }

    /// Bytes `encode` gives (a walk, no copy).
    pub fn encoded_len(&self) -> usize {
        let (entries, ctx) = self.map.parts();
        let (vv, cloud) = ctx.parts();
        let mut n = HEADER_BYTES + 4 * 12 + 8 + 4 + vv.len() * 16 + 4 + cloud.len() * 16 + 4;
        for (k, dots) in entries {
            n += 4 + k.len() + 4;
            for e in dots.values() {
                n += 16 + 1 + 12 + 1;
                n += match &e.field {
                    Field::Set { value, .. } => 12 + 4 + value.len(),
                    Field::Incr(_) | Field::IncrFloat(_) => 8,
                };
            }
        }
        n
    }

    /// The stored cell of this state (the header mirrors the expiry register).
    pub fn to_cell(&self) -> Box<[u8]> {
        cell::encode_kind(Kind::Collection, &self.encode(), self.expiry.at_ms)
    }

    /// The collection in a cell written at `version`: a header expiry that differs from the
    /// register is a register write at `version` (EXPIRE or PERSIST rewrote the cell).
    pub fn of_cell(c: &cell::Cell<'_>, version: Version) -> Result<Collection, DecodeError> {
        let mut coll = Collection::decode(c.value)?;
        if c.expires_at_ms != coll.expiry.at_ms && version > coll.expiry.version {
            coll.expiry = Expiry {
                at_ms: c.expires_at_ms,
                version,
            };
        }
        coll.top = coll.top.max(version);
        Ok(coll)
    }
}

/// A list of fields or members on the wire (a read of some of a collection's): each a `u32`
/// length and its bytes.
pub fn encode_fields(fields: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(fields.iter().map(|f| f.len() + 4).sum());
    for f in fields {
        put_bytes(&mut out, f);
    }
    out
}

/// The fields of `encode_fields` (`None`: malformed).
pub fn decode_fields(b: &[u8]) -> Option<Vec<&[u8]>> {
    let mut r = Reader(ByteReader::new(b));
    let mut out = Vec::new();
    while !r.0.is_empty() {
        out.push(r.bytes().ok()?);
    }
    Some(out)
}

impl Collection {
    /// What a read of `fields` needs of this state, as a delta: those fields' dots (each named,
    /// held or not, so a join sees what this replica removed), the element that gives the key
    /// its kind, and the whole causal context, floor and expiry. Joined with other replicas'
    /// answers it gives those fields' values as the joined states would; never stored (its
    /// context covers dots of fields it leaves out).
    pub fn project(&self, fields: &[&[u8]], now_ms: u64) -> Collection {
        let (entries, ctx) = self.map.parts();
        let mut picked = BTreeMap::new();
        for f in fields {
            let dots = entries.get(*f).cloned().unwrap_or_default();
            picked.insert(Box::<[u8]>::from(*f), dots);
        }
        // the element that decides the key's kind: the newest (any, while it holds one kind)
        let kind = self.kind(now_ms);
        let floor = self.live_floor(now_ms);
        let newest = match self.kinds.single() {
            Some(_) if !self.expired_part(now_ms) => entries.iter().next(),
            _ => entries
                .iter()
                .filter(|(_, d)| d.values().any(|e| Some(e.ty) == kind && e.version > floor))
                .max_by_key(|(_, d)| d.values().map(|e| e.version).max()),
        };
        if let Some((k, d)) = newest {
            picked.entry(k.clone()).or_insert_with(|| d.clone());
        }
        let map = OrMap::from_parts(picked, ctx.clone());
        Collection {
            floor: self.floor,
            top: self.top,
            expiry: self.expiry,
            epoch: self.epoch,
            kinds: KindMask::of(&map),
            map,
            delta: true,
        }
    }
}

/// Elements with at least one dot stored, read from the header (no decode).
pub fn stored_elements(value: &[u8]) -> Option<u32> {
    let b = value.get(2..HEADER_BYTES)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

// ---- join with the store ----

/// What the store holds for a key: its version and cell (`None`: a tombstone).
pub type Held<'a> = (Version, Option<&'a [u8]>);

/// The outcome of `join`.
#[derive(Debug, PartialEq)]
pub enum Joined {
    /// Not a collection on either side: last-write-wins decides.
    NotMine,
    /// The stored value already holds everything the incoming one brings.
    Same,
    /// Store this instead (version and cell; `None`: a tombstone).
    Store(Version, Option<Box<[u8]>>),
}

fn as_collection(h: Held<'_>) -> Result<Option<Collection>, DecodeError> {
    let Some(bytes) = h.1 else { return Ok(None) };
    let c = cell::decode(bytes).map_err(|_| DecodeError::BadTag)?;
    if c.kind != Kind::Collection {
        return Ok(None);
    }
    Collection::of_cell(&c, h.0).map(Some)
}

/// The collection a command starts from on a key holding `stored`: the collection itself,
/// or an empty one whose floor is the whole value's version (a string or tombstone there was
/// written before anything the command adds). `Err`: stored bytes that do not decode.
pub fn at_key(stored: Option<Held<'_>>) -> Result<Collection, DecodeError> {
    match stored {
        None => Ok(Collection::default()),
        Some(held) => Ok(as_collection(held)?.unwrap_or(Collection {
            floor: held.0,
            top: held.0,
            ..Collection::default()
        })),
    }
}

/// What a store holds for a key, as `join_into` takes it.
pub enum Side<'a> {
    Missing,
    /// A string, a list or a tombstone, at its version.
    Whole(Held<'a>),
    Coll(Collection),
}

/// What `join_into` leaves in the store.
#[derive(Debug)]
pub enum Outcome {
    /// Not a collection on either side: last-write-wins decides.
    NotMine,
    /// Nothing changes (the stored collection, if it was one, handed back as it was).
    Unchanged(Option<Collection>),
    /// A whole value replaces what was stored (version and cell; `None`: a tombstone).
    Whole(Version, Option<Box<[u8]>>),
    /// This collection is stored (at its `top`).
    Coll(Collection),
}

/// Join the incoming value (`incoming`, decoded as `theirs` when it is a collection) into
/// what the store holds. The rule of every path; a delta costs O(its size · log n).
pub fn join_into(stored: Side<'_>, incoming: Held<'_>, theirs: Option<Collection>) -> Outcome {
    match (stored, theirs) {
        (Side::Missing | Side::Whole(_), None) => Outcome::NotMine,
        (Side::Coll(m), Some(t)) if t.delta && m.includes(&t) => Outcome::Unchanged(Some(m)),
        (Side::Coll(mut m), Some(t)) => {
            m.merge(&t);
            Outcome::Coll(m)
        }
        (Side::Coll(m), None) => whole_meets(m, incoming, true),
        (Side::Missing, Some(t)) => Outcome::Coll(t.full()),
        (Side::Whole(held), Some(t)) => whole_meets(t, held, false),
    }
}

/// Decode what `incoming` brings: a collection (state or delta), or `None` for anything else.
pub fn incoming(h: Held<'_>) -> Result<Option<Collection>, DecodeError> {
    as_collection(h)
}

/// Join `incoming` into `stored` (`None`: the key was never here) when either is a
/// collection, on stored bytes (reads joining replicas' answers; tests). Commutative,
/// associative and idempotent in what it stores.
pub fn join(stored: Option<Held<'_>>, incoming: Held<'_>) -> Result<Joined, DecodeError> {
    let theirs = as_collection(incoming)?;
    let side = match stored {
        None => Side::Missing,
        Some(h) => match as_collection(h)? {
            Some(c) => Side::Coll(c),
            None => Side::Whole(h),
        },
    };
    Ok(match join_into(side, incoming, theirs) {
        Outcome::NotMine => Joined::NotMine,
        Outcome::Unchanged(_) => Joined::Same,
        Outcome::Whole(v, c) => Joined::Store(v, c),
        Outcome::Coll(c) => {
            let cell = c.to_cell();
            if stored.is_some_and(|(v, b)| v == c.top && b == Some(&cell[..])) {
                Joined::Same
            } else {
                Joined::Store(c.top, Some(cell))
            }
        }
    })
}

impl Collection {
    /// Whether `delta` brings nothing this state lacks (seen again: a hint or retry, or the
    /// executing replica's own delta coming back through the write): O(the delta).
    pub fn includes(&self, delta: &Collection) -> bool {
        let (_, seen) = self.map.parts();
        let (entries, ctx) = delta.map.parts();
        // and no dot held here that the delta removes (one it saw and does not carry)
        let removes_nothing = entries.iter().all(|(key, theirs)| {
            self.map.get(key).is_none_or(|mine| {
                mine.keys()
                    .all(|d| theirs.contains_key(d) || !ctx.contains(*d))
            })
        });
        delta.top <= self.top
            && delta.floor <= self.floor
            && delta.epoch <= self.epoch
            && delta.expiry.version <= self.expiry.version
            && ctx.dots().all(|d| seen.contains(d))
            && entries
                .values()
                .flat_map(|d| d.keys())
                .all(|d| seen.contains(*d))
            && removes_nothing
    }

    /// This delta as a state (what a key that held nothing holds once it arrives).
    fn full(mut self) -> Collection {
        if self.delta {
            let mut state = Collection::default();
            state.map.absorb(&self.map, false);
            self.map = state.map;
            self.kinds = KindMask::of(&self.map);
            self.delta = false;
        }
        self
    }
}

/// A collection meets a whole-key value (a string, a list or a tombstone) `whole` at its
/// version: the whole value raises the floor; if no element is left, the whole value is the
/// key's, at the newest version either side saw. `whole_incoming`: which side came in.
fn whole_meets(mut coll: Collection, whole: Held<'_>, whole_incoming: bool) -> Outcome {
    let (wv, wcell) = whole;
    let earlier = (coll.floor, coll.top);
    if whole_incoming && wv <= coll.floor && wcell.is_none() {
        // a deletion at or below what the collection already stood on: nothing to do
        return Outcome::Unchanged(Some(coll));
    }
    coll.floor = coll.floor.max(wv);
    coll.drop_below_floor();
    coll.kinds = KindMask::of(&coll.map);
    let mut coll = coll.full();
    if coll.is_empty() && wcell.is_some() && earlier.0 <= wv {
        // a string or list written after every element: it is the key's, at its own version
        // (the collection's causal context goes with it; a later collection on the key issues
        // dots of a new epoch, `dot_writer`)
        if !whole_incoming {
            return Outcome::Unchanged(None);
        }
        return Outcome::Whole(wv, wcell.map(Box::from));
    }
    // The collection stays: it holds elements newer than the whole value, or the whole value
    // is a deletion (the collection absorbs it as its floor and keeps its context, so what it
    // removed stays removed and its version never goes back: a restarted node's clock,
    // seeded from its store, never issues one of its versions again), or the collection
    // stood on a newer whole-key write already.
    coll.top = coll.top.max(wv);
    Outcome::Coll(coll)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v(hlc: u64) -> Version {
        Version { hlc, writer: 9 }
    }

    fn hash_of(c: &Collection) -> Vec<(Vec<u8>, String)> {
        c.entries(Type::Hash, 0)
            .into_iter()
            .map(|(k, r)| {
                let s = match r {
                    Resolved::Bytes(b) | Resolved::NotANumber(b) => {
                        String::from_utf8_lossy(b).into_owned()
                    }
                    Resolved::Int(n) => n.to_string(),
                    Resolved::Float(x) => x.to_string(),
                };
                (k.to_vec(), s)
            })
            .collect()
    }

    fn hset(state: &mut Collection, writer: u32, hlc: u64, f: &str, val: &str) -> Collection {
        let mut ch = state.begin(writer, v(hlc), 0);
        ch.put(state, Type::Hash, f.as_bytes(), val.as_bytes(), 0)
            .unwrap();
        ch.delta
    }

    #[test]
    fn encoding_round_trips_states_and_deltas() {
        let mut s = Collection::default();
        let d = hset(&mut s, 1, 10, "a", "1");
        let mut ch = s.begin(1, v(11), 0);
        ch.incr(&mut s, Type::Hash, b"n", 5, 0).unwrap();
        ch.incr_float(&mut s, Type::Hash, b"x", 0.5, 0).unwrap();
        ch.remove(&mut s, Type::Hash, b"a", 0);
        s.expiry = Expiry {
            at_ms: Some(77),
            version: v(3),
        };
        for c in [&s, &d, &ch.delta] {
            assert_eq!(&Collection::decode(&c.encode()).unwrap(), c);
            assert_eq!(c.encoded_len(), c.encode().len());
        }
        assert_eq!(stored_elements(&s.encode()), Some(2));
        assert_eq!(Collection::decode(b""), Err(DecodeError::Short));
        assert_eq!(Collection::decode(&[9]), Err(DecodeError::Format(9)));
        let mut long = s.encode();
        long.push(0);
        assert_eq!(Collection::decode(&long), Err(DecodeError::BadTag));
    }

    #[test]
    fn projections_of_two_replicas_join_to_what_their_states_join_to() {
        // replica a: fields 0..200 and "x"; replica b saw all of a's, then removed "x" and
        // wrote "y"; a read of x, y and f7 from both gives the full join's values, and a
        // projection is a few hundred bytes, not the hash
        let mut a = Collection::default();
        for i in 0..200 {
            hset(&mut a, 1, 10 + i, &format!("f{i}"), "v");
        }
        hset(&mut a, 1, 300, "x", "1");
        let mut b = a.clone();
        let mut ch = b.begin(2, v(400), 0);
        ch.remove(&mut b, Type::Hash, b"x", 0);
        ch.put(&mut b, Type::Hash, b"y", b"2", 0).unwrap();
        let fields: [&[u8]; 3] = [b"x", b"y", b"f7"];
        let (pa, pb) = (a.project(&fields, 0), b.project(&fields, 0));
        assert!(
            pa.encode().len() < 600,
            "projection {} bytes",
            pa.encode().len()
        );
        let mut joined = pa.full();
        joined.merge(&pb);
        let mut whole = a.clone();
        whole.merge(&b);
        for f in fields {
            assert_eq!(
                joined.get(Type::Hash, f, 0),
                whole.get(Type::Hash, f, 0),
                "{f:?}"
            );
        }
        assert_eq!(joined.get(Type::Hash, b"x", 0), None, "the remove b saw");
        assert_eq!(joined.kind(0), Some(Type::Hash));
        // encoded and decoded as a replica answers it
        let again = Collection::decode(&pb.encode()).unwrap();
        assert_eq!(again, pb);
        assert_eq!(
            decode_fields(&encode_fields(&fields)),
            Some(fields.to_vec())
        );
        assert_eq!(decode_fields(&[9, 0, 0, 0, b'a']), None);
    }

    #[test]
    fn the_byte_bound_at_and_past_it() {
        assert!(fits_bytes(COLLECTION_BYTES_MAX - 10, 10), "at the bound");
        assert!(
            !fits_bytes(COLLECTION_BYTES_MAX - 10, 11),
            "one byte past it"
        );
        assert!(!fits_bytes(u64::MAX, 1), "no overflow");
    }

    #[test]
    fn a_delta_carries_only_its_field() {
        let mut s = Collection::default();
        for i in 0..1000 {
            hset(&mut s, 1, 10 + i, &format!("f{i}"), "v");
        }
        let d = hset(&mut s, 1, 5000, "new", "v");
        assert!(d.encode().len() < 200, "delta {} bytes", d.encode().len());
        assert!(s.encode().len() > 1000 * 40);
    }

    #[test]
    fn a_whole_key_write_removes_what_came_before_it_only() {
        let mut s = Collection::default();
        hset(&mut s, 1, 10, "old", "1");
        let cellb = s.to_cell();
        // DEL at 20 meets the hash: gone (an empty collection whose floor is the DEL)
        let Joined::Store(ver, Some(gone)) =
            join(Some((v(10), Some(&cellb))), (v(20), None)).unwrap()
        else {
            panic!()
        };
        assert_eq!(ver, v(20));
        let gone = Collection::of_cell(&cell::decode(&gone).unwrap(), ver).unwrap();
        assert_eq!((gone.len(0), gone.floor), (0, v(20)));
        // an HSET at 30 meets the tombstone at 20: a new hash of just that field
        let mut t = Collection::default();
        let d = hset(&mut t, 2, 30, "new", "2");
        let Joined::Store(ver, Some(c)) =
            join(Some((v(20), None)), (v(30), Some(&d.to_cell()))).unwrap()
        else {
            panic!()
        };
        assert_eq!(ver, v(30));
        let got = Collection::of_cell(&cell::decode(&c).unwrap(), ver).unwrap();
        assert_eq!(hash_of(&got), vec![(b"new".to_vec(), "2".into())]);
        // an older HSET meets the tombstone: it stays gone
        let old = hset(&mut Collection::default(), 2, 15, "late", "x");
        let Joined::Store(ver, Some(c)) =
            join(Some((v(20), None)), (v(15), Some(&old.to_cell()))).unwrap()
        else {
            panic!()
        };
        let c = Collection::of_cell(&cell::decode(&c).unwrap(), ver).unwrap();
        assert_eq!((c.len(0), ver), (0, v(20)));
        // a string written after the hash replaces it
        let st = cell::encode(b"s", None);
        assert_eq!(
            join(Some((v(10), Some(&cellb))), (v(30), Some(&st))).unwrap(),
            Joined::Store(v(30), Some(st.clone()))
        );
        // strings and strings: not ours
        let st = cell::encode(b"s", None);
        assert_eq!(
            join(Some((v(1), Some(&st))), (v(2), Some(&st))).unwrap(),
            Joined::NotMine
        );
    }

    #[test]
    fn expiry_hides_then_folds_and_persist_wins_by_version() {
        let mut s = Collection::default();
        hset(&mut s, 1, v(0).hlc + (100 << 16), "a", "1");
        s.expiry = Expiry {
            at_ms: Some(200),
            version: v(150 << 16),
        };
        assert_eq!(s.len(199), 1);
        assert_eq!(s.len(200), 0, "gone at its instant");
        let mut ch = s.begin(1, v(300 << 16), 250);
        ch.put(&mut s, Type::Hash, b"b", b"2", 250).unwrap();
        assert_eq!(s.len(250), 1);
        assert_eq!(s.expiry.at_ms, None);
        // the fold travels with the delta
        let mut other = Collection::default();
        hset(&mut other, 1, 100 << 16, "a", "1");
        other.merge(&ch.delta);
        assert_eq!(other.len(250), 1);
    }

    /// A step of a random history on three replicas (writers 1..=3).
    #[derive(Clone, Debug)]
    enum Step {
        Set { at: usize, key: u8, value: u8 },
        Del { at: usize, key: u8 },
        Incr { at: usize, key: u8, by: i8 },
        Whole { at: usize },
        Deliver { delta: usize, to: usize },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => (0..3usize, 0..4u8, 0..8u8).prop_map(|(at, key, value)| Step::Set { at, key, value }),
            2 => (0..3usize, 0..4u8).prop_map(|(at, key)| Step::Del { at, key }),
            2 => (0..3usize, 0..4u8, any::<i8>()).prop_map(|(at, key, by)| Step::Incr { at, key, by }),
            1 => (0..3usize).prop_map(|at| Step::Whole { at }),
            4 => (0..64usize, 0..3usize).prop_map(|(delta, to)| Step::Deliver { delta, to }),
        ]
    }

    /// A write shipped: its version and cell (`None`: a tombstone).
    type Write = (Version, Option<Box<[u8]>>);
    type Store = Option<Write>;

    fn apply(store: &mut Store, incoming: Write) {
        let held = store.as_ref().map(|(v, c)| (*v, c.as_deref()));
        match join(held, (incoming.0, incoming.1.as_deref())).unwrap() {
            Joined::Same => {}
            Joined::Store(v, c) => *store = Some((v, c)),
            Joined::NotMine => {
                if store.as_ref().is_none_or(|(sv, _)| *sv < incoming.0) {
                    *store = Some(incoming);
                }
            }
        }
    }

    fn state_of(store: &Store) -> Collection {
        at_key(store.as_ref().map(|(v, c)| (*v, c.as_deref()))).unwrap()
    }

    /// What a store holds, up to the causal context of dots below the floor (which no later
    /// write can observe: anything at or below the floor is dropped on arrival anyway) and the
    /// epoch (which only names the dots the replica issues next; any value above the epochs
    /// it issued under before will do). The stored version (`top`, the newest version a state
    /// saw) may differ where a write that changed nothing met a whole value: it orders
    /// nothing, and one full-state exchange (anti-entropy) evens it.
    type Seen = (bool, Version, Expiry, Vec<(Vec<u8>, Vec<(Dot, Elem)>)>);

    fn seen(store: &Store) -> Seen {
        let st = state_of(store);
        let (entries, _) = st.map.parts();
        let entries = entries
            .iter()
            .map(|(k, d)| (k.to_vec(), d.iter().map(|(a, b)| (*a, b.clone())).collect()))
            .collect();
        let is_coll = matches!(store, Some((_, Some(c))) if cell::decode(c).unwrap().kind == Kind::Collection);
        (is_coll, st.floor, st.expiry, entries)
    }

    /// Replay `steps`: the replicas' stores and every write shipped.
    fn run(steps: &[Step]) -> (Vec<Store>, Vec<Write>) {
        let mut stores: Vec<Store> = vec![None; 3];
        let mut sent = Vec::new();
        for (hlc, s) in (101u64..).zip(steps) {
            let (at, out) = match *s {
                Step::Deliver { delta, to } => {
                    if let Some(d) = sent.get(delta % sent.len().max(1)).cloned() {
                        apply(&mut stores[to], d);
                    }
                    continue;
                }
                Step::Whole { at } => (
                    at,
                    (
                        Version {
                            hlc,
                            writer: at as u32 + 1,
                        },
                        None,
                    ),
                ),
                Step::Set { at, key, value } => {
                    let mut st = state_of(&stores[at]);
                    let ver = Version {
                        hlc,
                        writer: at as u32 + 1,
                    };
                    let mut ch = st.begin(at as u32 + 1, ver, 0);
                    ch.put(&mut st, Type::Hash, &[key], &[value], 0).unwrap();
                    (at, (ver, Some(ch.delta.to_cell())))
                }
                Step::Del { at, key } => {
                    let mut st = state_of(&stores[at]);
                    let ver = Version {
                        hlc,
                        writer: at as u32 + 1,
                    };
                    let mut ch = st.begin(at as u32 + 1, ver, 0);
                    ch.remove(&mut st, Type::Hash, &[key], 0);
                    if !ch.changed() {
                        continue;
                    }
                    (at, (ver, Some(ch.delta.to_cell())))
                }
                Step::Incr { at, key, by } => {
                    let mut st = state_of(&stores[at]);
                    let ver = Version {
                        hlc,
                        writer: at as u32 + 1,
                    };
                    let mut ch = st.begin(at as u32 + 1, ver, 0);
                    if ch.incr(&mut st, Type::Hash, &[key], by.into(), 0).is_err() {
                        continue;
                    }
                    (at, (ver, Some(ch.delta.to_cell())))
                }
            };
            apply(&mut stores[at], out.clone());
            sent.push(out);
        }
        (stores, sent)
    }

    proptest! {
        /// Every write delivered everywhere, in any order and any number of times, gives
        /// every replica the same stored value; full states joined give it too.
        #[test]
        fn deltas_and_states_converge_in_any_order(
            steps in proptest::collection::vec(step(), 1..60),
            order in proptest::collection::vec(any::<prop::sample::Index>(), 0..100),
        ) {
            let (mut stores, sent) = run(&steps);
            for (i, pick) in order.iter().enumerate() {
                if !sent.is_empty() {
                    let d = sent[pick.index(sent.len())].clone();
                    apply(&mut stores[i % 3], d);
                }
            }
            for s in &mut stores {
                for d in &sent {
                    apply(s, d.clone());
                }
            }
            prop_assert_eq!(seen(&stores[0]), seen(&stores[1]));
            prop_assert_eq!(seen(&stores[1]), seen(&stores[2]));
            // a full state exchanged (anti-entropy, read repair) changes nothing more
            let mut again = stores[1].clone();
            if let Some(full) = stores[0].clone() {
                apply(&mut again, full);
            }
            prop_assert_eq!(seen(&again), seen(&stores[1]));
        }

        #[test]
        fn join_is_commutative_associative_and_idempotent(
            steps in proptest::collection::vec(step(), 1..60),
        ) {
            let (stores, _) = run(&steps);
            let j = |a: &Store, b: &Store| {
                let mut x = a.clone();
                if let Some(b) = b.clone() { apply(&mut x, b); }
                x
            };
            let (a, b, c) = (&stores[0], &stores[1], &stores[2]);
            prop_assert_eq!(seen(&j(a, b)), seen(&j(b, a)));
            prop_assert_eq!(seen(&j(&j(a, b), c)), seen(&j(a, &j(b, c))));
            prop_assert_eq!(j(a, a), a.clone());
        }
    }
}
