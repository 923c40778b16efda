//! Dots and causal contexts (the compact version vector plus dot cloud of Riak's dotted
//! version vectors).
//!
//! Owns: naming a write event (`Dot`: the `counter`-th event its writer issued for one key),
//! and the set of events a state has seen (`Context`). Dots are issued by the replica that
//! applies a command first (`Context::next`), from its own context of the key, so one
//! writer's dots of a key are dense: a context stores them as a version vector entry, with
//! only the dots seen out of order in the cloud.
//!
//! Bounds: a context holds at most `CONTEXT_WRITERS_MAX` writers and `CONTEXT_CLOUD_MAX`
//! out-of-order dots (`Context::within_bounds`; the caller refuses a write that would pass
//! them). It shrinks as replicas exchange states: a cloud dot joins the vector entry once the
//! dots before it arrive. A writer gone for good (a node removed from the cluster) leaves its
//! vector entry behind; it can be dropped once every replica's context covers the writer's
//! last dot and no store still holds one of its dots (`retire`).

use std::collections::{BTreeMap, BTreeSet};

use super::Crdt;

/// Writers one key's context may name (every node's cores that ever wrote it).
pub const CONTEXT_WRITERS_MAX: usize = 1024;
/// Dots one key's context may hold out of order (beyond its version vector).
pub const CONTEXT_CLOUD_MAX: usize = 4096;

/// One write event: the `counter`-th (from 1) that `writer` issued for a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Dot {
    pub writer: u64,
    pub counter: u64,
}

/// The write events a state has seen.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Context {
    /// Every dot of `writer` with `counter <= vv[writer]` was seen.
    vv: BTreeMap<u64, u64>,
    /// Dots seen beyond their writer's entry.
    cloud: BTreeSet<Dot>,
}

impl Context {
    pub fn contains(&self, d: Dot) -> bool {
        self.vv.get(&d.writer).is_some_and(|&c| d.counter <= c) || self.cloud.contains(&d)
    }

    pub fn insert(&mut self, d: Dot) {
        if !self.contains(d) {
            self.cloud.insert(d);
            self.compact();
        }
    }

    /// Issue `writer`'s next dot for this key (past everything of it seen) and record it.
    pub fn next(&mut self, writer: u64) -> Dot {
        let seen = self.vv.get(&writer).copied().unwrap_or(0);
        let clouded = self
            .cloud
            .range(
                Dot { writer, counter: 0 }..=Dot {
                    writer,
                    counter: u64::MAX,
                },
            )
            .next_back()
            .map_or(0, |d| d.counter);
        let d = Dot {
            writer,
            counter: seen.max(clouded) + 1,
        };
        self.insert(d);
        d
    }

    /// Whether this context is within its bounds (writers, out-of-order dots).
    pub fn within_bounds(&self) -> bool {
        self.vv.len() <= CONTEXT_WRITERS_MAX && self.cloud.len() <= CONTEXT_CLOUD_MAX
    }

    pub fn cloud_len(&self) -> usize {
        self.cloud.len()
    }

    pub fn writers(&self) -> usize {
        self.vv.len()
    }

    /// Forget `writer`, gone for good. Only when every replica's context covers its last dot
    /// and no store holds one of its dots: a dot of it merged later would look unseen.
    pub fn retire(&mut self, writer: u64) {
        self.vv.remove(&writer);
        self.cloud.retain(|d| d.writer != writer);
    }

    /// Fold cloud dots that follow their writer's entry into it.
    fn compact(&mut self) {
        let mut kept = BTreeSet::new();
        for d in std::mem::take(&mut self.cloud) {
            let c = self.vv.entry(d.writer).or_insert(0);
            if d.counter == *c + 1 {
                *c = d.counter;
            } else if d.counter > *c {
                kept.insert(d);
            }
        }
        self.vv.retain(|_, c| *c > 0);
        self.cloud = kept;
    }

    /// The version vector and the cloud (for encoding).
    pub fn parts(&self) -> (&BTreeMap<u64, u64>, &BTreeSet<Dot>) {
        (&self.vv, &self.cloud)
    }

    /// Rebuild from `parts` (decoded): the cloud is folded into the vector where it can be.
    pub fn from_parts(vv: BTreeMap<u64, u64>, cloud: BTreeSet<Dot>) -> Context {
        let mut c = Context { vv, cloud };
        c.compact();
        c
    }

    /// Every dot this context names, the vector's included (for tests and small contexts).
    pub fn dots(&self) -> impl Iterator<Item = Dot> + '_ {
        self.vv
            .iter()
            .flat_map(|(&writer, &c)| (1..=c).map(move |counter| Dot { writer, counter }))
            .chain(self.cloud.iter().copied())
    }
}

impl Crdt for Context {
    fn merge(&mut self, other: &Context) {
        for (&w, &c) in &other.vv {
            let mine = self.vv.entry(w).or_insert(0);
            *mine = (*mine).max(c);
        }
        self.cloud.extend(other.cloud.iter().copied());
        self.compact();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dot(writer: u64, counter: u64) -> Dot {
        Dot { writer, counter }
    }

    #[test]
    fn out_of_order_dots_fold_into_the_vector_once_the_gap_fills() {
        let mut c = Context::default();
        c.insert(dot(1, 2));
        c.insert(dot(1, 3));
        assert_eq!(c.cloud_len(), 2);
        assert!(!c.contains(dot(1, 1)) && c.contains(dot(1, 3)));
        c.insert(dot(1, 1));
        assert_eq!(c.cloud_len(), 0);
        assert!(c.contains(dot(1, 3)) && !c.contains(dot(1, 4)));
        assert_eq!(c.next(1), dot(1, 4));
        assert_eq!(c.next(2), dot(2, 1));
    }

    #[test]
    fn a_writer_issues_past_its_clouded_dots() {
        let mut c = Context::default();
        c.insert(dot(7, 5));
        assert_eq!(c.next(7), dot(7, 6));
    }

    #[test]
    fn bounds_at_and_past_the_limit() {
        let mut c = Context::default();
        for w in 0..CONTEXT_WRITERS_MAX as u64 {
            c.insert(dot(w, 1));
        }
        assert!(c.within_bounds());
        c.insert(dot(u64::MAX, 1));
        assert!(!c.within_bounds());
        let mut c = Context::default();
        for k in 0..CONTEXT_CLOUD_MAX as u64 {
            c.insert(dot(1, 2 + 2 * k));
        }
        assert!(c.within_bounds());
        c.insert(dot(1, 1_000_000));
        assert!(!c.within_bounds());
        c.retire(1);
        assert!(c.within_bounds() && c.cloud_len() == 0);
    }
}
