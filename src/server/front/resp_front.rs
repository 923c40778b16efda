//! The Redis protocol front: what each Redis command means here and how its reply looks.
//!
//! Owns: the command table (names, arity, which operations a command needs) and the RESP2
//! replies built from their results. Never touches storage or the network itself: keyed
//! commands become the same GET/PUT/DELETE operations the native protocol uses, so quorum,
//! versions and read repair apply to them unchanged (see `connection::Front`).
//!
//! Served: PING ECHO GET SET DEL UNLINK EXISTS TOUCH MGET MSET DBSIZE INFO COMMAND CONFIG
//! CLIENT SELECT HELLO AUTH SCAN KEYS QUIT; the expiry commands (`resp_expiry`): SET's EX PX EXAT
//! PXAT KEEPTTL, SETEX PSETEX EXPIRE PEXPIRE EXPIREAT PEXPIREAT (NX XX GT LT) TTL PTTL
//! EXPIRETIME PEXPIRETIME PERSIST GETEX GETDEL (EXPIRE and friends, PERSIST and GETEX with an
//! option are consensus commands: `consensus_expiry`); STRLEN GETRANGE SUBSTR (`resp_string`);
//! TYPE OBJECT RANDOMKEY (`resp_keyspace`); FLUSHDB FLUSHALL (`server::data::flush`); the
//! conditional writes (SET's NX XX GET IFEQ IFNE, SETNX GETSET GETDEL INCR DECR INCRBY DECRBY
//! INCRBYFLOAT APPEND SETRANGE DELIFEQ DELEX: `resp_conditional`). Refused with a clear error:
//! CONFIG SET, anything else (`unknown command`).

use crate::core::consensus::change::{Change, ExpiryCond};
use crate::core::consensus::command::Command as RoundCommand;
use crate::limits::{KEY_BYTES_MAX, KEY_BYTES_MIN};
use std::rc::Rc;

use crate::core::cell::Kind;
use crate::core::consensus::change::WRONGTYPE;
use crate::server::data::messages::OpResult;
use crate::server::front::auth::Session;
use crate::server::front::connection::{Front, ReplyCtx};
use crate::server::front::resp_collection as collection;
use crate::server::front::resp_conditional as conditional;
use crate::server::front::resp_expiry::{self as expiry, Ttl, TtlQuery};
use crate::server::front::resp_keyspace as keyspace;
use crate::server::front::resp_list as list;
use crate::server::front::resp_string as string;
use crate::server::wall_clock_ms;
use crate::storage::wal_file::FsyncMode;
use crate::wire::native::{Opcode, Request, Status};
use crate::wire::resp::{self, Command, DecodeError};

/// An unknown command's error echoes at most this many of its arguments, each cut to this
/// many bytes (as Redis does; a client cannot make the error reply large).
const UNKNOWN_COMMAND_ECHO_ARGS_MAX: usize = 8;
const UNKNOWN_COMMAND_ECHO_BYTES_MAX: usize = 64;

/// The Redis version we answer to (the RESP2 command set of Redis 7.0 that we serve).
pub const REDIS_COMPAT_VERSION: &str = "7.0.0";

/// Commands we serve: name, Redis arity (negative: at least that many), first key, last key
/// (-1: all remaining), step — the fields of a COMMAND reply.
const COMMANDS: &[(&str, i64, i64, i64, i64)] = &[
    ("ping", -1, 0, 0, 0),
    ("echo", 2, 0, 0, 0),
    ("get", 2, 1, 1, 1),
    ("set", -3, 1, 1, 1),
    ("del", -2, 1, -1, 1),
    ("exists", -2, 1, -1, 1),
    ("mget", -2, 1, -1, 1),
    ("mset", -3, 1, -1, 2),
    ("dbsize", 1, 0, 0, 0),
    ("info", -1, 0, 0, 0),
    ("command", -1, 0, 0, 0),
    ("config", -2, 0, 0, 0),
    ("client", -2, 0, 0, 0),
    ("select", 2, 0, 0, 0),
    ("hello", -1, 0, 0, 0),
    ("quit", -1, 0, 0, 0),
    ("auth", -2, 0, 0, 0),
    ("scan", -2, 0, 0, 0),
    ("keys", 2, 0, 0, 0),
    ("setex", 4, 1, 1, 1),
    ("psetex", 4, 1, 1, 1),
    ("expire", -3, 1, 1, 1),
    ("pexpire", -3, 1, 1, 1),
    ("expireat", -3, 1, 1, 1),
    ("pexpireat", -3, 1, 1, 1),
    ("ttl", 2, 1, 1, 1),
    ("pttl", 2, 1, 1, 1),
    ("expiretime", 2, 1, 1, 1),
    ("pexpiretime", 2, 1, 1, 1),
    ("persist", 2, 1, 1, 1),
    ("getex", -2, 1, 1, 1),
    ("getdel", 2, 1, 1, 1),
    ("strlen", 2, 1, 1, 1),
    ("getrange", 4, 1, 1, 1),
    ("substr", 4, 1, 1, 1),
    ("type", 2, 1, 1, 1),
    ("unlink", -2, 1, -1, 1),
    ("touch", -2, 1, -1, 1),
    ("randomkey", 1, 0, 0, 0),
    ("object", -2, 2, 2, 1),
    ("flushdb", -1, 0, 0, 0),
    ("flushall", -1, 0, 0, 0),
    ("setnx", 3, 1, 1, 1),
    ("getset", 3, 1, 1, 1),
    ("incr", 2, 1, 1, 1),
    ("decr", 2, 1, 1, 1),
    ("incrby", 3, 1, 1, 1),
    ("decrby", 3, 1, 1, 1),
    ("incrbyfloat", 3, 1, 1, 1),
    ("append", 3, 1, 1, 1),
    ("setrange", 4, 1, 1, 1),
    ("delifeq", 3, 1, 1, 1),
    ("delex", -2, 1, 1, 1),
    ("lpush", -3, 1, 1, 1),
    ("rpush", -3, 1, 1, 1),
    ("lpushx", -3, 1, 1, 1),
    ("rpushx", -3, 1, 1, 1),
    ("lpop", -2, 1, 1, 1),
    ("rpop", -2, 1, 1, 1),
    ("lrange", 4, 1, 1, 1),
    ("llen", 2, 1, 1, 1),
    ("lindex", 3, 1, 1, 1),
    ("lset", 4, 1, 1, 1),
    ("lrem", 4, 1, 1, 1),
    ("ltrim", 4, 1, 1, 1),
    ("linsert", 5, 1, 1, 1),
    ("lpos", -3, 1, 1, 1),
    ("lmove", 5, 1, 2, 1),
    ("rpoplpush", 3, 1, 2, 1),
    ("hset", -4, 1, 1, 1),
    ("hmset", -4, 1, 1, 1),
    ("hdel", -3, 1, 1, 1),
    ("hincrby", 4, 1, 1, 1),
    ("hincrbyfloat", 4, 1, 1, 1),
    ("hget", 3, 1, 1, 1),
    ("hmget", -3, 1, 1, 1),
    ("hgetall", 2, 1, 1, 1),
    ("hlen", 2, 1, 1, 1),
    ("hexists", 3, 1, 1, 1),
    ("hkeys", 2, 1, 1, 1),
    ("hvals", 2, 1, 1, 1),
    ("hstrlen", 3, 1, 1, 1),
    ("hrandfield", -2, 1, 1, 1),
    ("hscan", -3, 1, 1, 1),
    ("sadd", -3, 1, 1, 1),
    ("srem", -3, 1, 1, 1),
    ("smembers", 2, 1, 1, 1),
    ("sismember", 3, 1, 1, 1),
    ("smismember", -3, 1, 1, 1),
    ("scard", 2, 1, 1, 1),
    ("srandmember", -2, 1, 1, 1),
    ("sscan", -3, 1, 1, 1),
    ("sinter", -2, 1, -1, 1),
    ("sunion", -2, 1, -1, 1),
    ("sdiff", -2, 1, -1, 1),
    ("sintercard", -3, 2, -1, 1),
    ("zadd", -4, 1, 1, 1),
    ("zrem", -3, 1, 1, 1),
    ("zincrby", 4, 1, 1, 1),
    ("zscore", 3, 1, 1, 1),
    ("zmscore", -3, 1, 1, 1),
    ("zcard", 2, 1, 1, 1),
    ("zcount", 4, 1, 1, 1),
    ("zrange", -4, 1, 1, 1),
    ("zrangebyscore", -4, 1, 1, 1),
    ("zrevrangebyscore", -4, 1, 1, 1),
    ("zrevrange", -4, 1, 1, 1),
    ("zrank", -3, 1, 1, 1),
    ("zrevrank", -3, 1, 1, 1),
    ("zscan", -3, 1, 1, 1),
];

const CROSS_KEY: &str = "ERR this command changes several keys at once: that needs a \
    transaction across their replica sets, which kvstore does not have (each key's commands \
    are linearizable on their own; use them one key at a time)";
const NO_TRANSACTIONS: &str = "ERR MULTI/EXEC, WATCH and scripts are not served: kvstore has \
    no transactions across keys; single-key conditional commands (SET NX, SET IFEQ, DELIFEQ, \
    INCR, list pops) are linearizable and cover the usual uses";

const TAKES_ONCE: &str = "ERR this command takes or sets a member only if it is (not) there, \
    which a convergent collection cannot promise across replicas (two replicas may each see it \
    absent): not served; HSET, SADD/SREM and ZADD/ZREM are, and a list (LPUSH, LPOP) takes each \
    element exactly once";
const STORES_ACROSS_KEYS: &str = "ERR this command writes its result to another key: that \
    needs a transaction across both keys' replicas, which kvstore does not have; read the \
    result (SINTER, SUNION, SDIFF, ZRANGE) and write it";

/// Commands refused with the reason (not `unknown command`): what they would need.
const REFUSED: &[(&str, &str)] = &[
    ("msetnx", CROSS_KEY),
    ("rename", CROSS_KEY),
    ("renamenx", CROSS_KEY),
    ("copy", CROSS_KEY),
    ("smove", CROSS_KEY),
    ("hsetnx", TAKES_ONCE),
    ("spop", TAKES_ONCE),
    ("zpopmin", TAKES_ONCE),
    ("zpopmax", TAKES_ONCE),
    ("bzpopmin", TAKES_ONCE),
    ("bzpopmax", TAKES_ONCE),
    ("zmpop", TAKES_ONCE),
    ("bzmpop", TAKES_ONCE),
    ("sinterstore", STORES_ACROSS_KEYS),
    ("sunionstore", STORES_ACROSS_KEYS),
    ("sdiffstore", STORES_ACROSS_KEYS),
    ("zrangestore", STORES_ACROSS_KEYS),
    ("zunionstore", STORES_ACROSS_KEYS),
    ("zinterstore", STORES_ACROSS_KEYS),
    ("zdiffstore", STORES_ACROSS_KEYS),
    ("multi", NO_TRANSACTIONS),
    ("exec", NO_TRANSACTIONS),
    ("discard", NO_TRANSACTIONS),
    ("watch", NO_TRANSACTIONS),
    ("unwatch", NO_TRANSACTIONS),
    ("eval", NO_TRANSACTIONS),
    ("evalsha", NO_TRANSACTIONS),
    ("eval_ro", NO_TRANSACTIONS),
    ("evalsha_ro", NO_TRANSACTIONS),
    ("script", NO_TRANSACTIONS),
    ("fcall", NO_TRANSACTIONS),
    ("function", NO_TRANSACTIONS),
];

/// How to build one command's reply.
pub enum RespReply {
    /// Bytes decided at decode time (PING, ECHO, errors, CONFIG, ...).
    Ready(Vec<u8>),
    /// GET: the value or nil.
    Value,
    /// SET, MSET: `+OK` once every write succeeded.
    Written,
    /// DEL: how many of the keys were live before.
    Deleted,
    /// EXISTS: how many of the keys exist.
    Existing,
    /// MGET: an array of values or nils.
    Values,
    /// CONFIG GET of these (lower-cased) parameters: the node's settings, at encode time.
    Config(Vec<String>),
    DbSize,
    /// INFO of these sections (lower-cased; empty: all).
    Info(Vec<String>),
    /// `+OK`, then close.
    Quit,
    /// AUTH: `+OK`, or the refusal.
    Auth,
    /// SCAN: `[cursor, [keys]]`; KEYS: `[keys]`.
    Scan,
    Keys,
    /// HELLO with AUTH: these bytes once the AUTH succeeded, else the refusal.
    Hello(Vec<u8>),
    /// TTL, PTTL, EXPIRETIME, PEXPIRETIME of the key read.
    Ttl(TtlQuery),
    /// A conditional command's reply (`resp_conditional`).
    Conditional(conditional::Shape),
    /// STRLEN: the value's length, 0 when missing.
    Strlen,
    /// GETRANGE, SUBSTR: part of the value, empty when missing.
    Range(string::Range),
    /// TYPE: `string` or `none`.
    Type,
    /// OBJECT ENCODING / REFCOUNT: nil when missing.
    Object(keyspace::Object),
    /// RANDOMKEY: the first key of the first page (from a random point, then from the start).
    RandomKey,
    /// A hash, set or sorted-set write (`resp_collection`): its reply.
    CollectionWrite,
    /// A hash, set or sorted-set read from the joined state of each key read.
    CollectionRead(collection::Read),
}

/// Per-connection state: the client name and the protocol version (2 until `HELLO 3`).
pub struct RespFront {
    name: Option<Vec<u8>>,
    proto: u8,
    /// What this connection has proven (`None` in unit tests: everything allowed).
    session: Option<Rc<Session>>,
}

impl Default for RespFront {
    fn default() -> RespFront {
        RespFront {
            name: None,
            proto: 2,
            session: None,
        }
    }
}

impl RespFront {
    pub fn new(session: Rc<Session>) -> RespFront {
        RespFront {
            session: Some(session),
            ..RespFront::default()
        }
    }
}

/// Commands served before AUTH (as Redis serves them).
const BEFORE_AUTH: &[&str] = &["ping", "auth", "hello", "quit"];

fn err(text: &str) -> RespReply {
    let mut out = Vec::new();
    resp::error(&mut out, text);
    RespReply::Ready(out)
}

fn simple(text: &str) -> RespReply {
    let mut out = Vec::new();
    resp::simple(&mut out, text);
    RespReply::Ready(out)
}

/// The first bad key or oversized value among key-value `pairs`, as an error reply.
fn check_writes(pairs: &[&[u8]], max_value_bytes: usize) -> Option<RespReply> {
    if let Some(e) = check_keys(pairs.iter().step_by(2).copied()) {
        return Some(e);
    }
    check_values(pairs.iter().skip(1).step_by(2).copied(), max_value_bytes)
}

/// The first value past `max_value_bytes` among `values`, as an error reply.
fn check_values<'a>(
    mut values: impl Iterator<Item = &'a [u8]>,
    max_value_bytes: usize,
) -> Option<RespReply> {
    values.find(|v| v.len() > max_value_bytes).map(|v| {
        err(&format!(
            "ERR value of {} bytes exceeds the limit of {max_value_bytes}",
            v.len()
        ))
    })
}

/// The first bad key among `keys`, as an error reply.
fn check_keys<'a>(mut keys: impl Iterator<Item = &'a [u8]>) -> Option<RespReply> {
    keys.find(|k| !(KEY_BYTES_MIN..=KEY_BYTES_MAX).contains(&k.len()))
        .map(|k| {
            err(&format!(
                "ERR key length {} outside {KEY_BYTES_MIN}..={KEY_BYTES_MAX}",
                k.len()
            ))
        })
}

/// Hand the native SCAN request to `op`: cursor and count in the key, the glob in the value
/// (count 0: every key, as KEYS).
fn scan_op(cursor: u64, count: u32, pattern: &[u8], op: &mut dyn FnMut(Request<'_>)) {
    let key = crate::wire::scan::encode_cursor(cursor, count);
    op(Request::new(Opcode::Scan, &key, pattern));
}

/// `SCAN cursor [MATCH pattern] [COUNT n] [TYPE string]`.
fn scan(rest: &[&[u8]], op: &mut dyn FnMut(Request<'_>)) -> RespReply {
    let Some(cursor) = std::str::from_utf8(rest[0])
        .ok()
        .and_then(|c| c.parse::<u64>().ok())
    else {
        return err("ERR invalid cursor");
    };
    let (mut pattern, mut count, mut opts): (&[u8], u32, &[&[u8]]) = (b"", 10, &rest[1..]);
    while let [opt, value, tail @ ..] = opts {
        if opt.eq_ignore_ascii_case(b"match") {
            pattern = value;
        } else if opt.eq_ignore_ascii_case(b"count") {
            match std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse::<u32>().ok())
            {
                Some(n) if n > 0 => count = n,
                _ => return err("ERR value is not an integer or out of range"),
            }
        } else if opt.eq_ignore_ascii_case(b"type") {
            if !value.eq_ignore_ascii_case(b"string") {
                // every kvstore value is a string: nothing of another type
                pattern = b"[]";
            }
        } else {
            return err("ERR syntax error");
        }
        opts = tail;
    }
    if !opts.is_empty() {
        return err("ERR syntax error");
    }
    scan_op(cursor, count, pattern, op);
    RespReply::Scan
}

fn arity_ok(arity: i64, argc: usize) -> bool {
    if arity >= 0 {
        argc as i64 == arity
    } else {
        argc as i64 >= -arity
    }
}

/// The error line of the first failed operation: Redis's own wording where Redis has one
/// (`-OOM` for a write refused at `--max-memory`), else `-ERR` and our message.
fn first_failure(results: &[OpResult]) -> Option<String> {
    results.iter().find_map(|r| match r {
        OpResult::Failed {
            status: Status::OutOfMemory,
            ..
        } => Some(OOM_ERROR.to_string()),
        // NOAUTH, WRONGPASS, DENIED: Redis's own prefixes, as clients match on them.
        OpResult::Failed {
            status: Status::Unauthorized,
            message,
        } => Some(message.clone()),
        OpResult::Failed { message, .. } => Some(format!("ERR {message}")),
        _ => None,
    })
}

/// The values a conditional command carries (each held to the value limit).
fn command_values(change: &crate::core::consensus::change::Change) -> Vec<&[u8]> {
    use crate::core::consensus::change::{Change, Cond};
    fn cond_value(c: &Cond) -> Option<&[u8]> {
        match c {
            Cond::IfEq(v) | Cond::IfNe(v) => Some(v.as_slice()),
            _ => None,
        }
    }
    let (a, b) = match change {
        Change::Set { value, cond, .. } => (Some(value.as_slice()), cond_value(cond)),
        Change::Append(v) => (Some(v.as_slice()), None),
        Change::SetRange { bytes, .. } => (Some(bytes.as_slice()), None),
        Change::Del(cond) => (cond_value(cond), None),
        _ => (None, None),
    };
    [a, b].into_iter().flatten().collect()
}

/// Redis's answer to a write past `maxmemory` (clients match on the `OOM` prefix).
const OOM_ERROR: &str = "OOM command not allowed when used memory > 'maxmemory'.";

impl RespFront {
    /// Plan one command: its reply, after handing every key operation to `op`.
    fn plan(
        &mut self,
        args: &[&[u8]],
        max_value_bytes: usize,
        op: &mut dyn FnMut(Request<'_>),
    ) -> RespReply {
        if list::BLOCKING_NAMES
            .iter()
            .any(|b| b.as_bytes().eq_ignore_ascii_case(args[0]))
        {
            return err(list::BLOCKING);
        }
        if let Some((_, why)) = REFUSED
            .iter()
            .find(|(n, _)| n.as_bytes().eq_ignore_ascii_case(args[0]))
        {
            return err(why);
        }
        // Matched case-insensitively in place: no allocation per command.
        let Some(&(name, arity, ..)) = COMMANDS
            .iter()
            .find(|c| c.0.as_bytes().eq_ignore_ascii_case(args[0]))
        else {
            let echo = |a: &[u8]| {
                String::from_utf8_lossy(&a[..a.len().min(UNKNOWN_COMMAND_ECHO_BYTES_MAX)])
                    .into_owned()
            };
            let mut text = format!(
                "ERR unknown command '{}', with args beginning with: ",
                echo(args[0])
            );
            for a in args.iter().skip(1).take(UNKNOWN_COMMAND_ECHO_ARGS_MAX) {
                text.push_str(&format!("'{}' ", echo(a)));
            }
            return err(&text);
        };
        if !arity_ok(arity, args.len()) {
            return err(&format!(
                "ERR wrong number of arguments for '{name}' command"
            ));
        }
        let rest = &args[1..];
        if let Some(s) = &self.session {
            if !s.client_ok() && !BEFORE_AUTH.contains(&name) {
                return err(s.protected_refusal());
            }
        }
        let conditional_set = name == "set" && conditional::set_is_conditional(&rest[2..]);
        if !rest.is_empty() && (name != "set" || conditional_set) {
            if list::destination(name, rest).is_some_and(|d| d != rest[0]) {
                return err(list::ACROSS_KEYS);
            }
            let planned = conditional::plan(name, &rest[1..], wall_clock_ms(), max_value_bytes)
                .or_else(|| list::plan(name, &rest[1..]))
                .map(|p| p.map(|(c, shape)| (c.limited(max_value_bytes), shape)));
            if let Some(planned) = planned {
                return match planned {
                    Ok((command, shape)) => {
                        if let Some(e) = check_keys(rest[..1].iter().copied()) {
                            return e;
                        }
                        let values = command_values(&command.change);
                        if let Some(e) = check_values(values.into_iter(), max_value_bytes) {
                            return e;
                        }
                        consensus(rest[0], &command, shape, op)
                    }
                    Err(e) => err(&e),
                };
            }
        }
        if let Some(planned) = collection::plan(name, rest) {
            return match planned {
                Ok(collection::Plan::Write(command)) => {
                    if let Some(e) = check_keys(rest[..1].iter().copied()) {
                        return e;
                    }
                    let body = crate::wire::collection::encode_command(&command);
                    op(Request::new(Opcode::Collection, rest[0], &body));
                    RespReply::CollectionWrite
                }
                Ok(collection::Plan::Read(read, keys)) => {
                    if let Some(e) = check_keys(keys.iter().copied()) {
                        return e;
                    }
                    // a read of some fields asks the replicas for those alone
                    let fields = read
                        .fields()
                        .map(|f| crate::core::crdt::collection::encode_fields(&f))
                        .unwrap_or_default();
                    for k in keys {
                        op(Request::new(Opcode::Get, k, &fields));
                    }
                    RespReply::CollectionRead(read)
                }
                Err(e) => err(&e),
            };
        }
        match name {
            "ping" => match rest {
                [] => simple("PONG"),
                [msg] => bulk(msg),
                _ => err("ERR wrong number of arguments for 'ping' command"),
            },
            "echo" => bulk(rest[0]),
            "get" => {
                if let Some(e) = check_keys(rest.iter().copied()) {
                    return e;
                }
                op(Request::new(Opcode::Get, rest[0], &[]));
                RespReply::Value
            }
            "set" => {
                let ttl = match expiry::options(&rest[2..], wall_clock_ms(), true, name) {
                    Ok(t) => t,
                    Err(e) => return err(&e),
                };
                self.timed_write(rest[0], rest[1], ttl, max_value_bytes, op)
            }
            "setex" | "psetex" => {
                let unit: &[u8] = if name == "setex" { b"ex" } else { b"px" };
                match expiry::positive_expiry(unit, rest[1], wall_clock_ms(), name) {
                    Ok(at) => self.timed_write(rest[0], rest[2], Ttl::At(at), max_value_bytes, op),
                    Err(e) => err(&e),
                }
            }
            "expire" | "pexpire" | "expireat" | "pexpireat" => {
                if let Some(e) = check_keys(rest.iter().take(1).copied()) {
                    return e;
                }
                let unit_ms = name.starts_with('p');
                let absolute = name.ends_with("at");
                let cond = match expiry::expire_condition(&rest[2..]) {
                    Ok(c) => c,
                    Err(e) => return err(&e),
                };
                match expiry::expire_at(rest[1], unit_ms, absolute, wall_clock_ms(), name) {
                    Ok(at) => consensus_expiry(rest[0], Some(at), cond, false, op),
                    Err(e) => err(&e),
                }
            }
            "ttl" | "pttl" | "expiretime" | "pexpiretime" => {
                if let Some(e) = check_keys(rest.iter().copied()) {
                    return e;
                }
                op(Request::new(Opcode::Get, rest[0], &[]));
                RespReply::Ttl(TtlQuery {
                    unit_ms: name.starts_with('p'),
                    absolute: name.ends_with("time"),
                })
            }
            "persist" | "getex" => {
                if let Some(e) = check_keys(rest.iter().take(1).copied()) {
                    return e;
                }
                let ttl = match expiry::options(&rest[1..], wall_clock_ms(), false, name) {
                    Ok(t) => t,
                    Err(e) => return err(&e),
                };
                match (name, ttl) {
                    ("persist", _) => consensus_expiry(rest[0], None, ExpiryCond::Xx, false, op),
                    (_, Ttl::Unset) => {
                        op(Request::new(Opcode::Get, rest[0], &[]));
                        RespReply::Value
                    }
                    (_, Ttl::At(at)) => {
                        consensus_expiry(rest[0], Some(at), ExpiryCond::Always, true, op)
                    }
                    (_, _) => consensus_expiry(rest[0], None, ExpiryCond::Always, true, op),
                }
            }
            "mset" => {
                if rest.len() % 2 != 0 {
                    return err("ERR wrong number of arguments for 'mset' command");
                }
                self.writes(rest, None, max_value_bytes, op)
            }
            "del" | "unlink" | "exists" | "touch" | "mget" => {
                if let Some(e) = check_keys(rest.iter().copied()) {
                    return e;
                }
                let (opcode, reply) = match name {
                    "del" | "unlink" => (Opcode::Delete, RespReply::Deleted),
                    "exists" | "touch" => (Opcode::Get, RespReply::Existing),
                    _ => (Opcode::Get, RespReply::Values),
                };
                for k in rest {
                    op(Request::new(opcode, k, &[]));
                }
                reply
            }
            "strlen" | "getrange" | "substr" | "type" => {
                if let Some(e) = check_keys(rest[..1].iter().copied()) {
                    return e;
                }
                let reply = match name {
                    "strlen" => RespReply::Strlen,
                    "type" => RespReply::Type,
                    _ => match string::range(rest[1], rest[2]) {
                        Ok(r) => RespReply::Range(r),
                        Err(e) => return err(e),
                    },
                };
                op(Request::new(Opcode::Get, rest[0], &[]));
                reply
            }
            "object" => object(rest, op),
            "randomkey" => {
                scan_op(keyspace::random_cursor(), 1, b"", op);
                scan_op(0, 1, b"", op);
                RespReply::RandomKey
            }
            "flushdb" | "flushall" => {
                let mode_ok = match rest {
                    [] => true,
                    [m] => m.eq_ignore_ascii_case(b"sync") || m.eq_ignore_ascii_case(b"async"),
                    _ => false,
                };
                if !mode_ok {
                    return err("ERR syntax error");
                }
                op(Request::new(Opcode::FlushAll, b"", b""));
                RespReply::Written
            }
            "dbsize" => RespReply::DbSize,
            "info" => RespReply::Info(
                rest.iter()
                    .map(|a| String::from_utf8_lossy(a).to_ascii_lowercase())
                    .filter(|a| !matches!(a.as_str(), "all" | "everything" | "default"))
                    .collect(),
            ),
            "command" => command(rest),
            "config" => config(rest),
            "client" => self.client(rest),
            "select" => match rest[0] {
                b"0" => simple("OK"),
                _ => err("ERR DB index is out of range"),
            },
            "hello" => self.hello(rest, op),
            "auth" => self.auth(rest, op),
            "scan" => scan(rest, op),
            "keys" => {
                scan_op(0, 0, rest[0], op);
                RespReply::Keys
            }
            _ => RespReply::Quit,
        }
    }

    /// SET and SETEX: a PUT (expiring at `Ttl::At`), or with KEEPTTL an UPDATE that keeps the
    /// key's expiry.
    fn timed_write(
        &mut self,
        key: &[u8],
        value: &[u8],
        ttl: Ttl,
        max_value_bytes: usize,
        op: &mut dyn FnMut(Request<'_>),
    ) -> RespReply {
        match ttl {
            Ttl::Keep => {
                if let Some(e) = check_writes(&[key, value], max_value_bytes) {
                    return e;
                }
                op(expiry::update(key, value, Ttl::Keep, false));
                RespReply::Written
            }
            Ttl::At(at) => self.writes(&[key, value], Some(at), max_value_bytes, op),
            Ttl::Unset | Ttl::Persist => self.writes(&[key, value], None, max_value_bytes, op),
        }
    }

    /// SET and MSET: a PUT per pair, each expiring at `at` if given.
    fn writes(
        &mut self,
        pairs: &[&[u8]],
        at: Option<u64>,
        max_value_bytes: usize,
        op: &mut dyn FnMut(Request<'_>),
    ) -> RespReply {
        if let Some(e) = check_writes(pairs, max_value_bytes) {
            return e;
        }
        for kv in pairs.chunks(2) {
            op(expiry::put(kv[0], kv[1], at));
        }
        RespReply::Written
    }

    /// HELLO [2|3 [SETNAME name]]: switch protocol version, answer with the server's facts.
    /// RESP3 is served because current clients (redis-py 8) open with `HELLO 3` and do not
    /// fall back; our replies differ between the two only in null and map.
    /// `AUTH [user] password`: only the `default` user exists.
    fn auth(&mut self, rest: &[&[u8]], op: &mut dyn FnMut(Request<'_>)) -> RespReply {
        let (user, password): (&[u8], &[u8]) = match rest {
            [p] => (b"", p),
            [user, p] if *user == b"default" || *user == b"reader" => (user, p),
            [_, _] => return err(crate::server::front::auth::WRONGPASS),
            _ => return err("ERR syntax error"),
        };
        if self.session.as_ref().is_some_and(|s| !s.has_password()) {
            return err(
                "ERR AUTH <password> called without any password configured for the default \
                 user. Are you sure your configuration is correct?",
            );
        }
        op(Request::new(Opcode::Auth, user, password));
        RespReply::Auth
    }

    fn hello(&mut self, rest: &[&[u8]], op: &mut dyn FnMut(Request<'_>)) -> RespReply {
        let proto = match rest.first().copied() {
            None => self.proto,
            Some(b"2") => 2,
            Some(b"3") => 3,
            Some(_) => return err("NOPROTO unsupported protocol version"),
        };
        let mut opts = rest.get(1..).unwrap_or(&[]);
        let mut auth: Option<(&[u8], &[u8])> = None;
        while let [opt, more @ ..] = opts {
            match more {
                [user, pass, tail @ ..] if opt.eq_ignore_ascii_case(b"auth") => {
                    auth = Some((user, pass));
                    opts = tail;
                }
                [name, tail @ ..] if opt.eq_ignore_ascii_case(b"setname") => {
                    self.name = (!name.is_empty()).then(|| name.to_vec());
                    opts = tail;
                }
                _ => return err("ERR syntax error in HELLO option"),
            }
        }
        if auth.is_none() && self.session.as_ref().is_some_and(|s| !s.client_ok()) {
            return err(self.session.as_ref().map_or("", |s| s.protected_refusal()));
        }
        let auth_reply = match auth {
            Some((user, pass)) => match self.auth(&[user, pass], op) {
                RespReply::Auth => true,
                refused => return refused,
            },
            None => false,
        };
        self.proto = proto;
        let mut out = Vec::new();
        resp::map(&mut out, 7, proto);
        for (k, v) in [("server", "redis"), ("version", REDIS_COMPAT_VERSION)] {
            resp::bulk(&mut out, k.as_bytes());
            resp::bulk(&mut out, v.as_bytes());
        }
        resp::bulk(&mut out, b"proto");
        resp::integer(&mut out, i64::from(proto));
        resp::bulk(&mut out, b"id");
        resp::integer(&mut out, 0);
        for (k, v) in [("mode", "standalone"), ("role", "master")] {
            resp::bulk(&mut out, k.as_bytes());
            resp::bulk(&mut out, v.as_bytes());
        }
        resp::bulk(&mut out, b"modules");
        resp::array(&mut out, 0);
        if auth_reply {
            RespReply::Hello(out)
        } else {
            RespReply::Ready(out)
        }
    }

    fn client(&mut self, rest: &[&[u8]]) -> RespReply {
        let sub = String::from_utf8_lossy(rest[0]).to_ascii_lowercase();
        match (sub.as_str(), &rest[1..]) {
            ("setname", [name]) => {
                if name.iter().any(|b| *b <= b' ' || *b > b'~') {
                    return err(
                        "ERR Client names cannot contain spaces, newlines or special characters.",
                    );
                }
                self.name = (!name.is_empty()).then(|| name.to_vec());
                simple("OK")
            }
            ("getname", []) => match &self.name {
                Some(n) => bulk(n),
                None => {
                    let mut out = Vec::new();
                    resp::null(&mut out, self.proto);
                    RespReply::Ready(out)
                }
            },
            ("setinfo", [_, _]) => simple("OK"),
            _ => err(&format!(
                "ERR unknown subcommand or wrong number of arguments for 'client|{sub}'"
            )),
        }
    }
}

/// One native CONSENSUS request running `command` on `key`, its reply shown as `shape`.
fn consensus(
    key: &[u8],
    command: &RoundCommand,
    shape: conditional::Shape,
    op: &mut dyn FnMut(Request<'_>),
) -> RespReply {
    let body = crate::wire::consensus::encode_command(command);
    op(Request::new(Opcode::Consensus, key, &body));
    RespReply::Conditional(shape)
}

/// EXPIRE and friends (`at`), PERSIST (`at: None`), GETEX with an option (`get`): one
/// consensus command (`Change::Expiry`): an integer reply, or GETEX's value.
fn consensus_expiry(
    key: &[u8],
    at: Option<u64>,
    cond: ExpiryCond,
    get: bool,
    op: &mut dyn FnMut(Request<'_>),
) -> RespReply {
    let command = RoundCommand::of(Change::Expiry { at, cond, get });
    let shape = if get {
        conditional::Shape::Bulk
    } else {
        conditional::Shape::Int
    };
    consensus(key, &command, shape, op)
}

fn bulk(bytes: &[u8]) -> RespReply {
    let mut out = Vec::new();
    resp::bulk(&mut out, bytes);
    RespReply::Ready(out)
}

/// COMMAND (our table), COMMAND COUNT, COMMAND DOCS (empty: clients fall back to their own).
fn command(rest: &[&[u8]]) -> RespReply {
    let sub = rest
        .first()
        .map(|s| String::from_utf8_lossy(s).to_ascii_lowercase());
    let mut out = Vec::new();
    match sub.as_deref() {
        None => {
            resp::array(&mut out, COMMANDS.len());
            for (name, arity, first, last, step) in COMMANDS {
                resp::array(&mut out, 6);
                resp::bulk(&mut out, name.as_bytes());
                resp::integer(&mut out, *arity);
                resp::array(&mut out, 0);
                resp::integer(&mut out, *first);
                resp::integer(&mut out, *last);
                resp::integer(&mut out, *step);
            }
        }
        Some("count") => resp::integer(&mut out, COMMANDS.len() as i64),
        Some("docs") => resp::array(&mut out, 0),
        Some(other) => {
            return err(&format!(
                "ERR unknown subcommand '{other}'. Try COMMAND, COMMAND COUNT or COMMAND DOCS."
            ))
        }
    }
    RespReply::Ready(out)
}

/// `OBJECT ENCODING|REFCOUNT|FREQ|IDLETIME key`, `OBJECT HELP`.
fn object(rest: &[&[u8]], op: &mut dyn FnMut(Request<'_>)) -> RespReply {
    let sub = String::from_utf8_lossy(rest[0]).to_ascii_lowercase();
    let ask = match (sub.as_str(), rest.len()) {
        ("help", 1) => {
            let mut out = Vec::new();
            resp::array(&mut out, keyspace::OBJECT_HELP.len());
            for line in keyspace::OBJECT_HELP {
                resp::simple(&mut out, line);
            }
            return RespReply::Ready(out);
        }
        ("encoding", 2) => keyspace::Object::Encoding,
        ("refcount", 2) => keyspace::Object::RefCount,
        ("freq", 2) => return err(keyspace::FREQ_NOT_TRACKED),
        ("idletime", 2) => return err(keyspace::IDLETIME_NOT_TRACKED),
        _ => {
            return err(&format!(
                "ERR unknown subcommand or wrong number of arguments for '{sub}'. Try OBJECT HELP."
            ))
        }
    };
    if let Some(e) = check_keys(rest[1..].iter().copied()) {
        return e;
    }
    op(Request::new(Opcode::Get, rest[1], &[]));
    RespReply::Object(ask)
}

/// What CONFIG SET could change, if it were served: each is a flag of `kvstore-node`, read at
/// start (a running node's settings never change under its clients).
const SET_AT_START: &str = "--max-memory (maxmemory), --idle-timeout-ms (timeout), \
    --max-value-bytes (proto-max-bulk-len), --fsync (appendfsync), --max-connections \
    (maxclients), --password-file (requirepass)";

/// CONFIG GET answers the parameters tools ask for at start; CONFIG SET, RESETSTAT and REWRITE
/// are refused, naming the flags that set them.
fn config(rest: &[&[u8]]) -> RespReply {
    let sub = String::from_utf8_lossy(rest[0]).to_ascii_lowercase();
    if sub != "get" || rest.len() < 2 {
        return err(&format!(
            "ERR kvstore serves CONFIG GET only: settings are flags of kvstore-node, read at \
             start ({SET_AT_START}; see kvstore-node --help)"
        ));
    }
    RespReply::Config(
        rest[1..]
            .iter()
            .map(|p| String::from_utf8_lossy(p).to_ascii_lowercase())
            .collect(),
    )
}

/// The value of a CONFIG parameter, where tools expect one.
fn config_value(param: &str, cx: &ReplyCtx<'_>) -> Option<String> {
    let fsync = cx.ctx.node.fsync;
    Some(match param {
        "save" => String::new(),
        "appendonly" => if fsync == FsyncMode::None {
            "no"
        } else {
            "yes"
        }
        .into(),
        "appendfsync" => match fsync {
            FsyncMode::None => "no",
            FsyncMode::Interval => "everysec",
            FsyncMode::Batch => "always",
        }
        .into(),
        "databases" => "1".into(),
        "maxmemory" => "0".into(),
        "proto-max-bulk-len" => cx.ctx.node.max_value_bytes.to_string(),
        "timeout" => (cx.ctx.node.idle_timeout_ms / 1000).to_string(),
        _ => return None,
    })
}

fn encode_config(out: &mut Vec<u8>, params: &[String], cx: &ReplyCtx<'_>, proto: u8) {
    let pairs: Vec<(&String, String)> = params
        .iter()
        .filter_map(|p| config_value(p, cx).map(|v| (p, v)))
        .collect();
    resp::map(out, pairs.len(), proto);
    for (k, v) in pairs {
        resp::bulk(out, k.as_bytes());
        resp::bulk(out, v.as_bytes());
    }
}

/// Stored bytes that are not a cell: an internal error, never a value.
fn encode_error(out: &mut Vec<u8>, e: &crate::core::cell::CellError) -> bool {
    resp::error(out, &format!("ERR {e}"));
    false
}

fn encode_value(out: &mut Vec<u8>, result: &OpResult, proto: u8) {
    match result.live_cell(wall_clock_ms()) {
        Ok(Some((c, _))) if c.kind != Kind::String => resp::error(out, WRONGTYPE),
        Ok(Some((c, _))) => resp::bulk(out, c.value),
        Ok(None) => resp::null(out, proto),
        Err(e) => resp::error(out, &format!("ERR {e}")),
    }
}

/// Keep only the named sections (`# Name` blocks) of an INFO text; none named: all of it.
fn only_sections(text: &str, sections: &[String]) -> String {
    if sections.is_empty() {
        return text.to_string();
    }
    text.split("\r\n\r\n")
        .filter(|block| {
            let name = block
                .strip_prefix("# ")
                .and_then(|b| b.split("\r\n").next())
                .unwrap_or_default()
                .to_ascii_lowercase();
            sections.contains(&name)
        })
        .collect::<Vec<_>>()
        .join("\r\n\r\n")
}

/// The INFO text: Redis's sections where tools read them, and our own.
fn info_text(cx: &ReplyCtx<'_>, keys: usize) -> String {
    let node = &cx.ctx.node;
    let view = cx.view;
    let rep = view.effective();
    let mut s = String::new();
    s.push_str("# Server\r\n");
    s.push_str(&format!("redis_version:{REDIS_COMPAT_VERSION}\r\n"));
    s.push_str(&format!(
        "kvstore_version:{}\r\n",
        env!("CARGO_PKG_VERSION")
    ));
    s.push_str("redis_mode:standalone\r\nos:Linux\r\narch_bits:64\r\n");
    s.push_str(&format!("process_id:{}\r\n", std::process::id()));
    s.push_str(&format!("tcp_port:{}\r\n", node.addr.port()));
    s.push_str(&format!(
        "uptime_in_seconds:{}\r\n",
        node.started.elapsed().as_secs()
    ));
    s.push_str("\r\n# Clients\r\n");
    s.push_str(&format!(
        "connected_clients:{}\r\n",
        node.connections.load(std::sync::atomic::Ordering::Relaxed)
    ));
    s.push_str("\r\n# Memory\r\n");
    let used: u64 = cx
        .report
        .map(|r| r.cores.iter().map(|c| c.memory_bytes).sum())
        .unwrap_or(0);
    s.push_str(&format!("used_memory:{used}\r\n"));
    let replies: u64 = cx
        .report
        .map(|r| r.cores.iter().map(|c| c.reply_bytes).sum())
        .unwrap_or(0);
    // Redis 7's name for what clients' buffers hold (here: replies not yet sent)
    s.push_str(&format!("mem_clients_normal:{replies}\r\n"));
    s.push_str(&format!("maxmemory:{}\r\n", node.max_memory.unwrap_or(0)));
    s.push_str("maxmemory_policy:noeviction\r\n");
    s.push_str("\r\n# Persistence\r\n");
    s.push_str(&format!(
        "aof_enabled:{}\r\n",
        u8::from(node.fsync != FsyncMode::None)
    ));
    s.push_str("\r\n# Replication\r\nrole:master\r\nconnected_slaves:0\r\n");
    s.push_str("\r\n# Cluster\r\ncluster_enabled:0\r\n");
    s.push_str("\r\n# Keyspace\r\n");
    if keys > 0 {
        s.push_str(&format!("db0:keys={keys},expires=0,avg_ttl=0\r\n"));
    }
    s.push_str("\r\n# Kvstore\r\n");
    s.push_str(&format!("node_id:{}\r\n", node.node_id));
    s.push_str(&format!("cores:{}\r\n", node.cores));
    s.push_str(&format!(
        "replication:n={},r={},w={}\r\n",
        rep.n, rep.r, rep.w
    ));
    s.push_str(&format!("members:{}\r\n", view.listing.len()));
    for u in &view.listing {
        s.push_str(&format!(
            "member:{},{},{},inc={},role={}\r\n",
            u.id,
            u.addr,
            u.status.as_str(),
            u.incarnation,
            u.role.as_str()
        ));
    }
    let clock = node.clock.stats();
    s.push_str(&format!(
        "clock_fenced:{}\r\nclock_offset_ms:{}\r\nclock_max_offset_ms:{}\r\n",
        u8::from(clock.fenced),
        clock.ahead_ms,
        clock.bound_ms
    ));
    s
}

impl Front for RespFront {
    type Reply = RespReply;
    type Fatal = DecodeError;

    fn decode(
        &mut self,
        buf: &[u8],
        max_value_bytes: usize,
        op: &mut dyn FnMut(Request<'_>),
    ) -> Result<Option<(RespReply, usize)>, DecodeError> {
        let limit = max_value_bytes.max(KEY_BYTES_MAX);
        let Some((Command { args }, used)) = resp::decode_command(buf, limit)? else {
            return Ok(None);
        };
        if args.is_empty() {
            return Ok(Some((RespReply::Ready(Vec::new()), used)));
        }
        Ok(Some((self.plan(&args, max_value_bytes, op), used)))
    }

    fn complete(&self, buf: &[u8], max_value_bytes: usize) -> bool {
        let limit = max_value_bytes.max(KEY_BYTES_MAX);
        !matches!(resp::decode_command(buf, limit), Ok(None))
    }

    fn needs_report(reply: &RespReply) -> bool {
        matches!(reply, RespReply::DbSize | RespReply::Info(_))
    }

    fn encode(
        &mut self,
        out: &mut Vec<u8>,
        reply: RespReply,
        results: &mut [OpResult],
        cx: &ReplyCtx<'_>,
    ) -> bool {
        let failure = first_failure(results);
        match reply {
            RespReply::Ready(bytes) => out.extend_from_slice(&bytes),
            RespReply::Config(params) => encode_config(out, &params, cx, self.proto),
            _ if failure.is_some() => resp::error(out, &failure.unwrap_or_default()),
            RespReply::Value => match results.first() {
                Some(r) => encode_value(out, r, self.proto),
                None => resp::null(out, self.proto),
            },
            RespReply::Written | RespReply::Auth => resp::simple(out, "OK"),
            RespReply::Conditional(shape) => {
                let answer = match results.first() {
                    Some(OpResult::Value { value, .. }) => {
                        crate::wire::consensus::decode_reply(value)
                    }
                    _ => None,
                };
                conditional::encode(out, shape, answer, self.proto)
            }
            RespReply::CollectionWrite => {
                collection::encode_write(out, results.first(), self.proto)
            }
            RespReply::CollectionRead(read) => {
                collection::encode_read(out, &read, results, self.proto, wall_clock_ms())
            }
            RespReply::Hello(bytes) => out.extend_from_slice(&bytes),
            RespReply::Scan | RespReply::Keys => {
                let page = match results.first() {
                    Some(OpResult::Value { value, .. }) => crate::wire::scan::decode_page(value),
                    _ => None,
                };
                match (page, &reply) {
                    (Some((cursor, keys)), RespReply::Scan) => {
                        resp::array(out, 2);
                        resp::bulk(out, cursor.to_string().as_bytes());
                        resp::array(out, keys.len());
                        for k in keys {
                            resp::bulk(out, k);
                        }
                    }
                    (Some((_, keys)), _) => {
                        resp::array(out, keys.len());
                        for k in keys {
                            resp::bulk(out, k);
                        }
                    }
                    (None, _) => resp::error(out, "ERR scan failed"),
                }
            }
            RespReply::Deleted => {
                let n = results
                    .iter()
                    .filter(|r| matches!(r, OpResult::Written { was_live: true, .. }))
                    .count();
                resp::integer(out, n as i64);
            }
            RespReply::Existing => {
                let now = wall_clock_ms();
                let n = results
                    .iter()
                    .filter(|r| matches!(r.live_cell(now), Ok(Some(_))))
                    .count();
                resp::integer(out, n as i64);
            }
            RespReply::Ttl(q) => match results.first().map(|r| r.live_cell(wall_clock_ms())) {
                Some(Err(e)) => resp::error(out, &format!("ERR {e}")),
                Some(Ok(c)) => {
                    let cell = c.map(|(c, _)| c);
                    resp::integer(out, expiry::ttl_reply(cell, q, wall_clock_ms()))
                }
                None => resp::integer(out, -2),
            },
            RespReply::Strlen | RespReply::Range(_) | RespReply::Type | RespReply::Object(_) => {
                let got = results.first().map(|r| r.live_cell(wall_clock_ms()));
                let cell = match got {
                    Some(Err(e)) => return encode_error(out, &e),
                    Some(Ok(c)) => c.map(|(c, _)| c),
                    None => None,
                };
                if let Some(c) = cell.filter(|c| c.kind == Kind::Collection) {
                    let state = crate::core::crdt::collection::Collection::decode(c.value).ok();
                    let ty = state.and_then(|s| s.kind(wall_clock_ms()));
                    match (reply, ty) {
                        (RespReply::Type, Some(t)) => resp::simple(out, t.name()),
                        (RespReply::Object(keyspace::Object::RefCount), _) => resp::integer(out, 1),
                        (RespReply::Object(_), Some(t)) => {
                            resp::bulk(out, collection::encoding(t).as_bytes())
                        }
                        _ => resp::error(out, WRONGTYPE),
                    }
                    return false;
                }
                if cell.is_some_and(|c| c.kind == Kind::List) {
                    match reply {
                        RespReply::Type => resp::simple(out, "list"),
                        RespReply::Object(keyspace::Object::RefCount) => resp::integer(out, 1),
                        RespReply::Object(_) => resp::bulk(out, b"quicklist"),
                        _ => resp::error(out, WRONGTYPE),
                    }
                    return false;
                }
                let value = cell.map(|c| c.value);
                match (reply, value) {
                    (RespReply::Strlen, v) => resp::integer(out, v.map_or(0, |v| v.len()) as i64),
                    (RespReply::Range(r), v) => {
                        resp::bulk(out, string::substring(v.unwrap_or_default(), r))
                    }
                    (RespReply::Type, v) => {
                        resp::simple(out, if v.is_some() { "string" } else { "none" })
                    }
                    (RespReply::Object(_), None) => resp::null(out, self.proto),
                    (RespReply::Object(keyspace::Object::RefCount), Some(_)) => {
                        resp::integer(out, 1)
                    }
                    (_, Some(v)) => resp::bulk(out, keyspace::string_encoding(v).as_bytes()),
                    (_, None) => resp::null(out, self.proto),
                }
            }
            RespReply::RandomKey => {
                let key = results.iter().find_map(|r| match r {
                    OpResult::Value { value, .. } => crate::wire::scan::decode_page(value)
                        .and_then(|(_, keys)| keys.first().map(|k| k.to_vec())),
                    _ => None,
                });
                match key {
                    Some(k) => resp::bulk(out, &k),
                    None => resp::null(out, self.proto),
                }
            }
            RespReply::Values => {
                resp::array(out, results.len());
                for r in results.iter() {
                    // MGET answers nil for a key that holds no string, as Redis does
                    match r.live_cell(wall_clock_ms()) {
                        Ok(Some((c, _))) if c.kind != Kind::String => resp::null(out, self.proto),
                        _ => encode_value(out, r, self.proto),
                    }
                }
            }
            RespReply::DbSize => {
                let keys = cx.report.map(|r| r.keys()).unwrap_or(0);
                resp::integer(out, keys as i64);
            }
            RespReply::Info(sections) => {
                let keys = cx.report.map(|r| r.keys()).unwrap_or(0);
                let text = only_sections(&info_text(cx, keys), &sections);
                resp::bulk(out, text.as_bytes());
            }
            RespReply::Quit => {
                resp::simple(out, "OK");
                return true;
            }
        }
        false
    }

    fn encode_fatal(&self, out: &mut Vec<u8>, e: &DecodeError) {
        resp::error(out, &format!("ERR Protocol error: {e}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An operation as planned: opcode, key, value.
    type PlannedOp = (u8, Vec<u8>, Vec<u8>);

    fn plan(args: &[&[u8]]) -> (Vec<u8>, Vec<PlannedOp>) {
        let mut front = RespFront::default();
        let mut ops = Vec::new();
        let reply = front.plan(args, 100, &mut |r: Request<'_>| {
            ops.push((r.opcode, r.key.to_vec(), r.value.to_vec()))
        });
        let bytes = match reply {
            RespReply::Ready(b) => b,
            _ => Vec::new(),
        };
        (bytes, ops)
    }

    #[test]
    fn keyed_commands_become_operations() {
        let (_, ops) = plan(&[b"SET", b"k", b"v"]);
        assert_eq!(ops, vec![(Opcode::Put as u8, b"k".to_vec(), b"v".to_vec())]);
        let (_, ops) = plan(&[b"mset", b"a", b"1", b"b", b"2"]);
        assert_eq!(ops.len(), 2);
        assert_eq!(ops[1], (Opcode::Put as u8, b"b".to_vec(), b"2".to_vec()));
        let (_, ops) = plan(&[b"DEL", b"a", b"b", b"c"]);
        assert!(ops.iter().all(|o| o.0 == Opcode::Delete as u8));
        assert_eq!(ops.len(), 3);
        let (_, ops) = plan(&[b"MGET", b"a", b"b"]);
        assert!(ops.iter().all(|o| o.0 == Opcode::Get as u8));
    }

    #[test]
    fn expiry_and_conditional_commands_become_their_requests() {
        let (put, get, update) = (Opcode::Put as u8, Opcode::Get as u8, Opcode::Update as u8);
        let consensus = Opcode::Consensus as u8;
        let cases: &[(&[&[u8]], u8)] = &[
            (&[b"SET", b"k", b"v", b"EX", b"10"], put),
            (&[b"SET", b"k", b"v", b"PXAT", b"10"], put),
            (&[b"SET", b"k", b"v", b"KEEPTTL"], update),
            (&[b"SETEX", b"k", b"10", b"v"], put),
            (&[b"PSETEX", b"k", b"10", b"v"], put),
            (&[b"EXPIRE", b"k", b"10"], consensus),
            (&[b"PEXPIREAT", b"k", b"10"], consensus),
            (&[b"EXPIRE", b"k", b"10", b"XX", b"LT"], consensus),
            (&[b"TTL", b"k"], get),
            (&[b"PEXPIRETIME", b"k"], get),
            (&[b"PERSIST", b"k"], consensus),
            (&[b"GETEX", b"k"], get),
            (&[b"GETEX", b"k", b"EX", b"5"], consensus),
            (&[b"GETEX", b"k", b"PERSIST"], consensus),
            (&[b"GETDEL", b"k"], Opcode::Consensus as u8),
            (
                &[b"SET", b"k", b"v", b"NX", b"EX", b"5"],
                Opcode::Consensus as u8,
            ),
            (&[b"INCR", b"k"], Opcode::Consensus as u8),
        ];
        for (args, opcode) in cases {
            let (bytes, ops) = plan(args);
            assert!(
                bytes.is_empty(),
                "{args:?}: {}",
                String::from_utf8_lossy(&bytes)
            );
            assert_eq!(ops.len(), 1, "{args:?}");
            assert_eq!(
                (ops[0].0, ops[0].1.as_slice()),
                (*opcode, &b"k"[..]),
                "{args:?}"
            );
        }
    }

    #[test]
    fn errors_are_clear_and_plan_nothing() {
        let cases: &[(&[&[u8]], &str)] = &[
            (
                &[b"XADD", b"s", b"*", b"f", b"v"],
                "-ERR unknown command 'XADD'",
            ),
            (
                &[b"HSET", b"h", b"f"],
                "-ERR wrong number of arguments for 'hset'",
            ),
            (
                &[b"SPOP", b"s"],
                "-ERR this command takes or sets a member only if",
            ),
            (
                &[b"ZADD", b"z", b"NX", b"1", b"m"],
                "-ERR ZADD NX, XX, GT and LT",
            ),
            (&[b"FLUSHALL", b"NOW"], "-ERR syntax error"),
            (&[b"OBJECT", b"FREQ", b"k"], "-ERR An LFU maxmemory policy"),
            (
                &[b"GETRANGE", b"k", b"0", b"x"],
                "-ERR value is not an integer",
            ),
            (
                &[b"GET"],
                "-ERR wrong number of arguments for 'get' command",
            ),
            (&[b"GET", b"a", b"b"], "-ERR wrong number of arguments"),
            (&[b"SET", b"k", b"v", b"NX", b"XX"], "-ERR syntax error"),
            (
                &[b"SET", b"k", b"v", b"EX", b"0"],
                "-ERR invalid expire time in 'set'",
            ),
            (
                &[b"SETEX", b"k", b"-1", b"v"],
                "-ERR invalid expire time in 'setex'",
            ),
            (
                &[b"EXPIRE", b"k", b"10", b"NX", b"GT"],
                "-ERR NX and XX, GT or LT options at the same time are not compatible",
            ),
            (
                &[b"PEXPIRE", b"k", b"10", b"GT", b"LT"],
                "-ERR GT and LT options at the same time are not compatible",
            ),
            (
                &[b"EXPIRE", b"k", b"ten", b"XY"],
                "-ERR Unsupported option XY",
            ),
            (&[b"EXPIRE", b"k", b"ten"], "-ERR value is not an integer"),
            (&[b"GETEX", b"k", b"KEEPTTL"], "-ERR syntax error"),
            (&[b"TTL", b""], "-ERR key length 0"),
            (
                &[b"MSET", b"a", b"1", b"b"],
                "-ERR wrong number of arguments",
            ),
            (&[b"SET", b"", b"v"], "-ERR key length 0"),
            (&[b"SELECT", b"1"], "-ERR DB index is out of range"),
            (&[b"HELLO", b"4"], "-NOPROTO"),
            // only the `default` user exists
            (&[b"HELLO", b"3", b"AUTH", b"u", b"p"], "-WRONGPASS"),
            (
                &[b"HELLO", b"3", b"BOGUS"],
                "-ERR syntax error in HELLO option",
            ),
            (
                &[b"CONFIG", b"SET", b"x", b"y"],
                "-ERR kvstore serves CONFIG GET only",
            ),
        ];
        for (args, want) in cases {
            let (bytes, ops) = plan(args);
            let text = String::from_utf8_lossy(&bytes);
            assert!(text.starts_with(want), "{args:?}: {text}");
            assert!(ops.is_empty());
        }
    }

    #[test]
    fn key_and_value_limits_at_and_past_the_boundary() {
        let key_at = vec![b'k'; KEY_BYTES_MAX];
        let key_past = vec![b'k'; KEY_BYTES_MAX + 1];
        assert_eq!(plan(&[b"GET", &key_at]).1.len(), 1);
        assert!(plan(&[b"GET", &key_past]).1.is_empty());
        assert!(plan(&[b"DEL", b"a", &key_past]).1.is_empty());
        let value_at = vec![b'v'; 100];
        let value_past = vec![b'v'; 101];
        assert_eq!(plan(&[b"SET", b"k", &value_at]).1.len(), 1);
        let (bytes, ops) = plan(&[b"SET", b"k", &value_past]);
        assert!(ops.is_empty());
        assert!(String::from_utf8_lossy(&bytes).contains("exceeds the limit of 100"));
    }

    #[test]
    fn client_name_round_trips() {
        let mut front = RespFront::default();
        let mut none = |_: Request<'_>| {};
        front.plan(&[b"CLIENT", b"SETNAME", b"bench"], 100, &mut none);
        match front.plan(&[b"client", b"getname"], 100, &mut none) {
            RespReply::Ready(b) => assert_eq!(b, b"$5\r\nbench\r\n"),
            _ => panic!("getname"),
        }
    }

    #[test]
    fn hello_3_switches_null_and_map_to_resp3() {
        let mut front = RespFront::default();
        let mut none = |_: Request<'_>| {};
        match front.plan(&[b"HELLO", b"3"], 100, &mut none) {
            RespReply::Ready(b) => assert!(b.starts_with(b"%7\r\n$6\r\nserver\r\n")),
            _ => panic!("hello"),
        }
        match front.plan(&[b"CLIENT", b"GETNAME"], 100, &mut none) {
            RespReply::Ready(b) => assert_eq!(b, b"_\r\n"),
            _ => panic!("getname"),
        }
        match front.plan(&[b"HELLO", b"2"], 100, &mut none) {
            RespReply::Ready(b) => assert!(b.starts_with(b"*14\r\n")),
            _ => panic!("hello"),
        }
    }

    #[test]
    fn info_sections_filter_by_name() {
        let text = "# Server\r\nredis_version:7\r\n\r\n# Keyspace\r\ndb0:keys=1\r\n\r\n# Kvstore\r\nx:1\r\n";
        assert_eq!(only_sections(text, &[]), text);
        let ks = only_sections(text, &["keyspace".into()]);
        assert!(
            ks.starts_with("# Keyspace") && !ks.contains("Server"),
            "{ks}"
        );
        let two = only_sections(text, &["server".into(), "kvstore".into()]);
        assert!(two.contains("redis_version") && two.contains("x:1") && !two.contains("db0"));
        assert_eq!(only_sections(text, &["nosuch".into()]), "");
    }

    #[test]
    fn arity_follows_redis_rules() {
        assert!(arity_ok(2, 2));
        assert!(!arity_ok(2, 3));
        assert!(arity_ok(-2, 2));
        assert!(arity_ok(-2, 5));
        assert!(!arity_ok(-2, 1));
    }
}
