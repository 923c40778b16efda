//! Versions and the hybrid logical clock (HLC).
//!
//! Owns: the `Version` order used by last-write-wins and the clock that issues versions.
//! Never reads the wall clock itself: the caller passes physical milliseconds in.
//!
//! A version is `hlc = physical_ms << 16 | counter` plus the writer id (node hash | core index),
//! which breaks ties, so two writers never issue equal versions. A clock never goes backwards and
//! moves past every version it observes, so one writer's versions strictly increase.

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

    /// Move the clock past `seen` (a version read from the WAL, a replica or gossip).
    pub fn observe(&mut self, seen: Version) {
        if seen.hlc > self.last {
            self.last = seen.hlc;
        }
    }

    /// Issue a version strictly newer than `floor` (used when a write must supersede it).
    pub fn tick_past(&mut self, physical_ms: u64, floor: Version) -> Version {
        self.observe(floor);
        let v = self.tick(physical_ms);
        debug_assert!(v > floor);
        v
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
    fn observe_moves_past_foreign_versions() {
        let mut c = Clock::new(1);
        c.observe(Version {
            hlc: 9 << COUNTER_BITS,
            writer: 2,
        });
        let v = c.tick(1);
        assert!(v.hlc > 9 << COUNTER_BITS);
        let floor = Version {
            hlc: v.hlc + 100,
            writer: 3,
        };
        assert!(c.tick_past(1, floor) > floor);
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
