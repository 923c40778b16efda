//! One core's online WAL compaction: the shell that carries out `storage::compaction`.
//!
//! Owns: checking every `COMPACTION_CHECK_MS` whether this core's WAL is due, and the steps of
//! a compaction. Never decides what is due or what may be dropped (that is
//! `storage::compaction`), and never blocks requests: it runs in a low-share task queue,
//! writes its snapshot in slices of `COMPACTION_SLICE_KEYS` keys through the ordinary WAL
//! append path (each slice awaited before the next, so its pending bytes stay bounded), and
//! deletes files on the blocking-thread pool.
//!
//! Steps, and why a crash between any two replays to the acknowledged state:
//! 1. seal: later records go to a new segment, the boundary; older segments are complete.
//! 2. copy the map's keys (the map changes while slices are written; each key's record is read
//!    when its slice is written, and anything written meanwhile is in the WAL after the
//!    boundary anyway: replay is last-write-wins, so order does not matter).
//! 3. append each key's record (purging tombstones past the grace that a completed
//!    anti-entropy round has seen on every replica), slice by slice, then every
//!    hint held (`storage::hints`) and every consensus state (`storage::acceptors`).
//! 4. wait until everything appended is fdatasync'ed — whatever `--fsync` says: the old
//!    segments are about to go, and the snapshot must survive power loss before they do.
//! 5. delete the segments before the boundary, then sync the directory.
//!
//! Until 5 the old segments are all there (a crash replays old + partial snapshot + new writes:
//! the same state); after 5 the synced snapshot holds everything they held.

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::failpoint;
use crate::limits::{COMPACTION_CHECK_MS, COMPACTION_RATIO, COMPACTION_SLICE_KEYS};
use crate::server::runtime::CoreCtx;
use crate::server::wall_clock_ms;
use crate::storage::{compaction, Error};

/// What one compaction did.
#[derive(Debug)]
pub struct Report {
    pub records: usize,
    pub purged: u64,
    pub segments_removed: usize,
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub took: Duration,
}

/// Check this core's WAL every `COMPACTION_CHECK_MS` and compact it when due; until shutdown.
pub async fn run(ctx: Rc<CoreCtx>) {
    let every = Duration::from_millis(COMPACTION_CHECK_MS);
    loop {
        futures_lite::future::or(glommio::timer::sleep(every), ctx.shutdown.wait()).await;
        if ctx.shutdown.is_set() {
            return;
        }
        let wal_bytes = ctx.shard.wal.stats().wal_bytes;
        let map_bytes = ctx.shard.record_bytes();
        let floor = ctx.node.wal_segment_bytes;
        if !compaction::due(wal_bytes, map_bytes, COMPACTION_RATIO, floor) {
            continue;
        }
        match compact(&ctx).await {
            Ok(r) => {
                ctx.metrics.compacted(r.purged);
                log::info!(
                    "core {}: compacted the wal {} -> {} bytes in {:.3}s ({} records, {} \
                     tombstones purged, {} segments removed)",
                    ctx.core,
                    r.bytes_before,
                    r.bytes_after,
                    r.took.as_secs_f64(),
                    r.records,
                    r.purged,
                    r.segments_removed
                );
            }
            Err(Error::ShuttingDown) => return,
            Err(e) => log::warn!("core {}: compaction abandoned ({e}); will retry", ctx.core),
        }
    }
}

/// One compaction (the module's steps).
pub async fn compact(ctx: &CoreCtx) -> Result<Report, Error> {
    let _turn = ctx.compaction_turn.acquire_permit(1).await;
    let started = Instant::now();
    let wal = &ctx.shard.wal;
    let bytes_before = wal.stats().wal_bytes;
    let boundary = wal.seal();
    failpoint::hit("compaction:sealed");
    let keys = ctx.shard.keys_where(|_| true);
    let now_ms = wall_clock_ms();
    let grace_ms = ctx.node.tombstone_grace_ms;
    // In a cluster, a tombstone is purged only once an anti-entropy round that completed with
    // every member started after it: then every replica has it, and no replica can bring the
    // deleted value back.
    let repaired_through_ms = if ctx.view().is_solo() {
        u64::MAX
    } else {
        ctx.node.repaired_through_ms.load(Ordering::Relaxed)
    };
    let mut purged = 0;
    for slice in keys.chunks(COMPACTION_SLICE_KEYS) {
        if ctx.shutdown.is_set() {
            // The old segments are untouched: nothing is lost by stopping here.
            return Err(Error::ShuttingDown);
        }
        let (last, p) = ctx
            .shard
            .snapshot_slice(slice, now_ms, grace_ms, repaired_through_ms);
        purged += p;
        if let Some(ticket) = last {
            wal.durable(ticket).await?;
            failpoint::hit("compaction:slice");
        }
        glommio::executor().yield_if_needed().await;
    }
    // Hints held are logged again too: their old records are about to go.
    ctx.shard.snapshot_hints();
    ctx.shard.snapshot_acceptors();
    // Replay may now take segments before the boundary as removed, not missing.
    wal.mark_snapshotted(boundary);
    wal.synced(wal.last_ticket()).await?;
    failpoint::hit("compaction:synced");
    let (segments_removed, _) = wal.remove_before(boundary).await?;
    failpoint::hit("compaction:removed");
    Ok(Report {
        records: keys.len() - purged as usize,
        purged,
        segments_removed,
        bytes_before,
        bytes_after: wal.stats().wal_bytes,
        took: started.elapsed(),
    })
}
