//! The native binary protocol.
//!
//! Owns: frame layout, encoding and decoding, and the size checks every frame passes *before*
//! anything is allocated for it. Never performs I/O.
//!
//! Frame = magic byte `0xA7`, a 32-byte little-endian header, then key and value bytes.
//!
//! Request header:  request_id u64 | hlc u64 | writer u32 | key_len u32 | value_len u32 |
//!                  opcode u8 | flags u8 | reserved [u8; 2]
//! Response header: request_id u64 | hlc u64 | writer u32 | value_len u32 | status u8 |
//!                  flags u8 | reserved [u8; 6]
//!
//! A client PUT with `FLAG_EXPIRES` carries the key's absolute expiry (ms since the epoch) in
//! the `hlc` field; UPDATE's flags say how it changes a key (see the flags below). Replica
//! traffic carries stored values as cells (`core::cell`: expiry included), up to
//! `CELL_HEADER_BYTES_MAX` bytes longer than the client's value.
//!
//! A response's value is the stored value (GET), the error message (error statuses) or JSON
//! (INFO). Requests on one connection may be pipelined; each answer carries its request id.
//! Headers are read with `bytemuck::pod_read_unaligned`: a peer decides the alignment.

use bytemuck::{Pod, Zeroable};

use crate::core::version::Version;
use crate::limits::{
    CELL_HEADER_BYTES_MAX, ERROR_MESSAGE_BYTES_MAX, KEY_BYTES_MAX, KEY_BYTES_MIN,
    NATIVE_HEADER_BYTES, STORED_VALUE_BYTES_CEILING, VALUE_BYTES_CEILING,
};
use crate::wire::consensus::CONSENSUS_OVERHEAD_BYTES_MAX;
use crate::wire::NATIVE_MAGIC;

const HEADER_BYTES: usize = NATIVE_HEADER_BYTES - 1;

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
struct RequestHeader {
    request_id: u64,
    hlc: u64,
    writer: u32,
    key_len: u32,
    value_len: u32,
    opcode: u8,
    flags: u8,
    reserved: [u8; 2],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
struct ResponseHeader {
    request_id: u64,
    hlc: u64,
    writer: u32,
    value_len: u32,
    status: u8,
    flags: u8,
    reserved: [u8; 6],
}

const _: () = assert!(std::mem::size_of::<RequestHeader>() == HEADER_BYTES);
const _: () = assert!(std::mem::size_of::<ResponseHeader>() == HEADER_BYTES);

/// Request opcodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Opcode {
    Get = 1,
    Put = 2,
    Delete = 3,
    Ping = 4,
    Info = 5,
    /// Read only the contacted node's own store (no quorum, no repair).
    LocalGet = 6,
    /// Stream this node's data to the rest of the cluster, then leave it and exit (`kv leave`).
    Leave = 7,
    /// Authenticate this connection: value = the node's password.
    Auth = 8,
    /// Read the key through the quorum and, if it is live, write it back changed as the flags
    /// say (`FLAG_EXPIRES`, `FLAG_PERSIST`, `FLAG_DELETE`, `FLAG_KEEP_TTL`); the answer is
    /// the value read, or not found. Last-write-wins: SET KEEPTTL, and EXPIRE or PERSIST on a
    /// hash, set or sorted set (on a string or a list they are CONSENSUS's expiry change).
    Update = 9,
    /// FLUSHALL: every key of the cluster written before now is dropped, on every member
    /// (refused unless every member is alive); the answer is the members reached.
    FlushAll = 10,
    /// A client's conditional command (`wire::consensus`), decided by consensus among the
    /// key's replicas; the answer is the command's reply.
    Consensus = 11,
    /// A client's write to a hash, set or sorted set (`wire::collection`), run on a replica
    /// of the key and shipped to the others as a delta; the answer is the command's reply
    /// (`wire::consensus::encode_reply`). `FLAG_FORWARDED`: sent here to run on this replica.
    Collection = 12,
    /// Node to node: store this exact version (flag `FLAG_TOMBSTONE`: a delete).
    ReplicaPut = 16,
    /// Node to node: this replica's value or tombstone and its version.
    ReplicaGet = 17,
    /// Node to node: membership gossip; value = JSON updates; the answer carries the peer's.
    Gossip = 18,
    /// Node to node: probe the member named by the key on my behalf (SWIM indirect probe).
    PingReq = 19,
    /// Node to node: send the member named by the key every record it will own once the join
    /// in progress completes (its pending ranges); the answer is the count, in decimal.
    Stream = 20,
    /// Node to node, anti-entropy: the hash tree of the keys this node shares with the member
    /// named by the key (`core::merkle`); the answer is its leaves.
    AeTree = 21,
    /// Node to node, anti-entropy: the (key, version) entries in the leaves listed in the value
    /// (u16 each) that this node shares with the member named by the key.
    AeEntries = 22,
    /// `kv repair`: an anti-entropy round with every live member now; the answer is a JSON
    /// report.
    Repair = 23,
    /// Node to node, handshake step 1: key = the dialer's id, value = its nonce; the answer is
    /// the listener's nonce and proof (`server::front::auth`).
    PeerHello = 24,
    /// Node to node, handshake step 2: value = the dialer's proof.
    PeerProve = 25,
    /// Node to node: this node's keys whose ring hash is in `[lo, hi)` (key = lo, hi as u64),
    /// with versions and liveness (`server::data::scan`).
    RangeKeys = 26,
    /// SCAN: key = cursor (u64) and count (u32), value = a glob (empty: all); the answer is the
    /// next cursor and the keys.
    Scan = 27,
    /// `kv scrub`: verify every sealed WAL segment of every core now; the answer is a JSON
    /// report.
    Scrub = 28,
    /// Node to node, FLUSHALL: drop every key and hint at or below the version in the key
    /// (hlc u64, writer u32, little-endian), and refuse them from now on. With an empty key
    /// (the first phase): answer a version above every one this node issued or saw.
    FlushBelow = 29,
    /// Consensus, replica side: promise a ballot for the key (value: the ballot); the answer
    /// is the acceptor's (`wire::consensus`).
    Prepare = 30,
    /// Consensus, replica side: accept an entry at a ballot.
    Accept = 31,
}

impl Opcode {
    pub fn from_u8(b: u8) -> Option<Opcode> {
        Some(match b {
            1 => Opcode::Get,
            2 => Opcode::Put,
            3 => Opcode::Delete,
            4 => Opcode::Ping,
            5 => Opcode::Info,
            6 => Opcode::LocalGet,
            7 => Opcode::Leave,
            8 => Opcode::Auth,
            9 => Opcode::Update,
            10 => Opcode::FlushAll,
            11 => Opcode::Consensus,
            12 => Opcode::Collection,
            16 => Opcode::ReplicaPut,
            17 => Opcode::ReplicaGet,
            18 => Opcode::Gossip,
            19 => Opcode::PingReq,
            20 => Opcode::Stream,
            21 => Opcode::AeTree,
            22 => Opcode::AeEntries,
            23 => Opcode::Repair,
            24 => Opcode::PeerHello,
            25 => Opcode::PeerProve,
            26 => Opcode::RangeKeys,
            27 => Opcode::Scan,
            28 => Opcode::Scrub,
            29 => Opcode::FlushBelow,
            30 => Opcode::Prepare,
            31 => Opcode::Accept,
            _ => return None,
        })
    }
}

/// Response statuses. `Ok`..`Stale` are outcomes; the rest are errors with a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Status {
    Ok = 0,
    NotFound = 1,
    /// A replica refused a write older than the version it stores (carried in the reply).
    Stale = 2,
    BadRequest = 10,
    TooLarge = 11,
    UnknownOpcode = 12,
    Internal = 13,
    Unavailable = 14,
    DiskFull = 15,
    ShuttingDown = 16,
    BadMagic = 17,
    /// The node is at `--max-memory`: a write that would grow it was refused.
    OutOfMemory = 18,
    /// Not allowed on this connection: authenticate first (or prove the cluster secret).
    Unauthorized = 19,
}

impl Status {
    pub fn from_u8(b: u8) -> Status {
        match b {
            0 => Status::Ok,
            1 => Status::NotFound,
            2 => Status::Stale,
            10 => Status::BadRequest,
            11 => Status::TooLarge,
            12 => Status::UnknownOpcode,
            14 => Status::Unavailable,
            15 => Status::DiskFull,
            16 => Status::ShuttingDown,
            17 => Status::BadMagic,
            18 => Status::OutOfMemory,
            19 => Status::Unauthorized,
            _ => Status::Internal,
        }
    }

    pub fn is_error(self) -> bool {
        (self as u8) >= 10
    }
}

/// Response flag: the key held a live (non-tombstone) value before this PUT/DELETE.
pub const FLAG_WAS_LIVE: u8 = 1;
/// Request flag of REPLICA_PUT: the version is a tombstone (the value is empty).
pub const FLAG_TOMBSTONE: u8 = 1;
/// Request flag of PUT and UPDATE: `hlc` holds the key's new absolute expiry (ms since the
/// Unix epoch; one already past deletes the key).
pub const FLAG_EXPIRES: u8 = 2;
/// UPDATE: drop the key's expiry.
pub const FLAG_PERSIST: u8 = 4;
/// UPDATE: delete the key.
pub const FLAG_DELETE: u8 = 8;
/// UPDATE: store the request's value, keeping the key's expiry (a missing key is created).
pub const FLAG_KEEP_TTL: u8 = 16;

/// CONSENSUS: sent by a node to the key's home, which runs it (never forwards it again).
pub const FLAG_FORWARDED: u8 = 32;

/// A decoded request borrowing key and value from the read buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct Request<'a> {
    pub request_id: u64,
    pub opcode: u8,
    pub version: Version,
    pub flags: u8,
    pub key: &'a [u8],
    pub value: &'a [u8],
}

impl<'a> Request<'a> {
    /// A request with no id, version or flags: what a front hands the connection loop, or a
    /// one-off call on a fresh connection.
    pub fn new(opcode: Opcode, key: &'a [u8], value: &'a [u8]) -> Request<'a> {
        Request {
            request_id: 0,
            opcode: opcode as u8,
            version: Version::ZERO,
            flags: 0,
            key,
            value,
        }
    }

    /// A client PUT's or UPDATE's new expiry.
    pub fn expires_at_ms(&self) -> Option<u64> {
        (self.flags & FLAG_EXPIRES != 0).then_some(self.version.hlc)
    }
}

/// Why a frame could not be decoded. `Fatal` ones end the connection after the error reply.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("bad magic byte {found:#04x}, expected {NATIVE_MAGIC:#04x}")]
    BadMagic { found: u8 },
    #[error("key length {len} outside {KEY_BYTES_MIN}..={KEY_BYTES_MAX}")]
    KeyLength { request_id: u64, len: u32 },
    #[error("value length {len} exceeds limit {limit}")]
    ValueTooLarge {
        request_id: u64,
        len: u32,
        limit: usize,
    },
    #[error("response value length {len} exceeds limit {limit}")]
    ResponseTooLarge { len: u32, limit: usize },
}

impl DecodeError {
    pub fn request_id(&self) -> u64 {
        match self {
            DecodeError::KeyLength { request_id, .. }
            | DecodeError::ValueTooLarge { request_id, .. } => *request_id,
            _ => 0,
        }
    }

    pub fn status(&self) -> Status {
        match self {
            DecodeError::BadMagic { .. } => Status::BadMagic,
            _ => Status::TooLarge,
        }
    }
}

/// A frame's header after its magic byte; `None` until the whole header is in `buf`.
fn header<H: bytemuck::Pod>(buf: &[u8]) -> Result<Option<H>, DecodeError> {
    let Some(&magic) = buf.first() else {
        return Ok(None);
    };
    if magic != NATIVE_MAGIC {
        return Err(DecodeError::BadMagic { found: magic });
    }
    if buf.len() < NATIVE_HEADER_BYTES {
        return Ok(None);
    }
    Ok(Some(bytemuck::pod_read_unaligned(
        &buf[1..NATIVE_HEADER_BYTES],
    )))
}

/// Decode one request from the front of `buf`.
///
/// `Ok(None)`: incomplete, read more. `Ok(Some((req, used)))`: one frame of `used` bytes.
/// Lengths are checked against the limits before the body is awaited, so an oversized frame
/// is refused without buffering it. A non-keyed opcode may carry no key; unknown opcodes decode
/// (the caller answers `UnknownOpcode` and keeps the connection).
pub fn decode_request(
    buf: &[u8],
    value_limit: usize,
) -> Result<Option<(Request<'_>, usize)>, DecodeError> {
    let Some(h) = header::<RequestHeader>(buf)? else {
        return Ok(None);
    };
    let request_id = u64::from_le(h.request_id);
    let key_len = u32::from_le(h.key_len);
    let value_len = u32::from_le(h.value_len);
    if key_len as usize > KEY_BYTES_MAX {
        return Err(DecodeError::KeyLength {
            request_id,
            len: key_len,
        });
    }
    // A client's value is held to the limit; node-to-node values are cells, a few bytes more.
    let limit = match Opcode::from_u8(h.opcode) {
        Some(Opcode::Put | Opcode::Update) | None => value_limit.min(VALUE_BYTES_CEILING),
        // SET … IFEQ carries the value and the one to compare with
        Some(Opcode::Consensus) => {
            2 * value_limit.min(VALUE_BYTES_CEILING) + CONSENSUS_OVERHEAD_BYTES_MAX
        }
        Some(Opcode::Accept) => value_limit.min(VALUE_BYTES_CEILING) + CONSENSUS_OVERHEAD_BYTES_MAX,
        // a replica write may carry a collection's whole state (a join stream, anti-entropy,
        // read repair): bounded by what a store holds, not by a client's value limit
        Some(Opcode::ReplicaPut) => STORED_VALUE_BYTES_CEILING,
        Some(_) => value_limit.min(VALUE_BYTES_CEILING) + CELL_HEADER_BYTES_MAX,
    };
    if value_len as usize > limit {
        return Err(DecodeError::ValueTooLarge {
            request_id,
            len: value_len,
            limit: value_limit,
        });
    }
    let total = NATIVE_HEADER_BYTES + key_len as usize + value_len as usize;
    if buf.len() < total {
        return Ok(None);
    }
    let key_end = NATIVE_HEADER_BYTES + key_len as usize;
    let req = Request {
        request_id,
        opcode: h.opcode,
        version: Version {
            hlc: u64::from_le(h.hlc),
            writer: u32::from_le(h.writer),
        },
        flags: h.flags,
        key: &buf[NATIVE_HEADER_BYTES..key_end],
        value: &buf[key_end..total],
    };
    Ok(Some((req, total)))
}

/// Append an encoded request to `out`.
pub fn encode_request(out: &mut Vec<u8>, req: &Request<'_>) {
    let h = RequestHeader {
        request_id: req.request_id.to_le(),
        hlc: req.version.hlc.to_le(),
        writer: req.version.writer.to_le(),
        key_len: (req.key.len() as u32).to_le(),
        value_len: (req.value.len() as u32).to_le(),
        opcode: req.opcode,
        flags: req.flags,
        reserved: [0; 2],
    };
    out.push(NATIVE_MAGIC);
    out.extend_from_slice(bytemuck::bytes_of(&h));
    out.extend_from_slice(req.key);
    out.extend_from_slice(req.value);
}

/// A decoded response borrowing its value from the read buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct Response<'a> {
    pub request_id: u64,
    pub status: Status,
    pub flags: u8,
    pub version: Version,
    pub value: &'a [u8],
}

/// A response that owns its value: what a client, or a node's peer link, keeps of one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub request_id: u64,
    pub status: Status,
    pub flags: u8,
    pub version: Version,
    pub value: Vec<u8>,
}

impl Reply {
    /// DELETE and PUT: whether the key was live before.
    pub fn was_live(&self) -> bool {
        self.flags & FLAG_WAS_LIVE != 0
    }
}

/// Append an encoded response to `out`.
pub fn encode_response(out: &mut Vec<u8>, resp: &Response<'_>) {
    let h = ResponseHeader {
        request_id: resp.request_id.to_le(),
        hlc: resp.version.hlc.to_le(),
        writer: resp.version.writer.to_le(),
        value_len: (resp.value.len() as u32).to_le(),
        status: resp.status as u8,
        flags: resp.flags,
        reserved: [0; 6],
    };
    out.push(NATIVE_MAGIC);
    out.extend_from_slice(bytemuck::bytes_of(&h));
    out.extend_from_slice(resp.value);
}

/// Append an error response whose message is cut to `ERROR_MESSAGE_BYTES_MAX`.
pub fn encode_error(out: &mut Vec<u8>, request_id: u64, status: Status, message: &str) {
    let mut end = message.len().min(ERROR_MESSAGE_BYTES_MAX);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    encode_response(
        out,
        &Response {
            request_id,
            status,
            flags: 0,
            version: Version::ZERO,
            value: &message.as_bytes()[..end],
        },
    );
}

/// Decode one response from the front of `buf` (client side); same contract as requests.
pub fn decode_response(
    buf: &[u8],
    value_limit: usize,
) -> Result<Option<(Response<'_>, usize)>, DecodeError> {
    let Some(h) = header::<ResponseHeader>(buf)? else {
        return Ok(None);
    };
    let value_len = u32::from_le(h.value_len);
    if value_len as usize > value_limit {
        return Err(DecodeError::ResponseTooLarge {
            len: value_len,
            limit: value_limit,
        });
    }
    let total = NATIVE_HEADER_BYTES + value_len as usize;
    if buf.len() < total {
        return Ok(None);
    }
    let resp = Response {
        request_id: u64::from_le(h.request_id),
        status: Status::from_u8(h.status),
        flags: h.flags,
        version: Version {
            hlc: u64::from_le(h.hlc),
            writer: u32::from_le(h.writer),
        },
        value: &buf[NATIVE_HEADER_BYTES..total],
    };
    Ok(Some((resp, total)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::VALUE_BYTES_MAX_DEFAULT;
    use proptest::prelude::*;

    fn put<'a>(key: &'a [u8], value: &'a [u8]) -> Request<'a> {
        Request {
            request_id: 42,
            opcode: Opcode::Put as u8,
            version: Version { hlc: 5, writer: 6 },
            flags: 0,
            key,
            value,
        }
    }

    #[test]
    fn request_round_trip() {
        let mut buf = Vec::new();
        encode_request(&mut buf, &put(b"k", b"v"));
        let (req, used) = decode_request(&buf, VALUE_BYTES_MAX_DEFAULT)
            .unwrap()
            .unwrap();
        assert_eq!(used, buf.len());
        assert_eq!(req, put(b"k", b"v"));
    }

    #[test]
    fn every_prefix_of_a_frame_is_incomplete() {
        let mut buf = Vec::new();
        encode_request(&mut buf, &put(b"key", b"value"));
        for cut in 0..buf.len() {
            assert_eq!(
                decode_request(&buf[..cut], VALUE_BYTES_MAX_DEFAULT),
                Ok(None),
                "{cut}"
            );
        }
    }

    #[test]
    fn misaligned_input_decodes() {
        let mut buf = vec![0u8];
        encode_request(&mut buf, &put(b"k", b"v"));
        let (req, _) = decode_request(&buf[1..], VALUE_BYTES_MAX_DEFAULT)
            .unwrap()
            .unwrap();
        assert_eq!(req, put(b"k", b"v"));
    }

    #[test]
    fn bad_magic_is_an_error() {
        assert_eq!(
            decode_request(b"GET x\r\n", VALUE_BYTES_MAX_DEFAULT),
            Err(DecodeError::BadMagic { found: b'G' })
        );
    }

    fn header_only(key_len: u32, value_len: u32) -> Vec<u8> {
        let mut buf = Vec::new();
        encode_request(&mut buf, &put(b"", b""));
        buf[1 + 20..1 + 24].copy_from_slice(&key_len.to_le_bytes());
        buf[1 + 24..1 + 28].copy_from_slice(&value_len.to_le_bytes());
        buf
    }

    #[test]
    fn key_limit_at_and_past_the_boundary() {
        let at = header_only(KEY_BYTES_MAX as u32, 0);
        assert_eq!(decode_request(&at, VALUE_BYTES_MAX_DEFAULT), Ok(None));
        let past = header_only(KEY_BYTES_MAX as u32 + 1, 0);
        assert!(matches!(
            decode_request(&past, VALUE_BYTES_MAX_DEFAULT),
            Err(DecodeError::KeyLength { request_id: 42, .. })
        ));
        let key = vec![b'k'; KEY_BYTES_MAX];
        let mut full = Vec::new();
        encode_request(&mut full, &put(&key, b""));
        assert!(decode_request(&full, VALUE_BYTES_MAX_DEFAULT)
            .unwrap()
            .is_some());
    }

    #[test]
    fn value_limit_at_and_past_the_boundary() {
        let limit = 1000;
        let at = header_only(1, limit as u32);
        assert_eq!(
            decode_request(&at, limit),
            Ok(None),
            "at the limit: wait for the body"
        );
        let past = header_only(1, limit as u32 + 1);
        assert!(matches!(
            decode_request(&past, limit),
            Err(DecodeError::ValueTooLarge { .. })
        ));
        let ceiling = header_only(1, VALUE_BYTES_CEILING as u32 + 1);
        assert!(
            decode_request(&ceiling, usize::MAX).is_err(),
            "ceiling holds for any config"
        );
    }

    #[test]
    fn response_round_trip_and_error_message_cut() {
        let mut buf = Vec::new();
        let long = "x".repeat(ERROR_MESSAGE_BYTES_MAX + 10);
        encode_error(&mut buf, 9, Status::BadRequest, &long);
        let (resp, used) = decode_response(&buf, VALUE_BYTES_MAX_DEFAULT)
            .unwrap()
            .unwrap();
        assert_eq!(used, buf.len());
        assert_eq!(resp.request_id, 9);
        assert_eq!(resp.status, Status::BadRequest);
        assert_eq!(resp.value.len(), ERROR_MESSAGE_BYTES_MAX);
    }

    proptest! {
        #[test]
        fn any_request_round_trips(
            id in any::<u64>(), op in any::<u8>(), hlc in any::<u64>(), writer in any::<u32>(),
            key in proptest::collection::vec(any::<u8>(), 0..64),
            value in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let req = Request {
                request_id: id, opcode: op, version: Version { hlc, writer }, flags: 1,
                key: &key, value: &value,
            };
            let mut buf = Vec::new();
            encode_request(&mut buf, &req);
            buf.extend_from_slice(b"trailing");
            let (got, used) = decode_request(&buf, VALUE_BYTES_MAX_DEFAULT).unwrap().unwrap();
            prop_assert_eq!(used, buf.len() - 8);
            prop_assert_eq!(got, req);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = decode_request(&bytes, VALUE_BYTES_MAX_DEFAULT);
            let _ = decode_response(&bytes, VALUE_BYTES_MAX_DEFAULT);
        }
    }
}
