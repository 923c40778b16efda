//! The collection commands that write (HSET, HDEL, HINCRBY, HINCRBYFLOAT, SADD, SREM, ZADD,
//! ZREM, ZINCRBY): what each does to a replica's state, its reply, and the delta to ship.
//!
//! Owns: running one command on the state a replica holds (`run`): the WRONGTYPE check, the
//! limits, the reply as Redis gives it, and the delta (`collection::Change`). Never reads a
//! clock or does I/O: the writer, the version and `now_ms` come in. Reads are not here: they
//! are answered from a joined state by the front (`server::front::resp_hash`, `resp_set`,
//! `resp_zset`).

use crate::core::consensus::change::{
    float_text, Reply, NAN_OR_INFINITY, NOT_AN_INTEGER, NOT_A_FLOAT, OVERFLOW, WRONGTYPE,
};
use crate::core::version::Version;

use super::collection::{Collection, CommandError, Type, COLLECTION_ELEMENTS_MAX};

/// A write to one collection.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// HSET field value …: how many fields were new.
    HSet(Vec<(Vec<u8>, Vec<u8>)>),
    /// HDEL field …: how many were removed.
    HDel(Vec<Vec<u8>>),
    /// HINCRBY field by: the new value.
    HIncrBy(Vec<u8>, i64),
    /// HINCRBYFLOAT field by: the new value's text.
    HIncrByFloat(Vec<u8>, f64),
    /// SADD member …: how many were new.
    SAdd(Vec<Vec<u8>>),
    /// SREM member …: how many were removed.
    SRem(Vec<Vec<u8>>),
    /// ZADD [CH] score member …: how many were new (`ch`: new or changed).
    ZAdd {
        ch: bool,
        pairs: Vec<(f64, Vec<u8>)>,
    },
    /// ZREM member …: how many were removed.
    ZRem(Vec<Vec<u8>>),
    /// ZINCRBY by member (ZADD INCR): the new score's text.
    ZIncrBy(Vec<u8>, f64),
}

/// `collection is full` as Redis-style error text.
pub const FULL: &str = "ERR collection is full (COLLECTION_ELEMENTS_MAX fields or members)";
/// ZINCRBY that would leave NaN (an infinity plus its opposite).
pub const NOT_A_SCORE: &str = "ERR resulting score is not a number (NaN)";
/// A stored hash value that HINCRBY cannot add to.
pub const HASH_NOT_AN_INTEGER: &str = "ERR hash value is not an integer";
/// A stored hash value that HINCRBYFLOAT cannot add to.
pub const HASH_NOT_A_FLOAT: &str = "ERR hash value is not a float";

impl Command {
    pub fn ty(&self) -> Type {
        match self {
            Command::HSet(_)
            | Command::HDel(_)
            | Command::HIncrBy(..)
            | Command::HIncrByFloat(..) => Type::Hash,
            Command::SAdd(_) | Command::SRem(_) => Type::Set,
            Command::ZAdd { .. } | Command::ZRem(_) | Command::ZIncrBy(..) => Type::Zset,
        }
    }

    /// Bytes of fields, members and values it carries (bounded by the frame's size).
    pub fn payload_bytes(&self) -> usize {
        match self {
            Command::HSet(p) => p.iter().map(|(f, v)| f.len() + v.len()).sum(),
            Command::HDel(m) | Command::SAdd(m) | Command::SRem(m) | Command::ZRem(m) => {
                m.iter().map(Vec::len).sum()
            }
            Command::HIncrBy(f, _) | Command::HIncrByFloat(f, _) | Command::ZIncrBy(f, _) => {
                f.len()
            }
            Command::ZAdd { pairs, .. } => pairs.iter().map(|(_, m)| m.len() + 8).sum(),
        }
    }
}

/// A sorted-set score as stored: the shortest text that reads back as the same `f64`.
pub fn score_text(x: f64) -> Vec<u8> {
    if x == f64::INFINITY {
        return b"inf".to_vec();
    }
    if x == f64::NEG_INFINITY {
        return b"-inf".to_vec();
    }
    format!("{x}").into_bytes()
}

fn error_of(e: CommandError, ty: Type) -> &'static str {
    match e {
        CommandError::NotAnInteger if ty == Type::Hash => HASH_NOT_AN_INTEGER,
        CommandError::NotAnInteger => NOT_AN_INTEGER,
        CommandError::NotAFloat if ty == Type::Hash => HASH_NOT_A_FLOAT,
        CommandError::NotAFloat => NOT_A_FLOAT,
        CommandError::Overflow => OVERFLOW,
        CommandError::NotFinite => NAN_OR_INFINITY,
        CommandError::Full => FULL,
        CommandError::NotAScore => NOT_A_SCORE,
    }
}

/// Run `cmd` on `state` (what this replica holds) as `writer` at `version`: the reply and,
/// when something changed, the delta to ship (already applied to `state`). A failing command
/// changes nothing.
pub fn run(
    cmd: &Command,
    state: &mut Collection,
    writer: u32,
    version: Version,
    now_ms: u64,
) -> (Reply, Option<Collection>) {
    let ty = cmd.ty();
    if state.kind(now_ms).is_some_and(|k| k != ty) {
        return (Reply::Error(WRONGTYPE), None);
    }
    // a command that adds past the bound is refused whole, before it changes anything
    let adding: Vec<&[u8]> = match cmd {
        Command::HSet(pairs) => pairs.iter().map(|(f, _)| &f[..]).collect(),
        Command::SAdd(m) => m.iter().map(|m| &m[..]).collect(),
        Command::ZAdd { pairs, .. } => pairs.iter().map(|(_, m)| &m[..]).collect(),
        Command::HIncrBy(f, _) | Command::HIncrByFloat(f, _) | Command::ZIncrBy(f, _) => {
            vec![&f[..]]
        }
        _ => Vec::new(),
    };
    let new: std::collections::BTreeSet<&[u8]> = adding
        .into_iter()
        .filter(|k| state.map.get(k).is_none())
        .collect();
    if state.map.len() + new.len() > COLLECTION_ELEMENTS_MAX {
        return (Reply::Error(FULL), None);
    }
    // (nothing is cloned to undo a failure: a command fails before its first change; what
    // `begin` did — an expiry folded, the epoch named — any write would do the same)
    let mut ch = state.begin(writer, version, now_ms);
    let result: Result<Reply, CommandError> = (|| {
        Ok(match cmd {
            Command::HSet(pairs) => {
                let mut new = 0;
                for (f, v) in pairs {
                    new += i64::from(!ch.put(state, ty, f, v, now_ms)?);
                }
                Reply::Int(new)
            }
            Command::SAdd(members) => {
                let mut new = 0;
                for m in members {
                    if state.get(ty, m, now_ms).is_none() {
                        ch.put(state, ty, m, b"", now_ms)?;
                        new += 1;
                    }
                }
                Reply::Int(new)
            }
            Command::HDel(keys) | Command::SRem(keys) | Command::ZRem(keys) => {
                let mut removed = 0;
                for k in keys {
                    if state.get(ty, k, now_ms).is_some() {
                        ch.remove(state, ty, k, now_ms);
                        removed += 1;
                    }
                }
                Reply::Int(removed)
            }
            Command::HIncrBy(f, by) => Reply::Int(ch.incr(state, ty, f, *by, now_ms)?),
            Command::HIncrByFloat(f, by) | Command::ZIncrBy(f, by) => {
                let x = ch.incr_float(state, ty, f, *by, now_ms)?;
                Reply::Text(if ty == Type::Zset {
                    score_text(x)
                } else {
                    float_text(x).into_bytes()
                })
            }
            Command::ZAdd { ch: changed, pairs } => {
                let mut count = 0;
                for (score, m) in pairs {
                    let old = state.get(ty, m, now_ms).map(|r| score_of(&r));
                    if old == Some(Some(*score)) {
                        continue;
                    }
                    ch.put(state, ty, m, &score_text(*score), now_ms)?;
                    count += i64::from(old.is_none() || *changed);
                }
                Reply::Int(count)
            }
        })
    })();
    match result {
        Ok(reply) => {
            let changed = ch.changed();
            (reply, changed.then_some(ch.delta))
        }
        Err(e) => (Reply::Error(error_of(e, ty)), None),
    }
}

/// A member's score from its resolved value (`None`: not a number, which only a bug stores).
pub fn score_of(r: &super::field::Resolved<'_>) -> Option<f64> {
    use super::field::Resolved;
    match r {
        Resolved::Int(n) => Some(*n as f64),
        Resolved::Float(x) => Some(*x),
        Resolved::Bytes(b) => parse_score(b),
        Resolved::NotANumber(_) => None,
    }
}

/// A score as Redis reads one: a float, `inf`, `+inf` or `-inf`; never NaN.
pub fn parse_score(b: &[u8]) -> Option<f64> {
    let t = std::str::from_utf8(b).ok()?;
    let x = match t.to_ascii_lowercase().as_str() {
        "inf" | "+inf" | "infinity" | "+infinity" => f64::INFINITY,
        "-inf" | "-infinity" => f64::NEG_INFINITY,
        _ => t.parse::<f64>().ok()?,
    };
    (!x.is_nan() && !t.is_empty() && !t.starts_with(char::is_whitespace)).then_some(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(hlc: u64) -> Version {
        Version { hlc, writer: 1 }
    }

    #[test]
    fn replies_as_redis_gives_them() {
        let mut s = Collection::default();
        let hset = Command::HSet(vec![
            (b"a".to_vec(), b"1".to_vec()),
            (b"b".to_vec(), b"x".to_vec()),
        ]);
        assert_eq!(run(&hset, &mut s, 1, v(1), 0).0, Reply::Int(2));
        assert_eq!(run(&hset, &mut s, 1, v(2), 0).0, Reply::Int(0));
        assert_eq!(
            run(&Command::HIncrBy(b"a".to_vec(), 5), &mut s, 1, v(3), 0).0,
            Reply::Int(6)
        );
        assert_eq!(
            run(&Command::HIncrBy(b"b".to_vec(), 5), &mut s, 1, v(4), 0),
            (Reply::Error(HASH_NOT_AN_INTEGER), None)
        );
        assert_eq!(
            run(
                &Command::HIncrByFloat(b"a".to_vec(), 0.5),
                &mut s,
                1,
                v(5),
                0
            )
            .0,
            Reply::Text(b"6.5".to_vec())
        );
        assert_eq!(
            run(
                &Command::HDel(vec![b"a".to_vec(), b"zz".to_vec()]),
                &mut s,
                1,
                v(6),
                0
            )
            .0,
            Reply::Int(1)
        );
        // a set command on a hash: WRONGTYPE, nothing changed
        assert_eq!(
            run(&Command::SAdd(vec![b"m".to_vec()]), &mut s, 1, v(7), 0),
            (Reply::Error(WRONGTYPE), None)
        );
        let mut z = Collection::default();
        let zadd = Command::ZAdd {
            ch: false,
            pairs: vec![(1.0, b"m".to_vec()), (2.5, b"n".to_vec())],
        };
        assert_eq!(run(&zadd, &mut z, 1, v(8), 0).0, Reply::Int(2));
        let again = Command::ZAdd {
            ch: true,
            pairs: vec![(1.0, b"m".to_vec()), (3.0, b"n".to_vec())],
        };
        assert_eq!(run(&again, &mut z, 1, v(9), 0).0, Reply::Int(1));
        assert_eq!(
            run(&Command::ZIncrBy(b"m".to_vec(), 2.0), &mut z, 1, v(10), 0).0,
            Reply::Text(b"3".to_vec())
        );
        // nothing to remove: no delta to ship
        assert_eq!(
            run(&Command::ZRem(vec![b"none".to_vec()]), &mut z, 1, v(11), 0),
            (Reply::Int(0), None)
        );
    }

    #[test]
    fn overflow_and_not_finite_change_nothing() {
        let mut s = Collection::default();
        run(
            &Command::HIncrBy(b"n".to_vec(), i64::MAX),
            &mut s,
            1,
            v(1),
            0,
        );
        let before = s.clone();
        assert_eq!(
            run(&Command::HIncrBy(b"n".to_vec(), 1), &mut s, 1, v(2), 0),
            (Reply::Error(OVERFLOW), None)
        );
        assert_eq!(s.map, before.map, "no element changed");
        assert_eq!(
            run(
                &Command::HIncrByFloat(b"f".to_vec(), f64::MAX),
                &mut s,
                1,
                v(3),
                0
            )
            .0,
            Reply::Text(float_text(f64::MAX).into_bytes())
        );
        assert_eq!(
            run(
                &Command::HIncrByFloat(b"f".to_vec(), f64::MAX),
                &mut s,
                1,
                v(4),
                0
            )
            .0,
            Reply::Error(NAN_OR_INFINITY)
        );
    }

    #[test]
    fn a_command_past_the_element_bound_is_refused_whole() {
        let mut s = Collection::default();
        let fill: Vec<Vec<u8>> = (0..COLLECTION_ELEMENTS_MAX as u32 - 1)
            .map(|i| i.to_le_bytes().to_vec())
            .collect();
        assert_eq!(
            run(&Command::SAdd(fill), &mut s, 1, v(1), 0).0,
            Reply::Int(COLLECTION_ELEMENTS_MAX as i64 - 1)
        );
        // at the bound: one more fits; past it: refused, nothing added
        let two = Command::SAdd(vec![b"x".to_vec(), b"y".to_vec()]);
        assert_eq!(run(&two, &mut s, 1, v(2), 0), (Reply::Error(FULL), None));
        assert_eq!(s.len(0), COLLECTION_ELEMENTS_MAX - 1);
        let one = Command::SAdd(vec![b"x".to_vec()]);
        assert_eq!(run(&one, &mut s, 1, v(3), 0).0, Reply::Int(1));
        assert_eq!(
            run(&one, &mut s, 1, v(4), 0).0,
            Reply::Int(0),
            "present: no new"
        );
        let y = Command::SAdd(vec![b"y".to_vec()]);
        assert_eq!(run(&y, &mut s, 1, v(5), 0), (Reply::Error(FULL), None));
    }

    #[test]
    fn scores_parse_as_redis_reads_them() {
        assert_eq!(parse_score(b"1.5"), Some(1.5));
        assert_eq!(parse_score(b"+inf"), Some(f64::INFINITY));
        assert_eq!(parse_score(b"-inf"), Some(f64::NEG_INFINITY));
        assert_eq!(parse_score(b"nan"), None);
        assert_eq!(parse_score(b""), None);
        assert_eq!(parse_score(b"x"), None);
        assert_eq!(score_text(3.0), b"3".to_vec());
        assert_eq!(score_text(f64::INFINITY), b"inf".to_vec());
    }
}
