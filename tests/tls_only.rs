//! `--tls-only` with `--tls-client-ca`: a 3-node cluster that speaks mutual TLS to clients
//! and to itself (peers present their node certificates), closes every plain connection and
//! refuses a TLS client without a certificate. Its own test binary: it makes every client of
//! this process (the helpers' included) and every `kv` it runs connect with TLS and a client
//! certificate.

mod common;

use common::tls::{certs, tls_args};
use common::*;

#[test]
fn a_tls_only_cluster_serves_tls_and_closes_plain_connections() -> TestResult {
    let c = certs(&data_dir("tls-only-certs"))?;
    // every client from here on, in this process and in the `kv` it runs, uses TLS
    kvstore::client::set_tls_with(&c.ca, Some((&c.cert, &c.key)))?;
    std::env::set_var("KV_TLS_CA", &c.ca);
    std::env::set_var("KV_TLS_CERT", &c.cert);
    std::env::set_var("KV_TLS_KEY", &c.key);
    let mut extra = tls_args(&c);
    extra.extend(["--tls-only".into(), "--tls-client-ca".into()]);
    extra.push(c.ca.display().to_string());
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let nodes = cluster("tls-only", 3, &extra)?;
    nodes[0].client().put(b"k", b"v")?;
    for n in &nodes {
        let got = poll("every replica to hold the key", START_DEADLINE, || {
            local(n, "k")
        })?;
        assert_eq!(got, "v", "{}", n.id);
    }
    // a plain client is closed without an answer, on every protocol
    for hello in [&b"PING\r\n"[..], b"*1\r\n$4\r\nPING\r\n", &[0xA7, 0, 0]] {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", nodes[1].port))?;
        s.set_read_timeout(Some(CLIENT_TIMEOUT))?;
        s.write_all(hello)?;
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).unwrap_or(0);
        assert_eq!(n, 0, "a plain connection got {:?}", &buf[..n]);
    }
    // a TLS client without a certificate is refused
    let anonymous = std::process::Command::new(env!("CARGO_BIN_EXE_kv"))
        .args(["--port", &nodes[0].port.to_string(), "get", "k"])
        .env_remove("KV_TLS_CERT")
        .env_remove("KV_TLS_KEY")
        .stdin(std::process::Stdio::null())
        .output()?;
    assert_eq!(anonymous.status.code(), Some(2), "{anonymous:?}");
    let with_cert = nodes[0].kv(&["get", "k"]);
    assert_eq!(stdout(&with_cert).trim(), "v", "{with_cert:?}");
    // --tls-only without what it needs is refused at start
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_kvstore-node"))
        .args([
            "--node-id",
            "x",
            "--port",
            &free_port().to_string(),
            "--tls-only",
        ])
        .arg("--data-dir")
        .arg(data_dir("tls-only-alone"))
        .stdin(std::process::Stdio::null())
        .output()?;
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--tls-only needs"));
    Ok(())
}
