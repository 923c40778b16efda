//! The data dir's flush floor (`flush.floor`): the version of the last FLUSHALL this node
//! took part in. Nothing written at or below it is stored again, from any path (a late hint,
//! anti-entropy, a replica write in flight, WAL replay): `storage::map::Map::flush_below`.
//!
//! Owns: writing it durably before the node drops a key (so a crash after FLUSHALL answered
//! can never bring a key back through replay) and reading it at start. Never decides when a
//! flush happens (`server::data::flush`).

use std::fs;
use std::path::Path;

use crate::core::version::Version;
use crate::storage::recovery::sync_dir;
use crate::storage::Error;

pub const FLOOR_FILE: &str = "flush.floor";

/// The floor recorded in `data_dir` (`Version::ZERO` if it never flushed). A file that does not
/// parse is an error: starting without it could replay flushed keys.
pub fn read(data_dir: &Path) -> Result<Version, Error> {
    let path = data_dir.join(FLOOR_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Version::ZERO),
        Err(e) => return Err(Error::io(&path, e)),
    };
    let bad = || {
        Error::io(
            &path,
            std::io::Error::new(std::io::ErrorKind::InvalidData, "not `<hlc> <writer>`"),
        )
    };
    let (hlc, writer) = text.trim().split_once(' ').ok_or_else(bad)?;
    Ok(Version {
        hlc: hlc.parse().map_err(|_| bad())?,
        writer: writer.parse().map_err(|_| bad())?,
    })
}

/// Record `floor` durably (file and directory synced), unless a higher one is recorded.
pub fn write(data_dir: &Path, floor: Version) -> Result<(), Error> {
    if read(data_dir)? >= floor {
        return Ok(());
    }
    let path = data_dir.join(FLOOR_FILE);
    let tmp = data_dir.join(format!("{FLOOR_FILE}.tmp"));
    fs::write(&tmp, format!("{} {}\n", floor.hlc, floor.writer)).map_err(|e| Error::io(&tmp, e))?;
    fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(&tmp, e))?;
    fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
    sync_dir(data_dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_only_rises_and_garbage_is_an_error() {
        let dir = crate::test_dir("flush-floor");
        assert_eq!(read(&dir).unwrap(), Version::ZERO);
        let v = |hlc| Version { hlc, writer: 7 };
        write(&dir, v(10)).unwrap();
        assert_eq!(read(&dir).unwrap(), v(10));
        write(&dir, v(5)).unwrap();
        assert_eq!(read(&dir).unwrap(), v(10));
        fs::write(dir.join(FLOOR_FILE), "ten").unwrap();
        assert!(read(&dir).is_err());
    }
}
