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

use std::collections::{BTreeMap, VecDeque};

/// One probe round trip, as the prober saw it. The round trip is timed on the monotonic clock
/// and the offset read in the wall clock's frame at the answer, so a step of our wall clock
/// during the probe does not spoil the estimate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    /// Our monotonic clock when the probe left, and when its answer arrived.
    pub sent_mono_ms: u64,
    pub received_mono_ms: u64,
    /// Our wall clock when the answer arrived.
    pub received_wall_ms: u64,
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
        let rtt = p.received_mono_ms.saturating_sub(p.sent_mono_ms);
        let midpoint = p.received_wall_ms as i64 - (rtt / 2) as i64;
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
    /// We have peers but too few estimates to tell (none yet, or the ones still missing
    /// could decide either way).
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
        "clock fenced: this node's clock has not been checked against enough of its peers \
         yet; writes start once a majority of them answers a probe"
    )]
    Unmeasured,
}

/// How many recent estimates are kept per peer; the one with the shortest round trip is used
/// (NTP's clock filter): one slow answer on a loaded host does not widen the error.
pub const ESTIMATES_PER_PEER: usize = 8;

/// Every peer's recent estimates, newest last.
#[derive(Clone, Debug, Default)]
pub struct Offsets {
    peers: BTreeMap<String, VecDeque<Estimate>>,
}

impl Offsets {
    pub fn observe(&mut self, peer: &str, probe: Probe) {
        let recent = self.peers.entry(peer.to_string()).or_default();
        if recent.len() == ESTIMATES_PER_PEER {
            recent.pop_front();
        }
        recent.push_back(Estimate::of(probe));
    }

    /// The estimate used for `peer`: of its recent ones, the tightest (newest on a tie).
    pub fn best(&self, peer: &str) -> Option<&Estimate> {
        let recent = self.peers.get(peer)?;
        recent.iter().rev().min_by_key(|e| e.error_ms)
    }

    /// Forget peers that are no longer members (left the cluster).
    pub fn retain(&mut self, mut member: impl FnMut(&str) -> bool) {
        self.peers.retain(|id, _| member(id));
    }

    pub fn estimates(&self) -> impl Iterator<Item = (&str, &Estimate)> {
        self.peers
            .keys()
            .filter_map(|id| Some((id.as_str(), self.best(id)?)))
    }

    /// The rule. `live` are the peers we can reach (ALIVE or SUSPECT); with none, every
    /// peer we still know of (their estimates corrected for our own steps since); `has_peers`:
    /// the ring has other members at all. Counting ourselves, the node serves when a majority
    /// of that group agrees with our clock: enough peers within the bound *including* each
    /// estimate's error. It is fenced when enough are measured but too few agree, and
    /// unmeasured while too few are measured to tell. A slow round trip never counts as
    /// agreement, nor a peer past the bound by less than its error as disagreement.
    pub fn verdict(
        &self,
        live: &[&str],
        has_peers: bool,
        now_wall_ms: u64,
        now_mono_ms: u64,
        bound_ms: u64,
    ) -> Verdict {
        let group: Vec<&str> = match live.is_empty() {
            false => live.to_vec(),
            true => self.peers.keys().map(String::as_str).collect(),
        };
        if group.is_empty() {
            return match has_peers {
                true => Verdict::Unmeasured,
                false => Verdict::Serving { ahead_ms: 0 },
            };
        }
        // peers that must agree with our clock for a majority of the group and us
        let need = group.len().div_ceil(2);
        let mut widened: Vec<i64> = Vec::with_capacity(group.len());
        let mut past = 0;
        for e in group.iter().filter_map(|id| self.best(id)) {
            let a = e.now(now_wall_ms, now_mono_ms);
            if a.unsigned_abs().saturating_sub(e.error_ms) > bound_ms {
                past += 1;
            }
            // the offset at its worst within the error
            let worst = (a.unsigned_abs() + e.error_ms) as i64;
            widened.push(if a < 0 { -worst } else { worst });
        }
        let measured = widened.len();
        widened.sort_unstable_by_key(|a| a.unsigned_abs());
        let agree = widened
            .iter()
            .filter(|a| a.unsigned_abs() <= bound_ms)
            .count();
        if agree >= need {
            // `need` peers are at most this far from us, at their worst
            return Verdict::Serving {
                ahead_ms: widened[need - 1],
            };
        }
        if agree + (group.len() - measured) >= need {
            return Verdict::Unmeasured;
        }
        Verdict::Fenced {
            ahead_ms: widened[(need - 1).min(measured - 1)],
            past,
            measured,
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
        Probe {
            sent_mono_ms: t,
            received_mono_ms: t + rtt,
            received_wall_ms: ((t + rtt) as i64 + ours) as u64,
            peer_wall_ms: (((t + rtt / 2) as i64) + theirs) as u64,
        }
    }

    /// Estimates from peers `(id, their clock, round trip)` for a node with clock `ours`,
    /// judged at the last probe's arrival with every one of them live.
    fn judge(ours: i64, peers: &[(&str, i64, u64)]) -> Verdict {
        let mut o = Offsets::default();
        for (id, theirs, rtt) in peers {
            o.observe(id, probe(1_000, ours, *theirs, *rtt));
        }
        let ids: Vec<&str> = peers.iter().map(|p| p.0).collect();
        let t = 2_000;
        o.verdict(&ids, true, (t + ours) as u64, t as u64, BOUND)
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
    fn a_step_of_our_clock_during_the_probe_does_not_spoil_it() {
        // our clock steps back 300 ms while the probe is out: the round trip is timed on the
        // monotonic clock, the offset read after the step
        let mut p = probe(10_000, 0, 0, 20);
        p.received_wall_ms -= 300;
        let e = Estimate::of(p);
        assert_eq!((e.ahead_ms, e.error_ms), (-300, 10));
    }

    #[test]
    fn a_majority_past_the_bound_fences_a_minority_does_not() {
        let fast = judge(70_000, &[("n1", 0, 2), ("n2", 0, 2)]);
        assert_eq!(
            fast,
            Verdict::Fenced {
                ahead_ms: 70_001,
                past: 2,
                measured: 2
            }
        );
        // a healthy node that measures the fast one and a healthy one
        let v = judge(0, &[("n2", 0, 2), ("n3", 70_000, 2)]);
        assert_eq!(
            v,
            Verdict::Serving { ahead_ms: 1 },
            "the healthy peer decides"
        );
        // so the healthy node's own writes are not taken for a jump
        assert_eq!(FenceView::new(v, 0, 0, BOUND).check(2_000, 2_000), Ok(()));
        let v = judge(0, &[("n2", 0, 2), ("n3", -70_000, 2)]);
        assert_eq!(v, Verdict::Serving { ahead_ms: 1 });
        // five nodes, two of them off: the good three serve, the bad two are fenced
        let good = judge(
            0,
            &[("a", 5, 0), ("b", -5, 0), ("x", 9_000, 0), ("y", -800, 0)],
        );
        assert!(matches!(good, Verdict::Serving { .. }), "{good:?}");
        let bad = judge(900, &[("a", 0, 0), ("b", 0, 0), ("c", 0, 0), ("y", 900, 0)]);
        assert!(matches!(bad, Verdict::Fenced { .. }), "{bad:?}");
    }

    #[test]
    fn too_few_estimates_to_tell_is_unmeasured_not_a_verdict() {
        let mut o = Offsets::default();
        // only the far peer of two answered so far: the other could still agree with us
        o.observe("far", probe(1_000, 0, 70_000, 0));
        let live = ["far", "near"];
        assert_eq!(
            o.verdict(&live, true, 1_000, 1_000, BOUND),
            Verdict::Unmeasured
        );
        o.observe("near", probe(1_000, 0, 0, 0));
        assert!(matches!(
            o.verdict(&live, true, 1_000, 1_000, BOUND),
            Verdict::Serving { .. }
        ));
        // no peers at all: serving; peers but no estimate: unmeasured
        let none = Offsets::default();
        assert_eq!(
            none.verdict(&[], false, 5, 5, BOUND),
            Verdict::Serving { ahead_ms: 0 }
        );
        assert_eq!(none.verdict(&[], true, 5, 5, BOUND), Verdict::Unmeasured);
        let view = FenceView::new(Verdict::Unmeasured, 5, 5, BOUND);
        assert_eq!(view.check(5, 5), Err(Fenced::Unmeasured));
    }

    #[test]
    fn the_bound_holds_at_and_just_past_it_and_the_error_counts_against_us() {
        for (ahead, rtt, want) in [
            (500, 0, "serving"),
            (501, 0, "fenced"),
            (-501, 0, "fenced"),
            (480, 40, "serving"), // 480 + 20 of error: still within
            (481, 40, "unsure"),  // might be past: not agreement, not yet disagreement
            (521, 40, "fenced"),  // past by more than the error
        ] {
            let v = judge(ahead, &[("p", 0, rtt)]);
            let got = match v {
                Verdict::Serving { .. } => "serving",
                Verdict::Fenced { past: 0, .. } => "unsure",
                Verdict::Fenced { .. } => "fenced",
                Verdict::Unmeasured => "unmeasured",
            };
            assert_eq!(got, want, "{ahead} {rtt}: {v:?}");
        }
    }

    #[test]
    fn a_jump_of_our_own_clock_fences_at_once_and_the_next_measurement_reopens() {
        let mut o = Offsets::default();
        o.observe("n1", probe(1_000, 0, 0, 2));
        o.observe("n2", probe(1_000, 0, 0, 2));
        let live = ["n1", "n2"];
        let v = o.verdict(&live, true, 1_002, 1_002, BOUND);
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
            o.verdict(&live, true, 3_600, 1_600, BOUND),
            Verdict::Fenced {
                ahead_ms: 2_001,
                ..
            }
        ));
        // the clock is stepped back: the next verdict serves again
        let v = o.verdict(&live, true, 1_700, 1_700, BOUND);
        assert_eq!(v, Verdict::Serving { ahead_ms: 1 });
        let view = FenceView::new(v, 1_700, 1_700, BOUND);
        assert_eq!(view.check(1_800, 1_800), Ok(()));
    }

    #[test]
    fn a_jump_within_the_margin_keeps_serving() {
        let view = FenceView::new(Verdict::Serving { ahead_ms: 100 }, 0, 0, BOUND);
        assert_eq!(view.check(400, 0), Ok(()));
        assert!(view.check(401, 0).is_err());
        assert_eq!(view.check(0, 400), Ok(()));
        assert!(view.check(0, 401).is_err(), "a step back counts too");
    }

    #[test]
    fn the_deciding_offset_is_the_one_enough_peers_are_within() {
        // |offsets| 5, 10, 300, 700, 2000: with us, three of six agree within 300 ms
        let peers = [
            ("a", 10, 0),
            ("b", -300, 0),
            ("c", 700, 0),
            ("d", -2_000, 0),
            ("e", 5, 0),
        ];
        let v = judge(0, &peers);
        assert_eq!(v, Verdict::Serving { ahead_ms: 300 });
        // a jump that could leave too few within the bound is caught; a smaller one is not
        let view = FenceView::new(v, 0, 0, BOUND);
        assert_eq!(view.check(200, 0), Ok(()));
        assert!(view.check(201, 0).is_err());
    }

    #[test]
    fn with_no_peer_reachable_the_known_ones_still_count() {
        let mut o = Offsets::default();
        o.observe("n1", probe(0, 70_000, 0, 0));
        o.observe("n2", probe(0, 70_000, 0, 0));
        assert!(matches!(
            o.verdict(&[], true, 70_000, 0, BOUND),
            Verdict::Fenced { .. }
        ));
    }

    #[test]
    fn the_tightest_recent_estimate_is_used() {
        let mut o = Offsets::default();
        o.observe("p", probe(0, 0, 0, 4));
        o.observe("p", probe(100, 0, 0, 900)); // one slow answer on a loaded host
        assert_eq!(o.best("p").map(|e| e.error_ms), Some(2));
        for i in 0..ESTIMATES_PER_PEER as u64 {
            o.observe("p", probe(200 + i, 0, 0, 60));
        }
        assert_eq!(
            o.best("p").map(|e| e.error_ms),
            Some(30),
            "the old one aged out"
        );
    }

    #[test]
    fn peers_that_left_are_forgotten() {
        let mut o = Offsets::default();
        o.observe("gone", probe(0, 0, 9_000, 0));
        o.observe("here", probe(0, 0, 0, 0));
        o.retain(|id| id == "here");
        assert_eq!(o.estimates().count(), 1);
        assert!(matches!(
            o.verdict(&[], true, 0, 0, BOUND),
            Verdict::Serving { .. }
        ));
    }
}
