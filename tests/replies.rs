//! Reply memory is bounded and counted: one command's reply (`REPLY_BYTES_MAX`), every reply
//! of a core in flight (`CORE_REPLY_BYTES_MAX`, counted toward `--max-memory`), and the
//! memory given back once sent. Before: one 9 KB `MGET big … big` (1,024 copies of a 1 MiB
//! value) took 2.8 GiB of RSS for its 1 GiB reply and kept it; two at once in a 3 GiB cgroup
//! got the node OOM-killed.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use common::*;
use kvstore::limits::REPLY_BYTES_MAX;

const MIB: usize = 1 << 20;

fn command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn connect(node: &Node) -> Result<TcpStream, String> {
    let s = TcpStream::connect(node.addr()).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(CLIENT_TIMEOUT))
        .map_err(|e| e.to_string())?;
    Ok(s)
}

/// Read one whole reply: an error line, or an array of `n` bulk strings of `len` bytes.
fn read_reply(s: &mut TcpStream, n: usize, len: usize) -> Result<Vec<u8>, String> {
    let full = format!("*{n}\r\n").len() + n * (format!("${len}\r\n").len() + len + 2);
    let mut got = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        if got.starts_with(b"-") && got.ends_with(b"\r\n") {
            return Ok(got);
        }
        if got.len() >= full {
            return Ok(got);
        }
        let r = s.read(&mut buf).map_err(|e| e.to_string())?;
        if r == 0 {
            return Err(format!("closed after {} bytes", got.len()));
        }
        // keep only the head of a long reply: the test checks its shape and length
        if got.len() < 256 {
            got.extend_from_slice(&buf[..r]);
        } else {
            got.resize(got.len() + r, 0);
        }
    }
}

fn mget(key: &[u8], n: usize) -> Vec<u8> {
    let mut args: Vec<&[u8]> = vec![b"MGET"];
    args.extend(std::iter::repeat_n(key, n));
    command(&args)
}

fn peak_rss_kib(node: &Node) -> Result<u64, String> {
    let pid = node.child.as_ref().ok_or("not running")?.id();
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| e.to_string())?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| "no VmHWM".to_string())
}

fn info_field(node: &Node, field: &str) -> Result<u64, String> {
    let mut s = connect(node)?;
    s.write_all(&command(&[b"INFO", b"memory"]))
        .map_err(|e| e.to_string())?;
    // a bulk string: `$<len>\r\n<text>\r\n`
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let whole = |got: &[u8]| -> Option<usize> {
        let end = got.windows(2).position(|w| w == b"\r\n")?;
        let len: usize = std::str::from_utf8(&got[1..end]).ok()?.parse().ok()?;
        (got.len() >= end + 2 + len).then_some(end + 2)
    };
    while whole(&got).is_none() {
        let n = s.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed".into());
        }
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("no {field} in {text}"))
}

/// MGET of 1,024 copies of a 1 MiB value from 1, 2 and 4 connections at once: each gets the
/// limit's error, the node stays up, and its peak RSS stays far below one such reply. Two
/// cores: connections on the core that does not own `big` gather it by hops.
#[test]
fn a_reply_past_its_limit_is_refused_before_the_memory_is_taken() -> TestResult {
    let dir = data_dir("replies-mget");
    let node = Node::start("r1", &dir, &["--cores", "2"])?;
    let mut c = node.client();
    c.put(b"big", &vec![b'x'; MIB])?;
    for at_once in [1, 2, 4] {
        let threads: Vec<_> = (0..at_once)
            .map(|_| {
                let mut s = connect(&node)?;
                s.write_all(&mget(b"big", 1024))
                    .map_err(|e| e.to_string())?;
                Ok(std::thread::spawn(move || read_reply(&mut s, 1024, MIB)))
            })
            .collect::<Result<_, String>>()?;
        for t in threads {
            let reply = t.join().map_err(|_| "reader panicked")??;
            let line = String::from_utf8_lossy(&reply);
            assert!(line.starts_with("-ERR reply too large"), "{line}");
            assert!(
                line.contains(&REPLY_BYTES_MAX.to_string()),
                "names the limit: {line}"
            );
        }
        c.ping()?;
    }
    // (1 GiB per reply before; now what one core may hold, and the values' encoding)
    let peak = peak_rss_kib(&node)?;
    assert!(peak < 600 * 1024, "peak RSS {peak} KiB");
    // a reply within the limit is answered whole, four at once
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let mut s = connect(&node)?;
            s.write_all(&mget(b"big", 40)).map_err(|e| e.to_string())?;
            Ok(std::thread::spawn(move || read_reply(&mut s, 40, MIB)))
        })
        .collect::<Result<_, String>>()?;
    for t in threads {
        let reply = t.join().map_err(|_| "reader panicked")??;
        assert!(
            reply.starts_with(b"*40\r\n$1048576\r\nxxx"),
            "{:?}",
            &reply[..20]
        );
    }
    Ok(())
}

/// Replies not yet sent count toward `--max-memory`: while a client leaves a 60 MiB reply
/// unread, a growing write is refused (`-OOM`); once it is read, the write goes through, and
/// the node's memory is given back.
#[test]
fn replies_in_flight_count_toward_max_memory() -> TestResult {
    let dir = data_dir("replies-max-memory");
    let node = Node::start("r2", &dir, &["--cores", "1", "--max-memory", "32mb"])?;
    let mut c = node.client();
    c.put(b"big", &vec![b'x'; MIB])?;
    let mut slow = connect(&node)?;
    slow.write_all(&mget(b"big", 60))
        .map_err(|e| e.to_string())?;
    // the reply is gathered and stuck in a full socket: counted as in flight
    poll("the reply to be in flight", START_DEADLINE, || {
        info_field(&node, "mem_clients_normal")
            .ok()
            .filter(|b| *b > 32 * MIB as u64)
    })?;
    let set = command(&[b"SET", b"new", b"value"]);
    let mut w = connect(&node)?;
    w.write_all(&set).map_err(|e| e.to_string())?;
    let mut buf = [0u8; 256];
    let n = w.read(&mut buf).map_err(|e| e.to_string())?;
    let line = String::from_utf8_lossy(&buf[..n]);
    assert!(line.starts_with("-OOM"), "{line}");
    let reply = read_reply(&mut slow, 60, MIB)?;
    assert!(reply.starts_with(b"*60\r\n"));
    poll("room again once the reply is sent", START_DEADLINE, || {
        w.write_all(&set).ok()?;
        let n = w.read(&mut buf).ok()?;
        buf[..n].starts_with(b"+OK").then_some(())
    })?;
    assert_eq!(info_field(&node, "mem_clients_normal")?, 0);
    Ok(())
}

/// The same through a cluster coordinator, whose values come from other nodes' replicas.
#[test]
fn a_cluster_reply_past_its_limit_is_refused_and_bounded() -> TestResult {
    let nodes = cluster("replies-cluster", 3, &[])?;
    let mut c = nodes[0].client();
    c.put(b"big", &vec![b'x'; MIB])?;
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let mut s = connect(&nodes[0])?;
            s.write_all(&mget(b"big", 1024))
                .map_err(|e| e.to_string())?;
            Ok(std::thread::spawn(move || read_reply(&mut s, 1024, MIB)))
        })
        .collect::<Result<_, String>>()?;
    for t in threads {
        let reply = t.join().map_err(|_| "reader panicked")??;
        let line = String::from_utf8_lossy(&reply);
        assert!(line.starts_with("-ERR reply too large"), "{line}");
    }
    let peak = peak_rss_kib(&nodes[0])?;
    assert!(peak < 600 * 1024, "coordinator's peak RSS {peak} KiB");
    assert_eq!(c.get(b"big")?.map(|v| v.len()), Some(MIB));
    Ok(())
}
