//! The Redis sorted-set commands: ZADD (CH, INCR) ZREM ZINCRBY (writes: convergent, run on a
//! replica and shipped as deltas) and ZSCORE ZMSCORE ZCARD ZCOUNT ZRANGE (BYSCORE, BYLEX,
//! REV, LIMIT, WITHSCORES) ZRANGEBYSCORE ZREVRANGE ZRANK ZREVRANK ZSCAN (reads of the
//! replicas' joined state).
//!
//! Owns: their arguments (Redis's syntax and errors) and their replies. Never: merges or
//! stores anything (`core::crdt`). ZADD's NX, XX, GT and LT decide from what is stored, which
//! a convergent write cannot promise (two replicas may each see the member absent): refused,
//! with the reason.

use std::cmp::Ordering;

use crate::core::crdt::collection::{Collection, Type};
use crate::core::crdt::command::{parse_score, score_of, score_text, Command};
use crate::server::front::resp_collection::{
    int, matches, scan_options, Plan, Read as AnyRead, NOT_A_FLOAT, SYNTAX,
};
use crate::wire::resp;

pub const CONDITIONAL_ZADD: &str = "ERR ZADD NX, XX, GT and LT decide from what the key holds, \
    which a convergent write cannot promise across replicas: not served (ZADD, ZADD CH and \
    ZADD INCR are)";
const NOT_A_FLOAT_RANGE: &str = "ERR min or max is not a float";
const NOT_A_LEX_RANGE: &str = "ERR min or max not valid string range item";

/// One end of a score or lex range.
#[derive(Clone, Debug, PartialEq)]
pub enum Bound {
    Score(f64, bool),
    /// `None`: `-` or `+` (unbounded); the bool: exclusive.
    Lex(Option<Vec<u8>>, bool),
}

/// How ZRANGE selects.
#[derive(Clone, Debug, PartialEq)]
pub enum By {
    Rank(i64, i64),
    Score(Bound, Bound),
    Lex(Bound, Bound),
}

/// A sorted-set read.
#[derive(Clone, Debug, PartialEq)]
pub enum Read {
    Score(Vec<u8>),
    MScore(Vec<Vec<u8>>),
    Card,
    Count(Bound, Bound),
    Range {
        by: By,
        rev: bool,
        limit: Option<(i64, i64)>,
        withscores: bool,
    },
    Rank {
        member: Vec<u8>,
        rev: bool,
        withscore: bool,
    },
    Scan(Option<Vec<u8>>),
}

fn score_bound(a: &[u8]) -> Result<Bound, String> {
    let (ex, t) = match a.strip_prefix(b"(") {
        Some(t) => (true, t),
        None => (false, a),
    };
    parse_score(t)
        .map(|x| Bound::Score(x, ex))
        .ok_or_else(|| NOT_A_FLOAT_RANGE.to_string())
}

fn lex_bound(a: &[u8]) -> Result<Bound, String> {
    match a {
        b"-" | b"+" => Ok(Bound::Lex(None, a == b"+")),
        _ => match a.split_first() {
            Some((b'[', t)) => Ok(Bound::Lex(Some(t.to_vec()), false)),
            Some((b'(', t)) => Ok(Bound::Lex(Some(t.to_vec()), true)),
            _ => Err(NOT_A_LEX_RANGE.into()),
        },
    }
}

pub fn plan<'a>(name: &str, rest: &[&'a [u8]]) -> Option<Result<Plan<'a>, String>> {
    let key = *rest.first()?;
    let args = &rest[1..];
    let one = |r: Read| Plan::Read(AnyRead::Zset(r), vec![key]);
    let r = match name {
        "zadd" => zadd(args),
        "zrem" => Ok(Plan::Write(Command::ZRem(
            args.iter().map(|a| a.to_vec()).collect(),
        ))),
        "zincrby" => match parse_score(args[0]) {
            Some(by) => Ok(Plan::Write(Command::ZIncrBy(args[1].to_vec(), by))),
            None => Err(NOT_A_FLOAT.into()),
        },
        "zscore" => Ok(one(Read::Score(args[0].to_vec()))),
        "zmscore" => Ok(one(Read::MScore(args.iter().map(|a| a.to_vec()).collect()))),
        "zcard" => Ok(one(Read::Card)),
        "zcount" => (|| {
            Ok(one(Read::Count(
                score_bound(args[0])?,
                score_bound(args[1])?,
            )))
        })(),
        "zrange" => zrange(args).map(one),
        "zrangebyscore" | "zrevrangebyscore" => {
            let rev = name == "zrevrangebyscore";
            (|| {
                let (a, b) = (score_bound(args[0])?, score_bound(args[1])?);
                let (withscores, limit) = trailing(&args[2..], true)?;
                let by = if rev {
                    By::Score(b, a)
                } else {
                    By::Score(a, b)
                };
                Ok(one(Read::Range {
                    by,
                    rev,
                    limit,
                    withscores,
                }))
            })()
        }
        "zrevrange" => (|| {
            let by = By::Rank(int(args[0])?, int(args[1])?);
            let withscores = match &args[2..] {
                [] => false,
                [w] if w.eq_ignore_ascii_case(b"withscores") => true,
                _ => return Err(SYNTAX.to_string()),
            };
            Ok(one(Read::Range {
                by,
                rev: true,
                limit: None,
                withscores,
            }))
        })(),
        "zrank" | "zrevrank" => {
            let withscore = match &args[1..] {
                [] => false,
                [w] if w.eq_ignore_ascii_case(b"withscore") => true,
                _ => return Some(Err(SYNTAX.into())),
            };
            Ok(one(Read::Rank {
                member: args[0].to_vec(),
                rev: name == "zrevrank",
                withscore,
            }))
        }
        "zscan" => scan_options(args[0], &args[1..], false).map(|(p, _)| one(Read::Scan(p))),
        _ => return None,
    };
    Some(r)
}

/// ZADD [NX|XX] [GT|LT] [CH] [INCR] score member [score member ...]
fn zadd<'a>(args: &[&[u8]]) -> Result<Plan<'a>, String> {
    let (mut ch, mut incr, mut i) = (false, false, 0);
    while let Some(a) = args.get(i) {
        let upper = a.to_ascii_uppercase();
        match upper.as_slice() {
            b"NX" | b"XX" | b"GT" | b"LT" => return Err(CONDITIONAL_ZADD.into()),
            b"CH" => ch = true,
            b"INCR" => incr = true,
            _ => break,
        }
        i += 1;
    }
    let pairs = &args[i..];
    if pairs.is_empty() || pairs.len() % 2 != 0 {
        return Err(SYNTAX.into());
    }
    if incr && pairs.len() > 2 {
        return Err("ERR INCR option supports a single increment-element pair".into());
    }
    let mut parsed = Vec::with_capacity(pairs.len() / 2);
    for p in pairs.chunks(2) {
        let s = parse_score(p[0]).ok_or(NOT_A_FLOAT)?;
        parsed.push((s, p[1].to_vec()));
    }
    if incr {
        let (by, m) = parsed.swap_remove(0);
        return Ok(Plan::Write(Command::ZIncrBy(m, by)));
    }
    Ok(Plan::Write(Command::ZAdd { ch, pairs: parsed }))
}

/// WITHSCORES and LIMIT offset count, in any order (`limit_ok`: LIMIT allowed).
fn trailing(opts: &[&[u8]], limit_ok: bool) -> Result<(bool, Option<(i64, i64)>), String> {
    let (mut withscores, mut limit, mut rest) = (false, None, opts);
    while let [opt, tail @ ..] = rest {
        if opt.eq_ignore_ascii_case(b"withscores") {
            withscores = true;
            rest = tail;
        } else if opt.eq_ignore_ascii_case(b"limit") && limit_ok && tail.len() >= 2 {
            limit = Some((int(tail[0])?, int(tail[1])?));
            rest = &tail[2..];
        } else {
            return Err(SYNTAX.into());
        }
    }
    Ok((withscores, limit))
}

/// ZRANGE key start stop [BYSCORE | BYLEX] [REV] [LIMIT offset count] [WITHSCORES]
fn zrange(args: &[&[u8]]) -> Result<Read, String> {
    let (mut byscore, mut bylex, mut rev, mut withscores, mut limit) =
        (false, false, false, false, None);
    let mut rest = &args[2..];
    while let [opt, tail @ ..] = rest {
        let upper = opt.to_ascii_uppercase();
        match upper.as_slice() {
            b"BYSCORE" => byscore = true,
            b"BYLEX" => bylex = true,
            b"REV" => rev = true,
            b"WITHSCORES" => withscores = true,
            b"LIMIT" if tail.len() >= 2 => {
                limit = Some((int(tail[0])?, int(tail[1])?));
                rest = &tail[2..];
                continue;
            }
            _ => return Err(SYNTAX.into()),
        }
        rest = tail;
    }
    if byscore && bylex {
        return Err(SYNTAX.into());
    }
    if limit.is_some() && !byscore && !bylex {
        return Err(
            "ERR syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX"
                .into(),
        );
    }
    if withscores && bylex {
        return Err("ERR syntax error, WITHSCORES not supported in combination with BYLEX".into());
    }
    let (a, b) = (args[0], args[1]);
    let by = if byscore {
        let (a, b) = (score_bound(a)?, score_bound(b)?);
        if rev {
            By::Score(b, a)
        } else {
            By::Score(a, b)
        }
    } else if bylex {
        let (a, b) = (lex_bound(a)?, lex_bound(b)?);
        if rev {
            By::Lex(b, a)
        } else {
            By::Lex(a, b)
        }
    } else {
        By::Rank(int(a)?, int(b)?)
    };
    Ok(Read::Range {
        by,
        rev,
        limit,
        withscores,
    })
}

/// The members in score order (ties by member bytes), with their scores.
fn sorted(state: Option<&Collection>, now_ms: u64) -> Vec<(Vec<u8>, f64)> {
    let mut all: Vec<(Vec<u8>, f64)> = state.map_or_else(Vec::new, |s| {
        s.entries(Type::Zset, now_ms)
            .into_iter()
            .filter_map(|(k, r)| score_of(&r).map(|x| (k.to_vec(), x)))
            .collect()
    });
    all.sort_by(|a, b| {
        a.1.partial_cmp(&b.1)
            .unwrap_or(Ordering::Equal)
            .then_with(|| a.0.cmp(&b.0))
    });
    all
}

fn above(x: f64, lo: &Bound) -> bool {
    match lo {
        Bound::Score(b, ex) => x > *b || (!ex && x == *b),
        Bound::Lex(..) => true,
    }
}

fn below(x: f64, hi: &Bound) -> bool {
    match hi {
        Bound::Score(b, ex) => x < *b || (!ex && x == *b),
        Bound::Lex(..) => true,
    }
}

fn lex_above(m: &[u8], lo: &Bound) -> bool {
    match lo {
        Bound::Lex(None, plus) => !plus,
        Bound::Lex(Some(b), ex) => m > &b[..] || (!ex && m == &b[..]),
        Bound::Score(..) => true,
    }
}

fn lex_below(m: &[u8], hi: &Bound) -> bool {
    match hi {
        Bound::Lex(None, plus) => *plus,
        Bound::Lex(Some(b), ex) => m < &b[..] || (!ex && m == &b[..]),
        Bound::Score(..) => true,
    }
}

/// Members, and with their scores: flat in RESP2 (member, score as text, …), pairs of member
/// and double in RESP3, as Redis answers.
fn pairs(out: &mut Vec<u8>, items: &[(Vec<u8>, f64)], withscores: bool, proto: u8) {
    if withscores && proto >= 3 {
        resp::array(out, items.len());
        for (m, s) in items {
            resp::array(out, 2);
            resp::bulk(out, m);
            resp::double(out, &score_text(*s), proto);
        }
        return;
    }
    resp::array(out, items.len() * if withscores { 2 } else { 1 });
    for (m, s) in items {
        resp::bulk(out, m);
        if withscores {
            resp::bulk(out, &score_text(*s));
        }
    }
}

/// Redis's rank window: `start..=stop` over `len`, negatives from the end.
fn rank_window(start: i64, stop: i64, len: usize) -> Option<(usize, usize)> {
    let len = len as i64;
    let s = if start < 0 {
        (len + start).max(0)
    } else {
        start
    };
    let e = if stop < 0 {
        len + stop
    } else {
        stop.min(len - 1)
    };
    (s <= e && s < len).then_some((s as usize, e as usize))
}

/// The reply of a sorted-set read from the joined state (`None`: no such key).
pub fn encode(out: &mut Vec<u8>, r: &Read, state: Option<&Collection>, proto: u8, now_ms: u64) {
    let score = |m: &[u8]| {
        state
            .and_then(|s| s.get(Type::Zset, m, now_ms))
            .and_then(|r| score_of(&r))
    };
    match r {
        Read::Score(m) => match score(m) {
            Some(x) => resp::double(out, &score_text(x), proto),
            None => resp::null(out, proto),
        },
        Read::MScore(ms) => {
            resp::array(out, ms.len());
            for m in ms {
                match score(m) {
                    Some(x) => resp::double(out, &score_text(x), proto),
                    None => resp::null(out, proto),
                }
            }
        }
        Read::Card => resp::integer(out, state.map_or(0, |s| s.len(now_ms)) as i64),
        Read::Count(lo, hi) => {
            let n = sorted(state, now_ms)
                .iter()
                .filter(|(_, x)| above(*x, lo) && below(*x, hi))
                .count();
            resp::integer(out, n as i64)
        }
        Read::Range {
            by,
            rev,
            limit,
            withscores,
        } => {
            let mut all = sorted(state, now_ms);
            if *rev {
                all.reverse();
            }
            let picked: Vec<(Vec<u8>, f64)> = match by {
                By::Rank(start, stop) => match rank_window(*start, *stop, all.len()) {
                    Some((s, e)) => all[s..=e].to_vec(),
                    None => Vec::new(),
                },
                By::Score(lo, hi) => all
                    .into_iter()
                    .filter(|(_, x)| above(*x, lo) && below(*x, hi))
                    .collect(),
                By::Lex(lo, hi) => all
                    .into_iter()
                    .filter(|(m, _)| lex_above(m, lo) && lex_below(m, hi))
                    .collect(),
            };
            let picked = match limit {
                Some((off, count)) if *off >= 0 => {
                    let it = picked.into_iter().skip(*off as usize);
                    if *count < 0 {
                        it.collect()
                    } else {
                        it.take(*count as usize).collect()
                    }
                }
                Some(_) => Vec::new(),
                None => picked,
            };
            pairs(out, &picked, *withscores, proto);
        }
        Read::Rank {
            member,
            rev,
            withscore,
        } => {
            let mut all = sorted(state, now_ms);
            if *rev {
                all.reverse();
            }
            match all.iter().position(|(m, _)| m == member) {
                Some(i) if *withscore => {
                    resp::array(out, 2);
                    resp::integer(out, i as i64);
                    resp::double(out, &score_text(all[i].1), proto);
                }
                Some(i) => resp::integer(out, i as i64),
                None => resp::null(out, proto),
            }
        }
        Read::Scan(pattern) => {
            let hits: Vec<_> = sorted(state, now_ms)
                .into_iter()
                .filter(|(m, _)| matches(pattern, m))
                .collect();
            resp::array(out, 2);
            resp::bulk(out, b"0");
            // SCAN pages are flat in both protocols
            pairs(out, &hits, true, 2);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rank_windows_as_redis_counts_them() {
        assert_eq!(rank_window(0, -1, 3), Some((0, 2)));
        assert_eq!(rank_window(-2, -1, 3), Some((1, 2)));
        assert_eq!(rank_window(1, 100, 3), Some((1, 2)));
        assert_eq!(rank_window(2, 1, 3), None);
        assert_eq!(rank_window(5, 10, 3), None);
        assert_eq!(rank_window(-100, 0, 3), Some((0, 0)));
        assert_eq!(rank_window(0, -1, 0), None);
    }

    #[test]
    fn bounds_parse_and_refuse() {
        assert_eq!(score_bound(b"(1.5"), Ok(Bound::Score(1.5, true)));
        assert_eq!(
            score_bound(b"-inf"),
            Ok(Bound::Score(f64::NEG_INFINITY, false))
        );
        assert_eq!(score_bound(b"x"), Err(NOT_A_FLOAT_RANGE.into()));
        assert_eq!(lex_bound(b"[a"), Ok(Bound::Lex(Some(b"a".to_vec()), false)));
        assert_eq!(lex_bound(b"+"), Ok(Bound::Lex(None, true)));
        assert_eq!(lex_bound(b"a"), Err(NOT_A_LEX_RANGE.into()));
    }
}
