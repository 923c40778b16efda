//! Joins and leaves: moving ranges between nodes, one topology change at a time.
//!
//! Owns the shells that drive `core::membership`'s ring roles: the join driver (core 0, from
//! start until this node is a ring member), `kv leave`, and streaming records to their pending
//! owners (every core, on request). Never decides who owns what (the ring does) nor which
//! version wins (replicas apply streamed records as replica writes: last-write-wins, stale ones
//! refused).
//!
//! What moves and when:
//! 1. A node started for the first time with `--seed` is `Waiting`. If every current member
//!    holds no keys, it becomes a `Member` at once: nothing to stream (so a whole cluster can
//!    start together). Otherwise it waits for its turn (no other join or leave in progress).
//!    With no ring member anywhere, `Membership::founding` decides whether it founds the ring
//!    (every seed answered, smallest waiting id); while it waits it logs why.
//! 2. It becomes `Joining`: its future ranges are pending. Writes to them go to the current
//!    replicas and to it, and need one more ack per pending owner.
//! 3. It waits until every live member reports the same ring roles (a gossip exchange each,
//!    comparing `topology_digest`), then `REPLICA_TIMEOUT_MS` more, so any write coordinated
//!    with the old ring has finished or failed.
//! 4. It asks every live current member to stream it the records of its pending ranges (each
//!    core of the source collects the keys, then sends them in batches of `STREAM_BATCH_KEYS`
//!    as replica writes). A failed stream is restarted from the beginning: replica writes are
//!    idempotent.
//! 5. It becomes a `Member` (incarnation + 1); gossip switches every node's ring.
//!
//! Leave mirrors it: `Leaving` (its ranges' next owners are pending), acks, settle, stream
//! every record to its new owners, then LEFT, gossip it to every live member, and exit.
//!
//! Former owners drop their copies only once the change is complete everywhere: with no change
//! pending, every live member reporting the same ring roles, and `REPLICA_TIMEOUT_MS` more for
//! writes coordinated with the old ring, each core drops the keys this node no longer
//! replicates (a FORGET record in its WAL, so a restart does not bring them back).

use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::core::membership::{Founding, Role, Update};
use crate::limits::{
    REPLICA_TIMEOUT_MS, STREAM_BATCH_KEYS, STREAM_TIMEOUT_MS, TOPOLOGY_ACK_WAIT_MS,
    TOPOLOGY_DROP_CHECK_MS, TOPOLOGY_POLL_MS, WAITING_LOG_INTERVAL_MS,
};
use crate::server::cluster::gossip::Gossip;
use crate::server::cluster::peer::Call;
use crate::server::data::coordinator;
use crate::server::data::messages::{CoreMsg, Op, OpResult};
use crate::server::data::shard::OpRef;
use crate::server::runtime::CoreCtx;
use crate::wire::native::{Opcode, Status as WireStatus};

async fn pause(ctx: &CoreCtx, ms: u64) {
    futures_lite::future::or(
        glommio::timer::sleep(Duration::from_millis(ms)),
        ctx.shutdown.wait(),
    )
    .await
}

/// The join driver: runs on core 0 until this node is a ring member (or shuts down).
pub async fn join(ctx: Rc<CoreCtx>, g: Rc<Gossip>) {
    let mut waiting_log = Repeated::default();
    while !ctx.shutdown.is_set() {
        match g.my_role() {
            Role::Member | Role::Leaving => return,
            Role::Waiting => {
                let ring = g.live_ring_members();
                if ring.is_empty() {
                    let founding = g.founding();
                    if founding == Founding::Found {
                        log::info!("founding the cluster: {founding}");
                        g.set_my_role(&ctx, Role::Member);
                        return;
                    }
                    waiting_log.say(&founding.to_string());
                    pause(&ctx, TOPOLOGY_POLL_MS).await;
                    continue;
                }
                if cluster_keys(&ctx, &ring).await == Some(0) {
                    log::info!("joining an empty cluster: nothing to stream");
                    g.set_my_role(&ctx, Role::Member);
                    return;
                }
                if g.my_turn() {
                    log::info!("join: our turn; our ranges are now pending");
                    g.set_my_role(&ctx, Role::Joining);
                } else {
                    pause(&ctx, TOPOLOGY_POLL_MS).await;
                }
            }
            Role::Joining => {
                if !g.my_turn() {
                    log::info!("join: another change goes first; waiting");
                    g.set_my_role(&ctx, Role::Waiting);
                    continue;
                }
                if let Err(e) = wait_acks(&ctx, &g).await {
                    log::info!("join: {e}; retrying");
                    continue;
                }
                pause(&ctx, REPLICA_TIMEOUT_MS).await;
                match stream_to_me(&ctx, &g).await {
                    Ok(n) => {
                        log::info!("join: received {n} records; now a member");
                        g.set_my_role(&ctx, Role::Member);
                        return;
                    }
                    Err(e) => {
                        log::warn!("join: stream failed ({e}); restarting it");
                        pause(&ctx, TOPOLOGY_POLL_MS).await;
                    }
                }
            }
        }
    }
}

/// A log line said when it changes, and again every `WAITING_LOG_INTERVAL_MS` while it holds
/// (a node waiting to join says why, without flooding the log).
#[derive(Default)]
struct Repeated {
    last: Option<(String, Instant)>,
}

impl Repeated {
    fn say(&mut self, line: &str) {
        let every = Duration::from_millis(WAITING_LOG_INTERVAL_MS);
        let due = match &self.last {
            Some((said, at)) => said != line || at.elapsed() >= every,
            None => true,
        };
        if due {
            log::info!("not in a cluster yet: {line}");
            self.last = Some((line.to_string(), Instant::now()));
        }
    }
}

/// Live keys on the given members, or `None` if one did not answer.
async fn cluster_keys(ctx: &Rc<CoreCtx>, members: &[Update]) -> Option<u64> {
    let mut total = 0;
    for m in members {
        let reply = ctx
            .peer(&m.addr)
            .request(
                Call::new(Opcode::Info, &[]),
                Duration::from_millis(REPLICA_TIMEOUT_MS),
            )
            .await
            .ok()?;
        let info: serde_json::Value = serde_json::from_slice(&reply.value).ok()?;
        total += info["core_stats"]
            .as_array()?
            .iter()
            .map(|c| c["keys"].as_u64().unwrap_or(0))
            .sum::<u64>();
    }
    Some(total)
}

/// Wait until every live member routes with the same ring roles as we do.
async fn wait_acks(ctx: &Rc<CoreCtx>, g: &Gossip) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_millis(TOPOLOGY_ACK_WAIT_MS);
    loop {
        let mine = g.digest();
        let mut behind = Vec::new();
        for m in g.live_others() {
            if g.peer_digest(ctx, &m.addr).await != Some(mine) {
                behind.push(m.id);
            }
        }
        if behind.is_empty() && g.digest() == mine {
            return Ok(());
        }
        if Instant::now() >= deadline || ctx.shutdown.is_set() {
            return Err(format!(
                "members {behind:?} did not acknowledge the change within {TOPOLOGY_ACK_WAIT_MS} ms"
            ));
        }
        pause(ctx, TOPOLOGY_POLL_MS).await;
    }
}

/// Ask every live current member to stream us our pending ranges.
async fn stream_to_me(ctx: &Rc<CoreCtx>, g: &Gossip) -> Result<u64, String> {
    let mut total = 0;
    for m in g.live_ring_members() {
        let reply = ctx
            .peer(&m.addr)
            .request(
                Call::new(Opcode::Stream, ctx.node.node_id.as_bytes()),
                Duration::from_millis(STREAM_TIMEOUT_MS),
            )
            .await
            .map_err(|e| format!("{}: {e}", m.id))?;
        let text = String::from_utf8_lossy(&reply.value).into_owned();
        if reply.status != WireStatus::Ok {
            return Err(format!("{}: {text}", m.id));
        }
        total += text.parse::<u64>().unwrap_or(0);
    }
    Ok(total)
}

/// Every core of this node streams its records to their pending owners (`only`: one member).
pub async fn stream_node(ctx: &Rc<CoreCtx>, only: Option<String>) -> Result<u64, String> {
    let mut total = 0;
    for core in 0..ctx.peers.len() {
        total += if core == ctx.core {
            stream_core(ctx, only.as_deref()).await?
        } else {
            let only = only.clone();
            ask_core(ctx, core, |reply| CoreMsg::Stream { only, reply }).await?
        };
    }
    Ok(total)
}

/// Send another core the message `msg` builds around a reply channel; wait for its count.
async fn ask_core(
    ctx: &CoreCtx,
    core: usize,
    msg: impl FnOnce(flume::Sender<Result<u64, String>>) -> CoreMsg,
) -> Result<u64, String> {
    let (tx, rx) = flume::bounded(1);
    ctx.peers[core]
        .send_async(msg(tx))
        .await
        .map_err(|_| format!("core {core} is gone"))?;
    rx.recv_async()
        .await
        .map_err(|_| format!("core {core} did not answer"))?
}

/// This core's records whose pending owners (all, or `only`) differ from their current
/// replicas, sent to those owners as replica writes in batches.
pub async fn stream_core(ctx: &Rc<CoreCtx>, only: Option<&str>) -> Result<u64, String> {
    let view = ctx.view();
    if view.pending.is_none() {
        return Err("no join or leave is in progress".into());
    }
    let new_owners = |key: &[u8]| {
        let (targets, pending) = view.write_targets(key);
        let first = targets.len() - pending;
        targets
            .iter()
            .skip(first)
            .filter(|t| !t.local && only.is_none_or(|o| o == &*t.id))
            .cloned()
            .collect::<Vec<_>>()
    };
    let keys = ctx.shard.keys_where(|k| !new_owners(k).is_empty());
    let mut sent = 0u64;
    for batch in keys.chunks(STREAM_BATCH_KEYS) {
        let mut calls = Vec::new();
        for key in batch {
            let (record, _) = ctx.shard.execute(OpRef::ReplicaGet(key, &[]));
            let (value, version) = match record {
                OpResult::Value { value, version } => (Some(value), version),
                OpResult::Tombstone { version } => (None, version),
                _ => continue,
            };
            for t in new_owners(key) {
                let op = Op::ReplicaPut {
                    key: key.clone(),
                    value: value.clone(),
                    version,
                };
                let c = ctx.clone();
                let task =
                    glommio::spawn_local(
                        async move { coordinator::remote_call(&c, &t.addr, op).await },
                    );
                calls.push(task);
            }
        }
        for call in calls {
            match call.await {
                OpResult::Written { .. } | OpResult::Stale { .. } => sent += 1,
                OpResult::Failed { message, .. } => return Err(message),
                other => return Err(format!("unexpected answer {other:?}")),
            }
        }
        crate::failpoint::hit("stream:sent");
    }
    Ok(sent)
}

/// `kv leave`: stream every record to its next owners, become LEFT, tell everyone, exit.
pub async fn leave(ctx: &Rc<CoreCtx>, g: &Gossip) -> Result<u64, String> {
    if g.my_role() != Role::Member {
        return Err(format!(
            "this node is {}, not a ring member",
            g.my_role().as_str()
        ));
    }
    if g.live_ring_members().is_empty() {
        return Err("this node is the only member: there is no one to hand its data to".into());
    }
    let deadline = Instant::now() + Duration::from_millis(TOPOLOGY_ACK_WAIT_MS);
    while g.others_changing() {
        if Instant::now() >= deadline {
            return Err("another join or leave is in progress; try again later".into());
        }
        pause(ctx, TOPOLOGY_POLL_MS).await;
    }
    g.set_my_role(ctx, Role::Leaving);
    let result = async {
        while !g.my_turn() {
            if Instant::now() >= deadline {
                return Err("another join or leave is in progress; try again later".into());
            }
            pause(ctx, TOPOLOGY_POLL_MS).await;
        }
        wait_acks(ctx, g).await?;
        pause(ctx, REPLICA_TIMEOUT_MS).await;
        stream_node(ctx, None).await
    }
    .await;
    let sent = match result {
        Ok(n) => n,
        Err(e) => {
            log::warn!("leave abandoned: {e}");
            g.set_my_role(ctx, Role::Member);
            return Err(e);
        }
    };
    g.set_me_left(ctx);
    for m in g.live_others() {
        g.peer_digest(ctx, &m.addr).await;
    }
    log::info!("left the cluster after streaming {sent} records; shutting down");
    let peers = ctx.peers.clone();
    glommio::spawn_local(async move {
        // Let the reply to `kv leave` go out first.
        glommio::timer::sleep(Duration::from_millis(TOPOLOGY_POLL_MS)).await;
        for p in &peers {
            let _ = p.try_send(CoreMsg::Shutdown);
        }
    })
    .detach();
    Ok(sent)
}

/// Former owners' clean-up: runs on core 0 for the node's life (see the module doc).
pub async fn drop_moved(ctx: Rc<CoreCtx>, g: Rc<Gossip>) {
    let mut done_for: Option<u64> = None;
    while !ctx.shutdown.is_set() {
        pause(&ctx, TOPOLOGY_DROP_CHECK_MS).await;
        let settled = |ctx: &CoreCtx| g.my_role() == Role::Member && ctx.view().pending.is_none();
        let ring = g.digest();
        if done_for == Some(ring) || !settled(&ctx) {
            continue;
        }
        // Never on our own say-so: a node back from a long absence may hold a stale ring, so
        // at least one live member must confirm it (unless we are the whole ring).
        if ctx.view().current.ring.members().len() > 1 && g.live_ring_members().is_empty() {
            continue;
        }
        if wait_acks(&ctx, &g).await.is_err() {
            continue;
        }
        pause(&ctx, REPLICA_TIMEOUT_MS).await;
        if g.digest() != ring || !settled(&ctx) || ctx.shutdown.is_set() {
            continue;
        }
        match forget_node(&ctx).await {
            Ok(n) => {
                if n > 0 {
                    log::info!("dropped {n} keys this node no longer replicates");
                }
                done_for = Some(ring);
            }
            Err(e) => log::warn!("dropping moved keys: {e}"),
        }
    }
}

async fn forget_node(ctx: &Rc<CoreCtx>) -> Result<u64, String> {
    let mut total = 0;
    for core in 0..ctx.peers.len() {
        total += if core == ctx.core {
            forget_core(ctx).await?
        } else {
            ask_core(ctx, core, |reply| CoreMsg::Forget { reply }).await?
        };
    }
    Ok(total)
}

/// Drop this core's copies of keys whose current replicas do not include this node.
pub async fn forget_core(ctx: &Rc<CoreCtx>) -> Result<u64, String> {
    let view = ctx.view();
    if view.pending.is_some() || view.current.ring.members().is_empty() {
        return Err("a join or leave is in progress".into());
    }
    let keys = ctx.shard.keys_where(|k| !view.is_replica(k));
    for batch in keys.chunks(STREAM_BATCH_KEYS) {
        // Every key is forgotten (a side effect per key): a plain loop, not an iterator chain
        // that could be consumed from the back.
        let mut last = None;
        for k in batch {
            if let Some(t) = ctx.shard.forget(k) {
                last = Some(t);
            }
        }
        if let Some(t) = last {
            ctx.shard.wal.durable(t).await.map_err(|e| e.to_string())?;
        }
        glommio::yield_if_needed().await;
    }
    Ok(keys.len() as u64)
}
