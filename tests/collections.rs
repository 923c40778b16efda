//! Hashes, sets and sorted sets: replies and WRONGTYPE on one node, and what survives a
//! crash; on a cluster, concurrent writes of different fields and members through every node
//! all land, concurrent increments add up, DEL orders against later writes, and a node killed
//! while writes go on reads everything back once restarted.

mod common;

use std::collections::BTreeSet;

use common::resp::{Reply, Resp};
use common::*;

fn texts(r: Reply) -> Vec<String> {
    match r {
        Reply::Array(items) => items
            .into_iter()
            .flat_map(|i| match i {
                Reply::Text(t) => vec![t],
                Reply::Array(_) => texts(i),
                Reply::Nil => vec!["(nil)".to_string()],
            })
            .collect(),
        Reply::Text(t) => vec![t],
        Reply::Nil => vec!["(nil)".to_string()],
    }
}

fn set_of(r: Reply) -> BTreeSet<String> {
    texts(r).into_iter().collect()
}

#[test]
fn collection_commands_answer_as_redis_does_and_survive_a_crash() -> TestResult {
    let dir = data_dir("collections-solo");
    let mut node = Node::start("h1", &dir, &["--cores", "2"])?;
    let mut c = Resp::connect(node.port)?;
    assert_eq!(c.int(&["HSET", "h", "a", "1", "b", "2"])?, 2);
    assert_eq!(c.int(&["HSET", "h", "a", "3"])?, 0);
    assert_eq!(c.text(&["HGET", "h", "a"])?.as_deref(), Some("3"));
    assert_eq!(c.int(&["HINCRBY", "h", "a", "4"])?, 7);
    assert_eq!(
        c.call(&["HINCRBY", "h", "zz", "x"]).err().as_deref(),
        Some("ERR value is not an integer or out of range")
    );
    assert_eq!(c.int(&["HDEL", "h", "b", "nope"])?, 1);
    assert_eq!(texts(c.call(&["HGETALL", "h"])?), ["a", "7"]);
    assert_eq!(c.text(&["TYPE", "h"])?.as_deref(), Some("hash"));
    assert_eq!(
        c.call(&["GET", "h"]).err().as_deref(),
        Some("WRONGTYPE Operation against a key holding the wrong kind of value")
    );
    assert_eq!(
        c.call(&["SADD", "h", "m"]).err().as_deref(),
        Some("WRONGTYPE Operation against a key holding the wrong kind of value")
    );
    assert_eq!(c.int(&["SADD", "s", "x", "y", "x"])?, 2);
    assert_eq!(c.int(&["SREM", "s", "y"])?, 1);
    assert_eq!(
        set_of(c.call(&["SMEMBERS", "s"])?),
        set_of(Reply::Text("x".into()))
    );
    assert_eq!(c.int(&["ZADD", "z", "1", "a", "2", "b"])?, 2);
    assert_eq!(
        c.text(&["ZINCRBY", "z", "2.5", "a"])?.as_deref(),
        Some("3.5")
    );
    assert_eq!(
        texts(c.call(&["ZRANGE", "z", "0", "-1", "WITHSCORES"])?),
        ["b", "2", "a", "3.5"]
    );
    assert_eq!(
        c.call(&["ZADD", "z", "NX", "1", "c"])
            .err()
            .map(|e| e.contains("not served")),
        Some(true)
    );
    // an emptied collection is no key; a string written over a hash replaces it
    assert_eq!(c.int(&["SREM", "s", "x"])?, 1);
    assert_eq!(c.int(&["EXISTS", "s"])?, 0);
    assert_eq!(c.text(&["TYPE", "s"])?.as_deref(), Some("none"));
    c.text(&["SET", "s", "plain"])?;
    assert_eq!(c.text(&["GET", "s"])?.as_deref(), Some("plain"));
    // limits on arguments: a missing value is Redis's arity error
    assert_eq!(
        c.call(&["HSET", "h", "a"]).err().as_deref(),
        Some("ERR wrong number of arguments for 'hset' command")
    );
    // expiry: a whole-key rule, as for strings
    c.int(&["HSET", "e", "f", "v"])?;
    assert_eq!(c.int(&["EXPIRE", "e", "100"])?, 1);
    assert!(c.int(&["TTL", "e"])? > 0);
    assert_eq!(c.int(&["PERSIST", "e"])?, 1);
    assert_eq!(c.int(&["TTL", "e"])?, -1);
    // everything acknowledged survives kill -9 (the WAL holds deltas, replay joins them)
    let fields: Vec<String> = (0..200).map(|i| format!("f{i}")).collect();
    for f in &fields {
        c.int(&["HSET", "big", f, "v"])?;
    }
    node.kill9();
    let _node = Node::start("h1", &dir, &["--cores", "1"])?;
    let mut c = Resp::connect(_node.port)?;
    assert_eq!(c.int(&["HLEN", "big"])?, 200);
    assert_eq!(texts(c.call(&["HGETALL", "h"])?), ["a", "7"]);
    assert_eq!(c.text(&["ZSCORE", "z", "a"])?.as_deref(), Some("3.5"));
    assert_eq!(c.text(&["GET", "s"])?.as_deref(), Some("plain"));
    assert_eq!(c.int(&["TTL", "e"])?, -1);
    Ok(())
}

/// Run `per_node` commands made by `cmd(node, i)` through every node at once.
fn through_every_node(
    nodes: &[Node],
    per_node: usize,
    cmd: fn(usize, usize) -> Vec<String>,
) -> Result<(), String> {
    let handles: Vec<_> = nodes
        .iter()
        .enumerate()
        .map(|(n, node)| {
            let port = node.port;
            std::thread::spawn(move || -> Result<(), String> {
                let mut c = Resp::connect(port)?;
                for i in 0..per_node {
                    let args = cmd(n, i);
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    c.call(&args)?;
                }
                Ok(())
            })
        })
        .collect();
    for h in handles {
        h.join().map_err(|_| "a client thread panicked")??;
    }
    Ok(())
}

#[test]
fn concurrent_writes_through_every_node_all_land() -> TestResult {
    let mut nodes = cluster("collections", 3, &[])?;
    const PER_NODE: usize = 40;
    through_every_node(&nodes, PER_NODE, |n, i| {
        vec![
            "HSET".into(),
            "h".into(),
            format!("f{n}-{i}"),
            format!("{i}"),
        ]
    })?;
    through_every_node(&nodes, PER_NODE, |n, i| {
        vec!["SADD".into(), "s".into(), format!("m{n}-{i}")]
    })?;
    through_every_node(&nodes, PER_NODE, |_, _| {
        vec!["HINCRBY".into(), "h".into(), "count".into(), "1".into()]
    })?;
    through_every_node(&nodes, PER_NODE, |n, i| {
        vec!["ZADD".into(), "z".into(), format!("{i}"), format!("p{n}")]
    })?;
    let total = 3 * PER_NODE;
    for node in &nodes {
        let mut c = Resp::connect(node.port)?;
        assert_eq!(
            c.int(&["HLEN", "h"])? as usize,
            total + 1,
            "on {}",
            node.addr()
        );
        assert_eq!(c.int(&["SCARD", "s"])? as usize, total);
        assert_eq!(
            c.text(&["HGET", "h", "count"])?.as_deref(),
            Some(total.to_string().as_str()),
            "no increment lost"
        );
        assert_eq!(c.int(&["ZCARD", "z"])?, 3);
    }
    // DEL orders against later writes: everything before it is gone, what follows stays
    let mut c: Vec<Resp> = nodes
        .iter()
        .map(|n| Resp::connect(n.port))
        .collect::<Result<_, _>>()?;
    assert_eq!(c[0].int(&["DEL", "s"])?, 1);
    assert_eq!(c[1].int(&["SADD", "s", "after"])?, 1);
    assert_eq!(
        set_of(c[2].call(&["SMEMBERS", "s"])?),
        set_of(Reply::Text("after".into()))
    );
    // node3 killed while writes go on; restarted, every node reads every write
    let (dir, port, seed) = (nodes[2].dir.clone(), nodes[2].port, nodes[0].addr());
    nodes[2].kill9();
    for i in 0..30 {
        c[i % 2].int(&["SADD", "s", &format!("during{i}")])?;
    }
    nodes[2] = Node::start_on("node3", &dir, port, &member_args(&seed))?;
    for n in &nodes {
        wait_members(n, 3, "ALIVE")?;
    }
    let mut c3 = Resp::connect(nodes[2].port)?;
    assert_eq!(c3.int(&["SCARD", "s"])?, 31);
    assert_eq!(c3.int(&["SREM", "s", "after"])?, 1);
    assert_eq!(c[0].int(&["SISMEMBER", "s", "after"])?, 0);
    Ok(())
}

/// A collection delta (one field) as a replica write carries it.
fn field_delta(writer: u32, version: kvstore::core::version::Version, field: &str) -> Vec<u8> {
    use kvstore::core::crdt::collection::{at_key, Type};
    let mut st = at_key(None).expect("empty state");
    let mut ch = st.begin(writer, version, 0);
    ch.put(&mut st, Type::Hash, field.as_bytes(), b"v", 0)
        .expect("put");
    ch.delta.to_cell().into()
}

/// Store exactly `cell` at `version` on one replica (as a coordinator's replica write).
fn replica_put(
    node: &Node,
    key: &str,
    cell: &[u8],
    version: kvstore::core::version::Version,
) -> Result<(), String> {
    use kvstore::wire::native::{encode_request, Opcode, Request, Status};
    let mut c = node.client();
    let mut frame = Vec::new();
    encode_request(
        &mut frame,
        &Request {
            request_id: 1,
            opcode: Opcode::ReplicaPut as u8,
            version,
            flags: 0,
            key: key.as_bytes(),
            value: cell,
        },
    );
    c.send_raw(&frame).map_err(|e| e.to_string())?;
    let r = c.recv().map_err(|e| e.to_string())?;
    (r.status == Status::Ok)
        .then_some(())
        .ok_or(format!("replica put: {:?}", r.status))
}

/// The fields a replica's own state of `key` holds.
fn replica_fields(node: &Node, key: &str) -> Result<BTreeSet<String>, String> {
    use kvstore::core::crdt::collection::{Collection, Type};
    use kvstore::wire::native::Opcode;
    let r = node
        .client()
        .call(Opcode::ReplicaGet, key.as_bytes(), &[])
        .map_err(|e| e.to_string())?;
    if r.value.is_empty() {
        return Ok(BTreeSet::new());
    }
    let c = kvstore::core::cell::decode(&r.value).map_err(|e| e.to_string())?;
    let state = Collection::of_cell(&c, r.version).map_err(|e| e.to_string())?;
    Ok(state
        .entries(Type::Hash, 0)
        .into_iter()
        .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
        .collect())
}

#[test]
fn anti_entropy_joins_replicas_that_hold_different_states_both_ways() -> TestResult {
    let slow = ["--anti-entropy-interval-ms", "600000"];
    let nodes = cluster("collections-ae", 3, &slow)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as u64;
    let at = |ms: u64, writer: u32| kvstore::core::version::Version {
        hlc: (now + ms) << 16,
        writer,
    };
    // node1 holds field a, node2 field b, node3 both: node1's and node2's tops are equal
    // (version b's), so only the state digest tells them apart
    let (va, vb) = (at(0, 11), at(1, 22));
    let (da, db) = (field_delta(11, va, "a"), field_delta(22, vb, "b"));
    replica_put(&nodes[0], "h", &da, va)?;
    replica_put(&nodes[0], "h", &field_delta(33, vb, "x"), vb)?;
    replica_put(&nodes[1], "h", &db, vb)?;
    replica_put(&nodes[2], "h", &da, va)?;
    replica_put(&nodes[2], "h", &db, vb)?;
    let want_a: BTreeSet<String> = ["a", "x"].iter().map(|s| s.to_string()).collect();
    assert_eq!(replica_fields(&nodes[0], "h")?, want_a);
    let o = nodes[0].kv(&["repair", "--json"]);
    assert!(o.status.success(), "{o:?}");
    let all: BTreeSet<String> = ["a", "b", "x"].iter().map(|s| s.to_string()).collect();
    for n in &nodes[..2] {
        assert_eq!(replica_fields(n, "h")?, all, "on {}", n.addr());
    }
    // node3 still lacks x until its own round with node1
    let o = nodes[2].kv(&["repair", "--json"]);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(replica_fields(&nodes[2], "h")?, all);
    // and then every tree is equal
    let o = nodes[0].kv(&["repair", "--json"]);
    let r: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    assert_eq!(r["peers_equal"].as_u64(), Some(2), "{r}");
    Ok(())
}

/// `kv check --workload set|hash` on a live cluster, node3 killed one second into the load
/// and restarted at once: every acknowledged add kept, nothing removed present, nothing nobody
/// added, every node's answer the same.
#[test]
fn kv_check_set_and_hash_workloads_hold_through_a_killed_node() -> TestResult {
    let mut nodes = cluster("collections-check", 3, &[])?;
    let (dir, port, seed) = (nodes[2].dir.clone(), nodes[2].port, nodes[0].addr());
    let all = nodes.iter().map(|n| n.addr()).collect::<Vec<_>>().join(",");
    for workload in ["set", "hash"] {
        let all = all.clone();
        let checker = {
            let port = nodes[0].port.to_string();
            std::thread::spawn(move || {
                let args = [
                    "check",
                    "--workload",
                    workload,
                    "--duration",
                    "4",
                    "--clients",
                    "6",
                    "--keys",
                    "4",
                    "--nodes",
                    &all,
                ];
                kv(&port, &args)
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(1_000));
        nodes[2].kill9();
        nodes[2] = Node::start_on("node3", &dir, port, &member_args(&seed))?;
        let out = checker.join().map_err(|_| "kv check panicked")?;
        let text = stdout(&out);
        eprintln!("kv check --workload {workload}: {text}");
        let acked = text
            .split_whitespace()
            .find_map(|w| w.strip_prefix("acknowledged="))
            .and_then(|n| n.parse::<u64>().ok());
        assert!(
            out.status.success() && text.contains("OK") && acked.is_some_and(|n| n > 0),
            "kv check --workload {workload}:\n{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        wait_members(&nodes[0], 3, "ALIVE")?;
    }
    Ok(())
}
