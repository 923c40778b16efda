//! What a peer sends in anti-entropy and what hint records carry.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        let _ = kvstore::server::cluster::anti_entropy::decode_entries(data);
        let _ = kvstore::server::cluster::anti_entropy::decode_leaves(data);
        let _ = kvstore::core::merkle::Tree::from_bytes(data);
        let _ = kvstore::storage::hints::decode_key(data);
    });
}
