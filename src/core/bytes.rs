//! Reading the little-endian encodings the stores and the wire share: a cursor over a byte
//! slice that never reads past its end. Every read answers `None` when the rest is too short,
//! and a length-prefixed read checks its length against what is left before it takes it.
//!
//! Owns only the reading; what the bytes mean (tags, flags, counts) belongs to each encoding's
//! module, which wraps this cursor with its own reads and its own error.

use crate::core::version::Version;

/// A cursor over `bytes`: each read takes from the front.
#[derive(Clone, Copy, Debug)]
pub struct ByteReader<'a>(&'a [u8]);

impl<'a> ByteReader<'a> {
    pub fn new(bytes: &'a [u8]) -> ByteReader<'a> {
        ByteReader(bytes)
    }

    /// What is left to read.
    pub fn rest(&self) -> &'a [u8] {
        self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    pub fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    pub fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    pub fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    pub fn i64(&mut self) -> Option<i64> {
        Some(i64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    /// A `u32` length, then that many bytes.
    pub fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    /// A version: its `hlc` (`u64`), then its writer (`u32`).
    pub fn version(&mut self) -> Option<Version> {
        Some(Version {
            hlc: self.u64()?,
            writer: self.u32()?,
        })
    }

    /// A `u32` count of items of at least `min_bytes` each, refused when what is left cannot
    /// hold that many (so a corrupt count never reserves memory for items that are not there).
    pub fn count(&mut self, min_bytes: usize) -> Option<usize> {
        let n = self.u32()? as usize;
        (n.checked_mul(min_bytes)? <= self.0.len()).then_some(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_stop_at_the_end_and_take_nothing_then() {
        let mut b = vec![7u8];
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(b"abc");
        b.extend_from_slice(&9u64.to_le_bytes());
        b.extend_from_slice(&5u32.to_le_bytes());
        let mut r = ByteReader::new(&b);
        assert_eq!(r.u8(), Some(7));
        assert_eq!(r.bytes(), Some(&b"abc"[..]));
        assert_eq!(r.version(), Some(Version { hlc: 9, writer: 5 }));
        assert!(r.is_empty());
        assert_eq!(r.u8(), None);
        // a length past the end takes nothing
        let short = [4u8, 0, 0, 0, b'x'];
        let mut r = ByteReader::new(&short);
        assert_eq!(r.bytes(), None);
        let mut r = ByteReader::new(&short[..3]);
        assert_eq!(r.u32(), None);
        assert_eq!(r.rest().len(), 3);
    }

    #[test]
    fn a_count_the_rest_cannot_hold_is_refused() {
        let mut b = 2u32.to_le_bytes().to_vec();
        b.extend_from_slice(&[0; 8]);
        assert_eq!(ByteReader::new(&b).count(4), Some(2));
        assert_eq!(ByteReader::new(&b).count(5), None);
        let huge = u32::MAX.to_le_bytes();
        assert_eq!(ByteReader::new(&huge).count(1), None);
    }
}
