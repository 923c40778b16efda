//! A WAL segment's bytes (a torn, corrupt or hostile disk): replay takes its valid prefix.
fn main() {
    afl::fuzz!(|data: &[u8]| kvstore::fuzz_targets::wal(data));
}
