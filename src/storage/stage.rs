//! One core's staging files (`core-<i>/stage-<run>-{a,b}.log`): where `--fsync interval` and
//! `--fsync none` acknowledge a write, instead of waiting for its O_DIRECT segment write.
//!
//! Owns: copying each appended record (the very bytes the segment will get) into the file's
//! shared mapping, and reading a staging file back at replay. A `MAP_SHARED` mapping of a file
//! *is* its page cache, which survives a crash of the process (kill -9, an OOM kill, a
//! container restart): a staged record is as safe from those as one written to a segment, and
//! it cost a copy — no system call, no task. The segment writes then go out in large groups on
//! their own schedule (`STAGE_FLUSH_MS`, `STAGE_FLUSH_BYTES`), and the interval fdatasync bounds
//! what a power loss takes (see `wal_file`). Never decides when a record is acknowledged or
//! flushed (`wal_file` does).
//!
//! The files are zero-filled (their blocks allocated and written) before they are mapped, so a
//! store into the mapping never allocates: a full disk cannot fault it. The first store into a
//! page that writeback has cleaned takes a page fault (`page_mkwrite`), once per page (~25
//! records), not per record. Never truncate a staging file while it is mapped (a store past the
//! end would be `SIGBUS`).
//!
//! Layout: two files (halves `a` and `b`, `STAGE_BYTES` in all), each holding records back to
//! back from offset 0 in append order. Groups go to the current half; when it is full, the
//! other half starts over from its offset 0 once every record staged in it has reached its
//! segment (under sustained load the older half has long been written by then). When every
//! staged record has reached its segment, the current half starts over. Bytes of an earlier
//! fill may follow the new ones. A group that neither half can take waits for its segment
//! write, as with `--fsync batch`.
//!
//! Replay (`staged_after`, for each half, the one whose run starts earlier first): the records
//! that follow, without a gap, the last record of the same chain found in the segments. Older records (already in the segments) are skipped; the
//! first record that does not decode or does not follow on ends it (a group torn by the crash
//! was never acknowledged; leftovers of an earlier fill are older). So a stale record can
//! never be replayed over a newer state, and nothing after a gap is.

use std::os::unix::fs::FileExt;
use std::path::Path;

use memmap2::MmapMut;

use crate::limits::{STAGE_BYTES, WAL_RECORD_HEADER_BYTES};
use crate::storage::record::{self, Kind, Record};
use crate::storage::Error;

/// The staging file is zero-filled in pieces of this size at creation.
const STAGE_ZERO_CHUNK_BYTES: usize = 1024 * 1024;
/// Each of the two halves of the stage (`STAGE_BYTES` in all).
const HALF_BYTES: u64 = STAGE_BYTES / 2;
const _: () = assert!(HALF_BYTES % STAGE_ZERO_CHUNK_BYTES as u64 == 0);

/// The staging files of chain `run` in a core's directory (two halves, `a` and `b`).
pub fn file_name(run: u64, half: usize) -> String {
    let h = if half == 0 { 'a' } else { 'b' };
    format!("stage-{run:020}-{h}.log")
}

/// The run a staging file belongs to, from its name.
pub fn parse_file_name(name: &str) -> Option<u64> {
    let rest = name.strip_prefix("stage-")?.strip_suffix(".log")?;
    let (run, half) = rest.rsplit_once('-')?;
    matches!(half, "a" | "b").then_some(())?;
    run.parse().ok()
}

/// One half: its file's shared mapping and the highest ticket staged in it.
struct Half {
    map: MmapMut,
    last_ticket: u64,
}

pub struct Stage {
    halves: [Half; 2],
    /// The half groups go to, and where in it.
    current: usize,
    pos: u64,
}

impl Stage {
    /// Create (or empty) this run's two staging files, written through with zeros: a later
    /// group only overwrites blocks it owns, so a full disk can never fail it (a full disk at
    /// start fails the start instead).
    pub fn create(dir: &Path, run: u64) -> Result<Stage, Error> {
        let make = |half: usize| -> Result<Half, Error> {
            let path = dir.join(file_name(run, half));
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(true)
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| Error::io(&path, e))?;
            let zeros = vec![0u8; STAGE_ZERO_CHUNK_BYTES];
            let mut at = 0;
            while at < HALF_BYTES {
                file.write_all_at(&zeros, at)
                    .map_err(|e| Error::io(&path, e))?;
                at += STAGE_ZERO_CHUNK_BYTES as u64;
            }
            file.sync_data().map_err(|e| Error::io(&path, e))?;
            // SAFETY: the mapping is of a file this process created (truncating it first) in its
            // locked data dir, sized above and never truncated while mapped (module doc); the
            // bytes are only ever copied in and never handed out as references.
            let map = unsafe { MmapMut::map_mut(&file) }.map_err(|e| Error::io(&path, e))?;
            if (map.len() as u64) < HALF_BYTES {
                return Err(Error::io(
                    &path,
                    std::io::Error::other("staging file shorter than its mapping"),
                ));
            }
            Ok(Half {
                map,
                last_ticket: 0,
            })
        };
        Ok(Stage {
            halves: [make(0)?, make(1)?],
            current: 0,
            pos: 0,
        })
    }

    /// Stage `groups` (encoded records, in order, the last ending at `last_ticket`).
    /// `written`: every ticket up to it has reached its segment. When the current half is full
    /// the other takes over from its start, once everything staged in it has reached its
    /// segment. False: neither can take the groups now.
    pub fn put(&mut self, groups: &[&[u8]], last_ticket: u64, written: u64) -> bool {
        let len: u64 = groups.iter().map(|g| g.len() as u64).sum();
        let all_written = self.halves.iter().all(|h| h.last_ticket <= written);
        if all_written {
            self.pos = 0;
        }
        if self.pos + len > HALF_BYTES {
            let other = 1 - self.current;
            if self.halves[other].last_ticket > written || len > HALF_BYTES {
                return false;
            }
            self.current = other;
            self.pos = 0;
        }
        let half = &mut self.halves[self.current];
        for g in groups {
            let at = self.pos as usize;
            half.map[at..at + g.len()].copy_from_slice(g);
            self.pos += g.len() as u64;
        }
        half.last_ticket = last_ticket;
        true
    }
}

/// The position of a record in its chain: (segment id, sequence in the segment).
pub type Position = (u64, u64);

/// Of a staging file's bytes, the records that follow `last` (the chain's last record in the
/// segments; `None`: the segments hold none, so the first must open the chain's first segment
/// `first_segment`) without a gap, in order.
pub fn staged_after(
    bytes: &[u8],
    last: Option<Position>,
    first_segment: u64,
) -> Vec<(Position, Record<'_>)> {
    let mut out = Vec::new();
    let mut last = last;
    let mut at = 0usize;
    while let Some((pos, r, n)) = decode_any(&bytes[at..]) {
        at += n;
        let follows = match last {
            _ if last.is_some_and(|l| pos <= l) => {
                continue; // already in the segments
            }
            Some((seg, seq)) => {
                pos == (seg, seq + 1) || (pos.0 > seg && pos.1 == 0 && r.kind == Kind::SegmentStart)
            }
            None => pos == (first_segment, 0) && r.kind == Kind::SegmentStart,
        };
        if !follows {
            break;
        }
        last = Some(pos);
        out.push((pos, r));
    }
    out
}

/// Decode the record at the front of `buf`, whatever segment and sequence it claims.
fn decode_any(buf: &[u8]) -> Option<(Position, Record<'_>, usize)> {
    if buf.len() < WAL_RECORD_HEADER_BYTES {
        return None;
    }
    let segment = u64::from_le_bytes(buf[8..16].try_into().ok()?);
    let seq = u64::from_le_bytes(buf[16..24].try_into().ok()?);
    let (r, n) = record::decode(buf, segment, seq).ok()?;
    Some(((segment, seq), r, n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::version::Version;

    fn rec(out: &mut Vec<u8>, seg: u64, seq: u64, kind: Kind, key: &str) {
        let v = Version {
            hlc: seq + 1,
            writer: 1,
        };
        record::encode(out, seg, seq, kind, v, key.as_bytes(), b"\x00v");
    }

    fn keys(rs: &[(Position, Record<'_>)]) -> Vec<String> {
        rs.iter()
            .map(|(_, r)| String::from_utf8_lossy(r.key).into_owned())
            .collect()
    }

    #[test]
    fn records_after_the_segments_replay_and_older_ones_are_skipped() {
        let mut b = Vec::new();
        rec(&mut b, 5, 3, Kind::Put, "a");
        rec(&mut b, 5, 4, Kind::Put, "b");
        rec(&mut b, 5, 5, Kind::Put, "c");
        rec(&mut b, 7, 0, Kind::SegmentStart, "");
        rec(&mut b, 7, 1, Kind::Put, "d");
        // the segments end at (5, 3): b, c, the new segment's start, d follow
        assert_eq!(
            keys(&staged_after(&b, Some((5, 3)), 5)),
            ["b", "c", "", "d"]
        );
        // all of it already in the segments
        assert!(staged_after(&b, Some((7, 1)), 5).is_empty());
    }

    #[test]
    fn a_gap_a_torn_group_or_leftovers_end_it() {
        let mut b = Vec::new();
        rec(&mut b, 5, 4, Kind::Put, "b");
        rec(&mut b, 5, 6, Kind::Put, "after-a-gap");
        assert_eq!(keys(&staged_after(&b, Some((5, 3)), 5)), ["b"]);
        // torn: the second record cut short
        let mut t = Vec::new();
        rec(&mut t, 5, 4, Kind::Put, "b");
        let whole = t.len();
        rec(&mut t, 5, 5, Kind::Put, "c");
        t.truncate(whole + 10);
        assert_eq!(keys(&staged_after(&t, Some((5, 3)), 5)), ["b"]);
        // a new fill over an older one: the old records left behind are older, so skipped
        let mut f = Vec::new();
        rec(&mut f, 5, 9, Kind::Put, "new");
        rec(&mut f, 5, 2, Kind::Put, "old-leftover");
        rec(&mut f, 5, 3, Kind::Put, "old-leftover");
        assert_eq!(keys(&staged_after(&f, Some((5, 8)), 5)), ["new"]);
        // a segment that does not open with its start record is not a follower
        let mut s = Vec::new();
        rec(&mut s, 7, 0, Kind::Put, "x");
        assert!(staged_after(&s, Some((5, 3)), 5).is_empty());
    }

    #[test]
    fn with_nothing_in_the_segments_the_chain_must_start_at_its_first_segment() {
        let mut b = Vec::new();
        rec(&mut b, 3, 0, Kind::SegmentStart, "");
        rec(&mut b, 3, 1, Kind::Put, "a");
        assert_eq!(keys(&staged_after(&b, None, 3)), ["", "a"]);
        assert!(staged_after(&b, None, 4).is_empty(), "another chain's");
        assert!(
            staged_after(&[0u8; 64], None, 3).is_empty(),
            "zeros: nothing"
        );
    }

    #[test]
    fn names_round_trip() {
        assert_eq!(parse_file_name(&file_name(42, 0)), Some(42));
        assert_eq!(parse_file_name(&file_name(42, 1)), Some(42));
        assert_eq!(parse_file_name("wal-1.log"), None);
        assert_eq!(parse_file_name("stage-1-c.log"), None);
    }

    #[test]
    fn a_full_half_hands_over_to_the_other_once_it_is_written() {
        let dir = crate::test_dir("stage-halves");
        let mut st = Stage::create(&dir, 1).expect("create");
        let big = vec![1u8; (HALF_BYTES / 2) as usize + 1];
        assert!(st.put(&[&big], 1, 0));
        // the first half cannot take another; the second is empty: it takes over
        assert!(st.put(&[&big], 2, 0));
        assert_eq!(st.current, 1);
        // both hold unwritten records: nowhere to go until ticket 1 is written
        assert!(!st.put(&[&big], 3, 0));
        assert!(st.put(&[&big], 3, 1));
        assert_eq!((st.current, st.pos), (0, big.len() as u64));
        // everything written: the current half starts over
        assert!(st.put(&[&[2u8; 10]], 4, 3));
        assert_eq!(st.pos, 10);
        assert!(!st.put(&[&vec![0u8; HALF_BYTES as usize + 1]], 5, 4));
    }
}
