//! The WAL record format. Pure: encode and decode, no files.
//!
//! Every record is a 48-byte little-endian header, then key, then value:
//!
//! | field     | type    | meaning                                              |
//! |-----------|---------|------------------------------------------------------|
//! | len       | u32     | whole record length (header + key + value)           |
//! | crc       | u32     | CRC32 (crc32fast) of every byte after this field     |
//! | segment   | u64     | id of the segment the record was written to          |
//! | seq       | u64     | 0, 1, 2, … within the segment                        |
//! | hlc       | u64     | version: hybrid logical clock                        |
//! | writer    | u32     | version: writer id (node hash, core)                 |
//! | key_len   | u32     |                                                      |
//! | value_len | u32     |                                                      |
//! | kind      | u8      | 1 put, 2 tombstone, 3 forget, 4–6 hints, 7–8 markers, 9 consensus |
//! | format    | u8      | 1: the value is a cell (`core::cell`); 0: raw bytes  |
//! | reserved  | [u8; 2] | zero                                                 |
//!
//! Every record written now has format 1. Format 0 is the layout before values carried an
//! expiry: replay reads such a put's value as a cell that never expires.
//!
//! The segment id and the consecutive sequence number mean stale bytes in a reused or
//! preallocated file can never pass as records. A `len` of zero with nothing valid after it is
//! the clean end of a segment (preallocated space and block padding are zeros).
//!
//! Two marker kinds let replay tell a missing segment from a removed one (`core::wal_damage`):
//! every segment a writer opens starts with a `SegmentStart` record naming the segment written
//! before it in the same chain (one chain per core per run), and a synced snapshot (at start,
//! and by compaction) ends with a `Snapshotted` record naming the segment from which the chain
//! holds everything it needs.
//!
//! `scan` does not stop at the first bad record: it resynchronises on the next record that
//! decodes (right segment, later sequence, good CRC) and reports the damaged byte range and the
//! sequence numbers it skipped, so one flipped byte costs one record, not the rest of the log.

use bytemuck::{Pod, Zeroable};

use crate::core::version::Version;
use crate::limits::{WAL_KEY_FIELD_BYTES_MAX, WAL_RECORD_BYTES_MAX, WAL_RECORD_HEADER_BYTES};

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
struct Header {
    len: u32,
    crc: u32,
    segment: u64,
    seq: u64,
    hlc: u64,
    writer: u32,
    key_len: u32,
    value_len: u32,
    kind: u8,
    format: u8,
    reserved: [u8; 2],
}

/// `format` of records whose value is a cell; 0 was raw bytes.
const FORMAT_CELL: u8 = 1;

const _: () = assert!(std::mem::size_of::<Header>() == WAL_RECORD_HEADER_BYTES);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Put = 1,
    Tombstone = 2,
    /// This node no longer owns the key (a join or leave moved it): drop the local copy of
    /// this version or older. Not a delete: it never travels to other replicas.
    Forget = 3,
    /// Hinted handoff: a put or delete another replica missed, to deliver to it later. The key
    /// field is the target's id (a length byte, then the id) followed by the key
    /// (`storage::hints::encode_key`).
    HintPut = 4,
    HintTombstone = 5,
    /// That hint (same key field and version) was delivered: replay drops it.
    HintDone = 6,
    /// The first record of a segment: its chain and predecessor (`SegmentStart`, the value).
    SegmentStart = 7,
    /// A snapshot of the chain is synced: segments of the chain before the one named (the
    /// value, u64) are superseded and may be gone.
    Snapshotted = 8,
    /// A key's consensus acceptor state (`storage::acceptors`): the latest for the key wins.
    Paxos = 9,
}

/// The value of a `SegmentStart` record: where the segment sits in its chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentStart {
    /// The segment written before this one in the chain; 0: the chain's first.
    pub prev: u64,
    /// The run (the first segment id handed out at the node's start) and the core of the
    /// chain, and how many cores the run had.
    pub run: u64,
    pub core: u32,
    pub cores: u32,
}

/// Encoded length of a `SegmentStart` value.
pub const SEGMENT_START_BYTES: usize = 24;

impl SegmentStart {
    pub fn encode(&self) -> [u8; SEGMENT_START_BYTES] {
        let mut b = [0u8; SEGMENT_START_BYTES];
        b[..8].copy_from_slice(&self.prev.to_le_bytes());
        b[8..16].copy_from_slice(&self.run.to_le_bytes());
        b[16..20].copy_from_slice(&self.core.to_le_bytes());
        b[20..].copy_from_slice(&self.cores.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Option<SegmentStart> {
        if b.len() != SEGMENT_START_BYTES {
            return None;
        }
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap_or([0; 4]));
        Some(SegmentStart {
            prev: u64_at(0),
            run: u64_at(8),
            core: u32_at(16),
            cores: u32_at(20),
        })
    }
}

/// The boundary a `Snapshotted` record names, if its value is well formed.
pub fn snapshotted_boundary(value: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(value.try_into().ok()?))
}

/// A decoded record borrowing key and value from the segment bytes.
#[derive(Debug, PartialEq, Eq)]
pub struct Record<'a> {
    pub seq: u64,
    pub kind: Kind,
    pub version: Version,
    pub key: &'a [u8],
    pub value: &'a [u8],
    /// The value is a cell (false: a raw value written before cells existed).
    pub cell: bool,
}

/// Why decoding stopped. `End` is a clean end; every other case is a torn or corrupt tail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stop {
    End,
    Truncated,
    BadLength(u32),
    BadCrc,
    WrongSegment(u64),
    WrongSeq { expected: u64, found: u64 },
    BadKind(u8),
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stop::End => write!(f, "end"),
            Stop::Truncated => write!(f, "torn record (file ends inside it)"),
            Stop::BadLength(n) => write!(f, "bad record length {n}"),
            Stop::BadCrc => write!(f, "crc mismatch"),
            Stop::WrongSegment(s) => write!(f, "record of segment {s}"),
            Stop::WrongSeq { expected, found } => write!(f, "seq {found}, expected {expected}"),
            Stop::BadKind(k) => write!(f, "bad record kind {k}"),
        }
    }
}

/// Encoded length of a record.
pub fn encoded_len(key: &[u8], value: &[u8]) -> usize {
    WAL_RECORD_HEADER_BYTES + key.len() + value.len()
}

/// Append one record to `out`.
pub fn encode(
    out: &mut Vec<u8>,
    segment: u64,
    seq: u64,
    kind: Kind,
    version: Version,
    key: &[u8],
    value: &[u8],
) {
    let len = encoded_len(key, value);
    assert!(len <= WAL_RECORD_BYTES_MAX && key.len() <= WAL_KEY_FIELD_BYTES_MAX);
    let h = Header {
        len: (len as u32).to_le(),
        crc: 0,
        segment: segment.to_le(),
        seq: seq.to_le(),
        hlc: version.hlc.to_le(),
        writer: version.writer.to_le(),
        key_len: (key.len() as u32).to_le(),
        value_len: (value.len() as u32).to_le(),
        kind: kind as u8,
        format: FORMAT_CELL,
        reserved: [0; 2],
    };
    let start = out.len();
    out.extend_from_slice(bytemuck::bytes_of(&h));
    out.extend_from_slice(key);
    out.extend_from_slice(value);
    let crc = crc32fast::hash(&out[start + 8..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Decode the record at the front of `buf`, expected in `segment` with sequence `seq`.
/// Returns the record and its length, or why the segment's valid prefix ends here.
pub fn decode(buf: &[u8], segment: u64, seq: u64) -> Result<(Record<'_>, usize), Stop> {
    if buf.len() < 4 {
        return if buf.iter().all(|&b| b == 0) {
            Err(Stop::End)
        } else {
            Err(Stop::Truncated)
        };
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if len == 0 {
        return Err(Stop::End);
    }
    let n = len as usize;
    if !(WAL_RECORD_HEADER_BYTES..=WAL_RECORD_BYTES_MAX).contains(&n) {
        return Err(Stop::BadLength(len));
    }
    if buf.len() < n {
        return Err(Stop::Truncated);
    }
    let h: Header = bytemuck::pod_read_unaligned(&buf[..WAL_RECORD_HEADER_BYTES]);
    if crc32fast::hash(&buf[8..n]) != u32::from_le(h.crc) {
        return Err(Stop::BadCrc);
    }
    let key_len = u32::from_le(h.key_len) as usize;
    let value_len = u32::from_le(h.value_len) as usize;
    if WAL_RECORD_HEADER_BYTES + key_len + value_len != n || key_len > WAL_KEY_FIELD_BYTES_MAX {
        return Err(Stop::BadLength(len));
    }
    if u64::from_le(h.segment) != segment {
        return Err(Stop::WrongSegment(u64::from_le(h.segment)));
    }
    if u64::from_le(h.seq) != seq {
        return Err(Stop::WrongSeq {
            expected: seq,
            found: u64::from_le(h.seq),
        });
    }
    let kind = match h.kind {
        1 => Kind::Put,
        2 => Kind::Tombstone,
        3 => Kind::Forget,
        4 => Kind::HintPut,
        5 => Kind::HintTombstone,
        6 => Kind::HintDone,
        7 => Kind::SegmentStart,
        8 => Kind::Snapshotted,
        9 => Kind::Paxos,
        k => return Err(Stop::BadKind(k)),
    };
    let key_end = WAL_RECORD_HEADER_BYTES + key_len;
    Ok((
        Record {
            seq,
            kind,
            version: Version {
                hlc: u64::from_le(h.hlc),
                writer: u32::from_le(h.writer),
            },
            key: &buf[WAL_RECORD_HEADER_BYTES..key_end],
            value: &buf[key_end..n],
            cell: h.format == FORMAT_CELL,
        },
        n,
    ))
}

/// The valid prefix of a segment's bytes: its records, the byte offset where it ends and why.
/// (What a torn-tail-only reader sees; `scan` reads past damage.)
pub fn scan_prefix(buf: &[u8], segment: u64) -> (Vec<Record<'_>>, u64, Stop) {
    let mut records = Vec::new();
    let mut at = 0usize;
    loop {
        match decode(&buf[at..], segment, records.len() as u64) {
            Ok((rec, n)) => {
                records.push(rec);
                at += n;
            }
            Err(stop) => return (records, at as u64, stop),
        }
    }
}

/// A damaged stretch of a segment with valid records after it: bytes `[start, end)` did not
/// decode, and the records with sequence numbers `[first_seq, next_seq)` were in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damage {
    pub start: u64,
    pub end: u64,
    pub first_seq: u64,
    pub next_seq: u64,
    /// Why the record at `start` did not decode.
    pub reason: String,
}

impl Damage {
    pub fn records_lost(&self) -> u64 {
        self.next_seq - self.first_seq
    }
}

/// How the bytes after the last valid record end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tail {
    /// Offset just past the last valid record.
    pub at: u64,
    /// `Stop::End`: zeros or the file's end, a clean end. Anything else is a bad record with
    /// nothing valid after it: a torn tail in a chain's last segment, lost records elsewhere.
    pub stop: Stop,
    /// Offset just past the last non-zero byte (`at` when the rest is zeros).
    pub written_end: u64,
}

/// Everything `scan` found in a segment.
#[derive(Debug)]
pub struct Scan<'a> {
    pub records: Vec<Record<'a>>,
    pub damage: Vec<Damage>,
    pub tail: Tail,
}

/// Every valid record of a segment, reading past damage (see the module docs).
pub fn scan(buf: &[u8], segment: u64) -> Scan<'_> {
    let mut records = Vec::new();
    let mut damage = Vec::new();
    let mut at = 0usize;
    let mut seq = 0u64;
    loop {
        match decode(&buf[at..], segment, seq) {
            Ok((rec, n)) => {
                records.push(rec);
                at += n;
                seq += 1;
            }
            Err(stop) => match resync(buf, segment, at + 1, seq) {
                Some(next) => {
                    let found = decode_at(buf, segment, next)
                        .map(|(r, _)| r.seq)
                        .unwrap_or(seq);
                    damage.push(Damage {
                        start: at as u64,
                        end: next as u64,
                        first_seq: seq,
                        next_seq: found,
                        reason: stop.to_string(),
                    });
                    at = next;
                    seq = found;
                }
                None => {
                    let written_end = buf.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
                    let tail = Tail {
                        at: at as u64,
                        stop,
                        written_end: written_end.max(at) as u64,
                    };
                    return Scan {
                        records,
                        damage,
                        tail,
                    };
                }
            },
        }
    }
}

/// The record at `at` if one decodes there with any sequence number.
fn decode_at(buf: &[u8], segment: u64, at: usize) -> Option<(Record<'_>, usize)> {
    let rest = buf.get(at..)?;
    if rest.len() < WAL_RECORD_HEADER_BYTES {
        return None;
    }
    let seq = u64::from_le_bytes(rest[16..24].try_into().ok()?);
    decode(rest, segment, seq).ok()
}

/// The first offset at or after `from` where a record of `segment` with sequence `seq` or later
/// decodes. Cheap tests first (length in range, segment id) so zeros and value bytes are
/// skipped without a CRC.
fn resync(buf: &[u8], segment: u64, from: usize, seq: u64) -> Option<usize> {
    let seg = segment.to_le_bytes();
    let last = buf.len().checked_sub(WAL_RECORD_HEADER_BYTES)?;
    (from..=last).find(|&at| {
        let len = u32::from_le_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]) as usize;
        (WAL_RECORD_HEADER_BYTES..=WAL_RECORD_BYTES_MAX).contains(&len)
            && at + len <= buf.len()
            && buf[at + 8..at + 16] == seg
            && decode_at(buf, segment, at).is_some_and(|(r, _)| r.seq >= seq)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v(hlc: u64) -> Version {
        Version { hlc, writer: 1 }
    }

    fn segment_of(n: usize, id: u64) -> Vec<u8> {
        let mut buf = Vec::new();
        for i in 0..n {
            let key = format!("key-{i}");
            let val = format!("value-{i}");
            encode(
                &mut buf,
                id,
                i as u64,
                Kind::Put,
                v(i as u64),
                key.as_bytes(),
                val.as_bytes(),
            );
        }
        buf
    }

    #[test]
    fn append_and_replay() {
        let buf = segment_of(10, 3);
        let (recs, end, stop) = scan_prefix(&buf, 3);
        assert_eq!(recs.len(), 10);
        assert_eq!(end as usize, buf.len());
        assert_eq!(stop, Stop::End);
        assert_eq!(recs[4].key, b"key-4");
        assert_eq!(recs[4].value, b"value-4");
        assert_eq!(recs[4].version, v(4));
    }

    #[test]
    fn zero_tail_is_a_clean_end() {
        let mut buf = segment_of(3, 1);
        let len = buf.len();
        buf.resize(len + 4096, 0);
        let (recs, end, stop) = scan_prefix(&buf, 1);
        assert_eq!((recs.len(), end as usize, stop), (3, len, Stop::End));
    }

    #[test]
    fn truncation_at_every_byte_of_the_last_record_keeps_the_prefix() {
        let full = segment_of(5, 1);
        let prefix = segment_of(4, 1).len();
        for cut in prefix..full.len() {
            let (recs, end, stop) = scan_prefix(&full[..cut], 1);
            assert_eq!(recs.len(), 4, "cut at {cut}");
            assert_eq!(end as usize, prefix);
            if cut > prefix {
                assert_ne!(stop, Stop::End, "a partial record is never a clean end");
            }
        }
    }

    #[test]
    fn records_of_another_segment_or_a_replayed_seq_are_refused() {
        let buf = segment_of(2, 7);
        assert_eq!(scan_prefix(&buf, 8).2, Stop::WrongSegment(7));
        let mut dup = buf.clone();
        dup.extend_from_slice(&buf);
        let (recs, end, stop) = scan_prefix(&dup, 7);
        assert_eq!((recs.len(), end as usize), (2, buf.len()));
        assert_eq!(
            stop,
            Stop::WrongSeq {
                expected: 2,
                found: 0
            }
        );
    }

    #[test]
    fn zeroed_block_in_the_middle_is_damage_with_the_records_it_held() {
        let mut buf = segment_of(200, 4);
        let len = buf.len();
        buf.resize(len + 8192, 0);
        buf[4096..8192].iter_mut().for_each(|b| *b = 0);
        let got = scan(&buf, 4);
        assert_eq!(got.damage.len(), 1);
        let d = &got.damage[0];
        assert!(d.start <= 4096 && d.end >= 8192, "{d:?}");
        let kept: Vec<u64> = got.records.iter().map(|r| r.seq).collect();
        assert_eq!(kept.len() as u64 + d.records_lost(), 200);
        assert!(kept.iter().all(|s| *s < d.first_seq || *s >= d.next_seq));
        assert_eq!(got.tail.stop, Stop::End);
        assert_eq!(got.tail.at as usize, len);
        assert_eq!(got.tail.written_end as usize, len);
    }

    #[test]
    fn a_torn_tail_is_a_tail_not_damage() {
        let full = segment_of(5, 1);
        let got = scan(&full[..full.len() - 3], 1);
        assert!(got.damage.is_empty());
        assert_eq!(got.records.len(), 4);
        assert_eq!(got.tail.stop, Stop::Truncated);
        assert_eq!(got.tail.written_end as usize, full.len() - 3);
    }

    #[test]
    fn segment_start_round_trips() {
        let s = SegmentStart {
            prev: 9,
            run: 3,
            core: 1,
            cores: 2,
        };
        assert_eq!(SegmentStart::decode(&s.encode()), Some(s));
        assert_eq!(SegmentStart::decode(&[0; 23]), None);
        assert_eq!(snapshotted_boundary(&7u64.to_le_bytes()), Some(7));
        assert_eq!(snapshotted_boundary(&[1, 2]), None);
    }

    /// Which record of the intact segment `buf` holds byte `at`, and where that record starts.
    fn damaged_record(buf: &[u8], at: usize) -> (usize, usize) {
        let (good, _, _) = scan_prefix(buf, 1);
        let mut offset = 0usize;
        for (i, r) in good.iter().enumerate() {
            let n = encoded_len(r.key, r.value);
            if at < offset + n {
                return (i, offset);
            }
            offset += n;
        }
        (0, offset)
    }

    proptest! {
        /// Flip one bit anywhere: replay returns exactly the records before the damaged one.
        #[test]
        fn a_flipped_bit_cuts_at_the_damaged_record(at in 0usize..1000, bit in 0u8..8) {
            let buf = segment_of(12, 1);
            let at = at % buf.len();
            let mut bad = buf.clone();
            bad[at] ^= 1 << bit;
            let (recs, end, _) = scan_prefix(&bad, 1);
            let (damaged, offset) = damaged_record(&buf, at);
            prop_assert_eq!(recs.len(), damaged);
            prop_assert_eq!(end as usize, offset);
        }

        /// Flip one bit anywhere: `scan` loses exactly the damaged record and reads every
        /// record after it.
        #[test]
        fn a_flipped_bit_costs_exactly_the_damaged_record(at in 0usize..1000, bit in 0u8..8) {
            let buf = segment_of(12, 1);
            let at = at % buf.len();
            let mut bad = buf.clone();
            bad[at] ^= 1 << bit;
            let (damaged, offset) = damaged_record(&buf, at);
            let got = scan(&bad, 1);
            let seqs: Vec<u64> = got.records.iter().map(|r| r.seq).collect();
            let want: Vec<u64> = (0..12).filter(|&s| s != damaged as u64).collect();
            if damaged == 11 {
                // The last record: nothing valid after it, a tail.
                prop_assert_eq!(&seqs[..], &want[..]);
                prop_assert!(got.damage.is_empty());
                prop_assert_eq!(got.tail.at as usize, offset);
            } else {
                prop_assert_eq!(&seqs[..], &want[..]);
                prop_assert_eq!(got.damage.len(), 1);
                let d = &got.damage[0];
                prop_assert_eq!(d.start as usize, offset);
                prop_assert_eq!((d.first_seq, d.next_seq), (damaged as u64, damaged as u64 + 1));
                prop_assert_eq!(got.tail.stop.clone(), Stop::End);
            }
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = scan_prefix(&bytes, 0);
            let _ = scan(&bytes, 0);
        }
    }
}
