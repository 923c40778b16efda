//! Crash points for tests: `KVSTORE_FAILPOINT=<name>` makes the process kill itself with
//! SIGKILL — exactly what `kill -9` does, nothing flushed — when it reaches the point `name`.
//! Unset (always, outside crash tests) a point costs one comparison with a cached `None`.
//!
//! Points: `compaction:sealed`, `compaction:slice`, `compaction:synced`,
//! `compaction:removing` (after the first old segment is deleted), `compaction:removed`.

use std::sync::OnceLock;

fn armed() -> Option<&'static str> {
    static ARMED: OnceLock<Option<String>> = OnceLock::new();
    ARMED
        .get_or_init(|| std::env::var("KVSTORE_FAILPOINT").ok())
        .as_deref()
}

/// Die here, as if killed with SIGKILL, if this point is armed.
pub fn hit(name: &str) {
    if armed() == Some(name) {
        log::error!("failpoint {name}: killing the process");
        // SAFETY: kill(2) on our own pid with SIGKILL; it does not return.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
}
