//! The simulators' network (`simulation`, `collection_sim`, `consensus_sim`): messages between
//! numbered nodes, each delivered after a random delay (so reordered), now and then twice, lost
//! at the run's loss rate, and never across a cut link while the cut lasts. A node's messages
//! to itself arrive at once and are never lost.
//!
//! Owns only the messages in flight and the cuts; what the messages mean, and when nodes
//! pause or crash, is each simulator's. Deterministic: all randomness comes from the caller's
//! seeded generator, drawn in a fixed order, so a seed replays exactly.

#![allow(dead_code)] // each simulator uses its own share of it

/// Delay of a message between two nodes, in ticks: `1..DELAY_MAX`.
const DELAY_MAX: u64 = 60;
/// Share of messages between two nodes delivered twice.
const DUPLICATE_RATE: f64 = 0.05;

pub struct SimNet<M> {
    /// (deliver at, sequence, from, to, message)
    queue: Vec<(u64, u64, usize, usize, M)>,
    seq: u64,
    /// (a, b, until): the link between a and b is cut until then.
    cuts: Vec<(usize, usize, u64)>,
    /// Share of messages between two nodes lost.
    loss: f64,
}

impl<M: Clone> SimNet<M> {
    pub fn new(loss: f64) -> SimNet<M> {
        SimNet {
            queue: Vec::new(),
            seq: 0,
            cuts: Vec::new(),
            loss,
        }
    }

    /// Whether a message from `a` to `b` can get through at `now`.
    pub fn reachable(&self, now: u64, a: usize, b: usize) -> bool {
        a == b
            || !self
                .cuts
                .iter()
                .any(|&(x, y, until)| until > now && ((x, y) == (a, b) || (x, y) == (b, a)))
    }

    pub fn send(&mut self, rng: &mut fastrand::Rng, now: u64, from: usize, to: usize, msg: M) {
        if !self.reachable(now, from, to) || (from != to && rng.f64() < self.loss) {
            return;
        }
        let copies = if from != to && rng.f64() < DUPLICATE_RATE {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let at = now + if from == to { 0 } else { rng.u64(1..DELAY_MAX) };
            self.seq += 1;
            self.queue.push((at, self.seq, from, to, msg.clone()));
        }
    }

    /// The messages due by `now`, in delivery order, taken off the network.
    pub fn due(&mut self, now: u64) -> Vec<(usize, usize, M)> {
        self.queue.sort_by_key(|(at, seq, ..)| (*at, *seq));
        let due = self.queue.iter().take_while(|m| m.0 <= now).count();
        self.queue
            .drain(..due)
            .map(|(_, _, from, to, msg)| (from, to, msg))
            .collect()
    }

    /// Cut the link between `a` and `b` until `until`.
    pub fn cut(&mut self, a: usize, b: usize, until: u64) {
        self.cuts.push((a, b, until));
    }

    /// Node `n`'s connections broke: what was in flight to or from it is gone.
    pub fn forget(&mut self, n: usize) {
        self.queue
            .retain(|(_, _, from, to, _)| *from != n && *to != n);
    }

    /// Every cut link restored.
    pub fn uncut(&mut self) {
        self.cuts.clear();
    }

    /// Every link restored, and nothing lost from here on.
    pub fn heal(&mut self) {
        self.uncut();
        self.loss = 0.0;
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}
