//! Replay of a node's WAL at start, before any executor runs (plain std I/O).
//!
//! Owns: finding every segment under every `core-*` directory, reading each one whole with
//! `record::scan` (which reads past damage), routing each valid record to the core that owns
//! the key *now* (so a restart with another `--cores` loses nothing), and carrying out what
//! `core::wal_damage` decides about what it found: a torn tail is cut (the file truncated
//! there); a segment holding corruption is kept as evidence under `damaged/` (a hard link named
//! after its directory, file and first damaged offset, so the start snapshot's removal of the
//! replayed segments never deletes it). Never decides what is torn and what is corrupt.

use std::fs;
use std::path::{Path, PathBuf};

use crate::core::ring::LocalRing;
use crate::core::wal_damage::{self, Finding, SegmentSeen};
use crate::limits::HINT_WINDOW_MS_DEFAULT;
use crate::limits::RECOVERY_READ_CHUNK_BYTES;
use crate::storage::acceptors::AcceptorStore;
use crate::storage::hints::{self, HintStore};
use crate::storage::map::Map;
use crate::storage::record::{self, Kind, Stop, Tail};
use crate::storage::stage;
use crate::storage::{parse_segment_file_name, Error};

/// Directory under the data dir where damaged segments are kept.
pub const DAMAGED_DIR: &str = "damaged";
/// File under `damaged/` that says a repair with the peers is still owed (a cluster member
/// that found corruption keeps it until a repair round completed).
pub const REPAIR_PENDING_FILE: &str = "REPAIR_PENDING";

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
    /// One consensus acceptor table per current core.
    pub acceptors: Vec<AcceptorStore>,
    /// Every segment replayed: superseded once the cores' snapshots are durable.
    pub segments: Vec<SegmentFile>,
    /// The smallest segment id not yet used.
    pub next_segment_id: u64,
    pub records: u64,
    /// Everything found wrong (torn tails cut, corruption kept aside).
    pub report: wal_damage::Report,
    /// Where each segment with corruption was kept.
    pub kept: Vec<PathBuf>,
    /// Staging files replayed (`stage`): superseded with the segments.
    pub stages: Vec<PathBuf>,
    /// Records replayed from them (acknowledged, not yet in a segment at the crash).
    pub staged_records: u64,
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
    // a FLUSHALL's floor first: nothing written before it is replayed
    let floor = crate::storage::flush_floor::read(data_dir)?;
    let mut maps: Vec<Map> = (0..ring.cores()).map(|_| Map::new()).collect();
    for m in &mut maps {
        m.flush_below(floor);
    }
    let mut hints: Vec<HintStore> = (0..ring.cores())
        .map(|_| HintStore::new(HINT_WINDOW_MS_DEFAULT))
        .collect();
    let mut acceptors: Vec<AcceptorStore> = (0..ring.cores())
        .map(|_| AcceptorStore::default())
        .collect();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let mut records = 0u64;
    let next_segment_id = segments.last().map(|s| s.id + 1).unwrap_or(1);
    let mut seen = Vec::with_capacity(segments.len());
    let mut replayed = Vec::with_capacity(segments.len());
    // Each chain's (run, core) last record found in the segments: staged records follow it.
    let mut chain_last: std::collections::HashMap<(u64, u32), stage::Position> =
        std::collections::HashMap::new();
    for seg in segments {
        let dir = seg
            .path
            .parent()
            .and_then(|d| d.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let bytes = match read_segment(&seg.path) {
            Ok(b) => b,
            Err(e) => {
                // Unreadable (EIO): every record in it is lost to this replay, not a torn tail.
                log::error!("wal {}: cannot read it: {e}", seg.path.display());
                seen.push(unreadable(&seg, dir, &e));
                replayed.push(seg);
                continue;
            }
        };
        let scan = record::scan(&bytes, seg.id);
        let mut view = SegmentSeen {
            id: seg.id,
            dir,
            start: None,
            snapshotted: Vec::new(),
            damage: scan.damage.clone(),
            tail: scan.tail.clone(),
        };
        let mut data_records = 0u64;
        for r in &scan.records {
            match r.kind {
                Kind::SegmentStart if r.seq == 0 => {
                    view.start = record::SegmentStart::decode(r.value)
                }
                Kind::SegmentStart => {}
                Kind::Snapshotted => view
                    .snapshotted
                    .extend(record::snapshotted_boundary(r.value)),
                Kind::HintPut | Kind::HintTombstone | Kind::HintDone => {
                    replay_hint(&mut hints, ring, r, now_ms);
                    data_records += 1;
                }
                Kind::Paxos => {
                    replay_acceptor(&mut acceptors, ring, r);
                    data_records += 1;
                }
                Kind::Put | Kind::Tombstone | Kind::Forget => {
                    apply(&mut maps[ring.core_for_key(r.key)], r);
                    data_records += 1;
                }
            }
        }
        records += data_records;
        if let (Some(start), Some(last)) = (&view.start, scan.records.last()) {
            let at = chain_last
                .entry((start.run, start.core))
                .or_insert((seg.id, last.seq));
            *at = (*at).max((seg.id, last.seq));
        }
        let empty = scan.records.is_empty() && scan.damage.is_empty();
        seen.push(view);
        if empty && scan.tail.stop == Stop::End {
            // Holds nothing (a segment made ahead and never used): give its space back now.
            log::debug!("wal {}: no records, removed", seg.path.display());
            fs::remove_file(&seg.path).map_err(|e| Error::io(&seg.path, e))?;
            continue;
        }
        replayed.push(seg);
    }
    let (stages, staged_records) = replay_stages(
        data_dir,
        ring,
        &chain_last,
        &mut maps,
        &mut hints,
        &mut acceptors,
    )?;
    for h in &mut hints {
        h.drop_at_or_below(floor);
    }
    for a in &mut acceptors {
        a.drop_at_or_below(floor);
    }
    records += staged_records;
    let report = wal_damage::classify(&seen);
    let path_of = |id: u64| replayed.iter().find(|s| s.id == id).map(|s| s.path.clone());
    for f in &report.findings {
        match f {
            Finding::TornTail { .. } => log::warn!("wal: {f}; cut"),
            Finding::Superseded { .. } => log::info!("wal: {f}"),
            _ => log::error!("wal: {f}"),
        }
    }
    for (id, at) in report.cuts() {
        if let Some(path) = path_of(id) {
            cut(&path, at)?;
        }
    }
    let mut kept = Vec::new();
    for id in report.damaged_segments() {
        let Some(path) = path_of(id) else { continue };
        let first = report
            .findings
            .iter()
            .find_map(|f| match f {
                Finding::Lost { segment, start, .. } if *segment == id => Some(*start),
                _ => None,
            })
            .unwrap_or(0);
        kept.push(keep_aside(data_dir, &path, first)?);
    }
    Ok(Recovered {
        maps,
        hints,
        acceptors,
        segments: replayed,
        next_segment_id,
        records,
        report,
        kept,
        stages,
        staged_records,
    })
}

/// Replay every `core-<i>/stage-<run>-{a,b}.log`: the records of chain (run, i) that follow,
/// with no gap, its last record in the segments (`stage::staged_after`).
fn replay_stages(
    data_dir: &Path,
    ring: &LocalRing,
    chain_last: &std::collections::HashMap<(u64, u32), stage::Position>,
    maps: &mut [Map],
    hints: &mut [HintStore],
    acceptors: &mut [AcceptorStore],
) -> Result<(Vec<PathBuf>, u64), Error> {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let mut stages = Vec::new();
    let mut replayed = 0u64;
    let Ok(dirs) = fs::read_dir(data_dir) else {
        return Ok((stages, 0));
    };
    for d in dirs.flatten() {
        let name = d.file_name().to_string_lossy().into_owned();
        let Some(core) = name
            .strip_prefix("core-")
            .and_then(|c| c.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(files) = fs::read_dir(d.path()) else {
            continue;
        };
        // each chain's halves, read whole
        let mut chains: std::collections::BTreeMap<u64, Vec<(PathBuf, Vec<u8>)>> =
            std::collections::BTreeMap::new();
        for f in files.flatten() {
            let fname = f.file_name().to_string_lossy().into_owned();
            let Some(run) = stage::parse_file_name(&fname) else {
                continue;
            };
            let path = f.path();
            let bytes = fs::read(&path).map_err(|e| Error::io(&path, e))?;
            chains.entry(run).or_default().push((path, bytes));
        }
        for (run, halves) in chains {
            let first = run + u64::from(core);
            let mut last = chain_last.get(&(run, core)).copied();
            // the half whose run follows the segments first, then the other from where it ends
            let mut order: Vec<_> = halves
                .iter()
                .map(|h| {
                    (
                        stage::staged_after(&h.1, last, first).first().map(|r| r.0),
                        h,
                    )
                })
                .collect();
            order.sort_by_key(|(start, _)| (start.is_none(), *start));
            let mut n = 0;
            for (_, (path, bytes)) in order {
                for (pos, r) in stage::staged_after(bytes, last, first) {
                    match r.kind {
                        Kind::HintPut | Kind::HintTombstone | Kind::HintDone => {
                            replay_hint(hints, ring, &r, now_ms);
                            n += 1;
                        }
                        Kind::Paxos => {
                            replay_acceptor(acceptors, ring, &r);
                            n += 1;
                        }
                        Kind::Put | Kind::Tombstone | Kind::Forget => {
                            apply(&mut maps[ring.core_for_key(r.key)], &r);
                            n += 1;
                        }
                        Kind::SegmentStart | Kind::Snapshotted => {}
                    }
                    last = Some(pos);
                }
                stages.push(path.clone());
            }
            if n > 0 {
                log::info!(
                    "wal {}: {n} staged records replayed (acknowledged, not yet in a segment)",
                    d.path().display()
                );
            }
            replayed += n;
        }
    }
    Ok((stages, replayed))
}

/// What replay saw of a segment it could not read at all.
fn unreadable(seg: &SegmentFile, dir: String, e: &std::io::Error) -> SegmentSeen {
    let len = fs::metadata(&seg.path).map(|m| m.len()).unwrap_or(0);
    SegmentSeen {
        id: seg.id,
        dir,
        start: None,
        snapshotted: Vec::new(),
        damage: vec![record::Damage {
            start: 0,
            end: len,
            first_seq: 0,
            next_seq: 0,
            reason: format!("unreadable: {e}"),
        }],
        tail: Tail {
            at: len,
            stop: Stop::End,
            written_end: len,
        },
    }
}

fn apply(map: &mut Map, r: &record::Record<'_>) {
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
        _ => {}
    }
}

/// Keep a damaged segment as evidence: hard-link it as `damaged/<dir>-<file>.at-<offset>`
/// (same filesystem: no copy, and the replayed name can still be removed after the snapshot).
pub fn keep_aside(data_dir: &Path, path: &Path, offset: u64) -> Result<PathBuf, Error> {
    let dir = data_dir.join(DAMAGED_DIR);
    fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let parent = path
        .parent()
        .and_then(|d| d.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let file = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut target = dir.join(format!("{parent}-{file}.at-{offset}"));
    let mut n = 1;
    while target.exists() {
        target = dir.join(format!("{parent}-{file}.at-{offset}.{n}"));
        n += 1;
    }
    fs::hard_link(path, &target).map_err(|e| Error::io(&target, e))?;
    sync_dir(&dir)?;
    sync_dir(data_dir)?;
    log::error!("wal: kept {} as {}", path.display(), target.display());
    Ok(target)
}

/// Whether an earlier start found corruption whose repair has not completed.
pub fn repair_pending(data_dir: &Path) -> bool {
    data_dir
        .join(DAMAGED_DIR)
        .join(REPAIR_PENDING_FILE)
        .exists()
}

/// Record (`true`) or clear (`false`) that a repair with the peers is owed, durably.
pub fn set_repair_pending(data_dir: &Path, pending: bool) -> Result<(), Error> {
    let dir = data_dir.join(DAMAGED_DIR);
    let file = dir.join(REPAIR_PENDING_FILE);
    if pending {
        fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        fs::write(&file, b"a repair round with every peer is owed\n")
            .map_err(|e| Error::io(&file, e))?;
        fs::File::open(&file)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io(&file, e))?;
    } else {
        match fs::remove_file(&file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io(&file, e)),
        }
    }
    sync_dir(&dir)
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

/// A consensus state record into the acceptor table of the core owning its key.
fn replay_acceptor(acceptors: &mut [AcceptorStore], ring: &LocalRing, r: &record::Record<'_>) {
    if !acceptors[ring.core_for_key(r.key)].replay(r.key, r.value) {
        log::warn!("wal: a consensus state record that does not decode; skipped");
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

/// A segment's bytes, whole, read in `RECOVERY_READ_CHUNK_BYTES` pieces (damage can sit
/// anywhere, so replay cannot stop where the records first stop). The failpoint
/// `eio:replay:read` makes this fail as a disk read error would.
pub fn read_segment(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    crate::failpoint::eio("replay:read")?;
    let mut f = fs::File::open(path)?;
    let len = f.metadata()?.len() as usize;
    let mut buf = vec![0u8; len];
    for piece in buf.chunks_mut(RECOVERY_READ_CHUNK_BYTES) {
        f.read_exact(piece)?;
    }
    Ok(buf)
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
        assert!(rec.report.findings.is_empty());
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
        assert!(rec.report.findings.is_empty());
        // Tear the record that crosses the second chunk boundary.
        let torn = ends
            .iter()
            .position(|e| *e > 2 * RECOVERY_READ_CHUNK_BYTES)
            .expect("a record past two chunks");
        fs::write(&path, &buf[..ends[torn] - 10]).expect("write torn");
        let rec = recover(&dir, &LocalRing::new("n", 1)).expect("recover");
        assert_eq!(rec.records, torn as u64);
        assert_eq!(rec.report.cuts().len(), 1);
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
        assert_eq!(rec.report.cuts().len(), 1);
        assert_eq!(rec.report.cuts()[0].1, third as u64);
        assert_eq!(
            fs::metadata(&path).expect("stat").len(),
            third as u64,
            "tail truncated"
        );
        let again = recover(&dir, &LocalRing::new("n", 1)).expect("recover");
        assert!(
            again.report.findings.is_empty(),
            "cut once, clean afterwards"
        );
        assert_eq!(again.records, 2);
    }
}
