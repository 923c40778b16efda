//! The data dir's boot mark (`running.boot`): the boot id (`/proc/sys/kernel/random/boot_id`)
//! of the machine boot a node runs in, written before it serves and removed after a clean
//! shutdown.
//!
//! Owns: reading the current boot id, and writing, reading and removing the mark durably. A
//! mark left behind means the last run did not stop cleanly; a mark from another boot means
//! the machine went down under it (a power loss, a kernel panic, a hard reset), so the page
//! cache's share of that run (staged records not yet in a segment, segment writes not yet
//! synced) may be gone. `core::wal_damage::power_loss_suspected` decides from these; this
//! module never decides what the node does about it.
//!
//! A container restart keeps the host's boot id, as it keeps the page cache: only a reboot of
//! the machine changes it.

use std::fs;
use std::path::Path;

use crate::storage::recovery::sync_dir;
use crate::storage::Error;

/// The mark's file name in the data dir.
pub const MARK_FILE: &str = "running.boot";
/// Where Linux publishes the current boot's id.
const BOOT_ID_PATH: &str = "/proc/sys/kernel/random/boot_id";
/// A boot id is a UUID (36 bytes); a mark longer than this is not one.
const BOOT_ID_MAX_BYTES: usize = 64;

/// The id of the machine's current boot, if the kernel tells it.
pub fn current() -> Option<String> {
    let id = fs::read_to_string(BOOT_ID_PATH).ok()?;
    let id = id.trim();
    (!id.is_empty() && id.len() <= BOOT_ID_MAX_BYTES).then(|| id.to_string())
}

/// The boot id in the mark the last run left: `Ok(None)` when it stopped cleanly (or there was
/// no last run). A mark that is not a boot id reads as an unknown boot (`Some("")`).
pub fn left_behind(data_dir: &Path) -> Result<Option<String>, Error> {
    let path = data_dir.join(MARK_FILE);
    match fs::read(&path) {
        Ok(bytes) => {
            let id = String::from_utf8_lossy(&bytes).trim().to_string();
            Ok(Some(if id.len() <= BOOT_ID_MAX_BYTES {
                id
            } else {
                String::new()
            }))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(&path, e)),
    }
}

/// Mark the data dir as running in boot `id`, durably (file and directory synced).
pub fn mark_running(data_dir: &Path, id: &str) -> Result<(), Error> {
    let path = data_dir.join(MARK_FILE);
    let tmp = data_dir.join(format!("{MARK_FILE}.tmp"));
    fs::write(&tmp, format!("{id}\n")).map_err(|e| Error::io(&tmp, e))?;
    fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(&tmp, e))?;
    fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
    sync_dir(data_dir)
}

/// Remove the mark after a clean shutdown (everything staged reached its segment and was
/// synced), durably.
pub fn mark_stopped(data_dir: &Path) -> Result<(), Error> {
    let path = data_dir.join(MARK_FILE);
    match fs::remove_file(&path) {
        Ok(()) => sync_dir(data_dir),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(&path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_is_left_until_a_clean_stop() {
        let dir = crate::test_dir("boot-mark-clean");
        assert_eq!(left_behind(&dir).unwrap(), None);
        mark_running(&dir, "boot-1").unwrap();
        assert_eq!(left_behind(&dir).unwrap().as_deref(), Some("boot-1"));
        mark_stopped(&dir).unwrap();
        assert_eq!(left_behind(&dir).unwrap(), None);
        mark_stopped(&dir).unwrap();
    }

    #[test]
    fn a_mark_longer_than_a_boot_id_reads_as_an_unknown_boot() {
        let dir = crate::test_dir("boot-mark-long");
        let at_bound = "x".repeat(BOOT_ID_MAX_BYTES);
        fs::write(dir.join(MARK_FILE), &at_bound).unwrap();
        assert_eq!(left_behind(&dir).unwrap(), Some(at_bound));
        fs::write(dir.join(MARK_FILE), "x".repeat(BOOT_ID_MAX_BYTES + 1)).unwrap();
        assert_eq!(left_behind(&dir).unwrap().as_deref(), Some(""));
    }

    #[test]
    fn this_machine_tells_its_boot_id() {
        let id = current().expect("linux publishes a boot id");
        assert_eq!(id.len(), 36, "{id}");
    }
}
