//! The collection shell: runs a client's write to a hash, set or sorted set.
//!
//! Owns: where a write runs — on a replica of the key (this node when it is one, else the
//! first replica not DEAD, forwarded once), on the key's core, which applies the command to
//! its own state, issues the dots and logs the delta — and shipping that delta to every
//! replica at W (`coordinator::write_once`, hints for the ones that miss it). The replicas
//! join it (`core::crdt::collection::join`), so concurrent writes through different replicas
//! all land. Never: decides a merge (the core does) or waits for agreement (collections
//! converge; conditional commands are `data::consensus`'s).

use std::rc::Rc;
use std::time::Duration;

use crate::core::consensus::change::Reply;
use crate::core::crdt::command::Command;
use crate::core::version::Version;
use crate::limits::REPLICA_TIMEOUT_MS;
use crate::server::cluster::peer::{Call, Error as PeerError};
use crate::server::data::coordinator;
use crate::server::data::messages::{Op, OpResult};
use crate::server::runtime::CoreCtx;
use crate::wire::consensus::encode_reply;
use crate::wire::native::{Opcode, Status, FLAG_FORWARDED};

/// A shard's answer to `Op::Collection`: the reply's length (u32), the reply, then the delta's
/// version (hlc u64, writer u32) and cell when the command changed something.
pub fn answer(reply: &Reply, delta: Option<(Version, &[u8])>) -> OpResult {
    let r = encode_reply(reply);
    let mut out = Vec::with_capacity(4 + r.len() + delta.map_or(0, |(_, c)| 12 + c.len()));
    out.extend_from_slice(&(r.len() as u32).to_le_bytes());
    out.extend_from_slice(&r);
    if let Some((v, cell)) = delta {
        out.extend_from_slice(&v.hlc.to_le_bytes());
        out.extend_from_slice(&v.writer.to_le_bytes());
        out.extend_from_slice(cell);
    }
    OpResult::Value {
        value: out.into(),
        version: Version::ZERO,
    }
}

/// A delta's version and cell.
type Delta<'a> = (Version, &'a [u8]);

/// The encoded reply and the delta of an `answer`.
fn split_answer(b: &[u8]) -> Option<(&[u8], Option<Delta<'_>>)> {
    let n = u32::from_le_bytes(b.get(..4)?.try_into().ok()?) as usize;
    let reply = b.get(4..4 + n)?;
    let rest = &b[4 + n..];
    if rest.is_empty() {
        return Some((reply, None));
    }
    let hlc = u64::from_le_bytes(rest.get(..8)?.try_into().ok()?);
    let writer = u32::from_le_bytes(rest.get(8..12)?.try_into().ok()?);
    Some((reply, Some((Version { hlc, writer }, &rest[12..]))))
}

fn reply_value(reply: &[u8]) -> OpResult {
    OpResult::Value {
        value: reply.into(),
        version: Version::ZERO,
    }
}

fn unavailable(message: String) -> OpResult {
    OpResult::Failed {
        status: Status::Unavailable,
        message,
    }
}

/// A client's collection write on `key`: its encoded reply (`wire::consensus`), or why it
/// failed. `forwarded`: another node sent it here to run on this replica.
pub async fn run(ctx: Rc<CoreCtx>, key: Box<[u8]>, command: Command, forwarded: bool) -> OpResult {
    if let Err(fenced) = coordinator::clock_checked(&ctx).await {
        return coordinator::clock_fenced(fenced);
    }
    let view = ctx.view();
    if !forwarded && !ctx.is_solo() {
        let replicas = view.replicas(&key);
        if !replicas.iter().any(|t| t.local) {
            for t in replicas.iter().filter(|t| !t.dead) {
                match forward(&ctx, &t.addr, &key, &command).await {
                    Some(answer) => return answer,
                    None => log::debug!("collection: replica {} unreachable; next", t.id),
                }
            }
            return unavailable("no replica of the key could be reached".into());
        }
    }
    let op = Op::Collection {
        key: key.clone(),
        command,
    };
    let answer = coordinator::local_call(&ctx, op).await;
    let OpResult::Value { value, .. } = answer else {
        return answer;
    };
    let Some((reply, delta)) = split_answer(&value) else {
        return OpResult::Failed {
            status: Status::Internal,
            message: "malformed collection answer".into(),
        };
    };
    let Some((version, cell)) = delta else {
        return reply_value(reply);
    };
    if ctx.is_solo() {
        return reply_value(reply);
    }
    // durable here; now to every replica (this one joins it again: no change)
    let targets = view.write_targets(&key);
    let (result, _) =
        coordinator::write_once(&ctx, &view, &targets, &[], &key, Some(cell), version).await;
    match result {
        OpResult::Failed { .. } => result,
        _ => reply_value(reply),
    }
}

/// Send the write to a replica of the key; `None` when it could not be sent (no connection),
/// so it certainly did not run there.
async fn forward(ctx: &Rc<CoreCtx>, addr: &str, key: &[u8], command: &Command) -> Option<OpResult> {
    let body = crate::wire::collection::encode_command(command);
    let call = Call {
        value: &body,
        flags: FLAG_FORWARDED,
        ..Call::new(Opcode::Collection, key)
    };
    let timeout = Duration::from_millis(2 * REPLICA_TIMEOUT_MS);
    Some(
        match ctx.links.forward_link(addr).request(call, timeout).await {
            Ok(r) if r.status == Status::Ok => reply_value(&r.value),
            Ok(r) => OpResult::Failed {
                status: r.status,
                message: String::from_utf8_lossy(&r.value).into_owned(),
            },
            Err(PeerError::Connect { .. } | PeerError::Resolve(_)) => return None,
            Err(e) => unavailable(format!(
                "outcome unknown: the replica at {addr} did not answer ({e}); the write may or \
                 may not have taken effect"
            )),
        },
    )
}
