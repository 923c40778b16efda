//! The Redis hash commands: HSET HMSET HDEL HINCRBY HINCRBYFLOAT (writes: convergent, run on a
//! replica and shipped as deltas) and HGET HMGET HGETALL HLEN HEXISTS HKEYS HVALS HSTRLEN
//! HRANDFIELD HSCAN (reads of the replicas' joined state).
//!
//! Owns: their arguments (Redis's syntax and errors) and their replies. Never: merges or
//! stores anything (`core::crdt`), or runs a conditional write (HSETNX needs agreement: refused
//! in `resp_front`'s table, with the reason).

use crate::core::consensus::change::float_text;
use crate::core::crdt::collection::{Collection, Type};
use crate::core::crdt::command::Command;
use crate::core::crdt::field::Resolved;
use crate::server::front::resp_collection::{
    int, matches, random_picks, scan_options, Plan, Read as AnyRead, NOT_A_FLOAT, SYNTAX,
};
use crate::wire::resp;

/// A hash read.
#[derive(Clone, Debug, PartialEq)]
pub enum Read {
    Get(Vec<u8>),
    MGet(Vec<Vec<u8>>),
    GetAll,
    Len,
    Exists(Vec<u8>),
    Keys,
    Vals,
    StrLen(Vec<u8>),
    /// HRANDFIELD: no count (one field or nil), or a count and WITHVALUES.
    Rand(Option<(i64, bool)>),
    /// HSCAN: one page holding every match (cursor 0), NOVALUES.
    Scan(Option<Vec<u8>>, bool),
}

fn read(r: Read, key: &[u8]) -> Plan<'_> {
    Plan::Read(AnyRead::Hash(r), vec![key])
}

/// A field's value as Redis shows it.
pub fn text(r: &Resolved<'_>) -> Vec<u8> {
    match r {
        Resolved::Bytes(b) | Resolved::NotANumber(b) => b.to_vec(),
        Resolved::Int(n) => n.to_string().into_bytes(),
        Resolved::Float(x) => float_text(*x).into_bytes(),
    }
}

pub fn plan<'a>(name: &str, rest: &[&'a [u8]]) -> Option<Result<Plan<'a>, String>> {
    let key = *rest.first()?;
    let args = &rest[1..];
    let owned = |v: &[&[u8]]| v.iter().map(|a| a.to_vec()).collect::<Vec<_>>();
    Some(Ok(match name {
        "hset" | "hmset" => {
            if args.is_empty() || args.len() % 2 != 0 {
                return Some(Err(format!(
                    "ERR wrong number of arguments for '{name}' command"
                )));
            }
            let pairs = args
                .chunks(2)
                .map(|p| (p[0].to_vec(), p[1].to_vec()))
                .collect();
            Plan::Write(Command::HSet(pairs))
        }
        "hdel" => Plan::Write(Command::HDel(owned(args))),
        "hincrby" => match int(args[1]) {
            Ok(by) => Plan::Write(Command::HIncrBy(args[0].to_vec(), by)),
            Err(e) => return Some(Err(e)),
        },
        "hincrbyfloat" => {
            let by = std::str::from_utf8(args[1])
                .ok()
                .and_then(|t| crate::core::crdt::command::parse_score(t.as_bytes()))
                .filter(|x| x.is_finite());
            match by {
                Some(by) => Plan::Write(Command::HIncrByFloat(args[0].to_vec(), by)),
                None => return Some(Err(NOT_A_FLOAT.into())),
            }
        }
        "hget" => read(Read::Get(args[0].to_vec()), key),
        "hmget" => read(Read::MGet(owned(args)), key),
        "hgetall" => read(Read::GetAll, key),
        "hlen" => read(Read::Len, key),
        "hexists" => read(Read::Exists(args[0].to_vec()), key),
        "hkeys" => read(Read::Keys, key),
        "hvals" => read(Read::Vals, key),
        "hstrlen" => read(Read::StrLen(args[0].to_vec()), key),
        "hrandfield" => match args {
            [] => read(Read::Rand(None), key),
            [n] | [n, _] => {
                let withvalues = match args.get(1) {
                    None => false,
                    Some(w) if w.eq_ignore_ascii_case(b"withvalues") => true,
                    Some(_) => return Some(Err(SYNTAX.into())),
                };
                match int(n) {
                    Ok(c) if c.unsigned_abs() > super::resp_collection::RANDOM_COUNT_MAX => {
                        return Some(Err("ERR value is out of range".into()))
                    }
                    Ok(c) => read(Read::Rand(Some((c, withvalues))), key),
                    Err(e) => return Some(Err(e)),
                }
            }
            _ => return Some(Err(SYNTAX.into())),
        },
        "hscan" => match scan_options(args[0], &args[1..], true) {
            Ok((pattern, novalues)) => read(Read::Scan(pattern, novalues), key),
            Err(e) => return Some(Err(e)),
        },
        _ => return None,
    }))
}

/// The reply of a hash read from the joined state (`None`: no such key).
pub fn encode(out: &mut Vec<u8>, r: &Read, state: Option<&Collection>, proto: u8, now_ms: u64) {
    let get = |f: &[u8]| {
        state
            .and_then(|s| s.get(Type::Hash, f, now_ms))
            .map(|v| text(&v))
    };
    let all = || {
        state.map_or_else(Vec::new, |s| {
            s.entries(Type::Hash, now_ms)
                .into_iter()
                .map(|(k, v)| (k.to_vec(), text(&v)))
                .collect::<Vec<_>>()
        })
    };
    match r {
        Read::Get(f) => match get(f) {
            Some(v) => resp::bulk(out, &v),
            None => resp::null(out, proto),
        },
        Read::MGet(fs) => {
            resp::array(out, fs.len());
            for f in fs {
                match get(f) {
                    Some(v) => resp::bulk(out, &v),
                    None => resp::null(out, proto),
                }
            }
        }
        Read::GetAll => {
            let all = all();
            resp::map(out, all.len(), proto);
            for (k, v) in all {
                resp::bulk(out, &k);
                resp::bulk(out, &v);
            }
        }
        Read::Len => resp::integer(out, state.map_or(0, |s| s.len(now_ms)) as i64),
        Read::Exists(f) => resp::integer(out, i64::from(get(f).is_some())),
        Read::Keys | Read::Vals => {
            let all = all();
            resp::array(out, all.len());
            for (k, v) in all {
                resp::bulk(out, if *r == Read::Keys { &k } else { &v });
            }
        }
        Read::StrLen(f) => resp::integer(out, get(f).map_or(0, |v| v.len()) as i64),
        Read::Rand(None) => {
            let all = all();
            match random_picks(all.len(), 1).first() {
                Some(&i) => resp::bulk(out, &all[i].0),
                None => resp::null(out, proto),
            }
        }
        Read::Rand(Some((count, withvalues))) => {
            let all = all();
            let picks = random_picks(all.len(), *count);
            if *withvalues && proto >= 3 {
                resp::array(out, picks.len());
                for i in picks {
                    resp::array(out, 2);
                    resp::bulk(out, &all[i].0);
                    resp::bulk(out, &all[i].1);
                }
                return;
            }
            resp::array(out, picks.len() * if *withvalues { 2 } else { 1 });
            for i in picks {
                resp::bulk(out, &all[i].0);
                if *withvalues {
                    resp::bulk(out, &all[i].1);
                }
            }
        }
        Read::Scan(pattern, novalues) => {
            let hits: Vec<_> = all()
                .into_iter()
                .filter(|(k, _)| matches(pattern, k))
                .collect();
            resp::array(out, 2);
            resp::bulk(out, b"0");
            resp::array(out, hits.len() * if *novalues { 1 } else { 2 });
            for (k, v) in hits {
                resp::bulk(out, &k);
                if !novalues {
                    resp::bulk(out, &v);
                }
            }
        }
    }
}
