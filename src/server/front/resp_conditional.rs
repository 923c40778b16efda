//! The Redis string commands whose reply depends on what is stored: SET with NX, XX, IFEQ,
//! IFNE or GET; SETNX, GETSET, GETDEL; INCR, DECR, INCRBY, DECRBY, INCRBYFLOAT; APPEND,
//! SETRANGE; DELIFEQ (Valkey) and DELEX (Redis 8). Each becomes one native CONSENSUS request
//! (`core::consensus`: linearizable per key).
//!
//! Owns: their arguments (Redis's syntax and errors), and their replies from the command's
//! reply. Never: runs a command (the consensus shell does), or plans a plain SET (`resp_front`).

use crate::core::consensus::change::{parse_f64, parse_i64, Change, Cond, Reply};
use crate::core::consensus::command::{Command, Ttl as WriteTtl};
use crate::server::front::resp_expiry::{self as expiry, Refusal, Ttl};
use crate::wire::consensus::Decoded;
use crate::wire::resp;

/// How a command's reply is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// `+OK`, or nil when the condition stopped the write (SET NX/XX/IFEQ/IFNE).
    OkOrNil,
    /// The value (or nil): SET … GET, GETSET, GETDEL.
    Bulk,
    /// An integer: INCR…, APPEND, SETRANGE, DELIFEQ, DELEX; SETNX's 1 or 0.
    Int,
    /// INCRBYFLOAT's new value, as a bulk string.
    Text,
    /// `+OK` (LSET, LTRIM), or the command's error.
    Ok,
    /// Elements, or positions (LRANGE, LPOP with a count, LPOS with COUNT).
    Array,
}

const SYNTAX: &str = "ERR syntax error";
const NOT_AN_INTEGER: &str = "ERR value is not an integer or out of range";

/// Whether SET's options ask for a conditional write (else `resp_front` plans a plain SET).
pub fn set_is_conditional(opts: &[&[u8]]) -> bool {
    opts.iter().any(|o| {
        [&b"nx"[..], b"xx", b"get", b"ifeq", b"ifne"]
            .iter()
            .any(|c| o.eq_ignore_ascii_case(c))
    })
}

/// SET key value [NX | XX | IFEQ v | IFNE v] [GET] [EX s | PX ms | EXAT s | PXAT ms | KEEPTTL].
fn set(value: &[u8], opts: &[&[u8]], now_ms: u64) -> Result<(Command, Shape), Refusal> {
    let mut cond = Cond::Always;
    let mut get = false;
    let mut timing: Vec<&[u8]> = Vec::new();
    let mut rest = opts;
    while let [opt, tail @ ..] = rest {
        let lower = opt.to_ascii_lowercase();
        rest = tail;
        let next = match (lower.as_slice(), tail) {
            (b"nx", _) => Cond::Nx,
            (b"xx", _) => Cond::Xx,
            (b"ifeq" | b"ifne", [v, t @ ..]) => {
                rest = t;
                if lower == b"ifeq" {
                    Cond::IfEq(v.to_vec())
                } else {
                    Cond::IfNe(v.to_vec())
                }
            }
            (b"get", _) if !get => {
                get = true;
                continue;
            }
            (b"ex" | b"px" | b"exat" | b"pxat", [n, t @ ..]) => {
                timing.extend([*opt, *n]);
                rest = t;
                continue;
            }
            (b"keepttl", _) => {
                timing.push(opt);
                continue;
            }
            _ => return Err(SYNTAX.into()),
        };
        if cond != Cond::Always {
            return Err(SYNTAX.into());
        }
        cond = next;
    }
    let ttl = match expiry::options(&timing, now_ms, true, "set")? {
        Ttl::At(at) => WriteTtl::At(at),
        Ttl::Keep => WriteTtl::Keep,
        Ttl::Unset | Ttl::Persist => WriteTtl::Clear,
    };
    let change = Change::Set {
        value: value.to_vec(),
        cond,
        get,
    };
    let shape = if get { Shape::Bulk } else { Shape::OkOrNil };
    Ok((
        Command {
            ttl,
            ..Command::of(change)
        },
        shape,
    ))
}

/// The command a conditional command's arguments (after its name and key) ask for, and how
/// its reply is shown; `None` when `name` is not one of this family.
pub fn plan(
    name: &str,
    args: &[&[u8]],
    now_ms: u64,
    max_value_bytes: usize,
) -> Option<Result<(Command, Shape), Refusal>> {
    let int_arg = |a: &[u8]| parse_i64(a).ok_or_else(|| Refusal::from(NOT_AN_INTEGER));
    let plain = |change| Ok((Command::of(change), Shape::Int));
    let planned = match (name, args) {
        ("set", [value, opts @ ..]) => set(value, opts, now_ms),
        ("setnx", [value]) => plain(Change::Set {
            value: value.to_vec(),
            cond: Cond::Nx,
            get: false,
        }),
        ("getset", [value]) => Ok((
            Command::of(Change::Set {
                value: value.to_vec(),
                cond: Cond::Always,
                get: true,
            }),
            Shape::Bulk,
        )),
        ("getdel", []) => Ok((Command::of(Change::GetDel), Shape::Bulk)),
        ("incr", []) => plain(Change::Incr(1)),
        ("decr", []) => plain(Change::Incr(-1)),
        ("incrby", [by]) => int_arg(by).and_then(|n| plain(Change::Incr(n))),
        ("decrby", [by]) => int_arg(by).and_then(|n| match n.checked_neg() {
            Some(n) => plain(Change::Incr(n)),
            None => Err("ERR decrement would overflow".into()),
        }),
        ("incrbyfloat", [by]) => match parse_f64(by) {
            Some(f) if f.is_finite() => {
                Ok((Command::of(Change::IncrFloat(by.to_vec())), Shape::Text))
            }
            _ => Err("ERR value is not a valid float".into()),
        },
        ("append", [tail]) => plain(Change::Append(tail.to_vec())),
        ("setrange", [offset, bytes]) => match parse_i64(offset) {
            None => Err(NOT_AN_INTEGER.into()),
            Some(o) if o < 0 => Err("ERR offset is out of range".into()),
            Some(o) if o as u64 + bytes.len() as u64 > max_value_bytes as u64 => {
                Err("ERR string exceeds maximum allowed size (proto-max-bulk-len)".into())
            }
            Some(o) => plain(Change::SetRange {
                offset: o as usize,
                bytes: bytes.to_vec(),
            }),
        },
        ("delifeq", [expect]) => plain(Change::Del(Cond::IfEq(expect.to_vec()))),
        ("delex", rest) => match rest {
            [] => plain(Change::Del(Cond::Always)),
            [c, v] if c.eq_ignore_ascii_case(b"ifeq") => plain(Change::Del(Cond::IfEq(v.to_vec()))),
            [c, v] if c.eq_ignore_ascii_case(b"ifne") => plain(Change::Del(Cond::IfNe(v.to_vec()))),
            [c, _] if c.eq_ignore_ascii_case(b"ifdeq") || c.eq_ignore_ascii_case(b"ifdne") => {
                Err("ERR IFDEQ and IFDNE (digests) are not served: use IFEQ or IFNE".into())
            }
            _ => Err(SYNTAX.into()),
        },
        _ => return None,
    };
    Some(planned)
}

/// The RESP reply to a command's answer (`Err`: the error line, without the `-`).
pub fn encode(out: &mut Vec<u8>, shape: Shape, answer: Option<Decoded>, proto: u8) {
    let reply = match answer {
        Some(Decoded::Reply(r)) => r,
        Some(Decoded::Error(e)) => return resp::error(out, &e),
        None => return resp::error(out, "ERR a malformed reply from the consensus round"),
    };
    match (shape, reply) {
        (_, Reply::Error(e)) => resp::error(out, e),
        (Shape::OkOrNil, Reply::Done(true)) => resp::simple(out, "OK"),
        (Shape::OkOrNil, Reply::Done(false)) => resp::null(out, proto),
        (_, Reply::Value(Some(v))) | (_, Reply::Text(v)) => resp::bulk(out, &v),
        (_, Reply::Value(None)) => resp::null(out, proto),
        (_, Reply::Int(n)) => resp::integer(out, n),
        (Shape::Ok, Reply::Done(true)) => resp::simple(out, "OK"),
        (_, Reply::Done(d)) => resp::integer(out, i64::from(d)),
        (_, Reply::Array(None)) => resp::null_array(out, proto),
        (_, Reply::Array(Some(items))) => {
            resp::array(out, items.len());
            for i in items {
                resp::bulk(out, &i);
            }
        }
        (_, Reply::Ints(ns)) => {
            resp::array(out, ns.len());
            for n in ns {
                resp::integer(out, n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn planned(name: &str, args: &[&str]) -> Result<(Command, Shape), Refusal> {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        plan(name, &args, 1_000, 1024).unwrap_or_else(|| panic!("{name} not planned"))
    }

    #[test]
    fn set_options_as_redis_reads_them() {
        let (c, shape) = planned("set", &["v", "NX", "PX", "30000"]).unwrap();
        assert_eq!(shape, Shape::OkOrNil);
        assert_eq!(c.ttl, WriteTtl::At(31_000));
        assert!(matches!(
            c.change,
            Change::Set {
                cond: Cond::Nx,
                get: false,
                ..
            }
        ));
        let (c, shape) = planned("set", &["v", "ifeq", "old", "get", "keepttl"]).unwrap();
        assert_eq!(shape, Shape::Bulk);
        assert_eq!(c.ttl, WriteTtl::Keep);
        assert!(
            matches!(c.change, Change::Set { cond: Cond::IfEq(ref e), get: true, .. } if e == b"old")
        );
        for bad in [
            &["v", "NX", "XX"][..],
            &["v", "NX", "IFEQ", "x"],
            &["v", "IFEQ"],
            &["v", "GET", "GET"],
            &["v", "NX", "EX", "1", "PX", "1"],
            &["v", "NX", "bogus"],
        ] {
            assert_eq!(planned("set", bad).err(), Some(SYNTAX.into()), "{bad:?}");
        }
        assert!(planned("set", &["v", "NX", "EX", "0"]).is_err());
        assert!(set_is_conditional(&[b"get"]));
        assert!(!set_is_conditional(&[b"EX", b"10"]));
    }

    #[test]
    fn arguments_are_checked_as_redis_checks_them() {
        assert_eq!(
            planned("incrby", &["1.5"]).err(),
            Some(NOT_AN_INTEGER.into())
        );
        assert_eq!(
            planned("decrby", &[&i64::MIN.to_string()]).err(),
            Some("ERR decrement would overflow".into())
        );
        assert!(planned("incrbyfloat", &["abc"]).is_err());
        assert!(planned("incrbyfloat", &["inf"]).is_err());
        assert!(planned("setrange", &["-1", "x"]).is_err());
        // the value limit at and just past the boundary (1024 here)
        assert!(planned("setrange", &["1023", "x"]).is_ok());
        assert_eq!(
            planned("setrange", &["1024", "x"]).err(),
            Some("ERR string exceeds maximum allowed size (proto-max-bulk-len)".into())
        );
        assert!(planned("delex", &["IFDEQ", "abc"]).is_err());
        assert_eq!(planned("delex", &["IFNE"]).err(), Some(SYNTAX.into()));
        assert!(plan("get", &[], 0, 1).is_none());
    }

    #[test]
    fn replies_look_like_redis() {
        let show = |shape, r: Reply| {
            let mut out = Vec::new();
            encode(&mut out, shape, Some(Decoded::Reply(r)), 2);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(show(Shape::OkOrNil, Reply::Done(true)), "+OK\r\n");
        assert_eq!(show(Shape::OkOrNil, Reply::Done(false)), "$-1\r\n");
        assert_eq!(show(Shape::Int, Reply::Done(true)), ":1\r\n");
        assert_eq!(show(Shape::Int, Reply::Int(-3)), ":-3\r\n");
        assert_eq!(show(Shape::Bulk, Reply::Value(None)), "$-1\r\n");
        assert_eq!(
            show(Shape::Text, Reply::Text(b"1.5".to_vec())),
            "$3\r\n1.5\r\n"
        );
        assert_eq!(
            show(Shape::Int, Reply::Error(NOT_AN_INTEGER)),
            format!("-{NOT_AN_INTEGER}\r\n")
        );
    }
}
