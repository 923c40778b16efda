//! SCAN and KEYS across a cluster, through the Redis protocol: every live key exactly as
//! written (deleted ones gone), MATCH, COUNT and TYPE, through any node.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};

use common::*;

/// A RESP reply: a bulk string (or simple string / integer as text), or an array.
#[derive(Debug)]
enum Reply {
    Text(String),
    Array(Vec<Reply>),
}

fn read_reply(r: &mut impl BufRead) -> Result<Reply, String> {
    let mut line = String::new();
    r.read_line(&mut line).map_err(|e| e.to_string())?;
    let line = line.trim_end();
    let (kind, rest) = line.split_at(1);
    match kind {
        "+" | ":" => Ok(Reply::Text(rest.to_string())),
        "-" => Err(rest.to_string()),
        "$" => {
            let n: usize = rest.parse().map_err(|_| format!("bad bulk {line}"))?;
            let mut buf = vec![0u8; n + 2];
            std::io::Read::read_exact(r, &mut buf).map_err(|e| e.to_string())?;
            Ok(Reply::Text(String::from_utf8_lossy(&buf[..n]).into_owned()))
        }
        "*" => {
            let n: usize = rest.parse().map_err(|_| format!("bad array {line}"))?;
            (0..n)
                .map(|_| read_reply(r))
                .collect::<Result<_, _>>()
                .map(Reply::Array)
        }
        _ => Err(format!("unexpected reply {line}")),
    }
}

struct Resp {
    w: std::net::TcpStream,
    r: BufReader<std::net::TcpStream>,
}

impl Resp {
    fn connect(port: u16) -> Result<Resp, String> {
        let w = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
        w.set_read_timeout(Some(CLIENT_TIMEOUT))
            .map_err(|e| e.to_string())?;
        let r = BufReader::new(w.try_clone().map_err(|e| e.to_string())?);
        Ok(Resp { w, r })
    }

    fn call(&mut self, args: &[&str]) -> Result<Reply, String> {
        let mut cmd = format!("*{}\r\n", args.len());
        for a in args {
            cmd.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        self.w
            .write_all(cmd.as_bytes())
            .map_err(|e| e.to_string())?;
        read_reply(&mut self.r)
    }

    /// A whole SCAN iteration with `opts`; every key returned, and how many calls it took.
    fn scan_all(&mut self, opts: &[&str]) -> Result<(Vec<String>, usize), String> {
        let (mut cursor, mut keys, mut calls) = ("0".to_string(), Vec::new(), 0);
        loop {
            let mut args = vec!["SCAN", cursor.as_str()];
            args.extend_from_slice(opts);
            let Reply::Array(parts) = self.call(&args)? else {
                return Err("SCAN did not answer an array".into());
            };
            calls += 1;
            match parts.as_slice() {
                [Reply::Text(next), Reply::Array(page)] => {
                    for k in page {
                        if let Reply::Text(k) = k {
                            keys.push(k.clone());
                        }
                    }
                    cursor = next.clone();
                }
                other => return Err(format!("unexpected SCAN reply {other:?}")),
            }
            if cursor == "0" {
                return Ok((keys, calls));
            }
        }
    }
}

#[test]
fn scan_and_keys_walk_the_whole_cluster() -> TestResult {
    let nodes = cluster("scan", 3, &[])?;
    let mut c = nodes[0].client();
    let mut live = BTreeSet::new();
    for i in 0..300 {
        c.put(format!("user:{i}").as_bytes(), b"v")?;
        live.insert(format!("user:{i}"));
    }
    for i in 0..50 {
        c.put(format!("session:{i}").as_bytes(), b"v")?;
        live.insert(format!("session:{i}"));
    }
    for i in 0..20 {
        c.delete(format!("user:{i}").as_bytes())?;
        live.remove(&format!("user:{i}"));
    }
    // through another node, small pages
    let mut r = Resp::connect(nodes[2].port)?;
    let (keys, calls) = r.scan_all(&["COUNT", "50"])?;
    let got: BTreeSet<String> = keys.iter().cloned().collect();
    assert_eq!(got, live, "SCAN returned other keys");
    assert_eq!(
        keys.len(),
        live.len(),
        "a key came twice while nothing changed"
    );
    assert!(calls > 1, "COUNT 50 over {} keys took one call", live.len());
    let (users, _) = r.scan_all(&["MATCH", "user:*", "COUNT", "1000"])?;
    assert_eq!(users.len(), 280);
    assert!(users.iter().all(|k| k.starts_with("user:")));
    let (none, _) = r.scan_all(&["TYPE", "hash"])?;
    assert!(none.is_empty(), "only strings exist");
    match r.call(&["KEYS", "session:*"])? {
        Reply::Array(k) => assert_eq!(k.len(), 50),
        other => return Err(format!("KEYS: {other:?}").into()),
    }
    assert!(r.call(&["SCAN", "x"]).is_err(), "a bad cursor is an error");
    Ok(())
}
