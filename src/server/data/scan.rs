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

/// One key a node holds: its version and whether it is live (not a tombstone).
pub type Entry = (Box<[u8]>, Version, bool);

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

/// A SCAN request's key: the cursor (u64) and the count (u32; 0 asks for every key, as KEYS).
pub fn encode_cursor(cursor: u64, count: u32) -> [u8; 12] {
    let mut key = [0u8; 12];
    key[..8].copy_from_slice(&cursor.to_le_bytes());
    key[8..].copy_from_slice(&count.to_le_bytes());
    key
}

pub fn decode_cursor(key: &[u8]) -> Option<(u64, u32)> {
    let k: &[u8; 12] = key.try_into().ok()?;
    let cursor = u64::from_le_bytes([k[0], k[1], k[2], k[3], k[4], k[5], k[6], k[7]]);
    Some((cursor, u32::from_le_bytes([k[8], k[9], k[10], k[11]])))
}

pub fn encode_bounds(lo: u64, hi: u64) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&lo.to_le_bytes());
    b[8..].copy_from_slice(&hi.to_le_bytes());
    b
}

pub fn decode_bounds(b: &[u8]) -> Option<(u64, u64)> {
    if b.len() != 16 {
        return None;
    }
    let lo = u64::from_le_bytes(b[..8].try_into().ok()?);
    let hi = u64::from_le_bytes(b[8..].try_into().ok()?);
    (lo < hi && hi <= 1 << 32).then_some((lo, hi))
}

/// Entries on the wire: per entry `key_len u16, key, hlc u64, writer u32, live u8`.
pub fn encode_entries(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v, live) in entries {
        out.extend_from_slice(&(k.len() as u16).to_le_bytes());
        out.extend_from_slice(k);
        out.extend_from_slice(&v.hlc.to_le_bytes());
        out.extend_from_slice(&v.writer.to_le_bytes());
        out.push(u8::from(*live));
    }
    out
}

pub fn decode_entries(mut b: &[u8]) -> Option<Vec<Entry>> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let n = u16::from_le_bytes(b.get(..2)?.try_into().ok()?) as usize;
        let key = b.get(2..2 + n)?;
        let rest = b.get(2 + n..2 + n + 13)?;
        let hlc = u64::from_le_bytes(rest[..8].try_into().ok()?);
        let writer = u32::from_le_bytes(rest[8..12].try_into().ok()?);
        out.push((Box::from(key), Version { hlc, writer }, rest[12] != 0));
        b = &b[2 + n + 13..];
    }
    Some(out)
}

/// A SCAN answer on the wire: the next cursor (u64), then per key `len u16, key`.
pub fn encode_page(cursor: u64, keys: &[Box<[u8]>]) -> Vec<u8> {
    let mut out = cursor.to_le_bytes().to_vec();
    for k in keys {
        out.extend_from_slice(&(k.len() as u16).to_le_bytes());
        out.extend_from_slice(k);
    }
    out
}

pub fn decode_page(b: &[u8]) -> Option<(u64, Vec<&[u8]>)> {
    let cursor = u64::from_le_bytes(b.get(..8)?.try_into().ok()?);
    let mut rest = &b[8..];
    let mut keys = Vec::new();
    while !rest.is_empty() {
        let n = u16::from_le_bytes(rest.get(..2)?.try_into().ok()?) as usize;
        keys.push(rest.get(2..2 + n)?);
        rest = &rest[2 + n..];
    }
    Some((cursor, keys))
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

    #[test]
    fn wire_forms_round_trip_and_garbage_is_refused() {
        let e: Vec<Entry> = vec![(Box::from(&b"k"[..]), Version { hlc: 3, writer: 1 }, true)];
        assert_eq!(decode_entries(&encode_entries(&e)), Some(e));
        assert_eq!(decode_entries(&[1, 0, b'k']), None);
        assert_eq!(
            decode_bounds(&encode_bounds(0, 1 << 32)),
            Some((0, 1 << 32))
        );
        assert_eq!(decode_bounds(&encode_bounds(5, 5)), None, "empty range");
        assert_eq!(decode_cursor(&encode_cursor(7, 9)), Some((7, 9)));
        assert_eq!(decode_cursor(&[0; 11]), None);
        assert_eq!(decode_bounds(&encode_bounds(0, (1 << 32) + 1)), None);
        let keys = vec![Box::from(&b"a"[..]), Box::from(&b"bc"[..])];
        let page = encode_page(7, &keys);
        assert_eq!(decode_page(&page), Some((7, vec![&b"a"[..], &b"bc"[..]])));
        assert_eq!(decode_page(&[1, 2]), None);
    }
}
