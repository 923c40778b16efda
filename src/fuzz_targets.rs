//! What every decoder fed by a socket or a disk promises, as one checking function per fuzz
//! target: the AFL++ targets in `fuzz/` call these, and `tests/decoders.rs` replays the
//! committed corpus (`fuzz/corpus/<target>/`) through them on every `cargo test`.
//!
//! Each function must never panic on any input; the asserts in it are the decoders' promises
//! beyond that (a decoded frame never claims more bytes than it was given; a WAL segment's
//! valid prefix lies within its bytes). Never: I/O, allocation beyond what the decoder does.

/// Largest value the fuzzed decoders are told to accept.
const FUZZ_VALUE_LIMIT: usize = 1 << 20;

/// Native protocol frames from any client or peer: requests and responses.
pub fn native(data: &[u8]) {
    use crate::wire::native::{decode_request, decode_response};
    if let Ok(Some((_, used))) = decode_request(data, FUZZ_VALUE_LIMIT) {
        assert!(used <= data.len());
    }
    if let Ok(Some((_, used))) = decode_response(data, FUZZ_VALUE_LIMIT) {
        assert!(used <= data.len());
    }
}

/// RESP commands from any Redis client.
pub fn resp(data: &[u8]) {
    if let Ok(Some((_, used))) = crate::wire::resp::decode_command(data, FUZZ_VALUE_LIMIT) {
        assert!(used <= data.len());
    }
}

/// The original design's protocol frames.
pub fn original(data: &[u8]) {
    if let Ok(Some((_, used))) = crate::wire::original::decode_request(data, FUZZ_VALUE_LIMIT) {
        assert!(used <= data.len());
    }
}

/// A WAL segment's bytes (a torn, corrupt or hostile disk): replay takes its valid prefix.
pub fn wal(data: &[u8]) {
    let (records, end, _) = crate::storage::record::scan_prefix(data, 1);
    let _ = crate::storage::record::scan(data, 1);
    assert!(end as usize <= data.len());
    assert!(records
        .iter()
        .all(|r| r.key.len() + r.value.len() <= data.len()));
}

/// What peers send besides frames: anti-entropy trees, entries and leaf lists, SCAN entries
/// and pages, gossip member lists, hint key fields, and stored values (cells).
pub fn peer(data: &[u8]) {
    let _ = crate::server::cluster::anti_entropy::decode_entries(data);
    let _ = crate::server::cluster::anti_entropy::decode_leaves(data);
    let _ = crate::core::merkle::Tree::from_bytes(data);
    let _ = crate::storage::hints::decode_key(data);
    let _ = crate::wire::scan::decode_entries(data);
    if let Some((_, keys)) = crate::wire::scan::decode_page(data) {
        assert!(keys.iter().map(|k| k.len()).sum::<usize>() <= data.len());
    }
    let _ = serde_json::from_slice::<Vec<crate::core::membership::Update>>(data);
    if let Ok(c) = crate::core::cell::decode(data) {
        assert!(c.value.len() < data.len());
    }
}

/// One target: its name (the corpus directory) and its checking function.
pub type Target = (&'static str, fn(&[u8]));

/// Every target.
pub const TARGETS: &[Target] = &[
    ("native", native),
    ("resp", resp),
    ("original", original),
    ("wal", wal),
    ("peer", peer),
];
