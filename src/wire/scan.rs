//! The SCAN family's payloads on the native protocol, for the node that answers and the client
//! that asks: a SCAN request's cursor and count, a page of keys, and the range requests and
//! entries members exchange to walk the hash space (`server::data::scan` does the walking).
//! Pure: bytes in, values out, and back.

use crate::core::version::Version;

/// One key a node holds: its version and whether it is live (not a tombstone).
pub type Entry = (Box<[u8]>, Version, bool);

/// A SCAN request's key: the cursor (u64) and the count (u32; 0 asks for every key, as KEYS).
pub fn encode_cursor(cursor: u64, count: u32) -> [u8; 12] {
    let mut key = [0u8; 12];
    key[..8].copy_from_slice(&cursor.to_le_bytes());
    key[8..].copy_from_slice(&count.to_le_bytes());
    key
}

pub fn decode_cursor(key: &[u8]) -> Option<(u64, u32)> {
    let k: &[u8; 12] = key.try_into().ok()?;
    let cursor = u64::from_le_bytes([k[0], k[1], k[2], k[3], k[4], k[5], k[6], k[7]]);
    Some((cursor, u32::from_le_bytes([k[8], k[9], k[10], k[11]])))
}

pub fn encode_bounds(lo: u64, hi: u64) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&lo.to_le_bytes());
    b[8..].copy_from_slice(&hi.to_le_bytes());
    b
}

pub fn decode_bounds(b: &[u8]) -> Option<(u64, u64)> {
    if b.len() != 16 {
        return None;
    }
    let lo = u64::from_le_bytes(b[..8].try_into().ok()?);
    let hi = u64::from_le_bytes(b[8..].try_into().ok()?);
    (lo < hi && hi <= 1 << 32).then_some((lo, hi))
}

/// Entries on the wire: per entry `key_len u16, key, hlc u64, writer u32, live u8`.
pub fn encode_entries(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v, live) in entries {
        out.extend_from_slice(&(k.len() as u16).to_le_bytes());
        out.extend_from_slice(k);
        out.extend_from_slice(&v.hlc.to_le_bytes());
        out.extend_from_slice(&v.writer.to_le_bytes());
        out.push(u8::from(*live));
    }
    out
}

pub fn decode_entries(mut b: &[u8]) -> Option<Vec<Entry>> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let n = u16::from_le_bytes(b.get(..2)?.try_into().ok()?) as usize;
        let key = b.get(2..2 + n)?;
        let rest = b.get(2 + n..2 + n + 13)?;
        let hlc = u64::from_le_bytes(rest[..8].try_into().ok()?);
        let writer = u32::from_le_bytes(rest[8..12].try_into().ok()?);
        out.push((Box::from(key), Version { hlc, writer }, rest[12] != 0));
        b = &b[2 + n + 13..];
    }
    Some(out)
}

/// A SCAN answer on the wire: the next cursor (u64), then per key `len u16, key`.
pub fn encode_page(cursor: u64, keys: &[Box<[u8]>]) -> Vec<u8> {
    let mut out = cursor.to_le_bytes().to_vec();
    for k in keys {
        out.extend_from_slice(&(k.len() as u16).to_le_bytes());
        out.extend_from_slice(k);
    }
    out
}

pub fn decode_page(b: &[u8]) -> Option<(u64, Vec<&[u8]>)> {
    let cursor = u64::from_le_bytes(b.get(..8)?.try_into().ok()?);
    let mut rest = &b[8..];
    let mut keys = Vec::new();
    while !rest.is_empty() {
        let n = u16::from_le_bytes(rest.get(..2)?.try_into().ok()?) as usize;
        keys.push(rest.get(2..2 + n)?);
        rest = &rest[2 + n..];
    }
    Some((cursor, keys))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_forms_round_trip_and_garbage_is_refused() {
        let e: Vec<Entry> = vec![(Box::from(&b"k"[..]), Version { hlc: 3, writer: 1 }, true)];
        assert_eq!(decode_entries(&encode_entries(&e)), Some(e));
        assert_eq!(decode_entries(&[1, 0, b'k']), None);
        assert_eq!(
            decode_bounds(&encode_bounds(0, 1 << 32)),
            Some((0, 1 << 32))
        );
        assert_eq!(decode_bounds(&encode_bounds(5, 5)), None, "empty range");
        assert_eq!(decode_cursor(&encode_cursor(7, 9)), Some((7, 9)));
        assert_eq!(decode_cursor(&[0; 11]), None);
        assert_eq!(decode_bounds(&encode_bounds(0, (1 << 32) + 1)), None);
        let keys = vec![Box::from(&b"a"[..]), Box::from(&b"bc"[..])];
        let page = encode_page(7, &keys);
        assert_eq!(decode_page(&page), Some((7, vec![&b"a"[..], &b"bc"[..]])));
        assert_eq!(decode_page(&[1, 2]), None);
    }
}
