//! `--max-memory`: past the limit, writes that would grow memory are refused on every protocol
//! (RESP with Redis's own `-OOM` line); reads, deletes and overwrites that do not grow keep
//! working; deleting makes room again.

mod common;

use std::io::{Read, Write};

use common::*;
use kvstore::client::Error as ClientError;
use kvstore::wire::native::Status;

/// One RESP command over a fresh connection; the first reply line.
fn resp(port: u16, args: &[&str]) -> Result<String, String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(CLIENT_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let mut cmd = format!("*{}\r\n", args.len());
    for a in args {
        cmd.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s.write_all(cmd.as_bytes()).map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = Vec::new();
    while !got.ends_with(b"\r\n") {
        let n = s.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    Ok(String::from_utf8_lossy(&got).into_owned())
}

fn is_oom(r: &Result<kvstore::client::Reply, ClientError>) -> bool {
    matches!(
        r,
        Err(ClientError::Server {
            status: Status::OutOfMemory,
            ..
        })
    )
}

#[test]
fn writes_past_max_memory_are_refused_until_deletes_make_room() -> TestResult {
    let dir = data_dir("max-memory");
    let node = Node::start("m1", &dir, &["--cores", "1", "--max-memory", "1mb"])?;
    let mut c = node.client();
    let value = vec![b'v'; 1000];
    // fill until the first refusal (about 1 MiB / ~1.1 KB per key)
    let mut stored = 0;
    loop {
        let r = c.put(format!("k{stored}").as_bytes(), &value);
        if is_oom(&r) {
            break;
        }
        r?;
        stored += 1;
        assert!(
            stored < 5_000,
            "no refusal after {stored} keys of 1 KB with a 1 MiB limit"
        );
    }
    assert!(stored > 500, "refused too early, after {stored} keys");
    // the message says what happened
    match c.put(b"one-more", &value) {
        Err(ClientError::Server { message, .. }) => {
            assert!(message.contains("--max-memory"), "{message}")
        }
        other => return Err(format!("expected a refusal, got {other:?}").into()),
    }
    // RESP: Redis's own words; INFO memory tells the numbers
    let line = resp(node.port, &["SET", "resp-key", "x"])?;
    assert!(
        line.starts_with("-OOM command not allowed when used memory > 'maxmemory'"),
        "{line}"
    );
    let info = resp(node.port, &["INFO", "memory"])?;
    assert!(info.contains("maxmemory:1048576"), "{info}");
    assert!(info.contains("used_memory:"), "{info}");
    // reads, same-size overwrites and deletes go on
    assert_eq!(c.get(b"k0")?, Some(value.clone()));
    c.put(b"k0", &vec![b'w'; 1000])?;
    assert!(
        is_oom(&c.put(b"k1", &vec![b'w'; 2000])),
        "a larger value grows memory"
    );
    for k in 0..200 {
        c.delete(format!("k{k}").as_bytes())?;
    }
    // room again
    c.put(b"after-deletes", &value)?;
    assert_eq!(c.get(b"after-deletes")?, Some(value));
    let o = node.kv(&["info"]);
    assert!(stdout(&o).contains("max_memory=1048576"), "{}", stdout(&o));
    Ok(())
}

/// In a cluster, replicas at the limit refuse replica writes and say why: the coordinator's
/// answer is the same out-of-memory refusal, not a bare quorum error.
#[test]
fn replicas_at_max_memory_refuse_and_the_coordinator_says_so() -> TestResult {
    let nodes = cluster("max-memory-cluster", 3, &["--max-memory", "1mb"])?;
    let mut c = nodes[0].client();
    let value = vec![b'v'; 1000];
    for i in 0.. {
        match c.put(format!("k{i}").as_bytes(), &value) {
            Ok(_) => assert!(i < 5_000, "no refusal after {i} keys"),
            Err(ClientError::Server { status, message }) => {
                assert_eq!(status, Status::OutOfMemory, "{message}");
                assert!(message.contains("out of memory"), "{message}");
                break;
            }
            Err(e) => return Err(e.into()),
        }
    }
    assert_eq!(nodes[1].client().get(b"k0")?, Some(value));
    Ok(())
}
