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

use crate::limits::MAX_CLOCK_SKEW_MS;

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
}

impl Clock {
    pub fn new(writer: u32) -> Clock {
        Clock { last: 0, writer }
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
