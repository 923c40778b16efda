//! Crash points for tests: `KVSTORE_FAILPOINT=<name>` makes the process kill itself with
//! SIGKILL — exactly what `kill -9` does, nothing flushed — when it reaches the point `name`;
//! `<name>@<n>` at the n-th time it reaches it (so a test can get acknowledged writes in first).
//! Unset (always, outside crash tests) a point costs one comparison with a cached `None`.
//!
//! Points: `compaction:sealed`, `compaction:slice`, `compaction:synced`,
//! `compaction:removing` (after the first old segment is deleted), `compaction:removed`;
//! `wal:written` (a group of records is on the device, not yet synced, no writer told);
//! `replica:applied` (a replica write is applied and durable, its coordinator not answered);
//! `stream:sent` (mid-stream to a joining member: the first batch sent, the rest not).
//!
//! I/O errors instead of a crash: `KVSTORE_FAILPOINT=eio:<name>` makes the read at point
//! `name` fail with EIO (from the n-th time with `@n`): `replay:read` (a segment read during
//! replay at start), `scrub:read` (a sealed segment read by the scrubber).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// The armed point and the hit that kills (1: the first).
fn armed() -> Option<(&'static str, u64)> {
    static ARMED: OnceLock<Option<(String, u64)>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            let spec = std::env::var("KVSTORE_FAILPOINT").ok()?;
            Some(match spec.split_once('@') {
                Some((name, n)) => (name.to_string(), n.parse().unwrap_or(1).max(1)),
                None => (spec, 1),
            })
        })
        .as_ref()
        .map(|(name, n)| (name.as_str(), *n))
}

/// Die here, as if killed with SIGKILL, if this point is armed (and this is the hit that
/// kills).
pub fn hit(name: &str) {
    static HITS: AtomicU64 = AtomicU64::new(0);
    let Some((armed, at)) = armed() else {
        return;
    };
    if armed == name && HITS.fetch_add(1, Ordering::Relaxed) + 1 >= at {
        log::error!("failpoint {name}: killing the process");
        // SAFETY: kill(2) on our own pid with SIGKILL; it does not return.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
}

/// Fail with EIO here if `eio:<name>` is armed (from its n-th hit on).
pub fn eio(name: &str) -> std::io::Result<()> {
    static HITS: AtomicU64 = AtomicU64::new(0);
    let Some((armed, at)) = armed() else {
        return Ok(());
    };
    if armed.strip_prefix("eio:") == Some(name) && HITS.fetch_add(1, Ordering::Relaxed) + 1 >= at {
        log::error!("failpoint eio:{name}: failing the read");
        return Err(std::io::Error::from_raw_os_error(libc::EIO));
    }
    Ok(())
}
