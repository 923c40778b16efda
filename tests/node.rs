//! Integration tests of one real `kvstore-node` process: CLI, client library, durability across
//! kill -9 and restarts, bad input, limits and shutdown.

mod common;

use std::collections::HashMap;
use std::io::Read;
use std::time::Duration;

use common::*;
use kvstore::client::{Client, Error as ClientError};
use kvstore::limits::{KEY_BYTES_MAX, NATIVE_HEADER_BYTES};
use kvstore::wire::native::{self, Opcode, Status};

#[test]
fn put_get_delete_through_kv_and_the_client_library() -> TestResult {
    let node = Node::start("n1", &data_dir("basic"), &["--cores", "2"])?;
    let o = node.kv(&["put", "greeting", "hello world"]);
    assert_eq!((o.status.code(), stdout(&o).as_str()), (Some(0), "OK\n"));
    let o = node.kv(&["get", "greeting"]);
    assert_eq!(
        (o.status.code(), stdout(&o).as_str()),
        (Some(0), "hello world\n")
    );
    let o = node.kv(&["get", "missing"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&o.stderr), "not found\n");
    assert_eq!(stdout(&node.kv(&["ping"])), "PONG\n");
    let o = node.kv(&["delete", "greeting"]);
    assert_eq!((o.status.code(), stdout(&o).as_str()), (Some(0), "OK\n"));
    assert_eq!(
        node.kv(&["delete", "greeting"]).status.code(),
        Some(0),
        "missing key: OK"
    );
    assert_eq!(node.kv(&["get", "greeting"]).status.code(), Some(1));

    let mut c = node.client();
    assert!(!c.put(b"k", b"v1")?.was_live());
    assert!(c.put(b"k", b"v2")?.was_live());
    assert_eq!(c.get(b"k")?, Some(b"v2".to_vec()));
    assert!(c.delete(b"k")?);
    assert!(!c.delete(b"k")?);
    assert_eq!(c.get(b"k")?, None);

    // keys on both cores, counted by `kv info`
    for i in 0..100 {
        c.put(format!("key-{i}").as_bytes(), b"x")?;
    }
    let info = stdout(&node.kv(&["info"]));
    let lines: Vec<&str> = info.lines().collect();
    assert!(lines[0].starts_with(&format!(
        "node n1 127.0.0.1:{} cores=2 uptime_s=",
        node.port
    )));
    let keys: usize = lines[1..]
        .iter()
        .map(|l| {
            l.split_whitespace()
                .nth(2)
                .and_then(|k| k.strip_prefix("keys="))
        })
        .map(|k| k.and_then(|k| k.parse::<usize>().ok()).unwrap_or(0))
        .sum();
    assert_eq!(
        lines.len(),
        6,
        "node, two cores, WAL, clock, one member: {info}"
    );
    assert!(lines[3].starts_with("wal repair_pending=false damaged_segments=0 records_lost=0"));
    assert!(lines[4].starts_with("clock fenced=false offset_ms=0 max_offset_ms=500"));
    assert!(lines[5].starts_with(&format!("member n1 127.0.0.1:{} ALIVE inc=", node.port)));
    assert_eq!(keys, 100);
    let json: serde_json::Value = serde_json::from_slice(&node.kv(&["info", "--json"]).stdout)?;
    assert_eq!(json["node_id"], "n1");
    assert_eq!(json["core_stats"].as_array().map(|a| a.len()), Some(2));
    Ok(())
}

#[test]
fn kv_exit_codes() -> TestResult {
    let port = free_port().to_string();
    let o = kv(&port, &["ping"]);
    assert_eq!(o.status.code(), Some(2), "nothing listens there");
    let o = kv(&port, &["frobnicate"]);
    assert_eq!(o.status.code(), Some(64));
    let o = kv(&port, &["put", "only-key"]);
    assert_eq!(o.status.code(), Some(64));
    let o = kv(&port, &[]);
    assert_eq!(o.status.code(), Some(64), "no command and no terminal");
    Ok(())
}

/// 10,000 acknowledged writes from several connections, kill -9, restart: every acknowledged
/// write reads back, and nothing that was never written appears.
#[test]
fn acknowledged_writes_survive_kill_9() -> TestResult {
    acknowledged_writes_survive_kill_9_with("none")
}

/// The same with `--fsync batch` (O_DSYNC segments: no separate fdatasync).
#[test]
fn acknowledged_writes_survive_kill_9_with_fsync_batch() -> TestResult {
    acknowledged_writes_survive_kill_9_with("batch")
}

fn acknowledged_writes_survive_kill_9_with(fsync: &str) -> TestResult {
    let dir = data_dir(&format!("kill9-{fsync}"));
    let mut node = Node::start("n1", &dir, &["--cores", "2", "--fsync", fsync])?;
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let addr = node.addr();
            std::thread::spawn(move || -> Result<HashMap<String, String>, ClientError> {
                let mut c = Client::connect(&addr, CLIENT_TIMEOUT)?;
                let mut acked = HashMap::new();
                for round in 0..50 {
                    let mut batch = Vec::new();
                    for i in 0..50 {
                        // keys repeat across rounds, so later versions must win on replay
                        let key = format!("t{t}-k{}", (round * 50 + i) % 1500);
                        let value = format!("t{t}-r{round}-i{i}");
                        c.queue(Opcode::Put, key.as_bytes(), value.as_bytes());
                        batch.push((key, value));
                    }
                    c.flush()?;
                    for (key, value) in batch {
                        let r = c.recv()?;
                        assert_eq!(r.status, Status::Ok);
                        acked.insert(key, value);
                    }
                }
                Ok(acked)
            })
        })
        .collect();
    let mut acked = HashMap::new();
    for t in threads {
        acked.extend(t.join().map_err(|_| "writer panicked")??);
    }
    assert_eq!(acked.len(), 4 * 1500);
    node.kill9();
    node.spawn()?;
    let mut c = node.client();
    for (key, value) in &acked {
        assert_eq!(
            c.get(key.as_bytes())?.as_deref(),
            Some(value.as_bytes()),
            "{key}"
        );
    }
    assert_eq!(c.get(b"t0-k1500")?, None, "never written");
    Ok(())
}

/// kill -9 while writers are busy (the default `--fsync interval`: acknowledged from the
/// staging file, segment writes still to come): after the restart every key holds its last
/// acknowledged value or one sent after it (in flight at the kill), never an older one.
#[test]
fn acknowledged_writes_survive_kill_9_under_load() -> TestResult {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    /// Keys per writer, and acknowledged writes in all before the kill.
    const KEYS: u64 = 200;
    const ACKED_BEFORE_KILL: u64 = 4_000;
    let dir = data_dir("kill9-load");
    let mut node = Node::start("n1", &dir, &["--cores", "2"])?;
    let acked_total = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (addr, acked_total) = (node.addr(), acked_total.clone());
            // per key: (last acknowledged, last sent) sequence numbers
            std::thread::spawn(move || -> HashMap<String, (u64, u64)> {
                let mut seen: HashMap<String, (u64, u64)> = HashMap::new();
                let Ok(mut c) = Client::connect(&addr, CLIENT_TIMEOUT) else {
                    return seen;
                };
                for seq in 1u64.. {
                    let key = format!("t{t}-k{}", seq % KEYS);
                    seen.entry(key.clone()).or_default().1 = seq;
                    match c.put(key.as_bytes(), seq.to_string().as_bytes()) {
                        Ok(_) => {
                            seen.entry(key).or_default().0 = seq;
                            acked_total.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => break, // the node is gone
                    }
                }
                seen
            })
        })
        .collect();
    poll(
        "writes acknowledged before the kill",
        START_DEADLINE,
        || (acked_total.load(Ordering::Relaxed) >= ACKED_BEFORE_KILL).then_some(()),
    )?;
    node.kill9();
    let mut seen = HashMap::new();
    for t in threads {
        seen.extend(t.join().map_err(|_| "writer panicked")?);
    }
    node.spawn()?;
    let mut c = node.client();
    let mut checked = 0;
    for (key, (acked, sent)) in &seen {
        let held = c.get(key.as_bytes())?;
        let held: u64 = match held {
            Some(v) => String::from_utf8_lossy(&v).parse()?,
            None => 0,
        };
        assert!(
            held >= *acked && held <= *sent,
            "{key}: holds {held}, acknowledged up to {acked}, sent up to {sent}"
        );
        checked += u64::from(*acked > 0);
    }
    assert!(checked >= 4 * KEYS / 2, "only {checked} keys acknowledged");
    Ok(())
}

#[test]
fn a_restart_with_a_different_core_count_keeps_every_key() -> TestResult {
    let dir = data_dir("cores");
    let mut node = Node::start("n1", &dir, &["--cores", "2"])?;
    let mut c = node.client();
    for i in 0..1000 {
        c.put(format!("key-{i}").as_bytes(), format!("v{i}").as_bytes())?;
    }
    for i in 0..100 {
        c.delete(format!("key-{i}").as_bytes())?;
    }
    drop(c);
    for cores in ["1", "3"] {
        assert!(node.terminate()?.success());
        node = Node::start("n1", &dir, &["--cores", cores])?;
        let mut c = node.client();
        for i in 0..1000 {
            let want = (i >= 100).then(|| format!("v{i}").into_bytes());
            assert_eq!(
                c.get(format!("key-{i}").as_bytes())?,
                want,
                "cores={cores} key-{i}"
            );
        }
        let json = c.info()?;
        let total: u64 = json["core_stats"]
            .as_array()
            .map(|a| a.iter().filter_map(|s| s["keys"].as_u64()).sum())
            .unwrap_or(0);
        assert_eq!(total, 900);
    }
    Ok(())
}

#[test]
fn sigterm_shuts_down_cleanly_and_keeps_data() -> TestResult {
    let dir = data_dir("sigterm");
    let mut node = Node::start("n1", &dir, &["--cores", "2", "--fsync", "interval"])?;
    let mut idle = node.client();
    idle.ping()?;
    let mut c = node.client();
    for i in 0..200 {
        c.put(format!("k{i}").as_bytes(), b"v")?;
    }
    let status = node.terminate()?;
    assert_eq!(status.code(), Some(0), "clean exit");
    assert!(idle.ping().is_err(), "connections are closed at shutdown");
    node.spawn()?;
    let mut c = node.client();
    for i in 0..200 {
        assert_eq!(c.get(format!("k{i}").as_bytes())?, Some(b"v".to_vec()));
    }
    Ok(())
}

#[test]
fn a_second_node_on_the_same_port_is_refused() -> TestResult {
    let node = Node::start("n1", &data_dir("port-a"), &["--cores", "1"])?;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kvstore-node"))
        .args([
            "--node-id",
            "n2",
            "--port",
            &node.port.to_string(),
            "--cores",
            "1",
        ])
        .arg("--data-dir")
        .arg(data_dir("port-b"))
        .output()?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already in use"));
    node.client().ping()?;
    Ok(())
}

#[test]
fn a_data_dir_of_another_node_refuses_to_start() -> TestResult {
    let dir = data_dir("other-id");
    let mut node = Node::start("n1", &dir, &["--cores", "1"])?;
    node.terminate()?;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kvstore-node"))
        .args(["--node-id", "n2", "--port", &free_port().to_string()])
        .arg("--data-dir")
        .arg(&dir)
        .output()?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("belongs to node"));
    Ok(())
}

fn expect_closed(c: &mut Client) -> bool {
    matches!(
        c.recv(),
        Err(ClientError::Closed { .. }) | Err(ClientError::Io { .. })
    )
}

/// Garbage, oversized and half-finished frames get an error (or a closed connection) while
/// another client keeps working.
#[test]
fn bad_input_never_disturbs_other_clients() -> TestResult {
    let node = Node::start(
        "n1",
        &data_dir("bad-input"),
        &["--cores", "2", "--max-value-bytes", "1000"],
    )?;
    let mut good = node.client();
    good.put(b"stable", b"yes")?;
    let check = |good: &mut Client| -> TestResult {
        assert_eq!(good.get(b"stable")?, Some(b"yes".to_vec()));
        Ok(())
    };

    // value at the limit works; one past it is refused and the connection closed
    let mut c = node.client();
    c.put(b"big", &vec![b'v'; 1000])?;
    match c.put(b"big", &vec![b'v'; 1001]) {
        Err(ClientError::Server {
            status: Status::TooLarge,
            ..
        }) => {}
        other => panic!("expected too large, got {other:?}"),
    }
    assert!(expect_closed(&mut c));
    check(&mut good)?;

    // key at the limit works; one past it is refused
    let mut c = node.client();
    c.put(&vec![b'k'; KEY_BYTES_MAX], b"v")?;
    assert!(matches!(
        c.put(&vec![b'k'; KEY_BYTES_MAX + 1], b"v"),
        Err(ClientError::Server {
            status: Status::TooLarge,
            ..
        })
    ));
    check(&mut good)?;

    // an empty key and an unknown opcode: error replies, connection kept
    let mut c = node.client();
    assert!(matches!(
        c.put(b"", b"v"),
        Err(ClientError::Server {
            status: Status::BadRequest,
            ..
        })
    ));
    let mut frame = Vec::new();
    native::encode_request(
        &mut frame,
        &native::Request {
            request_id: 77,
            opcode: 99,
            version: Default::default(),
            flags: 0,
            key: b"k",
            value: b"",
        },
    );
    c.send_raw(&frame)?;
    let r = c.recv()?;
    assert_eq!((r.request_id, r.status), (77, Status::UnknownOpcode));
    c.ping()?;

    // a bad magic byte after a valid frame: error reply, then closed
    c.send_raw(&[0xA8; 40])?;
    assert_eq!(c.recv()?.status, Status::BadMagic);
    assert!(expect_closed(&mut c));
    check(&mut good)?;

    // garbage that neither the native nor the original protocol starts with is RESP, and
    // unframeable RESP: a protocol error line, then closed
    let mut raw = std::net::TcpStream::connect(node.addr())?;
    raw.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    std::io::Write::write_all(&mut raw, b"*\x01\x02garbage\r\n\xff\xfe")?;
    let mut buf = Vec::new();
    raw.read_to_end(&mut buf)?;
    assert!(String::from_utf8_lossy(&buf).starts_with("-ERR Protocol error: invalid multibulk"));
    check(&mut good)?;

    // half a frame, then the client vanishes
    let mut c = node.client();
    let mut frame = Vec::new();
    native::encode_request(
        &mut frame,
        &native::Request {
            request_id: 1,
            opcode: Opcode::Put as u8,
            version: Default::default(),
            flags: 0,
            key: b"half",
            value: b"value",
        },
    );
    c.send_raw(&frame[..NATIVE_HEADER_BYTES + 2])?;
    drop(c);
    check(&mut good)?;
    assert_eq!(
        good.get(b"half")?,
        None,
        "a half-written frame is never applied"
    );
    Ok(())
}

#[test]
fn the_connection_limit_holds_at_a_lowered_value() -> TestResult {
    let node = Node::start(
        "n1",
        &data_dir("conn-limit"),
        &["--cores", "2", "--max-connections", "3"],
    )?;
    // The start-up readiness probe's connection may still be closing: retry until 3 are in.
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(poll(
            "a connection under the limit",
            START_DEADLINE,
            || {
                let mut c = Client::connect(&node.addr(), CLIENT_TIMEOUT).ok()?;
                c.ping().ok().map(|_| c)
            },
        )?);
    }
    let mut fourth = node.client();
    assert!(fourth.ping().is_err(), "one past the limit is closed");
    drop(open.pop());
    let mut again = poll("a slot to free up", START_DEADLINE, || {
        let mut c = Client::connect(&node.addr(), CLIENT_TIMEOUT).ok()?;
        c.ping().ok().map(|_| c)
    })?;
    again.put(b"k", b"v")?;
    for c in open.iter_mut() {
        c.ping()?;
    }
    Ok(())
}

#[test]
fn idle_and_slow_connections_are_closed() -> TestResult {
    let node = Node::start(
        "n1",
        &data_dir("idle"),
        &["--cores", "1", "--idle-timeout-ms", "300"],
    )?;
    let mut c = node.client();
    c.ping()?;
    let mut raw = std::net::TcpStream::connect(node.addr())?;
    raw.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut buf = [0u8; 16];
    let n = raw.read(&mut buf)?;
    assert_eq!(n, 0, "idle connection closed by the node");
    assert!(expect_closed(&mut c));
    Ok(())
}

/// Pipelined reads of large values beyond one batch's reply budget are all answered, in order.
/// glommio counts a task's wakers in 16 bits: a connection that leaked one waker per read
/// (the shutdown wait lost by every read) broke after this many requests.
const GLOMMIO_TASK_REFS_MAX: usize = 32_767;

/// One long-lived connection serves request after request, each waiting for its answer (so
/// every read of the node waits for data), well past `GLOMMIO_TASK_REFS_MAX`.
#[test]
fn a_long_lived_connection_outlasts_the_task_reference_limit() -> TestResult {
    let node = Node::start("n1", &data_dir("long-lived"), &["--cores", "1"])?;
    let mut c = node.client();
    for i in 0..GLOMMIO_TASK_REFS_MAX + 2_000 {
        if i % 1_000 == 0 {
            c.put(format!("k{i}").as_bytes(), b"v")?;
        } else {
            c.ping()?;
        }
    }
    assert_eq!(c.get(b"k32000")?, Some(b"v".to_vec()));
    Ok(())
}

#[test]
fn pipelined_large_reads_span_batches_in_order() -> TestResult {
    let node = Node::start("n1", &data_dir("big-reads"), &["--cores", "2"])?;
    let mut c = node.client();
    let big = |i: usize| vec![b'a' + (i % 26) as u8; 1024 * 1024];
    for i in 0..4 {
        c.put(format!("big{i}").as_bytes(), &big(i))?;
    }
    let mut ids = Vec::new();
    for i in 0..200 {
        ids.push(c.queue(Opcode::Get, format!("big{}", i % 4).as_bytes(), &[]));
    }
    c.flush()?;
    for (i, id) in ids.into_iter().enumerate() {
        let r = c.recv()?;
        assert_eq!((r.request_id, r.status), (id, Status::Ok));
        assert_eq!(r.value, big(i % 4));
    }
    Ok(())
}

/// More pipelined requests than one batch takes (`INFLIGHT_REQUESTS_MAX`): all answered in order.
#[test]
fn a_pipeline_deeper_than_one_batch_is_answered_in_order() -> TestResult {
    let node = Node::start("n1", &data_dir("deep-pipeline"), &["--cores", "2"])?;
    let mut c = node.client();
    let depth = kvstore::limits::INFLIGHT_REQUESTS_MAX * 3 + 7;
    let mut ids = Vec::new();
    for i in 0..depth {
        ids.push(c.queue(Opcode::Put, format!("p{i}").as_bytes(), b"v"));
    }
    c.flush()?;
    for id in ids {
        let r = c.recv()?;
        assert_eq!((r.request_id, r.status), (id, Status::Ok));
    }
    assert_eq!(
        c.get(format!("p{}", depth - 1).as_bytes())?,
        Some(b"v".to_vec())
    );
    Ok(())
}

/// Two processes on one data dir used to lose acknowledged writes (the second replayed,
/// snapshotted and deleted the first one's live segment). The second now refuses to start,
/// naming the dir and the holder's pid, and everything the first acknowledged survives kill -9.
#[test]
fn a_second_process_on_a_data_dir_refuses_and_nothing_is_lost() -> TestResult {
    let dir = data_dir("dir-lock");
    let mut first = Node::start("d1", &dir, &["--cores", "1", "--fsync", "batch"])?;
    let mut c = first.client();
    for i in 1..=50 {
        c.put(format!("k{i}").as_bytes(), b"v")?;
    }
    let second = std::process::Command::new(env!("CARGO_BIN_EXE_kvstore-node"))
        .args(["--node-id", "d1", "--port", &free_port().to_string()])
        .arg("--data-dir")
        .arg(&dir)
        .stdin(std::process::Stdio::null())
        .output()?;
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        !second.status.success(),
        "the second process started: {stderr}"
    );
    let pid = first
        .child
        .as_ref()
        .map(|c| c.id())
        .ok_or("first not running")?;
    assert!(stderr.contains("in use by another process"), "{stderr}");
    assert!(
        stderr.contains(&format!("pid {pid}")),
        "names the holder: {stderr}"
    );
    assert!(
        stderr.contains(&dir.display().to_string()),
        "names the dir: {stderr}"
    );
    for i in 51..=100 {
        c.put(format!("k{i}").as_bytes(), b"v")?;
    }
    first.kill9();
    let node = Node::start("d1", &dir, &["--cores", "1"])?;
    let mut c = node.client();
    for i in 1..=100 {
        assert_eq!(
            c.get(format!("k{i}").as_bytes())?,
            Some(b"v".to_vec()),
            "k{i}"
        );
    }
    Ok(())
}
