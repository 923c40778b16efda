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
