//! Read-modify-write of one key through the quorum (native opcode UPDATE): SET KEEPTTL, and
//! an expiry change (EXPIRE and friends, PERSIST) on a hash, set or sorted set; and `expiry`,
//! which sends an expiry change to consensus and brings a collection's back here.
//!
//! Owns: reading the key (a quorum read, with its read repair), deciding the changed cell, and
//! writing it (a quorum write at a newer version). Never: locks, or anything beyond last write
//! wins. It is not atomic, and does not pretend to be: a write that lands between our read
//! and our write with a newer version than ours makes us read again and apply the change to
//! it; one with an older version (issued before ours, still in flight) is overwritten by ours,
//! carrying the value we read — the rule every write follows. That is why an expiry change on a
//! string or a list is not made here: a counter or a list changed by consensus would get back
//! a value the round had replaced (docs/design.md, "Expiry").

use std::rc::Rc;

use crate::core::cell::{self, Cell};
use crate::core::consensus::change::{Change as RoundChange, ExpiryCond, Reply, ON_A_COLLECTION};
use crate::core::consensus::command::Command;
use crate::core::version::Version;
use crate::limits::STALE_WRITE_ATTEMPTS_MAX;
use crate::server::data::consensus;
use crate::server::data::coordinator::{self, OnStale};
use crate::server::data::messages::OpResult;
use crate::server::runtime::CoreCtx;
use crate::server::wall_clock_ms;
use crate::wire::consensus::{decode_reply, encode_reply, Decoded};
use crate::wire::native::{
    Request, Status, FLAG_DELETE, FLAG_EXPIRES, FLAG_KEEP_TTL, FLAG_PERSIST,
};

/// How an UPDATE changes a live key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Expire at this instant (ms since the epoch) if the condition on the current expiry
    /// holds; one already past deletes the key.
    Expire {
        at: u64,
        cond: ExpiryCond,
    },
    /// Never expire.
    Persist,
    Delete,
    /// Store this value and keep the key's expiry (a missing key is created without one).
    KeepTtl(Box<[u8]>),
}

impl Change {
    /// The change an UPDATE request asks for: exactly one of its flags.
    pub fn of_request(req: &Request<'_>) -> Result<Change, &'static str> {
        let wanted = req.flags & (FLAG_EXPIRES | FLAG_PERSIST | FLAG_DELETE | FLAG_KEEP_TTL);
        match wanted {
            FLAG_EXPIRES => Ok(Change::Expire {
                at: req.version.hlc,
                cond: ExpiryCond::Always,
            }),
            FLAG_PERSIST => Ok(Change::Persist),
            FLAG_DELETE => Ok(Change::Delete),
            FLAG_KEEP_TTL => Ok(Change::KeepTtl(req.value.into())),
            _ => Err("UPDATE takes exactly one of EXPIRES, PERSIST, DELETE, KEEP_TTL"),
        }
    }

    /// The write this change makes to `current` (the live cell, if any) at `now_ms`:
    /// `None` writes nothing, `Some(None)` deletes, `Some(Some(cell))` stores.
    pub fn apply(&self, current: Option<Cell<'_>>, now_ms: u64) -> Option<Option<Box<[u8]>>> {
        match (self, current) {
            (Change::KeepTtl(v), c) => Some(Some(cell::encode(v, c.and_then(|c| c.expires_at_ms)))),
            (_, None) => None,
            (Change::Expire { at, cond }, Some(c)) if !cond.holds(c.expires_at_ms, Some(*at)) => {
                None
            }
            (Change::Expire { at, .. }, Some(_)) if *at <= now_ms => Some(None),
            (Change::Expire { at, .. }, Some(c)) => {
                Some(Some(cell::encode_kind(c.kind, c.value, Some(*at))))
            }
            (Change::Persist, Some(c)) if c.expires_at_ms.is_none() => None,
            (Change::Persist, Some(c)) => Some(Some(cell::encode_kind(c.kind, c.value, None))),
            (Change::Delete, Some(_)) => Some(None),
        }
    }
}

/// Read `key`, write it back changed; the answer is the cell read (`NotFound` when the key was
/// missing or expired), or why the read or the write failed. A write refused because a replica
/// holds a newer version (a write that landed since our read) reads again and re-applies the
/// change to what it finds, at most `STALE_WRITE_ATTEMPTS_MAX` times: it never pushes the value
/// it read past a newer one.
pub async fn update(ctx: Rc<CoreCtx>, key: Box<[u8]>, change: Change) -> OpResult {
    match update_written(&ctx, &key, &change).await {
        Ok((read, _)) => read,
        Err(failed) => failed,
    }
}

/// A client's expiry change (`consensus::change::Change::Expiry`): by consensus on a string or
/// a list (linearizable, as every other command there); a hash, set or sorted set answers
/// `ON_A_COLLECTION` from the round, and takes this file's path (a whole-key write that the
/// collection joins, convergent), answering 1 if it changed the key, 0 if not.
pub async fn expiry(
    ctx: Rc<CoreCtx>,
    key: Box<[u8]>,
    command: Command,
    forwarded: bool,
) -> OpResult {
    let RoundChange::Expiry { at, cond, .. } = command.change else {
        return consensus::run(ctx, key, command, forwarded).await;
    };
    let result = consensus::run(ctx.clone(), key.clone(), command, forwarded).await;
    let on_collection = match &result {
        OpResult::Value { value, .. } => {
            matches!(decode_reply(value), Some(Decoded::Error(e)) if e == ON_A_COLLECTION)
        }
        _ => false,
    };
    // (GETEX is WRONGTYPE on a collection: only EXPIRE and PERSIST come back here)
    if !on_collection {
        return result;
    }
    let change = match at {
        Some(at) => Change::Expire { at, cond },
        None => Change::Persist,
    };
    match update_written(&ctx, &key, &change).await {
        Ok((_, wrote)) => OpResult::Value {
            value: encode_reply(&Reply::Int(i64::from(wrote))).into(),
            version: Version::ZERO,
        },
        Err(failed) => failed,
    }
}

/// `update`'s work: (its answer, whether it wrote), or why it failed.
async fn update_written(
    ctx: &Rc<CoreCtx>,
    key: &[u8],
    change: &Change,
) -> Result<(OpResult, bool), OpResult> {
    let mut attempt = 1;
    loop {
        let (read, write) = read_and_apply(ctx, key, change).await?;
        let wrote = write.is_some();
        if let Some(value) = write {
            let written =
                coordinator::write_with(ctx.clone(), key.into(), value, OnStale::Report).await;
            match written {
                OpResult::Stale { stored } if attempt < STALE_WRITE_ATTEMPTS_MAX => {
                    ctx.metrics.stale_retry();
                    attempt += 1;
                    log::debug!(
                        "update read again: a replica holds {stored:?} (attempt {attempt})"
                    );
                    coordinator::stale_pause(attempt).await;
                    continue;
                }
                OpResult::Stale { stored } => {
                    return Err(coordinator::stale_failure(format!(
                        "stale: the key kept changing under this command (newest {}.{:#x}); \
                         gave up after {attempt} attempts",
                        stored.hlc, stored.writer
                    )))
                }
                OpResult::Failed { .. } => return Err(written),
                _ => {}
            }
        }
        return Ok((read, wrote));
    }
}

/// One quorum read of `key` and the write `change` makes to it: (what to answer — the read, or
/// `NotFound` when the key is missing or expired — and the write, if any).
async fn read_and_apply(
    ctx: &Rc<CoreCtx>,
    key: &[u8],
    change: &Change,
) -> Result<(OpResult, Option<Option<Box<[u8]>>>), OpResult> {
    let read = coordinator::read(ctx.clone(), key.into()).await;
    if let OpResult::Failed { .. } = read {
        return Err(read);
    }
    let now_ms = wall_clock_ms();
    match read.live_cell(now_ms) {
        Ok(current) => {
            let found = current.is_some();
            let write = change.apply(current.map(|(c, _)| c), now_ms);
            Ok((if found { read } else { OpResult::NotFound }, write))
        }
        Err(e) => Err(OpResult::Failed {
            status: Status::Internal,
            message: e.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expire(at: u64) -> Change {
        Change::Expire {
            at,
            cond: ExpiryCond::Always,
        }
    }

    fn c(value: &[u8], at: Option<u64>) -> Box<[u8]> {
        cell::encode(value, at)
    }

    #[test]
    fn each_change_writes_what_redis_would() {
        let plain = c(b"v", None);
        let timed = c(b"v", Some(500));
        let live = |b: &[u8]| {
            cell::decode(b)
                .ok()
                .map(|x| (x.value.to_vec(), x.expires_at_ms))
        };
        let now = 100;
        let p = cell::decode(&plain).ok();
        let t = cell::decode(&timed).ok();
        let got = |ch: Change, cur| ch.apply(cur, now).map(|w| w.map(|b| live(&b)));
        assert_eq!(got(expire(900), p), Some(Some(live(&c(b"v", Some(900))))));
        assert_eq!(got(expire(100), p), Some(None), "a past expiry deletes");
        assert_eq!(got(expire(900), None), None, "a missing key stays missing");
        assert_eq!(got(Change::Persist, t), Some(Some(live(&plain))));
        assert_eq!(
            got(Change::Persist, p),
            None,
            "nothing to persist: no write"
        );
        assert_eq!(got(Change::Delete, p), Some(None));
        assert_eq!(got(Change::Delete, None), None);
        let keep = Change::KeepTtl(b"new".to_vec().into());
        assert_eq!(
            got(keep.clone(), t),
            Some(Some(live(&c(b"new", Some(500)))))
        );
        assert_eq!(got(keep, None), Some(Some(live(&c(b"new", None)))));
    }

    #[test]
    fn a_request_names_exactly_one_change() {
        let req = |flags, hlc| Request {
            version: crate::core::version::Version { hlc, writer: 0 },
            flags,
            ..Request::new(crate::wire::native::Opcode::Update, b"k", b"v")
        };
        assert_eq!(Change::of_request(&req(FLAG_EXPIRES, 7)), Ok(expire(7)));
        assert_eq!(
            Change::of_request(&req(FLAG_PERSIST, 0)),
            Ok(Change::Persist)
        );
        assert_eq!(Change::of_request(&req(FLAG_DELETE, 0)), Ok(Change::Delete));
        assert!(Change::of_request(&req(0, 0)).is_err());
        assert!(Change::of_request(&req(FLAG_DELETE | FLAG_PERSIST, 0)).is_err());
    }
}
