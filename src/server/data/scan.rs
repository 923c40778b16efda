//! Iterating every key of the cluster: SCAN and KEYS.
//!
//! Owns: walking the 2^32 hash space in `SCAN_SLICES` slices in order, asking every member
//! (RANGE_KEYS) for the keys it holds whose ring hash falls in a slice, merging the answers by
//! version (newest wins; a key whose newest version is a tombstone is gone), and glob matching
//! (`MATCH`). The cursor is the next hash position to visit (0: start; 0 again: done), so a
//! cursor is valid on any node. Never writes anything.
//!
//! What a caller gets (Redis's SCAN promise, under kvstore's): a key present and live for the
//! whole iteration is returned, at least once, as long as each key's replicas answer — the
//! slice fails unless all members but N − R answered. A key written or deleted during the
//! iteration may or may not be returned. Each slice costs every node a pass over its keys, so
//! a full SCAN is an administrative operation, bounded by `SCAN_KEYS_MAX` keys per call.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use crate::core::membership::Status as MemberStatus;
use crate::core::version::Version;
use crate::limits::{REPLICA_TIMEOUT_MS, SCAN_KEYS_MAX, SCAN_SLICES};
use crate::server::cluster::peer::Call;
use crate::server::data::messages::CoreMsg;
use crate::server::runtime::CoreCtx;
use crate::wire::native::{Opcode, Status};

pub use crate::wire::scan::Entry;
use crate::wire::scan::{decode_entries, encode_bounds};

/// Width of one slice of the hash space: the first request of a SCAN step.
const SLICE: u64 = (1u64 << 32) / SCAN_SLICES;
/// A step's next request covers at most this many times the width of the one before.
const SCAN_WIDEN_MAX: u64 = 16;

/// One SCAN step from `cursor`: keys until at least `count` (or the end), and the next cursor
/// (0 when the whole space was visited). A call never returns more than `SCAN_KEYS_MAX` keys:
/// the slice that would pass it is cut at a hash boundary and the cursor resumes there (so a
/// slice of any size is walked). KEYS (`count` = `usize::MAX`) is refused past the limit.
pub async fn scan(
    ctx: &Rc<CoreCtx>,
    cursor: u64,
    count: usize,
    pattern: &[u8],
) -> Result<(u64, Vec<Box<[u8]>>), String> {
    let mut at = cursor.min(1 << 32);
    let mut keys = Vec::new();
    // Each request costs every member one pass over its keys, whatever its width: after the
    // first, widen the range toward what is still wanted, from the density seen so far
    // (at most SCAN_WIDEN_MAX times per step; cut_at_hash bounds an overshoot).
    let mut width = SLICE;
    let (mut seen, mut spanned) = (0u64, 0u64);
    while at < (1 << 32) && keys.len() < count {
        let hi = (at + width).min(1 << 32);
        let entries = slice(ctx, at, hi).await?;
        seen += entries.len() as u64;
        spanned += hi - at;
        let found: Vec<Box<[u8]>> = entries
            .into_iter()
            .filter(|(k, _, live)| *live && glob_match(pattern, k))
            .map(|(k, _, _)| k)
            .collect();
        if keys.len() + found.len() <= SCAN_KEYS_MAX {
            keys.extend(found);
            at = hi;
            let wanted = count.min(SCAN_KEYS_MAX).saturating_sub(keys.len()) as u64;
            let fits = (wanted.saturating_mul(spanned) / seen.max(1)).max(SLICE);
            width = fits.min(width.saturating_mul(SCAN_WIDEN_MAX)).min(1 << 32);
            continue;
        }
        if count == usize::MAX {
            return Err(format!(
                "more than {SCAN_KEYS_MAX} keys: use SCAN (KEYS answers at most that many)"
            ));
        }
        let (taken, resume) = cut_at_hash(found, SCAN_KEYS_MAX - keys.len());
        keys.extend(taken);
        return Ok((resume.unwrap_or(hi), keys));
    }
    Ok((if at >= (1 << 32) { 0 } else { at }, keys))
}

/// The first `room` keys of a slice in hash order (more only when keys share a hash, which stay
/// together), and the hash to resume at (`None`: the slice is done).
fn cut_at_hash(mut found: Vec<Box<[u8]>>, room: usize) -> (Vec<Box<[u8]>>, Option<u64>) {
    let hash = |k: &[u8]| u64::from(crate::core::ring::hash(k));
    found.sort_by_key(|k| hash(k));
    let mut end = room.min(found.len());
    // never split a hash value between two calls, and always make progress
    while end > 0 && end < found.len() && hash(&found[end]) == hash(&found[end - 1]) {
        end -= 1;
    }
    if end == 0 {
        let first = found.first().map(|k| hash(k));
        end = found.iter().take_while(|k| Some(hash(k)) == first).count();
    }
    let resume = found.get(end).map(|k| hash(k));
    found.truncate(end);
    (found, resume)
}

/// Every member's keys in `[lo, hi)`, merged: the newest version of each.
async fn slice(ctx: &Rc<CoreCtx>, lo: u64, hi: u64) -> Result<Vec<Entry>, String> {
    let view = ctx.view();
    let rep = view.effective();
    let others: Vec<(String, String)> = view
        .listing
        .iter()
        .filter(|u| u.id != view.me && u.status != MemberStatus::Left)
        .map(|u| (u.id.clone(), u.addr.clone()))
        .collect();
    let mut merged: BTreeMap<Box<[u8]>, (Version, bool)> = BTreeMap::new();
    let mut absorb = |entries: Vec<Entry>| {
        for (k, v, live) in entries {
            let e = merged.entry(k).or_insert((v, live));
            if v > e.0 {
                *e = (v, live);
            }
        }
    };
    // Ask every other member at once, then this node; merge as answers come.
    let bounds = encode_bounds(lo, hi);
    let timeout = Duration::from_millis(REPLICA_TIMEOUT_MS);
    let asks: Vec<_> = others
        .into_iter()
        .map(|(id, addr)| {
            let peer = ctx.peer(&addr);
            let task = glommio::spawn_local(async move {
                match peer
                    .request(Call::new(Opcode::RangeKeys, &bounds), timeout)
                    .await
                {
                    Ok(r) if r.status == Status::Ok => decode_entries(&r.value),
                    _ => None,
                }
            })
            .detach();
            (id, task)
        })
        .collect();
    absorb(node_range(ctx, lo, hi).await?);
    let mut missing = Vec::new();
    for (id, task) in asks {
        match task.await.flatten() {
            Some(e) => absorb(e),
            None => missing.push(id),
        }
    }
    // Each key lives on N members and R of them answer: all but N - R members must.
    if missing.len() > rep.n - rep.r {
        return Err(format!("scan: members {missing:?} did not answer"));
    }
    Ok(merged
        .into_iter()
        .map(|(k, (v, live))| (k, v, live))
        .collect())
}

/// This node's keys in `[lo, hi)`, every core's.
pub async fn node_range(ctx: &CoreCtx, lo: u64, hi: u64) -> Result<Vec<Entry>, String> {
    let mut all = ctx.shard.range_keys(lo, hi);
    let parts = ctx
        .ask_other_cores(|reply| CoreMsg::RangeKeys { lo, hi, reply })
        .await?;
    all.extend(parts.into_iter().flatten());
    Ok(all)
}

/// Redis's glob: `*` any run, `?` any byte, `[abc]`, `[^a-z]`, `\\x` a literal x. An empty
/// pattern matches everything (no MATCH given).
pub fn glob_match(pattern: &[u8], s: &[u8]) -> bool {
    if pattern.is_empty() {
        return true;
    }
    glob(pattern, s)
}

fn glob(p: &[u8], s: &[u8]) -> bool {
    match p.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => (0..=s.len()).any(|i| glob(rest, &s[i..])),
        Some((b'?', rest)) => !s.is_empty() && glob(rest, &s[1..]),
        Some((b'[', rest)) => {
            let Some((&c, tail)) = s.split_first() else {
                return false;
            };
            let (negate, mut set) = match rest.split_first() {
                Some((b'^', r)) => (true, r),
                _ => (false, rest),
            };
            let mut hit = false;
            loop {
                match set {
                    [] => return false, // unterminated class: no match
                    [b']', r @ ..] => {
                        set = r;
                        break;
                    }
                    [b'\\', x, r @ ..] => {
                        hit |= *x == c;
                        set = r;
                    }
                    [a, b'-', z, r @ ..] if *z != b']' => {
                        hit |= (*a..=*z).contains(&c);
                        set = r;
                    }
                    [x, r @ ..] => {
                        hit |= *x == c;
                        set = r;
                    }
                }
            }
            hit != negate && glob(set, tail)
        }
        Some((b'\\', [x, rest @ ..])) => s.first() == Some(x) && glob(rest, &s[1..]),
        Some((c, rest)) => s.first() == Some(c) && glob(rest, &s[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_as_redis_does() {
        for (p, s, want) in [
            ("*", "anything", true),
            ("user:*", "user:42", true),
            ("user:*", "session:1", false),
            ("h?llo", "hello", true),
            ("h?llo", "hllo", false),
            ("h[ae]llo", "hallo", true),
            ("h[ae]llo", "hillo", false),
            ("h[^e]llo", "hallo", true),
            ("h[^e]llo", "hello", false),
            ("k[a-c]", "kb", true),
            ("k[a-c]", "kd", false),
            ("a\\*b", "a*b", true),
            ("a\\*b", "axb", false),
            ("*:*:*", "a:b:c", true),
            ("[", "x", false),
        ] {
            assert_eq!(glob_match(p.as_bytes(), s.as_bytes()), want, "{p} vs {s}");
        }
        assert!(glob_match(b"", b"x"), "no pattern: everything");
    }

    #[test]
    fn a_full_slice_is_cut_at_a_hash_and_resumed_there() {
        let hash = |k: &[u8]| u64::from(crate::core::ring::hash(k));
        let keys: Vec<Box<[u8]>> = (0..100)
            .map(|i| format!("k{i}").into_bytes().into())
            .collect();
        let (taken, resume) = cut_at_hash(keys.clone(), 30);
        assert_eq!(taken.len(), 30);
        let resume = resume.expect("more to come");
        assert!(
            taken.iter().all(|k| hash(k) < resume),
            "taken below the cut"
        );
        let rest = keys.iter().filter(|k| hash(k) >= resume).count();
        assert_eq!(
            rest, 70,
            "the rest at or above it: nothing lost, nothing twice"
        );
        let (all, done) = cut_at_hash(keys.clone(), 100);
        assert_eq!((all.len(), done), (100, None));
        let (one, _) = cut_at_hash(keys, 0);
        assert_eq!(one.len(), 1, "always progress");
    }
}
