//! A WAL segment's bytes (a torn, corrupt or hostile disk): replay takes its valid prefix.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        let (records, end, _) = kvstore::storage::record::scan(data, 1);
        assert!(end as usize <= data.len());
        assert!(records
            .iter()
            .all(|r| r.key.len() + r.value.len() <= data.len()));
    });
}
