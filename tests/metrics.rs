//! `--metrics-port`: Prometheus exposition over HTTP, and counters that move with traffic.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use common::*;
use kvstore::limits::METRICS_REQUEST_BYTES_MAX;

fn http_get(port: u16, path: &str) -> Result<(String, String), String> {
    http_request(
        port,
        format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes(),
    )
}

/// Send `request` whole, then read the answer to the end.
fn http_request(port: u16, request: &[u8]) -> Result<(String, String), String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(CLIENT_TIMEOUT))
        .map_err(|e| e.to_string())?;
    s.write_all(request).map_err(|e| e.to_string())?;
    let mut text = String::new();
    s.read_to_string(&mut text).map_err(|e| e.to_string())?;
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no HTTP head")?;
    Ok((head.to_string(), body.to_string()))
}

/// The value of the sample named exactly `series` (0 when absent).
fn sample(body: &str, series: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn metrics_are_served_and_move_with_traffic() -> TestResult {
    let mport = free_port();
    let mp = mport.to_string();
    let node = Node::start(
        "m1",
        &data_dir("metrics"),
        &["--cores", "2", "--metrics-port", &mp],
    )?;
    let (head, before) = http_get(mport, "/metrics")?;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(before.trim_end().ends_with("# EOF"), "{before}");
    let mut c = node.client();
    for i in 0..100 {
        c.put(format!("m{i}").as_bytes(), b"v")?;
    }
    for i in 0..50 {
        // half exist, half do not
        c.get(format!("m{}", i * 2 + i % 2 * 101).as_bytes())?;
    }
    let (_, after) = http_get(mport, "/metrics")?;
    let delta = |s: &str| sample(&after, s) - sample(&before, s);
    assert_eq!(
        delta(r#"kvstore_requests_total{kind="put",outcome="ok"}"#),
        100.0,
        "{after}"
    );
    assert_eq!(
        delta(r#"kvstore_requests_total{kind="get",outcome="ok"}"#),
        25.0
    );
    assert_eq!(
        delta(r#"kvstore_requests_total{kind="get",outcome="not_found"}"#),
        25.0
    );
    assert_eq!(
        delta(r#"kvstore_request_duration_seconds_count{kind="write"}"#),
        100.0
    );
    assert_eq!(
        delta(r#"kvstore_request_duration_seconds_count{kind="read"}"#),
        50.0
    );
    assert!(delta("kvstore_wal_records_total") >= 100.0);
    // the records were acknowledged from the staging file; their segment write follows on
    // its own schedule (`STAGE_FLUSH_MS`)
    let written = poll("a segment write", START_DEADLINE, || {
        let (_, now) = http_get(mport, "/metrics").ok()?;
        (sample(&now, "kvstore_wal_writes_total") > sample(&before, "kvstore_wal_writes_total"))
            .then_some(now)
    })?;
    assert!(sample(&written, "kvstore_wal_group_commit_records_count") >= 1.0);
    // Two cores: about half the keys belong to the core that did not accept the connection.
    let hops = delta("kvstore_hop_messages_total");
    assert!(hops >= 1.0, "no cross-core hop in 150 requests on 2 cores");
    assert!(delta("kvstore_hop_groups_total") >= hops);
    let keys = sample(&after, r#"kvstore_core_keys{core="0"}"#)
        + sample(&after, r#"kvstore_core_keys{core="1"}"#);
    assert_eq!(keys, 100.0);
    assert_eq!(sample(&after, r#"kvstore_members{status="alive"}"#), 1.0);
    let (head, _) = http_get(mport, "/elsewhere")?;
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    let (head, _) = http_request(mport, b"POST /metrics HTTP/1.1\r\n\r\n")?;
    assert!(head.starts_with("HTTP/1.1 405"), "{head}");
    // A request head of METRICS_REQUEST_BYTES_MAX bytes is answered; one byte more is refused.
    let head_of = |len: usize| {
        let start = "GET /metrics HTTP/1.1\r\nX-Pad: ";
        let pad = len - start.len() - "\r\n\r\n".len();
        format!("{start}{}\r\n\r\n", "a".repeat(pad)).into_bytes()
    };
    let (head, body) = http_request(mport, &head_of(METRICS_REQUEST_BYTES_MAX))?;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(body.trim_end().ends_with("# EOF"));
    let (head, _) = http_request(mport, &head_of(METRICS_REQUEST_BYTES_MAX + 1))?;
    assert!(head.starts_with("HTTP/1.1 431"), "{head}");
    // The metrics port is not the data port: the node still serves clients.
    c.ping()?;
    Ok(())
}
