//! Cluster membership and failure detection, SWIM-style (Das et al. 2002; HashiCorp
//! memberlist). Pure: time (`now_ms`) and randomness (`fastrand::Rng`, seeded by the caller)
//! come in as arguments; what to send goes out as values.
//!
//! Owns: every known member's (id, address, incarnation, status, ring role) and the rules that
//! merge gossip about them. Never sends, sleeps or reads a clock.
//!
//! Rules (an update about a member replaces what we know when it is *newer*):
//! - a higher incarnation always wins; at equal incarnation LEFT > DEAD > SUSPECT > ALIVE;
//! - except that hearsay never beats direct contact: an accusation (SUSPECT or DEAD) about a
//!   member we heard from ourselves within the last `direct_contact_fresh_ms` is ignored. After
//!   a partition heals, the isolated side's stale verdicts would otherwise mark members DEAD
//!   that answer us every gossip round; the accused member sees the same accusation and
//!   refutes it, which settles it everywhere (SWIM §4.2: only the member refutes);
//! - only the member itself raises its incarnation: told it is SUSPECT or DEAD, it refutes
//!   with incarnation + 1 and ALIVE, which then outranks the accusation everywhere;
//! - a SUSPECT not refuted within `suspect_timeout_ms` becomes DEAD;
//! - DEAD members stay in the ring and keep being probed (a healed partition or a restarted
//!   node reunites without an operator); only LEFT members leave the ring.
//!
//! Ring roles (one topology change at a time; only the member itself changes its role, always
//! with incarnation + 1, so the newest role travels with the newest incarnation):
//! - `Member` owns its ranges; `Waiting` is a joiner queued behind another change (owns
//!   nothing, is not a pending owner); `Joining` is a pending owner: writes to its future
//!   ranges also go to it and need one more ack each; `Leaving` still owns its ranges while
//!   it streams them to their next owners, who are pending owners meanwhile.
//! - the current ring is every non-LEFT `Member` or `Leaving` member; the pending ring is every
//!   non-LEFT `Member` or `Joining` member. When they differ a change is in progress.
//! - founding: with no live ring member anywhere (every node started at once with the same
//!   `--seed` list, as etcd's and Cassandra's identical-config starts do), a `Waiting` node
//!   becomes the first `Member` once every seed has answered (is ALIVE in our view, or is us)
//!   and no other live `Waiting` node has a smaller id. The others then join it (an empty
//!   cluster: at once). A node whose seeds have not all answered never founds a cluster of its
//!   own: a lone node cut off from its seeds waits instead of splitting the cluster.
//! - the turn: a joiner or leaver proceeds only when no other live member is `Joining` or
//!   `Leaving` with a smaller id (and, for a `Waiting` joiner, no other live `Waiting` one with
//!   a smaller id); otherwise it waits.

use std::collections::BTreeMap;

/// Largest cluster this node tracks (bounds gossip messages and probing).
pub const MEMBERS_MAX: usize = 1024;

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum Status {
    Alive,
    Suspect,
    Dead,
    Left,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Alive => "ALIVE",
            Status::Suspect => "SUSPECT",
            Status::Dead => "DEAD",
            Status::Left => "LEFT",
        }
    }
}

/// A member's part in the ring (see the module rules).
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
)]
pub enum Role {
    #[default]
    Member,
    Waiting,
    Joining,
    Leaving,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Member => "member",
            Role::Waiting => "waiting",
            Role::Joining => "joining",
            Role::Leaving => "leaving",
        }
    }
}

/// What gossip says about one member.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Update {
    pub id: String,
    pub addr: String,
    pub incarnation: u64,
    pub status: Status,
    #[serde(default)]
    pub role: Role,
}

/// A fingerprint of the ring roles in `updates` (who is a member, joining or leaving): two
/// nodes route writes alike when their fingerprints match.
pub fn topology_digest(updates: &[Update]) -> u64 {
    let mut parts: Vec<String> = updates
        .iter()
        .filter(|u| u.status != Status::Left && u.role != Role::Waiting)
        .map(|u| format!("{}={}", u.id, u.role.as_str()))
        .collect();
    parts.sort();
    let text = parts.join(",");
    let lo = crate::core::ring::hash(text.as_bytes()) as u64;
    let hi = crate::core::ring::hash(format!("{text}#").as_bytes()) as u64;
    hi << 32 | lo
}

impl Update {
    /// Whether `self` should replace `current` (see the module rules).
    fn supersedes(&self, current: &Update) -> bool {
        (self.incarnation, self.status) > (current.incarnation, current.status)
    }
}

#[derive(Clone, Debug)]
pub struct Member {
    pub state: Update,
    /// Local time the status last changed (drives SUSPECT -> DEAD).
    pub since_ms: u64,
    /// Local time we last heard from the member itself (it answered us or gossiped to us).
    pub heard_ms: Option<u64>,
}

#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub suspect_timeout_ms: u64,
    /// Hearing from a member this recently outweighs another node's accusation of it.
    pub direct_contact_fresh_ms: u64,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing {
            suspect_timeout_ms: 5_000,
            direct_contact_fresh_ms: crate::limits::DIRECT_CONTACT_FRESH_MS,
        }
    }
}

/// Whether a `Waiting` node with no ring to join may found the cluster (module rules).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Founding {
    /// A live member is in the ring: join it the usual way.
    RingExists,
    /// Found it: become the first `Member`.
    Found,
    /// These seeds have not answered yet.
    AwaitSeeds(Vec<String>),
    /// This live waiting node has a smaller id: it founds, we join it.
    Defer(String),
}

impl std::fmt::Display for Founding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Founding::RingExists => write!(f, "a ring member is reachable: joining it"),
            Founding::Found => write!(f, "every seed answered and none is in a ring: founding"),
            Founding::AwaitSeeds(s) if s.is_empty() => write!(f, "no seed given"),
            Founding::AwaitSeeds(s) => {
                write!(f, "waiting for seeds {} to answer", s.join(", "))
            }
            Founding::Defer(id) => write!(f, "waiting for {id} (smaller id) to found the cluster"),
        }
    }
}

/// A change worth logging and gossiping (a status or a ring role changed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub id: String,
    pub from: Option<Status>,
    pub to: Status,
    pub role: Role,
}

#[derive(Clone, Debug)]
pub struct Membership {
    me: String,
    members: BTreeMap<String, Member>,
    timing: Timing,
}

impl Membership {
    /// A membership holding only ourselves, ALIVE at `incarnation`, a ring member.
    pub fn new(me: &str, addr: &str, incarnation: u64, timing: Timing, now_ms: u64) -> Membership {
        Membership::with_role(me, addr, incarnation, Role::Member, timing, now_ms)
    }

    /// A membership holding only ourselves, ALIVE at `incarnation`, in `role`.
    pub fn with_role(
        me: &str,
        addr: &str,
        incarnation: u64,
        role: Role,
        timing: Timing,
        now_ms: u64,
    ) -> Membership {
        let mut members = BTreeMap::new();
        let state = Update {
            id: me.into(),
            addr: addr.into(),
            incarnation,
            status: Status::Alive,
            role,
        };
        members.insert(
            me.to_string(),
            Member {
                state,
                since_ms: now_ms,
                heard_ms: None,
            },
        );
        Membership {
            me: me.to_string(),
            members,
            timing,
        }
    }

    pub fn me(&self) -> &str {
        &self.me
    }

    pub fn incarnation(&self) -> u64 {
        self.members
            .get(&self.me)
            .map(|m| m.state.incarnation)
            .unwrap_or(0)
    }

    pub fn get(&self, id: &str) -> Option<&Member> {
        self.members.get(id)
    }

    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    /// Ids of the current ring: every non-LEFT `Member` or `Leaving` member.
    pub fn ring_ids(&self) -> Vec<String> {
        self.ids_with(|r| matches!(r, Role::Member | Role::Leaving))
    }

    /// Ids of the ring once the change in progress completes: every non-LEFT `Member` or
    /// `Joining` member.
    pub fn pending_ring_ids(&self) -> Vec<String> {
        self.ids_with(|r| matches!(r, Role::Member | Role::Joining))
    }

    fn ids_with(&self, keep: impl Fn(Role) -> bool) -> Vec<String> {
        self.members
            .values()
            .filter(|m| m.state.status != Status::Left && keep(m.state.role))
            .map(|m| m.state.id.clone())
            .collect()
    }

    pub fn my_role(&self) -> Role {
        self.members
            .get(&self.me)
            .map(|m| m.state.role)
            .unwrap_or_default()
    }

    /// Change our own role (incarnation + 1, so it outranks what others know).
    pub fn set_my_role(&mut self, role: Role, now_ms: u64) -> Option<Change> {
        let me = self.members.get_mut(&self.me)?;
        if me.state.role == role {
            return None;
        }
        me.state.incarnation += 1;
        me.state.role = role;
        me.since_ms = now_ms;
        Some(Change {
            id: self.me.clone(),
            from: Some(me.state.status),
            to: me.state.status,
            role,
        })
    }

    /// We have left: LEFT at incarnation + 1 (terminal; gossip tells the others).
    pub fn set_me_left(&mut self, now_ms: u64) -> Option<Change> {
        let me = self.members.get_mut(&self.me)?;
        let from = me.state.status;
        me.state.incarnation += 1;
        me.state.status = Status::Left;
        me.since_ms = now_ms;
        Some(Change {
            id: self.me.clone(),
            from: Some(from),
            to: Status::Left,
            role: me.state.role,
        })
    }

    /// Whether we (a `Waiting` node) may found the cluster, given our `--seed` addresses
    /// (see the module rules).
    pub fn founding(&self, seeds: &[String]) -> Founding {
        let live = |m: &&Member| matches!(m.state.status, Status::Alive | Status::Suspect);
        let in_ring = |m: &&Member| m.state.role != Role::Waiting && m.state.status != Status::Left;
        if self.members.values().filter(live).any(|m| in_ring(&m)) {
            return Founding::RingExists;
        }
        let alive_at = |addr: &str| {
            self.members
                .values()
                .any(|m| m.state.addr == addr && m.state.status == Status::Alive)
        };
        let missing: Vec<String> = seeds.iter().filter(|s| !alive_at(s)).cloned().collect();
        if !missing.is_empty() || seeds.is_empty() {
            return Founding::AwaitSeeds(missing);
        }
        let first = self
            .members
            .values()
            .filter(|m| m.state.status == Status::Alive && m.state.role == Role::Waiting)
            .map(|m| m.state.id.as_str())
            .min();
        match first {
            Some(id) if id != self.me => Founding::Defer(id.to_string()),
            _ => Founding::Found,
        }
    }

    /// Whether another live member is joining or leaving.
    pub fn others_changing(&self) -> bool {
        self.members.values().any(|m| {
            m.state.id != self.me
                && matches!(m.state.status, Status::Alive | Status::Suspect)
                && matches!(m.state.role, Role::Joining | Role::Leaving)
        })
    }

    /// Whether our pending join or leave may proceed now (see the module rules).
    pub fn my_turn(&self) -> bool {
        let mine = self.my_role();
        let live = |m: &&Member| {
            m.state.id != self.me && matches!(m.state.status, Status::Alive | Status::Suspect)
        };
        let blocked = self.members.values().filter(live).any(|m| {
            let other = m.state.role;
            let changing = matches!(other, Role::Joining | Role::Leaving);
            let smaller = m.state.id < self.me;
            match mine {
                Role::Waiting => changing || (other == Role::Waiting && smaller),
                _ => changing && smaller,
            }
        });
        !blocked
    }

    /// Everything we know, to gossip (bounded by `MEMBERS_MAX`).
    pub fn snapshot(&self) -> Vec<Update> {
        self.members.values().map(|m| m.state.clone()).collect()
    }

    /// Merge one update from gossip; returns the change it made, if any.
    pub fn apply(&mut self, u: &Update, now_ms: u64) -> Option<Change> {
        self.merge(u, now_ms, true)
    }

    /// `apply`, with `hearsay`: the update comes from another node (gossip), not from our own
    /// failed probe.
    fn merge(&mut self, u: &Update, now_ms: u64, hearsay: bool) -> Option<Change> {
        if u.id == self.me {
            return self.about_me(u, now_ms);
        }
        let fresh_ms = self.timing.direct_contact_fresh_ms;
        match self.members.get_mut(&u.id) {
            Some(m) => {
                if !u.supersedes(&m.state) {
                    return None;
                }
                let accused = matches!(u.status, Status::Suspect | Status::Dead);
                let heard_recently = m
                    .heard_ms
                    .is_some_and(|h| now_ms.saturating_sub(h) < fresh_ms);
                if hearsay && accused && heard_recently && m.state.status == Status::Alive {
                    // Hearsay against direct contact: the member will refute it itself.
                    return None;
                }
                let (from, from_role) = (m.state.status, m.state.role);
                m.state = u.clone();
                if from != u.status {
                    m.since_ms = now_ms;
                }
                if from != u.status || from_role != u.role {
                    return Some(Change {
                        id: u.id.clone(),
                        from: Some(from),
                        to: u.status,
                        role: u.role,
                    });
                }
                None
            }
            None => {
                if self.members.len() >= MEMBERS_MAX {
                    return None;
                }
                self.members.insert(
                    u.id.clone(),
                    Member {
                        state: u.clone(),
                        since_ms: now_ms,
                        heard_ms: None,
                    },
                );
                Some(Change {
                    id: u.id.clone(),
                    from: None,
                    to: u.status,
                    role: u.role,
                })
            }
        }
    }

    /// We heard from member `id` itself (it answered a probe or gossiped to us).
    pub fn heard_from(&mut self, id: &str, now_ms: u64) {
        if let Some(m) = self.members.get_mut(id) {
            m.heard_ms = Some(now_ms);
        }
    }

    /// The id of the member at `addr`, if we know one.
    pub fn id_at(&self, addr: &str) -> Option<&str> {
        self.members
            .values()
            .find(|m| m.state.addr == addr)
            .map(|m| m.state.id.as_str())
    }

    /// Someone says we are SUSPECT or DEAD: refute with a higher incarnation.
    fn about_me(&mut self, u: &Update, now_ms: u64) -> Option<Change> {
        let me = self.members.get_mut(&self.me)?;
        if me.state.status == Status::Left || u.incarnation < me.state.incarnation {
            return None;
        }
        // Others hold a state of ours at our incarnation or above that is not what we are: an
        // accusation, or an older life of ours (a restart on an empty data dir forgets our
        // incarnation and role). Go above it, or our own state never supersedes theirs.
        let differs =
            u.status != Status::Alive || u.role != me.state.role || u.addr != me.state.addr;
        if u.incarnation == me.state.incarnation && !differs {
            return None;
        }
        me.state.incarnation = u.incarnation + 1;
        me.since_ms = now_ms;
        Some(Change {
            id: self.me.clone(),
            from: Some(u.status),
            to: Status::Alive,
            role: me.state.role,
        })
    }

    /// A probe and its indirect probes all failed: suspect the target.
    pub fn suspect(&mut self, id: &str, now_ms: u64) -> Option<Change> {
        let m = self.members.get(id)?;
        if m.state.status != Status::Alive {
            return None;
        }
        let u = Update {
            status: Status::Suspect,
            ..m.state.clone()
        };
        self.merge(&u, now_ms, false)
    }

    /// Time passes: unrefuted suspects become DEAD.
    pub fn tick(&mut self, now_ms: u64) -> Vec<Change> {
        let timeout = self.timing.suspect_timeout_ms;
        let mut changes = Vec::new();
        for m in self.members.values_mut() {
            if m.state.status == Status::Suspect && now_ms.saturating_sub(m.since_ms) >= timeout {
                m.state.status = Status::Dead;
                m.since_ms = now_ms;
                changes.push(Change {
                    id: m.state.id.clone(),
                    from: Some(Status::Suspect),
                    to: Status::Dead,
                    role: m.state.role,
                });
            }
        }
        changes
    }

    /// A random member to probe next: anyone but us and LEFT members (DEAD ones included).
    pub fn probe_target(&self, rng: &mut fastrand::Rng) -> Option<String> {
        let candidates: Vec<&String> = self
            .members
            .values()
            .filter(|m| m.state.id != self.me && m.state.status != Status::Left)
            .map(|m| &m.state.id)
            .collect();
        if candidates.is_empty() {
            return None;
        }
        Some(candidates[rng.usize(..candidates.len())].clone())
    }

    /// Up to `k` live members other than us and `target`, to probe it indirectly.
    pub fn indirect_helpers(&self, rng: &mut fastrand::Rng, target: &str, k: usize) -> Vec<String> {
        let mut c: Vec<String> = self
            .members
            .values()
            .filter(|m| m.state.id != self.me && m.state.id != target)
            .filter(|m| m.state.status == Status::Alive)
            .map(|m| m.state.id.clone())
            .collect();
        rng.shuffle(&mut c);
        c.truncate(k);
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(id: &str, inc: u64, status: Status) -> Update {
        Update {
            id: id.into(),
            addr: format!("{id}:7001"),
            incarnation: inc,
            status,
            role: Role::Member,
        }
    }

    fn with_role(u: Update, role: Role) -> Update {
        Update { role, ..u }
    }

    #[test]
    fn roles_shape_the_current_and_the_pending_ring() {
        let mut m = Membership::new("a", "a:7001", 1, Timing::default(), 0);
        m.apply(&up("b", 1, Status::Alive), 0);
        m.apply(&with_role(up("c", 1, Status::Alive), Role::Joining), 0);
        m.apply(&with_role(up("d", 1, Status::Alive), Role::Waiting), 0);
        assert_eq!(m.ring_ids(), ["a", "b"]);
        assert_eq!(m.pending_ring_ids(), ["a", "b", "c"]);
        // b starts leaving (its own update, incarnation + 1): a role change is a change
        let c = m.apply(&with_role(up("b", 2, Status::Alive), Role::Leaving), 1);
        assert_eq!(c.map(|c| c.role), Some(Role::Leaving));
        assert_eq!(m.ring_ids(), ["a", "b"]);
        assert_eq!(m.pending_ring_ids(), ["a", "c"]);
        // an accusation at the same incarnation keeps the role
        m.apply(&with_role(up("b", 2, Status::Suspect), Role::Leaving), 2);
        assert_eq!(m.get("b").map(|x| x.state.role), Some(Role::Leaving));
        m.apply(&with_role(up("b", 3, Status::Left), Role::Leaving), 3);
        assert_eq!(m.ring_ids(), ["a"]);
    }

    #[test]
    fn one_topology_change_at_a_time() {
        let mut d = Membership::with_role("d", "d", 1, Role::Waiting, Timing::default(), 0);
        d.apply(&up("a", 1, Status::Alive), 0);
        assert!(d.my_turn(), "nothing else in progress");
        d.apply(&with_role(up("c", 1, Status::Alive), Role::Waiting), 0);
        assert!(!d.my_turn(), "c waits with a smaller id: it goes first");
        d.apply(&with_role(up("c", 2, Status::Alive), Role::Joining), 0);
        assert!(!d.my_turn(), "c is joining");
        d.apply(&with_role(up("c", 3, Status::Alive), Role::Member), 0);
        assert!(d.my_turn(), "c is done");
        let change = d.set_my_role(Role::Joining, 1).expect("role change");
        assert_eq!((change.role, d.incarnation()), (Role::Joining, 2));
        // a smaller id that started at the same time wins; the larger one yields
        d.apply(&with_role(up("b", 1, Status::Alive), Role::Joining), 2);
        assert!(!d.my_turn());
        // a dead joiner does not block the queue forever
        d.apply(&with_role(up("b", 1, Status::Dead), Role::Joining), 3);
        assert!(d.my_turn());
        let mut e = Membership::with_role("e", "e", 1, Role::Joining, Timing::default(), 0);
        e.apply(&with_role(up("f", 1, Status::Alive), Role::Joining), 0);
        assert!(e.my_turn(), "a larger id does not block");
    }

    #[test]
    fn digest_sees_roles_not_liveness() {
        let a = vec![up("a", 1, Status::Alive), up("b", 1, Status::Alive)];
        let mut b = a.clone();
        b[1].status = Status::Suspect;
        b[1].incarnation = 7;
        assert_eq!(topology_digest(&a), topology_digest(&b));
        b[1].role = Role::Leaving;
        assert_ne!(topology_digest(&a), topology_digest(&b));
        let mut c = a.clone();
        c.push(with_role(up("z", 1, Status::Alive), Role::Waiting));
        assert_eq!(
            topology_digest(&a),
            topology_digest(&c),
            "waiting owns nothing"
        );
        c.push(with_role(up("y", 1, Status::Alive), Role::Joining));
        assert_ne!(topology_digest(&a), topology_digest(&c));
    }

    #[test]
    fn precedence_of_updates() {
        let mut m = Membership::new("a", "a:7001", 1, Timing::default(), 0);
        assert!(m.apply(&up("b", 1, Status::Alive), 0).is_some());
        assert!(
            m.apply(&up("b", 1, Status::Suspect), 1).is_some(),
            "suspect beats alive"
        );
        assert!(
            m.apply(&up("b", 1, Status::Alive), 2).is_none(),
            "same inc alive loses"
        );
        assert!(
            m.apply(&up("b", 2, Status::Alive), 3).is_some(),
            "refutation wins"
        );
        assert!(m.apply(&up("b", 2, Status::Dead), 4).is_some());
        assert!(
            m.apply(&up("b", 2, Status::Suspect), 5).is_none(),
            "dead beats suspect"
        );
        assert!(
            m.apply(&up("b", 3, Status::Alive), 6).is_some(),
            "restart with inc+1 returns"
        );
        assert!(m.apply(&up("b", 3, Status::Left), 7).is_some());
        assert_eq!(m.ring_ids(), vec!["a".to_string()], "LEFT leaves the ring");
    }

    /// A node restarted on an empty data dir comes back at incarnation 1 and joining, while the
    /// others still hold it as a member at a higher incarnation: it must go above that, or its
    /// join is never acknowledged (seen in the partition suite's empty-dir restart).
    #[test]
    fn a_member_reborn_without_its_state_outbids_its_old_life() {
        let mut m = Membership::with_role("a", "a:7001", 1, Role::Joining, Timing::default(), 0);
        let old_life = Update {
            role: Role::Member,
            ..up("a", 7, Status::Alive)
        };
        assert!(m.apply(&old_life, 10).is_some());
        assert_eq!(m.incarnation(), 8);
        assert_eq!(m.my_role(), Role::Joining, "our own role stands");
        let ours = m.snapshot().into_iter().find(|u| u.id == "a").expect("me");
        assert!(ours.supersedes(&old_life), "the others now take ours");
        assert!(
            m.apply(&ours, 11).is_none(),
            "our own state echoed back: nothing"
        );
        assert!(
            m.apply(&old_life, 12).is_none(),
            "the old life is below us now"
        );
    }

    #[test]
    fn an_accused_member_refutes_with_a_higher_incarnation() {
        let mut m = Membership::new("a", "a:7001", 4, Timing::default(), 0);
        let c = m.apply(&up("a", 4, Status::Suspect), 10).expect("refuted");
        assert_eq!(c.to, Status::Alive);
        assert_eq!(m.incarnation(), 5);
        assert!(
            m.apply(&up("a", 3, Status::Dead), 11).is_none(),
            "old accusation ignored"
        );
    }

    #[test]
    fn suspects_become_dead_after_the_timeout_and_stay_probed() {
        let mut m = Membership::new(
            "a",
            "a:7001",
            1,
            Timing {
                suspect_timeout_ms: 100,
                ..Timing::default()
            },
            0,
        );
        m.apply(&up("b", 1, Status::Alive), 0);
        m.suspect("b", 50);
        assert!(m.tick(149).is_empty());
        let changes = m.tick(150);
        assert_eq!(
            changes,
            vec![Change {
                id: "b".into(),
                from: Some(Status::Suspect),
                to: Status::Dead,
                role: Role::Member,
            }]
        );
        let mut rng = fastrand::Rng::with_seed(1);
        assert_eq!(
            m.probe_target(&mut rng).as_deref(),
            Some("b"),
            "dead members are probed"
        );
        assert!(m.indirect_helpers(&mut rng, "b", 3).is_empty());
        assert_eq!(m.ring_ids().len(), 2, "dead members stay in the ring");
    }

    fn status_at(m: &Membership, id: &str) -> Option<Status> {
        m.get(id).map(|x| x.state.status)
    }

    /// `to` merges `from`'s full view, as one gossip message from `from` (direct contact).
    fn gossip(from: &Membership, to: &mut Membership, now_ms: u64) {
        to.heard_from(from.me(), now_ms);
        for u in from.snapshot() {
            to.apply(&u, now_ms);
        }
    }

    /// The interleaving a fault-injection run found: c was cut off, so c holds a and b DEAD and
    /// they hold c DEAD, all at incarnation 1. When the partition heals, c's stale verdicts
    /// reach a first. a heard from b a moment ago, so b stays ALIVE at a (it used to go
    /// ALIVE -> DEAD at once, and writes failed until b's refutation arrived). Each accused
    /// member refutes; a few exchanges later all three see everyone ALIVE, and no healthy
    /// node ever saw another healthy node as anything else.
    #[test]
    fn stale_verdicts_from_a_healed_partition_do_not_convict_a_member_we_hear_from() {
        let timing = Timing {
            suspect_timeout_ms: 100,
            direct_contact_fresh_ms: 1_000,
        };
        let mut a = Membership::new("a", "a", 1, timing, 0);
        let mut b = Membership::new("b", "b", 1, timing, 0);
        let mut c = Membership::new("c", "c", 1, timing, 0);
        for (x, others) in [
            (&mut a, ["b", "c"]),
            (&mut b, ["a", "c"]),
            (&mut c, ["a", "b"]),
        ] {
            for o in others {
                x.apply(&up(o, 1, Status::Alive), 0);
            }
        }
        // the cut: a and b suspect c, c suspects both; unrefuted, they all become DEAD
        a.suspect("c", 1_000);
        b.suspect("c", 1_000);
        c.suspect("a", 1_000);
        c.suspect("b", 1_000);
        for x in [&mut a, &mut b, &mut c] {
            x.tick(1_100);
        }
        assert_eq!(status_at(&a, "c"), Some(Status::Dead));
        assert_eq!(status_at(&c, "b"), Some(Status::Dead));
        // a and b keep gossiping to each other for 20 s
        let mut now = 1_200;
        while now < 20_000 {
            gossip(&a, &mut b, now);
            gossip(&b, &mut a, now);
            now += 200;
        }
        let healthy = |a: &Membership, b: &Membership| {
            status_at(a, "b") == Some(Status::Alive) && status_at(b, "a") == Some(Status::Alive)
        };
        // the heal: c's view reaches a first, then the exchanges go round
        let order: [(usize, usize); 8] = [
            (2, 0),
            (0, 2),
            (2, 1),
            (1, 2),
            (0, 1),
            (1, 0),
            (2, 0),
            (0, 2),
        ];
        let mut nodes = [a, b, c];
        for (from, to) in order {
            now += 50;
            let sender = nodes[from].clone();
            gossip(&sender, &mut nodes[to], now);
            assert!(
                healthy(&nodes[0], &nodes[1]),
                "a and b never convict each other"
            );
        }
        for n in &nodes {
            for id in ["a", "b", "c"] {
                assert_eq!(
                    status_at(n, id),
                    Some(Status::Alive),
                    "{} sees {id}",
                    n.me()
                );
            }
        }
        assert_eq!(nodes[2].incarnation(), 2, "c refuted its DEAD verdict once");
    }

    /// Every node started with the same seed list: the smallest id founds once every seed
    /// answered; a lone node whose seed never answers waits (no cluster of one by accident).
    #[test]
    fn an_all_seeded_start_founds_exactly_one_cluster() {
        let seeds: Vec<String> = ["a:1", "b:1", "c:1"].map(String::from).to_vec();
        let waiting = |id: &str| {
            with_role(
                Update {
                    addr: format!("{id}:1"),
                    ..up(id, 1, Status::Alive)
                },
                Role::Waiting,
            )
        };
        let node = |me: &str| {
            Membership::with_role(
                me,
                &format!("{me}:1"),
                1,
                Role::Waiting,
                Timing::default(),
                0,
            )
        };
        let mut a = node("a");
        assert_eq!(
            a.founding(&seeds),
            Founding::AwaitSeeds(vec!["b:1".into(), "c:1".into()])
        );
        a.apply(&waiting("b"), 0);
        assert_eq!(a.founding(&seeds), Founding::AwaitSeeds(vec!["c:1".into()]));
        a.apply(&waiting("c"), 0);
        assert_eq!(a.founding(&seeds), Founding::Found);
        let mut c = node("c");
        c.apply(&waiting("a"), 0);
        c.apply(&waiting("b"), 0);
        assert_eq!(c.founding(&seeds), Founding::Defer("a".into()));
        // a founded: everyone else joins its ring the usual way
        c.apply(&with_role(up("a", 2, Status::Alive), Role::Member), 0);
        assert_eq!(c.founding(&seeds), Founding::RingExists);
        // a seed that is DEAD in our view has not answered
        let mut b = node("b");
        b.apply(&waiting("a"), 0);
        b.apply(&with_role(up("c", 1, Status::Dead), Role::Waiting), 0);
        assert!(matches!(b.founding(&seeds), Founding::AwaitSeeds(_)));
        // a lone node whose only seed is elsewhere never founds; one seeded by itself does
        let lone = node("z");
        assert!(matches!(
            lone.founding(&seeds[..1]),
            Founding::AwaitSeeds(_)
        ));
        assert_eq!(lone.founding(&["z:1".to_string()]), Founding::Found);
        assert!(matches!(lone.founding(&[]), Founding::AwaitSeeds(_)));
    }

    /// The rule is bounded: without recent direct contact, hearsay is believed as before.
    #[test]
    fn hearsay_is_believed_once_direct_contact_is_stale() {
        let timing = Timing {
            suspect_timeout_ms: 100,
            direct_contact_fresh_ms: 1_000,
        };
        let mut a = Membership::new("a", "a", 1, timing, 0);
        a.apply(&up("b", 1, Status::Alive), 0);
        a.heard_from("b", 500);
        assert!(a.apply(&up("b", 1, Status::Dead), 1_400).is_none(), "fresh");
        assert!(a.apply(&up("b", 1, Status::Dead), 1_500).is_some(), "stale");
        // our own failed probe is no hearsay: it suspects even a member heard from just now
        let mut m = Membership::new("m", "m", 1, timing, 0);
        m.apply(&up("b", 1, Status::Alive), 0);
        m.heard_from("b", 10);
        assert!(m.suspect("b", 20).is_some());
    }

    /// A seeded simulation: 5 members gossiping full state over a network that drops 20% of
    /// messages and delays/reorders the rest. All converge to ALIVE; a member cut off is DEAD
    /// everywhere within the timeout + a margin; back with incarnation + 1, it is ALIVE again.
    #[test]
    fn simulated_network_converges_and_detects_failure() {
        let seed: u64 = std::env::var("KV_SIM_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(7);
        let timing = Timing {
            suspect_timeout_ms: 2_000,
            ..Timing::default()
        };
        let ids: Vec<String> = (0..5).map(|i| format!("n{i}")).collect();
        let mut nodes: Vec<Membership> = ids
            .iter()
            .map(|id| Membership::new(id, id, 1, timing, 0))
            .collect();
        // everyone knows the seed n0
        for n in nodes.iter_mut().skip(1) {
            n.apply(&up("n0", 1, Status::Alive), 0);
            // the `addr` field differs from `up`'s, harmless here: ids route messages
        }
        let mut rng = fastrand::Rng::with_seed(seed);
        // in flight: (deliver_at_ms, to, updates)
        let mut net: Vec<(u64, usize, Vec<Update>)> = Vec::new();
        let mut cut: Option<usize> = None;
        let step_ms = 100;
        let mut run =
            |nodes: &mut Vec<Membership>, cut: Option<usize>, from_ms: u64, to_ms: u64| {
                let mut now = from_ms;
                while now < to_ms {
                    now += step_ms;
                    for (i, n) in nodes.iter_mut().enumerate() {
                        if Some(i) == cut {
                            continue;
                        }
                        n.tick(now);
                        if let Some(t) = n.probe_target(&mut rng) {
                            let to = ids.iter().position(|x| *x == t).expect("id");
                            let reachable = Some(to) != cut;
                            if reachable && rng.f64() > 0.2 {
                                net.push((now + rng.u64(0..300), to, n.snapshot()));
                                // the answer carries the target's view back (also lossy)
                                if rng.f64() > 0.2 {
                                    net.push((now + rng.u64(0..300), i, Vec::new()));
                                }
                            } else if n.get(&t).map(|m| m.state.status) == Some(Status::Alive) {
                                let helpers = n.indirect_helpers(&mut rng, &t, 3);
                                if helpers.is_empty() || !reachable {
                                    n.suspect(&t, now);
                                }
                            }
                        }
                    }
                    net.sort_by_key(|(at, _, _)| *at);
                    let due: Vec<_> = net
                        .iter()
                        .filter(|(at, _, _)| *at <= now)
                        .cloned()
                        .collect();
                    net.retain(|(at, _, _)| *at > now);
                    for (_, to, updates) in due {
                        if Some(to) == cut {
                            continue;
                        }
                        for u in &updates {
                            nodes[to].apply(u, now);
                        }
                        // pull: the receiver answers with its own view to a random live member
                        let back = rng.usize(..nodes.len());
                        if Some(back) != cut && back != to {
                            let snap = nodes[to].snapshot();
                            net.push((now + rng.u64(0..300), back, snap));
                        }
                    }
                }
            };
        run(&mut nodes, cut, 0, 20_000);
        for n in &nodes {
            for id in &ids {
                let st = n.get(id).map(|m| m.state.status);
                assert_eq!(
                    st,
                    Some(Status::Alive),
                    "seed {seed}: {} sees {id} as {st:?}",
                    n.me()
                );
            }
        }
        cut = Some(4);
        run(&mut nodes, cut, 20_000, 20_000 + 2_000 + 8_000);
        for n in nodes.iter().take(4) {
            let st = n.get("n4").map(|m| m.state.status);
            assert_eq!(
                st,
                Some(Status::Dead),
                "seed {seed}: {} sees n4 as {st:?}",
                n.me()
            );
        }
        // n4 comes back (restart: stored incarnation + 1)
        nodes[4] = Membership::new("n4", "n4", 2, timing, 30_000);
        nodes[4].apply(&up("n0", 1, Status::Alive), 30_000);
        cut = None;
        run(&mut nodes, cut, 30_000, 50_000);
        for n in &nodes {
            let st = n.get("n4").map(|m| m.state.status);
            assert_eq!(
                st,
                Some(Status::Alive),
                "seed {seed}: {} sees n4 as {st:?}",
                n.me()
            );
        }
    }
}
