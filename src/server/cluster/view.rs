//! The ring as every core sees it: an immutable snapshot built by the gossip core from the
//! membership and sent to every core by message (`CoreMsg::Ring`), never shared under a lock.
//!
//! Holds the current ring (who owns what now), the pending ring while a join or leave is in
//! progress (who will own it), and every member's listing (for `kv info`).

use crate::core::cluster_ring::{ClusterRing, MemberIx};
use crate::core::membership::{Membership, Status, Update};
use crate::core::quorum::Replication;
use crate::core::ring::hash;
use std::sync::Arc;

/// A ring with each member's id, address and status, by member index, and every token's
/// replica targets computed once per view (routing a request is a binary search and one
/// reference-count increment: no preference-list walk, no allocation). That costs
/// tokens × N targets per view and core: ~54 KB for 3 nodes, ~1.8 MB for 100.
#[derive(Debug)]
pub struct AddressedRing {
    pub ring: ClusterRing,
    ids: Vec<Arc<str>>,
    pub addrs: Vec<Arc<str>>,
    pub statuses: Vec<Status>,
    pub incarnations: Vec<u64>,
    /// The replica targets of each token's keys (N of this ring).
    lists: Vec<Arc<[Target]>>,
}

impl AddressedRing {
    fn new(m: &Membership, ids: &[String], me: &str, n: usize) -> AddressedRing {
        let ring = ClusterRing::new(ids);
        let ids = ring
            .members()
            .iter()
            .map(|id| Arc::from(id.as_str()))
            .collect();
        let mut addrs = Vec::new();
        let mut statuses = Vec::new();
        let mut incarnations = Vec::new();
        for id in ring.members() {
            let st = m.get(id).map(|x| x.state.clone());
            addrs.push(Arc::from(
                st.as_ref().map(|s| s.addr.as_str()).unwrap_or_default(),
            ));
            statuses.push(st.as_ref().map(|s| s.status).unwrap_or(Status::Dead));
            incarnations.push(st.map(|s| s.incarnation).unwrap_or(0));
        }
        let mut r = AddressedRing {
            ring,
            ids,
            addrs,
            statuses,
            incarnations,
            lists: Vec::new(),
        };
        let n = n.min(r.ring.members().len()).max(1);
        r.lists = (0..r.ring.tokens())
            .map(|t| {
                r.ring
                    .preference_list_at(t, n)
                    .into_iter()
                    .map(|ix| r.target(ix, me))
                    .collect()
            })
            .collect();
        r
    }

    fn target(&self, m: MemberIx, me: &str) -> Target {
        let id = self.ids[m as usize].clone();
        Target {
            local: *id == *me,
            dead: self.statuses[m as usize] == Status::Dead,
            addr: self.addrs[m as usize].clone(),
            id,
        }
    }

    /// `key`'s replicas in this ring.
    fn replicas(&self, key: &[u8]) -> Arc<[Target]> {
        match self.lists.get(self.ring.token_index(hash(key))) {
            Some(l) => l.clone(),
            None => Arc::from(Vec::new()),
        }
    }
}

/// Where one replica operation goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub id: Arc<str>,
    pub addr: Arc<str>,
    pub local: bool,
    pub dead: bool,
}

#[derive(Debug)]
pub struct RingView {
    pub current: AddressedRing,
    /// The ring after the join or leave in progress (`None`: no change in progress).
    pub pending: Option<AddressedRing>,
    pub me: String,
    /// Every known member, LEFT ones included, in id order (for `kv info`).
    pub listing: Vec<Update>,
    pub replication: Replication,
    /// While this node is in no ring yet: why (what it waits for), for error replies.
    pub unjoined: Option<String>,
}

impl RingView {
    /// A view of one node alone.
    pub fn solo(me: &str, addr: &str, replication: Replication) -> RingView {
        let m = Membership::new(me, addr, 0, Default::default(), 0);
        RingView::from_membership(&m, replication)
    }

    pub fn from_membership(m: &Membership, replication: Replication) -> RingView {
        let ids = m.ring_ids();
        let pending_ids = m.pending_ring_ids();
        let (me, n) = (m.me(), replication.n);
        let pending = (pending_ids != ids).then(|| AddressedRing::new(m, &pending_ids, me, n));
        RingView {
            current: AddressedRing::new(m, &ids, me, n),
            pending,
            me: m.me().to_string(),
            listing: m.snapshot(),
            replication,
            unjoined: None,
        }
    }

    /// Whether this node is the only member of the ring (requests then stay on this node).
    pub fn is_solo(&self) -> bool {
        self.pending.is_none()
            && self.current.ring.members().len() == 1
            && self.current.ring.members()[0] == self.me
    }

    /// The error for an operation that found fewer than `needed` replicas for its key (only
    /// possible while this node is in no ring: every ring lists min(N, members) replicas).
    pub fn no_replicas(&self, found: usize, needed: usize) -> String {
        let why = self.unjoined.as_deref().unwrap_or("the ring is empty");
        let known: Vec<String> = self
            .listing
            .iter()
            .filter(|u| u.id != self.me)
            .map(|u| format!("{} {} {}", u.id, u.status.as_str(), u.role.as_str()))
            .collect();
        format!(
            "no replicas yet ({found} of {needed} needed): this node has not joined a cluster \
             ({why}); members it knows: [{}]",
            known.join(", ")
        )
    }

    /// N, R, W capped by the current ring's size (a 1-node ring runs N=R=W=1).
    pub fn effective(&self) -> Replication {
        let n = self
            .replication
            .n
            .min(self.current.ring.members().len())
            .max(1);
        Replication {
            n,
            r: self.replication.r.min(n),
            w: self.replication.w.min(n),
        }
    }

    /// A key's replicas in the current ring (reads, repairs).
    pub fn replicas(&self, key: &[u8]) -> Arc<[Target]> {
        self.current.replicas(key)
    }

    /// Whether this node is one of `key`'s current replicas.
    pub fn is_replica(&self, key: &[u8]) -> bool {
        self.current.replicas(key).iter().any(|t| t.local)
    }

    /// Where a write goes: the current replicas, then the pending owners (members of the
    /// key's pending preference list that are not current replicas). A write needs W acks plus
    /// one per pending owner, so a later read at R of either ring overlaps it (Cassandra's
    /// pending ranges).
    pub fn write_targets(&self, key: &[u8]) -> (Arc<[Target]>, usize) {
        let current = self.replicas(key);
        let Some(p) = &self.pending else {
            return (current, 0);
        };
        let mut targets = current.to_vec();
        for t in p.replicas(key).iter() {
            if !current.iter().any(|c| c.id == t.id) {
                targets.push(t.clone());
            }
        }
        let pending = targets.len() - current.len();
        (targets.into(), pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::membership::{Role, Timing};

    fn member(id: &str, role: Role) -> Update {
        Update {
            id: id.into(),
            addr: format!("{id}:1"),
            incarnation: 1,
            status: Status::Alive,
            role,
        }
    }

    fn view(me: &str, others: &[(&str, Role)]) -> RingView {
        let mut m = Membership::new(me, &format!("{me}:1"), 1, Timing::default(), 0);
        for (id, role) in others {
            m.apply(&member(id, *role), 0);
        }
        RingView::from_membership(&m, Replication::new(3, 2, 2).expect("valid"))
    }

    /// The per-token lists computed with the view route every key as the ring's own walk does.
    #[test]
    fn precomputed_replicas_match_the_preference_list() {
        let v = view(
            "b",
            &[
                ("a", Role::Member),
                ("c", Role::Member),
                ("d", Role::Member),
            ],
        );
        for i in 0..2_000 {
            let key = format!("key-{i}");
            let want = v.current.ring.preference_ids(hash(key.as_bytes()), 3);
            let got = v.replicas(key.as_bytes());
            let ids: Vec<&str> = got.iter().map(|t| &*t.id).collect();
            assert_eq!(ids, want, "{key}");
            assert_eq!(v.is_replica(key.as_bytes()), want.contains(&"b"));
            assert!(got.iter().all(|t| t.local == (&*t.id == "b")));
        }
    }

    #[test]
    fn writes_reach_pending_owners_and_need_their_acks() {
        let v = view("a", &[("b", Role::Member), ("c", Role::Member)]);
        assert!(v.pending.is_none());
        let (t, pending) = v.write_targets(b"k");
        assert_eq!((t.len(), pending), (3, 0));
        let v = view(
            "a",
            &[
                ("b", Role::Member),
                ("c", Role::Member),
                ("d", Role::Joining),
            ],
        );
        let mut with_d = 0;
        for i in 0..200 {
            let key = format!("key{i}");
            let (t, pending) = v.write_targets(key.as_bytes());
            let current: Vec<&str> = t[..3].iter().map(|t| &*t.id).collect();
            assert!(!current.contains(&"d"), "a joiner is no current replica");
            assert_eq!(t.len(), 3 + pending);
            if pending == 1 {
                assert_eq!(&*t[3].id, "d");
                with_d += 1;
            }
            assert_eq!(
                v.replicas(key.as_bytes()).len(),
                3,
                "reads ask current replicas"
            );
        }
        // with 4 members and N=3, the joiner will hold about 3/4 of the keys
        assert!((100..=190).contains(&with_d), "{with_d}");
    }

    #[test]
    fn a_leaver_keeps_its_ranges_until_it_is_gone() {
        let v = view(
            "a",
            &[
                ("b", Role::Member),
                ("c", Role::Member),
                ("d", Role::Leaving),
            ],
        );
        for i in 0..100 {
            let key = format!("key{i}");
            let (t, pending) = v.write_targets(key.as_bytes());
            let holds_d = t[..3].iter().any(|t| &*t.id == "d");
            assert_eq!(pending, usize::from(holds_d), "whoever takes over d's copy");
        }
    }

    #[test]
    fn is_replica_agrees_with_replicas() {
        let v = view(
            "a",
            &[
                ("b", Role::Member),
                ("c", Role::Member),
                ("d", Role::Member),
            ],
        );
        for i in 0..100 {
            let key = format!("key{i}");
            let listed = v.replicas(key.as_bytes()).iter().any(|t| t.local);
            assert_eq!(v.is_replica(key.as_bytes()), listed);
        }
    }

    #[test]
    fn a_joiner_alone_is_not_solo() {
        let m = Membership::with_role("j", "j:1", 1, Role::Waiting, Timing::default(), 0);
        let v = RingView::from_membership(&m, Replication::new(3, 2, 2).expect("valid"));
        assert!(!v.is_solo());
        assert!(
            v.replicas(b"k").is_empty(),
            "no replicas: a quorum error, not a local write"
        );
        assert!(RingView::solo("a", "a:1", Replication::new(3, 2, 2).expect("valid")).is_solo());
    }
}
