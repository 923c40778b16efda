//! The cluster ring: every member's 150 virtual nodes on the 2^32 MurmurHash3 ring, and a key's
//! preference list (Dynamo §4.2–4.3). Pure: no I/O, no clock.
//!
//! Owns: token placement for a set of members and preference-list lookup. Tokens come from
//! `ring::token(node_id, index)`, so every node computes the same ring from the same
//! membership. A key's preference list is the first N *distinct* members clockwise from its
//! hash; on each member the key then belongs to the core owning that member's first vnode
//! clockwise from the hash (`ring::LocalRing`).
//!
//! Invariants: tokens sorted; a preference list holds `min(N, members)` distinct members.

use crate::core::ring::token;
use crate::limits::VNODES_PER_NODE;

/// Index of a member in `ClusterRing::members`.
pub type MemberIx = u16;

#[derive(Clone, Debug, Default)]
pub struct ClusterRing {
    members: Vec<String>,
    /// (token, member), sorted by token then member id order (ties are astronomically rare
    /// but must still be deterministic).
    tokens: Vec<(u32, MemberIx)>,
}

impl ClusterRing {
    /// The ring of `members` (order does not matter: they are sorted by id).
    pub fn new<S: AsRef<str>>(members: &[S]) -> ClusterRing {
        let mut ids: Vec<String> = members.iter().map(|m| m.as_ref().to_string()).collect();
        ids.sort();
        ids.dedup();
        assert!(ids.len() <= MemberIx::MAX as usize);
        let mut tokens = Vec::with_capacity(ids.len() * VNODES_PER_NODE);
        for (ix, id) in ids.iter().enumerate() {
            for v in 0..VNODES_PER_NODE {
                tokens.push((token(id, v), ix as MemberIx));
            }
        }
        tokens.sort_unstable();
        ClusterRing {
            members: ids,
            tokens,
        }
    }

    pub fn members(&self) -> &[String] {
        &self.members
    }

    pub fn member(&self, ix: MemberIx) -> &str {
        &self.members[ix as usize]
    }

    pub fn index_of(&self, id: &str) -> Option<MemberIx> {
        self.members
            .binary_search_by(|m| m.as_str().cmp(id))
            .ok()
            .map(|i| i as MemberIx)
    }

    /// The first `n` distinct members clockwise from `key_hash`: O(log V) to find the start,
    /// then a walk that stops as soon as `n` distinct members were seen.
    pub fn preference_list(&self, key_hash: u32, n: usize) -> Vec<MemberIx> {
        self.preference_list_at(self.token_index(key_hash), n)
    }

    /// Vnodes (tokens) on the ring.
    pub fn tokens(&self) -> usize {
        self.tokens.len()
    }

    /// The token that owns `key_hash`: the first clockwise from it (O(log V)). Keys with the
    /// same token share a preference list (`preference_list_at`).
    pub fn token_index(&self, key_hash: u32) -> usize {
        match self.tokens.len() {
            0 => 0,
            len => self.tokens.partition_point(|(t, _)| *t < key_hash) % len,
        }
    }

    /// The preference list of the keys owned by token `start`.
    pub fn preference_list_at(&self, start: usize, n: usize) -> Vec<MemberIx> {
        let want = n.min(self.members.len());
        let mut out: Vec<MemberIx> = Vec::with_capacity(want);
        if want == 0 {
            return out;
        }
        for i in 0..self.tokens.len() {
            let (_, m) = self.tokens[(start + i) % self.tokens.len()];
            if !out.contains(&m) {
                out.push(m);
                if out.len() == want {
                    break;
                }
            }
        }
        assert_eq!(
            out.len(),
            want,
            "a preference list holds N distinct members"
        );
        out
    }

    /// Preference list as member ids.
    pub fn preference_ids(&self, key_hash: u32, n: usize) -> Vec<&str> {
        self.preference_list(key_hash, n)
            .into_iter()
            .map(|m| self.member(m))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::ring::hash;
    use proptest::prelude::*;

    fn ids(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("node{i}")).collect()
    }

    #[test]
    fn preference_lists_hold_n_distinct_members() {
        let ring = ClusterRing::new(&ids(5));
        for i in 0..2000 {
            let list = ring.preference_list(hash(format!("k{i}").as_bytes()), 3);
            assert_eq!(list.len(), 3);
            assert!(list[0] != list[1] && list[1] != list[2] && list[0] != list[2]);
        }
        assert_eq!(
            ClusterRing::new(&ids(2)).preference_list(7, 3).len(),
            2,
            "N capped by size"
        );
        assert!(ClusterRing::new::<String>(&[])
            .preference_list(7, 3)
            .is_empty());
    }

    #[test]
    fn every_node_computes_the_same_ring_whatever_the_order() {
        let a = ClusterRing::new(&["b", "a", "c"]);
        let b = ClusterRing::new(&["c", "b", "a", "a"]);
        for i in 0..500 {
            let h = hash(format!("k{i}").as_bytes());
            assert_eq!(a.preference_ids(h, 3), b.preference_ids(h, 3));
        }
    }

    #[test]
    fn load_is_spread_over_members() {
        let ring = ClusterRing::new(&ids(4));
        let mut primary = [0usize; 4];
        let keys = 100_000;
        for i in 0..keys {
            primary[ring.preference_list(hash(format!("key:{i}").as_bytes()), 3)[0] as usize] += 1;
        }
        for (m, n) in primary.iter().enumerate() {
            let share = *n as f64 / (keys as f64 / 4.0);
            assert!((0.75..=1.25).contains(&share), "member {m}: {share:.3}");
        }
    }

    /// Adding one node to M moves about 1/(M+1) of the keys' primaries, every moved key moves to
    /// the new node, and a preference list changes only by the new node replacing one member.
    fn check_join(m: usize, keys: usize) -> (f64, usize) {
        let before = ClusterRing::new(&ids(m));
        let after = ClusterRing::new(&ids(m + 1));
        let newcomer = format!("node{}", m + 1);
        let mut moved = 0usize;
        for i in 0..keys {
            let h = hash(format!("key:{i}").as_bytes());
            let old = before.preference_ids(h, 3);
            let new = after.preference_ids(h, 3);
            if old[0] != new[0] {
                moved += 1;
                assert_eq!(
                    new[0], newcomer,
                    "a primary moved between two nodes that stayed"
                );
            }
            let gained: Vec<_> = new.iter().filter(|n| !old.contains(n)).collect();
            let lost: Vec<_> = old.iter().filter(|o| !new.contains(o)).collect();
            assert!(
                gained.iter().all(|g| **g == newcomer),
                "key {i}: gained {gained:?}"
            );
            assert!(lost.len() <= 1 && lost.len() == gained.len() || old.len() < 3);
        }
        (moved as f64 / keys as f64, m + 1)
    }

    #[test]
    fn a_join_moves_about_one_nth_of_the_keys() {
        for m in [2usize, 3, 5, 8] {
            let (fraction, members) = check_join(m, 20_000);
            let fair = 1.0 / members as f64;
            assert!(
                (fair * 0.6..=fair * 1.4).contains(&fraction),
                "M={m}: moved {fraction:.3}"
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Removing any one member: only keys it held change lists, and only by one member.
        #[test]
        fn a_leave_moves_only_the_leavers_keys(m in 3usize..8, gone in 0usize..8) {
            let all = ids(m);
            let gone = &all[gone % m];
            let rest: Vec<&String> = all.iter().filter(|n| *n != gone).collect();
            let before = ClusterRing::new(&all);
            let after = ClusterRing::new(&rest);
            for i in 0..3000 {
                let h = hash(format!("key:{i}").as_bytes());
                let old = before.preference_ids(h, 3);
                let new = after.preference_ids(h, 3);
                if !old.contains(&gone.as_str()) {
                    prop_assert_eq!(&old, &new);
                } else {
                    let kept: Vec<_> = old.iter().filter(|o| *o != gone).collect();
                    prop_assert!(kept.iter().all(|k| new.contains(k)));
                }
            }
        }
    }
}
