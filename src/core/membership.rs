//! Cluster membership and failure detection, SWIM-style (Das et al. 2002; HashiCorp
//! memberlist). Pure: time (`now_ms`) and randomness (`fastrand::Rng`, seeded by the caller)
//! come in as arguments; what to send goes out as values.
//!
//! Owns: every known member's (id, address, incarnation, status) and the rules that merge
//! gossip about them. Never sends, sleeps or reads a clock.
//!
//! Rules (an update about a member replaces what we know when it is *newer*):
//! - a higher incarnation always wins; at equal incarnation LEFT > DEAD > SUSPECT > ALIVE;
//! - only the member itself raises its incarnation: told it is SUSPECT or DEAD, it refutes
//!   with incarnation + 1 and ALIVE, which then outranks the accusation everywhere;
//! - a SUSPECT not refuted within `suspect_timeout_ms` becomes DEAD;
//! - DEAD members stay in the ring and keep being probed (a healed partition or a restarted
//!   node reunites without an operator); only LEFT members leave the ring.

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

/// What gossip says about one member.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Update {
    pub id: String,
    pub addr: String,
    pub incarnation: u64,
    pub status: Status,
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
}

#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub suspect_timeout_ms: u64,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing {
            suspect_timeout_ms: 5_000,
        }
    }
}

/// A change worth logging and gossiping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub id: String,
    pub from: Option<Status>,
    pub to: Status,
}

#[derive(Clone, Debug)]
pub struct Membership {
    me: String,
    members: BTreeMap<String, Member>,
    timing: Timing,
}

impl Membership {
    /// A membership holding only ourselves, ALIVE at `incarnation`.
    pub fn new(me: &str, addr: &str, incarnation: u64, timing: Timing, now_ms: u64) -> Membership {
        let mut members = BTreeMap::new();
        let state = Update {
            id: me.into(),
            addr: addr.into(),
            incarnation,
            status: Status::Alive,
        };
        members.insert(
            me.to_string(),
            Member {
                state,
                since_ms: now_ms,
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

    /// Ids of the ring: every member not LEFT.
    pub fn ring_ids(&self) -> Vec<String> {
        self.members
            .values()
            .filter(|m| m.state.status != Status::Left)
            .map(|m| m.state.id.clone())
            .collect()
    }

    /// Everything we know, to gossip (bounded by `MEMBERS_MAX`).
    pub fn snapshot(&self) -> Vec<Update> {
        self.members.values().map(|m| m.state.clone()).collect()
    }

    /// Merge one update; returns the change it made, if any.
    pub fn apply(&mut self, u: &Update, now_ms: u64) -> Option<Change> {
        if u.id == self.me {
            return self.about_me(u, now_ms);
        }
        match self.members.get_mut(&u.id) {
            Some(m) => {
                if !u.supersedes(&m.state) {
                    return None;
                }
                let from = m.state.status;
                m.state = u.clone();
                if from != u.status {
                    m.since_ms = now_ms;
                    return Some(Change {
                        id: u.id.clone(),
                        from: Some(from),
                        to: u.status,
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
                    },
                );
                Some(Change {
                    id: u.id.clone(),
                    from: None,
                    to: u.status,
                })
            }
        }
    }

    /// Someone says we are SUSPECT or DEAD: refute with a higher incarnation.
    fn about_me(&mut self, u: &Update, now_ms: u64) -> Option<Change> {
        let me = self.members.get_mut(&self.me)?;
        let accused = matches!(u.status, Status::Suspect | Status::Dead);
        if accused && u.incarnation >= me.state.incarnation && me.state.status != Status::Left {
            me.state.incarnation = u.incarnation + 1;
            me.since_ms = now_ms;
            return Some(Change {
                id: self.me.clone(),
                from: Some(u.status),
                to: Status::Alive,
            });
        }
        None
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
        self.apply(&u, now_ms)
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
        }
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
                to: Status::Dead
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
