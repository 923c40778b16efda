//! The original design's protocol frames.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        if let Ok(Some((_, used))) = kvstore::wire::original::decode_request(data, 1 << 20) {
            assert!(used <= data.len());
        }
    });
}
