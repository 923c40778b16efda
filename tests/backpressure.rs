//! Backpressure on a replica that hangs without dying: its connection's window fills, and
//! writes beyond it go on with the other replicas. Its own test binary, so no other cluster
//! runs beside it: what it checks is timing-bound (every write must find its second replica
//! within the replica timeout), and a second cluster beside it on a loaded 2-core machine
//! made a write miss it.

mod common;

use common::*;
use kvstore::client::Client;
use kvstore::limits::PEER_INFLIGHT_MAX;
use kvstore::wire::native::{Opcode, Status};

/// A replica that hangs without dying (SIGSTOP: its connections stay open, it answers
/// nothing) fills its connections' windows; writes beyond them go on with the other two
/// replicas, leaving the hung one out after `PEER_ROOM_WAIT_MS` instead of stalling until it
/// is declared DEAD (the long suspect timeout keeps it SUSPECT for the whole test).
#[test]
fn writes_go_on_without_a_hung_replica_once_its_window_is_full() -> TestResult {
    const CONNECTIONS: usize = 8;
    let per_connection = PEER_INFLIGHT_MAX * 2 / CONNECTIONS;
    let mport = free_port();
    let mp = mport.to_string();
    let slow = ["--cores", "1", "--suspect-timeout-ms", "600000"];
    let n1 = Node::start(
        "node1",
        &data_dir("hung-n1"),
        &[&slow[..], &["--metrics-port", &mp]].concat(),
    )?;
    let seed = n1.addr();
    let n2 = Node::start(
        "node2",
        &data_dir("hung-n2"),
        &[&slow[..], &["--seed", &seed]].concat(),
    )?;
    let mut n3 = Node::start(
        "node3",
        &data_dir("hung-n3"),
        &[&slow[..], &["--seed", &seed]].concat(),
    )?;
    for n in [&n1, &n2, &n3] {
        wait_members(n, 3, "ALIVE")?;
    }
    // Open the connections to node3 first: a peer never connected is not waited for.
    n1.client().put(b"warm", b"up")?;
    let pid = n3.child.as_ref().ok_or("node3 not running")?.id() as i32;
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let mut clients: Vec<Client> = (0..CONNECTIONS).map(|_| n1.client()).collect();
    for (c, client) in clients.iter_mut().enumerate() {
        for i in 0..per_connection {
            client.queue(Opcode::Put, format!("k{c}-{i}").as_bytes(), b"v");
        }
        client.flush()?;
    }
    let mut failed = Vec::new();
    for client in &mut clients {
        for _ in 0..per_connection {
            let r = client.recv()?;
            if r.status != Status::Ok {
                failed.push(String::from_utf8_lossy(&r.value).into_owned());
            }
        }
    }
    let skipped = metric(mport, "kvstore_replicas_skipped_total");
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    // Writes find their second replica: node2 once its window has room, not node3's broken,
    // redialed or silent connection while node2 is merely busy (`round::take_back`,
    // `round::counts_on`). One window is left: in the first `PEER_STALL_MS` after the stop,
    // node3 still looks like it answers, and if node2 is starved of CPU that long too, a
    // write can count on node3. With two busy loops beside the test that happened in 1 of 14
    // runs (one write), against 3 of 6 before; so one write in a hundred may fail here
    // (without the backpressure rule every write past the window would).
    let total = per_connection * CONNECTIONS;
    if !failed.is_empty() {
        eprintln!(
            "{} of {total} writes failed: {:?}",
            failed.len(),
            failed.first()
        );
    }
    assert!(
        failed.len() * 100 <= total,
        "{} of {total} writes failed: {:?}",
        failed.len(),
        failed.first()
    );
    assert!(skipped? > 0.0, "no replica operation was left out");
    assert_eq!(n2.client().get(b"k0-0")?.as_deref(), Some(&b"v"[..]));
    n3.kill9();
    Ok(())
}

/// One sample of a node's `/metrics`.
fn metric(port: u16, series: &str) -> Result<f64, String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(CLIENT_TIMEOUT))
        .map_err(|e| e.to_string())?;
    write!(s, "GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n").map_err(|e| e.to_string())?;
    let mut text = String::new();
    s.read_to_string(&mut text).map_err(|e| e.to_string())?;
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("no {series} in /metrics"))
}
