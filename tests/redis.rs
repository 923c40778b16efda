//! The Redis protocol on the main port, tested with real Redis tools: `redis-cli` (each served
//! command), `redis-benchmark`, the `redis` package from PyPI against a 3-node cluster, and
//! malformed RESP over a raw socket while another client keeps working.
//!
//! The tools are installed by `.ci/run`; on a machine without them these tests say so and
//! pass, except under `CI=true`, where a missing tool is a failure.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Output, Stdio};

use common::*;

fn redis_cli(port: u16, args: &[&str]) -> Output {
    Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run redis-cli")
}

fn cli_out(port: u16, args: &[&str]) -> String {
    let o = redis_cli(port, args);
    assert!(o.status.success(), "redis-cli {args:?}: {o:?}");
    String::from_utf8_lossy(&o.stdout).trim_end().to_string()
}

fn benchmark(port: u16) -> Result<String, String> {
    let o = Command::new("redis-benchmark")
        .args(["-p", &port.to_string()])
        .args(["-t", "set,get", "-n", "20000", "-c", "20", "-d", "100"])
        .args(["-r", "10000", "-q"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("redis-benchmark: {e}"))?;
    let text =
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    if !o.status.success() || text.contains("ERR") || text.contains("Error") {
        return Err(format!("redis-benchmark failed: {text}"));
    }
    for t in ["SET: ", "GET: "] {
        let done = text
            .split(['\r', '\n'])
            .any(|l| l.trim_start().starts_with(t) && l.contains("requests per second"));
        if !done {
            return Err(format!("redis-benchmark did not finish {t}: {text}"));
        }
    }
    Ok(text)
}

#[test]
fn redis_cli_runs_every_served_command() -> TestResult {
    if !have("redis-cli", &["--version"])? {
        return Ok(());
    }
    let node = Node::start("r1", &data_dir("redis-cli"), &["--cores", "2"])?;
    let p = node.port;
    let cases: &[(&[&str], &str)] = &[
        (&["PING"], "PONG"),
        (&["PING", "hello"], "hello"),
        (&["ECHO", "echo me"], "echo me"),
        (&["SET", "k", "v"], "OK"),
        (&["GET", "k"], "v"),
        (&["GET", "missing"], ""),
        (&["MSET", "a", "1", "b", "2"], "OK"),
        (&["MGET", "a", "b", "missing"], "1\n2"),
        (&["EXISTS", "a", "b", "missing"], "2"),
        (&["DEL", "a", "missing"], "1"),
        (&["DBSIZE"], "2"),
        (&["COMMAND", "COUNT"], "110"),
        (&["CONFIG", "GET", "appendonly"], "appendonly\nyes"),
        (&["CONFIG", "GET", "appendfsync"], "appendfsync\neverysec"),
        (&["CLIENT", "SETNAME", "tester"], "OK"),
        (&["SELECT", "0"], "OK"),
        (&["SELECT", "1"], "ERR DB index is out of range"),
        (&["HELLO", "4"], "NOPROTO unsupported protocol version"),
        (
            &["XADD", "x", "*", "f", "v"],
            "ERR unknown command 'XADD', with args beginning with:",
        ),
        (&["GET"], "ERR wrong number of arguments for 'get' command"),
        (&["SET", "t", "v", "EX", "100"], "OK"),
        (&["EXPIRE", "t", "50"], "1"),
        (&["PERSIST", "t"], "1"),
        (&["TTL", "t"], "-1"),
        (
            &["SETEX", "t", "0", "v"],
            "ERR invalid expire time in 'setex' command",
        ),
        (&["GETDEL", "t"], "v"),
        (&["TTL", "t"], "-2"),
        (&["SET", "nx", "v", "NX"], "OK"),
        (&["SET", "nx", "w", "NX", "GET"], "v"),
        (&["INCR", "ctr"], "1"),
        (&["INCRBY", "ctr", "9"], "10"),
        (&["DEL", "ctr"], "1"),
        (&["RPUSH", "q", "a", "b"], "2"),
        (&["LPOP", "q"], "a"),
        (&["GET", "q"], "WRONGTYPE"),
        (&["BLPOP", "q", "0"], "ERR blocking list commands"),
        (&["DEL", "q"], "1"),
        (
            &["MSETNX", "a", "1", "b", "2"],
            "ERR this command changes several keys",
        ),
        (
            &["RENAME", "a", "b"],
            "ERR this command changes several keys",
        ),
        (
            &["MULTI"],
            "ERR MULTI/EXEC, WATCH and scripts are not served",
        ),
        (
            &["EVAL", "return 1", "0"],
            "ERR MULTI/EXEC, WATCH and scripts are not served",
        ),
        (&["DELIFEQ", "nx", "v"], "1"),
        (&["STRLEN", "k"], "1"),
        (&["GETRANGE", "k", "0", "-1"], "v"),
        (&["TYPE", "k"], "string"),
        (&["TYPE", "missing"], "none"),
        (&["OBJECT", "ENCODING", "k"], "embstr"),
        (
            &["OBJECT", "FREQ", "k"],
            "ERR An LFU maxmemory policy is not selected",
        ),
        (&["TOUCH", "k", "missing"], "1"),
        (&["DEL", "b"], "1"),
        (&["RANDOMKEY"], "k"),
        (
            &["CONFIG", "SET", "maxmemory", "1"],
            "ERR kvstore serves CONFIG GET only",
        ),
        (&["UNLINK", "k"], "1"),
        (&["RANDOMKEY"], ""),
        (&["HSET", "h", "f", "v", "g", "w"], "2"),
        (&["HGET", "h", "g"], "w"),
        (&["HINCRBY", "h", "n", "5"], "5"),
        (&["HLEN", "h"], "3"),
        (&["SADD", "s", "a", "b", "a"], "2"),
        (&["SISMEMBER", "s", "b"], "1"),
        (&["ZADD", "z", "2", "b", "1", "a"], "2"),
        (&["ZRANGE", "z", "0", "-1", "WITHSCORES"], "a\n1\nb\n2"),
        (&["TYPE", "z"], "zset"),
        (&["DEL", "h", "s", "z"], "3"),
        (&["MSET", "k", "v", "b", "2"], "OK"),
    ];
    for (args, want) in cases {
        let got = cli_out(p, args);
        assert!(
            got.starts_with(want) && (want.is_empty() == got.is_empty()),
            "redis-cli {args:?}: got {got:?}, want {want:?}"
        );
    }
    let info = cli_out(p, &["INFO"]);
    for field in [
        "redis_version:",
        "cluster_enabled:0",
        "db0:keys=2,",
        "# Kvstore",
        "replication:n=1,r=1,w=1",
        "member:r1,",
    ] {
        assert!(info.contains(field), "INFO lacks {field}: {info}");
    }
    let keyspace = cli_out(p, &["INFO", "keyspace"]);
    assert!(
        keyspace.contains("db0:keys=2,") && !keyspace.contains("redis_version"),
        "{keyspace}"
    );
    // The command table is well-formed enough for redis-cli's own parser.
    assert!(cli_out(p, &["COMMAND"]).contains("mget"));
    // A value written through RESP reads back through the native protocol and vice versa.
    assert_eq!(node.client().get(b"k")?, Some(b"v".to_vec()));
    node.client().put(b"native", b"n")?;
    assert_eq!(cli_out(p, &["GET", "native"]), "n");
    if have("redis-benchmark", &["--version"])? {
        benchmark(p)?;
        // The benchmark's keys landed.
        let keys: usize = cli_out(p, &["DBSIZE"]).parse()?;
        assert!(keys > 1000, "dbsize after benchmark: {keys}");
    }
    Ok(())
}

/// Send `bytes` on a fresh connection; return everything the node answers before closing.
fn exchange(port: u16, bytes: &[u8]) -> Result<String, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(CLIENT_TIMEOUT))
        .map_err(|e| e.to_string())?;
    s.write_all(bytes).map_err(|e| e.to_string())?;
    let mut got = Vec::new();
    s.read_to_end(&mut got)
        .map_err(|e| format!("node did not close the connection: {e}"))?;
    Ok(String::from_utf8_lossy(&got).into_owned())
}

/// One round trip on a kept connection.
fn round_trip(s: &mut TcpStream, req: &[u8], want: &[u8]) -> Result<(), String> {
    s.write_all(req).map_err(|e| e.to_string())?;
    let mut got = vec![0; want.len()];
    s.read_exact(&mut got).map_err(|e| e.to_string())?;
    if got != want {
        return Err(format!(
            "got {:?}, want {:?}",
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(want)
        ));
    }
    Ok(())
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Commands of thousands of arguments: an MSET of 600 pairs, an MGET and a DEL of 2,000 keys
/// (the argument bound is `RESP_ARGS_MAX`, tested at and past it in `wire::resp`).
#[test]
fn commands_of_thousands_of_arguments_are_served() -> TestResult {
    let node = Node::start("many", &data_dir("redis-many-args"), &["--cores", "2"])?;
    let mut c = common::resp::Resp::connect(node.port)?;
    let keys: Vec<String> = (0..2000).map(|i| format!("many{i}")).collect();
    let mut mset = vec!["MSET".to_string()];
    for k in &keys[..600] {
        mset.extend([k.clone(), format!("v-{k}")]);
    }
    assert_eq!(c.text(&args(&mset))?.as_deref(), Some("OK"));
    let mget = [vec!["MGET".to_string()], keys.clone()].concat();
    let common::resp::Reply::Array(values) = c.call(&args(&mget))? else {
        return Err("MGET did not answer an array".into());
    };
    assert_eq!(values.len(), 2000);
    let present = values
        .iter()
        .filter(|v| matches!(v, common::resp::Reply::Text(_)))
        .count();
    assert_eq!(present, 600);
    let del = [vec!["DEL".to_string()], keys].concat();
    assert_eq!(c.int(&args(&del))?, 600);
    assert_eq!(c.int(&["DBSIZE"])?, 0);
    Ok(())
}

#[test]
fn malformed_resp_is_refused_and_others_keep_being_served() -> TestResult {
    // A value limit below the key limit: bulk strings up to 4096 bytes frame, values past
    // 1000 are refused as a command error.
    let node = Node::start(
        "r2",
        &data_dir("redis-malformed"),
        &["--cores", "1", "--max-value-bytes", "1000"],
    )?;
    let p = node.port;
    let mut good = TcpStream::connect(("127.0.0.1", p))?;
    good.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    round_trip(
        &mut good,
        b"*3\r\n$3\r\nSET\r\n$1\r\nx\r\n$1\r\n1\r\n",
        b"+OK\r\n",
    )?;

    let inline_too_long = vec![b'a'; 64 * 1024];
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "bad multibulk length",
            b"*abc\r\n".to_vec(),
            "invalid multibulk length",
        ),
        (
            "too many args",
            b"*2000000\r\n".to_vec(),
            "too many arguments",
        ),
        (
            "not a bulk string",
            b"*1\r\n:5\r\n".to_vec(),
            "expected '$'",
        ),
        (
            "oversized bulk",
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$4097\r\n".to_vec(),
            "exceeds the limit of 4096",
        ),
        (
            "negative bulk",
            b"*1\r\n$-5\r\n".to_vec(),
            "invalid bulk length",
        ),
        (
            "unterminated bulk",
            b"*1\r\n$3\r\nabcXY".to_vec(),
            "not terminated",
        ),
        ("inline too long", inline_too_long, "too big inline request"),
    ];
    for (what, bytes, want) in cases {
        let got = exchange(p, &bytes)?;
        assert!(
            got.starts_with("-ERR Protocol error: ") && got.contains(want),
            "{what}: {got:?}"
        );
        round_trip(&mut good, b"GET x\r\n", b"$1\r\n1\r\n")?;
    }
    // A truncated command from a client that vanishes: nothing is applied.
    {
        let mut s = TcpStream::connect(("127.0.0.1", p))?;
        s.write_all(b"*3\r\n$3\r\nSET\r\n$4\r\ngone\r\n$5\r\nab")?;
    }
    round_trip(&mut good, b"EXISTS gone\r\n", b":0\r\n")?;
    // Value limit at and just past the boundary: an error reply, the connection lives on.
    let at = format!(
        "*3\r\n$3\r\nSET\r\n$1\r\nv\r\n$1000\r\n{}\r\n",
        "v".repeat(1000)
    );
    round_trip(&mut good, at.as_bytes(), b"+OK\r\n")?;
    let past = format!(
        "*3\r\n$3\r\nSET\r\n$1\r\nv\r\n$1001\r\n{}\r\n",
        "w".repeat(1001)
    );
    let want = b"-ERR value of 1001 bytes exceeds the limit of 1000\r\n";
    round_trip(&mut good, past.as_bytes(), want)?;
    // Pipelined answers come in order; QUIT answers, then closes.
    let got = exchange(p, b"PING\r\nGET x\r\nQUIT\r\nPING\r\n")?;
    assert_eq!(got, "+PONG\r\n$1\r\n1\r\n+OK\r\n");
    round_trip(&mut good, b"GET x\r\n", b"$1\r\n1\r\n")?;
    Ok(())
}

#[test]
fn redis_clients_against_a_three_node_cluster() -> TestResult {
    let python = have("python3", &["-c", "import redis"])?;
    let cli = have("redis-cli", &["--version"])?;
    if !python && !cli {
        return Ok(());
    }
    let mut nodes = cluster("redis-cluster", 3, &[])?;
    let ports: Vec<String> = nodes.iter().map(|n| n.port.to_string()).collect();
    if python {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/redis_client.py");
        let o = Command::new("python3")
            .arg(script)
            .args(&ports)
            .stdin(Stdio::null())
            .output()?;
        assert!(
            o.status.success(),
            "python redis client failed:\n{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    if !cli {
        return Ok(());
    }
    if have("redis-benchmark", &["--version"])? {
        benchmark(nodes[0].port)?;
    }
    assert_eq!(cli_out(nodes[0].port, &["SET", "through1", "x"]), "OK");
    assert_eq!(cli_out(nodes[2].port, &["GET", "through1"]), "x");
    let info = cli_out(nodes[1].port, &["INFO", "kvstore"]);
    assert!(info.contains("replication:n=3,r=2,w=2"), "{info}");
    assert!(info.contains("members:3"), "{info}");
    // Two of three down: a quorum error that says how many replicas answered.
    nodes[1].kill9();
    nodes[2].kill9();
    let got = poll("a quorum error through RESP", START_DEADLINE, || {
        let o = cli_out(nodes[0].port, &["SET", "through1", "y"]);
        o.starts_with("ERR").then_some(o)
    })?;
    assert!(got.contains("of 3 replicas"), "{got}");
    let got = cli_out(nodes[0].port, &["GET", "through1"]);
    assert!(
        got.starts_with("ERR") && got.contains("of 3 replicas"),
        "{got}"
    );
    assert_eq!(cli_out(nodes[0].port, &["PING"]), "PONG");
    Ok(())
}
