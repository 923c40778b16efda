//! When a core compacts its WAL and what a compaction may drop. Pure policy: no I/O, no clock
//! (the caller passes sizes and times in). The shell that carries it out is
//! `server::data::compactor`.
//!
//! A core's WAL holds every record it appended since its last snapshot: overwrites and deletes
//! leave the superseded records behind. Compaction writes the core's map (its live values and
//! the tombstones still inside their grace period) as fresh records after a boundary segment,
//! waits until they are synced, then deletes every segment before the boundary. Replay is
//! last-write-wins by version, so the order of snapshot records and concurrent writes after the
//! boundary does not matter, and a crash at any step replays to the acknowledged state: before
//! the deletion the old segments are still there; after it, the snapshot holds what they held.
//!
//! Tombstones older than the grace period are purged (not written, dropped from the map),
//! Cassandra's `gc_grace_seconds` rule: a replica that missed the delete must be repaired
//! within the grace period, or the deleted value can come back from it.

/// Whether a WAL holding `wal_bytes` of records should be compacted, given that a snapshot of
/// the map takes `map_bytes`: once the WAL is more than `ratio` times the snapshot and larger
/// than `floor_bytes` (so a small data set does not compact over and over).
pub fn due(wal_bytes: u64, map_bytes: u64, ratio: u64, floor_bytes: u64) -> bool {
    assert!(
        ratio >= 2,
        "a ratio below 2 would compact a freshly compacted WAL again"
    );
    wal_bytes > floor_bytes && wal_bytes > map_bytes.saturating_mul(ratio)
}

/// Whether a tombstone written at `version_ms` (its version's physical time) may be purged at
/// `now_ms`: it is older than the grace period.
pub fn purgeable(version_ms: u64, now_ms: u64, grace_ms: u64) -> bool {
    now_ms.saturating_sub(version_ms) > grace_ms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compacts_past_the_ratio_and_the_floor_only() {
        let mib = 1 << 20;
        // 1 MiB live, floor 64 MiB: garbage up to the floor is tolerated
        assert!(!due(64 * mib, mib, 2, 64 * mib));
        assert!(due(64 * mib + 1, mib, 2, 64 * mib));
        // large live data: the ratio decides, at and just past it
        assert!(!due(200 * mib, 100 * mib, 2, 64 * mib));
        assert!(due(200 * mib + 1, 100 * mib, 2, 64 * mib));
        // right after a compaction the WAL is the snapshot plus a little: not due again
        assert!(!due(100 * mib + mib, 100 * mib, 2, 64 * mib));
    }

    #[test]
    fn tombstones_are_purged_only_past_the_grace() {
        assert!(!purgeable(1_000, 1_000 + 500, 500), "at the grace: kept");
        assert!(purgeable(1_000, 1_000 + 501, 500), "just past it: purged");
        assert!(
            !purgeable(5_000, 1_000, 500),
            "a version from the future is kept"
        );
    }
}
