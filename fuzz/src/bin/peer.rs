//! What a peer sends in anti-entropy and what hint records carry.
fn main() {
    afl::fuzz!(|data: &[u8]| kvstore::fuzz_targets::peer(data));
}
