//! RESP commands from any Redis client.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        if let Ok(Some((_, used))) = kvstore::wire::resp::decode_command(data, 1 << 20) {
            assert!(used <= data.len());
        }
    });
}
