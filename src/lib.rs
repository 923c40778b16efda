//! kvstore: a Dynamo-style, thread-per-core key-value store on io_uring.
//!
//! # Layout
//! - `limits`: every bound, named.
//! - `core`: pure logic (ring, versions); no I/O.
//! - `wire`: codecs (native binary protocol).
//! - `storage`: per-core map, WAL record format, replay, O_DIRECT writer.
//! - `server`: the glommio shells: runtime, listener, connections, cross-core messages.
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
