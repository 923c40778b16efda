//! Native protocol frames from any client or peer.
fn main() {
    afl::fuzz!(|data: &[u8]| kvstore::fuzz_targets::native(data));
}
