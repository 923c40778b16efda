//! Read-modify-write of one key through the quorum: EXPIRE and friends, PERSIST, GETEX, GETDEL
//! and SET KEEPTTL (native opcode UPDATE).
//!
//! Owns: reading the key (a quorum read, with its read repair), deciding the changed cell, and
//! writing it (a quorum write at a newer version). Never: locks, or anything beyond last write
//! wins. It is not atomic, and does not pretend to be: a write that lands between our read
//! and our write with a newer version than ours makes us read again and apply the change to
//! it; one with an older version (issued before ours, still in flight) is overwritten by ours,
//! carrying the value we read — the rule every write follows. Conditional writes need
//! agreement (docs/design.md says why and what it would take).

use std::rc::Rc;

use crate::core::cell::{self, Cell};
use crate::limits::STALE_WRITE_ATTEMPTS_MAX;
use crate::server::data::coordinator::{self, OnStale};
use crate::server::data::messages::OpResult;
use crate::server::runtime::CoreCtx;
use crate::server::wall_clock_ms;
use crate::wire::native::{
    Request, Status, FLAG_DELETE, FLAG_EXPIRES, FLAG_KEEP_TTL, FLAG_PERSIST,
};

/// How an UPDATE changes a live key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Expire at this instant (ms since the epoch); one already past deletes the key.
    Expire(u64),
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
            FLAG_EXPIRES => Ok(Change::Expire(req.version.hlc)),
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
            (Change::Expire(at), Some(_)) if *at <= now_ms => Some(None),
            (Change::Expire(at), Some(c)) => {
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
    let mut attempt = 1;
    loop {
        let (read, write) = match read_and_apply(&ctx, &key, &change).await {
            Ok(found) => found,
            Err(failed) => return failed,
        };
        if let Some(value) = write {
            let written =
                coordinator::write_with(ctx.clone(), key.clone(), value, OnStale::Report).await;
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
                    return OpResult::Failed {
                        status: Status::Stale,
                        message: format!(
                            "stale: the key kept changing under this command (newest {}.{:#x}); \
                             gave up after {attempt} attempts",
                            stored.hlc, stored.writer
                        ),
                    }
                }
                OpResult::Failed { .. } => return written,
                _ => {}
            }
        }
        return read;
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
        assert_eq!(
            got(Change::Expire(900), p),
            Some(Some(live(&c(b"v", Some(900)))))
        );
        assert_eq!(
            got(Change::Expire(100), p),
            Some(None),
            "a past expiry deletes"
        );
        assert_eq!(
            got(Change::Expire(900), None),
            None,
            "a missing key stays missing"
        );
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
        assert_eq!(
            Change::of_request(&req(FLAG_EXPIRES, 7)),
            Ok(Change::Expire(7))
        );
        assert_eq!(
            Change::of_request(&req(FLAG_PERSIST, 0)),
            Ok(Change::Persist)
        );
        assert_eq!(Change::of_request(&req(FLAG_DELETE, 0)), Ok(Change::Delete));
        assert!(Change::of_request(&req(0, 0)).is_err());
        assert!(Change::of_request(&req(FLAG_DELETE | FLAG_PERSIST, 0)).is_err());
    }
}
