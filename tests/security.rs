//! Authentication with real processes on loopback: a password gates every protocol (native,
//! Redis, the original design's, `kv`), a client connection cannot send cluster frames when the
//! cluster has a secret, nodes sharing the secret form a cluster, and a node with the wrong
//! secret is refused. (Protected mode needs a non-loopback client: `tests/partition.rs`.)

mod common;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Instant;

use common::*;
use kvstore::client::{Client, Error as ClientError};
use kvstore::wire::native::{Opcode, Status};

const PASSWORD: &str = "correct horse battery staple";
const SECRET: &str = "cluster-secret-for-tests";

/// RESP commands over one connection; the reply bytes read after each.
fn resp_session(port: u16, commands: &[&[&str]]) -> Result<Vec<String>, String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(CLIENT_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let mut replies = Vec::new();
    for args in commands {
        let mut cmd = format!("*{}\r\n", args.len());
        for a in *args {
            cmd.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(cmd.as_bytes()).map_err(|e| e.to_string())?;
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).map_err(|e| e.to_string())?;
        replies.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    Ok(replies)
}

fn is_unauthorized(r: &Result<kvstore::client::Reply, ClientError>, text: &str) -> bool {
    matches!(r, Err(ClientError::Server { status: Status::Unauthorized, message }) if message.contains(text))
}

#[test]
fn a_password_gates_every_protocol() -> TestResult {
    let dir = data_dir("auth-password");
    let env = [("KVSTORE_PASSWORD", PASSWORD)];
    let node = Node::start_with_env("a1", &dir, free_port(), &["--cores", "1"], &env)?;
    // native: PING is served, the rest waits for AUTH; a wrong password is refused, slowly
    let mut c = node.client();
    c.ping()?;
    assert!(is_unauthorized(&c.put(b"k", b"v"), "NOAUTH"));
    assert!(is_unauthorized(&c.call(Opcode::Info, &[], &[]), "NOAUTH"));
    let started = Instant::now();
    let wrong = c.auth(b"guess");
    assert!(matches!(
        wrong,
        Err(ClientError::Server {
            status: Status::Unauthorized,
            ..
        })
    ));
    assert!(
        started.elapsed().as_millis() >= 150,
        "a wrong password is answered late"
    );
    c.auth(PASSWORD.as_bytes())?;
    c.put(b"k", b"v")?;
    assert_eq!(c.get(b"k")?, Some(b"v".to_vec()));
    // RESP: Redis's own answers
    let r = resp_session(
        node.port,
        &[
            &["GET", "k"],
            &["DBSIZE"],
            &["AUTH", "guess"],
            &["AUTH", "default", PASSWORD],
            &["GET", "k"],
        ],
    )?;
    assert!(
        r[0].starts_with("-NOAUTH Authentication required."),
        "{r:?}"
    );
    assert!(
        r[1].starts_with("-NOAUTH"),
        "front-answered commands too: {r:?}"
    );
    assert!(
        r[2].starts_with("-WRONGPASS invalid username-password pair"),
        "{r:?}"
    );
    assert_eq!(r[3], "+OK\r\n");
    assert_eq!(r[4], "$1\r\nv\r\n");
    let r = resp_session(
        node.port,
        &[&["HELLO", "3", "AUTH", "default", PASSWORD], &["GET", "k"]],
    )?;
    assert!(r[0].starts_with("%7\r\n"), "{r:?}");
    assert_eq!(r[1], "$1\r\nv\r\n");
    // kv: the password from the environment, or refused
    let o = node.kv(&["get", "k"]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("NOAUTH"),
        "{o:?}"
    );
    let o = Command::new(env!("CARGO_BIN_EXE_kv"))
        .args(["--port", &node.port.to_string(), "get", "k"])
        .env("KVSTORE_PASSWORD", PASSWORD)
        .stdin(Stdio::null())
        .output()?;
    assert_eq!(stdout(&o).trim(), "v", "{o:?}");
    // the original design's protocol cannot authenticate: refused with a clear error
    let mut s = std::net::TcpStream::connect(("127.0.0.1", node.port))?;
    s.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    s.write_all(&original_get(b"k"))?;
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf)?;
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.contains("original protocol cannot send one"), "{text}");
    Ok(())
}

/// A GET in the original design's protocol (`wire::original`): a big-endian u32 payload
/// length, then the opcode and the key as a big-endian u32 length and bytes.
fn original_get(key: &[u8]) -> Vec<u8> {
    let mut payload = vec![kvstore::wire::original::OP_GET];
    payload.extend_from_slice(&(key.len() as u32).to_be_bytes());
    payload.extend_from_slice(key);
    let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&payload);
    frame
}

#[test]
fn ten_wrong_passwords_close_the_connection() -> TestResult {
    let dir = data_dir("auth-failures");
    let env = [("KVSTORE_PASSWORD", PASSWORD)];
    let node = Node::start_with_env("a2", &dir, free_port(), &["--cores", "1"], &env)?;
    let mut c = node.client();
    let mut closed = false;
    for _ in 0..kvstore::limits::AUTH_FAILURES_MAX + 1 {
        match c.auth(b"nope") {
            Err(ClientError::Server { .. }) => {}
            Err(e) if e.is_unreachable() => {
                closed = true;
                break;
            }
            other => return Err(format!("unexpected {other:?}").into()),
        }
    }
    assert!(
        closed,
        "still open after {} wrong passwords",
        kvstore::limits::AUTH_FAILURES_MAX
    );
    Ok(())
}

#[test]
fn only_cluster_members_speak_cluster_opcodes() -> TestResult {
    let env = [("KVSTORE_CLUSTER_SECRET", SECRET)];
    let mut nodes = Vec::new();
    for i in 1..=3 {
        let dir = data_dir(&format!("secret-n{i}"));
        let mut args = vec!["--cores", "1", "--suspect-timeout-ms", SUSPECT_MS];
        let seed = nodes.first().map(|n: &Node| n.addr());
        if let Some(s) = &seed {
            args.extend(["--seed", s.as_str()]);
        }
        nodes.push(Node::start_with_env(
            &format!("node{i}"),
            &dir,
            free_port(),
            &args,
            &env,
        )?);
    }
    for n in &nodes {
        wait_members(n, 3, "ALIVE")?;
    }
    nodes[0].client().put(b"shared", b"v")?;
    assert_eq!(nodes[2].client().get(b"shared")?, Some(b"v".to_vec()));
    // a plain client may not write a replica directly, gossip or stream
    let mut c = nodes[0].client();
    for opcode in [
        Opcode::ReplicaPut,
        Opcode::ReplicaGet,
        Opcode::Gossip,
        Opcode::Stream,
        Opcode::AeTree,
    ] {
        let r = c.call(opcode, b"victim", b"x");
        assert!(is_unauthorized(&r, "cluster secret"), "{opcode:?}: {r:?}");
    }
    // a node with the wrong secret is refused, and says so
    let dir = data_dir("secret-wrong");
    let log = dir.join("node.log");
    let mut wrong = Command::new(env!("CARGO_BIN_EXE_kvstore-node"))
        .args([
            "--node-id",
            "intruder",
            "--port",
            &free_port().to_string(),
            "--cores",
            "1",
        ])
        .args(["--seed", &nodes[0].addr()])
        .arg("--data-dir")
        .arg(&dir)
        .env("KVSTORE_CLUSTER_SECRET", "not-the-secret")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()?;
    let refused = poll("the intruder to be refused", START_DEADLINE, || {
        let text = std::fs::read_to_string(&log).ok()?;
        text.contains("did not prove the cluster secret")
            .then_some(())
    });
    let _ = wrong.kill();
    let _ = wrong.wait();
    refused?;
    assert!(
        member_status(&nodes[0], "intruder").is_none(),
        "node1 took the intruder in: {:?}",
        member_lines(&nodes[0])
    );
    Ok(())
}

/// Without a secret, cluster opcodes are served as before (and the node warns at start).
#[test]
fn without_a_secret_replica_frames_are_served() -> TestResult {
    let dir = data_dir("no-secret");
    let node = Node::start("s1", &dir, &["--cores", "1"])?;
    let mut c: Client = node.client();
    let r = c.call(Opcode::ReplicaGet, b"k", &[])?;
    assert_eq!(r.status, Status::NotFound);
    Ok(())
}

/// A replica write whose value is not a stored cell (its first byte no known cell tag) is
/// refused, so a buggy or hostile peer cannot make a key unreadable everywhere.
#[test]
fn a_replica_write_of_a_malformed_cell_is_refused() -> TestResult {
    let dir = data_dir("bad-cell");
    let node = Node::start("b1", &dir, &["--cores", "1"])?;
    let mut c: Client = node.client();
    for bad in [&b"evil"[..], &[][..], &[1, 2, 3][..]] {
        match c.call(Opcode::ReplicaPut, b"k", bad) {
            Err(ClientError::Server { status, message }) => {
                assert_eq!(status, Status::BadRequest, "{bad:?}");
                assert!(message.contains("not a stored cell"), "{message}");
            }
            other => return Err(format!("{bad:?}: expected a refusal, got {other:?}").into()),
        }
    }
    assert_eq!(c.get(b"k")?, None, "nothing was stored; the key reads");
    c.put(b"k", b"v")?;
    assert_eq!(c.get(b"k")?, Some(b"v".to_vec()));
    Ok(())
}

#[test]
fn the_read_only_user_reads_through_every_client_and_writes_nothing() -> TestResult {
    const READER: &str = "only-looking";
    let dir = data_dir("auth-reader");
    let env = [
        ("KVSTORE_PASSWORD", PASSWORD),
        ("KVSTORE_READONLY_PASSWORD", READER),
    ];
    let node = Node::start_with_env("r1", &dir, free_port(), &["--cores", "1"], &env)?;
    let mut admin = node.client();
    admin.auth(PASSWORD.as_bytes())?;
    admin.put(b"k", b"v")?;
    // native
    let mut r = node.client();
    r.auth_as(b"reader", READER.as_bytes())?;
    assert_eq!(r.get(b"k")?, Some(b"v".to_vec()));
    assert!(is_unauthorized(&r.put(b"k", b"w"), "NOPERM"));
    assert!(is_unauthorized(
        &r.call(Opcode::Delete, b"k", &[]),
        "NOPERM"
    ));
    assert!(is_unauthorized(&r.call(Opcode::Leave, &[], &[]), "NOPERM"));
    // RESP, as redis-cli --user reader would
    let replies = resp_session(
        node.port,
        &[
            &["AUTH", "reader", READER],
            &["GET", "k"],
            &["SET", "k", "w"],
            &["DEL", "k"],
            &["AUTH", "reader", PASSWORD],
        ],
    )?;
    assert_eq!(replies[0], "+OK\r\n");
    assert_eq!(replies[1], "$1\r\nv\r\n");
    assert!(replies[2].starts_with("-NOPERM"), "{}", replies[2]);
    assert!(replies[3].starts_with("-NOPERM"), "{}", replies[3]);
    assert!(replies[4].starts_with("-WRONGPASS"), "{}", replies[4]);
    // kv --user reader
    let kv = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_kv"))
            .args(["--port", &node.port.to_string(), "--user", "reader"])
            .args(args)
            .env("KVSTORE_PASSWORD", READER)
            .stdin(Stdio::null())
            .output()
    };
    let got = kv(&["get", "k"])?;
    assert_eq!(String::from_utf8_lossy(&got.stdout).trim(), "v");
    let put = kv(&["put", "k", "w"])?;
    assert_eq!(put.status.code(), Some(3), "{put:?}");
    assert_eq!(admin.get(b"k")?, Some(b"v".to_vec()), "nothing was written");
    // a read-only password alone is refused at start
    let lone = Command::new(env!("CARGO_BIN_EXE_kvstore-node"))
        .args(["--node-id", "r2", "--port", &free_port().to_string()])
        .arg("--data-dir")
        .arg(data_dir("auth-reader-alone"))
        .env("KVSTORE_READONLY_PASSWORD", READER)
        .env_remove("KVSTORE_PASSWORD")
        .stdin(Stdio::null())
        .output()?;
    assert!(!lone.status.success());
    assert!(
        String::from_utf8_lossy(&lone.stderr).contains("needs a password for the full user"),
        "{}",
        String::from_utf8_lossy(&lone.stderr)
    );
    Ok(())
}

/// Fifty connections that never authenticate — silent, sending blank lines, sending PING —
/// on a node with a password and `--max-connections 50`: a client with the password gets in
/// at once every time (it takes an unauthenticated connection's slot), and every one of the
/// fifty is closed by the auth deadline, whatever it sends.
#[test]
fn connections_that_never_authenticate_lock_nobody_out_and_are_closed() -> TestResult {
    const HOLDERS: usize = 50;
    const AUTH_TIMEOUT_MS: u64 = 2_000;
    let dir = data_dir("auth-deadline");
    let env = [("KVSTORE_PASSWORD", PASSWORD)];
    let timeout = AUTH_TIMEOUT_MS.to_string();
    let args = [
        "--cores",
        "2",
        "--max-connections",
        "50",
        "--auth-timeout-ms",
        &timeout,
    ];
    let node = Node::start_with_env("a1", &dir, free_port(), &args, &env)?;
    let addr = node.addr();
    let mut holders: Vec<(usize, std::net::TcpStream)> = Vec::new();
    for i in 0..HOLDERS {
        let s = std::net::TcpStream::connect(&addr).map_err(|e| e.to_string())?;
        s.set_nonblocking(true).map_err(|e| e.to_string())?;
        holders.push((i % 3, s));
    }
    let opened = Instant::now();
    let mut open = [true; HOLDERS];
    let mut logins = 0;
    while open.iter().any(|o| *o) {
        assert!(
            opened.elapsed() < START_DEADLINE,
            "{} of {HOLDERS} unauthenticated connections still open",
            open.iter().filter(|o| **o).count()
        );
        // the two chatty kinds keep sending; none of it extends the deadline
        for (i, (kind, s)) in holders.iter_mut().enumerate() {
            let msg: &[u8] = match kind {
                0 => b"",
                1 => b"\r\n",
                _ => b"PING\r\n",
            };
            if open[i] && !msg.is_empty() && s.write_all(msg).is_err() {
                open[i] = false;
            }
            let mut buf = [0u8; 256];
            match s.read(&mut buf) {
                Ok(0) => open[i] = false,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => open[i] = false,
            }
        }
        // a client with the password gets in, whatever the others hold
        if logins < 5 {
            let mut c = Client::connect(&addr, CLIENT_TIMEOUT).map_err(|e| e.to_string())?;
            c.auth(PASSWORD.as_bytes())?;
            c.ping()?;
            logins += 1;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(logins, 5);
    let closed_after = opened.elapsed();
    assert!(
        closed_after.as_millis() as u64 >= AUTH_TIMEOUT_MS / 2,
        "closed before any deadline could pass: {closed_after:?}"
    );
    // and with the holders gone, everyone authenticated still works
    let mut c = node.client();
    c.auth(PASSWORD.as_bytes())?;
    c.ping()?;
    Ok(())
}
