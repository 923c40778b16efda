//! The Redis list commands: LPUSH RPUSH LPUSHX RPUSHX LPOP RPOP LRANGE LLEN LINDEX LSET LREM
//! LTRIM LINSERT LPOS, and LMOVE and RPOPLPUSH within one key. Each becomes one native
//! CONSENSUS request (`core::consensus`: linearizable per key, so every pop takes an element
//! exactly once).
//!
//! Owns: their arguments (Redis's syntax and errors) and which reply shape each has. Never:
//! runs a command, or moves an element between two keys (that needs a transaction across two
//! keys' replicas, which kvstore does not have: refused, with the reason).

use crate::core::consensus::change::{parse_i64, Change, End};
use crate::core::consensus::command::Command;
use crate::server::front::resp_conditional::Shape;
use crate::server::front::resp_expiry::Refusal;

const NOT_AN_INTEGER: &str = "ERR value is not an integer or out of range";
const SYNTAX: &str = "ERR syntax error";
pub const ACROSS_KEYS: &str = "ERR LMOVE and RPOPLPUSH between two keys need a transaction \
    across both keys' replicas, which kvstore does not have: only the same key on both sides \
    is served";
/// Blocking list commands: refused with `BLOCKING`.
pub const BLOCKING_NAMES: &[&str] = &["blpop", "brpop", "blmove", "brpoplpush", "blmpop", "lmpop"];
pub const BLOCKING: &str = "ERR blocking list commands (BLPOP, BRPOP, BLMOVE, BRPOPLPUSH, \
    BLMPOP) are not served: poll with LPOP or RPOP";

fn int(a: &[u8]) -> Result<i64, Refusal> {
    parse_i64(a).ok_or_else(|| Refusal::from(NOT_AN_INTEGER))
}

fn end(a: &[u8]) -> Result<End, Refusal> {
    if a.eq_ignore_ascii_case(b"left") {
        Ok(End::Left)
    } else if a.eq_ignore_ascii_case(b"right") {
        Ok(End::Right)
    } else {
        Err(SYNTAX.into())
    }
}

/// LPOS's options after the element.
fn pos(item: &[u8], opts: &[&[u8]]) -> Result<Change, Refusal> {
    let (mut rank, mut count, mut maxlen) = (1i64, None, 0usize);
    let mut rest = opts;
    while let [opt, n, tail @ ..] = rest {
        let n = int(n)?;
        if opt.eq_ignore_ascii_case(b"rank") {
            if n == 0 || n == i64::MIN {
                return Err(
                    "ERR RANK can't be zero: use 1 to start from the first match, 2 \
                            from the second ... or use negative to start from the end of the \
                            list"
                        .into(),
                );
            }
            rank = n;
        } else if opt.eq_ignore_ascii_case(b"count") {
            count = Some(usize::try_from(n).map_err(|_| "ERR COUNT can't be negative")?);
        } else if opt.eq_ignore_ascii_case(b"maxlen") {
            maxlen = usize::try_from(n).map_err(|_| "ERR MAXLEN can't be negative")?;
        } else {
            return Err(SYNTAX.into());
        }
        rest = tail;
    }
    if !rest.is_empty() {
        return Err(SYNTAX.into());
    }
    Ok(Change::Pos {
        item: item.to_vec(),
        rank,
        count,
        maxlen,
    })
}

/// The command a list command's arguments (after its name and key) ask for, and its reply's
/// shape; `None` when `name` is not a list command.
pub fn plan(name: &str, args: &[&[u8]]) -> Option<Result<(Command, Shape), Refusal>> {
    let side = |name: &str| {
        if name.starts_with('l') {
            End::Left
        } else {
            End::Right
        }
    };
    let planned = (|| -> Result<(Change, Shape), Refusal> {
        Ok(match (name, args) {
            ("lpush" | "rpush" | "lpushx" | "rpushx", items) => (
                Change::Push {
                    end: side(name),
                    items: items.iter().map(|i| i.to_vec()).collect(),
                    only_existing: name.ends_with('x'),
                },
                Shape::Int,
            ),
            ("lpop" | "rpop", []) => (
                Change::Pop {
                    end: side(name),
                    count: None,
                },
                Shape::Bulk,
            ),
            ("lpop" | "rpop", [n]) => {
                let n = usize::try_from(int(n)?)
                    .map_err(|_| "ERR value is out of range, must be positive")?;
                (
                    Change::Pop {
                        end: side(name),
                        count: Some(n),
                    },
                    Shape::Array,
                )
            }
            ("lrange", [start, stop]) => (
                Change::Range {
                    start: int(start)?,
                    stop: int(stop)?,
                },
                Shape::Array,
            ),
            ("ltrim", [start, stop]) => (
                Change::Trim {
                    start: int(start)?,
                    stop: int(stop)?,
                },
                Shape::Ok,
            ),
            ("llen", []) => (Change::Len, Shape::Int),
            ("lindex", [i]) => (Change::Index(int(i)?), Shape::Bulk),
            ("lset", [i, item]) => (
                Change::SetIndex {
                    index: int(i)?,
                    item: item.to_vec(),
                },
                Shape::Ok,
            ),
            ("lrem", [count, item]) => (
                Change::Remove {
                    count: int(count)?,
                    item: item.to_vec(),
                },
                Shape::Int,
            ),
            ("linsert", [where_, pivot, item]) => {
                let before = if where_.eq_ignore_ascii_case(b"before") {
                    true
                } else if where_.eq_ignore_ascii_case(b"after") {
                    false
                } else {
                    return Err(SYNTAX.into());
                };
                (
                    Change::Insert {
                        before,
                        pivot: pivot.to_vec(),
                        item: item.to_vec(),
                    },
                    Shape::Int,
                )
            }
            ("lpos", [item, opts @ ..]) => {
                let change = pos(item, opts)?;
                let shape = match change {
                    Change::Pos { count: Some(_), .. } => Shape::Array,
                    _ => Shape::Int,
                };
                (change, shape)
            }
            ("lmove", [_dst, from, to]) => (
                Change::Move {
                    from: end(from)?,
                    to: end(to)?,
                },
                Shape::Bulk,
            ),
            ("rpoplpush", [_dst]) => (
                Change::Move {
                    from: End::Right,
                    to: End::Left,
                },
                Shape::Bulk,
            ),
            _ => return Err("unplanned".into()),
        })
    })();
    match planned {
        Err(e) if e == "unplanned" => None,
        other => Some(other.map(|(change, shape)| (Command::of(change), shape))),
    }
}

/// The other key of a two-key list command (LMOVE, RPOPLPUSH), if it is one.
pub fn destination<'a>(name: &str, rest: &[&'a [u8]]) -> Option<&'a [u8]> {
    matches!(name, "lmove" | "rpoplpush")
        .then(|| rest.get(1).copied())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn planned(name: &str, args: &[&str]) -> Option<Result<(Command, Shape), Refusal>> {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        plan(name, &args)
    }

    #[test]
    fn arguments_as_redis_reads_them() {
        let (c, shape) = planned("rpush", &["a", "b"]).unwrap().unwrap();
        assert_eq!(shape, Shape::Int);
        assert!(
            matches!(c.change, Change::Push { end: End::Right, ref items, only_existing: false } if items.len() == 2)
        );
        let (c, shape) = planned("lpop", &["2"]).unwrap().unwrap();
        assert_eq!(shape, Shape::Array);
        assert_eq!(
            c.change,
            Change::Pop {
                end: End::Left,
                count: Some(2)
            }
        );
        assert_eq!(
            planned("lpop", &["-1"]).unwrap().err().as_deref(),
            Some("ERR value is out of range, must be positive")
        );
        assert_eq!(
            planned("lrange", &["0", "x"]).unwrap().err().as_deref(),
            Some(NOT_AN_INTEGER)
        );
        assert_eq!(
            planned("linsert", &["middle", "p", "e"])
                .unwrap()
                .err()
                .as_deref(),
            Some(SYNTAX)
        );
        assert!(planned("lpos", &["e", "RANK", "0"]).unwrap().is_err());
        assert!(planned("lpos", &["e", "COUNT", "-1"]).unwrap().is_err());
        assert!(planned("lpos", &["e", "COUNT"]).unwrap().is_err());
        let (_, shape) = planned("lpos", &["e", "COUNT", "0", "RANK", "-2"])
            .unwrap()
            .unwrap();
        assert_eq!(shape, Shape::Array);
        assert!(planned("lmove", &["dst", "LEFT", "UP"]).unwrap().is_err());
        assert!(planned("get", &[]).is_none());
        assert_eq!(
            destination("lmove", &[b"s", b"d", b"LEFT", b"RIGHT"]),
            Some(&b"d"[..])
        );
    }
}
