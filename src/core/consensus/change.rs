//! The commands a consensus round runs, each a function of the value the round read: the new
//! value it accepts, and the reply. Pure, deterministic: every proposer that runs a command on
//! the same value gets the same result, so a value accepted by a quorum is the command's
//! effect exactly once.

use std::collections::VecDeque;

use super::{Data, Value};

/// SET's condition (NX, XX, IFEQ, IFNE), and DELEX's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cond {
    Always,
    /// Only if the key is absent.
    Nx,
    /// Only if the key is present.
    Xx,
    /// Only if the stored string equals this one (absent never does).
    IfEq(Vec<u8>),
    /// Only if the stored string differs from this one (absent always does).
    IfNe(Vec<u8>),
}

impl Cond {
    /// Whether it holds for `current` (a string, or nothing), or WRONGTYPE.
    fn holds(&self, current: &Value) -> Result<bool, Reply> {
        let s = string(current);
        Ok(match (self, s) {
            (Cond::Always, _) => true,
            (Cond::Nx, _) => current.is_none(),
            (Cond::Xx, _) => current.is_some(),
            (Cond::IfEq(_) | Cond::IfNe(_), Err(e)) => return Err(e),
            (Cond::IfEq(e), Ok(Some(c))) => c == e,
            (Cond::IfEq(_), Ok(None)) => false,
            (Cond::IfNe(e), Ok(Some(c))) => c != e,
            (Cond::IfNe(_), Ok(None)) => true,
        })
    }
}

/// EXPIRE's condition on the key's current expiry (NX, XX, GT, LT). No expiry counts as an
/// infinite one: GT never sets one on such a key, LT always does (Redis's rule).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpiryCond {
    Always,
    /// Only if the key has no expiry.
    Nx,
    /// Only if it has one.
    Xx,
    /// Only if the new instant is later than the current one.
    Gt,
    /// Only if it is earlier.
    Lt,
    /// Only if the key has an expiry and the new instant is earlier (XX LT).
    XxLt,
}

impl ExpiryCond {
    /// Every condition, once (the wire names each by its index here).
    pub const ALL: [ExpiryCond; 6] = [
        ExpiryCond::Always,
        ExpiryCond::Nx,
        ExpiryCond::Xx,
        ExpiryCond::Gt,
        ExpiryCond::Lt,
        ExpiryCond::XxLt,
    ];

    /// Whether it lets `new` (`None`: no expiry) replace `current`.
    pub fn holds(self, current: Option<u64>, new: Option<u64>) -> bool {
        let forever = u64::MAX;
        let (cur, new) = (current.unwrap_or(forever), new.unwrap_or(forever));
        match self {
            ExpiryCond::Always => true,
            ExpiryCond::Nx => current.is_none(),
            ExpiryCond::Xx => current.is_some(),
            ExpiryCond::Gt => new > cur,
            ExpiryCond::Lt => new < cur,
            ExpiryCond::XxLt => current.is_some() && new < cur,
        }
    }
}

/// A list end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    Left,
    Right,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// A linearizable read of a string: the value, unchanged.
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
    /// LPUSH, RPUSH (`only_existing`: LPUSHX, RPUSHX): the new length.
    Push {
        end: End,
        items: Vec<Vec<u8>>,
        only_existing: bool,
    },
    /// LPOP, RPOP: one element (`count: None`) or up to `count`, taken exactly once.
    Pop { end: End, count: Option<usize> },
    /// LRANGE start stop (Redis's inclusive, negative-from-the-end indices).
    Range { start: i64, stop: i64 },
    /// LLEN.
    Len,
    /// LINDEX.
    Index(i64),
    /// LSET.
    SetIndex { index: i64, item: Vec<u8> },
    /// LREM count element: removed how many.
    Remove { count: i64, item: Vec<u8> },
    /// LTRIM start stop.
    Trim { start: i64, stop: i64 },
    /// LINSERT BEFORE|AFTER pivot element.
    Insert {
        before: bool,
        pivot: Vec<u8>,
        item: Vec<u8>,
    },
    /// LPOS element [RANK r] [COUNT c] [MAXLEN m] (`count: None`: the first match alone).
    Pos {
        item: Vec<u8>,
        rank: i64,
        count: Option<usize>,
        maxlen: usize,
    },
    /// LMOVE (RPOPLPUSH) within one key: pop at `from`, push at `to`; the element moved.
    Move { from: End, to: End },
    /// EXPIRE, PEXPIRE, EXPIREAT, PEXPIREAT (`at`), PERSIST (`at: None`, `cond: Xx`), GETEX
    /// with an option (`get`): sets a live key's expiry if `cond` holds, an instant already
    /// past deleting the key. The reply is 1 if it did, 0 if not (the key missing or the
    /// condition false); with `get`, the value. It needs the stored expiry, so a round runs it
    /// through `command::Command::run`, not `apply`; a hash, set or sorted set answers
    /// `ON_A_COLLECTION` and its own path (`server::data::update`) takes it.
    Expiry {
        at: Option<u64>,
        cond: ExpiryCond,
        get: bool,
    },
}

/// A command's reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Value(Option<Vec<u8>>),
    Int(i64),
    /// INCRBYFLOAT's: the new value's text.
    Text(Vec<u8>),
    /// Whether a conditional write happened (LSET, LTRIM: `+OK`).
    Done(bool),
    /// Elements (`None`: a nil array, as LPOP with a count on a missing key).
    Array(Option<Vec<Vec<u8>>>),
    /// LPOS with COUNT: the positions.
    Ints(Vec<i64>),
    /// Refused (the value is unchanged): Redis's error text.
    Error(&'static str),
}

pub const NOT_AN_INTEGER: &str = "ERR value is not an integer or out of range";
pub const NOT_A_FLOAT: &str = "ERR value is not a valid float";
pub const OVERFLOW: &str = "ERR increment or decrement would overflow";
pub const NAN_OR_INFINITY: &str = "ERR increment would produce NaN or Infinity";
pub const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";
pub const TOO_LARGE: &str = "ERR string exceeds maximum allowed size (proto-max-bulk-len)";
pub const NO_SUCH_KEY: &str = "ERR no such key";
pub const INDEX_OUT_OF_RANGE: &str = "ERR index out of range";
/// An expiry change met a hash, set or sorted set: nothing was changed, and the caller runs it
/// on the collection's own convergent path.
pub const ON_A_COLLECTION: &str =
    "ERR an expiry change on a collection takes the collection's path";
/// `Change::apply` met an expiry change, which needs the whole entry (`Command::run` runs it).
const EXPIRY_NEEDS_THE_ENTRY: &str = "ERR internal: an expiry change runs on the whole entry";

/// The largest value a command may leave (the ceiling of `--max-value-bytes`).
const STORED_BYTES_MAX: usize = crate::limits::VALUE_BYTES_CEILING;

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

/// The string held, if any, or WRONGTYPE.
fn string(current: &Value) -> Result<Option<&Vec<u8>>, Reply> {
    match current {
        None => Ok(None),
        Some(Data::Str(b)) => Ok(Some(b)),
        Some(_) => Err(Reply::Error(WRONGTYPE)),
    }
}

/// The list held (empty when absent), or WRONGTYPE; borrowed, for the commands that only read
/// it (a copy per LLEN would cost the list's length).
fn list_ref(current: &Value) -> Result<&VecDeque<Vec<u8>>, Reply> {
    const EMPTY: &VecDeque<Vec<u8>> = &VecDeque::new();
    match current {
        None => Ok(EMPTY),
        Some(Data::List(l)) => Ok(l),
        Some(_) => Err(Reply::Error(WRONGTYPE)),
    }
}

/// The list held, copied to be changed.
fn list(current: &Value) -> Result<VecDeque<Vec<u8>>, Reply> {
    list_ref(current).cloned()
}

/// A list as stored: an empty one is no key.
fn stored_list(l: VecDeque<Vec<u8>>) -> Value {
    (!l.is_empty()).then_some(Data::List(l))
}

/// Redis's inclusive `[start, stop]` over `len` items, negative from the end: the range of
/// indices, empty when it selects nothing.
fn span(start: i64, stop: i64, len: usize) -> std::ops::Range<usize> {
    let len = len as i64;
    // as Redis: a negative start is clamped to 0, a stop still negative selects nothing
    let start = if start < 0 {
        (len + start).max(0)
    } else {
        start
    };
    let stop = if stop < 0 { len + stop } else { stop }.min(len - 1);
    if start > stop || start >= len {
        return 0..0;
    }
    start as usize..stop as usize + 1
}

fn index_of(i: i64, len: usize) -> Option<usize> {
    let len = len as i64;
    let i = if i < 0 { len + i } else { i };
    (0..len).contains(&i).then_some(i as usize)
}

fn str_value(b: Vec<u8>) -> Option<Value> {
    Some(Some(Data::Str(b)))
}

impl Change {
    /// What the command makes of `current`: the value to store (`None`: nothing changes;
    /// `Some(None)`: the key is deleted), and the reply.
    pub fn apply(&self, current: &Value) -> (Option<Value>, Reply) {
        match self.try_apply(current) {
            Ok(r) => r,
            Err(e) => (None, e),
        }
    }

    fn try_apply(&self, current: &Value) -> Result<(Option<Value>, Reply), Reply> {
        let old = || string(current).map(|s| Reply::Value(s.cloned()));
        Ok(match self {
            Change::Get => (None, old()?),
            Change::Set { value, cond, get } => {
                let reply = if *get { Some(old()?) } else { None };
                let holds = cond.holds(current)?;
                let reply = reply.unwrap_or(Reply::Done(holds));
                (holds.then(|| Some(Data::Str(value.clone()))), reply)
            }
            Change::Incr(by) => {
                let n = match string(current)? {
                    None => 0,
                    Some(b) => parse_i64(b).ok_or(Reply::Error(NOT_AN_INTEGER))?,
                };
                let n = n.checked_add(*by).ok_or(Reply::Error(OVERFLOW))?;
                (str_value(n.to_string().into_bytes()), Reply::Int(n))
            }
            Change::IncrFloat(by) => {
                let n = match string(current)? {
                    None => Some(0.0),
                    Some(b) => parse_f64(b),
                };
                let (Some(n), Some(by)) = (n, parse_f64(by)) else {
                    return Err(Reply::Error(NOT_A_FLOAT));
                };
                let sum = n + by;
                if !sum.is_finite() {
                    return Err(Reply::Error(NAN_OR_INFINITY));
                }
                let text = float_text(sum).into_bytes();
                (str_value(text.clone()), Reply::Text(text))
            }
            Change::Append(tail) => {
                let mut v = string(current)?.cloned().unwrap_or_default();
                if v.len() + tail.len() > STORED_BYTES_MAX {
                    return Err(Reply::Error(TOO_LARGE));
                }
                v.extend_from_slice(tail);
                let len = v.len() as i64;
                (str_value(v), Reply::Int(len))
            }
            Change::SetRange { offset, bytes } => {
                let mut v = string(current)?.cloned().unwrap_or_default();
                if bytes.is_empty() {
                    // Redis: an empty patch changes nothing (a missing key stays missing)
                    return Ok((None, Reply::Int(v.len() as i64)));
                }
                let end = offset + bytes.len();
                if end > STORED_BYTES_MAX {
                    return Err(Reply::Error(TOO_LARGE));
                }
                if v.len() < end {
                    v.resize(end, 0);
                }
                v[*offset..end].copy_from_slice(bytes);
                let len = v.len() as i64;
                (str_value(v), Reply::Int(len))
            }
            Change::Del(cond) => match current {
                Some(_) if cond.holds(current)? => (Some(None), Reply::Int(1)),
                _ => (None, Reply::Int(0)),
            },
            Change::GetDel => {
                let reply = old()?;
                (current.is_some().then_some(None), reply)
            }
            Change::Push {
                end,
                items,
                only_existing,
            } => {
                let mut l = list(current)?;
                if *only_existing && l.is_empty() {
                    return Ok((None, Reply::Int(0)));
                }
                let bytes: usize = l.iter().chain(items).map(|i| i.len() + 4).sum();
                if bytes > STORED_BYTES_MAX {
                    return Err(Reply::Error(TOO_LARGE));
                }
                for i in items {
                    match end {
                        End::Left => l.push_front(i.clone()),
                        End::Right => l.push_back(i.clone()),
                    }
                }
                let len = l.len() as i64;
                (Some(stored_list(l)), Reply::Int(len))
            }
            Change::Pop { end, count } => {
                let mut l = list(current)?;
                if l.is_empty() {
                    let nil = match count {
                        None => Reply::Value(None),
                        Some(_) => Reply::Array(None),
                    };
                    return Ok((None, nil));
                }
                let n = count.unwrap_or(1).min(l.len());
                let taken: Vec<Vec<u8>> = (0..n)
                    .filter_map(|_| match end {
                        End::Left => l.pop_front(),
                        End::Right => l.pop_back(),
                    })
                    .collect();
                let reply = match count {
                    None => Reply::Value(taken.into_iter().next()),
                    Some(_) => Reply::Array(Some(taken)),
                };
                let write = (n > 0).then(|| stored_list(l));
                (write, reply)
            }
            Change::Range { start, stop } => {
                let l = list_ref(current)?;
                let r = span(*start, *stop, l.len());
                (None, Reply::Array(Some(l.range(r).cloned().collect())))
            }
            Change::Len => (None, Reply::Int(list_ref(current)?.len() as i64)),
            Change::Index(i) => {
                let l = list_ref(current)?;
                (
                    None,
                    Reply::Value(index_of(*i, l.len()).map(|i| l[i].clone())),
                )
            }
            Change::SetIndex { index, item } => {
                if current.is_none() {
                    return Err(Reply::Error(NO_SUCH_KEY));
                }
                let mut l = list(current)?;
                let i = index_of(*index, l.len()).ok_or(Reply::Error(INDEX_OUT_OF_RANGE))?;
                l[i] = item.clone();
                (Some(stored_list(l)), Reply::Done(true))
            }
            Change::Remove { count, item } => {
                let l = list(current)?;
                let limit = if *count == 0 {
                    usize::MAX
                } else {
                    count.unsigned_abs() as usize
                };
                let mut removed = 0usize;
                let keep = |x: &Vec<u8>, removed: &mut usize| {
                    if x == item && *removed < limit {
                        *removed += 1;
                        false
                    } else {
                        true
                    }
                };
                let kept: VecDeque<Vec<u8>> = if *count < 0 {
                    let mut v: Vec<Vec<u8>> = l
                        .into_iter()
                        .rev()
                        .filter(|x| keep(x, &mut removed))
                        .collect();
                    v.reverse();
                    v.into()
                } else {
                    l.into_iter().filter(|x| keep(x, &mut removed)).collect()
                };
                let write = (removed > 0).then(|| stored_list(kept));
                (write, Reply::Int(removed as i64))
            }
            Change::Trim { start, stop } => {
                let l = list_ref(current)?;
                let r = span(*start, *stop, l.len());
                if r.len() == l.len() {
                    return Ok((None, Reply::Done(true)));
                }
                let kept: VecDeque<Vec<u8>> = l.range(r).cloned().collect();
                (Some(stored_list(kept)), Reply::Done(true))
            }
            Change::Insert {
                before,
                pivot,
                item,
            } => {
                if current.is_none() {
                    return Ok((None, Reply::Int(0)));
                }
                let mut l = list(current)?;
                let Some(at) = l.iter().position(|x| x == pivot) else {
                    return Ok((None, Reply::Int(-1)));
                };
                l.insert(if *before { at } else { at + 1 }, item.clone());
                let len = l.len() as i64;
                (Some(stored_list(l)), Reply::Int(len))
            }
            Change::Pos {
                item,
                rank,
                count,
                maxlen,
            } => {
                let l = list_ref(current)?;
                let scan = if *maxlen == 0 { l.len() } else { *maxlen };
                let skip = rank.unsigned_abs() as usize - 1;
                let matches: Vec<i64> = if *rank > 0 {
                    (0..l.len())
                        .take(scan)
                        .filter(|&i| l[i] == *item)
                        .skip(skip)
                        .map(|i| i as i64)
                        .collect()
                } else {
                    (0..l.len())
                        .rev()
                        .take(scan)
                        .filter(|&i| l[i] == *item)
                        .skip(skip)
                        .map(|i| i as i64)
                        .collect()
                };
                let reply = match count {
                    None => matches
                        .first()
                        .map_or(Reply::Value(None), |i| Reply::Int(*i)),
                    Some(0) => Reply::Ints(matches),
                    Some(c) => Reply::Ints(matches.into_iter().take(*c).collect()),
                };
                (None, reply)
            }
            Change::Expiry { .. } => return Err(Reply::Error(EXPIRY_NEEDS_THE_ENTRY)),
            Change::Move { from, to } => {
                let mut l = list(current)?;
                let taken = match from {
                    End::Left => l.pop_front(),
                    End::Right => l.pop_back(),
                };
                let Some(x) = taken else {
                    return Ok((None, Reply::Value(None)));
                };
                match to {
                    End::Left => l.push_front(x.clone()),
                    End::Right => l.push_back(x.clone()),
                }
                (Some(stored_list(l)), Reply::Value(Some(x)))
            }
        })
    }

    /// Whether a write keeps the stored expiry (every command but SET's forms and the
    /// deletes, as in Redis).
    pub fn keeps_expiry(&self) -> bool {
        !matches!(self, Change::Set { .. } | Change::Del(_) | Change::GetDel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Value {
        Some(Data::Str(s.as_bytes().to_vec()))
    }

    fn b(s: &str) -> Option<Vec<u8>> {
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
            (None, Reply::Value(b("b"))),
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
            (Some(None), Reply::Value(b("x")))
        );
        assert_eq!(Change::GetDel.apply(&None), (None, Reply::Value(None)));
        assert_eq!(
            set("n", Cond::Always, true).apply(&v("o")),
            (Some(v("n")), Reply::Value(b("o")))
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
            (Some(v("\0\0x")), Reply::Int(3))
        );
        assert_eq!(range(5, "").apply(&None), (None, Reply::Int(0)));
    }

    fn l(items: &[&str]) -> Value {
        Some(Data::List(
            items.iter().map(|i| i.as_bytes().to_vec()).collect(),
        ))
    }

    fn items(items: &[&str]) -> Vec<Vec<u8>> {
        items.iter().map(|i| i.as_bytes().to_vec()).collect()
    }

    /// Redis's own examples (the list commands' documentation), and the edges.
    #[test]
    fn list_commands_as_redis_answers_them() {
        let push = |end, xs: &[&str], only_existing| Change::Push {
            end,
            items: items(xs),
            only_existing,
        };
        assert_eq!(
            push(End::Left, &["world", "hello"], false).apply(&None),
            (Some(l(&["hello", "world"])), Reply::Int(2))
        );
        assert_eq!(
            push(End::Right, &["x"], true).apply(&None),
            (None, Reply::Int(0)),
            "RPUSHX of a missing key"
        );
        assert_eq!(
            push(End::Right, &["x"], false).apply(&v("s")),
            (None, Reply::Error(WRONGTYPE))
        );
        let five = l(&["one", "two", "three", "four", "five"]);
        let pop = |end, count| Change::Pop { end, count };
        assert_eq!(
            pop(End::Left, None).apply(&five),
            (
                Some(l(&["two", "three", "four", "five"])),
                Reply::Value(b("one"))
            )
        );
        assert_eq!(
            pop(End::Right, Some(2)).apply(&five),
            (
                Some(l(&["one", "two", "three"])),
                Reply::Array(Some(items(&["five", "four"])))
            )
        );
        assert_eq!(
            pop(End::Left, Some(9)).apply(&l(&["a"])),
            (Some(None), Reply::Array(Some(items(&["a"])))),
            "the last element out deletes the key"
        );
        assert_eq!(
            pop(End::Left, Some(1)).apply(&None),
            (None, Reply::Array(None))
        );
        assert_eq!(
            pop(End::Left, None).apply(&None),
            (None, Reply::Value(None))
        );
        let three = l(&["one", "two", "three"]);
        let range = |start, stop| Change::Range { start, stop };
        assert_eq!(
            range(0, 0).apply(&three).1,
            Reply::Array(Some(items(&["one"])))
        );
        assert_eq!(
            range(-3, 2).apply(&three).1,
            Reply::Array(Some(items(&["one", "two", "three"])))
        );
        assert_eq!(
            range(-100, 100).apply(&three).1,
            Reply::Array(Some(items(&["one", "two", "three"])))
        );
        assert_eq!(range(5, 10).apply(&three).1, Reply::Array(Some(vec![])));
        assert_eq!(
            range(-4, -4).apply(&three).1,
            Reply::Array(Some(vec![])),
            "a stop before the start of the list selects nothing"
        );
        assert_eq!(Change::Len.apply(&three).1, Reply::Int(3));
        assert_eq!(Change::Index(-1).apply(&three).1, Reply::Value(b("three")));
        assert_eq!(Change::Index(3).apply(&three).1, Reply::Value(None));
        let set = |index, item: &str| Change::SetIndex {
            index,
            item: item.as_bytes().to_vec(),
        };
        assert_eq!(
            set(-2, "five").apply(&three),
            (Some(l(&["one", "five", "three"])), Reply::Done(true))
        );
        assert_eq!(
            set(3, "x").apply(&three),
            (None, Reply::Error(INDEX_OUT_OF_RANGE))
        );
        assert_eq!(set(0, "x").apply(&None), (None, Reply::Error(NO_SUCH_KEY)));
        let hellos = l(&["hello", "hello", "foo", "hello"]);
        let rem = |count| Change::Remove {
            count,
            item: b"hello".to_vec(),
        };
        assert_eq!(
            rem(-2).apply(&hellos),
            (Some(l(&["hello", "foo"])), Reply::Int(2))
        );
        assert_eq!(
            rem(1).apply(&hellos),
            (Some(l(&["hello", "foo", "hello"])), Reply::Int(1))
        );
        assert_eq!(rem(0).apply(&hellos), (Some(l(&["foo"])), Reply::Int(3)));
        assert_eq!(
            Change::Trim { start: 1, stop: -1 }.apply(&three),
            (Some(l(&["two", "three"])), Reply::Done(true))
        );
        assert_eq!(
            Change::Trim { start: 5, stop: 1 }.apply(&three),
            (Some(None), Reply::Done(true)),
            "an empty range deletes the key"
        );
        let insert = |before, pivot: &str| Change::Insert {
            before,
            pivot: pivot.as_bytes().to_vec(),
            item: b"There".to_vec(),
        };
        let hw = l(&["Hello", "World"]);
        assert_eq!(
            insert(true, "World").apply(&hw),
            (Some(l(&["Hello", "There", "World"])), Reply::Int(3))
        );
        assert_eq!(insert(false, "Nope").apply(&hw), (None, Reply::Int(-1)));
        assert_eq!(insert(false, "x").apply(&None), (None, Reply::Int(0)));
        let letters = l(&["a", "b", "c", "d", "1", "2", "3", "4", "3", "3", "3"]);
        let lpos = |rank, count, maxlen| Change::Pos {
            item: b"3".to_vec(),
            rank,
            count,
            maxlen,
        };
        assert_eq!(lpos(1, None, 0).apply(&letters).1, Reply::Int(6));
        assert_eq!(lpos(-1, None, 0).apply(&letters).1, Reply::Int(10));
        assert_eq!(lpos(2, None, 0).apply(&letters).1, Reply::Int(8));
        assert_eq!(
            lpos(1, Some(0), 0).apply(&letters).1,
            Reply::Ints(vec![6, 8, 9, 10])
        );
        assert_eq!(
            lpos(-1, Some(2), 0).apply(&letters).1,
            Reply::Ints(vec![10, 9])
        );
        assert_eq!(
            lpos(1, None, 6).apply(&letters).1,
            Reply::Value(None),
            "MAXLEN"
        );
        let mv = Change::Move {
            from: End::Right,
            to: End::Left,
        };
        assert_eq!(
            mv.apply(&three),
            (Some(l(&["three", "one", "two"])), Reply::Value(b("three")))
        );
        assert_eq!(Change::Get.apply(&three), (None, Reply::Error(WRONGTYPE)));
        assert_eq!(
            Change::Incr(1).apply(&three),
            (None, Reply::Error(WRONGTYPE))
        );
        assert_eq!(
            set_on_list().apply(&three),
            (Some(v("s")), Reply::Done(true)),
            "SET replaces a list"
        );
    }

    fn set_on_list() -> Change {
        Change::Set {
            value: b"s".to_vec(),
            cond: Cond::Always,
            get: false,
        }
    }
}
