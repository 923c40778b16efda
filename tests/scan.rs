//! SCAN and KEYS across a cluster, through the Redis protocol: every live key exactly as
//! written (deleted ones gone), MATCH, COUNT and TYPE, through any node.

mod common;

use std::collections::BTreeSet;

use common::resp::{Reply, Resp};
use common::*;

#[test]
fn scan_and_keys_walk_the_whole_cluster() -> TestResult {
    let nodes = cluster("scan", 3, &[])?;
    let mut c = nodes[0].client();
    let mut live = BTreeSet::new();
    for i in 0..300 {
        c.put(format!("user:{i}").as_bytes(), b"v")?;
        live.insert(format!("user:{i}"));
    }
    for i in 0..50 {
        c.put(format!("session:{i}").as_bytes(), b"v")?;
        live.insert(format!("session:{i}"));
    }
    for i in 0..20 {
        c.delete(format!("user:{i}").as_bytes())?;
        live.remove(&format!("user:{i}"));
    }
    // through another node, small pages
    let mut r = Resp::connect(nodes[2].port)?;
    let (keys, calls) = r.scan_all(&["COUNT", "50"])?;
    let got: BTreeSet<String> = keys.iter().cloned().collect();
    assert_eq!(got, live, "SCAN returned other keys");
    assert_eq!(
        keys.len(),
        live.len(),
        "a key came twice while nothing changed"
    );
    assert!(calls > 1, "COUNT 50 over {} keys took one call", live.len());
    let (users, _) = r.scan_all(&["MATCH", "user:*", "COUNT", "1000"])?;
    assert_eq!(users.len(), 280);
    assert!(users.iter().all(|k| k.starts_with("user:")));
    let (none, _) = r.scan_all(&["TYPE", "hash"])?;
    assert!(none.is_empty(), "only strings exist");
    match r.call(&["KEYS", "session:*"])? {
        Reply::Array(k) => assert_eq!(k.len(), 50),
        other => return Err(format!("KEYS: {other:?}").into()),
    }
    assert!(r.call(&["SCAN", "x"]).is_err(), "a bad cursor is an error");
    // the CLI walks the same cursor
    let listed = stdout(&nodes[1].kv(&["scan", "--match", "session:*", "--count", "7"]));
    let listed: BTreeSet<&str> = listed.lines().collect();
    let sessions: BTreeSet<&str> = live
        .iter()
        .filter(|k| k.starts_with("session:"))
        .map(String::as_str)
        .collect();
    assert_eq!(listed, sessions, "kv scan --match");
    assert_eq!(stdout(&nodes[0].kv(&["scan"])).lines().count(), live.len());
    Ok(())
}

/// A SCAN that loses a node between calls still returns every key that existed throughout,
/// each once (no join or leave happened, so no repeats either).
#[test]
fn a_scan_survives_a_node_killed_mid_iteration() -> TestResult {
    const KEYS: usize = 5_000;
    let mut nodes = cluster("scan-kill", 3, &[])?;
    let mut c = nodes[0].client();
    let mut want = BTreeSet::new();
    for i in 0..KEYS {
        let k = format!("key:{i}");
        // pipelined puts: queue a batch, then read the answers
        c.queue(kvstore::wire::native::Opcode::Put, k.as_bytes(), b"v");
        want.insert(k);
        if i % 500 == 499 {
            c.flush()?;
            for _ in 0..500 {
                let r = c.recv()?;
                assert!(!r.status.is_error(), "a put failed: {r:?}");
            }
        }
    }
    let mut r = Resp::connect(nodes[0].port)?;
    let (mut cursor, mut got, mut calls) = ("0".to_string(), Vec::new(), 0);
    loop {
        let Reply::Array(parts) = r.call(&["SCAN", &cursor, "COUNT", "200"])? else {
            return Err("SCAN did not answer an array".into());
        };
        let [Reply::Text(next), Reply::Array(page)] = parts.as_slice() else {
            return Err(format!("unexpected SCAN reply {parts:?}").into());
        };
        got.extend(page.iter().filter_map(|k| match k {
            Reply::Text(k) => Some(k.clone()),
            _ => None,
        }));
        calls += 1;
        if calls == 3 {
            nodes[2].kill9();
        }
        cursor = next.clone();
        if cursor == "0" {
            break;
        }
    }
    assert!(calls > 3, "the kill happened mid-scan ({calls} calls)");
    let distinct: BTreeSet<String> = got.iter().cloned().collect();
    assert_eq!(distinct.len(), got.len(), "a key came twice");
    assert_eq!(distinct, want, "keys missing or unknown after the kill");
    Ok(())
}

/// `SCAN_KEYS_MAX`: KEYS answers exactly that many keys, refuses one more (pointing to SCAN),
/// and a SCAN call asking for more returns at most that many, the rest on later calls.
#[test]
fn keys_answers_up_to_the_limit_and_scan_pages_past_it() -> TestResult {
    use kvstore::limits::SCAN_KEYS_MAX;
    let node = Node::start("scanmax", &data_dir("scan-max"), &["--cores", "2"])?;
    let mut r = Resp::connect(node.port)?;
    let names: Vec<String> = (0..SCAN_KEYS_MAX).map(|i| format!("k:{i}")).collect();
    for batch in names.chunks(500) {
        let mut args = vec!["MSET"];
        for k in batch {
            args.push(k);
            args.push("v");
        }
        assert_eq!(r.text(&args)?.as_deref(), Some("OK"));
    }
    match r.call(&["KEYS", "*"])? {
        Reply::Array(k) => assert_eq!(k.len(), SCAN_KEYS_MAX, "KEYS at the limit"),
        other => return Err(format!("KEYS: {other:?}").into()),
    }
    assert_eq!(r.text(&["SET", "one-more", "v"])?.as_deref(), Some("OK"));
    let refused = r
        .call(&["KEYS", "*"])
        .expect_err("KEYS past the limit answered");
    assert!(refused.contains("use SCAN"), "{refused}");
    let count = (SCAN_KEYS_MAX * 2).to_string();
    let Reply::Array(first) = r.call(&["SCAN", "0", "COUNT", &count])? else {
        return Err("SCAN did not answer an array".into());
    };
    match first.as_slice() {
        [Reply::Text(cursor), Reply::Array(page)] => {
            assert!(
                page.len() <= SCAN_KEYS_MAX,
                "{} keys in one call",
                page.len()
            );
            assert_ne!(cursor, "0", "all {} keys in one call", SCAN_KEYS_MAX + 1);
        }
        other => return Err(format!("unexpected SCAN reply {other:?}").into()),
    }
    let (keys, _) = r.scan_all(&["COUNT", &count])?;
    let unique: BTreeSet<&String> = keys.iter().collect();
    assert_eq!(keys.len(), SCAN_KEYS_MAX + 1);
    assert_eq!(unique.len(), keys.len(), "a key came twice");
    Ok(())
}
