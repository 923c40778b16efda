//! Anti-entropy with real processes on loopback: a replica that lost its WAL (a restored old
//! disk, a wiped data dir) converges with no client reads — through `kv repair`, and through
//! the periodic rounds — deletes included.

mod common;

use common::*;
use kvstore::client::Client;
use kvstore::wire::native::{Opcode, Status};

/// Kill node3, remove its WAL (keeping its id and membership), start it again: it is a ring
/// member holding nothing.
fn wipe_and_restart(node: &mut Node, interval_ms: &str) -> Result<Node, String> {
    node.kill9();
    for e in std::fs::read_dir(&node.dir)
        .map_err(|e| e.to_string())?
        .flatten()
    {
        if e.file_name().to_string_lossy().starts_with("core-") {
            std::fs::remove_dir_all(e.path()).map_err(|e| e.to_string())?;
        }
    }
    let args = [
        "--cores",
        "1",
        "--suspect-timeout-ms",
        SUSPECT_MS,
        "--anti-entropy-interval-ms",
        interval_ms,
    ];
    Node::start_on(&node.id, &node.dir, node.port, &args)
}

/// The replica's own version of `key`: a value, a tombstone (both with versions) or nothing.
fn replica_state(c: &mut Client, key: &str) -> Option<(Status, u64)> {
    let r = c.call(Opcode::ReplicaGet, key.as_bytes(), &[]).ok()?;
    (r.version.hlc > 0).then_some((r.status, r.version.hlc))
}

fn load(nodes: &[Node]) -> Result<(Vec<String>, Vec<String>), String> {
    let mut c = nodes[0].client();
    let live: Vec<String> = (0..400).map(|i| format!("live-{i}")).collect();
    let gone: Vec<String> = (0..50).map(|i| format!("gone-{i}")).collect();
    for k in live.iter().chain(&gone) {
        c.put(k.as_bytes(), b"v").map_err(|e| e.to_string())?;
    }
    for k in &gone {
        c.delete(k.as_bytes()).map_err(|e| e.to_string())?;
    }
    Ok((live, gone))
}

/// How many of the keys `n` does not hold as written: live ones with their value, gone ones
/// as tombstones.
fn missing(n: &Node, live: &[String], gone: &[String]) -> u64 {
    let mut c = n.client();
    let mut missing = 0;
    for (keys, want) in [(live, Status::Ok), (gone, Status::NotFound)] {
        for k in keys {
            if !matches!(replica_state(&mut c, k), Some((s, _)) if s == want) {
                missing += 1;
            }
        }
    }
    missing
}

fn converged(n: &Node, live: &[String], gone: &[String]) -> bool {
    missing(n, live, gone) == 0
}

#[test]
fn kv_repair_refills_a_wiped_replica_and_reports_it() -> TestResult {
    let slow = ["--anti-entropy-interval-ms", "600000"];
    let mut nodes = cluster("ae-repair", 3, &slow)?;
    let (live, gone) = load(&nodes)?;
    nodes[2] = wipe_and_restart(&mut nodes[2], "600000")?;
    // every member sees node3 back: a peer that still held it DEAD would leave it out of the
    // keys they share, and its tree would look equal to the wiped node's empty one
    for n in &nodes {
        wait_members(n, 3, "ALIVE")?;
    }
    // a replica write of the load that timed out on a loaded machine left a hint, delivered
    // once node3 is back: wait for it, so that what node3 lacks holds still until the repair
    for n in &nodes[..2] {
        poll("hints delivered", START_DEADLINE, || {
            (hints_held(n)? == 0).then_some(())
        })?;
    }
    let missing = missing(&nodes[2], &live, &gone);
    let total = (live.len() + gone.len()) as u64;
    assert!(
        missing * 2 > total,
        "the wipe left {} of {total} keys behind",
        total - missing
    );
    let o = nodes[2].kv(&["repair", "--json"]);
    assert!(o.status.success(), "{o:?}");
    let r: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    assert_eq!(r["peers"], 2, "{r}");
    assert_eq!(r["keys_pulled"], missing, "{r}");
    assert!(
        converged(&nodes[2], &live, &gone),
        "not every key or tombstone came back"
    );
    // a second round finds every replica equal: roots only
    let o = nodes[2].kv(&["repair", "--json"]);
    let r: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    assert_eq!(
        (r["peers_equal"].as_u64(), r["keys_pulled"].as_u64()),
        (Some(2), Some(0)),
        "{r}"
    );
    Ok(())
}

#[test]
fn periodic_rounds_refill_a_wiped_replica_without_reads() -> TestResult {
    let fast = ["--anti-entropy-interval-ms", "1000"];
    let mut nodes = cluster("ae-periodic", 3, &fast)?;
    let (live, gone) = load(&nodes)?;
    nodes[2] = wipe_and_restart(&mut nodes[2], "1000")?;
    poll(
        "node3 to hold every key and tombstone again",
        START_DEADLINE,
        || converged(&nodes[2], &live, &gone).then_some(()),
    )?;
    Ok(())
}
