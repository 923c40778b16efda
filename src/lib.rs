//! kvstore: a Dynamo-style, thread-per-core key-value store on io_uring.
//!
//! # Layout (lower layers never import upper ones)
//! - `limits`: every bound, named, with its unit.
//! - `core` (pure, deterministic, no I/O): `ring` (MurmurHash3 ring, vnodes to cores),
//!   `cluster_ring` (members to preference lists), `version` (HLC, skew bound), `quorum`
//!   (N/R/W, tallies), `round` (the coordinator's write and read rounds), `membership` (SWIM
//!   rules, ring roles, founding), `merkle` (anti-entropy trees), `cell` (a stored value and
//!   its expiry).
//! - `wire` (codecs): `native` (the binary protocol, opcodes, flags), `resp` (RESP framing),
//!   `original` (the original design's protocol).
//! - `storage`: `map` (one core's LWW map and expiry index), `record` (the WAL record format),
//!   `wal_file` (the O_DIRECT group-commit writer), `recovery` (replay), `compaction` (when and
//!   what), `hints` (hinted handoff store), `dir_lock` (one process per data dir).
//! - `server` (the glommio shells): `runtime` (start, per-core context, shutdown), `front`
//!   (listener, connection loop, the Redis command table in `resp_front` and its expiry
//!   commands in `resp_expiry`, the original front, auth, TLS), `data` (shard, coordinator,
//!   read-modify-write `update`, cross-core messages and `hops` (one message per core per
//!   turn), SCAN, compactor, hint delivery, expiry sweep), `cluster` (peer links, gossip, ring
//!   views, join/leave topology, anti-entropy),
//!   `metrics`, `notify`.
//! - `client`: the blocking Rust client used by `kv` and the tests.
//! - `config`: the node's command line.
//! - `failpoint`: crash points for crash tests (`KVSTORE_FAILPOINT`).
//! - `fuzz_targets`: every external decoder's promises, for AFL++ (`fuzz/`) and the corpus
//!   replay in `cargo test`.

pub mod certs;
pub mod client;
pub mod config;
pub mod core;
pub mod failpoint;
pub mod fuzz_targets;
pub mod limits;
pub mod server;
pub mod storage;
pub mod wire;

/// A fresh directory for a unit test, under `target/` (a tmpfs `/tmp` would lose O_DIRECT).
#[cfg(test)]
pub(crate) fn test_dir(name: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/unit-tmp")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create test dir");
    dir
}

/// Run a unit test's future on a glommio executor of its own thread (with the node's I/O
/// memory), and wait for it.
#[cfg(test)]
pub(crate) fn on_executor<G, F>(f: G)
where
    G: FnOnce() -> F + Send + 'static,
    F: std::future::Future<Output = ()> + 'static,
{
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(crate::limits::IO_MEMORY_BYTES_PER_CORE)
        .spawn(f)
        .expect("executor")
        .join()
        .expect("join");
}
