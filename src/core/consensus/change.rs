//! The commands a consensus round runs, each a function of the value the round read: the new
//! value it accepts, and the reply. Pure, deterministic: every proposer that runs a command on
//! the same value gets the same result, so a value accepted by a quorum is the command's
//! effect exactly once.

use super::Value;

/// SET's condition (NX, XX, IFEQ, IFNE), and DELEX's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cond {
    Always,
    /// Only if the key is absent.
    Nx,
    /// Only if the key is present.
    Xx,
    /// Only if the stored value equals this one (absent never does).
    IfEq(Vec<u8>),
    /// Only if the stored value differs from this one (absent always does).
    IfNe(Vec<u8>),
}

impl Cond {
    pub fn holds(&self, current: &Value) -> bool {
        match (self, current) {
            (Cond::Always, _) => true,
            (Cond::Nx, c) => c.is_none(),
            (Cond::Xx, c) => c.is_some(),
            (Cond::IfEq(e), Some(c)) => c == e,
            (Cond::IfEq(_), None) => false,
            (Cond::IfNe(e), Some(c)) => c != e,
            (Cond::IfNe(_), None) => true,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// A linearizable read: the value, unchanged.
    Get,
    /// SET (SETNX, GETSET, SET … NX/XX/IFEQ/IFNE): stores the value if `cond` holds. `get`:
    /// replies the old value (whether or not it stored), else whether it stored.
    Set {
        value: Vec<u8>,
        cond: Cond,
        get: bool,
    },
    /// INCRBY (INCR, DECR, DECRBY): the 64-bit integer stored plus `by`.
    Incr(i64),
    /// INCRBYFLOAT: the number stored plus this one (its text, already checked to parse).
    IncrFloat(Vec<u8>),
    /// APPEND: the new length.
    Append(Vec<u8>),
    /// SETRANGE: overwrite from `offset` (zero-padded), the new length.
    SetRange { offset: usize, bytes: Vec<u8> },
    /// DEL with a condition (DELIFEQ, DELEX … IFEQ/IFNE): 1 if it deleted.
    Del(Cond),
    /// GETDEL: the value, and the key deleted.
    GetDel,
}

/// A command's reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Value(Value),
    Int(i64),
    /// INCRBYFLOAT's: the new value's text.
    Text(Vec<u8>),
    /// Whether a conditional write happened.
    Done(bool),
    /// Refused (the value is unchanged): Redis's error text.
    Error(&'static str),
}

pub const NOT_AN_INTEGER: &str = "ERR value is not an integer or out of range";
pub const NOT_A_FLOAT: &str = "ERR value is not a valid float";
pub const OVERFLOW: &str = "ERR increment or decrement would overflow";
pub const NAN_OR_INFINITY: &str = "ERR increment would produce NaN or Infinity";

/// An integer as Redis reads one (`string2ll`): its canonical decimal form only, no sign
/// `+`, spaces or leading zeros.
pub fn parse_i64(b: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(b).ok().filter(|s| s.len() <= 20)?;
    let n = s.parse::<i64>().ok()?;
    (n.to_string() == s).then_some(n)
}

/// A float as Redis reads one for INCRBYFLOAT: no spaces, not NaN.
pub fn parse_f64(b: &[u8]) -> Option<f64> {
    let s = std::str::from_utf8(b).ok()?;
    if s.is_empty() || s.len() > 64 || s.trim() != s {
        return None;
    }
    s.parse::<f64>().ok().filter(|f| !f.is_nan())
}

/// A float as INCRBYFLOAT answers it: at most 15 significant digits (Redis computes in long
/// double and prints 17, so 0.1 + 0.2 reads 0.3 there; in f64 that takes rounding to 15), no
/// exponent for ordinary magnitudes, no trailing zeros.
pub fn float_text(f: f64) -> String {
    let rounded: f64 = format!("{f:.14e}").parse().unwrap_or(f);
    format!("{rounded}")
}

impl Change {
    /// What the command makes of `current`: the value to store (`None`: nothing changes), and
    /// the reply.
    pub fn apply(&self, current: &Value) -> (Option<Value>, Reply) {
        let old = || Reply::Value(current.clone());
        match self {
            Change::Get => (None, old()),
            Change::Set { value, cond, get } => {
                let holds = cond.holds(current);
                let reply = if *get { old() } else { Reply::Done(holds) };
                (holds.then(|| Some(value.clone())), reply)
            }
            Change::Incr(by) => {
                let n = match current {
                    None => Some(0),
                    Some(b) => parse_i64(b),
                };
                match n.map(|n| n.checked_add(*by)) {
                    None => (None, Reply::Error(NOT_AN_INTEGER)),
                    Some(None) => (None, Reply::Error(OVERFLOW)),
                    Some(Some(n)) => (Some(Some(n.to_string().into_bytes())), Reply::Int(n)),
                }
            }
            Change::IncrFloat(by) => {
                let n = match current {
                    None => Some(0.0),
                    Some(b) => parse_f64(b),
                };
                let (Some(n), Some(by)) = (n, parse_f64(by)) else {
                    return (None, Reply::Error(NOT_A_FLOAT));
                };
                let sum = n + by;
                if !sum.is_finite() {
                    return (None, Reply::Error(NAN_OR_INFINITY));
                }
                let text = float_text(sum).into_bytes();
                (Some(Some(text.clone())), Reply::Text(text))
            }
            Change::Append(tail) => {
                let mut v = current.clone().unwrap_or_default();
                v.extend_from_slice(tail);
                let len = v.len() as i64;
                (Some(Some(v)), Reply::Int(len))
            }
            Change::SetRange { offset, bytes } => {
                let mut v = current.clone().unwrap_or_default();
                if bytes.is_empty() {
                    // Redis: an empty patch changes nothing (a missing key stays missing)
                    return (None, Reply::Int(v.len() as i64));
                }
                let end = offset + bytes.len();
                if v.len() < end {
                    v.resize(end, 0);
                }
                v[*offset..end].copy_from_slice(bytes);
                let len = v.len() as i64;
                (Some(Some(v)), Reply::Int(len))
            }
            Change::Del(cond) => match current {
                Some(_) if cond.holds(current) => (Some(None), Reply::Int(1)),
                _ => (None, Reply::Int(0)),
            },
            Change::GetDel => (current.is_some().then_some(None), old()),
        }
    }

    /// Whether a write keeps the stored expiry (INCR, APPEND, SETRANGE do, as in Redis).
    pub fn keeps_expiry(&self) -> bool {
        matches!(
            self,
            Change::Incr(_) | Change::IncrFloat(_) | Change::Append(_) | Change::SetRange { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Value {
        Some(s.as_bytes().to_vec())
    }

    fn set(value: &str, cond: Cond, get: bool) -> Change {
        Change::Set {
            value: value.as_bytes().to_vec(),
            cond,
            get,
        }
    }

    #[test]
    fn commands_as_redis_answers_them() {
        assert_eq!(Change::Incr(1).apply(&None), (Some(v("1")), Reply::Int(1)));
        assert_eq!(
            Change::Incr(-5).apply(&v("3")),
            (Some(v("-2")), Reply::Int(-2))
        );
        for bad in ["x", "01", "+1", " 1", "1 ", ""] {
            assert_eq!(
                Change::Incr(1).apply(&v(bad)),
                (None, Reply::Error(NOT_AN_INTEGER)),
                "{bad:?}"
            );
        }
        let max = v(&i64::MAX.to_string());
        assert_eq!(Change::Incr(1).apply(&max), (None, Reply::Error(OVERFLOW)));
        assert_eq!(
            Change::Incr(0).apply(&max),
            (Some(max.clone()), Reply::Int(i64::MAX))
        );
        let f = |s: &str| Change::IncrFloat(s.as_bytes().to_vec());
        assert_eq!(
            f("0.1").apply(&v("10.5")),
            (Some(v("10.6")), Reply::Text(b"10.6".to_vec()))
        );
        assert_eq!(
            f("5.0e3").apply(&v("3")),
            (Some(v("5003")), Reply::Text(b"5003".to_vec()))
        );
        assert_eq!(f("1").apply(&v("x")), (None, Reply::Error(NOT_A_FLOAT)));
        assert_eq!(
            f("0.2").apply(&v("0.1")),
            (Some(v("0.3")), Reply::Text(b"0.3".to_vec()))
        );
        assert_eq!(
            f("1e308").apply(&v("1e308")),
            (None, Reply::Error(NAN_OR_INFINITY))
        );
        assert_eq!(
            set("a", Cond::Nx, false).apply(&None),
            (Some(v("a")), Reply::Done(true))
        );
        assert_eq!(
            set("a", Cond::Nx, false).apply(&v("b")),
            (None, Reply::Done(false))
        );
        assert_eq!(
            set("a", Cond::Xx, false).apply(&None),
            (None, Reply::Done(false))
        );
        assert_eq!(
            set("a", Cond::Nx, true).apply(&v("b")),
            (None, Reply::Value(v("b"))),
            "SET NX GET replies the old value and stores nothing"
        );
        assert_eq!(
            Change::Append(b"cd".to_vec()).apply(&v("ab")),
            (Some(v("abcd")), Reply::Int(4))
        );
        let cas = set("t2", Cond::IfEq(b"t1".to_vec()), false);
        assert_eq!(cas.apply(&v("t1")), (Some(v("t2")), Reply::Done(true)));
        assert_eq!(cas.apply(&v("t3")), (None, Reply::Done(false)));
        assert_eq!(cas.apply(&None), (None, Reply::Done(false)));
        let ne = set("t2", Cond::IfNe(b"t1".to_vec()), false);
        assert_eq!(ne.apply(&None), (Some(v("t2")), Reply::Done(true)));
        assert_eq!(ne.apply(&v("t1")), (None, Reply::Done(false)));
        let del = Change::Del(Cond::IfEq(b"t".to_vec()));
        assert_eq!(del.apply(&v("t")), (Some(None), Reply::Int(1)));
        assert_eq!(del.apply(&v("u")), (None, Reply::Int(0)));
        assert_eq!(del.apply(&None), (None, Reply::Int(0)));
        assert_eq!(
            Change::Del(Cond::IfNe(b"t".to_vec())).apply(&None),
            (None, Reply::Int(0)),
            "nothing to delete"
        );
        assert_eq!(
            Change::GetDel.apply(&v("x")),
            (Some(None), Reply::Value(v("x")))
        );
        assert_eq!(Change::GetDel.apply(&None), (None, Reply::Value(None)));
        assert_eq!(
            set("n", Cond::Always, true).apply(&v("o")),
            (Some(v("n")), Reply::Value(v("o")))
        );
        let range = |offset: usize, b: &str| Change::SetRange {
            offset,
            bytes: b.as_bytes().to_vec(),
        };
        assert_eq!(
            range(6, "Redis").apply(&v("Hello World")),
            (Some(v("Hello Redis")), Reply::Int(11))
        );
        assert_eq!(
            range(2, "x").apply(&None),
            (Some(Some(b"\0\0x".to_vec())), Reply::Int(3))
        );
        assert_eq!(range(5, "").apply(&None), (None, Reply::Int(0)));
    }
}
