//! One core's WAL writer: O_DIRECT appends through io_uring (glommio `DmaFile`) with group
//! commit.
//!
//! Owns: the current segment file, the bytes appended but not yet written, and the tickets that
//! tell each request when its record is durable. Never decides policy about *what* to write:
//! callers append records; this file only gets them to disk in order.
//!
//! How a write reaches the disk: `append` encodes the record into the pending buffer and returns
//! a ticket. One flusher task takes everything pending, copies it behind the partial tail block
//! into one aligned DMA buffer and writes `align_up(len)` bytes at the tail block's offset
//! (the file's own `alignment()`, never a hard-coded 512/4096). Only one write is in flight, so
//! a later write to the same block can never land before an earlier one. The partial tail block
//! is kept in memory and rewritten, completed, by the next write. Requests that arrive while a
//! write is in flight share the next one: that is the group commit.
//!
//! Segments are fallocated and then zero-filled when created (~35 ms per 64 MiB here): ext4
//! refuses a non-blocking O_DIRECT write into *unwritten* extents (it may have to convert them
//! under the inode lock), so io_uring would punt every append to an io-wq worker thread — a
//! thread wake-up and two context switches per write, which the profile showed as the largest
//! cost of an unpipelined SET. Into written extents an append is a pure overwrite, issued inline.
//! The next segment is made in the background while the current one fills, so a roll does not
//! stall appends for the zero-fill (it cost p99 at high write rates); the price is one segment of
//! disk per core taken ahead. If it cannot be made (a full disk), the roll makes it and reports.
//!
//! Durability (`FsyncMode`): `None` acks once `append` has copied the record into the staging
//! file (`stage`: survives a process crash, not power loss), its O_DIRECT write following
//! within `STAGE_FLUSH_MS`; `Interval` also fdatasyncs every `WAL_SYNC_INTERVAL_MS`; `Batch` acks
//! once the group is on stable storage: its segments are opened with O_DSYNC, so each write
//! completes only when durable (one device round trip, not a write then an fdatasync). A failed write or fdatasync poisons the core (never retried:
//! the page state after a failed fsync is unknown). ENOSPC while creating a segment refuses new
//! writes and retries every `WAL_DISK_FULL_RETRY_MS`; the records already appended stay pending
//! and are written once space is freed.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use glommio::io::{DmaFile, OpenOptions};

use crate::core::version::Version;
use crate::limits::{
    STAGE_FLUSH_BYTES, STAGE_FLUSH_MS, WAL_DISK_FULL_RETRY_MS, WAL_GROUP_BYTES_MAX,
    WAL_RECORD_HEADER_BYTES, WAL_SEGMENT_BYTES_MAX, WAL_SEGMENT_BYTES_MIN, WAL_SYNC_INTERVAL_MS,
    WAL_ZERO_FILL_CHUNK_BYTES,
};
use crate::storage::record::{self, Kind};
use crate::storage::recovery::sync_dir;
use crate::storage::stage::Stage;
use crate::storage::{segment_file_name, Error};

/// When an acknowledged write is durable. See the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FsyncMode {
    None,
    Interval,
    Batch,
}

/// A position in this WAL's append order; durable once the flusher passes it.
pub type Ticket = u64;

#[derive(Clone, Debug)]
enum Fault {
    DiskFull,
    Poisoned(String),
}

/// A new chunk's buffer is sized to hold a whole staged flush (and a record past it), so the
/// appends that fill it never reallocate it: growing a large buffer copies it, a stall every
/// request in flight on the core waits for.
/// (Under `--fsync batch` a chunk is one group commit's worth, written at once: small.)
const CHUNK_BYTES_AHEAD: usize = STAGE_FLUSH_BYTES + 64 * 1024;
const CHUNK_BYTES_BATCH: usize = 4096;

struct Chunk {
    segment: u64,
    bytes: Vec<u8>,
    last_ticket: Ticket,
}

struct State {
    /// Segment that `append` is filling (may be ahead of the file being written).
    append_segment: u64,
    /// The segment before it in this chain (0: none yet), named by its `SegmentStart`.
    prev_segment: u64,
    append_seq: u64,
    append_segment_bytes: u64,
    appended: Ticket,
    pending: Vec<Chunk>,
    /// Bytes in `pending`.
    pending_bytes: usize,
    /// Highest ticket whose O_DIRECT write completed, and the segment it went to (every
    /// segment before that one is complete: the scrubber may read it).
    written: Ticket,
    written_segment: u64,
    /// Highest ticket copied into the staging file (`stage`) by `append`: acknowledged under
    /// `--fsync interval` and `none`, its segment write still to come. Every ticket below it
    /// is staged or written too (a record is staged only when the one before it is).
    staged: Ticket,
    /// Highest ticket known to be fdatasync'ed, and the highest one somebody waits to be.
    synced: Ticket,
    sync_wanted: Ticket,
    /// Tickets up to this one failed with `fault`.
    failed_through: Ticket,
    fault: Option<Fault>,
    shutting_down: bool,
    /// Record bytes in this core's live segments.
    wal_bytes: u64,
    /// Record bytes per live segment of this core, by segment id (compaction deletes the
    /// segments before a boundary and subtracts theirs).
    segments: std::collections::BTreeMap<u64, u64>,
    syncs: u64,
    writes: u64,
    /// Records per device write (group commit), counted in `GROUP_BUCKETS` (+ overflow).
    group_sizes: [u64; GROUP_BUCKETS.len() + 1],
}

/// One core's write-ahead log.
pub struct Wal {
    dir: PathBuf,
    mode: FsyncMode,
    /// Segment ids of this core advance by this step (ids stay unique across cores).
    id_step: u64,
    /// Roll to a new segment before one would grow past this (`WAL_SEGMENT_BYTES_MAX`).
    segment_bytes_max: u64,
    /// This chain's run and core (`record::SegmentStart`).
    run: u64,
    core: u32,
    state: RefCell<State>,
    /// The staging file (`--fsync interval` and `none`), from `open` on.
    stage: RefCell<Option<Stage>>,
    flusher: Cell<Option<Waker>>,
    waiters: RefCell<Vec<Waker>>,
}

/// Counters for `kv info` and metrics.
#[derive(Clone, Copy, Debug, Default)]
pub struct WalStats {
    pub wal_bytes: u64,
    pub syncs: u64,
    pub writes: u64,
    /// Records appended.
    pub records: u64,
    /// Records per device write, counted in `GROUP_BUCKETS` (upper bounds) plus overflow.
    pub group_sizes: [u64; GROUP_BUCKETS.len() + 1],
}

/// Upper bounds of the group-commit size buckets (records per device write).
pub const GROUP_BUCKETS: [u64; 11] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024];

impl Wal {
    /// A WAL whose first segment will be `first_segment` in `dir` (created if missing).
    pub fn new(
        dir: &Path,
        mode: FsyncMode,
        first_segment: u64,
        id_step: u64,
    ) -> Result<Wal, Error> {
        Wal::with_segment_size(dir, mode, first_segment, id_step, WAL_SEGMENT_BYTES_MAX)
    }

    /// As `new`, with another segment size (tests roll segments without writing 64 MiB).
    pub fn with_segment_size(
        dir: &Path,
        mode: FsyncMode,
        first_segment: u64,
        id_step: u64,
        segment_bytes_max: u64,
    ) -> Result<Wal, Error> {
        // The config checks that the largest record at its value limit fits a segment.
        assert!(segment_bytes_max >= WAL_SEGMENT_BYTES_MIN || cfg!(test));
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        Ok(Wal {
            dir: dir.to_path_buf(),
            mode,
            id_step,
            segment_bytes_max,
            run: first_segment,
            core: 0,
            state: RefCell::new(State {
                append_segment: first_segment,
                prev_segment: 0,
                append_seq: 0,
                append_segment_bytes: 0,
                appended: 0,
                pending: Vec::new(),
                pending_bytes: 0,
                written: 0,
                written_segment: 0,
                staged: 0,
                synced: 0,
                sync_wanted: 0,
                failed_through: 0,
                fault: None,
                shutting_down: false,
                wal_bytes: 0,
                segments: std::collections::BTreeMap::new(),
                syncs: 0,
                writes: 0,
                group_sizes: [0; GROUP_BUCKETS.len() + 1],
            }),
            stage: RefCell::new(None),
            flusher: Cell::new(None),
            waiters: RefCell::new(Vec::new()),
        })
    }

    /// Name this WAL's chain: run `run` (the node's first segment id this start), core `core`
    /// (its first segment is `run + core`).
    pub fn with_chain(mut self, run: u64, core: u32) -> Wal {
        assert_eq!(self.state.borrow().append_segment, run + u64::from(core));
        self.run = run;
        self.core = core;
        self
    }

    /// This chain's first segment (the boundary its start snapshot names).
    pub fn chain_first(&self) -> u64 {
        self.run + u64::from(self.core)
    }

    /// Append a `Snapshotted(boundary)` marker: every record this chain needs from before
    /// segment `boundary` is now in segments from it on (the caller syncs it).
    pub fn mark_snapshotted(&self, boundary: u64) -> Ticket {
        self.append(
            Kind::Snapshotted,
            Version::ZERO,
            &[],
            &boundary.to_le_bytes(),
        )
    }

    /// Whether a new record would be accepted now (check before changing the map).
    pub fn check_writable(&self) -> Result<(), Error> {
        let st = self.state.borrow();
        if st.shutting_down {
            return Err(Error::ShuttingDown);
        }
        match &st.fault {
            None => Ok(()),
            Some(Fault::DiskFull) => Err(Error::DiskFull {
                dir: self.dir.clone(),
            }),
            Some(Fault::Poisoned(cause)) => Err(Error::Poisoned {
                cause: cause.clone(),
            }),
        }
    }

    /// Append one record; the returned ticket becomes durable later (`durable(ticket)`).
    ///
    /// Under `--fsync interval` and `none` the record (with the segment-start record before
    /// it, if it opens a segment) is copied into the staging file here, so it is acknowledged
    /// at once; the flusher is woken only when a segment write is due now (the staging file
    /// could not take the record, `STAGE_FLUSH_BYTES` gathered) or to start the
    /// `STAGE_FLUSH_MS` clock of the first record pending.
    pub fn append(&self, kind: Kind, version: Version, key: &[u8], value: &[u8]) -> Ticket {
        let len = record::encoded_len(key, value) as u64;
        let start_len = (WAL_RECORD_HEADER_BYTES + record::SEGMENT_START_BYTES) as u64;
        let mut st = self.state.borrow_mut();
        let was_idle = st.pending.is_empty();
        // where this append's bytes begin: (chunk, offset in it)
        let mark = (
            st.pending.len().saturating_sub(1),
            st.pending.last().map_or(0, |c| c.bytes.len()),
        );
        if st.append_segment_bytes > 0 && st.append_segment_bytes + len > self.segment_bytes_max {
            st.append_segment += self.id_step;
            st.append_seq = 0;
            st.append_segment_bytes = 0;
        }
        if st.append_seq == 0 {
            // A segment's first record says where it sits in the chain (`core::wal_damage`).
            let start = record::SegmentStart {
                prev: st.prev_segment,
                run: self.run,
                core: self.core,
                cores: self.id_step as u32,
            };
            st.prev_segment = st.append_segment;
            self.encode_into(
                &mut st,
                Kind::SegmentStart,
                Version::ZERO,
                &[],
                &start.encode(),
            );
            st.wal_bytes += start_len;
        }
        st.appended += 1;
        st.wal_bytes += len;
        let ticket = st.appended;
        self.encode_into(&mut st, kind, version, key, value);
        if let Some(chunk) = st.pending.last_mut() {
            chunk.last_ticket = ticket;
        }
        self.stage_appended(&mut st, mark, ticket);
        let wake = was_idle || self.write_due(&st);
        drop(st);
        if wake {
            if let Some(w) = self.flusher.take() {
                w.wake();
            }
        }
        ticket
    }

    /// Copy the bytes appended since `mark` (the last record's ticket `ticket`) into the
    /// staging file, when there is one and every record before it is staged or written (so
    /// replay, which takes staged records only where they follow the segments without a gap,
    /// has them all). Otherwise the record waits for its segment write (`write_due`).
    fn stage_appended(&self, st: &mut State, mark: (usize, usize), ticket: Ticket) {
        if st.staged.max(st.written) + 1 < ticket {
            return;
        }
        let mut stage = self.stage.borrow_mut();
        let Some(stage) = stage.as_mut() else {
            return;
        };
        // An append writes at most two records (a segment start and its own), so its bytes
        // lie in at most three chunks: the one it began in and two new ones.
        let (first, offset) = mark;
        let mut groups: [&[u8]; 3] = [&[]; 3];
        if st.pending.len() > first + groups.len() {
            return; // (cannot happen) not staged: it waits for its segment write
        }
        let mut n = 0;
        for (i, chunk) in st.pending.iter().enumerate().skip(first).take(groups.len()) {
            let from = if i == first { offset } else { 0 };
            if from < chunk.bytes.len() {
                groups[n] = &chunk.bytes[from..];
                n += 1;
            }
        }
        if stage.put(&groups[..n], ticket, st.written) {
            // In the page cache: a crash of the process keeps it (not yet a power loss).
            crate::failpoint::hit("wal:staged");
            st.staged = ticket;
        }
    }

    /// Whether the flusher must write what is pending now rather than at `STAGE_FLUSH_MS`:
    /// there is no staging (`--fsync batch`), a record is neither staged nor written, or
    /// `STAGE_FLUSH_BYTES` have gathered.
    fn write_due(&self, st: &State) -> bool {
        !st.pending.is_empty()
            && (self.mode == FsyncMode::Batch
                || st.staged.max(st.written) < st.appended
                || st.pending_bytes >= STAGE_FLUSH_BYTES)
    }

    /// Encode one record into the pending chunk of the current segment.
    fn encode_into(&self, st: &mut State, kind: Kind, version: Version, key: &[u8], value: &[u8]) {
        let len = record::encoded_len(key, value) as u64;
        let (segment, seq) = (st.append_segment, st.append_seq);
        st.append_seq += 1;
        st.append_segment_bytes += len;
        st.pending_bytes += len as usize;
        *st.segments.entry(segment).or_default() += len;
        let reuse = matches!(st.pending.last(), Some(c) if c.segment == segment
            && c.bytes.len() < WAL_GROUP_BYTES_MAX);
        if !reuse {
            let last_ticket = st.appended;
            st.pending.push(Chunk {
                segment,
                bytes: Vec::with_capacity(if self.mode == FsyncMode::Batch {
                    CHUNK_BYTES_BATCH
                } else {
                    CHUNK_BYTES_AHEAD
                }),
                last_ticket,
            });
        }
        if let Some(chunk) = st.pending.last_mut() {
            record::encode(&mut chunk.bytes, segment, seq, kind, version, key, value);
        }
    }

    /// Send the next record to a new segment (unless the current one is still empty) and return
    /// that segment's id: every segment of this WAL before it is complete (compaction's
    /// boundary).
    pub fn seal(&self) -> u64 {
        let mut st = self.state.borrow_mut();
        if st.append_segment_bytes > 0 {
            st.append_segment += self.id_step;
            st.append_seq = 0;
            st.append_segment_bytes = 0;
        }
        st.append_segment
    }

    /// Delete every segment of this WAL before `boundary` (their records are superseded by a
    /// synced snapshot after it), on the blocking-thread pool, then sync the directory.
    /// Returns how many segments and record bytes went.
    pub async fn remove_before(&self, boundary: u64) -> Result<(usize, u64), Error> {
        let old: Vec<(u64, u64)> = {
            let st = self.state.borrow();
            assert!(
                boundary <= st.append_segment,
                "boundary {boundary} not sealed"
            );
            st.segments
                .range(..boundary)
                .map(|(id, b)| (*id, *b))
                .collect()
        };
        let dir = self.dir.clone();
        let ids: Vec<u64> = old.iter().map(|(id, _)| *id).collect();
        glommio::executor()
            .spawn_blocking(move || -> Result<(), Error> {
                for id in ids {
                    let path = dir.join(segment_file_name(id));
                    match std::fs::remove_file(&path) {
                        Ok(()) => crate::failpoint::hit("compaction:removing"),
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(Error::io(&path, e)),
                    }
                }
                sync_dir(&dir)
            })
            .await?;
        let mut st = self.state.borrow_mut();
        let mut bytes = 0;
        for (id, b) in &old {
            st.segments.remove(id);
            bytes += b;
        }
        st.wal_bytes -= bytes;
        Ok((old.len(), bytes))
    }

    /// This WAL's segments that are complete on the device (the writer has moved past them),
    /// oldest first: what the scrubber may verify.
    pub fn sealed_segments(&self) -> Vec<(u64, PathBuf)> {
        let st = self.state.borrow();
        st.segments
            .range(..st.written_segment.min(st.append_segment))
            .map(|(id, _)| (*id, self.dir.join(segment_file_name(*id))))
            .collect()
    }

    /// The highest ticket issued so far.
    pub fn last_ticket(&self) -> Ticket {
        self.state.borrow().appended
    }

    /// Resolves once `ticket` is durable under the configured mode, or failed.
    pub fn durable(self: &Rc<Self>, ticket: Ticket) -> Durable {
        Durable {
            wal: self.clone(),
            ticket,
            need_sync: false,
        }
    }

    /// Resolves once `ticket` is written *and* fdatasync'ed, whatever the mode.
    pub fn synced(self: &Rc<Self>, ticket: Ticket) -> Durable {
        {
            let mut st = self.state.borrow_mut();
            st.sync_wanted = st.sync_wanted.max(ticket);
        }
        if let Some(w) = self.flusher.take() {
            w.wake();
        }
        Durable {
            wal: self.clone(),
            ticket,
            need_sync: true,
        }
    }

    pub fn stats(&self) -> WalStats {
        let st = self.state.borrow();
        WalStats {
            wal_bytes: st.wal_bytes,
            syncs: st.syncs,
            writes: st.writes,
            records: st.appended,
            group_sizes: st.group_sizes,
        }
    }

    /// Stop accepting records; the flusher writes what is pending, syncs and returns.
    pub fn shut_down(&self) {
        self.state.borrow_mut().shutting_down = true;
        if let Some(w) = self.flusher.take() {
            w.wake();
        }
    }

    fn wake_waiters(&self) {
        for w in self.waiters.borrow_mut().drain(..) {
            w.wake();
        }
    }

    fn fail_pending(&self, fault: Fault) {
        let mut st = self.state.borrow_mut();
        st.failed_through = st.appended;
        st.fault = Some(fault);
        drop(st);
        self.wake_waiters();
    }

    /// Create and preallocate the first segment, so a full disk or a bad data dir fails the
    /// start, not the first write; under `--fsync interval` and `none`, create the staging
    /// file. Hand the result to `run_flusher`.
    pub async fn open(&self) -> Result<SegmentWriter, Error> {
        let mut out = SegmentWriter::default();
        let first = self.state.borrow().append_segment;
        out.dsync = self.mode == FsyncMode::Batch;
        out.id_step = self.id_step;
        out.roll(&self.dir, first, self.segment_bytes_max).await?;
        if self.mode != FsyncMode::Batch {
            *self.stage.borrow_mut() = Some(Stage::create(&self.dir, self.run)?);
        }
        Ok(out)
    }

    /// The flusher task: run it once per core, until `shut_down`.
    ///
    /// Under `--fsync interval` and `none`, `append` has already staged (and so acknowledged)
    /// each record; the segment write waits until `STAGE_FLUSH_BYTES` or `STAGE_FLUSH_MS` has
    /// gathered (or a record could not be staged, or a sync is wanted, or shutdown), so one
    /// large O_DIRECT write carries many requests' records, and this task wakes once per
    /// write, not once per request. Under `batch` (no staging) each group's write is its
    /// acknowledgement: what is appended while one write is in flight goes in the next.
    pub async fn run_flusher(self: Rc<Self>, mut writer: SegmentWriter) -> Result<(), Error> {
        let mut last_sync = Instant::now();
        let mut pending_since: Option<Instant> = None;
        let mut retry_at: Option<Instant> = None;
        let flush_after = Duration::from_millis(STAGE_FLUSH_MS);
        let interval = Duration::from_millis(WAL_SYNC_INTERVAL_MS);
        loop {
            let now = Instant::now();
            if let Some(at) = retry_at {
                if now < at {
                    // disk full: nothing can move before the next try
                    glommio::timer::sleep(at - now).await;
                    continue;
                }
                retry_at = None;
            }
            let (has_pending, due, shutting_down, sync_wanted, unsynced) = {
                let st = self.state.borrow();
                (
                    !st.pending.is_empty(),
                    self.write_due(&st),
                    st.shutting_down,
                    st.sync_wanted > st.synced,
                    st.written > st.synced,
                )
            };
            let since = if has_pending {
                *pending_since.get_or_insert(now)
            } else {
                pending_since = None;
                now
            };
            if has_pending && (due || shutting_down || sync_wanted || now >= since + flush_after) {
                // Let every task woken before this one finish its turn first, so what they
                // append joins this write (larger groups under `batch`).
                futures_lite::future::yield_now().await;
                let chunks = {
                    let mut st = self.state.borrow_mut();
                    st.pending_bytes = 0;
                    std::mem::take(&mut st.pending)
                };
                pending_since = None;
                let sync = sync_wanted
                    || (self.mode == FsyncMode::Interval && last_sync.elapsed() >= interval);
                let top_segment = chunks.last().map_or(0, |c| c.segment);
                let result = self.write_chunks(&mut writer, chunks).await;
                let synced = match (&result, sync && !writer.dsync) {
                    (Ok(_), true) => Some(writer.sync(&self).await),
                    _ => None,
                };
                self.written(
                    &writer,
                    result,
                    top_segment,
                    synced,
                    &mut retry_at,
                    &mut last_sync,
                )?;
                continue;
            }
            let interval_due = self.mode == FsyncMode::Interval && last_sync.elapsed() >= interval;
            if !has_pending && unsynced && (shutting_down || sync_wanted || interval_due) {
                self.sync(&mut writer).await?;
                last_sync = Instant::now();
                continue;
            }
            if !has_pending && shutting_down {
                if let Some(f) = writer.file.take() {
                    let _ = f.close().await;
                }
                return Ok(());
            }
            // With records pending the interval sync goes with their write (never later than
            // `STAGE_FLUSH_MS`); waking for it before then would only spin.
            let wake_at = if has_pending {
                Some(since + flush_after)
            } else {
                (self.mode == FsyncMode::Interval && unsynced).then(|| last_sync + interval)
            };
            self.wait_for_work(wake_at, has_pending).await;
        }
    }

    /// A segment write (and the sync after it) completed: record it and tell the waiters.
    /// Disk full puts the chunks back in front of those pending, to be retried; any other
    /// failure poisons this WAL.
    fn written(
        &self,
        writer: &SegmentWriter,
        result: Result<Ticket, (Error, Vec<Chunk>)>,
        top_segment: u64,
        synced: Option<Result<(), Error>>,
        retry_at: &mut Option<Instant>,
        last_sync: &mut Instant,
    ) -> Result<(), Error> {
        match result {
            Ok(last) => {
                // On the device, not yet synced, nobody told: a crash here loses nothing
                // acknowledged.
                crate::failpoint::hit("wal:written");
                let mut st = self.state.borrow_mut();
                st.written = st.written.max(last);
                st.written_segment = st.written_segment.max(top_segment);
                if writer.dsync {
                    // O_DSYNC: the write completed only once its data (and the metadata to
                    // read it back) was on stable storage: no separate fdatasync.
                    st.synced = st.written;
                    st.syncs += 1;
                }
                if matches!(st.fault, Some(Fault::DiskFull)) {
                    log::info!("wal {}: disk space available again", self.dir.display());
                    st.fault = None;
                }
                drop(st);
                match synced {
                    Some(Err(e)) => {
                        log::error!("wal {} poisoned: {e}", self.dir.display());
                        self.fail_pending(Fault::Poisoned(e.to_string()));
                        return Err(e);
                    }
                    Some(Ok(())) => {
                        self.state.borrow_mut().synced = last;
                        *last_sync = Instant::now();
                    }
                    None => {}
                }
                self.wake_waiters();
                Ok(())
            }
            Err((e, unwritten)) if matches!(e, Error::DiskFull { .. }) => {
                log::error!("{e}");
                {
                    let mut st = self.state.borrow_mut();
                    let mut rest = unwritten;
                    st.pending_bytes += rest.iter().map(|c| c.bytes.len()).sum::<usize>();
                    rest.append(&mut st.pending);
                    st.pending = rest;
                }
                self.fail_pending(Fault::DiskFull);
                *retry_at = Some(Instant::now() + Duration::from_millis(WAL_DISK_FULL_RETRY_MS));
                Ok(())
            }
            Err((e, _)) => {
                log::error!("wal {} poisoned: {e}", self.dir.display());
                self.fail_pending(Fault::Poisoned(e.to_string()));
                Err(e)
            }
        }
    }

    /// fdatasync everything written so far; a failure poisons this WAL (never retried).
    async fn sync(&self, out: &mut SegmentWriter) -> Result<(), Error> {
        let written = self.state.borrow().written;
        if let Err(e) = out.sync(self).await {
            log::error!("wal {} poisoned: {e}", self.dir.display());
            self.fail_pending(Fault::Poisoned(e.to_string()));
            return Err(e);
        }
        self.state.borrow_mut().synced = written;
        self.wake_waiters();
        Ok(())
    }

    /// Wait until a segment write is due (`write_due`; with nothing pending known, any
    /// record pending), shutdown began, a sync is wanted, or `wake_at` (an interval sync, the
    /// flush of staged records) comes.
    async fn wait_for_work(&self, wake_at: Option<Instant>, knows_pending: bool) {
        let work = WorkReady {
            wal: self,
            knows_pending,
        };
        match wake_at {
            Some(at) => {
                let left = at.saturating_duration_since(Instant::now());
                futures_lite::future::or(work, glommio::timer::sleep(left)).await;
            }
            None => work.await,
        }
    }

    /// Write `chunks` in order; on failure return the chunks not yet written.
    async fn write_chunks(
        &self,
        out: &mut SegmentWriter,
        chunks: Vec<Chunk>,
    ) -> Result<Ticket, (Error, Vec<Chunk>)> {
        let mut last = 0;
        // Tickets are consecutive: a chunk's group size is its last ticket minus the previous.
        let mut prev = self.state.borrow().written;
        let mut iter = chunks.into_iter();
        while let Some(chunk) = iter.next() {
            if out.segment != Some(chunk.segment) {
                if let Err(e) = out
                    .roll(&self.dir, chunk.segment, self.segment_bytes_max)
                    .await
                {
                    let mut rest = vec![chunk];
                    rest.extend(iter);
                    return Err((e, rest));
                }
            }
            if let Err(e) = out.write(&chunk.bytes).await {
                return Err((e, Vec::new()));
            }
            {
                let mut st = self.state.borrow_mut();
                st.writes += 1;
                let records = chunk.last_ticket.saturating_sub(prev);
                prev = chunk.last_ticket;
                let bucket = GROUP_BUCKETS
                    .iter()
                    .position(|b| records <= *b)
                    .unwrap_or(GROUP_BUCKETS.len());
                st.group_sizes[bucket] += 1;
            }
            last = chunk.last_ticket;
        }
        Ok(last)
    }
}

/// The file currently written and its partial tail block (owned by the flusher).
#[derive(Default)]
pub struct SegmentWriter {
    file: Option<DmaFile>,
    segment: Option<u64>,
    path: PathBuf,
    /// Offset of the first block not yet completely written.
    block_pos: u64,
    /// Bytes of that block already written (a prefix of it).
    tail: Vec<u8>,
    /// Segments are opened with O_DSYNC (`--fsync batch`): every write is durable when it
    /// completes, one device round trip instead of a write and an fdatasync.
    dsync: bool,
    /// Segment ids of this core advance by this much.
    id_step: u64,
    /// The next segment, created and zero-filled in the background while this one fills.
    spare: Option<(u64, glommio::Task<Result<DmaFile, Error>>)>,
}

/// Create segment `segment` in `dir`: fallocated, zero-filled (see the module doc), its
/// directory entry synced. Nothing is left behind when it fails.
async fn create_segment(
    dir: PathBuf,
    segment: u64,
    preallocate: u64,
    dsync: bool,
) -> Result<DmaFile, Error> {
    let path = dir.join(segment_file_name(segment));
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(if dsync { libc::O_DSYNC } else { 0 })
        .dma_open(&path)
        .await
        .map_err(|e| Error::io(&path, e.into()))?;
    if let Err(e) = file.pre_allocate(preallocate, false).await {
        let e: std::io::Error = e.into();
        let _ = file.close().await;
        let _ = std::fs::remove_file(&path);
        let full =
            e.raw_os_error() == Some(libc::ENOSPC) || e.kind() == std::io::ErrorKind::StorageFull;
        return Err(if full {
            Error::DiskFull { dir }
        } else {
            Error::io(&path, e)
        });
    }
    if let Err(e) = zero_fill(&file, preallocate).await {
        let _ = file.close().await;
        let _ = std::fs::remove_file(&path);
        return Err(Error::io(&path, e));
    }
    // On the blocking pool: a directory fsync waits for the file system's journal, and the
    // executor must keep serving meanwhile.
    let synced = {
        let dir = dir.clone();
        glommio::executor()
            .spawn_blocking(move || sync_dir(&dir))
            .await
    };
    if let Err(e) = synced {
        let _ = file.close().await;
        let _ = std::fs::remove_file(&path);
        return Err(e);
    }
    Ok(file)
}

/// Write zeros over the first `len` bytes of a freshly fallocated segment, so its extents are
/// written (see the module doc). The space is already reserved, so this cannot hit ENOSPC.
async fn zero_fill(file: &DmaFile, len: u64) -> std::io::Result<()> {
    let zeroed = |size: usize| {
        let mut buf = file.alloc_dma_buffer(size);
        buf.as_bytes_mut().fill(0);
        Rc::new(buf)
    };
    let whole = zeroed(WAL_ZERO_FILL_CHUNK_BYTES);
    let mut pos = 0;
    while pos < len {
        let rest = file.align_up(len - pos) as usize;
        let buf = if rest < WAL_ZERO_FILL_CHUNK_BYTES {
            zeroed(rest)
        } else {
            whole.clone()
        };
        let written = file.write_rc_at(buf, pos).await?;
        if written == 0 {
            return Err(std::io::Error::other(
                "zero-length write while zero-filling",
            ));
        }
        pos += written as u64;
    }
    Ok(())
}

impl SegmentWriter {
    async fn roll(&mut self, dir: &Path, segment: u64, preallocate: u64) -> Result<(), Error> {
        if let Some(old) = self.file.take() {
            old.fdatasync()
                .await
                .map_err(|e| Error::io(&self.path, e.into()))?;
            let _ = old.close().await;
        }
        let path = dir.join(segment_file_name(segment));
        let spare = match self.spare.take() {
            Some((id, task)) if id == segment => task.await.ok(),
            Some((id, task)) => {
                // Not the segment wanted (cannot happen while ids advance by `id_step`).
                if let Ok(f) = task.await {
                    let _ = f.close().await;
                }
                let _ = std::fs::remove_file(dir.join(segment_file_name(id)));
                None
            }
            None => None,
        };
        let file = match spare {
            Some(f) => f,
            // No spare (the first segment) or it could not be made (a full disk): make it
            // now, so the error reaches the writer.
            None => create_segment(dir.to_path_buf(), segment, preallocate, self.dsync).await?,
        };
        log::debug!("wal: opened segment {}", path.display());
        let next = segment + self.id_step.max(1);
        let (dir, dsync) = (dir.to_path_buf(), self.dsync);
        let task = glommio::spawn_local(async move {
            let r = create_segment(dir, next, preallocate, dsync).await;
            if let Err(e) = &r {
                log::debug!("wal: spare segment {next} not made ahead: {e}");
            }
            r
        });
        self.spare = Some((next, task));
        self.file = Some(file);
        self.segment = Some(segment);
        self.path = path;
        self.block_pos = 0;
        self.tail.clear();
        Ok(())
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let Some(file) = self.file.as_ref() else {
            return Err(Error::io(
                &self.path,
                std::io::Error::other("no open segment"),
            ));
        };
        let len = self.tail.len() + bytes.len();
        let size = file.align_up(len as u64) as usize;
        let mut buf = file.alloc_dma_buffer(size);
        let dst = buf.as_bytes_mut();
        dst[..self.tail.len()].copy_from_slice(&self.tail);
        dst[self.tail.len()..len].copy_from_slice(bytes);
        dst[len..].fill(0);
        let full = file.align_down(len as u64) as usize;
        let new_tail = dst[full..len].to_vec();
        let written = file
            .write_at(buf, self.block_pos)
            .await
            .map_err(|e| Error::io(&self.path, e.into()))?;
        if written < size {
            return Err(Error::io(
                &self.path,
                std::io::Error::other("short O_DIRECT write"),
            ));
        }
        self.block_pos += full as u64;
        self.tail = new_tail;
        Ok(())
    }

    async fn sync(&mut self, wal: &Wal) -> Result<(), Error> {
        if let Some(file) = self.file.as_ref() {
            file.fdatasync()
                .await
                .map_err(|e| Error::io(&self.path, e.into()))?;
            wal.state.borrow_mut().syncs += 1;
        }
        Ok(())
    }
}

struct WorkReady<'a> {
    wal: &'a Wal,
    /// The flusher already saw records pending (and waits for their flush time).
    knows_pending: bool,
}

impl Future for WorkReady<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let st = self.wal.state.borrow();
        if (!self.knows_pending && !st.pending.is_empty())
            || self.wal.write_due(&st)
            || st.shutting_down
            || st.sync_wanted > st.synced
        {
            return Poll::Ready(());
        }
        drop(st);
        self.wal.flusher.set(Some(cx.waker().clone()));
        Poll::Pending
    }
}

/// Resolves once a ticket is durable (`Ok`) or its write failed (`Err`).
pub struct Durable {
    wal: Rc<Wal>,
    ticket: Ticket,
    need_sync: bool,
}

impl Durable {
    /// Whether the ticket is durable now (`Some(Ok)`), failed (`Some(Err)`), or not yet.
    pub fn now(&self) -> Option<Result<(), Error>> {
        let st = self.wal.state.borrow();
        let done = if self.need_sync || self.wal.mode == FsyncMode::Batch {
            st.synced
        } else {
            st.written.max(st.staged)
        };
        if self.ticket <= done {
            return Some(Ok(()));
        }
        if self.ticket <= st.failed_through {
            return Some(Err(match &st.fault {
                Some(Fault::Poisoned(c)) => Error::Poisoned { cause: c.clone() },
                _ => Error::DiskFull {
                    dir: self.wal.dir.clone(),
                },
            }));
        }
        None
    }
}

impl Future for Durable {
    type Output = Result<(), Error>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(done) = self.now() {
            return Poll::Ready(done);
        }
        self.wal.waiters.borrow_mut().push(cx.waker().clone());
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::ring::LocalRing;
    use crate::storage::recovery;

    use crate::limits::STAGE_FLUSH_MS;
    use crate::on_executor as run;

    fn v(hlc: u64) -> Version {
        Version { hlc, writer: 9 }
    }

    /// `--fsync interval` syncs every interval even when writes never stop (the flusher is
    /// never idle then).
    #[test]
    fn interval_syncs_happen_under_sustained_load() {
        let dir = crate::test_dir("wal-interval-load");
        let cd = dir.join(crate::storage::core_dir_name(0));
        run(move || async move {
            let wal = Rc::new(Wal::new(&cd, FsyncMode::Interval, 1, 1).expect("wal"));
            let out = wal.open().await.expect("open");
            let flusher = glommio::spawn_local(wal.clone().run_flusher(out));
            // Appends keep arriving while each write is in flight (as from many connections,
            // each waiting on its socket now and then, which lets the reactor complete the
            // writes), so records are pending whenever a write completes: the flusher is never
            // idle.
            // Without the fix it never synced; poll for the first sync, with a deadline.
            let deadline = Instant::now() + Duration::from_millis(WAL_SYNC_INTERVAL_MS * 10);
            let mut i = 0u64;
            while wal.stats().syncs == 0 && Instant::now() < deadline {
                i += 1;
                wal.append(Kind::Put, v(i), format!("k{}", i % 100).as_bytes(), b"v");
                if i % 64 == 0 {
                    glommio::timer::sleep(Duration::from_micros(1)).await;
                } else {
                    futures_lite::future::yield_now().await;
                }
            }
            let syncs = wal.stats().syncs;
            assert!(
                syncs >= 1,
                "no sync in 10 intervals of sustained writes ({i} appends, {} writes)",
                wal.stats().writes
            );
            wal.shut_down();
            flusher.await.expect("flusher");
        });
    }

    /// The extents of a segment as (length, flags), by the FIEMAP ioctl; None where the
    /// filesystem has no FIEMAP.
    fn extents(path: &Path) -> Option<Vec<(u64, u32)>> {
        use std::os::fd::AsRawFd;
        const FS_IOC_FIEMAP: libc::c_ulong = 0xC020_660B;
        const SLOTS: usize = 64;
        #[repr(C)]
        #[derive(Clone, Copy, Default)]
        struct Extent {
            logical: u64,
            physical: u64,
            length: u64,
            reserved64: [u64; 2],
            flags: u32,
            reserved: [u32; 3],
        }
        #[repr(C)]
        struct Map {
            start: u64,
            length: u64,
            flags: u32,
            mapped: u32,
            count: u32,
            reserved: u32,
            extents: [Extent; SLOTS],
        }
        let file = std::fs::File::open(path).expect("open segment");
        let mut map = Map {
            start: 0,
            length: u64::MAX,
            flags: 1, // FIEMAP_FLAG_SYNC
            mapped: 0,
            count: SLOTS as u32,
            reserved: 0,
            extents: [Extent::default(); SLOTS],
        };
        // SAFETY: `map` is a properly sized, writable fiemap with room for `count` extents.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), FS_IOC_FIEMAP as _, &mut map) };
        if rc != 0 {
            return None;
        }
        Some(
            map.extents[..map.mapped as usize]
                .iter()
                .map(|e| (e.length, e.flags))
                .collect(),
        )
    }

    /// A new segment holds no unwritten extents, so appends are pure overwrites that io_uring
    /// issues inline instead of punting each one to an io-wq worker thread.
    #[test]
    fn new_segment_is_written_not_just_reserved() {
        const UNWRITTEN: u32 = 0x800; // FIEMAP_EXTENT_UNWRITTEN
        let dir = crate::test_dir("wal-zero-fill");
        let cd = dir.join(crate::storage::core_dir_name(0));
        let size = 2 * WAL_ZERO_FILL_CHUNK_BYTES as u64 + 8192;
        let path = cd.join(segment_file_name(1));
        let seg = path.clone();
        run(move || async move {
            let wal = Wal::with_segment_size(&cd, FsyncMode::None, 1, 1, size).expect("wal");
            let _out = wal.open().await.expect("open");
            let Some(extents) = extents(&seg) else {
                eprintln!("skipped: no FIEMAP on this filesystem");
                return;
            };
            let covered: u64 = extents.iter().map(|e| e.0).sum();
            assert!(covered >= size, "extents cover {covered} of {size} bytes");
            assert!(
                extents.iter().all(|e| e.1 & UNWRITTEN == 0),
                "unwritten extents remain: {extents:?}"
            );
        });
        let bytes = std::fs::read(&path).expect("read segment");
        assert_eq!(bytes.len() as u64, size);
        assert!(bytes.iter().all(|b| *b == 0));
    }

    /// The next segment is made (allocated, zero-filled) ahead, and the roll writes into it.
    #[test]
    fn the_next_segment_is_made_ahead_and_used_by_the_roll() {
        let dir = crate::test_dir("wal-spare");
        let cd = dir.join(crate::storage::core_dir_name(0));
        let size = 16 * 1024;
        let (first, step) = (5, 3);
        let spare = cd.join(segment_file_name(first + step));
        let after = cd.join(segment_file_name(first + 2 * step));
        run(move || async move {
            let wal = Rc::new(
                Wal::with_segment_size(&cd, FsyncMode::None, first, step, size).expect("wal"),
            );
            let out = wal.open().await.expect("open");
            let flusher = glommio::spawn_local(wal.clone().run_flusher(out));
            let deadline = Instant::now() + Duration::from_secs(30);
            while std::fs::metadata(&spare).map(|m| m.len()).unwrap_or(0) < size {
                assert!(Instant::now() < deadline, "no spare segment made");
                glommio::timer::sleep(Duration::from_millis(5)).await;
            }
            // Fill the first segment and roll into the spare: its records land there.
            let mut last = 0;
            for i in 0..200u64 {
                last = wal.append(Kind::Put, v(i + 1), format!("k{i}").as_bytes(), &[7u8; 100]);
            }
            // (durable means staged: wait for the segment write itself)
            wal.synced(last).await.expect("synced");
            let bytes = std::fs::read(&spare).expect("read spare");
            assert!(
                bytes.iter().any(|b| *b != 0),
                "the roll did not write into the spare"
            );
            while !after.exists() {
                assert!(Instant::now() < deadline, "no spare made after the roll");
                glommio::timer::sleep(Duration::from_millis(5)).await;
            }
            wal.shut_down();
            flusher.await.expect("flusher");
        });
    }

    /// Records of odd sizes cross block boundaries and roll segments; replay returns them all,
    /// in order, with the newest version of each key.
    #[test]
    fn append_roll_and_replay() {
        let dir = crate::test_dir("wal-roll");
        let core_dir = dir.join(crate::storage::core_dir_name(0));
        for mode in [FsyncMode::None, FsyncMode::Interval, FsyncMode::Batch] {
            let _ = std::fs::remove_dir_all(&core_dir);
            let cd = core_dir.clone();
            run(move || async move {
                let wal = Rc::new(Wal::with_segment_size(&cd, mode, 1, 1, 8192).expect("wal"));
                let out = wal.open().await.expect("open");
                let flusher = glommio::spawn_local(wal.clone().run_flusher(out));
                let mut last = 0;
                for i in 0..500u64 {
                    let key = format!("key-{}", i % 300);
                    let value = vec![b'a' + (i % 26) as u8; (i * 7 % 300) as usize];
                    last = wal.append(Kind::Put, v(i + 1), key.as_bytes(), &value);
                    if i % 37 == 0 {
                        wal.durable(last).await.expect("durable");
                    }
                }
                wal.append(Kind::Tombstone, v(1000), b"key-5", b"");
                wal.synced(wal.last_ticket()).await.expect("synced");
                assert!(last > 0);
                wal.shut_down();
                flusher.await.expect("flusher");
            });
            let segments = recovery::list_segments(&dir).expect("list");
            assert!(
                segments.len() > 5,
                "{mode:?}: segments rolled: {}",
                segments.len()
            );
            let rec = recovery::recover(&dir, &LocalRing::new("n", 1)).expect("recover");
            assert_eq!(rec.records, 501, "{mode:?}");
            assert!(
                rec.report.findings.is_empty(),
                "{mode:?}: {:?}",
                rec.report.findings
            );
            // A middle segment removed: the chain names it, replay reports it missing.
            if mode == FsyncMode::Batch {
                std::fs::remove_file(&segments[2].path).expect("remove");
                let rec = recovery::recover(&dir, &LocalRing::new("n", 1)).expect("recover");
                assert_eq!(
                    rec.report.findings,
                    vec![crate::core::wal_damage::Finding::Missing {
                        segment: segments[2].id,
                        run: 1,
                        core: 0
                    }]
                );
            }
            let map = &rec.maps[0];
            assert_eq!(map.live_len(), 299);
            let (val, ver) = map.get(b"key-10").expect("key-10");
            assert_eq!(ver, v(311));
            assert_eq!(val.len(), (310 * 7 % 300) as usize);
            assert!(map.get(b"key-5").is_none());
        }
    }

    #[test]
    fn staged_records_follow_the_segments_at_replay() {
        // 100 records reach their segment; 100 more (overwrites, deletes and a forget among
        // them) are only staged when the process dies: replay has all of them, in order.
        let dir = crate::test_dir("wal-staged");
        let cd = dir.join(crate::storage::core_dir_name(0));
        run(move || async move {
            let wal = Rc::new(Wal::new(&cd, FsyncMode::Interval, 1, 1).expect("wal"));
            let out = wal.open().await.expect("open");
            let flusher = glommio::spawn_local(wal.clone().run_flusher(out)).detach();
            let mut last = 0;
            for i in 0..100u64 {
                last = wal.append(Kind::Put, v(i + 1), format!("k{i}").as_bytes(), b"\0a");
            }
            wal.synced(last).await.expect("synced");
            for i in 0..100u64 {
                let key = format!("k{i}");
                let t = match i % 4 {
                    0 => wal.append(Kind::Tombstone, v(200 + i), key.as_bytes(), b""),
                    _ => wal.append(Kind::Put, v(200 + i), key.as_bytes(), b"\0b"),
                };
                wal.durable(t).await.expect("durable");
            }
            let t = wal.append(Kind::Forget, v(200), b"k0", b"");
            wal.durable(t).await.expect("durable");
            assert!(
                wal.stats().writes <= 2,
                "the staged ones were not written yet"
            );
            flusher.cancel();
        });
        let rec = recovery::recover(&dir, &LocalRing::new("n", 1)).expect("recover");
        assert_eq!(rec.staged_records, 101);
        assert_eq!(rec.maps[0].live_len(), 75, "a quarter deleted");
        assert_eq!(
            rec.maps[0].get(b"k1").map(|(v, _)| v.to_vec()),
            Some(b"\0b".to_vec())
        );
        assert!(rec.maps[0].version_of(b"k0").is_none(), "forgotten");
        assert!(rec.maps[0].version_of(b"k4").is_some(), "a tombstone");
    }

    /// Staged records wait for their segment write until `STAGE_FLUSH_BYTES` have gathered:
    /// one byte short of it no write is due, at it one is (and every record stays
    /// acknowledged meanwhile).
    #[test]
    fn a_segment_write_is_due_at_stage_flush_bytes_and_not_before() {
        let dir = crate::test_dir("wal-flush-bytes");
        let cd = dir.join(crate::storage::core_dir_name(0));
        run(move || async move {
            let wal = Rc::new(Wal::new(&cd, FsyncMode::Interval, 1, 1).expect("wal"));
            let _out = wal.open().await.expect("open");
            let due = || wal.write_due(&wal.state.borrow());
            let pending = || wal.state.borrow().pending_bytes;
            let mut i = 0;
            // fill to exactly one byte short of the bound: whole records, then one sized to fit
            let value = vec![1u8; 1000];
            let whole = record::encoded_len(b"k", &value);
            while pending() + 2 * whole < STAGE_FLUSH_BYTES {
                i += 1;
                let t = wal.append(Kind::Put, v(i), b"k", &value);
                assert!(wal.durable(t).now().is_some(), "acknowledged at once");
            }
            let short = STAGE_FLUSH_BYTES - 1 - pending();
            let last = vec![2u8; short - record::encoded_len(b"k", &[])];
            i += 1;
            wal.append(Kind::Put, v(i), b"k", &last);
            assert_eq!(pending(), STAGE_FLUSH_BYTES - 1);
            assert!(!due(), "one byte short: not yet");
            // the smallest record past it
            i += 1;
            wal.append(Kind::Put, v(i), b"k", b"");
            assert!(pending() >= STAGE_FLUSH_BYTES);
            assert!(due(), "at the bound: due");
        });
    }

    /// A staged record is acknowledged by `append` itself (its `durable` is ready at once, no
    /// flusher turn); a record the staging file cannot take waits for its segment write, and
    /// so does every record after it until then — one staged past it would be dropped at
    /// replay (it does not follow the segments), so it must not be acknowledged first.
    #[test]
    fn a_record_the_stage_cannot_take_holds_back_those_after_it() {
        let dir = crate::test_dir("wal-stage-refused");
        let cd = dir.join(crate::storage::core_dir_name(0));
        run(move || async move {
            let wal = Rc::new(Wal::new(&cd, FsyncMode::Interval, 1, 1).expect("wal"));
            let out = wal.open().await.expect("open");
            let ready =
                |t| futures_lite::future::block_on(futures_lite::future::poll_once(wal.durable(t)));
            let small = wal.append(Kind::Put, v(1), b"a", b"\0a");
            assert!(ready(small).is_some(), "staged: acknowledged at once");
            let huge = vec![7u8; (crate::limits::STAGE_BYTES / 2) as usize + 1];
            let big = wal.append(Kind::Put, v(2), b"big", &huge);
            let after = wal.append(Kind::Put, v(3), b"b", b"\0b");
            assert!(ready(big).is_none(), "larger than a half: not staged");
            assert!(
                ready(after).is_none(),
                "behind an unstaged record: not staged"
            );
            let flusher = glommio::spawn_local(wal.clone().run_flusher(out)).detach();
            wal.durable(after).await.expect("durable once written");
            assert!(wal.stats().writes >= 1);
            // written: staging resumes behind it
            let next = wal.append(Kind::Put, v(4), b"c", b"\0c");
            assert!(ready(next).is_some(), "staged again");
            flusher.cancel();
        });
        let rec = recovery::recover(&dir, &LocalRing::new("n", 1)).expect("recover");
        assert_eq!(rec.maps[0].live_len(), 4);
    }

    /// Past a half of the staging files the other half takes over (once written): under
    /// sustained writes every record is acknowledged from the stage, and a crash at any point
    /// replays all of them from the segments and both halves.
    #[test]
    fn both_staging_halves_take_turns_and_replay() {
        let dir = crate::test_dir("wal-stage-halves");
        let cd = dir.join(crate::storage::core_dir_name(0));
        const N: u64 = 40_000;
        run(move || async move {
            let wal = Rc::new(Wal::new(&cd, FsyncMode::Interval, 1, 1).expect("wal"));
            let out = wal.open().await.expect("open");
            let flusher = glommio::spawn_local(wal.clone().run_flusher(out)).detach();
            for i in 0..N {
                let key = format!("key-{i:06}");
                let t = wal.append(Kind::Put, v(i + 1), key.as_bytes(), &[0u8; 150]);
                if i % 64 == 63 {
                    wal.durable(t).await.expect("durable");
                }
            }
            let t = wal.last_ticket();
            wal.durable(t).await.expect("durable");
            flusher.cancel();
        });
        let rec = recovery::recover(&dir, &LocalRing::new("n", 1)).expect("recover");
        assert_eq!(rec.maps[0].live_len(), N as usize);
        assert_eq!(rec.stages.len(), 2);
        // more than one half's worth came from the stage: both halves were replayed, in order
        assert!(rec.staged_records * 200 > crate::limits::STAGE_BYTES / 2);
    }

    /// A power loss takes the staging file's page cache: what is lost is the newest records
    /// (those not yet written to their segment, at most `STAGE_FLUSH_MS` of them, plus what
    /// the interval sync had not synced), never a gap before records that survive.
    #[test]
    fn a_lost_staging_file_loses_only_the_newest_records() {
        let dir = crate::test_dir("wal-power-loss");
        let cd = dir.join(crate::storage::core_dir_name(0));
        let cd2 = cd.clone();
        run(move || async move {
            let wal = Rc::new(Wal::new(&cd, FsyncMode::Interval, 1, 1).expect("wal"));
            let out = wal.open().await.expect("open");
            let flusher = glommio::spawn_local(wal.clone().run_flusher(out)).detach();
            for i in 0..100u64 {
                let t = wal.append(Kind::Put, v(i + 1), format!("old{i}").as_bytes(), b"\0");
                wal.durable(t).await.expect("durable");
            }
            // the schedule writes them to their segment by itself
            let deadline = Instant::now() + Duration::from_secs(30);
            while wal.stats().writes == 0 {
                assert!(Instant::now() < deadline, "no segment write on schedule");
                glommio::timer::sleep(Duration::from_millis(STAGE_FLUSH_MS / 4)).await;
            }
            for i in 0..100u64 {
                let t = wal.append(Kind::Put, v(200 + i), format!("new{i}").as_bytes(), b"\0");
                wal.durable(t).await.expect("durable");
            }
            flusher.cancel();
        });
        for f in std::fs::read_dir(&cd2).expect("dir").flatten() {
            if f.file_name().to_string_lossy().starts_with("stage-") {
                std::fs::remove_file(f.path()).expect("lose the stage");
            }
        }
        let rec = recovery::recover(&dir, &LocalRing::new("n", 1)).expect("recover");
        let m = &rec.maps[0];
        assert!((0..100).all(|i| m.version_of(format!("old{i}").as_bytes()).is_some()));
        // the newest are lost as a suffix: whatever survives of them is a prefix
        let kept: Vec<bool> = (0..100)
            .map(|i| m.version_of(format!("new{i}").as_bytes()).is_some())
            .collect();
        let first_lost = kept.iter().position(|k| !k).unwrap_or(100);
        assert!(kept[first_lost..].iter().all(|k| !k), "a gap: {kept:?}");
    }

    /// Acknowledged records are durable: nothing appended after the last ack is required, but
    /// everything acknowledged is replayed even when the writer is dropped without shutdown.
    #[test]
    fn acknowledged_records_replay_without_a_clean_shutdown() {
        let dir = crate::test_dir("wal-crash");
        let cd = dir.join(crate::storage::core_dir_name(0));
        run(move || async move {
            let wal = Rc::new(Wal::new(&cd, FsyncMode::None, 1, 1).expect("wal"));
            let out = wal.open().await.expect("open");
            let flusher = glommio::spawn_local(wal.clone().run_flusher(out)).detach();
            for i in 0..100u64 {
                let t = wal.append(Kind::Put, v(i + 1), format!("k{i}").as_bytes(), b"v");
                wal.durable(t).await.expect("durable");
            }
            flusher.cancel();
        });
        let rec = recovery::recover(&dir, &LocalRing::new("n", 1)).expect("recover");
        assert_eq!(rec.maps[0].live_len(), 100);
    }
}
