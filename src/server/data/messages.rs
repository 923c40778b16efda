//! What travels between cores of one node over their bounded `flume` channels.
//!
//! A connection's core batches the operations it needs from another core into one `Ops`
//! message per destination per batch of requests (Seastar/Dragonfly style), never one message
//! per request.

use glommio::net::AcceptedTcpStream;

use crate::core::consensus::command::Command;
use crate::core::consensus::{Ballot, Entry};
use crate::core::version::Version;
use crate::wire::native::Status;

/// An operation on a key, owned so it can cross threads.
#[derive(Debug)]
pub enum Op {
    Get {
        key: Box<[u8]>,
    },
    Put {
        key: Box<[u8]>,
        value: Box<[u8]>,
    },
    Delete {
        key: Box<[u8]>,
    },
    /// Store exactly this version (a replica write; `value: None` is a tombstone).
    ReplicaPut {
        key: Box<[u8]>,
        value: Option<Box<[u8]>>,
        version: Version,
    },
    /// The stored value or tombstone with its version.
    ReplicaGet {
        key: Box<[u8]>,
        /// Fields or members only (`wire::scan`-style list, `collection::encode_fields`);
        /// empty: the whole value.
        fields: Box<[u8]>,
    },
    /// Consensus, replica side: PREPARE (`accept: None`) or ACCEPT; the answer is encoded
    /// (`wire::consensus`) in a `Value`.
    Consensus {
        key: Box<[u8]>,
        ballot: Ballot,
        accept: Option<Entry>,
    },
    /// A conditional command run on the key's one replica (a node alone): atomic on its core.
    Conditional {
        key: Box<[u8]>,
        command: Command,
    },
    /// A collection write run on this replica's state (`data::collection`): the answer is the
    /// reply and the delta to ship (`data::collection::split_answer`).
    Collection {
        key: Box<[u8]>,
        command: crate::core::crdt::command::Command,
    },
}

impl Op {
    pub fn as_ref(&self) -> crate::server::data::shard::OpRef<'_> {
        use crate::server::data::shard::OpRef;
        match self {
            Op::Get { key } => OpRef::Get(key),
            Op::Put { key, value } => OpRef::Put(key, value),
            Op::Delete { key } => OpRef::Delete(key),
            Op::ReplicaPut {
                key,
                value,
                version,
            } => OpRef::ReplicaPut(key, value.as_deref(), *version),
            Op::ReplicaGet { key, fields } => OpRef::ReplicaGet(key, fields),
            Op::Consensus {
                key,
                ballot,
                accept,
            } => OpRef::Consensus(key, *ballot, accept.as_ref()),
            Op::Conditional { key, command } => OpRef::Conditional(key, command),
            Op::Collection { key, command } => OpRef::Collection(key, command),
        }
    }

    pub fn from_ref(op: crate::server::data::shard::OpRef<'_>) -> Op {
        use crate::server::data::shard::OpRef;
        match op {
            OpRef::Get(k) => Op::Get { key: k.into() },
            OpRef::Put(k, v) => Op::Put {
                key: k.into(),
                value: v.into(),
            },
            OpRef::Delete(k) => Op::Delete { key: k.into() },
            OpRef::ReplicaPut(k, v, version) => Op::ReplicaPut {
                key: k.into(),
                value: v.map(Box::from),
                version,
            },
            OpRef::ReplicaGet(k, fields) => Op::ReplicaGet {
                key: k.into(),
                fields: fields.into(),
            },
            OpRef::Consensus(k, ballot, accept) => Op::Consensus {
                key: k.into(),
                ballot,
                accept: accept.cloned(),
            },
            OpRef::Conditional(k, command) => Op::Conditional {
                key: k.into(),
                command: command.clone(),
            },
            OpRef::Collection(k, command) => Op::Collection {
                key: k.into(),
                command: command.clone(),
            },
        }
    }
}

/// The outcome of one operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpResult {
    Value {
        value: Box<[u8]>,
        version: Version,
    },
    NotFound,
    /// A replica read found a tombstone of this version.
    Tombstone {
        version: Version,
    },
    Written {
        was_live: bool,
        version: Version,
    },
    Stale {
        stored: Version,
    },
    Failed {
        status: Status,
        message: String,
    },
}

impl OpResult {
    /// What a client sees of a GET's result at `now_ms`: the live cell (value and expiry) and
    /// its version, or `None` when the key is missing, deleted or expired. An `Err` is stored
    /// bytes that are not a cell (a bug, answered as an internal error).
    pub fn live_cell(
        &self,
        now_ms: u64,
    ) -> Result<Option<(crate::core::cell::Cell<'_>, Version)>, crate::core::cell::CellError> {
        match self {
            OpResult::Value { value, version } => {
                let c = crate::core::cell::decode(value)?;
                if c.expired(now_ms) {
                    return Ok(None);
                }
                if c.kind == crate::core::cell::Kind::Collection {
                    // a collection with no live element is no key (as Redis deletes an
                    // emptied one)
                    let kind = crate::core::crdt::collection::Collection::of_cell(&c, *version)
                        .map_err(|_| crate::core::cell::CellError::BadTag(value[0]))?
                        .kind(now_ms);
                    return Ok(kind.is_some().then_some((c, *version)));
                }
                Ok(Some((c, *version)))
            }
            _ => Ok(None),
        }
    }
}

/// One core's counters, for `kv info`.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct CoreStats {
    pub core: usize,
    pub keys: usize,
    /// Memory of the core's map (keys, values, table): what `--max-memory` limits.
    pub memory_bytes: u64,
    /// Values held for replies not yet sent (counted toward `--max-memory` too).
    pub reply_bytes: u64,
    /// Hints held for other replicas.
    pub hints: usize,
    pub wal_bytes: u64,
    pub wal_syncs: u64,
    pub wal_writes: u64,
    pub wal_records: u64,
    /// Records per WAL device write (`wal_file::GROUP_BUCKETS`, then overflow).
    pub wal_group_sizes: [u64; crate::storage::wal_file::GROUP_BUCKETS.len() + 1],
    pub connections: usize,
}

pub enum CoreMsg {
    /// Execute `ops` in order on the owning core and answer with one result per op.
    Ops {
        ops: Vec<Op>,
        reply: flume::Sender<Vec<OpResult>>,
    },
    /// A client connection to serve on this core for its whole life.
    /// A client connection for this core; `over_limit`: it arrived past `--max-connections`
    /// and may only take an unauthenticated connection's slot.
    Conn {
        stream: AcceptedTcpStream,
        over_limit: bool,
    },
    Stats {
        reply: flume::Sender<CoreStats>,
    },
    /// `kv scrub`: one scrub pass over this core's sealed segments now.
    Scrub {
        reply: flume::Sender<crate::server::data::scrubber::Report>,
    },
    /// This core's metrics, for a scrape.
    Metrics {
        reply: flume::Sender<crate::server::metrics::MetricsSnapshot>,
    },
    /// Begin a clean shutdown.
    Shutdown,
    /// Core `from` has no client connections left.
    Drained {
        from: usize,
    },
    /// Membership changed: the ring every core routes by (sent by the gossip core).
    Ring(std::sync::Arc<crate::server::cluster::view::RingView>),
    /// Gossip received by another core, for the gossip core to merge; answered with its view.
    Gossip {
        /// The sender's node id (empty from an older node).
        from: String,
        updates: Vec<crate::core::membership::Update>,
        reply: flume::Sender<Vec<crate::core::membership::Update>>,
    },
    /// FLUSHALL's first phase: a version above every one this core issued or saw.
    ClockReading {
        reply: flume::Sender<crate::core::version::Version>,
    },
    /// FLUSHALL: drop this core's keys and hints at or below `floor` (`Shard::flush_below`);
    /// answered with the keys dropped.
    FlushBelow {
        floor: crate::core::version::Version,
        reply: flume::Sender<usize>,
    },
    /// A conditional command for a key this core owns (`data::consensus`).
    Propose {
        key: Box<[u8]>,
        command: Command,
        reply: flume::Sender<OpResult>,
    },
    /// SCAN: this core's keys whose ring hash is in `[lo, hi)`.
    RangeKeys {
        lo: u64,
        hi: u64,
        reply: flume::Sender<Vec<crate::server::data::scan::Entry>>,
    },
    /// Anti-entropy: this core's part of the hash tree of the keys shared with `peer`.
    AeTree {
        peer: String,
        reply: flume::Sender<crate::core::merkle::Tree>,
    },
    /// Anti-entropy: this core's (key, version) entries in `leaves` shared with `peer`.
    AeEntries {
        peer: String,
        leaves: Vec<u16>,
        reply: flume::Sender<Vec<(Box<[u8]>, Version)>>,
    },
    /// Stream this core's records to their pending owners (`only`: to that member alone).
    Stream {
        only: Option<String>,
        reply: flume::Sender<Result<u64, String>>,
    },
    /// Drop this core's copies of keys this node no longer replicates.
    Forget {
        reply: flume::Sender<Result<u64, String>>,
    },
    /// `kv leave` received by another core, for the gossip core.
    Leave {
        reply: flume::Sender<Result<u64, String>>,
    },
    /// An indirect probe request received by another core, for the gossip core.
    PingReq {
        target: String,
        reply: flume::Sender<bool>,
    },
}
