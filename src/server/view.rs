//! The ring as every core sees it: an immutable snapshot built by the gossip core from the
//! membership and sent to every core by message (`CoreMsg::Ring`), never shared under a lock.

use crate::core::cluster_ring::{ClusterRing, MemberIx};
use crate::core::membership::{Membership, Status};
use crate::core::quorum::Replication;

#[derive(Debug)]
pub struct RingView {
    pub ring: ClusterRing,
    /// By member index: advertised address, status, incarnation.
    pub addrs: Vec<String>,
    pub statuses: Vec<Status>,
    pub incarnations: Vec<u64>,
    pub me: MemberIx,
    pub replication: Replication,
}

impl RingView {
    /// A view of one node alone.
    pub fn solo(me: &str, addr: &str, replication: Replication) -> RingView {
        RingView {
            ring: ClusterRing::new(&[me]),
            addrs: vec![addr.to_string()],
            statuses: vec![Status::Alive],
            incarnations: vec![0],
            me: 0,
            replication,
        }
    }

    pub fn from_membership(m: &Membership, replication: Replication) -> RingView {
        let ring = ClusterRing::new(&m.ring_ids());
        let mut addrs = Vec::new();
        let mut statuses = Vec::new();
        let mut incarnations = Vec::new();
        for id in ring.members() {
            let st = m.get(id).map(|x| x.state.clone());
            addrs.push(st.as_ref().map(|s| s.addr.clone()).unwrap_or_default());
            statuses.push(st.as_ref().map(|s| s.status).unwrap_or(Status::Dead));
            incarnations.push(st.map(|s| s.incarnation).unwrap_or(0));
        }
        let me = ring.index_of(m.me()).unwrap_or(0);
        RingView {
            ring,
            addrs,
            statuses,
            incarnations,
            me,
            replication,
        }
    }

    /// Whether this node is the only member (requests then stay local).
    pub fn is_solo(&self) -> bool {
        self.ring.members().len() <= 1
    }

    /// N, R, W capped by the ring's size (a 1-node ring runs N=R=W=1).
    pub fn effective(&self) -> Replication {
        let n = self.replication.n.min(self.ring.members().len()).max(1);
        Replication {
            n,
            r: self.replication.r.min(n),
            w: self.replication.w.min(n),
        }
    }
}
