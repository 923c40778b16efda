//! The Redis expiry commands: their arguments as the native requests they become, and their
//! integer replies.
//!
//! Owns: SET's options, SETEX/PSETEX, EXPIRE/PEXPIRE/EXPIREAT/PEXPIREAT, PERSIST, GETEX,
//! GETDEL, and the TTL family's replies (Redis's -2 missing, -1 no expiry). Relative times are
//! turned into absolute expiries here, with the wall clock the caller passes in, so every
//! replica stores the same instant; EXPIRE's conditions (NX, XX, GT, LT) and their errors.
//! Never: runs anything (SET's NX, XX, GET, IFEQ, IFNE are `resp_conditional`'s; EXPIRE and
//! friends become a consensus command in `resp_front`).

use crate::core::cell::{self, Cell};
use crate::core::consensus::change::ExpiryCond;
use crate::core::version::Version;
use crate::wire::native::{
    Opcode, Request, FLAG_DELETE, FLAG_EXPIRES, FLAG_KEEP_TTL, FLAG_PERSIST,
};

/// Why a command was refused: the error line (without the leading `-`).
pub type Refusal = String;

/// Redis's answer to options it cannot parse (SET's conditional options reach `options` only
/// from GETEX, where Redis refuses them so too).
const SYNTAX: &str = "ERR syntax error";

/// EXPIRE's optional conditions, NX XX GT LT, with Redis's errors: NX goes with none of the
/// others, GT not with LT; XX GT is GT (a key without an expiry never passes GT), XX LT is
/// `XxLt`.
pub fn expire_condition(opts: &[&[u8]]) -> Result<ExpiryCond, Refusal> {
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for o in opts {
        match o.to_ascii_lowercase().as_slice() {
            b"nx" => nx = true,
            b"xx" => xx = true,
            b"gt" => gt = true,
            b"lt" => lt = true,
            _ => {
                let o = String::from_utf8_lossy(o);
                return Err(format!("ERR Unsupported option {o}"));
            }
        }
    }
    if nx && (xx || gt || lt) {
        return Err("ERR NX and XX, GT or LT options at the same time are not compatible".into());
    }
    if gt && lt {
        return Err("ERR GT and LT options at the same time are not compatible".into());
    }
    Ok(match (nx, xx, gt, lt) {
        (true, ..) => ExpiryCond::Nx,
        (_, _, true, _) => ExpiryCond::Gt,
        (_, true, _, true) => ExpiryCond::XxLt,
        (_, true, ..) => ExpiryCond::Xx,
        (.., true) => ExpiryCond::Lt,
        _ => ExpiryCond::Always,
    })
}

/// What a command asks of a key's expiry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ttl {
    /// Not mentioned: a SET clears it, GETEX leaves it.
    Unset,
    At(u64),
    Keep,
    Persist,
}

fn int(arg: &[u8]) -> Option<i64> {
    std::str::from_utf8(arg).ok()?.parse().ok()
}

fn invalid(command: &str) -> Refusal {
    format!("ERR invalid expire time in '{command}' command")
}

/// The absolute expiry of `EX|PX|EXAT|PXAT n` (SET, GETEX, SETEX, PSETEX): `n` must be
/// positive and the instant no later than the year 9999.
pub fn positive_expiry(unit: &[u8], n: &[u8], now_ms: u64, command: &str) -> Result<u64, Refusal> {
    let Some(n) = int(n) else {
        return Err("ERR value is not an integer or out of range".into());
    };
    if n <= 0 {
        return Err(invalid(command));
    }
    let ms = match unit.to_ascii_lowercase().as_slice() {
        b"ex" | b"exat" => n.checked_mul(1000).ok_or_else(|| invalid(command))?,
        _ => n,
    };
    let at = match unit.to_ascii_lowercase().as_slice() {
        b"ex" | b"px" => cell::expiry_after(now_ms, ms).map_err(|_| invalid(command))?,
        _ => cell::check_expiry(ms as u64).map_err(|_| invalid(command))?,
    };
    Ok(at)
}

/// The expiry options after a key (and value): at most one of EX, PX, EXAT, PXAT, and KEEPTTL
/// (`keep`: SET) or PERSIST (`!keep`: GETEX).
pub fn options(opts: &[&[u8]], now_ms: u64, keep: bool, command: &str) -> Result<Ttl, Refusal> {
    let mut ttl = Ttl::Unset;
    let mut rest = opts;
    while let [opt, tail @ ..] = rest {
        let lower = opt.to_ascii_lowercase();
        let next = match (lower.as_slice(), tail) {
            (b"keepttl", t) if keep => (Ttl::Keep, t),
            (b"persist", t) if !keep => (Ttl::Persist, t),
            (b"ex" | b"px" | b"exat" | b"pxat", [n, t @ ..]) => {
                (Ttl::At(positive_expiry(opt, n, now_ms, command)?), t)
            }
            _ => return Err(SYNTAX.into()),
        };
        if ttl != Ttl::Unset {
            return Err(SYNTAX.into());
        }
        (ttl, rest) = next;
    }
    Ok(ttl)
}

/// The absolute expiry of EXPIRE (`unit_ms` false), PEXPIRE, EXPIREAT (`absolute`) and
/// PEXPIREAT. Zero, negative and past times are allowed: the key is deleted.
pub fn expire_at(
    n: &[u8],
    unit_ms: bool,
    absolute: bool,
    now_ms: u64,
    command: &str,
) -> Result<u64, Refusal> {
    let Some(n) = int(n) else {
        return Err("ERR value is not an integer or out of range".into());
    };
    let ms = if unit_ms {
        n
    } else {
        n.checked_mul(1000).ok_or_else(|| invalid(command))?
    };
    let at = if absolute {
        ms.max(0) as u64
    } else if ms <= 0 {
        now_ms.saturating_sub(ms.unsigned_abs())
    } else {
        now_ms
            .checked_add(ms as u64)
            .ok_or_else(|| invalid(command))?
    };
    cell::check_expiry(at).map_err(|_| invalid(command))
}

/// A PUT of `value` under `key`, expiring at `at` if given.
pub fn put<'a>(key: &'a [u8], value: &'a [u8], at: Option<u64>) -> Request<'a> {
    request(
        Opcode::Put,
        key,
        value,
        at.map_or(0, |_| FLAG_EXPIRES),
        at.unwrap_or(0),
    )
}

/// An UPDATE of `key`: `Ttl::At` sets the expiry, `Persist` drops it, `Keep` stores `value`
/// keeping it; `delete` (GETDEL) deletes the key.
pub fn update<'a>(key: &'a [u8], value: &'a [u8], ttl: Ttl, delete: bool) -> Request<'a> {
    let (flags, at) = match (delete, ttl) {
        (true, _) => (FLAG_DELETE, 0),
        (_, Ttl::At(at)) => (FLAG_EXPIRES, at),
        (_, Ttl::Persist) => (FLAG_PERSIST, 0),
        (_, Ttl::Keep | Ttl::Unset) => (FLAG_KEEP_TTL, 0),
    };
    request(Opcode::Update, key, value, flags, at)
}

fn request<'a>(opcode: Opcode, key: &'a [u8], value: &'a [u8], flags: u8, at: u64) -> Request<'a> {
    Request {
        version: Version { hlc: at, writer: 0 },
        flags,
        ..Request::new(opcode, key, value)
    }
}

/// How a TTL-family command reports a key's expiry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TtlQuery {
    pub unit_ms: bool,
    /// EXPIRETIME/PEXPIRETIME: the instant, not what is left.
    pub absolute: bool,
}

/// The reply of TTL, PTTL, EXPIRETIME, PEXPIRETIME for a key's live cell (`None`: missing).
pub fn ttl_reply(cell: Option<Cell<'_>>, q: TtlQuery, now_ms: u64) -> i64 {
    let Some(c) = cell else {
        return -2;
    };
    let Some(at) = c.expires_at_ms else {
        return -1;
    };
    let ms = if q.absolute {
        at
    } else {
        at.saturating_sub(now_ms)
    };
    // Redis rounds seconds to the nearest.
    (if q.unit_ms {
        ms
    } else {
        ms.saturating_add(500) / 1000
    }) as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::EXPIRES_AT_MS_MAX;

    const NOW: u64 = 1_000_000;

    #[test]
    fn set_options_become_an_absolute_expiry() {
        let o = |a: &[&[u8]]| options(a, NOW, true, "set");
        assert_eq!(o(&[]), Ok(Ttl::Unset));
        assert_eq!(o(&[b"EX", b"10"]), Ok(Ttl::At(NOW + 10_000)));
        assert_eq!(o(&[b"px", b"15"]), Ok(Ttl::At(NOW + 15)));
        assert_eq!(o(&[b"EXAT", b"2000"]), Ok(Ttl::At(2_000_000)));
        assert_eq!(
            o(&[b"PXAT", b"7"]),
            Ok(Ttl::At(7)),
            "the past: expired at once"
        );
        assert_eq!(o(&[b"KEEPTTL"]), Ok(Ttl::Keep));
        let bad: [[&[u8]; 2]; 3] = [[b"EX", b"0"], [b"PX", b"-1"], [b"EXAT", b"0"]];
        for bad in &bad {
            assert_eq!(
                o(bad),
                Err("ERR invalid expire time in 'set' command".into())
            );
        }
        assert_eq!(
            o(&[b"EX", b"x"]),
            Err("ERR value is not an integer or out of range".into())
        );
        assert_eq!(o(&[b"EX"]), Err("ERR syntax error".into()));
        assert_eq!(
            o(&[b"EX", b"1", b"PX", b"1"]),
            Err("ERR syntax error".into())
        );
        assert_eq!(
            o(&[b"PERSIST"]),
            Err("ERR syntax error".into()),
            "GETEX only"
        );
        for c in [&b"NX"[..], b"xx", b"GET"] {
            assert_eq!(o(&[c]), Err(SYNTAX.into()));
        }
        assert_eq!(
            options(&[b"persist"], NOW, false, "getex"),
            Ok(Ttl::Persist)
        );
    }

    #[test]
    fn expiry_limit_at_and_past_the_boundary() {
        let max = EXPIRES_AT_MS_MAX.to_string();
        let past = (EXPIRES_AT_MS_MAX + 1).to_string();
        assert_eq!(
            positive_expiry(b"PXAT", max.as_bytes(), NOW, "set"),
            Ok(EXPIRES_AT_MS_MAX)
        );
        assert!(positive_expiry(b"PXAT", past.as_bytes(), NOW, "set").is_err());
        let left = (EXPIRES_AT_MS_MAX - NOW).to_string();
        assert_eq!(
            positive_expiry(b"PX", left.as_bytes(), NOW, "set"),
            Ok(EXPIRES_AT_MS_MAX)
        );
        let over = (EXPIRES_AT_MS_MAX - NOW + 1).to_string();
        assert!(positive_expiry(b"PX", over.as_bytes(), NOW, "set").is_err());
        assert!(positive_expiry(b"EX", i64::MAX.to_string().as_bytes(), NOW, "set").is_err());
        assert_eq!(
            expire_at(max.as_bytes(), true, true, NOW, "pexpireat"),
            Ok(EXPIRES_AT_MS_MAX)
        );
        assert!(expire_at(past.as_bytes(), true, true, NOW, "pexpireat").is_err());
        assert!(expire_at(i64::MAX.to_string().as_bytes(), false, false, NOW, "expire").is_err());
    }

    #[test]
    fn expire_conditions_and_their_errors_follow_redis() {
        let c = |a: &[&[u8]]| expire_condition(a);
        assert_eq!(c(&[]), Ok(ExpiryCond::Always));
        assert_eq!(c(&[b"nx"]), Ok(ExpiryCond::Nx));
        assert_eq!(c(&[b"XX"]), Ok(ExpiryCond::Xx));
        assert_eq!(c(&[b"GT"]), Ok(ExpiryCond::Gt));
        assert_eq!(c(&[b"lt"]), Ok(ExpiryCond::Lt));
        assert_eq!(c(&[b"XX", b"GT"]), Ok(ExpiryCond::Gt));
        assert_eq!(c(&[b"LT", b"XX"]), Ok(ExpiryCond::XxLt));
        assert_eq!(c(&[b"NX", b"NX"]), Ok(ExpiryCond::Nx));
        let nx = "ERR NX and XX, GT or LT options at the same time are not compatible";
        for bad in [&[&b"NX"[..], b"XX"][..], &[b"GT", b"NX"], &[b"nx", b"lt"]] {
            assert_eq!(c(bad), Err(nx.into()));
        }
        let gt_lt = "ERR GT and LT options at the same time are not compatible";
        assert_eq!(c(&[b"GT", b"LT"]), Err(gt_lt.into()));
        assert_eq!(c(&[b"GT", b"XY"]), Err("ERR Unsupported option XY".into()));
    }

    #[test]
    fn expire_takes_past_times_as_deletes() {
        assert_eq!(
            expire_at(b"10", false, false, NOW, "expire"),
            Ok(NOW + 10_000)
        );
        assert_eq!(expire_at(b"10", true, false, NOW, "pexpire"), Ok(NOW + 10));
        assert_eq!(expire_at(b"0", false, false, NOW, "expire"), Ok(NOW));
        assert_eq!(
            expire_at(b"-5", false, false, NOW, "expire"),
            Ok(NOW - 5_000)
        );
        assert_eq!(expire_at(b"-5", false, true, NOW, "expireat"), Ok(0));
        assert_eq!(expire_at(b"3", false, true, NOW, "expireat"), Ok(3_000));
    }

    #[test]
    fn ttl_replies_follow_redis() {
        let plain = cell::encode(b"v", None);
        let timed = cell::encode(b"v", Some(NOW + 1_499));
        let p = cell::decode(&plain).ok();
        let t = cell::decode(&timed).ok();
        let q = |unit_ms, absolute| TtlQuery { unit_ms, absolute };
        assert_eq!(ttl_reply(None, q(false, false), NOW), -2);
        assert_eq!(ttl_reply(p, q(true, false), NOW), -1);
        assert_eq!(ttl_reply(t, q(false, false), NOW), 1, "1.499 s rounds to 1");
        assert_eq!(ttl_reply(t, q(true, false), NOW), 1_499);
        assert_eq!(ttl_reply(t, q(true, true), NOW), (NOW + 1_499) as i64);
    }

    #[test]
    fn requests_carry_the_expiry_in_the_version_field() {
        let r = put(b"k", b"v", Some(77));
        assert_eq!((r.opcode, r.expires_at_ms()), (Opcode::Put as u8, Some(77)));
        assert_eq!(put(b"k", b"v", None).expires_at_ms(), None);
        let u = update(b"k", b"", Ttl::At(9), false);
        assert_eq!(
            (u.opcode, u.flags, u.version.hlc),
            (Opcode::Update as u8, FLAG_EXPIRES, 9)
        );
        assert_eq!(update(b"k", b"", Ttl::Persist, false).flags, FLAG_PERSIST);
        assert_eq!(update(b"k", b"", Ttl::Unset, true).flags, FLAG_DELETE);
        assert_eq!(update(b"k", b"v", Ttl::Keep, false).flags, FLAG_KEEP_TTL);
    }
}
