//! The stored form of a value: the client's bytes and, when the key expires, the instant it
//! does. Pure: encode, decode and the expiry arithmetic; no clock (time comes in as `now_ms`).
//!
//! Owns: the cell layout every layer below the client fronts carries opaquely — the map, the
//! WAL, replica writes, read repair, hints, streams to joining members and anti-entropy — so an
//! expiry travels with its value and version and every replica agrees on it (last write wins
//! on the version; the expiry is part of the write). Must never: look at a clock itself.
//!
//! Layout: `tag u8`, then for `TAG_EXPIRES` the absolute expiry as `u64` little-endian (ms
//! since the Unix epoch), then the value bytes.
//!
//! | tag | meaning                   | header bytes |
//! |-----|---------------------------|--------------|
//! | 0   | a string, never expires   | 1            |
//! | 1   | a string, expires at `u64`| 9            |
//! | 2   | a list, never expires     | 1            |
//! | 3   | a list, expires at `u64`  | 9            |
//! | 4   | a collection, never expires | 1          |
//! | 5   | a collection, expires at `u64` | 9       |
//!
//! A list's bytes are its elements, each a `u32` little-endian length then the bytes
//! (`core::consensus::Data`); only consensus rounds write lists. A collection's bytes are a
//! `core::crdt::collection::Collection` (state or delta), joined, not replaced, by the store.
//!
//! An expired cell reads as missing, exactly like a tombstone of its version: it keeps its
//! version in the map until it is purged, so an older write (a late replica write, a hint,
//! anti-entropy) cannot bring back the value it replaced.

use crate::limits::EXPIRES_AT_MS_MAX;

pub const TAG_PLAIN: u8 = 0;
pub const TAG_EXPIRES: u8 = 1;
/// Tag bit: the value is a list.
pub const TAG_LIST: u8 = 2;
/// Tag bit: the value is a collection (`core::crdt::collection`: a hash, set or sorted set).
pub const TAG_COLLECTION: u8 = 4;

/// What a key holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    String,
    List,
    /// A hash, set or sorted set: merged on every path, never overwritten by an older write.
    Collection,
}

/// A decoded cell borrowing its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cell<'a> {
    /// Absolute expiry, ms since the Unix epoch (`None`: never).
    pub expires_at_ms: Option<u64>,
    pub value: &'a [u8],
    pub kind: Kind,
}

/// Bytes `value` takes once encoded with `expires_at_ms`.
pub fn encoded_len(value_len: usize, expires_at_ms: Option<u64>) -> usize {
    value_len + if expires_at_ms.is_some() { 9 } else { 1 }
}

/// Encode a string `value` with its expiry.
pub fn encode(value: &[u8], expires_at_ms: Option<u64>) -> Box<[u8]> {
    encode_kind(Kind::String, value, expires_at_ms)
}

/// Encode `value` of `kind` with its expiry.
pub fn encode_kind(kind: Kind, value: &[u8], expires_at_ms: Option<u64>) -> Box<[u8]> {
    let mut out = Vec::with_capacity(encoded_len(value.len(), expires_at_ms));
    let list = match kind {
        Kind::String => 0,
        Kind::List => TAG_LIST,
        Kind::Collection => TAG_COLLECTION,
    };
    match expires_at_ms {
        None => out.push(TAG_PLAIN | list),
        Some(at) => {
            out.push(TAG_EXPIRES | list);
            out.extend_from_slice(&at.to_le_bytes());
        }
    }
    out.extend_from_slice(value);
    out.into_boxed_slice()
}

/// Why stored bytes are not a cell (only a bug or a peer of another format makes one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CellError {
    #[error("stored value is empty (no cell tag)")]
    Empty,
    #[error("stored value has an unknown cell tag {0}")]
    BadTag(u8),
    #[error("stored value is too short for its expiry")]
    Short,
}

/// Decode a cell.
pub fn decode(bytes: &[u8]) -> Result<Cell<'_>, CellError> {
    let tag = *bytes.first().ok_or(CellError::Empty)?;
    let kind = match tag & !TAG_EXPIRES {
        0 => Kind::String,
        TAG_LIST => Kind::List,
        TAG_COLLECTION => Kind::Collection,
        _ => return Err(CellError::BadTag(tag)),
    };
    if tag & TAG_EXPIRES == 0 {
        return Ok(Cell {
            expires_at_ms: None,
            value: &bytes[1..],
            kind,
        });
    }
    let at: [u8; 8] = bytes
        .get(1..9)
        .and_then(|b| b.try_into().ok())
        .ok_or(CellError::Short)?;
    Ok(Cell {
        expires_at_ms: Some(u64::from_le_bytes(at)),
        value: &bytes[9..],
        kind,
    })
}

/// The expiry of stored bytes, if they are a cell that expires (cheap: no full decode).
pub fn expires_at_ms(bytes: &[u8]) -> Option<u64> {
    decode(bytes).ok().and_then(|c| c.expires_at_ms)
}

impl Cell<'_> {
    /// Whether the cell has expired at `now_ms` (an expiry is exclusive: a key set to expire
    /// at `t` is gone at `t`, as in Redis).
    pub fn expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms.is_some_and(|at| at <= now_ms)
    }

    /// Milliseconds left at `now_ms` (`None`: never expires; 0 once expired).
    pub fn ttl_ms(&self, now_ms: u64) -> Option<u64> {
        self.expires_at_ms.map(|at| at.saturating_sub(now_ms))
    }
}

/// The absolute expiry for a relative time to live, refused when it is not positive or would
/// pass `EXPIRES_AT_MS_MAX` (Redis: "invalid expire time").
pub fn expiry_after(now_ms: u64, ttl_ms: i64) -> Result<u64, ExpiryError> {
    if ttl_ms <= 0 {
        return Err(ExpiryError::NotPositive);
    }
    let at = now_ms
        .checked_add(ttl_ms as u64)
        .ok_or(ExpiryError::TooFar)?;
    check_expiry(at)
}

/// An absolute expiry, refused past `EXPIRES_AT_MS_MAX` (a time in the past is allowed: the
/// key is then expired at once).
pub fn check_expiry(at_ms: u64) -> Result<u64, ExpiryError> {
    if at_ms > EXPIRES_AT_MS_MAX {
        return Err(ExpiryError::TooFar);
    }
    Ok(at_ms)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ExpiryError {
    #[error("invalid expire time: must be positive")]
    NotPositive,
    #[error("invalid expire time: past the year 9999")]
    TooFar,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_with_and_without_expiry() {
        for (value, at) in [
            (&b""[..], None),
            (b"v", None),
            (b"hello", Some(0)),
            (b"x", Some(u64::MAX)),
        ] {
            let bytes = encode(value, at);
            assert_eq!(bytes.len(), encoded_len(value.len(), at));
            let c = decode(&bytes).expect("cell");
            assert_eq!((c.value, c.expires_at_ms), (value, at));
            assert_eq!(expires_at_ms(&bytes), at);
        }
    }

    #[test]
    fn malformed_bytes_are_errors_not_values() {
        assert_eq!(decode(b""), Err(CellError::Empty));
        assert_eq!(decode(b"\x0aabc"), Err(CellError::BadTag(10)));
        assert_eq!(decode(b"\x01\x00\x00"), Err(CellError::Short));
        assert_eq!(expires_at_ms(b"\x01\x00"), None);
    }

    #[test]
    fn expiry_is_exclusive_and_ttl_saturates() {
        let bytes = encode(b"v", Some(1_000));
        let c = decode(&bytes).expect("cell");
        assert!(!c.expired(999));
        assert!(c.expired(1_000), "gone at its expiry instant");
        assert_eq!(c.ttl_ms(400), Some(600));
        assert_eq!(c.ttl_ms(5_000), Some(0));
        let plain = encode(b"v", None);
        let p = decode(&plain).expect("cell");
        assert!(!p.expired(u64::MAX));
        assert_eq!(p.ttl_ms(0), None);
    }

    #[test]
    fn expiry_limits_at_and_past_the_boundary() {
        assert_eq!(expiry_after(10, 1), Ok(11));
        assert_eq!(expiry_after(10, 0), Err(ExpiryError::NotPositive));
        assert_eq!(expiry_after(10, -5), Err(ExpiryError::NotPositive));
        assert_eq!(
            expiry_after(0, EXPIRES_AT_MS_MAX as i64),
            Ok(EXPIRES_AT_MS_MAX)
        );
        assert_eq!(
            expiry_after(1, EXPIRES_AT_MS_MAX as i64),
            Err(ExpiryError::TooFar)
        );
        assert_eq!(expiry_after(u64::MAX, 1), Err(ExpiryError::TooFar));
        assert_eq!(check_expiry(EXPIRES_AT_MS_MAX), Ok(EXPIRES_AT_MS_MAX));
        assert_eq!(
            check_expiry(EXPIRES_AT_MS_MAX + 1),
            Err(ExpiryError::TooFar)
        );
        assert_eq!(check_expiry(0), Ok(0), "the past: expired at once");
    }
}
