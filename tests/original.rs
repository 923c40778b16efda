//! The original C++ design's client protocol on the main port, driven by a small client written
//! from its description (big-endian length-prefixed frames, u32-prefixed strings), against a
//! real 3-node cluster.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use common::*;

const PUT: u8 = 1;
const GET: u8 = 2;
const DELETE: u8 = 3;
const CLUSTER_INFO: u8 = 22;
const OK: u8 = 0;
const NOT_FOUND: u8 = 1;
const ERROR: u8 = 2;

/// A client of the original protocol, written to its description.
struct OrigClient {
    s: TcpStream,
}

fn string(b: &[u8]) -> Vec<u8> {
    let mut v = (b.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(b);
    v
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(payload);
    f
}

/// Reads fields off a response payload.
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn take(&mut self, n: usize) -> Vec<u8> {
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a.to_vec()
    }
    fn u8(&mut self) -> u8 {
        self.take(1)[0]
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes(self.take(2).try_into().expect("fixed-size field"))
    }
    fn u32(&mut self) -> u32 {
        u32::from_be_bytes(self.take(4).try_into().expect("fixed-size field"))
    }
    fn u64(&mut self) -> u64 {
        u64::from_be_bytes(self.take(8).try_into().expect("fixed-size field"))
    }
    fn string(&mut self) -> String {
        let n = self.u32() as usize;
        String::from_utf8_lossy(&self.take(n)).into_owned()
    }
}

impl OrigClient {
    fn connect(port: u16) -> OrigClient {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(CLIENT_TIMEOUT)).expect("timeout");
        OrigClient { s }
    }

    fn send(&mut self, payload: &[u8]) {
        self.s.write_all(&frame(payload)).expect("send");
    }

    fn recv(&mut self) -> Vec<u8> {
        let mut len = [0; 4];
        self.s.read_exact(&mut len).expect("response length");
        let mut payload = vec![0; u32::from_be_bytes(len) as usize];
        self.s.read_exact(&mut payload).expect("response payload");
        payload
    }

    fn call(&mut self, payload: &[u8]) -> Vec<u8> {
        self.send(payload);
        self.recv()
    }

    fn put(&mut self, k: &str, v: &str) -> Vec<u8> {
        let mut p = vec![PUT];
        p.extend(string(k.as_bytes()));
        p.extend(string(v.as_bytes()));
        self.call(&p)
    }

    fn keyed(&mut self, op: u8, k: &str) -> Vec<u8> {
        let mut p = vec![op];
        p.extend(string(k.as_bytes()));
        self.call(&p)
    }
}

fn error_text(resp: &[u8]) -> String {
    assert_eq!(resp[0], ERROR, "{resp:?}");
    Fields(&resp[1..]).string()
}

#[test]
fn original_clients_work_against_a_three_node_cluster() -> TestResult {
    let mut nodes = cluster("original", 3, &[])?;
    let (p1, p3) = (nodes[0].port, nodes[2].port);
    let mut c1 = OrigClient::connect(p1);
    let mut c3 = OrigClient::connect(p3);

    assert_eq!(c1.put("orig", "value-1"), vec![OK]);
    let before = kvstore::server::wall_clock_ms();
    assert_eq!(c1.put("orig", "value-2"), vec![OK]);
    let got = c3.keyed(GET, "orig");
    let mut f = Fields(&got);
    assert_eq!(f.u8(), OK);
    assert_eq!(f.string(), "value-2");
    let ts = f.u64();
    assert!(
        ts >= before && ts <= kvstore::server::wall_clock_ms(),
        "{ts}"
    );
    assert_eq!(
        f.string(),
        "node1",
        "the coordinator that issued the version"
    );
    assert!(f.0.is_empty());

    assert_eq!(c3.keyed(GET, "never-written"), vec![NOT_FOUND]);
    assert_eq!(c3.keyed(DELETE, "orig"), vec![OK]);
    assert_eq!(c1.keyed(GET, "orig"), vec![NOT_FOUND]);
    assert_eq!(c1.keyed(DELETE, "orig"), vec![NOT_FOUND]);

    // The same keys through the native protocol: one store behind all protocols.
    assert_eq!(c1.put("shared", "s"), vec![OK]);
    assert_eq!(nodes[1].client().get(b"shared")?, Some(b"s".to_vec()));

    // Pipelined requests answer in order.
    for i in 0..50 {
        let mut p = vec![PUT];
        p.extend(string(format!("pipe{i}").as_bytes()));
        p.extend(string(format!("{i}").as_bytes()));
        c1.send(&p);
    }
    for _ in 0..50 {
        assert_eq!(c1.recv(), vec![OK]);
    }
    for i in 0..50 {
        let mut p = vec![GET];
        p.extend(string(format!("pipe{i}").as_bytes()));
        c3.send(&p);
    }
    for i in 0..50 {
        let got = c3.recv();
        assert_eq!(Fields(&got[1..]).string(), format!("{i}"));
    }

    // CLUSTER_INFO lists three alive members and this node's key count.
    let info = c1.call(&[CLUSTER_INFO]);
    let mut f = Fields(&info);
    assert_eq!(f.u8(), OK);
    assert_eq!(f.u32(), 3);
    let mut ids = Vec::new();
    for _ in 0..3 {
        let id = f.string();
        assert_eq!(f.string(), "127.0.0.1");
        let port = f.u16();
        assert!(
            nodes.iter().any(|n| n.id == id && n.port == port),
            "{id} {port}"
        );
        assert_eq!(f.u8(), 1, "{id} alive");
        ids.push(id);
    }
    ids.sort();
    assert_eq!(ids, ["node1", "node2", "node3"]);
    assert!(f.u64() >= 51, "keys on node1 (N=3: every key)");
    assert!(f.0.is_empty());

    // Bad requests: the connection lives on for well-framed ones.
    assert!(error_text(&c1.call(&[11])).contains("node-to-node"));
    assert!(error_text(&c1.call(&[99])).contains("unknown opcode"));
    assert!(error_text(&c1.call(&[GET, 0, 0, 0, 9, b'k'])).contains("past the end"));
    assert!(error_text(&c1.keyed(GET, "")).contains("key length 0"));
    let big_key = "k".repeat(kvstore::limits::KEY_BYTES_MAX + 1);
    assert!(error_text(&c1.keyed(GET, &big_key)).contains("key length 4097"));
    let key_at = "k".repeat(kvstore::limits::KEY_BYTES_MAX);
    assert_eq!(c1.keyed(GET, &key_at), vec![NOT_FOUND]);

    // An oversized length is answered with ERROR and the connection is closed.
    let limit =
        1 + 4 + kvstore::limits::KEY_BYTES_MAX + 4 + kvstore::limits::VALUE_BYTES_MAX_DEFAULT;
    let mut bad = OrigClient::connect(p1);
    bad.s.write_all(&((limit + 1) as u32).to_be_bytes())?;
    assert!(error_text(&bad.recv()).contains("exceeds the limit"));
    let mut rest = Vec::new();
    assert_eq!(
        bad.s.read_to_end(&mut rest)?,
        0,
        "closed after a framing error"
    );
    // A truncated frame from a client that vanishes applies nothing.
    {
        let mut gone = OrigClient::connect(p1);
        let mut p = vec![PUT];
        p.extend(string(b"truncated"));
        p.extend(string(b"value"));
        let f = frame(&p);
        gone.s.write_all(&f[..f.len() - 2])?;
    }
    assert_eq!(c1.keyed(GET, "truncated"), vec![NOT_FOUND]);

    // Two of three down: a quorum error is an ERROR response naming the replicas.
    nodes[1].kill9();
    nodes[2].kill9();
    let message = poll("a quorum error", START_DEADLINE, || {
        let r = c1.put("orig", "during-outage");
        (r[0] == ERROR).then(|| error_text(&r))
    })?;
    assert!(message.contains("of 3 replicas"), "{message}");
    let r = c1.keyed(GET, "shared");
    assert!(error_text(&r).contains("of 3 replicas"));
    Ok(())
}
