//! One core's shard: its map, clock and WAL. Executes operations on keys this core owns.
//!
//! Never awaits while holding a borrow of the map or clock: `execute` is synchronous and hands
//! back the WAL ticket the caller must await before acknowledging a write.

use std::cell::RefCell;
use std::rc::Rc;

use crate::core::consensus::acceptor::Answer;
use crate::core::consensus::command::Command;
use crate::core::consensus::{Ballot, Entry};
use crate::core::merkle::{self, Tree};
use crate::core::version::{Ahead, Clock, Version};
use crate::limits::{NODE_ID_BYTES_MAX, WAL_RECORD_HEADER_BYTES};
use crate::server::cluster::view::RingView;
use crate::server::data::messages::{CoreStats, OpResult};
use crate::server::wall_clock_ms;
use crate::server::LogThrottle;
use crate::storage::acceptors::AcceptorStore;
use crate::storage::compaction;
use crate::storage::hints::{self, Added, Hint, HintStore};
use crate::storage::map::{Applied, Map};
use crate::storage::record::Kind;
use crate::storage::wal_file::{Ticket, Wal};
use crate::storage::Error as StorageError;
use crate::wire::native::Status;

/// A borrowed operation (from a read buffer or an owned `messages::Op`).
#[derive(Clone, Copy, Debug)]
pub enum OpRef<'a> {
    Get(&'a [u8]),
    Put(&'a [u8], &'a [u8]),
    Delete(&'a [u8]),
    ReplicaPut(&'a [u8], Option<&'a [u8]>, Version),
    /// A replica's own value; with fields named (`collection::encode_fields`), only those of
    /// a collection (a read of some fields: the collection is not encoded whole).
    ReplicaGet(&'a [u8], &'a [u8]),
    Consensus(&'a [u8], Ballot, Option<&'a Entry>),
    Conditional(&'a [u8], &'a Command),
    Collection(&'a [u8], &'a crate::core::crdt::command::Command),
}

pub struct Shard {
    pub core: usize,
    map: RefCell<Map>,
    clock: RefCell<Clock>,
    pub wal: Rc<Wal>,
    skew_log: LogThrottle,
    /// `--max-memory` divided among the cores: this core's share (`None`: no limit).
    memory_budget: Option<u64>,
    /// Writes other replicas missed, held for them (hinted handoff).
    hints: RefCell<HintStore>,
    /// Consensus state of the keys this core holds a replica of.
    acceptors: RefCell<AcceptorStore>,
    /// This core's directory (its clock lease lives there) and the lock that keeps lease
    /// writes in order.
    dir: std::path::PathBuf,
    lease_lock: glommio::sync::Semaphore,
    /// Bytes of values this core's connections hold for replies not yet sent (counted
    /// toward `--max-memory`; bounded by `CORE_REPLY_BYTES_MAX`).
    pub reply_bytes: Rc<std::cell::Cell<usize>>,
}

impl Shard {
    pub fn new(
        core: usize,
        map: Map,
        clock: Clock,
        wal: Rc<Wal>,
        memory_budget: Option<u64>,
        (hints, acceptors): (HintStore, AcceptorStore),
        dir: std::path::PathBuf,
    ) -> Shard {
        Shard {
            core,
            map: RefCell::new(map),
            clock: RefCell::new(clock),
            wal,
            skew_log: LogThrottle::default(),
            memory_budget,
            hints: RefCell::new(hints),
            acceptors: RefCell::new(acceptors),
            dir,
            lease_lock: glommio::sync::Semaphore::new(1),
            reply_bytes: Rc::new(std::cell::Cell::new(0)),
        }
    }

    /// Execute one operation. A write returns the ticket to await before acknowledging it.
    pub fn execute(&self, op: OpRef<'_>) -> (OpResult, Option<Ticket>) {
        match op {
            OpRef::Get(key) => (self.get(key), None),
            OpRef::Put(key, value) => self.write(key, Some(value)),
            OpRef::Delete(key) => self.write(key, None),
            OpRef::ReplicaPut(key, value, version) => self.replica_write(key, value, version),
            OpRef::ReplicaGet(key, fields) => (self.replica_get(key, fields), None),
            OpRef::Consensus(key, ballot, accept) => {
                match self.consensus(key, ballot, accept.cloned()) {
                    Ok((answer, ticket)) => (
                        OpResult::Value {
                            value: crate::wire::consensus::encode_answer(&answer).into(),
                            version: Version::ZERO,
                        },
                        ticket,
                    ),
                    Err(failed) => (failed, None),
                }
            }
            OpRef::Conditional(key, command) => self.conditional(key, command),
            OpRef::Collection(key, command) => self.collection(key, command),
        }
    }

    /// A collection write on this replica's state of `key`, at a version above everything
    /// stored there: the reply and the delta (`data::collection::answer`), the delta joined
    /// into the store and logged (its ticket must be durable before the delta leaves).
    fn collection(
        &self,
        key: &[u8],
        command: &crate::core::crdt::command::Command,
    ) -> (OpResult, Option<Ticket>) {
        use crate::core::consensus::change::{Reply, WRONGTYPE};
        use crate::core::crdt::{collection, command as cmd};
        if let Err(e) = self.wal.check_writable() {
            return (storage_failure(&e), None);
        }
        // memory first: nothing may change in place unless it can be logged
        if let Some(full) = self.out_of_memory_for(key, command.payload_bytes() + 64) {
            return (full, None);
        }
        let now_ms = wall_clock_ms();
        let mut map = self.map.borrow_mut();
        let held = map.kind_of(key);
        // a live string or list: WRONGTYPE (an expired one is gone: the collection starts
        // above its version)
        if let Some((_, Some(kind), expires)) = held {
            let live = expires.is_none_or(|at| at > now_ms);
            if kind != crate::core::cell::Kind::Collection && live {
                let answer =
                    crate::server::data::collection::answer(&Reply::Error(WRONGTYPE), None);
                return (answer, None);
            }
        }
        // the joined state is one stored value: bounded as any (and a WAL record when
        // compaction snapshots it); checked on an upper bound, before anything changes
        let payload = command.payload_bytes() as u64;
        if !collection::fits_bytes(map.collection_encoded_bytes(key), payload)
            && !collection::fits_bytes(map.measure_collection(key), payload)
        {
            let answer = crate::server::data::collection::answer(&Reply::Error(cmd::FULL), None);
            return (answer, None);
        }
        let floor = held.map_or(Version::ZERO, |h| h.0);
        let version = match self.version_past(now_ms, floor) {
            Ok(v) => v,
            Err(failed) => return (failed, None),
        };
        let issuer = version.writer ^ incarnation();
        // run on the stored state in place (the delta then joins it again: no change), or on
        // a new one standing on what the key held
        let ran = map.with_collection(key, |state| {
            cmd::run(command, state, issuer, version, now_ms)
        });
        let (reply, delta) = match ran {
            Some(r) => r,
            None => {
                let mut state = match collection::at_key(held.map(|h| (h.0, None))) {
                    Ok(s) => s,
                    Err(e) => {
                        let message = format!("stored collection does not decode: {e}");
                        let status = Status::Internal;
                        return (OpResult::Failed { status, message }, None);
                    }
                };
                cmd::run(command, &mut state, issuer, version, now_ms)
            }
        };
        drop(map);
        let Some(delta) = delta else {
            return (crate::server::data::collection::answer(&reply, None), None);
        };
        let cell = delta.to_cell();
        // the command changed the stored state in place: the delta joins it again (the slot
        // follows), and goes to the WAL whatever the join found
        if let Applied::Stale { stored } = self.map.borrow_mut().apply(key, Some(&cell), version) {
            return (OpResult::Stale { stored }, None);
        }
        let ticket = self.wal.append(Kind::Put, version, key, &cell);
        let answer = crate::server::data::collection::answer(&reply, Some((version, &cell)));
        (answer, Some(ticket))
    }

    /// A conditional command on a key this node alone holds: read, change and write in one
    /// step on this core (nothing else runs between them), at a version above the stored one.
    fn conditional(&self, key: &[u8], command: &Command) -> (OpResult, Option<Ticket>) {
        if let Err(e) = self.wal.check_writable() {
            return (storage_failure(&e), None);
        }
        let now_ms = wall_clock_ms();
        let stored = self.stored_entry(key);
        let floor = stored.as_ref().map_or(Version::ZERO, |e| e.version);
        let version = match self.version_past(now_ms, floor) {
            Ok(v) => v,
            Err(failed) => return (failed, None),
        };
        let ballot = Ballot {
            round: version.hlc,
            proposer: version.writer,
        };
        let (entry, new, reply) = command.run(stored.as_ref(), now_ms, ballot, Version::ZERO);
        let answer = OpResult::Value {
            value: crate::wire::consensus::encode_reply(&reply).into(),
            version: entry.version,
        };
        if !new {
            return (answer, None);
        }
        let cell = entry.cell();
        if let Some(full) = self.out_of_memory(key, cell.as_deref()) {
            return (full, None);
        }
        let applied = self
            .map
            .borrow_mut()
            .apply(key, cell.as_deref(), entry.version);
        match self.log_applied(applied, key, cell.as_deref(), entry.version) {
            (OpResult::Written { .. }, ticket) => (answer, ticket),
            (other, _) => (other, None),
        }
    }

    /// A version above `floor` from this core's clock, or the refusal when `floor` is too far
    /// ahead of it (a writer with a wrong clock).
    fn version_past(&self, now_ms: u64, floor: Version) -> Result<Version, OpResult> {
        self.clock
            .borrow_mut()
            .tick_past(now_ms, floor)
            .map_err(|e| OpResult::Failed {
                status: Status::Stale,
                message: format!("stale: key holds a {e}"),
            })
    }

    /// Issue a new version from this core's clock for a write that leaves this node before it
    /// is durable here (the coordinator's): below the clock lease, which is extended (written
    /// durably, on the blocking pool) whenever the clock reaches it.
    pub async fn tick_leased(&self) -> Result<Version, StorageError> {
        loop {
            let need = match self.clock.borrow_mut().tick_leased(wall_clock_ms()) {
                Ok(v) => return Ok(v),
                Err(need) => need,
            };
            // One lease write at a time, each for the furthest lease wanted yet: the file never
            // goes back below a lease some version was issued under.
            let _turn = self.lease_lock.acquire_permit(1).await;
            let until = match self.clock.borrow_mut().tick_leased(wall_clock_ms()) {
                Ok(v) => return Ok(v),
                Err(again) => again.until_ms.max(need.until_ms),
            };
            let dir = self.dir.clone();
            glommio::executor()
                .spawn_blocking(move || crate::storage::clock_lease::write(&dir, until))
                .await?;
            self.clock.borrow_mut().grant_lease(until);
        }
    }

    /// Move this core's clock past `seen` (replica answers, stale replies), unless it is too
    /// far ahead of our wall clock: then the clock stays put and the offender (`from`, the
    /// peer that sent it) is logged.
    /// A version above every one this core has issued or seen (FLUSHALL's first phase).
    pub fn clock_reading(&self) -> Version {
        self.clock.borrow_mut().tick(wall_clock_ms())
    }

    /// FLUSHALL at `floor` (already recorded durably by the caller): drop this core's keys and
    /// hints written before it, refuse them from now on, and move the clock past it. Returns
    /// the keys dropped.
    pub fn flush_below(&self, floor: Version) -> usize {
        let _ = self.observe(floor, "a FLUSHALL");
        self.hints.borrow_mut().drop_at_or_below(floor);
        self.acceptors.borrow_mut().drop_at_or_below(floor);
        self.map.borrow_mut().flush_below(floor)
    }

    pub fn observe(&self, seen: Version, from: &str) -> Result<(), Ahead> {
        let r = self.clock.borrow_mut().observe(seen, wall_clock_ms());
        if let Err(e) = &r {
            if let Some(more) = self.skew_log.due() {
                log::warn!(
                    "core {}: not adopting a {e} from {from} (writer {:#x}): check that peer's \
                     wall clock (NTP){more}",
                    self.core,
                    seen.writer
                );
            }
        }
        r
    }

    fn replica_get(&self, key: &[u8], fields: &[u8]) -> OpResult {
        let map = self.map.borrow();
        if !fields.is_empty() {
            if let Some(fields) = crate::core::crdt::collection::decode_fields(fields) {
                if let Some((cell, version)) = map.get_fields(key, &fields, wall_clock_ms()) {
                    return OpResult::Value {
                        value: cell,
                        version,
                    };
                }
            }
        }
        match (map.get(key), map.version_of(key)) {
            (Some((value, version)), _) => OpResult::Value {
                value: Box::from(value),
                version,
            },
            (None, Some(version)) => OpResult::Tombstone { version },
            (None, None) => OpResult::NotFound,
        }
    }

    /// Store exactly `version` (a replica write from a coordinator or a read repair).
    fn replica_write(
        &self,
        key: &[u8],
        value: Option<&[u8]>,
        version: Version,
    ) -> (OpResult, Option<Ticket>) {
        // What every replica path stores must read back: a value that is not a cell (a buggy
        // or hostile peer) would make the key unreadable on every replica read repair reaches.
        if let Some(Err(e)) = value.map(crate::core::cell::decode) {
            let message = format!("replica value refused: not a stored cell ({e})");
            let status = Status::BadRequest;
            return (OpResult::Failed { status, message }, None);
        }
        if let Err(e) = self.clock.borrow_mut().observe(version, wall_clock_ms()) {
            if let Some(more) = self.skew_log.due() {
                log::warn!(
                    "core {}: refused a {e} (writer {:#x}): check the writer's wall clock \
                     (NTP){more}",
                    self.core,
                    version.writer
                );
            }
            let message = e.to_string();
            return (
                OpResult::Failed {
                    status: Status::BadRequest,
                    message,
                },
                None,
            );
        }
        if let Err(e) = self.wal.check_writable() {
            return (storage_failure(&e), None);
        }
        let newer = self
            .map
            .borrow()
            .version_of(key)
            .is_none_or(|v| v < version);
        if newer {
            if let Some(full) = self.out_of_memory(key, value) {
                return (full, None);
            }
        }
        let expired = value.is_none() && !self.map.borrow().live_at(key, wall_clock_ms());
        let applied = self.map.borrow_mut().apply(key, value, version);
        let (r, ticket) = self.log_applied(applied, key, value, version);
        (if expired { not_live(r) } else { r }, ticket)
    }

    /// The answer to an applied write; a new version is appended to the WAL (its ticket must
    /// be durable before the write is acknowledged).
    fn log_applied(
        &self,
        applied: Applied,
        key: &[u8],
        value: Option<&[u8]>,
        version: Version,
    ) -> (OpResult, Option<Ticket>) {
        match applied {
            Applied::New { was_live } => {
                let kind = if value.is_some() {
                    Kind::Put
                } else {
                    Kind::Tombstone
                };
                let ticket = self
                    .wal
                    .append(kind, version, key, value.unwrap_or_default());
                (OpResult::Written { was_live, version }, Some(ticket))
            }
            Applied::Same { was_live } => (OpResult::Written { was_live, version }, None),
            Applied::Stale { stored } => (OpResult::Stale { stored }, None),
        }
    }

    fn get(&self, key: &[u8]) -> OpResult {
        match self.map.borrow().get(key) {
            Some((value, version)) => OpResult::Value {
                value: Box::from(value),
                version,
            },
            None => OpResult::NotFound,
        }
    }

    /// Turn at most `max` keys that expired by `now_ms` into tombstones (the expiry sweep).
    pub fn expire_due(&self, now_ms: u64, max: usize) -> usize {
        self.map.borrow_mut().expire_due(now_ms, max)
    }

    fn write(&self, key: &[u8], value: Option<&[u8]>) -> (OpResult, Option<Ticket>) {
        if let Err(e) = self.wal.check_writable() {
            return (storage_failure(&e), None);
        }
        if let Some(full) = self.out_of_memory(key, value) {
            return (full, None);
        }
        let mut map = self.map.borrow_mut();
        let stored = map.version_of(key).unwrap_or_default();
        let version = match self.version_past(wall_clock_ms(), stored) {
            Ok(v) => v,
            Err(failed) => return (failed, None),
        };
        let expired = value.is_none() && !map.live_at(key, wall_clock_ms());
        let applied = map.apply(key, value, version);
        drop(map);
        let (r, ticket) = self.log_applied(applied, key, value, version);
        (if expired { not_live(r) } else { r }, ticket)
    }

    /// Drop the local copy of `key` (it moved to other nodes): a FORGET record, then the map.
    /// Returns the WAL ticket, or `None` if the key was not here.
    pub fn forget(&self, key: &[u8]) -> Option<Ticket> {
        let mut map = self.map.borrow_mut();
        let version = map.version_of(key)?;
        map.forget(key, version);
        drop(map);
        Some(self.wal.append(Kind::Forget, version, key, &[]))
    }

    /// The refusal of a put that would grow this core past its share of `--max-memory`, if it
    /// is one. Deletes are never refused (a tombstone is smaller than what it replaces, and a
    /// replica must be able to record one), nor puts that do not grow the map.
    fn out_of_memory(&self, key: &[u8], value: Option<&[u8]>) -> Option<OpResult> {
        self.out_of_memory_for(key, value?.len())
    }

    /// `out_of_memory` for a write of `value_len` bytes.
    fn out_of_memory_for(&self, key: &[u8], value_len: usize) -> Option<OpResult> {
        let budget = self.memory_budget?;
        let map = self.map.borrow();
        let replies = self.reply_bytes.get() as u64;
        let used = map.memory_bytes() + replies;
        if used < budget || !map.would_grow(key, value_len) {
            return None;
        }
        Some(OpResult::Failed {
            status: Status::OutOfMemory,
            message: format!(
                "out of memory: core {} holds {used} bytes of keys, values and replies in \
                 flight ({replies}), its share of --max-memory is {budget}; deletes and \
                 writes that do not grow still work",
                self.core
            ),
        })
    }

    /// Memory held by this core's map (what `--max-memory` limits).
    pub fn memory_bytes(&self) -> u64 {
        self.map.borrow().memory_bytes()
    }

    /// Bytes a snapshot of this core's map and hints takes in the WAL (compaction's trigger;
    /// hints counted with the largest target id, so the estimate is never short).
    pub fn record_bytes(&self) -> u64 {
        let hints = self.hints.borrow();
        let per_hint = (WAL_RECORD_HEADER_BYTES + 1 + NODE_ID_BYTES_MAX) as u64;
        let acceptors = self.acceptors.borrow().bytes();
        self.map.borrow().record_bytes() + hints.bytes() + hints.len() as u64 * per_hint + acceptors
    }

    /// Hold a write that replica `target` missed, and log it (a restart keeps it).
    pub fn add_hint(
        &self,
        target: &str,
        key: &[u8],
        value: Option<&[u8]>,
        version: Version,
    ) -> Added {
        let added = self
            .hints
            .borrow_mut()
            .add(target, key, value, version, wall_clock_ms());
        if added == Added::Held {
            self.log_hint(target, key, value, version);
        }
        added
    }

    fn log_hint(&self, target: &str, key: &[u8], value: Option<&[u8]>, version: Version) -> Ticket {
        let (kind, field) = hints::record(target, key, value);
        self.wal
            .append(kind, version, &field, value.unwrap_or_default())
    }

    /// `target` took the hint for `key` at `version`: drop it, and log that.
    pub fn hint_delivered(&self, target: &str, key: &[u8], version: Version) {
        if self.hints.borrow_mut().remove(target, key, version) {
            let field = hints::encode_key(target, key);
            self.wal.append(Kind::HintDone, version, &field, &[]);
        }
    }

    /// Targets with hints waiting, and up to `max` of one target's hints.
    pub fn hint_targets(&self) -> Vec<String> {
        self.hints.borrow().targets()
    }

    pub fn hint_batch(&self, target: &str, max: usize) -> Vec<Hint> {
        self.hints.borrow().batch(target, max)
    }

    /// Hints held (count, key + value bytes).
    pub fn hints_held(&self) -> (usize, u64) {
        let h = self.hints.borrow();
        (h.len(), h.bytes())
    }

    /// Compaction and the start-up snapshot: log every hint held again (its old records are
    /// about to go). Returns the last ticket appended.
    pub fn snapshot_hints(&self) -> Option<Ticket> {
        let hints = self.hints.borrow();
        let mut last = None;
        for (target, key, value, version) in hints.iter() {
            last = Some(self.log_hint(target, key, value, version));
        }
        last
    }

    /// Consensus, replica side: promise `ballot` for `key` (answering what the store holds),
    /// or accept `entry` at it. Returns the answer and the ticket to await before sending it.
    pub fn consensus(
        &self,
        key: &[u8],
        ballot: Ballot,
        accept: Option<Entry>,
    ) -> Result<(Answer, Option<Ticket>), OpResult> {
        if let Err(e) = self.wal.check_writable() {
            return Err(storage_failure(&e));
        }
        let mut table = self.acceptors.borrow_mut();
        let done = match accept {
            None => table.prepare(key, ballot, self.stored_entry(key)),
            Some(entry) => {
                if let Err(e) = self.observe(entry.version, "an ACCEPT") {
                    return Err(OpResult::Failed {
                        status: Status::BadRequest,
                        message: e.to_string(),
                    });
                }
                table.accept(key, ballot, entry)
            }
        };
        let (answer, record) = done.map_err(|e| OpResult::Failed {
            status: Status::Unavailable,
            message: e.to_string(),
        })?;
        let ticket =
            record.map(|(version, state)| self.wal.append(Kind::Paxos, version, key, &state));
        Ok((answer, ticket))
    }

    /// What the store holds for `key`, as consensus carries it (a tombstone: no value).
    fn stored_entry(&self, key: &[u8]) -> Option<Entry> {
        let map = self.map.borrow();
        let version = map.version_of(key)?;
        Some(Entry::of_cell(map.get(key).map(|(b, _)| b), version))
    }

    /// Compaction: log every consensus state again (its old records are about to go).
    pub fn snapshot_acceptors(&self) -> Option<Ticket> {
        let mut last = None;
        for (key, (version, state)) in self.acceptors.borrow().records() {
            last = Some(self.wal.append(Kind::Paxos, version, key, &state));
        }
        last
    }

    /// Compaction: append the current record of each of `keys` still in the map (a key
    /// written since was appended anyway; one forgotten since is skipped), except tombstones
    /// past the grace period, which are dropped from the map instead. Returns the last ticket
    /// appended and how many tombstones were purged.
    pub fn snapshot_slice(
        &self,
        keys: &[Box<[u8]>],
        now_ms: u64,
        grace_ms: u64,
        repaired_through_ms: u64,
    ) -> (Option<Ticket>, u64) {
        let mut map = self.map.borrow_mut();
        let (mut last, mut purged) = (None, 0);
        for key in keys {
            let Some(version) = map.version_of(key) else {
                continue;
            };
            let purgeable = compaction::purgeable(version.physical_ms(), now_ms, grace_ms)
                && version.physical_ms() < repaired_through_ms;
            // an emptied collection is a tombstone that kept its causal context: past the
            // same grace, it goes the same way
            let emptied = map.get(key).is_some_and(|(value, _)| {
                crate::core::cell::decode(value).is_ok_and(|c| {
                    c.kind == crate::core::cell::Kind::Collection
                        && crate::core::crdt::collection::stored_elements(c.value) == Some(0)
                })
            });
            if emptied && purgeable {
                map.forget(key, version);
                purged += 1;
            } else if let Some((value, _)) = map.get(key) {
                last = Some(self.wal.append(Kind::Put, version, key, value));
            } else if purgeable {
                map.forget(key, version);
                purged += 1;
            } else {
                last = Some(self.wal.append(Kind::Tombstone, version, key, &[]));
            }
        }
        (last, purged)
    }

    /// Anti-entropy: this core's part of the tree of the keys whose current replicas include
    /// both this node and `peer`.
    pub fn ae_tree(&self, view: &RingView, peer: &str) -> Tree {
        let mut tree = Tree::new();
        for (key, value, version) in self.map.borrow().iter() {
            if shared_with(view, key, peer) {
                tree.add(key, compared_version(value, version));
            }
        }
        tree
    }

    /// Anti-entropy: this core's (key, version) entries in `leaves` shared with `peer`.
    pub fn ae_entries(
        &self,
        view: &RingView,
        peer: &str,
        leaves: &[u16],
    ) -> Vec<(Box<[u8]>, Version)> {
        self.map
            .borrow()
            .iter()
            .filter(|(key, _, _)| leaves.contains(&(merkle::leaf_of(key) as u16)))
            .filter(|(key, _, _)| shared_with(view, key, peer))
            .map(|(key, value, version)| (Box::from(key), compared_version(value, version)))
            .collect()
    }

    /// SCAN: this core's keys whose ring hash is in `[lo, hi)`, with versions and liveness.
    /// A key past its expiry counts as a tombstone of its version.
    pub fn range_keys(&self, lo: u64, hi: u64) -> Vec<crate::server::data::scan::Entry> {
        let now_ms = wall_clock_ms();
        let live = |v: Option<&[u8]>| {
            v.and_then(|v| crate::core::cell::decode(v).ok())
                .is_some_and(|c| {
                    !c.expired(now_ms)
                        && (c.kind != crate::core::cell::Kind::Collection
                            || crate::core::crdt::collection::stored_elements(c.value)
                                .is_some_and(|n| n > 0))
                })
        };
        self.map
            .borrow()
            .iter()
            .filter(|(k, _, _)| (lo..hi).contains(&u64::from(crate::core::ring::hash(k))))
            .map(|(k, v, version)| (Box::from(k), version, live(v)))
            .collect()
    }

    /// Keys (live or tombstoned) for which `want` holds, copied out (the map may change while
    /// they are streamed; each is read again when sent).
    pub fn keys_where(&self, mut want: impl FnMut(&[u8]) -> bool) -> Vec<Box<[u8]>> {
        self.map
            .borrow()
            .iter()
            .filter(|(k, _, _)| want(k))
            .map(|(k, _, _)| Box::from(k))
            .collect()
    }

    pub fn stats(&self, connections: usize) -> CoreStats {
        let wal = self.wal.stats();
        CoreStats {
            core: self.core,
            keys: self.map.borrow().live_len(),
            memory_bytes: self.map.borrow().memory_bytes(),
            reply_bytes: self.reply_bytes.get() as u64,
            hints: self.hints.borrow().len(),
            wal_bytes: wal.wal_bytes,
            wal_syncs: wal.syncs,
            wal_writes: wal.writes,
            wal_records: wal.records,
            wal_group_sizes: wal.group_sizes,
            connections,
        }
    }
}

/// A delete of a key that had expired (not yet swept): it was not live.
/// This process's salt for the dots its cores issue (`collection::dot_writer` mixes it in):
/// a delta leaves a node once staged, which a power loss can undo; a restarted node then
/// issues under other writer ids, so it never issues a dot a peer already holds.
fn incarnation() -> u32 {
    static SALT: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *SALT.get_or_init(|| fastrand::u32(..))
}

/// The version anti-entropy compares for a stored value: its own, except that a collection's
/// folds in a digest of its state (two replicas can hold different states of a collection at
/// one version: deltas joined in different sets). `anti_entropy::exchange` then joins both
/// ways.
fn compared_version(value: Option<&[u8]>, version: Version) -> Version {
    match value {
        Some(v)
            if crate::core::cell::decode(v)
                .is_ok_and(|c| c.kind == crate::core::cell::Kind::Collection) =>
        {
            Version {
                hlc: version.hlc,
                writer: version.writer ^ crc32fast::hash(v),
            }
        }
        _ => version,
    }
}

fn not_live(r: OpResult) -> OpResult {
    match r {
        OpResult::Written { version, .. } => OpResult::Written {
            was_live: false,
            version,
        },
        r => r,
    }
}

/// Whether `key`'s current replicas include this node and `peer`.
fn shared_with(view: &RingView, key: &[u8], peer: &str) -> bool {
    let replicas = view.replicas(key);
    replicas.iter().any(|t| t.local) && replicas.iter().any(|t| &*t.id == peer)
}

/// The reply for a write the storage layer refused or could not make durable.
pub fn storage_failure(e: &StorageError) -> OpResult {
    let status = match e {
        StorageError::DiskFull { .. } => Status::DiskFull,
        StorageError::ShuttingDown => Status::ShuttingDown,
        _ => Status::Internal,
    };
    OpResult::Failed {
        status,
        message: e.to_string(),
    }
}
