//! The data-dir lock: one process per data dir, for that process's whole life.
//!
//! Owns: an exclusive `flock` on `DATA_DIR/LOCK`, taken before anything else in the dir is read
//! or written, and the holder's pid written into the file so a refused process can name it.
//! Two nodes sharing one dir would each replay, snapshot and delete the other's segments, losing
//! acknowledged writes (RocksDB's `LOCK`, etcd's WAL flock). The kernel drops the lock when the
//! process dies (kill -9 included): a stale file never blocks a restart.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Name of the lock file inside the data dir.
pub const LOCK_FILE: &str = "LOCK";

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "data dir {dir} is in use by another process{}; refusing to start (two processes on \
         one data dir lose acknowledged writes)",
        .holder.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    Held { dir: PathBuf, holder: Option<u32> },
    #[error("data dir {dir}: cannot lock {LOCK_FILE}: {source}")]
    Io {
        dir: PathBuf,
        source: std::io::Error,
    },
}

/// Holds the lock until dropped (the process exits).
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

impl DirLock {
    /// Create `dir` if needed and lock it, or say who holds it.
    pub fn acquire(dir: &Path) -> Result<DirLock, LockError> {
        let io = |source| LockError::Io {
            dir: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(LOCK_FILE))
            .map_err(io)?;
        // SAFETY: flock(2) on a descriptor we own; no memory is passed.
        let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if r != 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::WouldBlock {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(LockError::Held {
                    dir: dir.to_path_buf(),
                    holder: text.trim().parse().ok(),
                });
            }
            return Err(io(e));
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(DirLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_and_named_until_the_first_lets_go() {
        let dir = std::env::temp_dir().join(format!("kv-lock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let first = DirLock::acquire(&dir).expect("first lock");
        // flock locks belong to the open file description: a second open conflicts even
        // within one process, as a second process would.
        match DirLock::acquire(&dir) {
            Err(LockError::Held { holder, .. }) => {
                assert_eq!(holder, Some(std::process::id()));
            }
            other => panic!("expected Held, got {other:?}"),
        }
        drop(first);
        assert!(DirLock::acquire(&dir).is_ok(), "free again once dropped");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
