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

/// A ring with each member's id, address and status, by member index (ids and addresses as
/// `Arc<str>`, so routing a request clones pointers, not strings).
#[derive(Debug)]
pub struct AddressedRing {
    pub ring: ClusterRing,
    ids: Vec<Arc<str>>,
    pub addrs: Vec<Arc<str>>,
    pub statuses: Vec<Status>,
    pub incarnations: Vec<u64>,
}

impl AddressedRing {
    fn new(m: &Membership, ids: &[String]) -> AddressedRing {
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
        AddressedRing {
            ring,
            ids,
            addrs,
            statuses,
            incarnations,
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
        let pending = (pending_ids != ids).then(|| AddressedRing::new(m, &pending_ids));
        RingView {
            current: AddressedRing::new(m, &ids),
            pending,
            me: m.me().to_string(),
            listing: m.snapshot(),
            replication,
        }
    }

    /// Whether this node is the only member of the ring (requests then stay on this node).
    pub fn is_solo(&self) -> bool {
        self.pending.is_none()
            && self.current.ring.members().len() == 1
            && self.current.ring.members()[0] == self.me
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

    fn target(&self, ring: &AddressedRing, m: MemberIx) -> Target {
        let id = ring.ids[m as usize].clone();
        Target {
            local: *id == *self.me,
            dead: ring.statuses[m as usize] == Status::Dead,
            addr: ring.addrs[m as usize].clone(),
            id,
        }
    }

    /// A key's replicas in the current ring (reads, repairs).
    pub fn replicas(&self, key: &[u8]) -> Vec<Target> {
        let n = self.effective().n;
        self.current
            .ring
            .preference_list(hash(key), n)
            .into_iter()
            .map(|m| self.target(&self.current, m))
            .collect()
    }

    /// Whether this node is one of `key`'s current replicas (no allocation per member).
    pub fn is_replica(&self, key: &[u8]) -> bool {
        let n = self.effective().n;
        self.current
            .ring
            .preference_list(hash(key), n)
            .into_iter()
            .any(|m| self.current.ring.member(m) == self.me)
    }

    /// Where a write goes: the current replicas, then the pending owners (members of the
    /// key's pending preference list that are not current replicas). A write needs W acks plus
    /// one per pending owner, so a later read at R of either ring overlaps it (Cassandra's
    /// pending ranges).
    pub fn write_targets(&self, key: &[u8]) -> (Vec<Target>, usize) {
        let mut targets = self.replicas(key);
        let current = targets.len();
        if let Some(p) = &self.pending {
            let n = self.replication.n.min(p.ring.members().len()).max(1);
            for m in p.ring.preference_list(hash(key), n) {
                let t = self.target(p, m);
                if !targets[..current].iter().any(|c| c.id == t.id) {
                    targets.push(t);
                }
            }
        }
        let pending = targets.len() - current;
        (targets, pending)
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
