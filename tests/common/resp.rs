//! A minimal RESP client for tests that need replies byte for byte (no client library).

use std::io::{BufRead, BufReader, Write};

use super::CLIENT_TIMEOUT;

/// A RESP reply: a bulk string (or simple string / integer as text), or an array.
#[derive(Debug)]
pub enum Reply {
    Text(String),
    Array(Vec<Reply>),
    Nil,
}

pub fn read_reply(r: &mut impl BufRead) -> Result<Reply, String> {
    let mut line = String::new();
    r.read_line(&mut line).map_err(|e| e.to_string())?;
    let line = line.trim_end();
    let (kind, rest) = line.split_at(1);
    match kind {
        "+" | ":" => Ok(Reply::Text(rest.to_string())),
        "-" => Err(rest.to_string()),
        "$" | "*" if rest == "-1" => Ok(Reply::Nil),
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

pub struct Resp {
    w: std::net::TcpStream,
    r: BufReader<std::net::TcpStream>,
}

impl Resp {
    pub fn connect(port: u16) -> Result<Resp, String> {
        let w = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
        w.set_read_timeout(Some(CLIENT_TIMEOUT))
            .map_err(|e| e.to_string())?;
        let r = BufReader::new(w.try_clone().map_err(|e| e.to_string())?);
        Ok(Resp { w, r })
    }

    pub fn call(&mut self, args: &[&str]) -> Result<Reply, String> {
        let mut cmd = format!("*{}\r\n", args.len());
        for a in args {
            cmd.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        self.w
            .write_all(cmd.as_bytes())
            .map_err(|e| e.to_string())?;
        read_reply(&mut self.r)
    }

    /// A command answered by a string, an integer or nil (`None`).
    pub fn text(&mut self, args: &[&str]) -> Result<Option<String>, String> {
        match self.call(args)? {
            Reply::Text(t) => Ok(Some(t)),
            Reply::Nil => Ok(None),
            other => Err(format!("{args:?}: unexpected {other:?}")),
        }
    }

    /// A command answered by an integer.
    pub fn int(&mut self, args: &[&str]) -> Result<i64, String> {
        self.text(args)?
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| format!("{args:?}: not an integer"))
    }

    /// A whole SCAN iteration with `opts`; every key returned, and how many calls it took.
    pub fn scan_all(&mut self, opts: &[&str]) -> Result<(Vec<String>, usize), String> {
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
