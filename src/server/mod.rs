//! The I/O shells: glommio executors, sockets and cross-core messages around the pure core.
//!
//! Layout: `runtime` (start, recover, snapshot, shutdown), `listener` (accept, hand
//! connections to cores), `connection` (one client connection: read, decode, dispatch, reply; the
//! `Front` trait), `resp_front` and `original_front` (the Redis and original-design protocols),
//! `shard` (one core's map, clock and WAL: executes operations), `compactor` (one core's
//! online WAL compaction), `handoff` (delivering hints), `messages` (what travels
//! between cores), `notify` (single-threaded wake-ups). Policy lives in `core`; nothing here
//! decides who owns a key or which version wins.

pub mod anti_entropy;
pub mod auth;
pub mod compactor;
pub mod connection;
pub mod coordinator;
pub mod gossip;
pub mod handoff;
pub mod listener;
pub mod messages;
pub mod metrics;
pub mod notify;
pub mod original_front;
pub mod peer;
pub mod resp_front;
pub mod runtime;
pub mod shard;
pub mod tls;
pub mod topology;
pub mod view;

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Instant;

/// Milliseconds since the Unix epoch: the wall clock the shells pass into `core` (which
/// never reads a clock itself).
pub fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Facts about the node shared read-only by every core (and the open-connection count).
pub struct NodeInfo {
    pub node_id: String,
    pub addr: std::net::SocketAddr,
    pub cores: usize,
    pub started: Instant,
    pub max_value_bytes: usize,
    pub max_connections: usize,
    pub idle_timeout_ms: u64,
    /// Open client connections across all cores (touched on open and close only).
    pub connections: Arc<AtomicUsize>,
    /// The address other nodes reach us at.
    pub advertise: String,
    pub fsync: crate::storage::wal_file::FsyncMode,
    /// `--wal-segment-bytes` and `--tombstone-grace-ms`.
    pub wal_segment_bytes: u64,
    pub tombstone_grace_ms: u64,
    /// `--max-memory` (`None`: off), split evenly among the cores.
    pub max_memory: Option<u64>,
    /// `--anti-entropy-interval-ms`.
    pub anti_entropy_interval_ms: u64,
    /// Start time (ms since the epoch) of the last anti-entropy round that completed with every
    /// member: tombstones older than it are on every replica, so compaction may purge them.
    pub repaired_through_ms: std::sync::atomic::AtomicU64,
    /// Password, cluster secret, protected mode.
    pub creds: Arc<crate::server::auth::Credentials>,
    /// `--tls-cert` and friends (`None`: plain TCP only).
    pub tls: Option<crate::server::tls::Tls>,
}

/// Runtime errors of the node daemon.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "port {addr} is already in use (another node or program listens there); refusing to start"
    )]
    PortInUse { addr: std::net::SocketAddr },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error(
        "cannot start io_uring executor {core}: {cause}. io_uring needs locked memory: raise \
         `ulimit -l` (memlock; Docker: --ulimit memlock=-1), make sure io_uring is not disabled \
         (sysctl kernel.io_uring_disabled=0) and, in containers, allowed by the seccomp profile \
         (Docker 25+ blocks it by default: run with --security-opt \
         seccomp=docker/seccomp-io-uring.json)"
    )]
    Executor { core: usize, cause: String },
    #[error("storage: {0}")]
    Storage(#[from] crate::storage::Error),
    #[error("core {core} failed: {cause}")]
    Core { core: usize, cause: String },
}

/// Loud but bounded: a warning that could repeat on every request (a peer's wrong clock, a
/// replica left out) is said at most once per `WARN_LOG_INTERVAL_MS`, with a count of what was
/// held back.
#[derive(Default)]
pub struct LogThrottle {
    last: std::cell::Cell<Option<Instant>>,
    held: std::cell::Cell<u64>,
}

impl LogThrottle {
    /// `Some(suffix)` when a line is due (the suffix counts the lines held back since).
    pub fn due(&self) -> Option<String> {
        let every = std::time::Duration::from_millis(crate::limits::WARN_LOG_INTERVAL_MS);
        if self.last.get().is_some_and(|t| t.elapsed() < every) {
            self.held.set(self.held.get() + 1);
            return None;
        }
        self.last.set(Some(Instant::now()));
        let held = self.held.replace(0);
        Some(if held > 0 {
            format!(" ({held} more since the last warning)")
        } else {
            String::new()
        })
    }
}
