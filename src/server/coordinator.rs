//! The coordinator: runs one client request against the key's N replicas (Dynamo §4.5).
//!
//! Writes go to all N replicas in parallel (the local one without a network hop) and succeed
//! at W acknowledgements; reads ask all N, answer with the newest of the first R, and repair
//! every replica that answered with an older version or none — including replicas that answer
//! after the client got its reply. A write refused as stale by replicas moves this core's clock
//! past the stored version and is retried once, so one client's sequential writes through
//! different coordinators land in order. Fewer than W (R) answers within the timeout is an
//! explicit error naming how many replicas answered.
//!
//! The counting itself is `core::quorum::Tally` (pure); this file only moves messages.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use crate::core::quorum::{Outcome, Tally};
use crate::core::version::Version;
use crate::limits::REPLICA_TIMEOUT_MS;
use crate::server::messages::{CoreMsg, Op, OpResult};
use crate::server::notify::{channel, Sender};
use crate::server::runtime::CoreCtx;
use crate::server::shard::storage_failure;
use crate::server::view::{RingView, Target};
use crate::wire::native::{Opcode, Status, FLAG_TOMBSTONE, FLAG_WAS_LIVE};

fn timeout() -> Duration {
    Duration::from_millis(REPLICA_TIMEOUT_MS)
}

/// PUT (`Some`) or DELETE (`None`) through the quorum.
pub async fn write(ctx: Rc<CoreCtx>, key: Box<[u8]>, value: Option<Box<[u8]>>) -> OpResult {
    let view = ctx.view();
    let mut version = ctx.shard.tick();
    for attempt in 0..2 {
        let (result, stale) = write_once(&ctx, &view, &key, value.as_deref(), version).await;
        match (result, stale) {
            (r @ OpResult::Written { .. }, _) => return r,
            (_, Some(stored)) if attempt == 0 => {
                ctx.shard.observe(stored);
                version = ctx.shard.tick();
                log::debug!("stale write retried past {stored:?}");
            }
            (r, _) => return r,
        }
    }
    OpResult::Failed {
        status: Status::Internal,
        message: "unreachable retry".into(),
    }
}

async fn write_once(
    ctx: &Rc<CoreCtx>,
    view: &Arc<RingView>,
    key: &[u8],
    value: Option<&[u8]>,
    version: Version,
) -> (OpResult, Option<Version>) {
    let rep = view.effective();
    let (replicas, pending) = view.write_targets(key);
    let needed = rep.w + pending;
    wait_for_replicas(ctx, &replicas).await;
    let (tx, rx) = channel();
    for (i, t) in replicas.iter().enumerate() {
        let op = Op::ReplicaPut {
            key: key.into(),
            value: value.map(Box::from),
            version,
        };
        spawn_replica_call(ctx, t, i, op, tx.clone());
    }
    drop(tx);
    let mut tally = Tally::new(replicas.len(), needed);
    let mut was_live = false;
    let mut stale: Option<Version> = None;
    let mut last_error = String::new();
    while let Some((_, r)) = rx.recv().await {
        let outcome = match r {
            OpResult::Written { was_live: live, .. } => {
                was_live |= live;
                tally.success()
            }
            OpResult::Stale { stored } => {
                stale = stale.max(Some(stored));
                tally.failure()
            }
            OpResult::Failed { message, .. } => {
                last_error = message;
                tally.failure()
            }
            _ => tally.failure(),
        };
        match outcome {
            Outcome::Won => return (OpResult::Written { was_live, version }, stale),
            // Lost is final, but keep counting until every replica answered or timed out, so
            // the error names how many acknowledged (the write may remain on those).
            Outcome::Lost | Outcome::Pending => {}
        }
    }
    ctx.metrics.quorum_failure(false);
    let message = format!(
        "quorum not reached: {} of {} replicas acknowledged the write, {} needed{}{}",
        tally.successes(),
        replicas.len(),
        needed,
        if pending > 0 {
            format!(" ({pending} of them pending owners of a range being moved)")
        } else {
            String::new()
        },
        if last_error.is_empty() {
            String::new()
        } else {
            format!(" (last error: {last_error})")
        }
    );
    (
        OpResult::Failed {
            status: Status::Unavailable,
            message,
        },
        stale,
    )
}

/// GET through the quorum, with read repair.
pub async fn read(ctx: Rc<CoreCtx>, key: Box<[u8]>) -> OpResult {
    let view = ctx.view();
    let rep = view.effective();
    let replicas = view.replicas(&key);
    wait_for_replicas(&ctx, &replicas).await;
    let (tx, rx) = channel();
    for (i, t) in replicas.iter().enumerate() {
        spawn_replica_call(&ctx, t, i, Op::ReplicaGet { key: key.clone() }, tx.clone());
    }
    drop(tx);
    let mut tally = Tally::new(replicas.len(), rep.r);
    // (replica index, version it holds: ZERO when it has nothing)
    let mut seen: Vec<(usize, Version)> = Vec::new();
    let mut best: Option<(Version, Option<Box<[u8]>>)> = None;
    let mut outcome = Outcome::Pending;
    while outcome != Outcome::Won {
        let Some((m, r)) = rx.recv().await else {
            break;
        };
        outcome = absorb(&mut tally, &mut seen, &mut best, m, r);
    }
    if outcome != Outcome::Won {
        ctx.metrics.quorum_failure(true);
        let message = format!(
            "quorum not reached: {} of {} replicas answered the read, {} needed",
            tally.successes(),
            replicas.len(),
            rep.r
        );
        return OpResult::Failed {
            status: Status::Unavailable,
            message,
        };
    }
    let answer = match &best {
        Some((version, Some(v))) => OpResult::Value {
            value: v.clone(),
            version: *version,
        },
        _ => OpResult::NotFound,
    };
    // Repair in the background: late answers included.
    let c = ctx.clone();
    glommio::spawn_local(async move {
        while let Some((m, r)) = rx.recv().await {
            absorb(&mut tally, &mut seen, &mut best, m, r);
        }
        if let Some((version, value)) = best {
            for (m, held) in seen {
                if held < version {
                    let op = Op::ReplicaPut {
                        key: key.clone(),
                        value: value.clone(),
                        version,
                    };
                    let (tx, _rx) = channel();
                    spawn_replica_call(&c, &replicas[m], m, op, tx);
                    c.metrics.read_repair();
                    log::debug!("read repair of member {m} to {version:?}");
                }
            }
        }
    })
    .detach();
    answer
}

fn absorb(
    tally: &mut Tally,
    seen: &mut Vec<(usize, Version)>,
    best: &mut Option<(Version, Option<Box<[u8]>>)>,
    m: usize,
    r: OpResult,
) -> Outcome {
    let (version, value) = match r {
        OpResult::Value { value, version } => (version, Some(value)),
        OpResult::Tombstone { version } => (version, None),
        OpResult::NotFound => (Version::ZERO, None),
        _ => return tally.failure(),
    };
    seen.push((m, version));
    if version > Version::ZERO && best.as_ref().is_none_or(|(v, _)| version > *v) {
        *best = Some((version, value));
    }
    tally.success()
}

/// Backpressure: wait until every live remote replica's connection has room for a request.
async fn wait_for_replicas(ctx: &Rc<CoreCtx>, replicas: &[Target]) {
    for t in replicas.iter().filter(|t| !t.local && !t.dead) {
        ctx.peer(&t.addr).wait_for_space().await;
    }
}

/// Run `op` on target `t` (locally when it is us) and send `(m, result)` to `tx`, `m` being
/// the target's index in the caller's list.
fn spawn_replica_call(
    ctx: &Rc<CoreCtx>,
    t: &Target,
    m: usize,
    op: Op,
    tx: Sender<(usize, OpResult)>,
) {
    let ctx = ctx.clone();
    let addr = t.addr.clone();
    let local = t.local;
    if !local && t.dead {
        // A DEAD member does not answer: count it as failed at once (strict quorum).
        let message = format!("member {} is DEAD", t.id);
        let _ = tx.send((
            m,
            OpResult::Failed {
                status: Status::Unavailable,
                message,
            },
        ));
        return;
    }
    glommio::spawn_local(async move {
        let r = if local {
            local_call(&ctx, op).await
        } else {
            remote_call(&ctx, &addr, op).await
        };
        let _ = tx.send((m, r));
    })
    .detach();
}

/// A replica operation on this node: on this core, or on the owning core by message.
pub async fn local_call(ctx: &Rc<CoreCtx>, op: Op) -> OpResult {
    let key: &[u8] = match &op {
        Op::Get { key } | Op::Put { key, .. } | Op::Delete { key } => key,
        Op::ReplicaPut { key, .. } | Op::ReplicaGet { key } => key,
    };
    let owner = ctx.ring.core_for_key(key);
    if owner == ctx.core {
        let (result, ticket) = ctx.shard.execute(op.as_ref());
        if let Some(t) = ticket {
            if let Err(e) = ctx.shard.wal.durable(t).await {
                return storage_failure(&e);
            }
        }
        return result;
    }
    let (tx, rx) = flume::bounded(1);
    if ctx.peers[owner]
        .send_async(CoreMsg::Ops {
            ops: vec![op],
            reply: tx,
        })
        .await
        .is_err()
    {
        return OpResult::Failed {
            status: Status::Internal,
            message: "core gone".into(),
        };
    }
    match rx.recv_async().await {
        Ok(mut v) if !v.is_empty() => v.swap_remove(0),
        _ => OpResult::Failed {
            status: Status::Internal,
            message: "core did not answer".into(),
        },
    }
}

/// A replica operation on the peer at `addr`.
pub async fn remote_call(ctx: &Rc<CoreCtx>, addr: &str, op: Op) -> OpResult {
    let peer = ctx.peer(addr);
    let (opcode, key, value, version, flags) = match &op {
        Op::ReplicaPut {
            key,
            value,
            version,
        } => {
            let flags = if value.is_none() { FLAG_TOMBSTONE } else { 0 };
            (
                Opcode::ReplicaPut,
                key,
                value.as_deref().unwrap_or_default(),
                *version,
                flags,
            )
        }
        Op::ReplicaGet { key } => (Opcode::ReplicaGet, key, &[][..], Version::ZERO, 0),
        _ => {
            return OpResult::Failed {
                status: Status::Internal,
                message: "not a replica op".into(),
            }
        }
    };
    let sent = std::time::Instant::now();
    let reply = peer
        .request(opcode, key, value, version, flags, timeout())
        .await;
    ctx.metrics.replica_rpc_latency.observe(sent.elapsed());
    let reply = match reply {
        Ok(r) => r,
        Err(e) => {
            return OpResult::Failed {
                status: Status::Unavailable,
                message: e.to_string(),
            }
        }
    };
    ctx.shard.observe(reply.version);
    match (opcode, reply.status) {
        (Opcode::ReplicaPut, Status::Ok) => OpResult::Written {
            was_live: reply.flags & FLAG_WAS_LIVE != 0,
            version: reply.version,
        },
        (_, Status::Stale) => OpResult::Stale {
            stored: reply.version,
        },
        (Opcode::ReplicaGet, Status::Ok) => OpResult::Value {
            value: reply.value.into(),
            version: reply.version,
        },
        (Opcode::ReplicaGet, Status::NotFound) if reply.version > Version::ZERO => {
            OpResult::Tombstone {
                version: reply.version,
            }
        }
        (Opcode::ReplicaGet, Status::NotFound) => OpResult::NotFound,
        (_, status) => OpResult::Failed {
            status,
            message: String::from_utf8_lossy(&reply.value).into_owned(),
        },
    }
}
