//! Hinted handoff's store (Dynamo §4.6): writes a replica missed, held by the coordinating core
//! until the replica can take them. Pure: no I/O, no clock (times come in as arguments).
//!
//! Owns: the hints of one core, by target member and key — only the newest version per
//! (target, key), since last-write-wins makes older ones moot — and the bounds on them
//! (`HINTS_PER_CORE_MAX`, `HINT_BYTES_PER_CORE_MAX`, and the hint window: a target whose oldest
//! undelivered hint is older than the window gets no new ones). Never decides when a target is
//! reachable (the delivery shell does) and never writes the WAL (the shard logs every hint
//! stored and every hint delivered, so a restart rebuilds exactly this).
//!
//! Hints do not count toward W: the quorum stays strict. A hint dropped at a bound is counted;
//! the replica then catches up through read repair or anti-entropy.

use std::collections::BTreeMap;

use crate::core::version::Version;
use crate::limits::{HINTS_PER_CORE_MAX, HINT_BYTES_PER_CORE_MAX, NODE_ID_BYTES_MAX};
use crate::storage::record::Kind;

/// One hint: the key's value (`None`: a delete) at a version, for one target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hint {
    pub key: Box<[u8]>,
    pub value: Option<Box<[u8]>>,
    pub version: Version,
}

/// What `add` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Added {
    /// Held (new, or newer than the one it replaced).
    Held,
    /// An equal or newer hint for this key and target is already held.
    Moot,
    /// Dropped: the count or byte bound is reached.
    Full,
    /// Dropped: the target's oldest undelivered hint is older than the window.
    WindowPassed,
}

/// A held hint's value (`None`: a delete) and version.
type Held = (Option<Box<[u8]>>, Version);

#[derive(Default)]
struct TargetHints {
    /// In key order: delivery batches come out the same way every run (a simulation replays).
    by_key: BTreeMap<Box<[u8]>, Held>,
    /// When the oldest hint still held for this target was stored.
    since_ms: u64,
}

/// One core's hints.
pub struct HintStore {
    targets: BTreeMap<String, TargetHints>,
    count: usize,
    bytes: u64,
    window_ms: u64,
}

fn hint_bytes(key: &[u8], value: Option<&[u8]>) -> u64 {
    (key.len() + value.map_or(0, <[u8]>::len)) as u64
}

impl HintStore {
    pub fn new(window_ms: u64) -> HintStore {
        HintStore {
            targets: BTreeMap::new(),
            count: 0,
            bytes: 0,
            window_ms,
        }
    }

    /// Change the window (`--hint-window-ms`; replay builds stores with the default).
    pub fn set_window_ms(&mut self, window_ms: u64) {
        self.window_ms = window_ms;
    }

    /// Hold a hint for `target`, unless a bound or an equal/newer hint says otherwise.
    pub fn add(
        &mut self,
        target: &str,
        key: &[u8],
        value: Option<&[u8]>,
        version: Version,
        now_ms: u64,
    ) -> Added {
        assert!(!target.is_empty() && target.len() <= NODE_ID_BYTES_MAX);
        let size = hint_bytes(key, value);
        let t = self
            .targets
            .entry(target.to_string())
            .or_insert_with(|| TargetHints {
                by_key: BTreeMap::new(),
                since_ms: now_ms,
            });
        if t.by_key.is_empty() {
            t.since_ms = now_ms;
        }
        let held = t
            .by_key
            .get(key)
            .map(|(v, ver)| (hint_bytes(key, v.as_deref()), *ver));
        if let Some((_, held_version)) = held {
            if held_version >= version {
                return Added::Moot;
            }
        }
        if now_ms.saturating_sub(t.since_ms) > self.window_ms {
            return Added::WindowPassed;
        }
        let (old_count, old_bytes) = held.map_or((0, 0), |(b, _)| (1, b));
        if self.count - old_count >= HINTS_PER_CORE_MAX
            || self.bytes - old_bytes + size > HINT_BYTES_PER_CORE_MAX
        {
            return Added::Full;
        }
        t.by_key
            .insert(Box::from(key), (value.map(Box::from), version));
        self.count = self.count - old_count + 1;
        self.bytes = self.bytes - old_bytes + size;
        Added::Held
    }

    /// The hint for (`target`, `key`) at exactly `version` was delivered (or superseded): drop
    /// it. A newer hint stored meanwhile stays. Returns whether one was dropped.
    pub fn remove(&mut self, target: &str, key: &[u8], version: Version) -> bool {
        let Some(t) = self.targets.get_mut(target) else {
            return false;
        };
        match t.by_key.get(key) {
            Some((value, v)) if *v == version => {
                let size = hint_bytes(key, value.as_deref());
                t.by_key.remove(key);
                self.count -= 1;
                self.bytes -= size;
                if t.by_key.is_empty() {
                    self.targets.remove(target);
                }
                true
            }
            _ => false,
        }
    }

    /// FLUSHALL at `floor`: drop every hint written at or below it (its target would refuse
    /// it anyway). Returns how many were dropped.
    pub fn drop_at_or_below(&mut self, floor: Version) -> usize {
        let before = self.count;
        for t in self.targets.values_mut() {
            t.by_key.retain(|key, (value, v)| {
                let keep = *v > floor;
                if !keep {
                    self.count -= 1;
                    self.bytes -= hint_bytes(key, value.as_deref());
                }
                keep
            });
        }
        self.targets.retain(|_, t| !t.by_key.is_empty());
        before - self.count
    }

    /// Targets with hints waiting.
    pub fn targets(&self) -> Vec<String> {
        self.targets.keys().cloned().collect()
    }

    /// Up to `max` of `target`'s hints, copied (delivery runs while new hints arrive).
    pub fn batch(&self, target: &str, max: usize) -> Vec<Hint> {
        self.targets
            .get(target)
            .into_iter()
            .flat_map(|t| t.by_key.iter())
            .take(max)
            .map(|(k, (v, ver))| Hint {
                key: k.clone(),
                value: v.clone(),
                version: *ver,
            })
            .collect()
    }

    /// Every hint, as (target, hint), for a snapshot.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8], Option<&[u8]>, Version)> {
        self.targets.iter().flat_map(|(target, t)| {
            t.by_key
                .iter()
                .map(move |(k, (v, ver))| (target.as_str(), &k[..], v.as_deref(), *ver))
        })
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

/// The WAL record kind and key field of a hint for `target` (`value` `None`: a delete).
pub fn record(target: &str, key: &[u8], value: Option<&[u8]>) -> (Kind, Vec<u8>) {
    let kind = if value.is_some() {
        Kind::HintPut
    } else {
        Kind::HintTombstone
    };
    (kind, encode_key(target, key))
}

/// A hint record's key field: the target id's length (one byte), the id, then the key.
pub fn encode_key(target: &str, key: &[u8]) -> Vec<u8> {
    assert!(target.len() <= NODE_ID_BYTES_MAX);
    let mut out = Vec::with_capacity(1 + target.len() + key.len());
    out.push(target.len() as u8);
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(key);
    out
}

/// The (target, key) of a hint record's key field, or `None` if it is malformed.
pub fn decode_key(field: &[u8]) -> Option<(&str, &[u8])> {
    let (&n, rest) = field.split_first()?;
    let n = n as usize;
    if n == 0 || n > NODE_ID_BYTES_MAX || rest.len() < n {
        return None;
    }
    let target = std::str::from_utf8(&rest[..n]).ok()?;
    Some((target, &rest[n..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(hlc: u64) -> Version {
        Version { hlc, writer: 1 }
    }

    #[test]
    fn only_the_newest_hint_per_key_is_held_and_delivery_drops_exactly_it() {
        let mut s = HintStore::new(1_000);
        assert_eq!(s.add("n3", b"k", Some(b"a"), v(1), 0), Added::Held);
        assert_eq!(s.add("n3", b"k", Some(b"b"), v(2), 0), Added::Held);
        assert_eq!(s.add("n3", b"k", Some(b"old"), v(1), 0), Added::Moot);
        assert_eq!(s.add("n2", b"k", None, v(2), 0), Added::Held, "per target");
        assert_eq!((s.len(), s.bytes()), (2, 2 + 1));
        assert!(
            !s.remove("n3", b"k", v(1)),
            "an older delivery keeps the newer hint"
        );
        assert!(s.remove("n3", b"k", v(2)));
        assert_eq!(s.targets(), vec!["n2".to_string()]);
        assert_eq!(
            s.batch("n2", 10),
            vec![Hint {
                key: Box::from(&b"k"[..]),
                value: None,
                version: v(2)
            }]
        );
    }

    #[test]
    fn the_window_counts_from_the_oldest_undelivered_hint() {
        let mut s = HintStore::new(1_000);
        assert_eq!(s.add("n3", b"a", Some(b"1"), v(1), 0), Added::Held);
        assert_eq!(
            s.add("n3", b"b", Some(b"1"), v(1), 1_000),
            Added::Held,
            "at the window"
        );
        assert_eq!(
            s.add("n3", b"c", Some(b"1"), v(1), 1_001),
            Added::WindowPassed
        );
        assert!(s.remove("n3", b"a", v(1)) && s.remove("n3", b"b", v(1)));
        assert_eq!(
            s.add("n3", b"c", Some(b"1"), v(1), 5_000),
            Added::Held,
            "a new outage"
        );
    }

    #[test]
    fn the_count_bound_holds_at_and_past_it() {
        let mut s = HintStore::new(u64::MAX);
        for i in 0..HINTS_PER_CORE_MAX {
            assert_eq!(s.add("n", &i.to_le_bytes(), None, v(1), 0), Added::Held);
        }
        assert_eq!(s.add("n", b"one more", None, v(1), 0), Added::Full);
        // replacing a held hint is no growth
        assert_eq!(
            s.add("n", &0usize.to_le_bytes(), None, v(2), 0),
            Added::Held
        );
        assert_eq!(s.len(), HINTS_PER_CORE_MAX);
    }

    #[test]
    fn the_byte_bound_holds() {
        let mut s = HintStore::new(u64::MAX);
        let big = vec![0u8; 1 << 20];
        let fits = (HINT_BYTES_PER_CORE_MAX / (1 << 20)) as usize - 1;
        for i in 0..fits {
            assert_eq!(
                s.add("n", &i.to_le_bytes(), Some(&big), v(1), 0),
                Added::Held
            );
        }
        assert_eq!(s.add("n", b"over", Some(&big), v(1), 0), Added::Full);
    }

    #[test]
    fn hint_keys_round_trip_and_malformed_ones_are_refused() {
        let f = encode_key("node3", b"user:1");
        assert_eq!(decode_key(&f), Some(("node3", &b"user:1"[..])));
        assert_eq!(decode_key(&[]), None);
        assert_eq!(decode_key(&[0]), None);
        assert_eq!(decode_key(&[5, b'a']), None);
        assert_eq!(decode_key(&[65; 70]), None, "id longer than allowed");
    }
}
