//! The observed-remove map: each key holds the dots of the writes that put it there, each
//! with its payload; a remove takes away only the dots it observed (Riak's ORSWOT, Almeida et
//! al.'s `DotMap` with a causal context). Sets are maps to `()`, hashes map fields to
//! `field::Field`, sorted sets members to scores.
//!
//! Owns: the state (`OrMap`), the deltas of its operations (each one an `OrMap` holding only
//! the dots it added and, in its context, those it observed), and the join. Never issues a dot
//! on its own: the caller names the writer (the replica applying the command first).
//!
//! Semantics, all from the join:
//! - concurrent puts of different keys, or of one key, all survive (their dots do); a key's
//!   value is resolved from its surviving dots' payloads (`field::resolve`);
//! - a remove concurrent with a put of the same key: the put's dot was not observed by the
//!   remove, so it survives: add wins;
//! - a put replaces what it observed of the key (`put`), or keeps it beside (`add_beside`:
//!   increments, which add to each other).

use std::collections::BTreeMap;

use super::context::{Context, Dot};
use super::Crdt;

/// One key's live dots and their payloads, in dot order. Nearly always one: a sorted vector
/// (a B-tree's smallest node would hold eleven, ten of them empty, for every field).
#[derive(Clone, Debug, PartialEq)]
pub struct Dots<P>(Vec<(Dot, P)>);

impl<P> Default for Dots<P> {
    fn default() -> Self {
        Dots(Vec::new())
    }
}

impl<P> Dots<P> {
    fn find(&self, d: &Dot) -> Result<usize, usize> {
        self.0.binary_search_by(|(x, _)| x.cmp(d))
    }

    pub fn get(&self, d: &Dot) -> Option<&P> {
        self.find(d).ok().map(|i| &self.0[i].1)
    }

    pub fn contains_key(&self, d: &Dot) -> bool {
        self.find(d).is_ok()
    }

    pub fn insert(&mut self, d: Dot, p: P) {
        match self.find(&d) {
            Ok(i) => self.0[i].1 = p,
            Err(i) => self.0.insert(i, (d, p)),
        }
    }

    pub fn retain(&mut self, mut keep: impl FnMut(&Dot, &mut P) -> bool) {
        self.0.retain_mut(|(d, p)| keep(d, p));
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Dot, &P)> + Clone {
        self.0.iter().map(|(d, p)| (d, p))
    }

    pub fn keys(&self) -> impl Iterator<Item = &Dot> + Clone {
        self.0.iter().map(|(d, _)| d)
    }

    pub fn values(&self) -> impl Iterator<Item = &P> + Clone {
        self.0.iter().map(|(_, p)| p)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<P> FromIterator<(Dot, P)> for Dots<P> {
    fn from_iter<I: IntoIterator<Item = (Dot, P)>>(it: I) -> Self {
        let mut v: Vec<(Dot, P)> = it.into_iter().collect();
        v.sort_by_key(|a| a.0);
        v.dedup_by(|a, b| a.0 == b.0);
        Dots(v)
    }
}

impl<P> IntoIterator for Dots<P> {
    type Item = (Dot, P);
    type IntoIter = std::vec::IntoIter<(Dot, P)>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a, P> IntoIterator for &'a Dots<P> {
    type Item = (&'a Dot, &'a P);
    type IntoIter =
        std::iter::Map<std::slice::Iter<'a, (Dot, P)>, fn(&'a (Dot, P)) -> (&'a Dot, &'a P)>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(d, p)| (d, p))
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct OrMap<P> {
    entries: BTreeMap<Box<[u8]>, Dots<P>>,
    ctx: Context,
}

impl<P> Default for OrMap<P> {
    fn default() -> Self {
        OrMap {
            entries: BTreeMap::new(),
            ctx: Context::default(),
        }
    }
}

impl<P: Clone> OrMap<P> {
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    pub fn get(&self, key: &[u8]) -> Option<&Dots<P>> {
        self.entries.get(key)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &Dots<P>)> {
        self.entries.iter().map(|(k, d)| (&k[..], d))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Put `payload` under `key` as `writer`, replacing every dot of the key observed here.
    /// Returns the delta to ship.
    pub fn put(&mut self, writer: u64, key: &[u8], payload: P) -> OrMap<P> {
        self.add_beside(writer, key, payload, |_, _| true)
    }

    /// Put `payload` under `key` as `writer`, replacing only the observed dots for which
    /// `replaces` holds (an increment replaces its writer's earlier increment, which it folds
    /// in, and keeps every other dot). Returns the delta to ship.
    pub fn add_beside(
        &mut self,
        writer: u64,
        key: &[u8],
        payload: P,
        replaces: impl Fn(&Dot, &P) -> bool,
    ) -> OrMap<P> {
        let dot = self.ctx.next(writer);
        let mut delta = OrMap::default();
        delta.ctx.insert(dot);
        let dots = self.entries.entry(key.into()).or_default();
        dots.retain(|d, p| {
            let replaced = replaces(d, p);
            if replaced {
                delta.ctx.insert(*d);
            }
            !replaced
        });
        dots.insert(dot, payload.clone());
        delta.entries.insert(key.into(), Dots(vec![(dot, payload)]));
        delta
    }

    /// Remove `key`: every dot of it observed here. `None` when it is not here. The delta
    /// names the key with no dots, so `absorb` finds what it removes without a walk.
    pub fn remove(&mut self, key: &[u8]) -> Option<OrMap<P>> {
        let dots = self.entries.remove(key)?;
        let mut delta = OrMap::default();
        for d in dots.keys() {
            delta.ctx.insert(*d);
        }
        delta.entries.insert(key.into(), Dots::default());
        Some(delta)
    }

    /// Drop every dot whose payload fails `keep`, as a remove of it would (its context
    /// keeps it seen, so no copy of it comes back).
    pub fn retain_payloads(&mut self, mut keep: impl FnMut(&P) -> bool) {
        self.entries.retain(|_, dots| {
            dots.retain(|_, p| keep(p));
            !dots.is_empty()
        });
    }

    /// Drop the dots of `key` whose payload fails `keep` (as `retain_payloads`, one key).
    pub fn retain_key(&mut self, key: &[u8], keep: impl FnMut(&P) -> bool) {
        let mut keep = keep;
        if let Some(dots) = self.entries.get_mut(key) {
            dots.retain(|_, p| keep(p));
            if dots.is_empty() {
                self.entries.remove(key);
            }
        }
    }

    /// The keys and dots, and the context (for encoding and projections).
    pub fn parts(&self) -> (&BTreeMap<Box<[u8]>, Dots<P>>, &Context) {
        (&self.entries, &self.ctx)
    }

    /// Rebuild from `parts` (a decoded state or delta).
    pub fn from_parts(entries: BTreeMap<Box<[u8]>, Dots<P>>, ctx: Context) -> OrMap<P> {
        OrMap { entries, ctx }
    }

    /// Merge a delta (`put`'s, `remove`'s, or a join of them): only the keys it names are
    /// touched, so the cost follows the delta's size, not the state's. Every dot of the
    /// delta's context must belong to a key it names, as every delta made here does; a full
    /// state goes through `merge`. Keys the delta names with no dots are kept named when
    /// `self` is itself a delta (`keep_named`), so deltas join into deltas.
    pub fn absorb(&mut self, delta: &OrMap<P>, keep_named: bool) {
        for (key, theirs) in &delta.entries {
            let mine = self.entries.remove(key);
            let named = mine.is_some();
            let mut kept: Dots<P> = mine
                .into_iter()
                .flatten()
                .filter(|(d, _)| theirs.contains_key(d) || !delta.ctx.contains(*d))
                .collect();
            for (d, p) in theirs {
                if !kept.contains_key(d) && !self.ctx.contains(*d) {
                    kept.insert(*d, p.clone());
                }
            }
            if !kept.is_empty() || (keep_named && (named || theirs.is_empty())) {
                self.entries.insert(key.clone(), kept);
            }
        }
        self.ctx.merge(&delta.ctx);
    }

    /// Remove every key observed here (DEL of the whole collection).
    pub fn clear(&mut self) -> OrMap<P> {
        let mut delta = OrMap::default();
        for d in self.entries.values().flat_map(|dots| dots.keys()) {
            delta.ctx.insert(*d);
        }
        self.entries.clear();
        delta
    }
}

impl<P: Clone> Crdt for OrMap<P> {
    fn merge(&mut self, other: &OrMap<P>) {
        // a dot survives if both sides hold it, or if the side without it never saw it
        let mut keys: Vec<Box<[u8]>> = other.entries.keys().cloned().collect();
        keys.extend(
            self.entries
                .keys()
                .filter(|k| !other.entries.contains_key(*k))
                .cloned(),
        );
        for key in keys {
            let mine = self.entries.remove(&key).unwrap_or_default();
            let theirs = other.entries.get(&key);
            let mut kept: Dots<P> = mine
                .into_iter()
                .filter(|(d, _)| {
                    theirs.is_some_and(|t| t.contains_key(d)) || !other.ctx.contains(*d)
                })
                .collect();
            for (d, p) in theirs.into_iter().flatten() {
                if !kept.contains_key(d) && !self.ctx.contains(*d) {
                    kept.insert(*d, p.clone());
                }
            }
            if !kept.is_empty() {
                self.entries.insert(key, kept);
            }
        }
        self.ctx.merge(&other.ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    type Set = OrMap<()>;

    fn members(s: &Set) -> Vec<Vec<u8>> {
        s.iter().map(|(k, _)| k.to_vec()).collect()
    }

    #[test]
    fn a_concurrent_add_survives_a_remove_add_wins() {
        let (mut a, mut b) = (Set::default(), Set::default());
        let d = a.put(1, b"x", ());
        b.merge(&d);
        // b removes what it saw; a re-adds concurrently
        let rm = b.remove(b"x").unwrap();
        let add = a.put(1, b"x", ());
        a.merge(&rm);
        b.merge(&add);
        assert_eq!(members(&a), vec![b"x".to_vec()]);
        assert_eq!(a, b);
    }

    #[test]
    fn a_remove_takes_what_it_observed() {
        let (mut a, mut b) = (Set::default(), Set::default());
        let d = a.put(1, b"x", ());
        b.merge(&d);
        let rm = b.remove(b"x").unwrap();
        a.merge(&rm);
        assert!(a.is_empty() && b.is_empty());
        assert_eq!(a, b);
        // the old add, delivered again, stays removed
        a.merge(&d);
        assert!(a.is_empty());
    }

    #[test]
    fn increments_beside_each_other_are_all_kept() {
        let (mut a, mut b) = (OrMap::<i64>::default(), OrMap::<i64>::default());
        let d1 = a.add_beside(1, b"f", 5, |d, _| d.writer == 1);
        let d2 = b.add_beside(2, b"f", 7, |d, _| d.writer == 2);
        a.merge(&d2);
        b.merge(&d1);
        assert_eq!(a, b);
        let sum: i64 = a.get(b"f").unwrap().values().sum();
        assert_eq!(sum, 12);
        // a folds its own increment into the next: still one dot per writer
        let d3 = a.add_beside(1, b"f", 5 + 1, |d, _| d.writer == 1);
        b.merge(&d3);
        assert_eq!(a.get(b"f").unwrap().len(), 2);
        assert_eq!(b.get(b"f").unwrap().values().sum::<i64>(), 13);
    }

    /// A step of a random history: an operation at a replica, or a delta delivered.
    #[derive(Clone, Debug)]
    enum Step {
        Put { at: usize, key: u8, value: u8 },
        Remove { at: usize, key: u8 },
        Clear { at: usize },
        Deliver { delta: usize, to: usize },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => (0..3usize, 0..4u8, 0..8u8).prop_map(|(at, key, value)| Step::Put { at, key, value }),
            2 => (0..3usize, 0..4u8).prop_map(|(at, key)| Step::Remove { at, key }),
            1 => (0..3usize).prop_map(|at| Step::Clear { at }),
            4 => (0..64usize, 0..3usize).prop_map(|(delta, to)| Step::Deliver { delta, to }),
        ]
    }

    /// Replay `steps` on three replicas (writers 1..=3): their states and every delta made.
    fn run(steps: &[Step]) -> (Vec<OrMap<u8>>, Vec<OrMap<u8>>) {
        let mut replicas = vec![OrMap::<u8>::default(); 3];
        let mut deltas = Vec::new();
        for s in steps {
            match *s {
                Step::Put { at, key, value } => {
                    deltas.push(replicas[at].put(at as u64 + 1, &[key], value))
                }
                Step::Remove { at, key } => deltas.extend(replicas[at].remove(&[key])),
                Step::Clear { at } => deltas.push(replicas[at].clear()),
                Step::Deliver { delta, to } => {
                    if let Some(d) = deltas.get(delta % deltas.len().max(1)) {
                        let d = d.clone();
                        replicas[to].merge(&d);
                    }
                }
            }
        }
        (replicas, deltas)
    }

    proptest! {
        /// Every delta delivered everywhere, in any order, any number of times, gives every
        /// replica one state: the join of all of them.
        #[test]
        fn deltas_in_any_order_and_number_converge(
            steps in proptest::collection::vec(step(), 1..60),
            order in proptest::collection::vec(any::<prop::sample::Index>(), 0..200),
        ) {
            let (mut replicas, deltas) = run(&steps);
            let mut full = replicas[0].clone();
            full.merge(&replicas[1]);
            full.merge(&replicas[2]);
            for (i, pick) in order.iter().enumerate() {
                if !deltas.is_empty() {
                    let d = &deltas[pick.index(deltas.len())];
                    replicas[i % 3].merge(d);
                }
            }
            for r in &mut replicas {
                for d in &deltas {
                    r.merge(d);
                }
            }
            prop_assert_eq!(&replicas[0], &replicas[1]);
            prop_assert_eq!(&replicas[1], &replicas[2]);
            prop_assert_eq!(&replicas[0], &full);
        }

        #[test]
        fn merge_is_commutative_associative_and_idempotent(
            steps in proptest::collection::vec(step(), 1..60),
        ) {
            let (r, _) = run(&steps);
            let join = |a: &OrMap<u8>, b: &OrMap<u8>| { let mut x = a.clone(); x.merge(b); x };
            prop_assert_eq!(join(&r[0], &r[1]), join(&r[1], &r[0]));
            prop_assert_eq!(join(&join(&r[0], &r[1]), &r[2]), join(&r[0], &join(&r[1], &r[2])));
            prop_assert_eq!(join(&r[0], &r[0]), r[0].clone());
        }

        /// Every put no remove observed is present after every delta reached everyone, and
        /// nothing is present that nobody put.
        #[test]
        fn unobserved_puts_survive_and_nothing_appears(
            steps in proptest::collection::vec(step(), 1..60),
        ) {
            let (mut replicas, deltas) = run(&steps);
            for r in &mut replicas {
                for d in &deltas {
                    r.merge(d);
                }
            }
            let removed: Vec<Dot> = deltas
                .iter()
                .filter(|d| d.iter().all(|(_, dots)| dots.is_empty()))
                .flat_map(|d| d.context().dots().collect::<Vec<_>>())
                .collect();
            for d in &deltas {
                for (key, dots) in d.iter() {
                    for (dot, value) in dots {
                        let replaced = deltas.iter().any(|o| {
                            o.context().contains(*dot) && o.get(key).is_none_or(|x| !x.contains_key(dot))
                        });
                        if !removed.contains(dot) && !replaced {
                            prop_assert_eq!(replicas[0].get(key).and_then(|x| x.get(dot)), Some(value));
                        }
                    }
                }
            }
            for (key, dots) in replicas[0].iter() {
                for dot in dots.keys() {
                    prop_assert!(deltas.iter().any(|d| d.get(key).is_some_and(|x| x.contains_key(dot))));
                }
            }
        }
    }
}
