//! Clock offsets from peers, and the rule by which a node with a wrong clock fences itself
//! (after CockroachDB's `--max-offset`: a node whose offset from a majority of the others is
//! past the bound stops serving rather than write with a wrong clock).
//!
//! Owns: one offset estimate per peer, taken from the probes gossip already sends (the
//! peer's physical time in its answer against the midpoint of our round trip, the half round
//! trip as the error bound), and two pure decisions:
//! - `Offsets::verdict`: serve, or fence (our offset from more than half of the measured peers
//!   is past the bound even after taking off each estimate's error), or not yet measured (we
//!   have peers but no estimate: a node that starts with a bad clock is fenced before its
//!   first write);
//! - `FenceView::check`, run by every core before it issues or stores a version: the last
//!   verdict, corrected for a jump of our own wall clock since (our wall clock against the
//!   monotonic one), so a clock stepped while the node runs is fenced at its next write, not
//!   at the next probe.
//!
//! Never reads a clock, sends or sleeps: physical (wall) and monotonic milliseconds come in as
//! arguments. Offsets are "how far our clock is ahead of the peer's" (negative: behind).

use std::collections::BTreeMap;

/// One probe round trip, as the prober saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    /// Our wall clock when the probe left, and when its answer arrived.
    pub sent_wall_ms: u64,
    pub received_wall_ms: u64,
    /// Our monotonic clock when the answer arrived.
    pub received_mono_ms: u64,
    /// The peer's wall clock when it answered.
    pub peer_wall_ms: u64,
}

/// What one probe says about our clock against one peer's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Estimate {
    /// Our clock minus the peer's (ms): positive when ours is ahead.
    pub ahead_ms: i64,
    /// Half the round trip: the true offset is within `ahead_ms ± error_ms`.
    pub error_ms: u64,
    /// Our wall clock minus our monotonic clock when it was taken (to correct for our jumps).
    wall_minus_mono_ms: i64,
}

impl Estimate {
    pub fn of(p: Probe) -> Estimate {
        let rtt = p.received_wall_ms.saturating_sub(p.sent_wall_ms);
        let midpoint = p.sent_wall_ms as i64 + (rtt / 2) as i64;
        Estimate {
            ahead_ms: midpoint - p.peer_wall_ms as i64,
            error_ms: rtt.div_ceil(2),
            wall_minus_mono_ms: skew(p.received_wall_ms, p.received_mono_ms),
        }
    }

    /// This estimate now, after our own wall clock moved against the monotonic one.
    pub fn now(&self, now_wall_ms: u64, now_mono_ms: u64) -> i64 {
        self.ahead_ms + (skew(now_wall_ms, now_mono_ms) - self.wall_minus_mono_ms)
    }
}

fn skew(wall_ms: u64, mono_ms: u64) -> i64 {
    wall_ms as i64 - mono_ms as i64
}

/// Whether this node may issue and store versions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Serving. `ahead_ms` is the deciding offset (0 with no peers): a majority of the
    /// measured peers is at least this far from us, and at most a minority further.
    Serving { ahead_ms: i64 },
    /// Our clock is past the bound from `past` of `measured` peers; `ahead_ms` as above.
    Fenced {
        ahead_ms: i64,
        past: usize,
        measured: usize,
    },
    /// We have peers but no estimate from any of them yet.
    Unmeasured,
}

/// Why a write is refused: the clock is (or may be) off by more than the bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Fenced {
    #[error(
        "clock fenced: this node's clock is {ahead_ms} ms off a majority of its peers ({past} \
         of {measured} measured; at most {bound_ms} ms allowed, --max-clock-offset-ms): it \
         coordinates and stores no writes until its clock is fixed (NTP); use another node"
    )]
    Offset {
        ahead_ms: i64,
        past: usize,
        measured: usize,
        bound_ms: u64,
    },
    #[error(
        "clock fenced: this node's wall clock jumped {jump_ms} ms since its offset was last \
         measured (at most {bound_ms} ms allowed, --max-clock-offset-ms); writes resume once \
         its peers confirm it"
    )]
    Jumped { jump_ms: i64, bound_ms: u64 },
    #[error(
        "clock fenced: this node's clock has not been checked against any peer yet; writes \
         start once a peer answers a probe"
    )]
    Unmeasured,
}

/// Every peer's latest estimate.
#[derive(Clone, Debug, Default)]
pub struct Offsets {
    peers: BTreeMap<String, Estimate>,
}

impl Offsets {
    pub fn observe(&mut self, peer: &str, probe: Probe) {
        self.peers.insert(peer.to_string(), Estimate::of(probe));
    }

    /// Forget peers that are no longer members (left the cluster).
    pub fn retain(&mut self, mut member: impl FnMut(&str) -> bool) {
        self.peers.retain(|id, _| member(id));
    }

    pub fn estimates(&self) -> impl Iterator<Item = (&str, &Estimate)> {
        self.peers.iter().map(|(id, e)| (id.as_str(), e))
    }

    /// The rule: fenced when our clock is past `bound_ms` from more than half of the measured
    /// peers, each counted only if it is past the bound by more than its estimate's error (a
    /// slow round trip never fences a good clock). `has_peers`: the ring has other members.
    pub fn verdict(
        &self,
        has_peers: bool,
        now_wall_ms: u64,
        now_mono_ms: u64,
        bound_ms: u64,
    ) -> Verdict {
        if self.peers.is_empty() {
            return match has_peers {
                true => Verdict::Unmeasured,
                false => Verdict::Serving { ahead_ms: 0 },
            };
        }
        let mut ahead: Vec<i64> = Vec::with_capacity(self.peers.len());
        let mut past = 0;
        for e in self.peers.values() {
            let a = e.now(now_wall_ms, now_mono_ms);
            if a.unsigned_abs().saturating_sub(e.error_ms) > bound_ms {
                past += 1;
            }
            ahead.push(a);
        }
        // The deciding offset: a majority of the peers is at least this far from us, so a
        // majority is past the bound exactly when it is (error aside).
        ahead.sort_unstable_by_key(|a| a.unsigned_abs());
        let measured = ahead.len();
        let ahead_ms = ahead[measured - (measured / 2 + 1)];
        if past * 2 > measured {
            Verdict::Fenced {
                ahead_ms,
                past,
                measured,
            }
        } else {
            Verdict::Serving { ahead_ms }
        }
    }
}

/// The verdict every core checks, with the wall-minus-monotonic reading it was made at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FenceView {
    pub verdict: Verdict,
    pub wall_minus_mono_ms: i64,
    pub bound_ms: u64,
}

impl FenceView {
    pub fn new(verdict: Verdict, now_wall_ms: u64, now_mono_ms: u64, bound_ms: u64) -> Self {
        FenceView {
            verdict,
            wall_minus_mono_ms: skew(now_wall_ms, now_mono_ms),
            bound_ms,
        }
    }

    /// May this node issue or store a version now? A serving node whose wall clock has since
    /// jumped so far that a majority of its offsets could be past the bound is fenced until
    /// measured again: a majority is within `|ahead_ms|`, so after a jump `J` it is within
    /// `|ahead_ms| + |J|`, and only a jump past `bound - |ahead_ms|` can change the verdict.
    pub fn check(&self, now_wall_ms: u64, now_mono_ms: u64) -> Result<(), Fenced> {
        let bound_ms = self.bound_ms;
        match self.verdict {
            Verdict::Unmeasured => Err(Fenced::Unmeasured),
            Verdict::Fenced {
                ahead_ms,
                past,
                measured,
            } => Err(Fenced::Offset {
                ahead_ms,
                past,
                measured,
                bound_ms,
            }),
            Verdict::Serving { ahead_ms } => {
                let jump_ms = skew(now_wall_ms, now_mono_ms) - self.wall_minus_mono_ms;
                if ahead_ms.unsigned_abs() + jump_ms.unsigned_abs() > bound_ms {
                    return Err(Fenced::Jumped { jump_ms, bound_ms });
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUND: u64 = 500;

    /// A probe from a node whose clock reads `ours` when the true time is `t`, to a peer whose
    /// clock reads `theirs` at `t`, over a round trip of `rtt` (the answer made half way).
    fn probe(t: u64, ours: i64, theirs: i64, rtt: u64) -> Probe {
        let ours_at = |x: u64| (x as i64 + ours) as u64;
        Probe {
            sent_wall_ms: ours_at(t),
            received_wall_ms: ours_at(t + rtt),
            received_mono_ms: t + rtt,
            peer_wall_ms: (((t + rtt / 2) as i64) + theirs) as u64,
        }
    }

    #[test]
    fn an_estimate_is_the_offset_within_half_the_round_trip() {
        let e = Estimate::of(probe(10_000, 70_000, 0, 40));
        assert_eq!(e.ahead_ms, 70_000);
        assert_eq!(e.error_ms, 20);
        let e = Estimate::of(probe(10_000, -3, 5, 10));
        assert_eq!(e.ahead_ms, -8);
        // an answer stamped late in the round trip is still within the error bound
        let mut p = probe(10_000, 0, 0, 100);
        p.peer_wall_ms += 50;
        let e = Estimate::of(p);
        assert!(e.ahead_ms.unsigned_abs() <= e.error_ms);
    }

    #[test]
    fn a_majority_past_the_bound_fences_a_minority_does_not() {
        let mut fast = Offsets::default();
        fast.observe("n1", probe(1_000, 70_000, 0, 2));
        fast.observe("n2", probe(1_000, 70_000, 0, 2));
        let v = fast.verdict(true, 71_002, 1_002, BOUND);
        assert_eq!(
            v,
            Verdict::Fenced {
                ahead_ms: 70_000,
                past: 2,
                measured: 2
            }
        );
        // a healthy node that measures the fast one: 1 of 2 is not a majority
        let mut ok = Offsets::default();
        ok.observe("n2", probe(1_000, 0, 0, 2));
        ok.observe("n3", probe(1_000, 0, 70_000, 2));
        let v = ok.verdict(true, 1_002, 1_002, BOUND);
        assert_eq!(v, Verdict::Serving { ahead_ms: 0 }, "the healthy peer decides");
        // so the healthy node's own writes are not taken for a jump
        assert_eq!(FenceView::new(v, 1_002, 1_002, BOUND).check(2_000, 2_000), Ok(()));
        // the same with the far peer behind us instead of ahead
        let mut ok = Offsets::default();
        ok.observe("n2", probe(1_000, 0, 0, 2));
        ok.observe("n3", probe(1_000, 0, -70_000, 2));
        let v = ok.verdict(true, 1_002, 1_002, BOUND);
        assert_eq!(v, Verdict::Serving { ahead_ms: 0 });
    }

    #[test]
    fn the_deciding_offset_is_the_one_a_majority_is_at_least_as_far_as() {
        let mut o = Offsets::default();
        for (peer, theirs) in [("a", 10), ("b", -300), ("c", 700), ("d", -2_000), ("e", 5)] {
            o.observe(peer, probe(0, 0, theirs, 0));
        }
        // |offsets| 5, 10, 300, 700, 2000: three of five are within 300
        assert_eq!(o.verdict(true, 0, 0, BOUND), Verdict::Serving { ahead_ms: 300 });
        // a jump that could put three past the bound is caught; a smaller one is not
        let view = FenceView::new(o.verdict(true, 0, 0, BOUND), 0, 0, BOUND);
        assert_eq!(view.check(200, 0), Ok(()));
        assert!(view.check(201, 0).is_err());
    }

    #[test]
    fn the_bound_holds_at_and_just_past_it_and_the_error_is_forgiven() {
        for (ahead, rtt, fenced) in [
            (500, 0, false),
            (501, 0, true),
            (-501, 0, true),
            (520, 40, false), // past by 20, within the 20 ms error
            (521, 40, true),
        ] {
            let mut o = Offsets::default();
            let p = probe(1_000, ahead, 0, rtt);
            o.observe("p", p);
            let v = o.verdict(true, p.received_wall_ms, p.received_mono_ms, BOUND);
            assert_eq!(matches!(v, Verdict::Fenced { .. }), fenced, "{ahead} {rtt}");
        }
    }

    #[test]
    fn no_peers_serves_peers_never_measured_fence() {
        let o = Offsets::default();
        assert_eq!(o.verdict(false, 5, 5, BOUND), Verdict::Serving { ahead_ms: 0 });
        assert_eq!(o.verdict(true, 5, 5, BOUND), Verdict::Unmeasured);
        let view = FenceView::new(Verdict::Unmeasured, 5, 5, BOUND);
        assert_eq!(view.check(5, 5), Err(Fenced::Unmeasured));
    }

    #[test]
    fn a_jump_of_our_own_clock_fences_at_once_and_the_next_measurement_reopens() {
        let mut o = Offsets::default();
        o.observe("n1", probe(1_000, 0, 0, 2));
        o.observe("n2", probe(1_000, 0, 0, 2));
        let v = o.verdict(true, 1_002, 1_002, BOUND);
        let view = FenceView::new(v, 1_002, 1_002, BOUND);
        assert_eq!(view.check(1_500, 1_500), Ok(()));
        // the wall clock steps 2 s ahead; the monotonic one does not
        assert_eq!(
            view.check(3_600, 1_600),
            Err(Fenced::Jumped {
                jump_ms: 2_000,
                bound_ms: BOUND
            })
        );
        // the stored estimates, corrected for the jump, agree before any new probe
        assert!(matches!(
            o.verdict(true, 3_600, 1_600, BOUND),
            Verdict::Fenced { ahead_ms: 2_000, .. }
        ));
        // the clock is stepped back: the next verdict serves again
        let v = o.verdict(true, 1_700, 1_700, BOUND);
        assert_eq!(v, Verdict::Serving { ahead_ms: 0 });
        assert_eq!(FenceView::new(v, 1_700, 1_700, BOUND).check(1_800, 1_800), Ok(()));
    }

    #[test]
    fn a_jump_within_the_bound_keeps_serving() {
        let view = FenceView::new(Verdict::Serving { ahead_ms: 100 }, 0, 0, BOUND);
        assert_eq!(view.check(400, 0), Ok(()));
        assert!(view.check(401, 0).is_err());
        assert_eq!(view.check(0, 400), Ok(()));
        assert!(view.check(0, 401).is_err(), "a step back counts too");
    }

    #[test]
    fn peers_that_left_are_forgotten() {
        let mut o = Offsets::default();
        o.observe("gone", probe(0, 0, 9_000, 0));
        o.observe("here", probe(0, 0, 0, 0));
        o.observe("there", probe(0, 0, 0, 0));
        assert!(matches!(o.verdict(true, 0, 0, BOUND), Verdict::Serving { .. }));
        o.observe("far", probe(0, 0, 9_000, 0));
        assert!(matches!(o.verdict(true, 0, 0, BOUND), Verdict::Serving { .. }), "2 of 4");
        o.retain(|id| id == "here");
        assert!(matches!(o.verdict(true, 0, 0, BOUND), Verdict::Serving { .. }));
        assert_eq!(o.estimates().count(), 1);
    }
}
