//! Damage to a real node's WAL: flipped bytes at every record boundary and inside every field,
//! a zeroed 4 KiB block, a segment truncated in the middle, a middle segment removed, damaged
//! snapshot records. After each: the exact count reported, no valid record after the damage
//! dropped, a lone node refusing to start (and naming `--wal-recovery skip-corrupt`),
//! `skip-corrupt` serving everything else, the damaged segment kept under `damaged/`, and a
//! cluster member that answers no replica read until it was repaired (seen through
//! LOCAL_GET). Also `kv scrub` finding damage made while a node runs.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;
use kvstore::core::ring::LocalRing;
use kvstore::core::wal_damage::Finding;
use kvstore::storage::record;
use kvstore::storage::recovery;

const VALUE: &str =
    "0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghij";

fn key(i: usize) -> String {
    format!("key-{i:05}")
}

/// A node that wrote `n` keys and stopped cleanly; its data dir.
fn written(name: &str, n: usize, extra: &[&str]) -> Result<PathBuf, String> {
    let dir = data_dir(name);
    let mut args = vec!["--cores", "1"];
    args.extend_from_slice(extra);
    let mut node = Node::start("d1", &dir, &args)?;
    let mut c = node.client();
    for i in 0..n {
        c.put(key(i).as_bytes(), VALUE.as_bytes())
            .map_err(|e| e.to_string())?;
    }
    drop(c);
    let st = node.terminate()?;
    if !st.success() {
        return Err(format!("clean stop exited {st}"));
    }
    Ok(dir)
}

/// The segments holding records (not the spare made ahead, all zeros).
fn segments(dir: &Path) -> Vec<recovery::SegmentFile> {
    recovery::list_segments(dir)
        .expect("list segments")
        .into_iter()
        .filter(|s| !record_spans(&s.path, s.id).is_empty())
        .collect()
}

/// Offsets where each valid record of a segment starts, and its length.
fn record_spans(path: &Path, id: u64) -> Vec<(usize, usize)> {
    let bytes = std::fs::read(path).expect("read segment");
    let (recs, _, _) = record::scan_prefix(&bytes, id);
    let mut at = 0;
    recs.iter()
        .map(|r| {
            let n = record::encoded_len(r.key, r.value);
            at += n;
            (at - n, n)
        })
        .collect()
}

fn flip(path: &Path, at: usize) {
    let mut b = std::fs::read(path).expect("read");
    b[at] ^= 0x5A;
    std::fs::write(path, b).expect("write");
}

/// Start a node expecting it to refuse; its stderr.
fn refused(dir: &Path, extra: &[&str]) -> Result<String, String> {
    let out = Command::new(env!("CARGO_BIN_EXE_kvstore-node"))
        .args(["--node-id", "d1", "--cores", "1", "--port"])
        .arg(free_port().to_string())
        .arg("--data-dir")
        .arg(dir)
        .args(extra)
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        return Err("the node started on a corrupt wal".into());
    }
    Ok(String::from_utf8_lossy(&out.stderr).into_owned())
}

fn count_present(node: &Node, n: usize) -> Result<usize, String> {
    let mut c = node.client();
    let mut present = 0;
    for i in 0..n {
        if c.get(key(i).as_bytes())
            .map_err(|e| e.to_string())?
            .is_some()
        {
            present += 1;
        }
    }
    Ok(present)
}

fn info(node: &Node) -> Result<serde_json::Value, String> {
    node.client().info().map_err(|e| e.to_string())
}

fn damaged_files(dir: &Path) -> usize {
    std::fs::read_dir(dir.join(recovery::DAMAGED_DIR))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().contains(".at-"))
                .count()
        })
        .unwrap_or(0)
}

/// Flip one byte at every record boundary and inside every field of a record in the middle of
/// a node's segment: replay loses exactly that one record each time and reports it.
#[test]
fn one_flipped_byte_anywhere_costs_exactly_one_record() -> TestResult {
    let n = 40;
    let dir = written("wal-flip-every-field", n, &[])?;
    let seg = segments(&dir).pop().ok_or("no segment")?;
    let pristine = std::fs::read(&seg.path)?;
    let spans = record_spans(&seg.path, seg.id);
    let ring = LocalRing::new("d1", 1);
    let clean = recovery::recover(&dir, &ring)?;
    assert!(clean.report.findings.is_empty(), "{:?}", clean.report);
    let live = clean.maps[0].live_len();
    assert_eq!(live, n);
    // Records 5..8 are puts in the middle; every header field offset, the key and the value.
    let fields = [0, 4, 8, 16, 24, 32, 36, 40, 44, 45, 46, 48, 55];
    for &(start, len) in &spans[5..8] {
        let mut offsets: Vec<usize> = fields.iter().map(|f| start + f).collect();
        offsets.push(start + len - 1);
        for at in offsets {
            std::fs::write(&seg.path, &pristine)?;
            flip(&seg.path, at);
            let rec = recovery::recover(&dir, &ring)?;
            let lost: Vec<&Finding> = rec.report.corruption().collect();
            assert_eq!(lost.len(), 1, "flip at {at}: {:?}", rec.report.findings);
            assert_eq!(rec.report.records_lost(), 1, "flip at {at}");
            assert_eq!(rec.maps[0].live_len(), live - 1, "flip at {at}");
            assert!(matches!(lost[0], Finding::Lost { start: s, .. } if *s == start as u64));
            // The evidence is kept, and the segment itself is not cut.
            assert_eq!(std::fs::metadata(&seg.path)?.len(), pristine.len() as u64);
            let _ = std::fs::remove_dir_all(dir.join(recovery::DAMAGED_DIR));
        }
    }
    // The last record: a torn tail, cut, not corruption.
    std::fs::write(&seg.path, &pristine)?;
    let (last, _) = *spans.last().ok_or("no records")?;
    flip(&seg.path, last + 20);
    let rec = recovery::recover(&dir, &ring)?;
    assert!(!rec.report.is_corrupt(), "{:?}", rec.report.findings);
    assert_eq!(rec.report.cuts(), vec![(seg.id, last as u64)]);
    Ok(())
}

/// A lone node refuses a flipped byte in the middle, naming the segment, the offset, the loss
/// and the flag; with `--wal-recovery skip-corrupt` it serves every other key, reports the loss
/// in `kv info`, and keeps the damaged segment after its start snapshot.
#[test]
fn a_lone_node_refuses_corruption_and_skip_corrupt_serves_the_rest() -> TestResult {
    let n = 300;
    let dir = written("wal-lone-refuses", n, &[])?;
    let seg = segments(&dir).pop().ok_or("no segment")?;
    let spans = record_spans(&seg.path, seg.id);
    let (start, _) = spans[spans.len() / 3];
    flip(&seg.path, start + 60);
    let err = refused(&dir, &[])?;
    for want in [
        "wal corruption",
        &format!("segment {}", seg.id),
        &format!("bytes {start}.."),
        "1 records lost",
        "--wal-recovery skip-corrupt",
    ] {
        assert!(err.contains(want), "missing {want:?} in: {err}");
    }
    assert_eq!(damaged_files(&dir), 1, "evidence kept at the refusal");
    let node = Node::start(
        "d1",
        &dir,
        &["--cores", "1", "--wal-recovery", "skip-corrupt"],
    )?;
    assert_eq!(count_present(&node, n)?, n - 1);
    let w = &info(&node)?["wal_health"];
    assert_eq!(w["records_lost"], 1);
    assert_eq!(w["damaged_segments"], 1);
    assert!(
        !seg.path.exists(),
        "replayed segment superseded by the snapshot"
    );
    assert!(
        damaged_files(&dir) >= 1,
        "evidence survives the start snapshot"
    );
    Ok(())
}

/// A zeroed 4 KiB block, a non-last segment truncated in the middle, a middle segment removed:
/// each is corruption with its loss counted; skip-corrupt keeps every record after it.
#[test]
fn zeroed_blocks_truncated_and_missing_segments_are_corruption() -> TestResult {
    let n = 24_000;
    let small = [
        "--wal-segment-bytes",
        "1048576",
        "--max-value-bytes",
        "65536",
    ];
    let dir = written("wal-blocks", n, &small)?;
    let segs = segments(&dir);
    assert!(segs.len() >= 3, "{} segments", segs.len());
    let ring = LocalRing::new("d1", 1);
    let pristine: Vec<Vec<u8>> = segs
        .iter()
        .map(|s| std::fs::read(&s.path).expect("read"))
        .collect();
    let restore = || {
        for (s, b) in segs.iter().zip(&pristine) {
            std::fs::write(&s.path, b).expect("restore");
        }
    };
    // Zero 4 KiB in the middle of the first segment.
    {
        let mut b = pristine[0].clone();
        b[200_000..204_096].iter_mut().for_each(|x| *x = 0);
        std::fs::write(&segs[0].path, &b)?;
        let rec = recovery::recover(&dir, &ring)?;
        let lost = rec.report.records_lost();
        assert!(
            (4096 / 160..=4096 / 140 + 2).contains(&lost),
            "{lost} records lost"
        );
        assert_eq!(rec.maps[0].live_len() as u64, n as u64 - lost);
        let _ = std::fs::remove_dir_all(dir.join(recovery::DAMAGED_DIR));
        restore();
    }
    // Truncate the first segment (not the chain's last) in the middle.
    {
        let half = record_spans(&segs[0].path, segs[0].id).len() / 2;
        let (at, _) = record_spans(&segs[0].path, segs[0].id)[half];
        std::fs::write(&segs[0].path, &pristine[0][..at + 7])?;
        let rec = recovery::recover(&dir, &ring)?;
        assert!(rec.report.is_corrupt(), "{:?}", rec.report.findings);
        assert!(rec.report.cuts().is_empty(), "never cut");
        let later: usize = record_spans(&segs[1].path, segs[1].id).len();
        assert!(rec.maps[0].live_len() >= later, "later segments replayed");
        let _ = std::fs::remove_dir_all(dir.join(recovery::DAMAGED_DIR));
        restore();
    }
    // Remove the middle segment: the lone node refuses, skip-corrupt serves the others.
    std::fs::remove_file(&segs[1].path)?;
    let err = refused(&dir, &small)?;
    assert!(
        err.contains(&format!("segment {}", segs[1].id)) && err.contains("missing"),
        "{err}"
    );
    let node = Node::start(
        "d1",
        &dir,
        &["--cores", "1", "--wal-recovery", "skip-corrupt"],
    )?;
    let present = count_present(&node, n)?;
    assert!(present < n && present > 0, "{present} of {n} present");
    assert_eq!(info(&node)?["wal_health"]["unknown_losses"], 1);
    Ok(())
}

/// Damage in the records of a start snapshot (written by the restart) is corruption as well.
#[test]
fn damaged_snapshot_records_are_found() -> TestResult {
    let n = 200;
    let dir = written("wal-snapshot", n, &[])?;
    // A clean restart: everything now lives in that start's snapshot.
    let mut node = Node::start("d1", &dir, &["--cores", "1"])?;
    assert_eq!(count_present(&node, n)?, n);
    node.terminate()?;
    let seg = segments(&dir).pop().ok_or("no segment")?;
    let spans = record_spans(&seg.path, seg.id);
    flip(&seg.path, spans[spans.len() / 2].0 + 50);
    let err = refused(&dir, &[])?;
    assert!(err.contains("1 records lost"), "{err}");
    Ok(())
}

/// A cluster member with a damaged WAL starts, answers no LOCAL_GET until an anti-entropy
/// round with every member filled its hole, and then has every key.
#[test]
fn a_cluster_member_is_repaired_before_it_serves_reads() -> TestResult {
    let n = 300;
    let mut nodes = cluster("wal-cluster", 3, &[])?;
    {
        let mut c = nodes[0].client();
        for i in 0..n {
            c.put(key(i).as_bytes(), VALUE.as_bytes())?;
        }
    }
    // Every key on node3 before it stops.
    poll("node3 to hold every key", START_DEADLINE, || {
        (0..n)
            .all(|i| local(&nodes[2], &key(i)).is_some())
            .then_some(())
    })?;
    nodes[2].terminate()?;
    let dir = nodes[2].dir.clone();
    let seg = segments(&dir).pop().ok_or("no segment")?;
    let spans = record_spans(&seg.path, seg.id);
    for k in [3, 2] {
        flip(&seg.path, spans[spans.len() * k / 5].0 + 30);
    }
    nodes[2].spawn()?;
    // Until repaired: refused or right, never missing.
    let repaired = poll("node3 repaired", START_DEADLINE, || {
        let mut c = nodes[2].client();
        let mut all = true;
        for i in 0..n {
            match c.get_local(key(i).as_bytes()) {
                Ok(Some(v)) => assert_eq!(v, VALUE.as_bytes()),
                Ok(None) => panic!("{} answered not-found while owing a repair", key(i)),
                Err(_) => all = false,
            }
        }
        all.then_some(())
    });
    repaired?;
    let w = info(&nodes[2])?;
    assert_eq!(w["wal_health"]["records_lost"], 2);
    assert_eq!(w["wal_health"]["repair_pending"], false);
    assert!(!dir
        .join("damaged")
        .join(recovery::REPAIR_PENDING_FILE)
        .exists());
    Ok(())
}

/// `kv scrub` re-reads sealed segments: damage made on disk while the node runs is found,
/// kept aside and rewritten from memory; nothing is lost.
#[test]
fn scrub_finds_damage_made_while_running() -> TestResult {
    let n = 20_000;
    let dir = data_dir("wal-scrub");
    let small = [
        "--cores",
        "1",
        "--wal-segment-bytes",
        "1048576",
        "--max-value-bytes",
        "65536",
    ];
    let node = Node::start("d1", &dir, &small)?;
    {
        let mut c = node.client();
        for i in 0..n {
            c.put(key(i).as_bytes(), VALUE.as_bytes())?;
        }
    }
    let out = node.kv(&["scrub"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let segs = segments(&dir);
    let first = segs.first().ok_or("no segment")?;
    let spans = record_spans(&first.path, first.id);
    flip(&first.path, spans[spans.len() / 2].0 + 51);
    let out = node.kv(&["scrub", "--json"]);
    assert_eq!(out.status.code(), Some(3), "{}", stdout(&out));
    let report: serde_json::Value = serde_json::from_str(stdout(&out).trim())?;
    assert_eq!(report["damaged_segments"], 1);
    assert_eq!(damaged_files(&dir), 1);
    assert_eq!(count_present(&node, n)?, n, "the map held everything");
    assert!(!first.path.exists(), "rewritten and removed");
    let w = &info(&node)?["wal_health"];
    assert_eq!(w["scrub_damaged_segments"], 1);
    // A later restart replays clean.
    drop(node);
    let node = Node::start("d1", &dir, &["--cores", "1"])?;
    assert_eq!(count_present(&node, n)?, n);
    Ok(())
}
