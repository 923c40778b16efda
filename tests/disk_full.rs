//! A full disk: writes are refused with a clear error, reads keep working, nothing acknowledged
//! is lost, and writes resume once space is freed. Needs root and loop devices (to mount a
//! small ext4 image); prints why and passes vacuously where the machine cannot.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use kvstore::client::Error as ClientError;
use kvstore::wire::native::Status;

struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn mount_small_ext4(dir: &Path, mib: u64) -> Option<Mount> {
    let img = dir.join("fs.img");
    let mnt = dir.join("mnt");
    std::fs::create_dir_all(&mnt).ok()?;
    let ok = |c: &mut Command| c.output().map(|o| o.status.success()).unwrap_or(false);
    if !ok(Command::new("truncate")
        .arg("-s")
        .arg(format!("{mib}M"))
        .arg(&img))
        || !ok(Command::new("mkfs.ext4").arg("-q").arg("-F").arg(&img))
        || !ok(Command::new("mount")
            .arg("-o")
            .arg("loop")
            .arg(&img)
            .arg(&mnt))
    {
        return None;
    }
    Some(Mount(mnt))
}

fn free_bytes(path: &Path) -> u64 {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: statvfs with a valid C string and a zeroed out-struct.
    unsafe {
        let mut s: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut s) != 0 {
            return 0;
        }
        s.f_bavail * s.f_frsize
    }
}

/// Fills the file system holding `path` with one file, then punches `leave` bytes back out of
/// it. Allocates in shrinking chunks until each size hits ENOSPC, so it does not depend on
/// what statvfs says is free (reserved blocks, metadata and the node's own background
/// allocation all move that figure).
fn fill_leaving(path: &Path, leave: i64) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::create(path).map_err(|e| format!("create {path:?}: {e}"))?;
    let fd = f.as_raw_fd();
    let mut offset: i64 = 0;
    for chunk in [64 << 20, 4 << 20, 256 << 10, 16 << 10, 4 << 10] {
        loop {
            // SAFETY: fallocate on a file we own, with a valid descriptor.
            if unsafe { libc::fallocate(fd, 0, offset, chunk) } == 0 {
                offset += chunk;
                continue;
            }
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::ENOSPC) {
                break;
            }
            return Err(format!("fallocate {chunk} bytes at {offset}: {err}"));
        }
    }
    if offset < leave {
        return Err(format!("only {offset} bytes could be filled"));
    }
    // SAFETY: as above; punching a hole frees the blocks and keeps the length.
    let rc = unsafe {
        libc::fallocate(
            fd,
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            0,
            leave,
        )
    };
    if rc != 0 {
        return Err(format!(
            "punching {leave} bytes back: {}",
            std::io::Error::last_os_error()
        ));
    }
    eprintln!(
        "filled {} MiB, left {} KiB free ({} bytes free by statvfs)",
        offset >> 20,
        leave >> 10,
        free_bytes(path.parent().unwrap_or(path))
    );
    Ok(())
}

#[test]
fn a_full_disk_refuses_writes_and_recovers_without_loss() -> TestResult {
    let dir = data_dir("disk-full");
    // Room for the old segments plus the snapshot written at restart: the first segment and
    // the one made ahead both fill before the disk does, and the snapshot takes three.
    let Some(mount) = mount_small_ext4(&dir, 500) else {
        eprintln!("skipped: cannot mount a loop ext4 image here (needs root and /dev/loop*)");
        return Ok(());
    };
    let data = mount.0.join("data");
    // Sized for the default 64 MiB segments (see above).
    let args = [
        "--cores",
        "1",
        "--fsync",
        "batch",
        "--wal-segment-bytes",
        "67108864",
    ];
    let mut node = Node::start("n1", &data, &args)?;
    // The WAL makes its next segment ahead, in the background: measure the free space once
    // both segments have their space (allocated blocks cover their length).
    let allocated_segments = || {
        use std::os::unix::fs::MetadataExt;
        let dir = data.join(kvstore::storage::core_dir_name(0));
        std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter(|e| {
                        kvstore::storage::parse_segment_file_name(&e.file_name().to_string_lossy())
                            .is_some()
                    })
                    .filter_map(|e| e.metadata().ok())
                    .filter(|m| m.len() > 0 && m.blocks() * 512 >= m.len())
                    .count()
            })
            .unwrap_or(0)
    };
    poll("the spare segment to be allocated", START_DEADLINE, || {
        (allocated_segments() >= 2).then_some(())
    })?;
    let filler = mount.0.join("filler");
    fill_leaving(&filler, 1024 * 1024)?;

    let mut c = node.client();
    let value = vec![b'v'; 512 * 1024];
    let mut acked = Vec::new();
    let mut refused = None;
    for i in 0..400 {
        let key = format!("key-{i}");
        match c.put(key.as_bytes(), &value) {
            Ok(_) => acked.push(key),
            Err(ClientError::Server { status, message }) => {
                refused = Some((status, message, i));
                break;
            }
            Err(e) => return Err(e.into()),
        }
    }
    let (status, message, at) = refused.ok_or("the disk never filled up")?;
    assert_eq!(status, Status::DiskFull, "{message}");
    assert!(message.contains("disk full"), "{message}");
    assert!(
        acked.len() > 50,
        "the first segment was usable: {}",
        acked.len()
    );
    // while full: further writes refused at once, reads fine
    assert!(matches!(
        c.put(b"more", b"x"),
        Err(ClientError::Server {
            status: Status::DiskFull,
            ..
        })
    ));
    assert_eq!(c.get(acked[0].as_bytes())?.as_deref(), Some(&value[..]));

    std::fs::remove_file(&filler)?;
    poll(
        "writes to resume after space is freed",
        START_DEADLINE,
        || c.put(b"after", b"space").ok(),
    )?;
    for key in &acked {
        assert_eq!(c.get(key.as_bytes())?.as_deref(), Some(&value[..]), "{key}");
    }
    drop(c);
    assert!(node.terminate()?.success());
    node.spawn()?;
    let mut c = node.client();
    for key in &acked {
        assert_eq!(
            c.get(key.as_bytes())?.as_deref(),
            Some(&value[..]),
            "{key} after restart"
        );
    }
    assert_eq!(c.get(b"after")?, Some(b"space".to_vec()));
    eprintln!(
        "disk full after {at} writes of 512 KiB; {} acknowledged, none lost",
        acked.len()
    );
    drop(c);
    node.kill9();
    Ok(())
}
