//! The Redis set commands: SADD SREM (writes: convergent, run on a replica and shipped as
//! deltas) and SMEMBERS SISMEMBER SMISMEMBER SCARD SRANDMEMBER SSCAN SINTER SUNION SDIFF
//! SINTERCARD (reads of the replicas' joined states; the algebra reads each key's).
//!
//! Owns: their arguments (Redis's syntax and errors) and their replies. Never: merges or
//! stores anything (`core::crdt`); SPOP and SMOVE take a member exactly once, which needs
//! agreement (refused in `resp_front`'s table, with the reason).

use std::collections::BTreeSet;

use crate::core::crdt::collection::{Collection, Type};
use crate::core::crdt::command::Command;
use crate::server::front::resp_collection::{
    int, matches, random_picks, scan_options, Plan, Read as AnyRead, RANDOM_COUNT_MAX, SYNTAX,
};
use crate::wire::resp;

/// A set read.
#[derive(Clone, Debug, PartialEq)]
pub enum Read {
    Members,
    IsMember(Vec<u8>),
    MIsMember(Vec<Vec<u8>>),
    Card,
    /// SRANDMEMBER: no count (one member or nil), or a count.
    Rand(Option<i64>),
    Scan(Option<Vec<u8>>),
    Inter,
    Union,
    Diff,
    /// SINTERCARD's LIMIT (0: none).
    InterCard(usize),
}

pub fn plan<'a>(name: &str, rest: &[&'a [u8]]) -> Option<Result<Plan<'a>, String>> {
    let key = *rest.first()?;
    let args = &rest[1..];
    let owned = |v: &[&[u8]]| v.iter().map(|a| a.to_vec()).collect::<Vec<_>>();
    let one = |r: Read| Plan::Read(AnyRead::Set(r), vec![key]);
    Some(Ok(match name {
        "sadd" => Plan::Write(Command::SAdd(owned(args))),
        "srem" => Plan::Write(Command::SRem(owned(args))),
        "smembers" => one(Read::Members),
        "sismember" => one(Read::IsMember(args[0].to_vec())),
        "smismember" => one(Read::MIsMember(owned(args))),
        "scard" => one(Read::Card),
        "srandmember" => match args {
            [] => one(Read::Rand(None)),
            [n] => match int(n) {
                Ok(c) if c.unsigned_abs() > RANDOM_COUNT_MAX => {
                    return Some(Err("ERR value is out of range".into()))
                }
                Ok(c) => one(Read::Rand(Some(c))),
                Err(e) => return Some(Err(e)),
            },
            _ => return Some(Err(SYNTAX.into())),
        },
        "sscan" => match scan_options(args[0], &args[1..], false) {
            Ok((pattern, _)) => one(Read::Scan(pattern)),
            Err(e) => return Some(Err(e)),
        },
        "sinter" | "sunion" | "sdiff" => {
            let r = match name {
                "sinter" => Read::Inter,
                "sunion" => Read::Union,
                _ => Read::Diff,
            };
            Plan::Read(AnyRead::Set(r), rest.to_vec())
        }
        "sintercard" => return Some(intercard(rest)),
        _ => return None,
    }))
}

/// SINTERCARD numkeys key [key ...] [LIMIT limit].
fn intercard<'a>(rest: &[&'a [u8]]) -> Result<Plan<'a>, String> {
    let n = int(rest[0])?;
    if n <= 0 {
        return Err("ERR numkeys should be greater than 0".into());
    }
    let n = n as usize;
    let keys = rest
        .get(1..1 + n)
        .ok_or("ERR Number of keys can't be greater than number of args")?;
    let limit = match &rest[1 + n..] {
        [] => 0,
        [opt, l] if opt.eq_ignore_ascii_case(b"limit") => {
            usize::try_from(int(l)?).map_err(|_| "ERR LIMIT can't be negative")?
        }
        _ => return Err(SYNTAX.into()),
    };
    Ok(Plan::Read(
        AnyRead::Set(Read::InterCard(limit)),
        keys.to_vec(),
    ))
}

fn members(state: Option<&Collection>, now_ms: u64) -> Vec<Vec<u8>> {
    state.map_or_else(Vec::new, |s| {
        s.entries(Type::Set, now_ms)
            .into_iter()
            .map(|(k, _)| k.to_vec())
            .collect()
    })
}

fn has(state: Option<&Collection>, m: &[u8], now_ms: u64) -> bool {
    state.is_some_and(|s| s.get(Type::Set, m, now_ms).is_some())
}

fn bulks(out: &mut Vec<u8>, items: impl ExactSizeIterator<Item = Vec<u8>>) {
    resp::array(out, items.len());
    for i in items {
        resp::bulk(out, &i);
    }
}

/// The reply of a set read from the joined states of its keys (`None`: no such key).
pub fn encode(out: &mut Vec<u8>, r: &Read, states: &[Option<Collection>], proto: u8, now_ms: u64) {
    let first = states.first().and_then(Option::as_ref);
    match r {
        Read::Members => bulks(out, members(first, now_ms).into_iter()),
        Read::IsMember(m) => resp::integer(out, i64::from(has(first, m, now_ms))),
        Read::MIsMember(ms) => {
            resp::array(out, ms.len());
            for m in ms {
                resp::integer(out, i64::from(has(first, m, now_ms)));
            }
        }
        Read::Card => resp::integer(out, first.map_or(0, |s| s.len(now_ms)) as i64),
        Read::Rand(None) => {
            let all = members(first, now_ms);
            match random_picks(all.len(), 1).first() {
                Some(&i) => resp::bulk(out, &all[i]),
                None => resp::null(out, proto),
            }
        }
        Read::Rand(Some(count)) => {
            let all = members(first, now_ms);
            let picks = random_picks(all.len(), *count);
            bulks(out, picks.into_iter().map(|i| all[i].clone()));
        }
        Read::Scan(pattern) => {
            let hits: Vec<_> = members(first, now_ms)
                .into_iter()
                .filter(|m| matches(pattern, m))
                .collect();
            resp::array(out, 2);
            resp::bulk(out, b"0");
            bulks(out, hits.into_iter());
        }
        Read::Inter | Read::Union | Read::Diff | Read::InterCard(_) => {
            let sets: Vec<BTreeSet<Vec<u8>>> = states
                .iter()
                .map(|s| members(s.as_ref(), now_ms).into_iter().collect())
                .collect();
            let mut acc = sets.first().cloned().unwrap_or_default();
            for s in &sets[1.min(sets.len())..] {
                acc = match r {
                    Read::Union => acc.union(s).cloned().collect(),
                    Read::Diff => acc.difference(s).cloned().collect(),
                    _ => acc.intersection(s).cloned().collect(),
                };
            }
            match r {
                Read::InterCard(limit) => {
                    let n = if *limit > 0 {
                        acc.len().min(*limit)
                    } else {
                        acc.len()
                    };
                    resp::integer(out, n as i64)
                }
                _ => bulks(out, acc.into_iter()),
            }
        }
    }
}
