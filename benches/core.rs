//! Micro-benchmarks of the pure hot paths: ring lookup, native codec, WAL record encoding.
//! Run: `cargo bench --bench core`.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use kvstore::core::ring::{hash, LocalRing};
use kvstore::core::version::Version;
use kvstore::storage::record::{self, Kind};
use kvstore::wire::native::{decode_request, encode_request, Opcode, Request};

fn ring_lookup(c: &mut Criterion) {
    let ring = LocalRing::new("bench-node", 2);
    let keys: Vec<Vec<u8>> = (0..1024)
        .map(|i| format!("key:{i:012}").into_bytes())
        .collect();
    let mut i = 0;
    c.bench_function("ring core_for_key (16 B key)", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            black_box(ring.core_for_key(&keys[i]))
        })
    });
    c.bench_function("murmur3 hash (16 B key)", |b| {
        b.iter(|| black_box(hash(&keys[7])))
    });
}

fn codec(c: &mut Criterion) {
    let value = vec![b'x'; 100];
    let req = Request {
        request_id: 1,
        opcode: Opcode::Put as u8,
        version: Version::ZERO,
        flags: 0,
        key: b"key:000000000001",
        value: &value,
    };
    let mut buf = Vec::with_capacity(256);
    c.bench_function("native encode PUT (100 B value)", |b| {
        b.iter(|| {
            buf.clear();
            encode_request(&mut buf, black_box(&req));
        })
    });
    c.bench_function("native decode PUT (100 B value)", |b| {
        b.iter(|| black_box(decode_request(black_box(&buf), 1 << 20).ok()))
    });
}

fn wal_record(c: &mut Criterion) {
    let value = vec![b'x'; 100];
    let mut buf = Vec::with_capacity(1 << 20);
    c.bench_function("wal record encode + crc (100 B value)", |b| {
        b.iter(|| {
            if buf.len() > (1 << 19) {
                buf.clear();
            }
            let v = Version { hlc: 1, writer: 2 };
            record::encode(&mut buf, 1, 0, Kind::Put, v, b"key:000000000001", &value);
        })
    });
}

criterion_group!(benches, ring_lookup, codec, wal_record);
criterion_main!(benches);
