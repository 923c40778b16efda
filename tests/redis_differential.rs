//! Differential test against Redis itself: seeded random sequences of the commands kvstore
//! serves, on a small key space, sent to a `redis-server` and to one node; every reply must be
//! the same bytes, except where Redis leaves the order unspecified (KEYS: compared as sets) or
//! the value depends on when it is read (TTL: compared as missing / no expiry / expiring).
//!
//! `redis-server` is installed by `.ci/run`; elsewhere this test says so and passes, except
//! under `CI=true`. `KV_DIFF_SEED=<n>` replays one seed, `KV_DIFF_SEEDS=<n>` sets how many run.

mod common;

mod seeds;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};

use common::*;

/// Commands per seed, and the keys each seed uses (both stores are flushed between seeds).
const COMMANDS_PER_SEED: usize = 150;
const KEYS: u32 = 5;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Conn {
    w: TcpStream,
    r: BufReader<TcpStream>,
}

impl Conn {
    fn connect(port: u16) -> Result<Conn, String> {
        let w = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
        w.set_read_timeout(Some(CLIENT_TIMEOUT))
            .map_err(|e| e.to_string())?;
        let r = BufReader::new(w.try_clone().map_err(|e| e.to_string())?);
        Ok(Conn { w, r })
    }

    /// One command; its reply's exact bytes.
    fn call(&mut self, args: &[String]) -> Result<Vec<u8>, String> {
        let mut cmd = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            cmd.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
        }
        self.w.write_all(&cmd).map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        read_raw(&mut self.r, &mut out)?;
        Ok(out)
    }
}

/// Append one whole reply's bytes to `out`.
fn read_raw(r: &mut impl BufRead, out: &mut Vec<u8>) -> Result<(), String> {
    let mut line = Vec::new();
    r.read_until(b'\n', &mut line).map_err(|e| e.to_string())?;
    out.extend_from_slice(&line);
    let text = String::from_utf8_lossy(&line).trim_end().to_string();
    let n = |s: &str| {
        s.parse::<i64>()
            .map_err(|_| format!("bad reply line {text:?}"))
    };
    match text.as_bytes().first() {
        Some(b'$') if n(&text[1..])? >= 0 => {
            let mut body = vec![0; n(&text[1..])? as usize + 2];
            std::io::Read::read_exact(r, &mut body).map_err(|e| e.to_string())?;
            out.extend_from_slice(&body);
        }
        Some(b'*') => {
            for _ in 0..n(&text[1..])?.max(0) {
                read_raw(r, out)?;
            }
        }
        Some(b'+' | b'-' | b':' | b'$') => {}
        _ => return Err(format!("unexpected reply {text:?}")),
    }
    Ok(())
}

/// A reply as compared: KEYS' elements sorted; TTL's integer as its class; OBJECT
/// ENCODING's int, embstr and raw as one (Redis turns a string APPEND or SETRANGE touched into
/// raw whatever it holds; kvstore answers from the value alone, documented).
fn normalised(command: &str, reply: &[u8]) -> String {
    let text = String::from_utf8_lossy(reply).into_owned();
    match command {
        "OBJECT"
            if ["$3\r\nraw\r\n", "$6\r\nembstr\r\n", "$3\r\nint\r\n"].contains(&text.as_str()) =>
        {
            "a string".into()
        }
        "KEYS" => {
            let mut lines: Vec<&str> = text.split("\r\n").skip(1).collect();
            let mut keys: Vec<String> = lines
                .chunks_mut(2)
                .filter(|c| c.len() == 2)
                .map(|c| c[1].to_string())
                .collect();
            keys.sort();
            format!("keys {keys:?}")
        }
        "OBJECT"
            if ["listpack", "hashtable", "intset", "skiplist"]
                .iter()
                .any(|e| text.contains(e)) =>
        {
            "a collection".into()
        }
        // Redis leaves their order unspecified: compared as sorted elements (HGETALL as sorted
        // pairs; the SCANs as cursor and sorted elements, one page at this size)
        "HGETALL" | "HKEYS" | "HVALS" | "SMEMBERS" | "SINTER" | "SUNION" | "SDIFF" | "HSCAN"
        | "SSCAN" => {
            let lines: Vec<&str> = text.split("\r\n").collect();
            let mut items: Vec<String> = lines
                .windows(2)
                .filter(|w| w[0].starts_with('$'))
                .map(|w| w[1].to_string())
                .collect();
            let pairs = matches!(command, "HGETALL" | "HSCAN");
            let cursor = if command.ends_with("SCAN") && !items.is_empty() {
                Some(items.remove(0))
            } else {
                None
            };
            if pairs {
                let mut p: Vec<String> = items.chunks(2).map(|c| c.join("=")).collect();
                p.sort();
                format!("{cursor:?} {p:?} {}", lines[0])
            } else {
                items.sort();
                format!("{cursor:?} {items:?} {}", lines[0])
            }
        }
        "TTL" | "PTTL" => match text.trim_end().strip_prefix(':').map(str::parse::<i64>) {
            Some(Ok(n)) if n >= 0 => "expiring".into(),
            _ => text,
        },
        _ => text,
    }
}

fn random_command(rng: &mut fastrand::Rng, prefix: &str) -> Vec<String> {
    let key = |rng: &mut fastrand::Rng| format!("{prefix}k{}", rng.u32(0..KEYS));
    let value = |rng: &mut fastrand::Rng| match rng.u8(0..5) {
        0 => rng.i64(-1000..1000).to_string(),
        1 => String::new(),
        2 => "x".repeat(rng.usize(40..50)),
        3 => "010".into(),
        _ => format!("v{}", rng.u32(0..100)),
    };
    let offset = |rng: &mut fastrand::Rng| rng.i64(-12..12).to_string();
    let keys = |rng: &mut fastrand::Rng| -> Vec<String> {
        (0..rng.usize(1..4)).map(|_| key(rng)).collect()
    };
    let s = |x: &str| x.to_string();
    let small = |rng: &mut fastrand::Rng| rng.i64(-5..50).to_string();
    let idx = |rng: &mut fastrand::Rng| rng.i64(-4..4).to_string();
    let item = |rng: &mut fastrand::Rng| format!("e{}", rng.u8(0..4));
    let items = |rng: &mut fastrand::Rng| -> Vec<String> {
        (0..rng.usize(1..4)).map(|_| item(rng)).collect()
    };
    let field = |rng: &mut fastrand::Rng| format!("f{}", rng.u8(0..4));
    let fields = |rng: &mut fastrand::Rng| -> Vec<String> {
        (0..rng.usize(1..4)).map(|_| field(rng)).collect()
    };
    let score = |rng: &mut fastrand::Rng| match rng.u8(0..6) {
        0 => s("1.5"),
        1 => s("-inf"),
        2 => s("+inf"),
        _ => rng.i64(-3..4).to_string(),
    };
    let bound = |rng: &mut fastrand::Rng| match rng.u8(0..4) {
        0 => s("-inf"),
        1 => s("+inf"),
        2 => format!("({}", rng.i64(-3..4)),
        _ => rng.i64(-3..4).to_string(),
    };
    let lex = |rng: &mut fastrand::Rng| match rng.u8(0..4) {
        0 => s("-"),
        1 => s("+"),
        2 => format!("(f{}", rng.u8(0..4)),
        _ => format!("[f{}", rng.u8(0..4)),
    };
    if rng.u8(0..5) < 2 {
        return match rng.u8(0..42) {
            0..=2 => {
                let mut c = vec![s("HSET"), key(rng)];
                for f in fields(rng) {
                    c.extend([f, value(rng)]);
                }
                c
            }
            3 => [vec![s("HDEL"), key(rng)], fields(rng)].concat(),
            4 => vec![s("HGET"), key(rng), field(rng)],
            5 => [vec![s("HMGET"), key(rng)], fields(rng)].concat(),
            6 => vec![s("HGETALL"), key(rng)],
            7 => vec![s("HLEN"), key(rng)],
            8 => vec![s("HEXISTS"), key(rng), field(rng)],
            9 => vec![s(if rng.bool() { "HKEYS" } else { "HVALS" }), key(rng)],
            10 => vec![s("HSTRLEN"), key(rng), field(rng)],
            11 => vec![s("HINCRBY"), key(rng), field(rng), small(rng)],
            12 => vec![s("HINCRBYFLOAT"), key(rng), field(rng), s("2.5")],
            13 => vec![s("HSCAN"), key(rng), s("0")],
            14..=16 => [vec![s("SADD"), key(rng)], fields(rng)].concat(),
            17 => [vec![s("SREM"), key(rng)], fields(rng)].concat(),
            18 => vec![s("SMEMBERS"), key(rng)],
            19 => vec![s("SISMEMBER"), key(rng), field(rng)],
            20 => [vec![s("SMISMEMBER"), key(rng)], fields(rng)].concat(),
            21 => vec![s("SCARD"), key(rng)],
            22 => [
                vec![s(["SINTER", "SUNION", "SDIFF"][rng.usize(0..3)])],
                keys(rng),
            ]
            .concat(),
            23 => {
                let ks = keys(rng);
                [vec![s("SINTERCARD"), ks.len().to_string()], ks].concat()
            }
            24..=26 => {
                let mut c = vec![s("ZADD"), key(rng)];
                if rng.u8(0..4) == 0 {
                    c.push(s("CH"));
                }
                for f in fields(rng) {
                    c.extend([score(rng), f]);
                }
                c
            }
            27 => [vec![s("ZREM"), key(rng)], fields(rng)].concat(),
            28 => vec![s("ZSCORE"), key(rng), field(rng)],
            29 => vec![s("ZINCRBY"), key(rng), score(rng), field(rng)],
            30 => vec![s("ZCARD"), key(rng)],
            31 => vec![s("ZCOUNT"), key(rng), bound(rng), bound(rng)],
            32 => vec![s("ZRANGE"), key(rng), idx(rng), idx(rng), s("WITHSCORES")],
            33 => vec![s("ZRANGE"), key(rng), bound(rng), bound(rng), s("BYSCORE")],
            // BYLEX is defined only where every score is equal: its own key, scores 0
            34 => {
                let k = format!("{prefix}lex");
                match rng.u8(0..3) {
                    0 => vec![s("ZADD"), k, s("0"), field(rng)],
                    1 => vec![s("ZRANGE"), k, lex(rng), lex(rng), s("BYLEX")],
                    _ => vec![s("ZRANGE"), k, lex(rng), lex(rng), s("BYLEX"), s("REV")],
                }
            }
            35 => vec![
                s("ZRANGEBYSCORE"),
                key(rng),
                bound(rng),
                bound(rng),
                s("LIMIT"),
                s("1"),
                s("2"),
            ],
            36 => vec![s("ZREVRANGE"), key(rng), idx(rng), idx(rng)],
            37 => vec![
                s(if rng.bool() { "ZRANK" } else { "ZREVRANK" }),
                key(rng),
                field(rng),
            ],
            38 => [vec![s("ZMSCORE"), key(rng)], fields(rng)].concat(),
            39 | 40 => {
                let k = key(rng);
                expiry_command(rng, k)
            }
            _ => vec![s("ZSCAN"), key(rng), s("0")],
        };
    }
    match rng.u8(0..50) {
        34 | 35 => [vec![s("LPUSH"), key(rng)], items(rng)].concat(),
        36 | 37 => [vec![s("RPUSH"), key(rng)], items(rng)].concat(),
        38 => vec![s("LPOP"), key(rng)],
        39 => vec![s("RPOP"), key(rng), rng.u8(0..3).to_string()],
        40 => vec![s("LRANGE"), key(rng), idx(rng), idx(rng)],
        41 => vec![s("LLEN"), key(rng)],
        42 => vec![s("LINDEX"), key(rng), idx(rng)],
        43 => vec![s("LSET"), key(rng), idx(rng), item(rng)],
        44 => vec![s("LREM"), key(rng), idx(rng), item(rng)],
        45 => vec![s("LTRIM"), key(rng), idx(rng), idx(rng)],
        46 => vec![
            s("LINSERT"),
            key(rng),
            s(if rng.bool() { "BEFORE" } else { "AFTER" }),
            item(rng),
            item(rng),
        ],
        47 => vec![
            s("LPOS"),
            key(rng),
            item(rng),
            s("RANK"),
            s("-1"),
            s("COUNT"),
            s("0"),
        ],
        48 => [vec![s("RPUSHX")], vec![key(rng)], items(rng)].concat(),
        49 => {
            let k = key(rng);
            vec![s("LMOVE"), k.clone(), k, s("LEFT"), s("RIGHT")]
        }
        23 => vec![s("INCR"), key(rng)],
        24 => vec![s("INCRBY"), key(rng), small(rng)],
        25 => vec![s("DECR"), key(rng)],
        26 => vec![s("APPEND"), key(rng), value(rng)],
        27 => vec![s("SETNX"), key(rng), value(rng)],
        28 => vec![s("SET"), key(rng), value(rng), s("NX")],
        29 => vec![s("SET"), key(rng), value(rng), s("XX"), s("GET")],
        30 => vec![s("GETSET"), key(rng), value(rng)],
        31 => vec![s("INCRBYFLOAT"), key(rng), s("1.5")],
        32 => vec![
            s("SETRANGE"),
            key(rng),
            rng.u8(0..10).to_string(),
            value(rng),
        ],
        33 => vec![
            s("SET"),
            key(rng),
            value(rng),
            s("NX"),
            s("GET"),
            s("EX"),
            s("1000"),
        ],
        0..=3 => vec![s("SET"), key(rng), value(rng)],
        4 => vec![s("SET"), key(rng), value(rng), s("EX"), s("1000")],
        5 => vec![s("GET"), key(rng)],
        6 => [vec![s("MGET")], keys(rng)].concat(),
        7 => {
            let mut c = vec![s("MSET")];
            for k in keys(rng) {
                c.extend([k, value(rng)]);
            }
            c
        }
        8 => [vec![s("DEL")], keys(rng)].concat(),
        9 => [vec![s("UNLINK")], keys(rng)].concat(),
        10 => [vec![s("EXISTS")], keys(rng)].concat(),
        11 => [vec![s("TOUCH")], keys(rng)].concat(),
        12 => vec![s("STRLEN"), key(rng)],
        13 => vec![s("GETRANGE"), key(rng), offset(rng), offset(rng)],
        14 => vec![s("SUBSTR"), key(rng), offset(rng), offset(rng)],
        15 => vec![s("TYPE"), key(rng)],
        16 => vec![s("OBJECT"), s("ENCODING"), key(rng)],
        17 => vec![s("GETDEL"), key(rng)],
        18 => {
            let k = key(rng);
            expiry_command(rng, k)
        }
        19 => vec![s("PERSIST"), key(rng)],
        20 => vec![s("TTL"), key(rng)],
        21 => vec![s("DBSIZE")],
        _ => vec![s("KEYS"), format!("{prefix}*")],
    }
}

/// EXPIRE and friends with their conditions, GETEX, PERSIST. Instants are absolute and shared
/// by both servers (a whole multiple of 100,000 s ahead), so GT and LT compare the same numbers
/// on each.
fn expiry_command(rng: &mut fastrand::Rng, key: String) -> Vec<String> {
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let at = (now_s / 100_000 + 1) * 100_000 + 1_000 * rng.u64(0..3);
    let cond: &[&str] = match rng.u8(0..8) {
        0 => &["NX"],
        1 => &["XX"],
        2 => &["GT"],
        3 => &["LT"],
        4 => &["XX", "LT"],
        5 => &["GT", "XX"],
        _ => &[],
    };
    let s = |x: &str| x.to_string();
    let with = |mut c: Vec<String>| {
        c.extend(cond.iter().map(|x| s(x)));
        c
    };
    match rng.u8(0..8) {
        0 | 1 => with(vec![s("EXPIREAT"), key, at.to_string()]),
        2 => with(vec![s("PEXPIREAT"), key, (at * 1000).to_string()]),
        3 => with(vec![s("EXPIRE"), key, s("1000")]),
        4 => with(vec![s("EXPIRE"), key, s("-1")]),
        5 => vec![s("GETEX"), key, s("EXAT"), at.to_string()],
        6 => vec![s("GETEX"), key, s("PERSIST")],
        _ => vec![s("PERSIST"), key],
    }
}

#[test]
fn replies_match_redis_on_random_command_sequences() -> TestResult {
    if !have("redis-server", &["--version"])? {
        return Ok(());
    }
    let redis_port = free_port();
    let server = Server(
        Command::new("redis-server")
            .args(["--port", &redis_port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--bind", "127.0.0.1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("redis-server: {e}"))?,
    );
    let mut redis = poll("redis-server to answer", START_DEADLINE, || {
        let mut c = Conn::connect(redis_port).ok()?;
        c.call(&["PING".into()]).ok().map(|_| c)
    })?;
    let node = Node::start("d1", &data_dir("redis-differential"), &["--cores", "2"])?;
    let mut kv = Conn::connect(node.port)?;
    let seeds = seeds::seeds("DIFF", 50);
    for seed in seeds {
        for conn in [&mut redis, &mut kv] {
            conn.call(&["FLUSHALL".to_string()])?;
        }
        let mut rng = fastrand::Rng::with_seed(seed);
        let prefix = format!("s{seed}:");
        for i in 0..COMMANDS_PER_SEED {
            let cmd = random_command(&mut rng, &prefix);
            let (want, got) = (redis.call(&cmd)?, kv.call(&cmd)?);
            if std::env::var_os("KV_DIFF_SHOW").is_some() {
                eprintln!("{i}: {cmd:?} -> {}", String::from_utf8_lossy(&got));
            }
            let (want, got) = (normalised(&cmd[0], &want), normalised(&cmd[0], &got));
            if want != got {
                return Err(format!(
                    "seed {seed}, command {i}: {cmd:?}\n  redis:   {want:?}\n  kvstore: {got:?}\n\
                     replay: KV_DIFF_SEED={seed} cargo test --test redis_differential"
                )
                .into());
            }
        }
    }
    drop(server);
    Ok(())
}
