//! Deterministic simulation of a 3-node cluster's replication protocol, built from the pure
//! parts the real nodes use: `storage::map::Map` (last-write-wins), `core::version::Clock`
//! (hybrid logical clock), `core::round` (the coordinator's write and read rounds: quorum,
//! stale retries, read repair targets — the same state machines the node's coordinator
//! drives), `storage::hints::HintStore` and `core::merkle` (trees and the reconcile rule). One seeded RNG drives everything: clients at
//! random coordinators, a network that delays, reorders, duplicates and drops messages,
//! partitions that come and go, nodes that pause, clocks skewed by up to 2 s, and crashes: a
//! node's writes become durable at its next group commit (every `SYNC_EVERY` ms), its answers
//! to replica writes, hints and repairs wait for that commit (as the node's WAL tickets do),
//! and a crash restarts it with only what was durable (its clock seeded from it, in-flight
//! messages and the requests it coordinated lost). No threads, no sockets, no wall clock.
//!
//! Checked after each run, once the network healed and hints and anti-entropy went quiet:
//! replicas converge (the same version of every key everywhere); no acknowledged write is lost;
//! no read returned a version nobody wrote, or one older than a write acknowledged before the
//! read began (a write that failed or timed out may still win later: not held against it).
//!
//! Power losses (`POWER_LOSS_RATE` of the crashes): a node's staged writes are safe from a
//! crash of its process but not from a power loss; only what its last interval sync
//! (`DEVICE_SYNC_EVERY`) covered survives. The restart sees another boot in the data dir's boot
//! mark (`core::wal_damage::power_loss_suspected`), and in a cluster the node repairs before it
//! answers a replica read (`after_power_loss`); the peers hold what it lost, so no
//! acknowledged write may be lost. (Hints are kept across a power loss: a simplification.)
//!
//! Storage faults (`STORAGE_FAULT_RATE` of the crashes): at the restart, the node's log turns
//! out to have a corrupted record, a lost write (a group the disk acknowledged but never
//! persisted) or a misdirected one (it landed on another record): those keys' durable versions
//! are gone. Replay detects it (`storage::record::scan`, mid-log damage), and
//! `core::wal_damage::decide` makes the node owe a repair: it answers no replica read until an
//! anti-entropy round with every other node completed. Faults hit fewer than W replicas of a
//! key at a time (one damaged node at a time), and no acknowledged write may be lost.
//! A failing seed is printed; `KV_SIM_SEED=<n>` replays one, `KV_SIM_SEEDS=<n>` sets how many
//! run (default 300).
//!
//! Not covered: the I/O shells (timeouts, peer backpressure, hint stragglers), membership (all
//! three nodes replicate every key; `tests/membership_sim.rs` simulates membership).

mod seeds;
mod sim_net;

use sim_net::SimNet;
use std::collections::BTreeMap;

use kvstore::core::merkle::{self, Action, Tree};
use kvstore::core::quorum::Outcome as Quorum;
use kvstore::core::round::{ReadRound, WriteAnswer, WriteRound};
use kvstore::core::version::{Clock, Version};
use kvstore::core::wal_damage;
use kvstore::storage::hints::HintStore;
use kvstore::storage::map::{Applied, Map};

const NODES: usize = 3;
const W: usize = 2;
const R: usize = 2;
const KEYS: u32 = 6;
const OPS: usize = 200;
/// A replica request not answered in this many ticks (ms) has failed.
const TIMEOUT: u64 = 300;
const HINT_EVERY: u64 = 250;
const AE_EVERY: u64 = 500;
/// A node's group commit: what it applied becomes durable, and its waiting answers go out.
const SYNC_EVERY: u64 = 20;
/// The share of crashes whose restart finds the node's log damaged.
const STORAGE_FAULT_RATE: f64 = 0.3;
/// `--fsync interval`'s sync: what was staged becomes safe from a power loss.
const DEVICE_SYNC_EVERY: u64 = 1_000;
/// The share of crashes that are power losses (the machine rebooted: what was staged since
/// the last interval sync is gone).
const POWER_LOSS_RATE: f64 = 0.2;

type Held = Option<(Option<String>, Version)>;

#[derive(Clone, Debug)]
enum Msg {
    Put {
        op: usize,
        attempt: u32,
        key: u32,
        value: Option<String>,
        version: Version,
    },
    PutAck {
        op: usize,
        attempt: u32,
        answer: WriteAnswer,
    },
    Get {
        op: usize,
        key: u32,
    },
    GetAck {
        op: usize,
        held: Held,
    },
    /// A hint or a read repair: store it (acknowledged, so a hint can be dropped).
    Store {
        key: u32,
        value: Option<String>,
        version: Version,
    },
    StoreAck {
        key: u32,
        version: Version,
    },
}

struct Node {
    map: Map,
    /// What survives a crash of the process: the map as of the last group commit (staged).
    durable: Map,
    /// What survives a power loss: the map as of the last interval sync.
    on_device: Map,
    /// Writes applied since the last group commit, and the answers waiting for it.
    unsynced: Vec<(u32, Option<String>, Version)>,
    waiting: Vec<(usize, Msg)>,
    /// The clock lease made durable (survives a crash; `core::version`).
    lease_ms: u64,
    clock: Clock,
    skew_ms: i64,
    hints: HintStore,
    paused_until: u64,
    /// Owes a repair after storage damage: the others it completed anti-entropy with since.
    repairing: Option<Vec<usize>>,
}

#[derive(Debug)]
struct WriteRec {
    key: u32,
    start: u64,
    end: Option<u64>,
    acked: bool,
}

struct ReadRec {
    key: u32,
    start: u64,
    got: Option<Version>,
}

enum Pending {
    Write {
        coordinator: usize,
        key: u32,
        value: Option<String>,
        version: Version,
        attempt: u32,
        round: WriteRound,
        decided: bool,
        deadline: u64,
    },
    Read {
        coordinator: usize,
        key: u32,
        round: ReadRound<Option<String>>,
        deadline: u64,
    },
}

struct Sim {
    rng: fastrand::Rng,
    now: u64,
    nodes: Vec<Node>,
    net: SimNet<Msg>,
    pending: BTreeMap<usize, Pending>,
    writes: Vec<WriteRec>,
    reads: Vec<ReadRec>,
    /// Which write issued each version (retries issue new ones).
    version_of_op: BTreeMap<Version, usize>,
    /// Storage faults at this share of crashes; and whether a damaged node keeps out of reads
    /// until repaired (off only to show the checker catches it).
    storage_fault_rate: f64,
    gate_damaged_reads: bool,
    /// And whether it takes no replica write until repaired (off only to show the checker
    /// catches it: a write acknowledged by a quorum that misses a newer version it lost).
    gate_damaged_writes: bool,
    /// Power losses at this share of crashes; and whether the restart rule makes the node
    /// repair first (off only to show the checker catches it).
    power_loss_rate: f64,
    gate_power_loss: bool,
}

fn kb(key: u32) -> [u8; 4] {
    key.to_le_bytes()
}

fn held(map: &Map, key: u32) -> Held {
    let version = map.version_of(&kb(key))?;
    let value = map
        .get(&kb(key))
        .map(|(v, _)| String::from_utf8_lossy(v).into_owned());
    Some((value, version))
}

/// A replica write (skews here stay within the clock's bound, so none is refused for it),
/// durable at the node's next group commit.
fn store(node: &mut Node, key: u32, value: &Option<String>, version: Version) -> Applied {
    let applied = node
        .map
        .apply(&kb(key), value.as_deref().map(str::as_bytes), version);
    if let Applied::New { .. } = applied {
        node.unsynced.push((key, value.clone(), version));
    }
    applied
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let mut rng = fastrand::Rng::with_seed(seed);
        let nodes = (0..NODES)
            .map(|i| Node {
                map: Map::new(),
                durable: Map::new(),
                on_device: Map::new(),
                unsynced: Vec::new(),
                waiting: Vec::new(),
                lease_ms: 0,
                clock: Clock::new(i as u32 + 1),
                skew_ms: rng.i64(-2_000..=2_000),
                hints: HintStore::new(u64::MAX),
                paused_until: 0,
                repairing: None,
            })
            .collect();
        Sim {
            net: SimNet::new(rng.f64() * 0.2),
            rng,
            now: 1_000_000,
            nodes,
            pending: BTreeMap::new(),
            writes: Vec::new(),
            reads: Vec::new(),
            version_of_op: BTreeMap::new(),
            storage_fault_rate: STORAGE_FAULT_RATE,
            gate_damaged_reads: true,
            gate_damaged_writes: true,
            power_loss_rate: POWER_LOSS_RATE,
            gate_power_loss: true,
        }
    }

    fn physical(&self, n: usize) -> u64 {
        (self.now as i64 + self.nodes[n].skew_ms) as u64
    }

    fn up(&self, n: usize) -> bool {
        self.nodes[n].paused_until <= self.now
    }

    fn reachable(&self, a: usize, b: usize) -> bool {
        self.net.reachable(self.now, a, b)
    }

    fn send(&mut self, from: usize, to: usize, msg: Msg) {
        self.net.send(&mut self.rng, self.now, from, to, msg);
    }

    /// Send `msg` from `n` to `to` once what `n` applied so far is durable (a WAL ticket).
    fn answer_when_durable(&mut self, n: usize, to: usize, msg: Msg) {
        self.nodes[n].waiting.push((to, msg));
    }

    /// Node `n`'s group commit.
    fn sync(&mut self, n: usize) {
        let node = &mut self.nodes[n];
        for (key, value, version) in node.unsynced.drain(..) {
            node.durable
                .apply(&kb(key), value.as_deref().map(str::as_bytes), version);
        }
        for (to, msg) in std::mem::take(&mut node.waiting) {
            self.send(n, to, msg);
        }
    }

    /// Node `n` crashes and restarts at once with what was durable.
    fn crash(&mut self, n: usize) {
        let phys = self.physical(n);
        let others_damaged = self.nodes.iter().any(|x| x.repairing.is_some());
        if !others_damaged && self.rng.f64() < self.storage_fault_rate {
            self.storage_fault(n);
        } else if !others_damaged && self.rng.f64() < self.power_loss_rate {
            self.power_loss(n);
        }
        let node = &mut self.nodes[n];
        node.unsynced.clear();
        node.waiting.clear();
        let mut map = Map::new();
        for (k, v, version) in node.durable.iter() {
            map.apply(k, v, version);
        }
        node.map = map;
        node.clock = Clock::new(n as u32 + 1);
        let _ = node.clock.observe(node.map.max_version(), phys);
        node.clock.resume_after(node.lease_ms);
        // its connections broke: what was in flight to or from it is gone
        self.net.forget(n);
        // the requests it coordinated: their clients see an error (outcome unknown)
        let now = self.now;
        let mine: Vec<usize> = self
            .pending
            .iter()
            .filter(|(_, p)| match p {
                Pending::Write { coordinator, .. } | Pending::Read { coordinator, .. } => {
                    *coordinator == n
                }
            })
            .map(|(id, _)| *id)
            .collect();
        for id in mine {
            if let Some(Pending::Write { decided: false, .. }) = self.pending.remove(&id) {
                self.writes[id].end = Some(now);
            }
        }
    }

    /// Node `n`'s log is found damaged at its restart: a corrupted record (one key), a lost
    /// write (a group of consecutive keys) or a misdirected one (two keys): their durable
    /// versions are gone. Replay detected it, so the recovery rule decides what the node does.
    fn storage_fault(&mut self, n: usize) {
        let keys: Vec<u32> = match self.rng.u8(0..3) {
            0 => vec![self.rng.u32(0..KEYS)],
            1 => {
                let first = self.rng.u32(0..KEYS);
                (first..(first + self.rng.u32(1..=3)).min(KEYS)).collect()
            }
            _ => vec![self.rng.u32(0..KEYS), self.rng.u32(0..KEYS)],
        };
        let node = &mut self.nodes[n];
        for key in keys {
            if let Some(v) = node.durable.version_of(&kb(key)) {
                node.durable.forget(&kb(key), v);
            }
        }
        let decision = wal_damage::decide(wal_damage::RecoveryMode::Strict, true, true);
        assert_eq!(decision, wal_damage::Decision::RepairFirst);
        node.repairing = Some(Vec::new());
    }

    /// Node `n`'s machine lost power: only what its last interval sync covered survives, and
    /// its boot mark names another boot, so the restart rule applies.
    fn power_loss(&mut self, n: usize) {
        let node = &mut self.nodes[n];
        let mut durable = Map::new();
        for (k, v, version) in node.on_device.iter() {
            durable.apply(k, v, version);
        }
        node.durable = durable;
        let suspected = wal_damage::power_loss_suspected(Some("before"), Some("after"));
        if self.gate_power_loss
            && wal_damage::after_power_loss(suspected, true) == wal_damage::Decision::RepairFirst
        {
            node.repairing = Some(Vec::new());
        }
    }

    fn issue_write(
        &mut self,
        c: usize,
        w: usize,
        key: u32,
        value: Option<String>,
        attempt: u32,
        floor: Option<Version>,
    ) {
        let phys = self.physical(c);
        if let Some(f) = floor {
            let _ = self.nodes[c].clock.observe(f, phys);
        }
        // a coordinator's versions leave it before they are durable here: leased, as the node
        // does (its lease is durable before the version is issued)
        let node = &mut self.nodes[c];
        let version = loop {
            match node.clock.tick_leased(phys) {
                Ok(v) => break v,
                Err(need) => {
                    node.lease_ms = need.until_ms;
                    node.clock.grant_lease(need.until_ms);
                }
            }
        };
        self.version_of_op.insert(version, w);
        self.pending.insert(
            w,
            Pending::Write {
                coordinator: c,
                key,
                value: value.clone(),
                version,
                attempt,
                round: WriteRound::new(NODES, W),
                decided: false,
                deadline: self.now + TIMEOUT,
            },
        );
        for to in 0..NODES {
            self.send(
                c,
                to,
                Msg::Put {
                    op: w,
                    attempt,
                    key,
                    value: value.clone(),
                    version,
                },
            );
        }
    }

    fn client_op(&mut self) {
        let c = self.rng.usize(..NODES);
        if !self.up(c) {
            return;
        }
        let key = self.rng.u32(..KEYS);
        if self.rng.bool() {
            let w = self.writes.len();
            let value = (self.rng.u8(..5) != 0).then(|| format!("v{w}"));
            self.writes.push(WriteRec {
                key,
                start: self.now,
                end: None,
                acked: false,
            });
            self.issue_write(c, w, key, value, 1, None);
        } else {
            let id = 1_000_000 + self.reads.len();
            self.reads.push(ReadRec {
                key,
                start: self.now,
                got: None,
            });
            self.pending.insert(
                id,
                Pending::Read {
                    coordinator: c,
                    key,
                    round: ReadRound::new(NODES, R),
                    deadline: self.now + TIMEOUT,
                },
            );
            for to in 0..NODES {
                self.send(c, to, Msg::Get { op: id, key });
            }
        }
    }

    fn deliver(&mut self, from: usize, to: usize, msg: Msg) {
        if !self.up(to) {
            return; // a paused node's socket buffers overflow: lost
        }
        match msg {
            Msg::Put {
                op,
                attempt,
                key,
                value,
                version,
            } => {
                // owing a repair, it may have lost a newer version of the key: its write answer
                // could complete a quorum that misses that version, so it takes no replica
                // write (the coordinator hints it for later), as the node does
                let ack = |answer| Msg::PutAck {
                    op,
                    attempt,
                    answer,
                };
                if self.gate_damaged_writes && self.nodes[to].repairing.is_some() {
                    let refused = WriteAnswer::Failed {
                        out_of_memory: false,
                    };
                    self.send(to, from, ack(refused));
                    return;
                }
                let phys = self.physical(to);
                let _ = self.nodes[to].clock.observe(version, phys);
                let answer = match store(&mut self.nodes[to], key, &value, version) {
                    Applied::Stale { stored } => WriteAnswer::Stale { stored },
                    _ => WriteAnswer::Written { was_live: false },
                };
                self.answer_when_durable(to, from, ack(answer));
            }
            Msg::PutAck {
                op,
                attempt,
                answer,
            } => self.put_ack(op, attempt, from, answer),
            Msg::Get { .. } if self.gate_damaged_reads && self.nodes[to].repairing.is_some() => {
                // owes a repair: its answer could be the hole, so it gives none
            }
            Msg::Get { op, key } => {
                let h = held(&self.nodes[to].map, key);
                self.send(to, from, Msg::GetAck { op, held: h });
            }
            Msg::GetAck { op, held } => self.get_ack(op, from, held),
            Msg::Store { .. } if self.gate_damaged_writes && self.nodes[to].repairing.is_some() => {
                // a hint or read repair waits until the repair is done (the hint is kept)
            }
            Msg::Store {
                key,
                value,
                version,
            } => {
                store(&mut self.nodes[to], key, &value, version);
                self.answer_when_durable(to, from, Msg::StoreAck { key, version });
            }
            Msg::StoreAck { key, version } => {
                self.nodes[to]
                    .hints
                    .remove(&format!("n{from}"), &kb(key), version);
            }
        }
    }

    fn put_ack(&mut self, op: usize, attempt: u32, from: usize, answer: WriteAnswer) {
        let now = self.now;
        let Some(Pending::Write {
            attempt: a,
            round,
            decided,
            ..
        }) = self.pending.get_mut(&op)
        else {
            return;
        };
        if *a != attempt {
            return;
        }
        let outcome = round.absorb(from, answer);
        if *decided {
            return;
        }
        match outcome {
            Quorum::Won => {
                *decided = true;
                self.writes[op].acked = true;
                self.writes[op].end = Some(now);
            }
            Quorum::Lost => self.write_lost(op),
            Quorum::Pending => {}
        }
    }

    /// The quorum is lost: retry past a newer version (bounded), else the write failed.
    fn write_lost(&mut self, op: usize) {
        let Some(Pending::Write {
            coordinator,
            key,
            value,
            attempt,
            round,
            decided,
            ..
        }) = self.pending.get_mut(&op)
        else {
            return;
        };
        *decided = true;
        let (c, key, value, attempt) = (*coordinator, *key, value.clone(), *attempt);
        if let Some(floor) = round.retry_past(attempt) {
            self.issue_write(c, op, key, value, attempt + 1, Some(floor));
        } else {
            self.writes[op].end = Some(self.now);
        }
    }

    fn get_ack(&mut self, op: usize, from: usize, h: Held) {
        let Some(Pending::Read {
            coordinator,
            key,
            round,
            ..
        }) = self.pending.get_mut(&op)
        else {
            return;
        };
        let held = h.map_or((Version::ZERO, None), |(value, version)| {
            (version, Some(value))
        });
        if round.absorb(from, Some(held)) != Quorum::Won {
            return;
        }
        let (c, key) = (*coordinator, *key);
        let behind = round.behind();
        let newest = round.newest().map(|(v, x)| (v, x.cloned()));
        self.pending.remove(&op);
        self.reads[op - 1_000_000].got = Some(newest.as_ref().map_or(Version::ZERO, |b| b.0));
        if let Some((version, Some(value))) = newest {
            for n in behind {
                self.send(
                    c,
                    n,
                    Msg::Store {
                        key,
                        value: value.clone(),
                        version,
                    },
                );
            }
        }
    }

    /// Requests past their deadline: reads fail, writes end (unanswered replicas get hints).
    fn expire(&mut self) {
        let now = self.now;
        let due: Vec<usize> = self
            .pending
            .iter()
            .filter(|(_, p)| match p {
                Pending::Write { deadline, .. } | Pending::Read { deadline, .. } => {
                    *deadline <= now
                }
            })
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            match self.pending.remove(&id) {
                Some(Pending::Write {
                    coordinator,
                    key,
                    value,
                    version,
                    round,
                    decided,
                    ..
                }) => {
                    if !decided {
                        self.writes[id].end = Some(now);
                    }
                    for n in (0..NODES).filter(|n| !round.answered(*n) && *n != coordinator) {
                        let v = value.as_deref().map(str::as_bytes);
                        self.nodes[coordinator].hints.add(
                            &format!("n{n}"),
                            &kb(key),
                            v,
                            version,
                            now,
                        );
                    }
                }
                Some(Pending::Read { .. }) | None => {}
            }
        }
    }

    fn deliver_hints(&mut self) {
        for h in 0..NODES {
            if !self.up(h) {
                continue;
            }
            for target in self.nodes[h].hints.targets() {
                let t: usize = target[1..].parse().unwrap_or(0);
                for hint in self.nodes[h].hints.batch(&target, 64) {
                    let key =
                        u32::from_le_bytes([hint.key[0], hint.key[1], hint.key[2], hint.key[3]]);
                    let value = hint.value.map(|v| String::from_utf8_lossy(&v).into_owned());
                    self.send(
                        h,
                        t,
                        Msg::Store {
                            key,
                            value,
                            version: hint.version,
                        },
                    );
                }
            }
        }
    }

    /// One anti-entropy round between `a` and `b` (atomic here: both must be up and connected).
    fn anti_entropy(&mut self, a: usize, b: usize) -> usize {
        if !self.up(a) || !self.up(b) || !self.reachable(a, b) {
            return 0;
        }
        let tree = |m: &Map| {
            let mut t = Tree::new();
            for (k, _, v) in m.iter() {
                t.add(k, v);
            }
            t
        };
        // A completed round repairs a damaged side's share with the other.
        for (x, y) in [(a, b), (b, a)] {
            let done = match &mut self.nodes[x].repairing {
                Some(with) => {
                    if !with.contains(&y) {
                        with.push(y);
                    }
                    with.len() == NODES - 1
                }
                None => false,
            };
            if done {
                self.nodes[x].repairing = None;
            }
        }
        let (ta, tb) = (tree(&self.nodes[a].map), tree(&self.nodes[b].map));
        if ta.root() == tb.root() {
            return 0;
        }
        let leaves = ta.diff(&tb);
        let mut fixed = 0;
        for key in 0..KEYS {
            if !leaves.contains(&merkle::leaf_of(&kb(key))) {
                continue;
            }
            let (ha, hb) = (held(&self.nodes[a].map, key), held(&self.nodes[b].map, key));
            let (from, to, h) =
                match merkle::reconcile(ha.as_ref().map(|x| x.1), hb.as_ref().map(|x| x.1)) {
                    Action::Keep => continue,
                    Action::Pull => (b, a, hb),
                    Action::Push => (a, b, ha),
                };
            debug_assert_ne!(from, to);
            if let Some((value, version)) = h {
                store(&mut self.nodes[to], key, &value, version);
                fixed += 1;
            }
        }
        fixed
    }

    fn faults(&mut self) {
        if self.rng.f64() < 0.002 {
            let (a, b) = (self.rng.usize(..NODES), self.rng.usize(..NODES));
            if a != b {
                let until = self.now + self.rng.u64(100..1_500);
                self.net.cut(a, b, until);
            }
        }
        if self.rng.f64() < 0.001 {
            let n = self.rng.usize(..NODES);
            self.nodes[n].paused_until = self.now + self.rng.u64(50..800);
        }
        if self.rng.f64() < 0.002 {
            let n = self.rng.usize(..NODES);
            self.crash(n);
        }
    }

    fn tick(&mut self, clients: bool) {
        self.now += 1;
        let now = self.now;
        for (from, to, msg) in self.net.due(now) {
            self.deliver(from, to, msg);
        }
        if clients {
            self.faults();
            if self.rng.f64() < 0.1 {
                self.client_op();
            }
        }
        self.expire();
        if now % SYNC_EVERY == 0 {
            for n in 0..NODES {
                if self.up(n) {
                    self.sync(n);
                }
            }
        }
        if now % DEVICE_SYNC_EVERY == 0 {
            for node in &mut self.nodes {
                for (k, v, version) in node.durable.iter() {
                    node.on_device.apply(k, v, version);
                }
            }
        }
        if now % HINT_EVERY == 0 {
            self.deliver_hints();
        }
        if now % AE_EVERY == 0 {
            let (a, b) = (self.rng.usize(..NODES), self.rng.usize(..NODES));
            if a != b {
                self.anti_entropy(a, b);
            }
        }
    }

    fn run(&mut self) {
        while self.writes.len() + self.reads.len() < OPS {
            self.tick(true);
        }
        // heal everything, then let hints and anti-entropy finish
        self.net.heal();
        for n in &mut self.nodes {
            n.paused_until = 0;
        }
        for _ in 0..(TIMEOUT + HINT_EVERY * 4) {
            self.tick(false);
        }
        for _ in 0..10 {
            let mut fixed = 0;
            for a in 0..NODES {
                for b in 0..NODES {
                    if a != b {
                        fixed += self.anti_entropy(a, b);
                    }
                }
            }
            for _ in 0..HINT_EVERY {
                self.tick(false);
            }
            if fixed == 0 && self.net.is_empty() {
                break;
            }
        }
    }

    /// The invariants; `Err` names the first violation.
    fn check(&self) -> Result<(), String> {
        for key in 0..KEYS {
            let first = held(&self.nodes[0].map, key);
            for n in 1..NODES {
                if held(&self.nodes[n].map, key) != first {
                    return Err(format!(
                        "key {key}: node0 holds {first:?}, node{n} {:?}",
                        held(&self.nodes[n].map, key)
                    ));
                }
            }
            // the final version must not belong to a write that ended before an acknowledged
            // write of the key began
            let final_op = first.as_ref().and_then(|(_, v)| self.version_of_op.get(v));
            for (i, w) in self
                .writes
                .iter()
                .enumerate()
                .filter(|(_, w)| w.key == key && w.acked)
            {
                let lost = match final_op {
                    None => true,
                    Some(&f) => {
                        let fw = &self.writes[f];
                        fw.acked && fw.end.is_some_and(|e| e < w.start)
                    }
                };
                if lost {
                    return Err(format!(
                        "key {key}: acknowledged write #{i} {w:?} lost (final {first:?})"
                    ));
                }
            }
        }
        for (i, r) in self.reads.iter().enumerate() {
            let Some(got) = r.got else { continue };
            let got_op = (got != Version::ZERO)
                .then(|| self.version_of_op.get(&got).copied())
                .flatten();
            if got != Version::ZERO && got_op.is_none() {
                return Err(format!("read #{i}: version {got:?} that nobody wrote"));
            }
            let floor = self
                .writes
                .iter()
                .filter(|w| w.key == r.key && w.acked && w.end.is_some_and(|e| e < r.start))
                .max_by_key(|w| w.start);
            let Some(floor) = floor else { continue };
            let stale = match got_op {
                None => true,
                Some(g) => {
                    let gw = &self.writes[g];
                    gw.acked && gw.end.is_some_and(|e| e < floor.start)
                }
            };
            if stale {
                return Err(format!(
                    "read #{i} of key {}: stale {got:?} after {floor:?}",
                    r.key
                ));
            }
        }
        Ok(())
    }
}

fn run_seed(seed: u64) -> Result<(), String> {
    let mut sim = Sim::new(seed);
    sim.run();
    sim.check()
}

#[test]
fn the_replication_protocol_holds_across_seeds() {
    let seeds = seeds::seeds("SIM", 300);
    for seed in seeds {
        if let Err(e) = run_seed(seed) {
            panic!("seed {seed}: {e}\nreplay: KV_SIM_SEED={seed} cargo test --test simulation");
        }
    }
}

/// The checker itself can fail: a replica that silently lost what it held, with no hint or
/// anti-entropy run afterwards, shows up as divergence. (With W = R = 1 the seeds above find
/// acknowledged writes lost to clock skew within the first seed: the protocol needs R + W > N.)
/// Seed 363 crashes a coordinator whose newest versions were stored by the other replicas but
/// not yet durable in its own log; without the clock lease it reissued one of them for another
/// value ("key 0: node0 holds v87, node1 v85" under one version), and nothing reconciled them.
#[test]
fn a_restarted_coordinator_never_reissues_a_version() {
    if let Err(e) = run_seed(363) {
        panic!("{e}");
    }
}

#[test]
fn the_checker_catches_a_replica_that_never_converges() {
    let mut sim = Sim::new(7);
    while sim.writes.len() < 20 {
        sim.tick(true);
    }
    // node2 silently loses everything it held; with no hints or anti-entropy run, the
    // replicas disagree
    sim.nodes[2].map = Map::new();
    assert!(sim.check().is_err(), "a wiped replica went unnoticed");
}

/// The storage fault model can fail the checker: a damaged replica that answers reads before
/// it was repaired returns the hole (an older version, or nothing) for an acknowledged write.
#[test]
fn the_checker_catches_a_damaged_replica_that_answers_reads() {
    let caught = (1..=300u64).any(|seed| {
        let mut sim = Sim::new(seed);
        sim.storage_fault_rate = 1.0;
        sim.gate_damaged_reads = false;
        sim.run();
        sim.check().is_err()
    });
    assert!(caught, "no seed caught a damaged replica answering reads");
}

/// The storage fault model can fail the checker through writes too: a damaged replica that
/// lost a key's newest acknowledged version, if it took replica writes before it was
/// repaired, lets a write with an older version (a coordinator whose clock is behind) win a
/// quorum with a replica that missed the newest one; that write is acknowledged and then
/// every read returns the version before it. Seed 1298 of the default rates (found by
/// `KV_SIM_SEEDS=2000`) is that run.
#[test]
fn the_checker_catches_a_damaged_replica_that_takes_writes() {
    let run = |gate: bool| {
        let mut sim = Sim::new(1298);
        sim.gate_damaged_writes = gate;
        sim.run();
        sim.check()
    };
    assert!(run(false).is_err(), "seed 1298 no longer shows the hole");
    assert_eq!(run(true), Ok(()));
}

/// The power-loss model can fail the checker: a node whose machine rebooted under it, if it
/// answered reads at once (its boot mark ignored), returns what it lost with the page cache.
#[test]
fn the_checker_catches_a_node_that_serves_reads_after_a_power_loss() {
    let caught = (1..=300u64).find(|&seed| {
        let mut sim = Sim::new(seed);
        sim.storage_fault_rate = 0.0;
        sim.power_loss_rate = 1.0;
        sim.gate_power_loss = false;
        sim.run();
        sim.check().is_err()
    });
    assert!(
        caught.is_some(),
        "no seed caught a node serving reads after a power loss"
    );
    eprintln!("caught at seed {caught:?}");
}
