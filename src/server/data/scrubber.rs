//! One core's WAL scrubber: re-reads its sealed segments and verifies every record, because
//! corruption that happens while the node runs is only found when someone reads.
//!
//! Owns: a pass every `SCRUB_PASS_INTERVAL_MS` (and `kv scrub`: one now), reading at most
//! `SCRUB_BYTES_PER_SEC` in `SCRUB_READ_BYTES` reads on the blocking pool, from a low-share
//! task queue. Never decides what is damage (`record::scan` and `core::wal_damage` do).
//!
//! What it does with damage: the segment is kept under `damaged/` (as replay keeps one), the
//! finding is counted, and the core compacts at once. The map in memory holds every record the
//! damaged segment held (it was replayed or written while the node ran), so the compaction's
//! snapshot rewrites them into fresh segments and removes the damaged one: nothing is lost, no
//! peer is needed. Only a restart before that compaction finishes would meet the damage
//! again, and replay handles it then.

use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::core::wal_damage::{self, SegmentSeen};
use crate::limits::{SCRUB_BYTES_PER_SEC, SCRUB_PASS_INTERVAL_MS, SCRUB_READ_BYTES};
use crate::server::data::compactor;
use crate::server::runtime::CoreCtx;
use crate::storage::{record, recovery, Error};

/// What one pass over one core found.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Report {
    pub segments: u64,
    pub bytes: u64,
    pub damaged_segments: u64,
    pub findings: Vec<String>,
}

impl Report {
    pub fn add(&mut self, other: Report) {
        self.segments += other.segments;
        self.bytes += other.bytes;
        self.damaged_segments += other.damaged_segments;
        self.findings.extend(other.findings);
    }
}

/// Background passes until shutdown.
pub async fn run(ctx: Rc<CoreCtx>) {
    let every = Duration::from_millis(SCRUB_PASS_INTERVAL_MS);
    loop {
        futures_lite::future::or(glommio::timer::sleep(every), ctx.shutdown.wait()).await;
        if ctx.shutdown.is_set() {
            return;
        }
        let r = pass(&ctx).await;
        if r.damaged_segments > 0 {
            log::error!(
                "core {}: scrub found {} damaged segments",
                ctx.core,
                r.damaged_segments
            );
        }
    }
}

/// One pass over this core's sealed segments.
pub async fn pass(ctx: &Rc<CoreCtx>) -> Report {
    let mut report = Report::default();
    for (id, path) in ctx.shard.wal.sealed_segments() {
        if ctx.shutdown.is_set() {
            break;
        }
        let bytes = match read_paced(path.clone()).await {
            Ok(Some(b)) => b,
            Ok(None) => continue, // removed meanwhile by compaction
            Err(e) => {
                log::error!(
                    "core {}: scrub cannot read {}: {e}",
                    ctx.core,
                    path.display()
                );
                report
                    .findings
                    .push(format!("segment {id}: unreadable: {e}"));
                report.damaged_segments += 1;
                damaged(ctx, id, &path, 0).await;
                continue;
            }
        };
        report.segments += 1;
        report.bytes += bytes.len() as u64;
        let scan = record::scan(&bytes, id);
        let seen = SegmentSeen {
            id,
            dir: String::new(),
            start: None,
            snapshotted: Vec::new(),
            damage: scan.damage.clone(),
            tail: scan.tail.clone(),
        };
        // A sealed segment is never the last of its chain: a bad tail is damage too. The
        // second, clean segment stands for the later ones.
        let later = SegmentSeen {
            id: id + 1,
            damage: Vec::new(),
            tail: record::Tail {
                at: 0,
                stop: record::Stop::End,
                written_end: 0,
            },
            ..SegmentSeen::clone(&seen)
        };
        let found = wal_damage::classify(&[seen, later]);
        ctx.node.wal.scrubbed(bytes.len() as u64, 0);
        if found.is_corrupt() {
            ctx.node.wal.record(&found);
            ctx.node.wal.scrubbed(0, 1);
            report.damaged_segments += 1;
            report
                .findings
                .extend(found.findings.iter().map(|f| f.to_string()));
            let first = scan.damage.first().map_or(scan.tail.at, |d| d.start);
            damaged(ctx, id, &path, first).await;
        }
    }
    ctx.node.wal.scrub_pass_done();
    report
}

/// Keep a damaged segment aside and rewrite what it held from memory (module docs).
async fn damaged(ctx: &Rc<CoreCtx>, id: u64, path: &std::path::Path, offset: u64) {
    let (data_dir, p) = (ctx.node.wal.data_dir().to_path_buf(), path.to_path_buf());
    let kept = glommio::executor()
        .spawn_blocking(move || recovery::keep_aside(&data_dir, &p, offset))
        .await;
    if let Err(e) = kept {
        log::error!("core {}: cannot keep segment {id} aside: {e}", ctx.core);
    }
    match compactor::compact(ctx).await {
        Ok(r) => log::warn!(
            "core {}: segment {id} damaged on disk; rewritten from memory ({} records, {} \
             segments removed)",
            ctx.core,
            r.records,
            r.segments_removed
        ),
        Err(e) => log::error!(
            "core {}: segment {id} damaged; rewrite failed: {e}",
            ctx.core
        ),
    }
}

/// A segment's bytes read at `SCRUB_BYTES_PER_SEC` (`None`: the file is gone).
async fn read_paced(path: std::path::PathBuf) -> Result<Option<Vec<u8>>, Error> {
    let mut out = Vec::new();
    let mut offset = 0u64;
    loop {
        let started = Instant::now();
        let p = path.clone();
        let piece = glommio::executor()
            .spawn_blocking(move || read_piece(&p, offset))
            .await;
        let piece = match piece {
            Ok(Some(b)) => b,
            Ok(None) => return Ok(None),
            Err(e) => return Err(Error::io(&path, e)),
        };
        let n = piece.len();
        out.extend_from_slice(&piece);
        offset += n as u64;
        if n < SCRUB_READ_BYTES {
            return Ok(Some(out));
        }
        let budget = Duration::from_secs_f64(n as f64 / SCRUB_BYTES_PER_SEC as f64);
        if let Some(rest) = budget.checked_sub(started.elapsed()) {
            glommio::timer::sleep(rest).await;
        }
    }
}

fn read_piece(path: &std::path::Path, offset: u64) -> std::io::Result<Option<Vec<u8>>> {
    use std::io::{Read, Seek, SeekFrom};
    crate::failpoint::eio("scrub:read")?;
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    f.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::with_capacity(SCRUB_READ_BYTES);
    f.take(SCRUB_READ_BYTES as u64).read_to_end(&mut buf)?;
    Ok(Some(buf))
}
