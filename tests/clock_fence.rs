//! A node whose wall clock is off fences itself: three real nodes on loopback, node3's clock
//! skewed by libfaketime (per process, so no network namespace is needed). A sequential
//! client writes through every node in turn and reads each key back through another; every
//! read is checked against the client's own completed writes. Before the fence, a write
//! node3 coordinated with a future version was refused by its peers but kept by its own
//! replica, and won every later read that heard node3.

mod common;

use common::*;
use kvstore::client::{Client, Error as ClientError};
use std::collections::HashMap;

/// What one checked run saw.
#[derive(Default, Debug)]
struct Run {
    acked: [usize; 3],
    fenced: [usize; 3],
    other_failures: Vec<String>,
    /// Reads that returned something older than the client's last acknowledged write.
    stale_reads: Vec<String>,
    fence_messages: Vec<String>,
}

/// The values written to one key, in order, and whether each was acknowledged.
#[derive(Default)]
struct History {
    writes: Vec<(String, bool)>,
}

impl History {
    /// Is `read` older than the last acknowledged write? A value written after it (failed,
    /// so of unknown outcome) is fine; one written before it, or nothing, is not.
    fn stale(&self, read: Option<&str>) -> bool {
        let Some(last_acked) = self.writes.iter().rposition(|(_, ok)| *ok) else {
            return false;
        };
        match read {
            None => true,
            Some(v) => self
                .writes
                .iter()
                .rposition(|(w, _)| w == v)
                .is_none_or(|i| i < last_acked),
        }
    }
}

/// `ops` writes rotating over the three nodes, each key read back through the next node.
fn checked_run(nodes: &[Node], tag: &str, ops: usize) -> Result<Run, String> {
    let mut clients: Vec<Client> = nodes
        .iter()
        .map(|n| Client::connect(&n.addr(), CLIENT_TIMEOUT).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    let mut run = Run::default();
    let mut keys: HashMap<String, History> = HashMap::new();
    for i in 0..ops {
        let key = format!("{tag}:{}", i % 12);
        let value = format!("{tag}.{i}");
        let via = i % 3;
        let ok = match clients[via].put(key.as_bytes(), value.as_bytes()) {
            Ok(_) => {
                run.acked[via] += 1;
                true
            }
            Err(ClientError::Server { message, .. }) if message.contains("clock fenced") => {
                run.fenced[via] += 1;
                run.fence_messages.push(message);
                false
            }
            Err(e) => {
                run.other_failures
                    .push(format!("put {key} via node{}: {e}", via + 1));
                false
            }
        };
        let h = keys.entry(key.clone()).or_default();
        h.writes.push((value, ok));
        let reader = (i + 1) % 3;
        match clients[reader].get(key.as_bytes()) {
            Ok(v) => {
                let v = v.map(|b| String::from_utf8_lossy(&b).into_owned());
                if h.stale(v.as_deref()) {
                    run.stale_reads.push(format!(
                        "{key} via node{}: read {v:?} after acknowledged {:?}",
                        reader + 1,
                        h.writes.iter().rev().find(|(_, ok)| *ok)
                    ));
                }
            }
            Err(e) => run
                .other_failures
                .push(format!("get {key} via node{}: {e}", reader + 1)),
        }
    }
    Ok(run)
}

/// node1 and node2 with true clocks, node3 with `env` (libfaketime's).
fn skewed_cluster(name: &str, env: &[(&str, &str)], extra: &[&str]) -> Result<Vec<Node>, String> {
    let mut nodes = cluster(name, 2, extra)?;
    let seed = nodes[0].addr();
    let mut args = member_args(&seed).to_vec();
    args.extend_from_slice(extra);
    let dir = data_dir(&format!("{name}-n3"));
    nodes.push(Node::start_with_env(
        "node3",
        &dir,
        free_port(),
        &args,
        env,
    )?);
    for n in &nodes {
        wait_members(n, 3, "ALIVE")?;
    }
    Ok(nodes)
}

fn assert_clean(run: &Run, what: &str) {
    assert!(
        run.stale_reads.is_empty(),
        "{what}: {} reads older than an acknowledged write: {:?}",
        run.stale_reads.len(),
        &run.stale_reads[..run.stale_reads.len().min(5)]
    );
    assert!(
        run.other_failures.is_empty(),
        "{what}: {:?}",
        &run.other_failures[..run.other_failures.len().min(5)]
    );
}

/// Wait until a write through `node` is acknowledged (its fence lifted).
fn wait_writable(node: &Node, key: &str) -> Result<(), String> {
    let mut c = node.client();
    poll("the node to write again", START_DEADLINE, || {
        c.put(key.as_bytes(), b"x").ok()
    })
    .map(drop)
}

/// Wait until a write through `node` is refused for its clock; the refusal's message.
fn wait_fenced(node: &Node, key: &str) -> Result<String, String> {
    let mut c = node.client();
    poll("the node to fence itself", START_DEADLINE, || {
        match c.put(key.as_bytes(), b"x") {
            Err(ClientError::Server { message, .. }) if message.contains("ms off") => Some(message),
            _ => None,
        }
    })
}

/// The offset a fence refusal names ("this node's clock is N ms off ...").
fn offset_in(message: &str) -> Result<i64, String> {
    message
        .split("clock is ")
        .nth(1)
        .and_then(|r| r.split(" ms").next())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("no offset in {message:?}"))
}

/// A node started with its clock 70 s fast, 70 s slow, or 2 s fast (past the default 500 ms
/// bound but far inside the 60 s replicas check): it coordinates no write from the start, its
/// refusal names the measured offset, no read anywhere goes back in time, writes through the
/// others all succeed, and once restarted with a true clock it writes again.
#[test]
fn a_node_started_with_a_wrong_clock_is_fenced_before_its_first_write() -> TestResult {
    let Some(lib) = faketime_lib()? else {
        return Ok(());
    };
    for (skew, name, shown) in [
        ("+70s", "clock-fast70", 70_000),
        ("-70s", "clock-slow70", -70_000),
        ("+2s", "clock-fast2", 2_000),
    ] {
        let env = [("LD_PRELOAD", lib.as_str()), ("FAKETIME", skew)];
        let mut nodes = skewed_cluster(name, &env, &[])?;
        let run = checked_run(&nodes, name, 240)?;
        assert_clean(&run, skew);
        assert_eq!(
            run.acked[2], 0,
            "{skew}: node3 acknowledged writes: {run:?}"
        );
        assert_eq!(run.fenced[2], 80, "{skew}: {run:?}");
        assert_eq!((run.acked[0], run.acked[1]), (80, 80), "{skew}: {run:?}");
        let m = wait_fenced(&nodes[2], "probe")?;
        let off = offset_in(&m)?;
        assert!((off - shown).abs() <= shown.abs() / 10, "{skew}: {m}");
        let info = stdout(&nodes[2].kv(&["info"]));
        assert!(info.contains("clock fenced=true"), "{info}");
        let info = stdout(&nodes[0].kv(&["info"]));
        assert!(
            info.contains("clock fenced=false"),
            "a healthy node: {info}"
        );
        // the clock is fixed: node3 restarts with the true time and writes again
        nodes[2].terminate()?;
        let (dir, port) = (nodes[2].dir.clone(), nodes[2].port);
        let seed = nodes[0].addr();
        nodes[2] = Node::start_on("node3", &dir, port, &member_args(&seed))?;
        wait_writable(&nodes[2], "after-fix")?;
        let run = checked_run(&nodes, &format!("{name}-fixed"), 60)?;
        assert_clean(&run, &format!("{skew}, fixed"));
        assert_eq!(run.acked, [20, 20, 20], "{skew}, fixed: {run:?}");
    }
    Ok(())
}

/// node3's wall clock steps 2 s ahead while it runs (the monotonic clock does not move, as
/// with an NTP step): it refuses writes from its next one on, reads stay correct, and it
/// writes again once the clock is stepped back.
#[test]
fn a_clock_that_jumps_while_running_is_fenced_and_recovers() -> TestResult {
    let Some(lib) = faketime_lib()? else {
        return Ok(());
    };
    let dir = data_dir("clock-jump-file");
    let file = dir.join("faketime");
    std::fs::write(&file, "+0s").map_err(|e| e.to_string())?;
    let file_s = file.to_string_lossy().into_owned();
    let env = [
        ("LD_PRELOAD", lib.as_str()),
        ("FAKETIME_TIMESTAMP_FILE", file_s.as_str()),
        ("FAKETIME_CACHE_DURATION", "1"),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ("DONT_FAKE_MONOTONIC", "1"),
    ];
    let nodes = skewed_cluster("clock-jump", &env, &[])?;
    wait_writable(&nodes[2], "before")?;
    let run = checked_run(&nodes, "jump-before", 60)?;
    assert_clean(&run, "before the jump");
    assert_eq!(run.acked, [20, 20, 20], "{run:?}");
    std::fs::write(&file, "+2s").map_err(|e| e.to_string())?;
    let m = wait_fenced(&nodes[2], "during")?;
    assert!((offset_in(&m)? - 2_000).abs() <= 200, "{m}");
    let run = checked_run(&nodes, "jump-during", 90)?;
    assert_clean(&run, "after the jump");
    assert_eq!(run.acked[2], 0, "{run:?}");
    assert_eq!((run.acked[0], run.acked[1]), (30, 30), "{run:?}");
    std::fs::write(&file, "+0s").map_err(|e| e.to_string())?;
    wait_writable(&nodes[2], "after")?;
    let run = checked_run(&nodes, "jump-after", 60)?;
    assert_clean(&run, "after the clock was stepped back");
    assert_eq!(run.acked, [20, 20, 20], "{run:?}");
    Ok(())
}
