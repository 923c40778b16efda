//! Hinted handoff with real processes on loopback: a replica that was down receives the writes
//! it missed from the coordinators' hints, with no client reads, and hints survive a restart
//! of the node holding them.

mod common;

use common::*;

/// Start a stopped cluster node again at its address and data dir (it remembers its view).
fn restart(node: &Node) -> Result<Node, String> {
    let args = ["--cores", "1", "--suspect-timeout-ms", SUSPECT_MS];
    Node::start_on(&node.id, &node.dir, node.port, &args)
}

/// Poll until node `n`'s own store (LOCAL_GET, no quorum read, no repair) holds every key.
fn holds_all(n: &Node, keys: &[String]) -> Result<(), String> {
    poll(
        &format!("{} to hold all {} keys", n.id, keys.len()),
        START_DEADLINE,
        || {
            let mut c = n.client();
            keys.iter()
                .all(|k| c.get_local(k.as_bytes()).ok().flatten().as_deref() == Some(&b"v"[..]))
                .then_some(())
        },
    )
}

#[test]
fn a_replica_back_from_a_crash_gets_what_it_missed_without_reads() -> TestResult {
    let mut nodes = cluster("handoff-crash", 3, &[])?;
    nodes[2].kill9();
    wait_members(&nodes[0], 2, "ALIVE")?;
    let keys: Vec<String> = (0..300).map(|i| format!("missed-{i}")).collect();
    let mut c = nodes[0].client();
    for k in &keys {
        c.put(k.as_bytes(), b"v")?;
    }
    nodes[2] = restart(&nodes[2])?;
    holds_all(&nodes[2], &keys)?;
    Ok(())
}

/// The node holding the hints is itself killed before the replica returns: its hints come back
/// from its WAL and are still delivered.
#[test]
fn hints_survive_a_restart_of_the_node_holding_them() -> TestResult {
    let mut nodes = cluster("handoff-restart", 3, &[])?;
    nodes[2].kill9();
    wait_members(&nodes[0], 2, "ALIVE")?;
    let keys: Vec<String> = (0..200).map(|i| format!("held-{i}")).collect();
    let mut c = nodes[0].client();
    for k in &keys {
        c.put(k.as_bytes(), b"v")?;
    }
    // node1 held those hints; kill it, bring it back, then bring node3 back
    nodes[0].kill9();
    nodes[0] = restart(&nodes[0])?;
    nodes[2] = restart(&nodes[2])?;
    holds_all(&nodes[2], &keys)?;
    Ok(())
}
