//! Storage: each core's in-memory map and its write-ahead log.
//!
//! Layout: `dir_lock` (one process per data dir), `compaction` (when to compact and what it
//! may drop, pure), `hints` (hinted handoff's store, pure), `record` (the WAL record format, pure), `map` (versioned map, pure), `recovery`
//! (replay of segment files at start, std I/O before executors run), `wal_file` (the O_DIRECT
//! group-commit writer on glommio).

pub mod acceptors;
pub mod boot_mark;
pub mod clock_lease;
pub mod compaction;
pub mod dir_lock;
pub mod flush_floor;
pub mod hints;
pub mod map;
pub mod record;
pub mod recovery;
pub mod stage;
pub mod wal_file;

use std::path::PathBuf;

/// Storage errors, with the file (or directory) where they apply.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("disk full writing the wal in {dir}; writes resume when space is freed")]
    DiskFull { dir: PathBuf },
    #[error("wal write failed earlier ({cause}); this core refuses writes until restart")]
    Poisoned { cause: String },
    #[error("i/o error on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("node is shutting down")]
    ShuttingDown,
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// Name of the directory holding core `i`'s segments.
pub fn core_dir_name(core: usize) -> String {
    format!("core-{core}")
}

/// File name of segment `id`: ids are unique across all core directories of a node.
pub fn segment_file_name(id: u64) -> String {
    format!("wal-{id:016x}.log")
}

/// Parse a segment id back out of a file name.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let hex = name.strip_prefix("wal-")?.strip_suffix(".log")?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}
