//! FLUSHALL and FLUSHDB: every member drops every key written before them, and nothing comes
//! back: not through replay after a crash, hints held for a member that was down, or
//! anti-entropy. Refused, with the reason, while a member is not ALIVE.

mod common;

use common::resp::{Reply, Resp};
use common::*;

#[test]
fn a_flush_survives_a_crash_and_later_writes_stay() -> TestResult {
    let dir = data_dir("flush-restart");
    let args = ["--cores", "2"];
    let mut node = Node::start("f1", &dir, &args)?;
    let mut c = Resp::connect(node.port)?;
    for i in 0..50 {
        c.text(&["SET", &format!("old{i}"), "v"])?;
    }
    assert_eq!(
        c.text(&["FLUSHALL", "NOW"]).err().as_deref(),
        Some("ERR syntax error")
    );
    assert_eq!(c.text(&["FLUSHDB", "ASYNC"])?.as_deref(), Some("OK"));
    assert_eq!(c.int(&["DBSIZE"])?, 0);
    c.text(&["SET", "new", "v"])?;
    node.kill9();
    let node = Node::start("f1", &dir, &args)?;
    let mut c = Resp::connect(node.port)?;
    assert_eq!(
        c.int(&["DBSIZE"])?,
        1,
        "only the key written after the flush"
    );
    assert_eq!(c.text(&["GET", "old7"])?, None);
    assert_eq!(c.text(&["GET", "new"])?.as_deref(), Some("v"));
    Ok(())
}

#[test]
fn a_flush_needs_every_member_and_leaves_nothing_to_come_back() -> TestResult {
    let mut nodes = cluster("flush", 3, &[])?;
    let mut c = nodes[0].client();
    let old: Vec<String> = (0..30).map(|i| format!("old{i}")).collect();
    for k in &old {
        c.put(k.as_bytes(), b"v")?;
    }
    // node3 down: refused, with the reason
    let (dir, port, seed) = (nodes[2].dir.clone(), nodes[2].port, nodes[0].addr());
    nodes[2].kill9();
    poll("node1 to see node3 down", START_DEADLINE, || {
        (member_status(&nodes[0], "node3").as_deref() != Some("ALIVE")).then_some(())
    })?;
    let refused = Resp::connect(nodes[0].port)?.call(&["FLUSHALL"]);
    assert!(
        matches!(&refused, Err(e) if e.contains("needs every member ALIVE") && e.contains("node3")),
        "{refused:?}"
    );
    // writes while node3 is down: hints held for it
    let hinted: Vec<String> = (0..10).map(|i| format!("hinted{i}")).collect();
    for k in &hinted {
        c.put(k.as_bytes(), b"v")?;
    }
    nodes[2] = Node::start_on("node3", &dir, port, &member_args(&seed))?;
    for n in &nodes {
        wait_members(n, 3, "ALIVE")?;
    }
    let mut flush = Resp::connect(nodes[1].port)?;
    assert_eq!(flush.text(&["FLUSHALL"])?.as_deref(), Some("OK"));
    // a write after it, through the node that was down, is stored
    nodes[2].client().put(b"after", b"x")?;
    // hints delivered (or dropped), a repair round on every node: nothing older came back
    for n in &nodes {
        poll(
            &format!("{} to hold no hints", n.id),
            START_DEADLINE,
            || (hints_held(n) == Some(0)).then_some(()),
        )?;
        let o = n.kv(&["repair"]);
        assert!(o.status.success(), "kv repair on {}: {o:?}", n.id);
    }
    for n in &nodes {
        for k in old.iter().chain(&hinted) {
            assert_eq!(local(n, k), None, "{k} came back on {}", n.id);
        }
        assert_eq!(local(n, "after").as_deref(), Some("x"), "after on {}", n.id);
        let Reply::Text(size) = Resp::connect(n.port)?.call(&["DBSIZE"])? else {
            return Err("DBSIZE did not answer an integer".into());
        };
        assert_eq!(size, "1", "{}", n.id);
    }
    Ok(())
}
