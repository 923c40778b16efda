//! The original C++ design's client protocol, so its clients and tools work unchanged.
//!
//! Owns: that protocol's framing and field layout. Never performs I/O and never decides what a
//! request means beyond naming it (the server's `original_front` does).
//!
//! A frame is a big-endian `u32` payload length, then the payload; strings are a big-endian
//! `u32` length and the bytes; integers are big-endian. Request payload: opcode byte, then
//! `PUT = 1` (key, value), `GET = 2` (key), `DELETE = 3` (key), `CLUSTER_INFO = 22` (nothing).
//! Response payload: status byte (`0` OK, `1` NOT_FOUND, `2` ERROR), then ERROR: message;
//! GET OK: value, `u64` version milliseconds, coordinator node id; CLUSTER_INFO OK: `u32`
//! member count, per member (id, host, `u16` port, `u8` alive), `u64` keys on this node.
//!
//! The frame length is checked before the payload is awaited; an oversized one is fatal for
//! the connection (nothing after it can be framed). A malformed payload inside a well-framed
//! request is answered with ERROR and the connection lives on.

use crate::limits::{KEY_BYTES_MAX, KEY_BYTES_MIN};

pub const OP_PUT: u8 = 1;
pub const OP_GET: u8 = 2;
pub const OP_DELETE: u8 = 3;
pub const OP_CLUSTER_INFO: u8 = 22;

pub const STATUS_OK: u8 = 0;
pub const STATUS_NOT_FOUND: u8 = 1;
pub const STATUS_ERROR: u8 = 2;

/// Bytes of the length prefix.
const LENGTH_BYTES: usize = 4;

/// A decoded request, borrowing the read buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Request<'a> {
    Put {
        key: &'a [u8],
        value: &'a [u8],
    },
    Get {
        key: &'a [u8],
    },
    Delete {
        key: &'a [u8],
    },
    ClusterInfo,
    /// A well-framed request that cannot be served: answered with ERROR, connection kept.
    Invalid(String),
}

/// A frame that cannot be accepted: answered with ERROR, then the connection is closed.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("frame of {len} bytes exceeds the limit of {limit}")]
    FrameTooLarge { len: u64, limit: usize },
}

/// The largest payload a request may have: a PUT of the largest key and value.
pub fn payload_limit(value_limit: usize) -> usize {
    1 + LENGTH_BYTES + KEY_BYTES_MAX + LENGTH_BYTES + value_limit
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Read one string field from `payload[*pos..]`.
fn string<'a>(payload: &'a [u8], pos: &mut usize, what: &str) -> Result<&'a [u8], String> {
    let Some(len) = payload.get(*pos..*pos + LENGTH_BYTES) else {
        return Err(format!("truncated {what} length"));
    };
    let len = be_u32(len) as usize;
    let start = *pos + LENGTH_BYTES;
    let Some(bytes) = payload.get(start..start.saturating_add(len)) else {
        return Err(format!(
            "{what} length {len} runs past the end of the frame"
        ));
    };
    *pos = start + len;
    Ok(bytes)
}

fn key<'a>(payload: &'a [u8], pos: &mut usize) -> Result<&'a [u8], String> {
    let k = string(payload, pos, "key")?;
    if !(KEY_BYTES_MIN..=KEY_BYTES_MAX).contains(&k.len()) {
        return Err(format!(
            "key length {} outside {KEY_BYTES_MIN}..={KEY_BYTES_MAX}",
            k.len()
        ));
    }
    Ok(k)
}

fn parse_payload(payload: &[u8], value_limit: usize) -> Result<Request<'_>, String> {
    let Some((&opcode, _)) = payload.split_first() else {
        return Err("empty frame".into());
    };
    let mut pos = 1;
    let req = match opcode {
        OP_PUT => {
            let key = key(payload, &mut pos)?;
            let value = string(payload, &mut pos, "value")?;
            if value.len() > value_limit {
                return Err(format!(
                    "value length {} exceeds the limit of {value_limit}",
                    value.len()
                ));
            }
            Request::Put { key, value }
        }
        OP_GET => Request::Get {
            key: key(payload, &mut pos)?,
        },
        OP_DELETE => Request::Delete {
            key: key(payload, &mut pos)?,
        },
        OP_CLUSTER_INFO => Request::ClusterInfo,
        10..=12 | 40 => {
            return Err(format!(
                "opcode {opcode} is node-to-node traffic of the original design; kvstore nodes \
                 do not serve it"
            ))
        }
        other => return Err(format!("unknown opcode {other}")),
    };
    if pos != payload.len() {
        return Err(format!(
            "{} unexpected bytes after the request",
            payload.len() - pos
        ));
    }
    Ok(req)
}

/// Decode one request from the front of `buf`.
///
/// `Ok(None)`: incomplete, read more. `Ok(Some((req, used)))`: one frame of `used` bytes.
pub fn decode_request(
    buf: &[u8],
    value_limit: usize,
) -> Result<Option<(Request<'_>, usize)>, DecodeError> {
    let Some(prefix) = buf.get(..LENGTH_BYTES) else {
        return Ok(None);
    };
    let len = be_u32(prefix) as usize;
    let limit = payload_limit(value_limit);
    if len > limit {
        return Err(DecodeError::FrameTooLarge {
            len: len as u64,
            limit,
        });
    }
    let Some(payload) = buf.get(LENGTH_BYTES..LENGTH_BYTES + len) else {
        return Ok(None);
    };
    let req = parse_payload(payload, value_limit).unwrap_or_else(Request::Invalid);
    Ok(Some((req, LENGTH_BYTES + len)))
}

/// Builds one response frame in `out` (the length prefix is patched in by `finish`).
pub struct ResponseWriter<'o> {
    out: &'o mut Vec<u8>,
    start: usize,
}

impl<'o> ResponseWriter<'o> {
    pub fn new(out: &'o mut Vec<u8>, status: u8) -> ResponseWriter<'o> {
        let start = out.len();
        out.extend_from_slice(&[0; LENGTH_BYTES]);
        out.push(status);
        ResponseWriter { out, start }
    }

    pub fn string(&mut self, s: &[u8]) -> &mut Self {
        self.out.extend_from_slice(&(s.len() as u32).to_be_bytes());
        self.out.extend_from_slice(s);
        self
    }

    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.out.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.out.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.out.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.out.push(v);
        self
    }

    pub fn finish(self) {
        let len = (self.out.len() - self.start - LENGTH_BYTES) as u32;
        self.out[self.start..self.start + LENGTH_BYTES].copy_from_slice(&len.to_be_bytes());
    }
}

/// Append an ERROR response carrying `message`.
pub fn encode_error(out: &mut Vec<u8>, message: &str) {
    let mut w = ResponseWriter::new(out, STATUS_ERROR);
    w.string(message.as_bytes());
    w.finish();
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut f = (payload.len() as u32).to_be_bytes().to_vec();
        f.extend_from_slice(payload);
        f
    }

    fn s(b: &[u8]) -> Vec<u8> {
        let mut v = (b.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(b);
        v
    }

    fn put(k: &[u8], v: &[u8]) -> Vec<u8> {
        let mut p = vec![OP_PUT];
        p.extend(s(k));
        p.extend(s(v));
        frame(&p)
    }

    #[test]
    fn requests_decode_and_every_prefix_is_incomplete() {
        let buf = put(b"key", b"value");
        let (req, used) = decode_request(&buf, 100).unwrap().unwrap();
        assert_eq!(used, buf.len());
        assert_eq!(
            req,
            Request::Put {
                key: b"key",
                value: b"value"
            }
        );
        for cut in 0..buf.len() {
            assert_eq!(decode_request(&buf[..cut], 100).unwrap(), None);
        }
        let mut get = vec![OP_GET];
        get.extend(s(b"k"));
        let get = frame(&get);
        let (req, _) = decode_request(&get, 100).unwrap().unwrap();
        assert_eq!(req, Request::Get { key: b"k" });
        let info = frame(&[OP_CLUSTER_INFO]);
        let (req, _) = decode_request(&info, 100).unwrap().unwrap();
        assert_eq!(req, Request::ClusterInfo);
    }

    #[test]
    fn frame_limit_at_and_past_the_boundary() {
        let limit = payload_limit(100);
        let mut at = (limit as u32).to_be_bytes().to_vec();
        at.push(OP_PUT);
        assert_eq!(decode_request(&at, 100).unwrap(), None, "awaits the body");
        let past = ((limit + 1) as u32).to_be_bytes();
        assert_eq!(
            decode_request(&past, 100),
            Err(DecodeError::FrameTooLarge {
                len: limit as u64 + 1,
                limit
            })
        );
    }

    #[test]
    fn value_and_key_limits_at_and_past_the_boundary() {
        let ok = |b: &[u8]| !matches!(decode_request(b, 100), Ok(Some((Request::Invalid(_), _))));
        assert!(ok(&put(b"k", &[1; 100])));
        assert!(!ok(&put(b"k", &[1; 101])));
        assert!(ok(&put(&[b'k'; KEY_BYTES_MAX], b"v")));
        assert!(!ok(&put(&[b'k'; KEY_BYTES_MAX + 1], b"v")));
        assert!(!ok(&put(b"", b"v")));
    }

    #[test]
    fn malformed_payloads_are_answerable_errors() {
        let invalid = |p: &[u8]| match decode_request(&frame(p), 100) {
            Ok(Some((Request::Invalid(m), used))) => {
                assert_eq!(used, p.len() + 4);
                m
            }
            other => panic!("{other:?}"),
        };
        assert!(invalid(&[]).contains("empty"));
        assert!(invalid(&[OP_GET, 0, 0]).contains("truncated"));
        assert!(invalid(&[OP_GET, 0, 0, 0, 9, b'a']).contains("past the end"));
        assert!(invalid(&[99]).contains("unknown opcode"));
        for internal in [10u8, 11, 12, 40] {
            assert!(invalid(&[internal]).contains("node-to-node"));
        }
        let mut trailing = vec![OP_GET];
        trailing.extend(s(b"k"));
        trailing.push(7);
        assert!(invalid(&trailing).contains("unexpected bytes"));
    }

    #[test]
    fn responses_carry_their_length() {
        let mut out = Vec::new();
        let mut w = ResponseWriter::new(&mut out, STATUS_OK);
        w.string(b"v").u64(7).string(b"node1");
        w.finish();
        assert_eq!(&out[..4], &((out.len() - 4) as u32).to_be_bytes());
        assert_eq!(out[4], STATUS_OK);
        encode_error(&mut out, "bad");
        assert_eq!(out.len(), 4 + 1 + 4 + 1 + 8 + 4 + 5 + 4 + 1 + 4 + 3);
    }

    proptest! {
        #[test]
        fn garbage_never_panics(buf in proptest::collection::vec(any::<u8>(), 0..128)) {
            if let Ok(Some((_, used))) = decode_request(&buf, 100) {
                prop_assert!(used <= buf.len());
            }
        }
    }
}
