//! The I/O shells: glommio executors, sockets and cross-core messages around the pure core.
//!
//! Layout, by what each part owns:
//! - `front`: the client-facing side — accepting connections (`listener`), serving one
//!   (`connection`, with the `Front` trait and the native protocol), the Redis and original
//!   protocols (`resp_front`, `original_front`), who may ask what (`auth`), TLS (`tls`).
//! - `data`: the data path — one core's map, clock, WAL and hints (`shard`), quorum reads and
//!   writes (`coordinator`), what travels between cores (`messages`), online compaction
//!   (`compactor`) and hint delivery (`handoff`).
//! - `cluster`: other nodes — links to peers (`peer`), membership (`gossip`), joins and leaves
//!   (`topology`), the ring every core routes by (`view`), anti-entropy (`anti_entropy`).
//! - here: the per-core runtime (`runtime`: start, recover, snapshot, shutdown; `CoreCtx`),
//!   metrics (`metrics`), single-threaded wake-ups (`notify`).
//!
//! Policy lives in `core` and `storage`; nothing here decides who owns a key or which version
//! wins. Dependencies point one way: `front` and `cluster` call into `data`; `data` reaches
//! other nodes only through `cluster::peer` and the ring view.

pub mod clock_fence;
pub mod cluster;
pub mod data;
pub mod front;
pub mod metrics;
pub mod notify;
pub mod runtime;
pub mod wal_health;

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Instant;

/// Hand memory this thread freed back to the OS now (mimalloc otherwise purges it only on a
/// later allocation, so an idle node kept a large reply's pages). Called after a batch whose
/// replies held more than `OUT_BUFFER_KEEP_BYTES`, never on the small-request path.
pub fn give_back_memory() {
    // SAFETY: mi_collect only walks this thread's own heap; with another global allocator
    // (the library's tests) that heap is empty and the call does nothing.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

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
    /// `--auth-timeout-ms`: a connection must authenticate within it.
    pub auth_timeout_ms: u64,
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
    pub creds: Arc<crate::server::front::auth::Credentials>,
    /// `--tls-cert` and friends (`None`: plain TCP only).
    pub tls: Option<crate::server::front::tls::Tls>,
    /// WAL damage found and whether a repair is owed (`wal_health`).
    pub wal: wal_health::WalHealth,
    /// Whether this node's clock lets it write (`clock_fence`).
    pub clock: clock_fence::ClockFence,
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
    #[error("{0}")]
    WalCorrupt(String),
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
