//! The node's clock fence, shared by every core: the last verdict of `core::clock_fence`
//! (made by the gossip core from its probes) and the wall-minus-monotonic reading it was made
//! at, which every core checks before it issues a version (coordinator) or stores one
//! (replica write).
//!
//! Owns: atomics for the verdict (read on the request path: no lock), and one mutex for the
//! per-peer estimates that `INFO` and `/metrics` show (touched by the gossip core after a
//! probe and by those two readers; never on the request path). Never decides anything: the
//! rule is `core::clock_fence`'s.

use std::sync::atomic::{AtomicI64, AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use crate::core::clock_fence::{FenceView, Fenced, Verdict};

const SERVING: u8 = 0;
const FENCED: u8 = 1;
const UNMEASURED: u8 = 2;

/// One peer's estimate, as shown by `kv info` and `/metrics`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PeerOffset {
    pub peer: String,
    pub ahead_ms: i64,
    pub error_ms: u64,
}

/// What `kv info --json` and `/metrics` show of the clock.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ClockStats {
    pub fenced: bool,
    pub unmeasured: bool,
    /// Median offset from the peers (ms; positive: our clock is ahead).
    pub ahead_ms: i64,
    pub bound_ms: u64,
    pub fence_events: u64,
    pub refused_writes: u64,
    pub peers: Vec<PeerOffset>,
}

pub struct ClockFence {
    epoch: Instant,
    bound_ms: u64,
    kind: AtomicU8,
    ahead_ms: AtomicI64,
    past: AtomicU64,
    measured: AtomicU64,
    wall_minus_mono_ms: AtomicI64,
    fence_events: AtomicU64,
    refused_writes: AtomicU64,
    peers: Mutex<Vec<PeerOffset>>,
}

impl ClockFence {
    /// A node that knows of peers (seeds, or a saved view) starts unmeasured, so a bad clock
    /// is fenced before its first write; one with none serves. `epoch` starts the monotonic
    /// clock.
    pub fn new(bound_ms: u64, epoch: Instant, has_peers: bool) -> ClockFence {
        let mono_ms = epoch.elapsed().as_millis() as i64;
        ClockFence {
            epoch,
            bound_ms,
            kind: AtomicU8::new(if has_peers { UNMEASURED } else { SERVING }),
            ahead_ms: AtomicI64::new(0),
            past: AtomicU64::new(0),
            measured: AtomicU64::new(0),
            wall_minus_mono_ms: AtomicI64::new(crate::server::wall_clock_ms() as i64 - mono_ms),
            fence_events: AtomicU64::new(0),
            refused_writes: AtomicU64::new(0),
            peers: Mutex::new(Vec::new()),
        }
    }

    pub fn bound_ms(&self) -> u64 {
        self.bound_ms
    }

    /// Monotonic milliseconds since the node started.
    pub fn mono_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Publish a verdict made at (`now_wall_ms`, `now_mono_ms`), with the estimates behind it.
    /// Logs loudly when the node fences itself or serves again.
    pub fn publish(&self, view: FenceView, peers: Vec<PeerOffset>) {
        let (kind, ahead, past, measured) = match view.verdict {
            Verdict::Serving { ahead_ms } => (SERVING, ahead_ms, 0, 0),
            Verdict::Fenced {
                ahead_ms,
                past,
                measured,
            } => (FENCED, ahead_ms, past as u64, measured as u64),
            Verdict::Unmeasured => (UNMEASURED, 0, 0, 0),
        };
        // the reading first: a core that sees the new verdict with the old reading at worst
        // refuses one write as a jump (never serves on a stale fence)
        self.wall_minus_mono_ms
            .store(view.wall_minus_mono_ms, Ordering::Release);
        self.ahead_ms.store(ahead, Ordering::Release);
        self.past.store(past, Ordering::Release);
        self.measured.store(measured, Ordering::Release);
        let was = self.kind.swap(kind, Ordering::AcqRel);
        if let Ok(mut p) = self.peers.lock() {
            *p = peers;
        }
        match (was == FENCED, kind == FENCED) {
            (false, true) => {
                self.fence_events.fetch_add(1, Ordering::Relaxed);
                log::error!(
                    "CLOCK FENCED: this node's clock is {ahead} ms off {past} of {measured} \
                     measured peers (at most {} ms allowed): it coordinates and stores no \
                     writes until the clock is fixed (check NTP / chrony)",
                    self.bound_ms
                );
            }
            (true, false) => log::warn!(
                "clock fence lifted: this node's clock is within {} ms of its peers again \
                 ({ahead} ms); writes resume",
                self.bound_ms
            ),
            _ => {}
        }
    }

    /// May this node issue or store a version now? A refusal is counted.
    pub fn check(&self) -> Result<(), Fenced> {
        let r = self.peek();
        if r.is_err() {
            self.refused_writes.fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    /// Whether this node's replica must refuse to store a write: when its clock is known to be
    /// off (fenced, or stepped since measured). Not while it is still unmeasured just after a
    /// start: a replica stores the coordinator's version, not one of its own clock, and
    /// refusing then would fail writes on every start until the first probe answers.
    pub fn replica_refuses(&self) -> bool {
        let refused = matches!(
            self.peek(),
            Err(Fenced::Offset { .. } | Fenced::Jumped { .. })
        );
        if refused {
            self.refused_writes.fetch_add(1, Ordering::Relaxed);
        }
        refused
    }

    /// The same answer as `check`, not counted (for building an error message).
    pub fn peek(&self) -> Result<(), Fenced> {
        let kind = self.kind.load(Ordering::Acquire);
        let verdict = match kind {
            SERVING => Verdict::Serving {
                ahead_ms: self.ahead_ms.load(Ordering::Acquire),
            },
            FENCED => Verdict::Fenced {
                ahead_ms: self.ahead_ms.load(Ordering::Acquire),
                past: self.past.load(Ordering::Acquire) as usize,
                measured: self.measured.load(Ordering::Acquire) as usize,
            },
            _ => Verdict::Unmeasured,
        };
        let view = FenceView {
            verdict,
            wall_minus_mono_ms: self.wall_minus_mono_ms.load(Ordering::Acquire),
            bound_ms: self.bound_ms,
        };
        view.check(crate::server::wall_clock_ms(), self.mono_ms())
    }

    pub fn stats(&self) -> ClockStats {
        let kind = self.kind.load(Ordering::Acquire);
        ClockStats {
            fenced: kind != SERVING,
            unmeasured: kind == UNMEASURED,
            ahead_ms: self.ahead_ms.load(Ordering::Acquire),
            bound_ms: self.bound_ms,
            fence_events: self.fence_events.load(Ordering::Relaxed),
            refused_writes: self.refused_writes.load(Ordering::Relaxed),
            peers: self.peers.lock().map(|p| p.clone()).unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_published_fence_refuses_and_a_lifted_one_serves() {
        assert!(ClockFence::new(500, Instant::now(), true).check().is_err());
        let f = ClockFence::new(500, Instant::now(), false);
        assert_eq!(f.check(), Ok(()), "no peers: serving");
        let (wall, mono) = (crate::server::wall_clock_ms(), f.mono_ms());
        let fenced = Verdict::Fenced {
            ahead_ms: 70_000,
            past: 2,
            measured: 2,
        };
        f.publish(FenceView::new(fenced, wall, mono, 500), Vec::new());
        let e = f.check().expect_err("fenced");
        assert!(e.to_string().contains("70000 ms"), "{e}");
        assert!(f.stats().fenced);
        assert_eq!(f.stats().fence_events, 1);
        let serving = Verdict::Serving { ahead_ms: 3 };
        f.publish(FenceView::new(serving, wall, mono, 500), Vec::new());
        assert_eq!(f.check(), Ok(()));
        f.publish(
            FenceView::new(Verdict::Unmeasured, wall, mono, 500),
            Vec::new(),
        );
        assert!(matches!(f.check(), Err(Fenced::Unmeasured)));
    }
}
