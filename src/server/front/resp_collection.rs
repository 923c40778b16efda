//! What the collection families (`resp_hash`, `resp_set`, `resp_zset`) share: a command is
//! either a write (one native COLLECTION request, run on a replica and shipped as a delta) or
//! a read (a GET of each key it names, the replicas' states joined by the quorum read), and
//! how both replies are built.
//!
//! Owns: the plan of a collection command and the WRONGTYPE rule of its reads (a key holding
//! a string, a list or another collection). Never: parses a family's arguments or formats
//! its reads (the family files do), or touches storage.

use crate::core::cell::{self, Kind};
use crate::core::consensus::change::{Reply, WRONGTYPE};
use crate::core::crdt::collection::{Collection, Type};
use crate::core::crdt::command::Command;
use crate::server::data::messages::OpResult;
use crate::server::front::{resp_hash as hash, resp_set as set, resp_zset as zset};
use crate::wire::consensus::{decode_reply, Decoded};
use crate::wire::resp;

pub const SYNTAX: &str = "ERR syntax error";
pub const NOT_AN_INTEGER: &str = "ERR value is not an integer or out of range";
pub const NOT_A_FLOAT: &str = "ERR value is not a valid float";

/// A read of one family.
#[derive(Clone, Debug, PartialEq)]
pub enum Read {
    Hash(hash::Read),
    Set(set::Read),
    Zset(zset::Read),
}

impl Read {
    /// The fields or members a read needs alone (HGET, HMGET, HEXISTS, HSTRLEN, SISMEMBER,
    /// SMISMEMBER, ZSCORE, ZMSCORE): the replicas answer only those (`None`: it needs the
    /// whole collection).
    pub fn fields(&self) -> Option<Vec<&[u8]>> {
        match self {
            Read::Hash(hash::Read::Get(f) | hash::Read::Exists(f) | hash::Read::StrLen(f))
            | Read::Set(set::Read::IsMember(f))
            | Read::Zset(zset::Read::Score(f)) => Some(vec![&f[..]]),
            Read::Hash(hash::Read::MGet(fs))
            | Read::Set(set::Read::MIsMember(fs))
            | Read::Zset(zset::Read::MScore(fs)) => Some(fs.iter().map(|f| &f[..]).collect()),
            _ => None,
        }
    }
}

/// What a collection command becomes: a write of its first key, or a read of these keys.
#[derive(Clone, Debug, PartialEq)]
pub enum Plan<'a> {
    Write(Command),
    Read(Read, Vec<&'a [u8]>),
}

/// The plan of `name` (lower-case) with `rest` (its arguments, the key first); `None`: not a
/// collection command.
pub fn plan<'a>(name: &str, rest: &[&'a [u8]]) -> Option<Result<Plan<'a>, String>> {
    hash::plan(name, rest)
        .or_else(|| set::plan(name, rest))
        .or_else(|| zset::plan(name, rest))
}

/// Redis's OBJECT ENCODING for a collection of `ty`.
pub fn encoding(ty: Type) -> &'static str {
    match ty {
        Type::Hash | Type::Set => "hashtable",
        Type::Zset => "skiplist",
    }
}

/// The reply of a write (its answer: `wire::consensus`'s reply).
pub fn encode_write(out: &mut Vec<u8>, result: Option<&OpResult>, proto: u8) {
    let answer = match result {
        Some(OpResult::Value { value, .. }) => decode_reply(value),
        _ => None,
    };
    match answer {
        Some(Decoded::Reply(Reply::Int(n))) => resp::integer(out, n),
        Some(Decoded::Reply(Reply::Text(t))) => resp::bulk(out, &t),
        Some(Decoded::Reply(Reply::Done(_))) => resp::simple(out, "OK"),
        Some(Decoded::Reply(Reply::Error(e))) => resp::error(out, e),
        Some(Decoded::Error(e)) => resp::error(out, &e),
        _ => {
            let _ = proto;
            resp::error(out, "ERR malformed collection reply")
        }
    }
}

/// The state a read found at one key: `Ok(None)` when it holds nothing live, `Err` with the
/// error to answer when it holds another kind.
pub fn state_of(r: &OpResult, ty: Type, now_ms: u64) -> Result<Option<Collection>, String> {
    let OpResult::Value { value, version } = r else {
        return Ok(None);
    };
    let c = cell::decode(value).map_err(|e| format!("ERR {e}"))?;
    if c.expired(now_ms) {
        return Ok(None);
    }
    if c.kind != Kind::Collection {
        return Err(WRONGTYPE.into());
    }
    let state = Collection::of_cell(&c, *version).map_err(|e| format!("ERR {e}"))?;
    match state.kind(now_ms) {
        None => Ok(None),
        Some(k) if k == ty => Ok(Some(state)),
        Some(_) => Err(WRONGTYPE.into()),
    }
}

/// The reply of a read from its results (one per key, in order).
pub fn encode_read(out: &mut Vec<u8>, read: &Read, results: &[OpResult], proto: u8, now_ms: u64) {
    let ty = match read {
        Read::Hash(_) => Type::Hash,
        Read::Set(_) => Type::Set,
        Read::Zset(_) => Type::Zset,
    };
    let mut states = Vec::with_capacity(results.len());
    for r in results {
        match state_of(r, ty, now_ms) {
            Ok(s) => states.push(s),
            Err(e) => return resp::error(out, &e),
        }
    }
    match read {
        Read::Hash(r) => hash::encode(
            out,
            r,
            states.first().and_then(Option::as_ref),
            proto,
            now_ms,
        ),
        Read::Set(r) => set::encode(out, r, &states, proto, now_ms),
        Read::Zset(r) => zset::encode(
            out,
            r,
            states.first().and_then(Option::as_ref),
            proto,
            now_ms,
        ),
    }
}

/// Parse a count or index argument.
pub fn int(a: &[u8]) -> Result<i64, String> {
    crate::core::consensus::change::parse_i64(a).ok_or_else(|| NOT_AN_INTEGER.to_string())
}

/// SCAN-style options after the cursor: MATCH pattern, COUNT n (checked, then unused: one
/// page holds everything), and NOVALUES where `novalues_ok`. Returns the pattern and NOVALUES.
pub fn scan_options(
    cursor: &[u8],
    opts: &[&[u8]],
    novalues_ok: bool,
) -> Result<(Option<Vec<u8>>, bool), String> {
    std::str::from_utf8(cursor)
        .ok()
        .and_then(|c| c.parse::<u64>().ok())
        .ok_or("ERR invalid cursor")?;
    let (mut pattern, mut novalues, mut rest) = (None, false, opts);
    while let [opt, tail @ ..] = rest {
        if opt.eq_ignore_ascii_case(b"match") && !tail.is_empty() {
            pattern = Some(tail[0].to_vec());
            rest = &tail[1..];
        } else if opt.eq_ignore_ascii_case(b"count") && !tail.is_empty() {
            if int(tail[0])? < 1 {
                return Err(SYNTAX.into());
            }
            rest = &tail[1..];
        } else if novalues_ok && opt.eq_ignore_ascii_case(b"novalues") {
            novalues = true;
            rest = tail;
        } else {
            return Err(SYNTAX.into());
        }
    }
    Ok((pattern, novalues))
}

/// Whether `key` passes an optional MATCH pattern.
pub fn matches(pattern: &Option<Vec<u8>>, key: &[u8]) -> bool {
    pattern
        .as_deref()
        .is_none_or(|p| crate::server::data::scan::glob_match(p, key))
}

/// Indices for a random pick of `count` (Redis's HRANDFIELD/SRANDMEMBER rule): positive,
/// distinct and at most `len`; negative, exactly `-count` and repeats allowed.
pub fn random_picks(len: usize, count: i64) -> Vec<usize> {
    if len == 0 {
        return Vec::new();
    }
    if count >= 0 {
        let mut all: Vec<usize> = (0..len).collect();
        fastrand::shuffle(&mut all);
        all.truncate(count as usize);
        all
    } else {
        (0..count.unsigned_abs())
            .map(|_| fastrand::usize(..len))
            .collect()
    }
}

/// A random count's bound: Redis refuses one whose magnitude would overflow a reply.
pub const RANDOM_COUNT_MAX: u64 = i64::MAX as u64 / 2;
