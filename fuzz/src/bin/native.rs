//! Native protocol frames from any client or peer.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        use kvstore::wire::native::{decode_request, decode_response};
        if let Ok(Some((_, used))) = decode_request(data, 1 << 20) {
            assert!(used <= data.len());
        }
        if let Ok(Some((_, used))) = decode_response(data, 1 << 20) {
            assert!(used <= data.len());
        }
    });
}
