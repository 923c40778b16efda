//! One core's in-memory map of versioned values. Pure data structure, no I/O.
//!
//! Owns: the newest known version of every key this core stores, including tombstones.
//! Rule (last-write-wins): a write applies only if its version is newer than the stored one;
//! an older write is refused as stale and told the stored version; an equal version is the same
//! write seen again and changes nothing. Deletes store a versioned tombstone, so an older write
//! arriving later (a retry, read repair, replay) cannot bring the key back.

use std::collections::HashMap;

use crate::core::version::Version;

/// A stored value or tombstone (`value == None`) with its version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub version: Version,
    pub value: Option<Box<[u8]>>,
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
    entries: HashMap<Box<[u8]>, Entry, ahash::RandomState>,
    live: usize,
}

impl Map {
    pub fn new() -> Map {
        Map::default()
    }

    /// The entry for `key`, tombstones included.
    pub fn entry(&self, key: &[u8]) -> Option<&Entry> {
        self.entries.get(key)
    }

    /// The live value for `key` and its version.
    pub fn get(&self, key: &[u8]) -> Option<(&[u8], Version)> {
        let e = self.entries.get(key)?;
        e.value.as_deref().map(|v| (v, e.version))
    }

    /// Apply a put (`Some`) or delete (`None`) at `version`.
    pub fn apply(&mut self, key: &[u8], value: Option<&[u8]>, version: Version) -> Applied {
        match self.entries.get_mut(key) {
            Some(e) => {
                let was_live = e.value.is_some();
                if version < e.version {
                    return Applied::Stale { stored: e.version };
                }
                if version == e.version {
                    return Applied::Same { was_live };
                }
                e.version = version;
                e.value = value.map(Box::from);
                self.live = self.live - usize::from(was_live) + usize::from(value.is_some());
                Applied::New { was_live }
            }
            None => {
                self.entries.insert(
                    Box::from(key),
                    Entry {
                        version,
                        value: value.map(Box::from),
                    },
                );
                self.live += usize::from(value.is_some());
                Applied::New { was_live: false }
            }
        }
    }

    /// Live keys (tombstones excluded).
    pub fn live_len(&self) -> usize {
        self.live
    }

    /// Keys including tombstones.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &Entry)> {
        self.entries.iter().map(|(k, e)| (&**k, e))
    }

    /// The newest version stored (seeds the core's clock after replay).
    pub fn max_version(&self) -> Version {
        self.entries
            .values()
            .map(|e| e.version)
            .max()
            .unwrap_or(Version::ZERO)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(hlc: u64) -> Version {
        Version { hlc, writer: 1 }
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
