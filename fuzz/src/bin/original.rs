//! The original design's protocol frames.
fn main() {
    afl::fuzz!(|data: &[u8]| kvstore::fuzz_targets::original(data));
}
