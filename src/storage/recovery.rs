//! Replay of a node's WAL at start, before any executor runs (plain std I/O).
//!
//! Owns: finding every segment under every `core-*` directory, replaying its valid prefix and
//! routing each record to the core that owns the key *now* (so a restart with another
//! `--cores` loses nothing). A torn, zero or CRC-bad tail is logged with file and offset and cut
//! (the file is truncated there): nothing after the first bad record of a segment is applied.
//! Never writes anything but those truncations.

use std::fs;
use std::path::{Path, PathBuf};

use crate::core::ring::LocalRing;
use crate::limits::HINT_WINDOW_MS_DEFAULT;
use crate::limits::RECOVERY_READ_CHUNK_BYTES;
use crate::storage::hints::{self, HintStore};
use crate::storage::map::Map;
use crate::storage::record::{self, Kind, Stop};
use crate::storage::{parse_segment_file_name, Error};

/// One segment file found on disk.
#[derive(Clone, Debug)]
pub struct SegmentFile {
    pub id: u64,
    pub path: PathBuf,
}

/// What replay produced.
pub struct Recovered {
    /// One map per current core.
    pub maps: Vec<Map>,
    /// One hint store per current core: the hints logged and not yet delivered.
    pub hints: Vec<HintStore>,
    /// Every segment replayed: superseded once the cores' snapshots are durable.
    pub segments: Vec<SegmentFile>,
    /// The smallest segment id not yet used.
    pub next_segment_id: u64,
    pub records: u64,
    /// Tails cut: (file, offset, reason).
    pub cuts: Vec<(PathBuf, u64, String)>,
}

/// Every `core-*/wal-*.log` under `data_dir`, ordered by segment id.
pub fn list_segments(data_dir: &Path) -> Result<Vec<SegmentFile>, Error> {
    let mut out = Vec::new();
    let entries = match fs::read_dir(data_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(Error::io(data_dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(data_dir, e))?;
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with("core-") || !entry.path().is_dir() {
            continue;
        }
        let dir = entry.path();
        for seg in fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
            let seg = seg.map_err(|e| Error::io(&dir, e))?;
            if let Some(id) = parse_segment_file_name(&seg.file_name().to_string_lossy()) {
                out.push(SegmentFile {
                    id,
                    path: seg.path(),
                });
            }
        }
    }
    out.sort_by_key(|s| s.id);
    Ok(out)
}

/// Replay every segment under `data_dir` into one map per core of `ring`.
pub fn recover(data_dir: &Path, ring: &LocalRing) -> Result<Recovered, Error> {
    let segments = list_segments(data_dir)?;
    let mut maps: Vec<Map> = (0..ring.cores()).map(|_| Map::new()).collect();
    let mut hints: Vec<HintStore> = (0..ring.cores())
        .map(|_| HintStore::new(HINT_WINDOW_MS_DEFAULT))
        .collect();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let mut records = 0u64;
    let mut cuts = Vec::new();
    let next_segment_id = segments.last().map(|s| s.id + 1).unwrap_or(1);
    let mut replayed = Vec::with_capacity(segments.len());
    for seg in segments {
        let bytes = read_written(&seg.path, seg.id).map_err(|e| Error::io(&seg.path, e))?;
        let (recs, end, stop) = record::scan(&bytes, seg.id);
        for r in &recs {
            if matches!(r.kind, Kind::HintPut | Kind::HintTombstone | Kind::HintDone) {
                replay_hint(&mut hints, ring, r, now_ms);
                continue;
            }
            let map = &mut maps[ring.core_for_key(r.key)];
            match r.kind {
                Kind::Put => {
                    map.apply(r.key, Some(&stored_value(r)), r.version);
                }
                Kind::Tombstone => {
                    map.apply(r.key, None, r.version);
                }
                Kind::Forget => {
                    map.forget(r.key, r.version);
                }
                Kind::HintPut | Kind::HintTombstone | Kind::HintDone => {}
            }
        }
        records += recs.len() as u64;
        if stop != Stop::End {
            log::warn!(
                "wal {}: {} at offset {}; cutting the tail ({} bytes after it ignored)",
                seg.path.display(),
                stop,
                end,
                bytes.len() as u64 - end
            );
            cut(&seg.path, end)?;
            cuts.push((seg.path.clone(), end, stop.to_string()));
        }
        if recs.is_empty() {
            // Holds nothing (a segment made ahead and never used, or one cut to nothing):
            // give its space back now rather than after the snapshot.
            log::debug!("wal {}: no records, removed", seg.path.display());
            fs::remove_file(&seg.path).map_err(|e| Error::io(&seg.path, e))?;
            continue;
        }
        replayed.push(seg);
    }
    Ok(Recovered {
        maps,
        hints,
        segments: replayed,
        next_segment_id,
        records,
        cuts,
    })
}

/// A put record's value as the map stores it: a cell (a record from before cells carries
/// raw bytes, which never expire).
fn stored_value<'a>(r: &record::Record<'a>) -> std::borrow::Cow<'a, [u8]> {
    if r.cell {
        std::borrow::Cow::Borrowed(r.value)
    } else {
        std::borrow::Cow::Owned(crate::core::cell::encode(r.value, None).into_vec())
    }
}

/// A hint record into the hint store of the core owning its key (a malformed key field, which
/// the CRC makes all but impossible, is skipped with a warning).
fn replay_hint(hints: &mut [HintStore], ring: &LocalRing, r: &record::Record<'_>, now_ms: u64) {
    let Some((target, key)) = hints::decode_key(r.key) else {
        log::warn!("wal: a hint record with a malformed key field; skipped");
        return;
    };
    let store = &mut hints[ring.core_for_key(key)];
    match r.kind {
        Kind::HintPut => {
            store.add(target, key, Some(&stored_value(r)), r.version, now_ms);
        }
        Kind::HintTombstone => {
            store.add(target, key, None, r.version, now_ms);
        }
        _ => {
            store.remove(target, key, r.version);
        }
    }
}

/// A segment's bytes up to where its records end: read in chunks that double, until the
/// records stop inside what was read (a clean end or a bad record) or the file ends. The rest
/// of a segment is zeros (segments are zero-filled when made), not worth reading.
fn read_written(path: &Path, segment: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut f = fs::File::open(path)?;
    let mut buf = Vec::new();
    let mut chunk = RECOVERY_READ_CHUNK_BYTES;
    loop {
        let got = (&mut f).take(chunk as u64).read_to_end(&mut buf)?;
        if got < chunk {
            return Ok(buf); // the whole file
        }
        let (_, _, stop) = record::scan(&buf, segment);
        // Truncated: the last record (or header) runs past what was read; anything else is
        // decided by bytes already read.
        if stop != Stop::Truncated {
            return Ok(buf);
        }
        chunk = chunk.saturating_mul(2);
    }
}

/// Truncate `path` at `offset`, so the bad tail can never be replayed later.
fn cut(path: &Path, offset: u64) -> Result<(), Error> {
    let f = fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    f.set_len(offset).map_err(|e| Error::io(path, e))?;
    f.sync_all().map_err(|e| Error::io(path, e))
}

/// fsync a directory so created, renamed or removed entries survive power loss.
pub fn sync_dir(dir: &Path) -> Result<(), Error> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::version::Version;
    use crate::storage::{core_dir_name, segment_file_name};

    fn temp_dir(name: &str) -> PathBuf {
        crate::test_dir(&format!("recovery-{name}"))
    }

    fn write_segment(dir: &Path, core: usize, id: u64, keys: &[(&str, u64)]) -> PathBuf {
        let mut buf = Vec::new();
        for (i, (k, hlc)) in keys.iter().enumerate() {
            let v = Version {
                hlc: *hlc,
                writer: 1,
            };
            // "-k": a tombstone of k; "~k": k forgotten (moved to other nodes).
            let kind = match k.chars().next() {
                Some('-') => Kind::Tombstone,
                Some('~') => Kind::Forget,
                _ => Kind::Put,
            };
            let key = k.trim_start_matches(['-', '~']);
            record::encode(&mut buf, id, i as u64, kind, v, key.as_bytes(), b"val");
        }
        buf.resize(buf.len() + 512, 0);
        let cdir = dir.join(core_dir_name(core));
        fs::create_dir_all(&cdir).expect("mkdir");
        let path = cdir.join(segment_file_name(id));
        fs::write(&path, &buf).expect("write");
        path
    }

    #[test]
    fn replays_every_core_dir_into_the_current_layout() {
        let dir = temp_dir("layout");
        write_segment(&dir, 0, 1, &[("a", 1), ("b", 2)]);
        write_segment(&dir, 1, 2, &[("c", 3), ("-a", 4)]);
        let ring = LocalRing::new("n", 3);
        let rec = recover(&dir, &ring).expect("recover");
        assert_eq!(rec.records, 4);
        assert_eq!(rec.next_segment_id, 3);
        let live: usize = rec.maps.iter().map(|m| m.live_len()).sum();
        assert_eq!(live, 2, "a was deleted");
        let owner = ring.core_for_key(b"c");
        assert!(rec.maps[owner].get(b"c").is_some());
        assert!(rec.cuts.is_empty());
    }

    /// Segments longer than the first read chunk replay whole; the zero tail ends them; a
    /// record torn past a chunk boundary is cut.
    #[test]
    fn records_past_the_first_read_chunk_replay_and_a_torn_one_is_cut() {
        let dir = temp_dir("chunks");
        let cdir = dir.join(core_dir_name(0));
        fs::create_dir_all(&cdir).expect("mkdir");
        let value = vec![b'x'; 1000];
        let n = 3 * RECOVERY_READ_CHUNK_BYTES / 1000;
        let mut buf = Vec::new();
        let mut ends = Vec::new();
        for i in 0..n {
            let v = Version {
                hlc: i as u64 + 1,
                writer: 1,
            };
            let key = format!("k{i}");
            record::encode(&mut buf, 1, i as u64, Kind::Put, v, key.as_bytes(), &value);
            ends.push(buf.len());
        }
        let whole = buf.len();
        buf.resize(whole + 4 * RECOVERY_READ_CHUNK_BYTES, 0);
        let path = cdir.join(segment_file_name(1));
        fs::write(&path, &buf).expect("write");
        let rec = recover(&dir, &LocalRing::new("n", 1)).expect("recover");
        assert_eq!(rec.records, n as u64);
        assert!(rec.cuts.is_empty());
        // Tear the record that crosses the second chunk boundary.
        let torn = ends
            .iter()
            .position(|e| *e > 2 * RECOVERY_READ_CHUNK_BYTES)
            .expect("a record past two chunks");
        fs::write(&path, &buf[..ends[torn] - 10]).expect("write torn");
        let rec = recover(&dir, &LocalRing::new("n", 1)).expect("recover");
        assert_eq!(rec.records, torn as u64);
        assert_eq!(rec.cuts.len(), 1);
        assert_eq!(
            fs::metadata(&path).expect("stat").len(),
            ends[torn - 1] as u64
        );
    }

    /// A segment made ahead and never written (all zeros) is removed at once; ids stay unique.
    #[test]
    fn an_unused_spare_segment_is_removed_and_its_id_never_reused() {
        let dir = temp_dir("spare");
        let used = write_segment(&dir, 0, 1, &[("a", 1)]);
        let spare = write_segment(&dir, 0, 2, &[]);
        fs::write(&spare, vec![0u8; 64 * 1024]).expect("zero spare");
        let rec = recover(&dir, &LocalRing::new("n", 1)).expect("recover");
        assert!(!spare.exists(), "the empty spare is gone");
        assert!(used.exists());
        assert_eq!(rec.segments.len(), 1);
        assert_eq!(rec.next_segment_id, 3);
        assert!(rec.maps[0].get(b"a").is_some());
    }

    #[test]
    fn forgotten_keys_stay_forgotten_after_replay() {
        let dir = temp_dir("forget");
        write_segment(
            &dir,
            0,
            1,
            &[("a", 1), ("b", 2), ("~a", 1), ("~b", 1), ("c", 3)],
        );
        write_segment(&dir, 0, 2, &[("c", 4), ("~c", 4), ("c", 5)]);
        let rec = recover(&dir, &LocalRing::new("n", 1)).expect("recover");
        assert!(rec.maps[0].get(b"a").is_none(), "forgotten");
        assert!(
            rec.maps[0].get(b"b").is_some(),
            "a forget of an older version keeps b"
        );
        let (_, v) = rec.maps[0]
            .get(b"c")
            .expect("written again after the forget");
        assert_eq!(v.hlc, 5);
    }

    #[test]
    fn a_corrupt_tail_is_cut_and_logged() {
        let dir = temp_dir("cut");
        let path = write_segment(&dir, 0, 1, &[("a", 1), ("b", 2), ("c", 3)]);
        let mut bytes = fs::read(&path).expect("read");
        let last = record::encoded_len(b"c", b"val");
        let third = 2 * last;
        bytes[third + 50] ^= 0xFF;
        fs::write(&path, &bytes).expect("write");
        let rec = recover(&dir, &LocalRing::new("n", 1)).expect("recover");
        assert_eq!(rec.records, 2);
        assert_eq!(rec.cuts.len(), 1);
        assert_eq!(rec.cuts[0].1, third as u64);
        assert_eq!(
            fs::metadata(&path).expect("stat").len(),
            third as u64,
            "tail truncated"
        );
        let again = recover(&dir, &LocalRing::new("n", 1)).expect("recover");
        assert!(again.cuts.is_empty(), "cut once, clean afterwards");
        assert_eq!(again.records, 2);
    }
}
