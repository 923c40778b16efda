//! One core's clock lease on disk (`core-<i>/clock-lease`): the physical time (ms) below which
//! the core may have issued versions that left the node before they were durable in its own
//! WAL (a coordinator's replica writes; `core::version` says why that needs a lease).
//!
//! Owns: the file and its format — the lease as 8 bytes little-endian, then their CRC32.
//! Written whole before the versions it covers are issued: a temporary file, fsync, rename,
//! directory fsync. Read once at start. Never: decides when a lease is needed (the clock does)
//! or runs on a core's executor thread (the shell calls `write` on the blocking pool).

use std::fs;
use std::io::Write;
use std::path::Path;

use crate::storage::recovery::sync_dir;
use crate::storage::Error;

pub const FILE_NAME: &str = "clock-lease";
const TEMP_NAME: &str = "clock-lease.tmp";
/// The file: the lease (u64) and its CRC32.
const LEASE_FILE_BYTES: usize = 8 + 4;

/// The lease recorded in `dir` (0 when there is none yet). A file that fails its CRC is an
/// error, not a zero: starting below a lease could reissue versions.
pub fn read(dir: &Path) -> Result<u64, Error> {
    let path = dir.join(FILE_NAME);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(Error::io(&path, e)),
    };
    decode(&bytes).ok_or_else(|| {
        let why = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "corrupt clock lease (a u64 and its CRC expected); if the WAL is intact, remove \
             the file and start the node once its wall clock has passed the newest version \
             it issued",
        );
        Error::io(&path, why)
    })
}

/// Record `until_ms` durably in `dir`. A full disk is `Error::DiskFull` (writes are refused
/// as for the WAL, and resume once space is freed).
pub fn write(dir: &Path, until_ms: u64) -> Result<(), Error> {
    let temp = dir.join(TEMP_NAME);
    let failed = |e: std::io::Error| {
        if e.raw_os_error() == Some(libc::ENOSPC) || e.kind() == std::io::ErrorKind::StorageFull {
            Error::DiskFull {
                dir: dir.to_path_buf(),
            }
        } else {
            Error::io(&temp, e)
        }
    };
    let mut f = fs::File::create(&temp).map_err(failed)?;
    f.write_all(&encode(until_ms))
        .and_then(|_| f.sync_all())
        .map_err(failed)?;
    let path = dir.join(FILE_NAME);
    fs::rename(&temp, &path).map_err(|e| Error::io(&path, e))?;
    sync_dir(dir)
}

fn encode(until_ms: u64) -> [u8; LEASE_FILE_BYTES] {
    let mut out = [0u8; LEASE_FILE_BYTES];
    out[..8].copy_from_slice(&until_ms.to_le_bytes());
    let crc = crc32fast::hash(&out[..8]);
    out[8..].copy_from_slice(&crc.to_le_bytes());
    out
}

fn decode(bytes: &[u8]) -> Option<u64> {
    let b: &[u8; LEASE_FILE_BYTES] = bytes.try_into().ok()?;
    let crc = u32::from_le_bytes([b[8], b[9], b[10], b[11]]);
    (crc32fast::hash(&b[..8]) == crc)
        .then(|| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_round_trips_and_a_damaged_one_is_refused() -> Result<(), Error> {
        let dir = crate::test_dir("clock-lease");
        assert_eq!(read(&dir)?, 0, "none yet");
        write(&dir, 1_234_567)?;
        assert_eq!(read(&dir)?, 1_234_567);
        write(&dir, 2_000_000)?;
        assert_eq!(read(&dir)?, 2_000_000);
        let path = dir.join(FILE_NAME);
        let mut bytes = fs::read(&path).map_err(|e| Error::io(&path, e))?;
        bytes[0] ^= 1;
        fs::write(&path, &bytes).map_err(|e| Error::io(&path, e))?;
        assert!(read(&dir).is_err(), "a flipped bit");
        fs::write(&path, &bytes[..5]).map_err(|e| Error::io(&path, e))?;
        assert!(read(&dir).is_err(), "a torn file");
        Ok(())
    }
}
