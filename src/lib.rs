//! kvstore: a Dynamo-style, thread-per-core key-value store on io_uring.
//!
//! # Layout
//! - `limits`: every bound, named, with its unit.
//! - `core`: pure, deterministic logic: ring and cluster ring, versions (HLC), quorum counting,
//!   membership (SWIM rules, ring roles, founding), Merkle trees for anti-entropy. No I/O.
//! - `wire`: codecs: native binary protocol, RESP, the original design's protocol.
//! - `storage`: per-core map (LWW), WAL record format, replay, the O_DIRECT group-commit
//!   writer, compaction policy, hint store, the data-dir lock. Pure except the writer, replay and
//!   the lock.
//! - `server`: the glommio shells: runtime (start, snapshot, shutdown), listener, connection and
//!   the Redis/original fronts, auth, shard (one core's map/clock/WAL), coordinator (quorum
//!   reads and writes, hints), peer links, gossip and topology (join/leave), handoff (hint
//!   delivery), anti-entropy, compactor, metrics.
//! - `client`: the blocking Rust client used by `kv` and the tests.
//! - `config`: the node's command line.
//! - `failpoint`: crash points for crash tests (`KVSTORE_FAILPOINT`).

pub mod client;
pub mod config;
pub mod core;
pub mod failpoint;
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
