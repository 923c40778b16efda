//! Versions and the hybrid logical clock (HLC).
//!
//! Owns: the `Version` order used by last-write-wins and the clock that issues versions.
//! Never reads the wall clock itself: the caller passes physical milliseconds in.
//!
//! A version is `hlc = physical_ms << 16 | counter` plus the writer id (node hash | core index),
//! which breaks ties, so two writers never issue equal versions. A clock never goes backwards and
//! moves past every version it observes, so one writer's versions strictly increase — except a
//! version more than `MAX_CLOCK_SKEW_MS` ahead of our physical time: that is refused, not
//! adopted (`Ahead`), so one node with a fast wall clock cannot drag every clock it talks to
//! into the future (where their own replicas would then refuse their writes).
//!
//! Across a crash, versions stay unique through a lease: a version that leaves this node
//! before it is durable here (a coordinator's replica writes) is issued only below a lease the
//! shell made durable first (`tick_leased`; each lease covers `CLOCK_LEASE_MS` more), and a
//! restarted clock resumes past the last lease (`resume_after`). Without it, a node whose
//! newest versions were lost from its own WAL but stored by other replicas could issue the
//! same versions again, for other values: replicas would then hold different values under one
//! version, and nothing would ever reconcile them (found by the simulation's crash model).

use crate::limits::{CLOCK_LEASE_MS, MAX_CLOCK_SKEW_MS};

/// A version further ahead of our physical time than `MAX_CLOCK_SKEW_MS` (its writer's clock
/// is wrong, or ours is): never adopted by a clock nor stored by a replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "version {ahead_ms} ms ahead of this node's clock (at most {MAX_CLOCK_SKEW_MS} ms accepted)"
)]
pub struct Ahead {
    pub ahead_ms: u64,
}

/// Whether `version` is acceptable at physical time `physical_ms` (not too far ahead).
pub fn check_skew(version: Version, physical_ms: u64) -> Result<(), Ahead> {
    let ahead_ms = version.physical_ms().saturating_sub(physical_ms);
    if ahead_ms > MAX_CLOCK_SKEW_MS {
        return Err(Ahead { ahead_ms });
    }
    Ok(())
}

/// Bits of the HLC used by the logical counter.
pub const COUNTER_BITS: u32 = 16;

/// A total order over writes: newer wins (Dynamo §4.4, simplified to last-write-wins).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Version {
    pub hlc: u64,
    pub writer: u32,
}

impl Version {
    pub const ZERO: Version = Version { hlc: 0, writer: 0 };

    /// Physical milliseconds of this version.
    pub fn physical_ms(&self) -> u64 {
        self.hlc >> COUNTER_BITS
    }

    /// A bare clock reading (no writer): how a GOSSIP answer tells the prober our time.
    pub fn at_physical_ms(physical_ms: u64) -> Version {
        Version {
            hlc: physical_ms << COUNTER_BITS,
            writer: 0,
        }
    }
}

/// A writer id: the upper 24 bits identify the node, the low byte the core.
pub fn writer_id(node_id: &str, core: usize) -> u32 {
    (crate::core::ring::hash(node_id.as_bytes()) & 0xFFFF_FF00) | (core as u32 & 0xFF)
}

/// A hybrid logical clock owned by one core.
#[derive(Clone, Debug)]
pub struct Clock {
    last: u64,
    writer: u32,
    /// Versions with a physical part below this may be issued by `tick_leased` (ms).
    lease_ms: u64,
}

/// `tick_leased` needs a durable lease up to `until_ms` first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NeedLease {
    pub until_ms: u64,
}

impl Clock {
    pub fn new(writer: u32) -> Clock {
        Clock {
            last: 0,
            writer,
            lease_ms: 0,
        }
    }

    /// `tick`, for a version that may leave this node before it is durable here: only below
    /// the lease. Past it, the lease to make durable (then `grant_lease`) before trying again.
    pub fn tick_leased(&mut self, physical_ms: u64) -> Result<Version, NeedLease> {
        let next_ms = physical_ms.max((self.last + 1) >> COUNTER_BITS);
        if next_ms >= self.lease_ms {
            return Err(NeedLease {
                until_ms: next_ms + CLOCK_LEASE_MS,
            });
        }
        Ok(self.tick(physical_ms))
    }

    /// The lease up to `until_ms` is durable.
    pub fn grant_lease(&mut self, until_ms: u64) {
        self.lease_ms = self.lease_ms.max(until_ms);
    }

    /// After a restart: never issue a version below the last durable lease `lease_ms` (which
    /// bounds every version issued before the crash that could have left this node).
    pub fn resume_after(&mut self, lease_ms: u64) {
        self.last = self.last.max(lease_ms << COUNTER_BITS);
    }

    /// Issue a new version, strictly greater than every version issued or observed before.
    pub fn tick(&mut self, physical_ms: u64) -> Version {
        let wall = physical_ms << COUNTER_BITS;
        self.last = if wall > self.last {
            wall
        } else {
            self.last + 1
        };
        Version {
            hlc: self.last,
            writer: self.writer,
        }
    }

    /// Move the clock past `seen` (a version read from the WAL or a replica), unless `seen` is
    /// more than `MAX_CLOCK_SKEW_MS` ahead of `physical_ms`: then the clock stays put.
    pub fn observe(&mut self, seen: Version, physical_ms: u64) -> Result<(), Ahead> {
        check_skew(seen, physical_ms)?;
        if seen.hlc > self.last {
            self.last = seen.hlc;
        }
        Ok(())
    }

    /// Issue a version strictly newer than `floor` (used when a write must supersede it), or
    /// `Ahead` when `floor` is too far in the future to pass.
    pub fn tick_past(&mut self, physical_ms: u64, floor: Version) -> Result<Version, Ahead> {
        self.observe(floor, physical_ms)?;
        let v = self.tick(physical_ms);
        debug_assert!(v > floor);
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_strictly_increase_within_one_millisecond() {
        let mut c = Clock::new(7);
        let mut prev = c.tick(1000);
        for _ in 0..10_000 {
            let v = c.tick(1000);
            assert!(v > prev);
            prev = v;
        }
        assert_eq!(prev.physical_ms(), 1000 + (10_000 >> COUNTER_BITS));
    }

    #[test]
    fn leased_versions_stay_below_the_lease_and_a_restart_resumes_past_it() {
        let mut c = Clock::new(1);
        let need = c.tick_leased(1_000).expect_err("no lease yet");
        assert_eq!(need.until_ms, 1_000 + CLOCK_LEASE_MS);
        c.grant_lease(need.until_ms);
        let issued = c.tick_leased(1_000).expect("leased");
        let last = c.tick_leased(need.until_ms - 1).expect("just below");
        assert!(
            c.tick_leased(need.until_ms).is_err(),
            "at the lease: ask again"
        );
        // a crash loses `issued` and `last` from this node's WAL; the lease was durable
        let mut restarted = Clock::new(1);
        restarted.observe(Version::ZERO, 1_000).expect("in range");
        restarted.resume_after(need.until_ms);
        let after = restarted.tick(1_000);
        assert!(
            after > last && after > issued,
            "never the same version again"
        );
        // the clock also runs ahead of its lease when a peer's versions are ahead of the wall
        let mut ahead = Clock::new(2);
        ahead.grant_lease(2_000);
        ahead
            .observe(
                Version {
                    hlc: 5_000 << COUNTER_BITS,
                    writer: 9,
                },
                1_000,
            )
            .expect("within the skew bound");
        let need = ahead.tick_leased(1_000).expect_err("past the lease");
        assert_eq!(need.until_ms, 5_000 + CLOCK_LEASE_MS);
    }

    #[test]
    fn clock_never_goes_backwards_with_the_wall_clock() {
        let mut c = Clock::new(1);
        let a = c.tick(5000);
        let b = c.tick(4000);
        assert!(b > a);
        assert_eq!(b.hlc, a.hlc + 1);
    }

    #[test]
    fn observe_moves_past_foreign_versions() -> Result<(), Ahead> {
        let mut c = Clock::new(1);
        c.observe(
            Version {
                hlc: 9 << COUNTER_BITS,
                writer: 2,
            },
            1,
        )?;
        let v = c.tick(1);
        assert!(v.hlc > 9 << COUNTER_BITS);
        let floor = Version {
            hlc: v.hlc + 100,
            writer: 3,
        };
        assert!(c.tick_past(1, floor)? > floor);
        Ok(())
    }

    fn at_ms(ms: u64) -> Version {
        Version {
            hlc: ms << COUNTER_BITS,
            writer: 9,
        }
    }

    /// One node 70 s fast must not drag our clock along (it used to, and then our own replicas
    /// refused our writes as too far ahead). Tested at and just past the bound.
    #[test]
    fn a_version_beyond_the_skew_bound_is_refused_not_adopted() {
        let now = 1_000_000;
        let mut c = Clock::new(1);
        assert_eq!(c.observe(at_ms(now + MAX_CLOCK_SKEW_MS), now), Ok(()));
        let mut d = Clock::new(1);
        let far = at_ms(now + MAX_CLOCK_SKEW_MS + 1);
        assert_eq!(
            d.observe(far, now),
            Err(Ahead {
                ahead_ms: MAX_CLOCK_SKEW_MS + 1
            })
        );
        assert_eq!(
            d.tick(now).physical_ms(),
            now,
            "the clock stayed at our time"
        );
        assert!(d.tick_past(now, at_ms(now + 70_000)).is_err());
        assert!(
            check_skew(d.tick(now), now).is_ok(),
            "our own versions pass our check"
        );
    }

    #[test]
    fn writer_breaks_ties() {
        let a = Version { hlc: 10, writer: 1 };
        let b = Version { hlc: 10, writer: 2 };
        assert!(b > a);
        assert_ne!(writer_id("n1", 0), writer_id("n1", 1));
        assert_eq!(writer_id("n1", 3) & 0xFF, 3);
    }
}
