//! FLUSHALL and FLUSHDB: every key of the cluster written before now is dropped, on every
//! member, and can never come back.
//!
//! Two phases: every member tells a version above every one it issued or saw (each core's
//! clock: one node's or core's clock may run ahead of another's), and the floor is issued above
//! them all; then every member drops what lies at or below the floor.
//!
//! Owns: the cluster-wide step (refused unless every member is ALIVE: a member that missed it
//! would hand its keys back through anti-entropy or hints; Cassandra's TRUNCATE asks the same)
//! and the node's step (record the flush's version as the data dir's floor, durably, then
//! drop every core's keys and hints at or below it). The floor does the rest: every path that
//! stores a value (replica writes in flight, hints, read repair, anti-entropy, join streams,
//! WAL replay) goes through `Map::apply`, which refuses a version at or below it.
//!
//! A member that fails its step leaves the flush partial: the error says so, and a retry
//! completes it (each step is idempotent). Writes concurrent with a FLUSHALL may survive it or
//! not, as in Redis; a coordinator whose clock is behind the floor has its write refused as
//! stale and retried above it. Never: a flush of one database (there is one, db 0).

use std::rc::Rc;
use std::time::Duration;

use crate::core::membership::{Status as MemberStatus, Update};
use crate::core::version::Version;
use crate::limits::REPLICA_TIMEOUT_MS;
use crate::server::cluster::peer::Call;
use crate::server::data::messages::CoreMsg;
use crate::server::runtime::CoreCtx;
use crate::wire::native::{Opcode, Status};

/// The floor on the wire: hlc and writer, little-endian.
pub fn encode_floor(v: Version) -> [u8; 12] {
    let mut b = [0u8; 12];
    b[..8].copy_from_slice(&v.hlc.to_le_bytes());
    b[8..].copy_from_slice(&v.writer.to_le_bytes());
    b
}

pub fn decode_floor(b: &[u8]) -> Option<Version> {
    let b: &[u8; 12] = b.try_into().ok()?;
    Some(Version {
        hlc: u64::from_le_bytes(b[..8].try_into().ok()?),
        writer: u32::from_le_bytes(b[8..].try_into().ok()?),
    })
}

/// FLUSHALL from a client: every member's step at one new version. Returns the members reached.
pub async fn flush_all(ctx: &Rc<CoreCtx>) -> Result<usize, String> {
    let view = ctx.view();
    let members: Vec<_> = view
        .listing
        .iter()
        .filter(|u| u.status != MemberStatus::Left)
        .collect();
    let not_alive: Vec<String> = members
        .iter()
        .filter(|u| u.status != MemberStatus::Alive)
        .map(|u| format!("{} is {}", u.id, u.status.as_str()))
        .collect();
    if !not_alive.is_empty() {
        return Err(format!(
            "FLUSHALL needs every member ALIVE ({}): a member that missed it would bring keys \
             back; retry once it is",
            not_alive.join(", ")
        ));
    }
    // First phase: every member's clock, so the floor lies above every version issued before
    // now, whichever node and core issued it.
    let others: Vec<&Update> = members
        .iter()
        .copied()
        .filter(|u| u.id != view.me)
        .collect();
    let readings = ask_each(ctx, &others, Vec::new());
    let mut highest = node_clock(ctx).await?;
    for (id, task) in readings {
        match task.await.flatten().and_then(|value| decode_floor(&value)) {
            Some(v) => highest = highest.max(v),
            None => {
                return Err(format!(
                    "FLUSHALL: {id} did not tell its clock; nothing was flushed"
                ))
            }
        }
    }
    ctx.shard
        .observe(highest, "FLUSHALL's clock readings")
        .map_err(|e| {
            format!("FLUSHALL: a member's clock is too far ahead ({e}); nothing was flushed")
        })?;
    let floor = ctx.shard.tick_leased().await.map_err(|e| e.to_string())?;
    let asks = ask_each(ctx, &others, encode_floor(floor).to_vec());
    let mut failed = Vec::new();
    if let Err(e) = flush_node(ctx, floor).await {
        failed.push(format!("{} ({e})", view.me));
    }
    for (id, task) in asks {
        if task.await.flatten().is_none() {
            failed.push(id);
        }
    }
    if !failed.is_empty() {
        return Err(format!(
            "FLUSHALL reached {} of {} members (not {}): retry to complete it",
            members.len() - failed.len(),
            members.len(),
            failed.join(", ")
        ));
    }
    log::warn!("FLUSHALL at {floor:?}: every member dropped every older key");
    Ok(members.len())
}

/// FLUSH_BELOW with `key` (empty: the clock reading; else the floor) to each of `members`
/// at once: per member, a task answering its reply's value (`None`: it failed or did not
/// answer in time).
fn ask_each(
    ctx: &Rc<CoreCtx>,
    members: &[&Update],
    key: Vec<u8>,
) -> Vec<(String, glommio::task::JoinHandle<Option<Vec<u8>>>)> {
    let timeout = Duration::from_millis(REPLICA_TIMEOUT_MS);
    let key: Rc<[u8]> = key.into();
    members
        .iter()
        .map(|u| {
            let (peer, key) = (ctx.peer(&u.addr), key.clone());
            let task = glommio::spawn_local(async move {
                // every member was ALIVE in the view: one just back is waited for
                match peer
                    .request_when_back(Call::new(Opcode::FlushBelow, &key), timeout)
                    .await
                {
                    Ok(r) if r.status == Status::Ok => Some(r.value),
                    _ => None,
                }
            })
            .detach();
            (u.id.to_string(), task)
        })
        .collect()
}

/// A version above every one this node (any core) issued or saw.
pub async fn node_clock(ctx: &Rc<CoreCtx>) -> Result<Version, String> {
    let others = ctx
        .ask_other_cores(|reply| CoreMsg::ClockReading { reply })
        .await?;
    Ok(others
        .into_iter()
        .fold(ctx.shard.clock_reading(), Version::max))
}

/// This node's step: the floor made durable, then every core drops what lies at or below it.
/// Returns the keys dropped.
pub async fn flush_node(ctx: &Rc<CoreCtx>, floor: Version) -> Result<usize, String> {
    // the floor's fsyncs on the blocking pool, not on the executor
    let dir = ctx.node.wal.data_dir().to_path_buf();
    glommio::executor()
        .spawn_blocking(move || crate::storage::flush_floor::write(&dir, floor))
        .await
        .map_err(|e| e.to_string())?;
    let mut dropped = ctx.shard.flush_below(floor);
    dropped += ctx
        .ask_other_cores(|reply| CoreMsg::FlushBelow { floor, reply })
        .await?
        .into_iter()
        .sum::<usize>();
    log::warn!("flush at {floor:?}: {dropped} keys dropped on this node");
    Ok(dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_round_trips_and_garbage_is_refused() {
        let v = Version {
            hlc: 1 << 40,
            writer: 9,
        };
        assert_eq!(decode_floor(&encode_floor(v)), Some(v));
        assert_eq!(decode_floor(&[0; 11]), None);
        assert_eq!(decode_floor(&[0; 13]), None);
    }
}
