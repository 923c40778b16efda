//! The commands a consensus round runs, each a function of the value the round read: the new
//! value it accepts, and the reply. Pure, deterministic: every proposer that runs a command on
//! the same value gets the same result, so a value accepted by a quorum is the command's
//! effect exactly once.

use super::Value;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// A linearizable read: the value, unchanged.
    Get,
    /// SET: stores the value (`get`: replies the old one, SET … GET and GETSET).
    Set { value: Vec<u8>, get: bool },
    /// SET NX / SETNX: stores the value only if the key is absent.
    SetNx(Vec<u8>),
    /// INCRBY (INCR, DECR, DECRBY): the 64-bit integer stored plus `by`.
    Incr(i64),
    /// APPEND: the new length.
    Append(Vec<u8>),
    /// SET … IFEQ: stores `value` only if the stored value equals `expect`.
    SetIfEq { expect: Vec<u8>, value: Vec<u8> },
    /// DELIFEQ: deletes only if the stored value equals `expect` (a lock's release).
    DelIfEq(Vec<u8>),
    /// GETDEL: the value, and the key deleted.
    GetDel,
}

/// A command's reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Value(Value),
    Int(i64),
    /// Whether a conditional write happened.
    Done(bool),
    /// Refused (the value is unchanged): Redis's error text.
    Error(&'static str),
}

pub const NOT_AN_INTEGER: &str = "ERR value is not an integer or out of range";
pub const OVERFLOW: &str = "ERR increment or decrement would overflow";

impl Change {
    /// What the command makes of `current`: the value to accept, and the reply.
    pub fn apply(&self, current: &Value) -> (Value, Reply) {
        let keep = || current.clone();
        match self {
            Change::Get => (keep(), Reply::Value(keep())),
            Change::Set { value, get } => (
                Some(value.clone()),
                if *get {
                    Reply::Value(keep())
                } else {
                    Reply::Done(true)
                },
            ),
            Change::SetNx(v) => match current {
                None => (Some(v.clone()), Reply::Done(true)),
                Some(_) => (keep(), Reply::Done(false)),
            },
            Change::Incr(by) => {
                let n = match current {
                    None => Some(0),
                    Some(b) => std::str::from_utf8(b)
                        .ok()
                        .filter(|s| s.len() <= 20)
                        .and_then(|s| s.parse::<i64>().ok()),
                };
                match n.map(|n| n.checked_add(*by)) {
                    None => (keep(), Reply::Error(NOT_AN_INTEGER)),
                    Some(None) => (keep(), Reply::Error(OVERFLOW)),
                    Some(Some(n)) => (Some(n.to_string().into_bytes()), Reply::Int(n)),
                }
            }
            Change::Append(tail) => {
                let mut v = current.clone().unwrap_or_default();
                v.extend_from_slice(tail);
                let len = v.len() as i64;
                (Some(v), Reply::Int(len))
            }
            Change::SetIfEq { expect, value } => match current {
                Some(c) if c == expect => (Some(value.clone()), Reply::Done(true)),
                _ => (keep(), Reply::Done(false)),
            },
            Change::DelIfEq(expect) => match current {
                Some(c) if c == expect => (None, Reply::Int(1)),
                _ => (keep(), Reply::Int(0)),
            },
            Change::GetDel => (None, Reply::Value(keep())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Value {
        Some(s.as_bytes().to_vec())
    }

    #[test]
    fn commands_as_redis_answers_them() {
        assert_eq!(Change::Incr(1).apply(&None), (v("1"), Reply::Int(1)));
        assert_eq!(Change::Incr(-5).apply(&v("3")), (v("-2"), Reply::Int(-2)));
        assert_eq!(
            Change::Incr(1).apply(&v("x")),
            (v("x"), Reply::Error(NOT_AN_INTEGER))
        );
        let max = v(&i64::MAX.to_string());
        assert_eq!(
            Change::Incr(1).apply(&max),
            (max.clone(), Reply::Error(OVERFLOW))
        );
        assert_eq!(
            Change::Incr(0).apply(&max),
            (max.clone(), Reply::Int(i64::MAX))
        );
        assert_eq!(
            Change::SetNx(b"a".to_vec()).apply(&None),
            (v("a"), Reply::Done(true))
        );
        assert_eq!(
            Change::SetNx(b"a".to_vec()).apply(&v("b")),
            (v("b"), Reply::Done(false))
        );
        assert_eq!(
            Change::Append(b"cd".to_vec()).apply(&v("ab")),
            (v("abcd"), Reply::Int(4))
        );
        let cas = Change::SetIfEq {
            expect: b"t1".to_vec(),
            value: b"t2".to_vec(),
        };
        assert_eq!(cas.apply(&v("t1")), (v("t2"), Reply::Done(true)));
        assert_eq!(cas.apply(&v("t3")), (v("t3"), Reply::Done(false)));
        assert_eq!(
            Change::DelIfEq(b"t".to_vec()).apply(&v("t")),
            (None, Reply::Int(1))
        );
        assert_eq!(
            Change::DelIfEq(b"t".to_vec()).apply(&v("u")),
            (v("u"), Reply::Int(0))
        );
        assert_eq!(Change::GetDel.apply(&v("x")), (None, Reply::Value(v("x"))));
        let set = Change::Set {
            value: b"n".to_vec(),
            get: true,
        };
        assert_eq!(set.apply(&v("o")), (v("n"), Reply::Value(v("o"))));
    }
}
