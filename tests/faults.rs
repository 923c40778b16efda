//! Integration tests for defects found by fault injection, with real processes on loopback:
//! an all-seeded start, a node in no ring, one node with a fast wall clock (libfaketime), and
//! writers colliding on hot keys. Partitions (network namespaces) are in `tests/partition.rs`.

mod common;

use common::*;
use kvstore::client::{Client, Error as ClientError};
use kvstore::wire::native::Status;

/// Three nodes started with one identical command line (every node seeded with all three, as
/// Docker or systemd configs do): they form one cluster by themselves. It used to stay
/// `role=waiting` forever, and the first GET or SET panicked the node.
#[test]
fn an_all_seeded_cluster_forms_by_itself() -> TestResult {
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let seeds: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let mut args = vec!["--cores", "1", "--suspect-timeout-ms", SUSPECT_MS];
    for s in &seeds {
        args.extend(["--seed", s.as_str()]);
    }
    let mut nodes = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let dir = data_dir(&format!("all-seeded-n{}", i + 1));
        nodes.push(Node::start_on(
            &format!("node{}", i + 1),
            &dir,
            *port,
            &args,
        )?);
    }
    for n in &nodes {
        wait_members(n, 3, "ALIVE")?;
    }
    for (i, n) in nodes.iter().enumerate() {
        n.client().put(format!("k{i}").as_bytes(), b"v")?;
    }
    for n in &nodes {
        for i in 0..3 {
            assert_eq!(
                n.client().get(format!("k{i}").as_bytes())?,
                Some(b"v".to_vec())
            );
        }
    }
    Ok(())
}

/// A node whose seed never answers is in no ring: GET and SET get a clear error naming what
/// it waits for, and the node stays up (it used to panic: `quorum 1 of 0`).
#[test]
fn a_node_in_no_ring_answers_a_clear_error_and_stays_up() -> TestResult {
    let unreachable = format!("127.0.0.1:{}", free_port());
    let dir = data_dir("no-ring");
    let node = Node::start("lone", &dir, &["--cores", "1", "--seed", &unreachable])?;
    let mut c = node.client();
    for attempt in [c.put(b"k", b"v").map(|_| ()), c.get(b"k").map(|_| ())] {
        match attempt {
            Err(ClientError::Server { status, message }) => {
                assert_eq!(status, Status::Unavailable);
                assert!(message.contains("no replicas yet"), "{message}");
                assert!(message.contains(&unreachable), "names the seed: {message}");
            }
            other => return Err(format!("expected an error reply, got {other:?}").into()),
        }
    }
    let o = node.kv(&["put", "k", "v"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("no replicas yet"));
    node.client().ping()?;
    Ok(())
}

/// One node's wall clock 70 s fast must not stop writes across the cluster. The fast node's
/// versions reach the others in read answers; their clocks used to adopt them, after which
/// their own replicas refused their writes as too far ahead. Now those versions are refused,
/// not adopted, and the fast node fences itself (`tests/clock_fence.rs` checks every read):
/// writes through the healthy nodes keep succeeding.
#[test]
fn one_fast_clock_does_not_stall_the_others() -> TestResult {
    let Some(lib) = faketime_lib()? else {
        return Ok(());
    };
    let mut nodes = cluster("fast-clock", 2, &[])?;
    let dir = data_dir("fast-clock-n3");
    let seed = nodes[0].addr();
    let args = [
        "--cores",
        "1",
        "--suspect-timeout-ms",
        SUSPECT_MS,
        "--seed",
        &seed,
    ];
    let env = [("LD_PRELOAD", lib.as_str()), ("FAKETIME", "+70s")];
    nodes.push(Node::start_with_env(
        "node3",
        &dir,
        free_port(),
        &args,
        &env,
    )?);
    for n in &nodes {
        wait_members(n, 3, "ALIVE")?;
    }
    // node3 fences itself (its clock is off both peers) and coordinates no write, naming why
    let mut c3 = nodes[2].client();
    let mut refused = 0;
    for i in 0..20 {
        if let Err(ClientError::Server { message, .. }) = c3.put(format!("f{i}").as_bytes(), b"x") {
            assert!(message.contains("clock fenced"), "{message}");
            refused += 1;
        }
    }
    assert_eq!(refused, 20, "a write 70 s in the future was accepted");
    // node1 and node2 read those keys (node3's copies carry the future versions), then write
    for n in &nodes[..2] {
        let mut c = n.client();
        for i in 0..20 {
            let _ = c.get(format!("f{i}").as_bytes());
        }
    }
    for n in &nodes[..2] {
        let mut c = n.client();
        for i in 0..50 {
            let key = format!("{}-after-{i}", n.id);
            c.put(key.as_bytes(), b"v")
                .map_err(|e| format!("write {key} through {}: {e}", n.id))?;
        }
    }
    Ok(())
}

/// Writers on all three nodes hammering a few hot keys: every write is acknowledged (a write
/// refused as stale is retried past the newer version; it used to give up after one retry and
/// report `quorum not reached`).
#[test]
fn writers_colliding_on_hot_keys_all_succeed() -> TestResult {
    const HOT_KEYS: usize = 4;
    const WRITERS_PER_NODE: usize = 3;
    const WRITES_PER_WRITER: usize = 1_500;
    let nodes = cluster("hot-keys", 3, &[])?;
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr()).collect();
    let mut threads = Vec::new();
    for (n, addr) in addrs.iter().enumerate() {
        for w in 0..WRITERS_PER_NODE {
            let addr = addr.clone();
            threads.push(std::thread::spawn(
                move || -> Result<Vec<String>, String> {
                    let mut c =
                        Client::connect(&addr, CLIENT_TIMEOUT).map_err(|e| e.to_string())?;
                    let mut failures = Vec::new();
                    for i in 0..WRITES_PER_WRITER {
                        let key = format!("hot{}", (i + w) % HOT_KEYS);
                        let value = format!("{n}-{w}-{i}");
                        if let Err(e) = c.put(key.as_bytes(), value.as_bytes()) {
                            failures.push(format!("{key}: {e}"));
                        }
                    }
                    Ok(failures)
                },
            ));
        }
    }
    let mut failures = Vec::new();
    for t in threads {
        failures.extend(t.join().map_err(|_| "writer panicked")??);
    }
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    // the replicas agree on every hot key
    for k in 0..HOT_KEYS {
        let key = format!("hot{k}");
        let values: Vec<Option<String>> = poll("replicas to agree", START_DEADLINE, || {
            let v: Vec<Option<String>> = nodes.iter().map(|n| local(n, &key)).collect();
            v.iter().all(|x| x == &v[0]).then_some(v)
        })?;
        assert!(values[0].is_some(), "{key} is missing");
    }
    Ok(())
}
