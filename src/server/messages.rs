//! What travels between cores of one node over their bounded `flume` channels.
//!
//! A connection's core batches the operations it needs from another core into one `Ops`
//! message per destination per batch of requests (Seastar/Dragonfly style), never one message
//! per request.

use glommio::net::AcceptedTcpStream;

use crate::core::version::Version;
use crate::wire::native::Status;

/// An operation on a key, owned so it can cross threads.
#[derive(Debug)]
pub enum Op {
    Get { key: Box<[u8]> },
    Put { key: Box<[u8]>, value: Box<[u8]> },
    Delete { key: Box<[u8]> },
}

/// The outcome of one operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpResult {
    Value { value: Box<[u8]>, version: Version },
    NotFound,
    Written { was_live: bool, version: Version },
    Stale { stored: Version },
    Failed { status: Status, message: String },
}

/// One core's counters, for `kv info`.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct CoreStats {
    pub core: usize,
    pub keys: usize,
    pub wal_bytes: u64,
    pub wal_syncs: u64,
    pub wal_writes: u64,
    pub connections: usize,
}

pub enum CoreMsg {
    /// Execute `ops` in order on the owning core and answer with one result per op.
    Ops {
        ops: Vec<Op>,
        reply: flume::Sender<Vec<OpResult>>,
    },
    /// A client connection to serve on this core for its whole life.
    Conn(AcceptedTcpStream),
    Stats {
        reply: flume::Sender<CoreStats>,
    },
    /// Begin a clean shutdown.
    Shutdown,
    /// Core `from` has no client connections left.
    Drained {
        from: usize,
    },
}
