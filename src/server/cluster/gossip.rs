//! The membership shell: runs on core 0 only. SWIM probing, gossip dissemination, seeds, and
//! publishing the ring to every core. All decisions are `core::membership`'s; this file sends,
//! times out, persists and logs.
//!
//! Gossip travels as native frames on the main TCP port (opcodes GOSSIP and PING_REQ), so no
//! second port can collide with a neighbour's. Every probe round (`PROBE_INTERVAL_MS`) one
//! random member — DEAD ones included, so a healed partition or restarted node reunites — gets
//! a direct probe (`PROBE_TIMEOUT_MS`); if it stays silent, `INDIRECT_PROBES` other members are
//! asked to probe it; only if none reaches it is it SUSPECT. Every `GOSSIP_INTERVAL_MS` our
//! full view goes to `GOSSIP_FANOUT` random members. The view and our incarnation are saved
//! in `data-dir/membership.json`; a restart comes back with incarnation + 1.

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::core::clock_fence::{FenceView, Offsets, Probe};
use crate::core::membership::{
    topology_digest, Change, Founding, Membership, Role, Status, Timing, Update,
};
use crate::core::quorum::Replication;
use crate::limits::{
    GOSSIP_BYTES_MAX, GOSSIP_FANOUT, GOSSIP_INTERVAL_MS, INDIRECT_PROBES, PROBE_INTERVAL_MS,
    PROBE_TIMEOUT_MS,
};
use crate::server::clock_fence::PeerOffset;
use crate::server::cluster::peer::Call;
use crate::server::cluster::view::RingView;
use crate::server::data::messages::CoreMsg;
use crate::server::runtime::CoreCtx;
use crate::server::wall_clock_ms;
use crate::wire::native::{Opcode, Status as WireStatus};

const MEMBERSHIP_FILE: &str = "membership.json";

#[derive(serde::Serialize, serde::Deserialize)]
struct Saved {
    incarnation: u64,
    members: Vec<Update>,
}

pub struct Gossip {
    membership: RefCell<Membership>,
    rng: RefCell<fastrand::Rng>,
    replication: Replication,
    data_dir: PathBuf,
    seeds: Vec<String>,
    started: Instant,
    /// Our clock's offset from each peer, from the gossip exchanges we start.
    offsets: RefCell<Offsets>,
}

/// Whether a node starting with `seeds` and the view saved in `data_dir` has peers to measure
/// its clock against (it then starts fenced until one answers).
pub fn knows_peers(data_dir: &std::path::Path, me: &str, seeds: &[String]) -> bool {
    let saved: Option<Saved> = std::fs::read(data_dir.join(MEMBERSHIP_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let saved_peers = saved.is_some_and(|s| {
        s.members
            .iter()
            .any(|u| u.id != me && u.status != Status::Left)
    });
    saved_peers || !seeds.is_empty()
}

impl Gossip {
    /// Load the saved view (if any) and start at the saved incarnation + 1.
    pub fn new(
        me: &str,
        advertise: &str,
        data_dir: &std::path::Path,
        seeds: Vec<String>,
        replication: Replication,
        timing: Timing,
    ) -> Gossip {
        let saved: Option<Saved> = std::fs::read(data_dir.join(MEMBERSHIP_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let inc = saved.as_ref().map(|s| s.incarnation + 1).unwrap_or(1);
        // A first start with seeds joins (and may have to wait and stream); a restart resumes
        // its role, except that an interrupted join starts over and an interrupted leave is
        // abandoned (the node stays a member until `kv leave` is run again).
        let saved_role = saved
            .as_ref()
            .and_then(|s| s.members.iter().find(|u| u.id == me).map(|u| u.role));
        let role = match (&saved, saved_role) {
            (None, _) if !seeds.is_empty() => Role::Waiting,
            (Some(_), Some(Role::Waiting | Role::Joining)) => Role::Waiting,
            _ => Role::Member,
        };
        let mut m = Membership::with_role(me, advertise, inc, role, timing, 0);
        for u in saved.iter().flat_map(|s| &s.members) {
            if u.id != me {
                m.apply(u, 0);
            }
        }
        let seed = crate::core::ring::hash(me.as_bytes()) as u64 ^ wall_clock_ms();
        Gossip {
            membership: RefCell::new(m),
            rng: RefCell::new(fastrand::Rng::with_seed(seed)),
            replication,
            data_dir: data_dir.to_path_buf(),
            seeds,
            started: Instant::now(),
            offsets: RefCell::new(Offsets::default()),
        }
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    pub fn view(&self) -> RingView {
        let m = self.membership.borrow();
        let mut view = RingView::from_membership(&m, self.replication);
        if view.current.ring.members().is_empty() {
            view.unjoined = Some(format!(
                "{}: {}",
                m.my_role().as_str(),
                m.founding(&self.seeds)
            ));
        }
        view
    }

    /// Whether we (waiting, with no ring to join) may found the cluster.
    pub fn founding(&self) -> Founding {
        self.membership.borrow().founding(&self.seeds)
    }

    pub fn my_role(&self) -> Role {
        self.membership.borrow().my_role()
    }

    pub fn my_turn(&self) -> bool {
        self.membership.borrow().my_turn()
    }

    pub fn others_changing(&self) -> bool {
        self.membership.borrow().others_changing()
    }

    /// Change our ring role and publish it.
    pub fn set_my_role(&self, ctx: &CoreCtx, role: Role) {
        let now = self.now_ms();
        let change = self.membership.borrow_mut().set_my_role(role, now);
        self.publish(ctx, &change.into_iter().collect::<Vec<_>>());
    }

    /// We have left: LEFT, published.
    pub fn set_me_left(&self, ctx: &CoreCtx) {
        let now = self.now_ms();
        let change = self.membership.borrow_mut().set_me_left(now);
        self.publish(ctx, &change.into_iter().collect::<Vec<_>>());
    }

    /// Our view's ring roles, fingerprinted.
    pub fn digest(&self) -> u64 {
        topology_digest(&self.membership.borrow().snapshot())
    }

    /// Exchange views with `addr`; the fingerprint of its view after it merged ours.
    pub async fn peer_digest(&self, ctx: &Rc<CoreCtx>, addr: &str) -> Option<u64> {
        let updates = self
            .exchange_view(ctx, addr, Duration::from_millis(PROBE_TIMEOUT_MS))
            .await?;
        Some(topology_digest(&updates))
    }

    /// Live members other than us.
    pub fn live_others(&self) -> Vec<Update> {
        let m = self.membership.borrow();
        m.members()
            .map(|x| &x.state)
            .filter(|u| u.id != m.me() && u.status == Status::Alive)
            .cloned()
            .collect()
    }

    /// Live members of the current ring other than us.
    pub fn live_ring_members(&self) -> Vec<Update> {
        self.live_others()
            .into_iter()
            .filter(|u| matches!(u.role, Role::Member | Role::Leaving))
            .collect()
    }

    fn snapshot_json(&self) -> Vec<u8> {
        serde_json::to_vec(&self.membership.borrow().snapshot()).unwrap_or_default()
    }

    /// Merge gossip (`from`: the member it came from directly, if known); publish if anything
    /// changed. Returns our view.
    pub fn merge(&self, ctx: &CoreCtx, updates: &[Update], from: Option<&str>) -> Vec<Update> {
        let now = self.now_ms();
        let changes: Vec<Change> = {
            let mut m = self.membership.borrow_mut();
            if let Some(id) = from.filter(|id| !id.is_empty()) {
                m.heard_from(id, now);
            }
            updates.iter().filter_map(|u| m.apply(u, now)).collect()
        };
        self.publish(ctx, &changes);
        self.membership.borrow().snapshot()
    }

    fn publish(&self, ctx: &CoreCtx, changes: &[Change]) {
        if changes.is_empty() {
            return;
        }
        for c in changes {
            log::info!(
                "member {}: {:?} -> {} ({})",
                c.id,
                c.from.map(|s| s.as_str()),
                c.to.as_str(),
                c.role.as_str()
            );
        }
        let view = Arc::new(self.view());
        for p in &ctx.peers {
            let _ = p.try_send(CoreMsg::Ring(view.clone()));
        }
        let m = self.membership.borrow();
        let saved = Saved {
            incarnation: m.incarnation(),
            members: m.snapshot(),
        };
        if let Ok(bytes) = serde_json::to_vec(&saved) {
            let tmp = self.data_dir.join("membership.json.tmp");
            let ok = std::fs::write(&tmp, bytes)
                .and_then(|_| std::fs::rename(&tmp, self.data_dir.join(MEMBERSHIP_FILE)));
            if let Err(e) = ok {
                log::warn!("cannot save membership: {e}");
            }
        }
    }

    /// Exchange views with `addr`; true if it answered in time.
    async fn exchange(&self, ctx: &Rc<CoreCtx>, addr: &str, timeout: Duration) -> bool {
        self.exchange_view(ctx, addr, timeout).await.is_some()
    }

    /// Exchange views with `addr`: its view (after merging ours), merged into ours.
    async fn exchange_view(
        &self,
        ctx: &Rc<CoreCtx>,
        addr: &str,
        timeout: Duration,
    ) -> Option<Vec<Update>> {
        let body = self.snapshot_json();
        let peer = ctx.peer(addr);
        let me = ctx.node.node_id.as_bytes();
        let sent_mono_ms = ctx.node.clock.mono_ms();
        let reply = peer
            .request_exact(
                Call {
                    value: &body,
                    ..Call::new(Opcode::Gossip, me)
                },
                timeout,
            )
            .await;
        match reply {
            Ok(r) if r.status == WireStatus::Ok && r.value.len() <= GOSSIP_BYTES_MAX => {
                let updates = serde_json::from_slice::<Vec<Update>>(&r.value).ok()?;
                // It answered: direct contact with the member at `addr` (if we know it yet).
                let probe = Probe {
                    sent_mono_ms,
                    received_mono_ms: ctx.node.clock.mono_ms(),
                    received_wall_ms: wall_clock_ms(),
                    peer_wall_ms: r.version.physical_ms(),
                };
                let id = self.membership.borrow().id_at(addr).map(String::from);
                self.merge(ctx, &updates, id.as_deref());
                let id = self.membership.borrow().id_at(addr).map(String::from);
                // a peer that does not stamp its answers (version zero) tells us nothing
                if let Some(id) = id.filter(|_| probe.peer_wall_ms > 0) {
                    self.offsets.borrow_mut().observe(&id, probe);
                    self.judge_clock(ctx);
                }
                Some(updates)
            }
            _ => None,
        }
    }

    /// Decide from the estimates whether this node's clock lets it write, and tell every core.
    pub fn judge_clock(&self, ctx: &CoreCtx) {
        let (has_peers, live, peers) = {
            let m = self.membership.borrow();
            let me = m.me().to_string();
            let mut offsets = self.offsets.borrow_mut();
            offsets.retain(|id| m.get(id).is_some_and(|x| x.state.status != Status::Left));
            let has_peers = m
                .members()
                .any(|x| x.state.id != me && x.state.status != Status::Left);
            let live: Vec<String> = m
                .members()
                .filter(|x| x.state.id != me)
                .filter(|x| matches!(x.state.status, Status::Alive | Status::Suspect))
                .map(|x| x.state.id.clone())
                .collect();
            let peers = offsets
                .estimates()
                .map(|(peer, e)| PeerOffset {
                    peer: peer.to_string(),
                    ahead_ms: e.ahead_ms,
                    error_ms: e.error_ms,
                })
                .collect();
            (has_peers, live, peers)
        };
        let live: Vec<&str> = live.iter().map(String::as_str).collect();
        let fence = &ctx.node.clock;
        let (wall, mono) = (wall_clock_ms(), fence.mono_ms());
        let verdict = self
            .offsets
            .borrow()
            .verdict(&live, has_peers, wall, mono, fence.bound_ms());
        fence.publish(FenceView::new(verdict, wall, mono, fence.bound_ms()), peers);
    }

    /// Probe `target` for another member (PING_REQ).
    pub async fn probe_for(&self, ctx: &Rc<CoreCtx>, target: &str) -> bool {
        let addr = self
            .membership
            .borrow()
            .get(target)
            .map(|m| m.state.addr.clone());
        match addr {
            Some(a) => {
                self.exchange(ctx, &a, Duration::from_millis(PROBE_TIMEOUT_MS))
                    .await
            }
            None => false,
        }
    }

    async fn probe_round(&self, ctx: &Rc<CoreCtx>) {
        let target = {
            let m = self.membership.borrow();
            let mut rng = self.rng.borrow_mut();
            m.probe_target(&mut rng)
                .and_then(|t| m.get(&t).map(|x| x.state.clone()))
        };
        let Some(target) = target else { return };
        let probe = Duration::from_millis(PROBE_TIMEOUT_MS);
        if self.exchange(ctx, &target.addr, probe).await {
            return;
        }
        if target.status != Status::Alive {
            return;
        }
        let helpers: Vec<String> = {
            let m = self.membership.borrow();
            let mut rng = self.rng.borrow_mut();
            m.indirect_helpers(&mut rng, &target.id, INDIRECT_PROBES)
                .into_iter()
                .filter_map(|h| m.get(&h).map(|x| x.state.addr.clone()))
                .collect()
        };
        let wait = Duration::from_millis(PROBE_INTERVAL_MS);
        let mut reached = false;
        for h in helpers {
            let peer = ctx.peer(&h);
            let r = peer
                .request_exact(Call::new(Opcode::PingReq, target.id.as_bytes()), wait)
                .await;
            if matches!(r, Ok(ref r) if r.status == WireStatus::Ok) {
                reached = true;
                break;
            }
        }
        if !reached {
            let now = self.now_ms();
            let change = self.membership.borrow_mut().suspect(&target.id, now);
            self.publish(ctx, &change.into_iter().collect::<Vec<_>>());
        }
    }

    async fn gossip_round(&self, ctx: &Rc<CoreCtx>) {
        let targets: Vec<String> = {
            let m = self.membership.borrow();
            let mut rng = self.rng.borrow_mut();
            let mut c: Vec<String> = m
                .members()
                .filter(|x| x.state.id != m.me() && x.state.status == Status::Alive)
                .map(|x| x.state.addr.clone())
                .collect();
            rng.shuffle(&mut c);
            c.truncate(GOSSIP_FANOUT);
            c
        };
        let alone = targets.is_empty();
        for t in targets {
            self.exchange(ctx, &t, Duration::from_millis(PROBE_TIMEOUT_MS))
                .await;
        }
        if alone {
            for s in &self.seeds {
                self.exchange(ctx, s, Duration::from_millis(PROBE_TIMEOUT_MS))
                    .await;
            }
        }
    }
}

/// Core 0's membership loops; they end at shutdown.
pub async fn run(ctx: Rc<CoreCtx>, g: Rc<Gossip>) {
    let initial = Arc::new(g.view());
    for p in &ctx.peers {
        let _ = p.send_async(CoreMsg::Ring(initial.clone())).await;
    }
    let (c2, g2) = (ctx.clone(), g.clone());
    let joining = glommio::spawn_local(crate::server::cluster::topology::join(c2, g2));
    let (c3, g3) = (ctx.clone(), g.clone());
    let dropping = glommio::spawn_local(crate::server::cluster::topology::drop_moved(c3, g3));
    let (c1, g1) = (ctx.clone(), g.clone());
    let probes = glommio::spawn_local(async move {
        while !c1.shutdown.is_set() {
            g1.probe_round(&c1).await;
            let changes = g1.membership.borrow_mut().tick(g1.now_ms());
            g1.publish(&c1, &changes);
            // every round, answered or not: follows our own clock's jumps and members leaving
            g1.judge_clock(&c1);
            sleep_or_shutdown(&c1, Duration::from_millis(PROBE_INTERVAL_MS)).await;
        }
    });
    while !ctx.shutdown.is_set() {
        g.gossip_round(&ctx).await;
        sleep_or_shutdown(&ctx, Duration::from_millis(GOSSIP_INTERVAL_MS)).await;
    }
    probes.await;
    joining.await;
    dropping.await;
}

async fn sleep_or_shutdown(ctx: &CoreCtx, d: Duration) {
    futures_lite::future::or(glommio::timer::sleep(d), ctx.shutdown.wait()).await
}
