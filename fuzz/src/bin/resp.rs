//! RESP commands from any Redis client.
fn main() {
    afl::fuzz!(|data: &[u8]| kvstore::fuzz_targets::resp(data));
}
