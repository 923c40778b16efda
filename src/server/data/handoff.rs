//! Hint delivery (hinted handoff, Dynamo §4.6): the shell that hands a replica the writes it
//! missed once it is back.
//!
//! Owns: every `HINT_DELIVERY_INTERVAL_MS`, for each target this core holds hints for that the
//! ring view shows ALIVE (and whose connection is not stalled), sending up to
//! `HINT_DELIVERY_BATCH` hints as replica writes, pipelined on one connection, and dropping each
//! one the target took (stored or already newer: both mean it has the write). A target that
//! LEFT the cluster will never take them: its hints are dropped and counted. Never decides what
//! a hint is or how long one is kept (`storage::hints`), and never blocks requests: it runs in
//! a low-share task queue.

use std::rc::Rc;
use std::time::Duration;

use crate::core::membership::Status as MemberStatus;
use crate::limits::{HINT_DELIVERY_BATCH, HINT_DELIVERY_INTERVAL_MS, REPLICA_TIMEOUT_MS};
use crate::server::cluster::peer::Call;
use crate::server::runtime::CoreCtx;
use crate::storage::hints::Hint;
use crate::wire::native::{Opcode, Status, FLAG_TOMBSTONE};

/// Deliver this core's hints until shutdown.
pub async fn run(ctx: Rc<CoreCtx>) {
    let every = Duration::from_millis(HINT_DELIVERY_INTERVAL_MS);
    loop {
        futures_lite::future::or(glommio::timer::sleep(every), ctx.shutdown.wait()).await;
        if ctx.shutdown.is_set() {
            return;
        }
        for target in ctx.shard.hint_targets() {
            let member = ctx
                .view()
                .listing
                .iter()
                .find(|u| u.id == target)
                .map(|u| (u.status, u.addr.clone()));
            match member {
                Some((MemberStatus::Alive, addr)) => {
                    // Batch after batch while the target takes them whole.
                    let mut total = 0;
                    loop {
                        let n = deliver(&ctx, &target, &addr).await;
                        total += n;
                        if n < HINT_DELIVERY_BATCH || ctx.shutdown.is_set() {
                            break;
                        }
                        glommio::executor().yield_if_needed().await;
                    }
                    if total > 0 {
                        log::debug!("core {}: delivered {total} hints to {target}", ctx.core);
                    }
                }
                Some((MemberStatus::Left, _)) => drop_all(&ctx, &target),
                _ => {}
            }
        }
    }
}

/// One batch of `target`'s hints, pipelined; returns how many it took.
async fn deliver(ctx: &CoreCtx, target: &str, addr: &str) -> usize {
    let peer = ctx.peer(addr);
    if peer.stalled() {
        return 0;
    }
    let timeout = Duration::from_millis(REPLICA_TIMEOUT_MS);
    let batch = ctx.shard.hint_batch(target, HINT_DELIVERY_BATCH);
    let mut queued = Vec::with_capacity(batch.len());
    let mut taken = 0;
    for h in &batch {
        let call = call_of(h);
        match peer.send_now(call, timeout) {
            Some(answer) => queued.push((h, answer)),
            // Not connected yet: this request connects, the rest queue behind it.
            None => {
                let took = matches!(peer.request(call, timeout).await,
                    Ok(r) if matches!(r.status, Status::Ok | Status::Stale));
                if !took {
                    return taken;
                }
                taken += delivered(ctx, target, h);
            }
        }
    }
    for (h, answer) in queued {
        if let Some(Ok(r)) = answer.recv().await {
            if matches!(r.status, Status::Ok | Status::Stale) {
                taken += delivered(ctx, target, h);
            }
        }
    }
    taken
}

fn delivered(ctx: &CoreCtx, target: &str, h: &Hint) -> usize {
    ctx.shard.hint_delivered(target, &h.key, h.version);
    ctx.metrics.hint_delivered();
    1
}

fn call_of(h: &Hint) -> Call<'_> {
    Call {
        opcode: Opcode::ReplicaPut,
        key: &h.key,
        value: h.value.as_deref().unwrap_or_default(),
        version: h.version,
        flags: if h.value.is_none() { FLAG_TOMBSTONE } else { 0 },
    }
}

/// `target` left the cluster for good (its data was streamed to the next owners): its hints
/// can never be delivered.
fn drop_all(ctx: &CoreCtx, target: &str) {
    loop {
        let batch = ctx.shard.hint_batch(target, HINT_DELIVERY_BATCH);
        if batch.is_empty() {
            return;
        }
        for h in &batch {
            ctx.shard.hint_delivered(target, &h.key, h.version);
            ctx.metrics.hint_dropped();
        }
    }
}
